//! The router's integration tests, linked into one test binary
//! (`integration`) so the library and wasmtime are linked once:
//!
//! - [`cli`]: the `switchyard` command line (`validate`, `plugin ...`);
//!   being an integration test of this package, it also makes `cargo test
//!   --workspace` build the binary the end-to-end tests in `tests/` run.
//! - [`plugins`]: the plugin host over real wasm modules, and the fixtures
//!   both it and [`cli`] build.
//! - [`reload_watch`]: the reload triggers against real files and SIGHUP.
//!
//! The modules share this process: [`reload_watch`] installs the SIGHUP
//! handler and raises SIGHUP at itself, which nothing else here touches.

mod cli;
mod plugins;
mod reload_watch;
