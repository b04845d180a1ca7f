//! Plugin fixtures, built by the tests themselves: the first-party plugins
//! and the SDK-built `hostile` fixture (cargo, for wasm32, once per test
//! binary), and WebAssembly-text plugins written without the SDK.

// A test binary has no public API: `pub` here means "for the other test
// modules" (`cli` and the plugin host tests).
#![allow(unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use switchyard::metrics::Registry;
use switchyard::plugin::{self, Engine, Limits, Plugin, Source};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("router/ has a parent")
        .to_owned()
}

/// Where fixture builds go (shared by test binaries and the benchmark;
/// cargo's own lock serialises concurrent builds).
pub fn target_dir() -> PathBuf {
    repo().join("target").join("plugin-fixtures")
}

/// Builds the plugins workspace and the hello-filter example for wasm32
/// (a no-op when up to date) and returns the directory of the `.wasm`s.
pub fn built() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        plugin::tooling::ensure_wasm_target().expect("the wasm32 target installs");
        let target = target_dir();
        let dir = plugin::tooling::build_wasm(&repo().join("plugins"), &target)
            .unwrap_or_else(|e| panic!("building the plugin fixtures: {e}"));
        plugin::tooling::build_wasm(&repo().join("examples").join("hello-filter"), &target)
            .unwrap_or_else(|e| panic!("building examples/hello-filter: {e}"));
        dir
    })
}

/// The path of a built plugin, e.g. `wasm("json_filter")`.
pub fn wasm(name: &str) -> PathBuf {
    let p = built().join(format!("{name}.wasm"));
    assert!(p.exists(), "{} was not built", p.display());
    p
}

/// An engine with its own registry.
pub fn engine() -> (Engine, Registry) {
    let registry = Registry::new();
    let engine = Engine::new(plugin::Config::default(), &registry).expect("engine");
    (engine, registry)
}

/// Limits for tests that are not about deadlines: a deadline no busy
/// machine reaches by accident.
pub fn limits() -> Limits {
    Limits {
        deadline: std::time::Duration::from_secs(10),
        ..Limits::default()
    }
}

/// Loads a built plugin.
pub fn load(engine: &Engine, name: &str, file: &str, config: &str, limits: Limits) -> Plugin {
    let path = wasm(file);
    engine
        .load(name, Source::Path(&path), config, limits)
        .unwrap_or_else(|e| panic!("loading {file}: {e}"))
}

/// A filter written in WebAssembly text against ABI.md, without the SDK:
/// it drops messages whose topic starts with `d` and keeps the rest. When
/// the first message's topic starts with `h`, it first runs `hostile`
/// (instructions inside `switchyard_batch`, which may `return` an i64).
pub fn wat_filter(hostile: &str) -> String {
    WAT_FILTER.replace("HOSTILE", hostile)
}

/// Assembles WebAssembly text.
pub fn assemble(text: &str) -> Vec<u8> {
    wat::parse_str(text).unwrap_or_else(|e| panic!("bad fixture WAT: {e}"))
}

const WAT_FILTER: &str = include_str!("wat_filter.wat");
