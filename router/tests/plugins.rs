//! Plugin host tests over real wasm modules: first-party plugins built by
//! the test setup, a plugin written in WebAssembly text without the SDK,
//! hostile plugins, the compiled-module cache, and the CLI tooling.

pub mod fixtures;
mod host;
mod hostile;
mod tooling;
