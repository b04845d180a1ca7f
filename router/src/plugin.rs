//! The Wasm plugin host: the only module that imports wasmtime.
//!
//! Plugins are core WebAssembly modules speaking the batched ABI in
//! `sdk/ABI.md`: the host writes a whole batch of messages into the guest's
//! memory, makes one call, and reads every verdict back from one buffer.
//!
//! ```text
//! Engine::new(Config)            one per router: wasmtime engine, pooling
//!   │                            allocator, epoch ticker thread, disk cache
//!   └─ load(name, source, config_json, Limits) -> Plugin
//!        size cap, header, compile or cached deserialize, imports/exports,
//!        ABI version, kind, a first instance runs switchyard_init
//!        └─ Plugin::instance() -> PluginInstance   one per worker
//!             run_filter(&[Message], &mut Vec<FilterVerdict>)
//!             run_router(&[Message], &mut Vec<RouteVerdict>)
//! ```
//!
//! Every call has an epoch deadline and every instance a memory cap; a trap
//! or a broken verdict throws the instance away (the next call builds a
//! fresh one), is counted in `switchyard_plugin_traps_total{plugin,reason}`
//! and returned as a [`PluginError`] for the route's `on_error` policy. A
//! plugin that keeps failing trips its circuit breaker: calls return
//! [`PluginError::CircuitOpen`] with the plugin's [`FailMode`] until a
//! retry after a backoff succeeds.
//!
//! Calls are synchronous and may block for up to the plugin's deadline;
//! callers on a tokio runtime run them where that is acceptable (a route
//! worker), never on an I/O task.
//!
//! Files, from the bottom up, each using only those before it: `limits`
//! (a plugin's settings: [`Limits`], [`FailurePolicy`]), `breaker` (the
//! circuit breaker), `handle` (the loaded [`Plugin`]), `instance` (stores,
//! calls, trap reasons), `load` (the checks and [`Engine::load`]). Beside
//! them: `engine` (settings, wasmtime engine, ticker, metrics), `cache`
//! (compiled modules on disk), `wire` (batch and verdict encoding), `host`
//! (the `switchyard_log` import and limits), `inspect`, `tooling` (CLI
//! support), `error`.

mod breaker;
mod cache;
mod engine;
mod error;
mod handle;
mod host;
mod inspect;
mod instance;
mod limits;
mod load;
mod metrics;
pub mod tooling;
// Crate-visible for `crate::fuzzing`, which feeds the verdict reader bytes.
pub(crate) mod wire;

pub use engine::{Config, Engine};
pub use error::{Error, PluginError, TrapReason};
pub use handle::Plugin;
pub use inspect::{Inspection, inspect};
pub use instance::PluginInstance;
pub use limits::{FailMode, FailurePolicy, Limits};
pub use load::Source;
pub use wire::{FilterVerdict, OutputNames, RouteVerdict};

/// Hex SHA-256 of module bytes: what [`Plugin::sha256`] reports, so a
/// caller can tell whether a file on disk is the module already loaded.
pub fn module_hash(bytes: &[u8]) -> String {
    cache::content_hash(bytes)
}

/// What a plugin does with messages (`switchyard_kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Keeps, drops or rewrites messages.
    Filter,
    /// Picks outputs or dead-letters messages.
    Router,
}

impl Kind {
    /// The kind named by the ABI's `switchyard_kind` value, if any.
    pub fn from_abi(value: i32) -> Option<Kind> {
        match value {
            switchyard_sdk::abi::KIND_FILTER => Some(Kind::Filter),
            switchyard_sdk::abi::KIND_ROUTER => Some(Kind::Router),
            _ => None,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Filter => "filter",
            Kind::Router => "router",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_can_move_between_threads() {
        send_sync::<Engine>();
        send_sync::<Plugin>();
        send::<PluginInstance>();
        send_sync::<PluginError>();
    }
}
