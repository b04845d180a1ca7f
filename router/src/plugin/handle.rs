//! A loaded plugin: the checked module ready to instantiate, its settings,
//! metrics and circuit breaker, shared by every instance made from it.

use std::sync::Arc;

use wasmtime::InstancePre;

use super::breaker::Breaker;
use super::engine::Engine;
use super::host::HostState;
use super::limits::Limits;
use super::metrics::PluginMetrics;
use super::{Kind, TrapReason};

/// A loaded, checked plugin. Cheap to clone; make one
/// [`PluginInstance`](super::PluginInstance) per worker with
/// [`Plugin::instance`].
#[derive(Clone)]
pub struct Plugin {
    pub(crate) inner: Arc<PluginInner>,
}

pub(crate) struct PluginInner {
    pub(crate) name: Arc<str>,
    pub(crate) kind: Kind,
    pub(crate) engine: Engine,
    pub(crate) pre: InstancePre<HostState>,
    pub(crate) config_json: Arc<str>,
    pub(crate) limits: Limits,
    pub(crate) deadline_ticks: u64,
    pub(crate) metrics: PluginMetrics,
    pub(crate) breaker: Breaker,
    pub(crate) cached: bool,
    pub(crate) sha256: String,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.inner.name)
            .field("kind", &self.inner.kind)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// The plugin's name (its metrics label).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Filter or router.
    pub fn kind(&self) -> Kind {
        self.inner.kind
    }

    /// The limits it runs with.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// True if the compiled module came from the disk cache.
    pub fn from_cache(&self) -> bool {
        self.inner.cached
    }

    /// Hex SHA-256 of the module bytes (for `/v1/plugins` and reload diffs).
    pub fn sha256(&self) -> &str {
        &self.inner.sha256
    }

    /// True while the circuit breaker refuses calls.
    pub fn is_tripped(&self) -> bool {
        self.inner.breaker.is_open()
    }

    /// Failures counted for `reason` so far (the value of
    /// `switchyard_plugin_traps_total{plugin,reason}`).
    pub fn traps(&self, reason: TrapReason) -> u64 {
        self.inner.metrics.traps(reason)
    }

    /// Batches handed to the guest so far.
    pub fn calls(&self) -> u64 {
        self.inner.metrics.calls.get()
    }
}
