//! A plugin's own settings: the limits it runs with and what its circuit
//! breaker does when it keeps failing. Plain values, read from its
//! `[[plugin]]` entry; everything else in the plugin host builds on them.

use std::time::Duration;

/// Per-plugin limits. Reload live: a reload with new limits loads the
/// plugin again.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Memory cap of one instance, in bytes; growing past it traps
    /// (`memory`). Default 64 MiB; at most the engine's `max_memory_bytes`.
    pub memory_bytes: u64,
    /// Deadline of one batch call; a call still running then is stopped
    /// (`timeout`). Measured in engine epochs, i.e. wall-clock time: on an
    /// overloaded box a descheduled worker counts against it, so keep it
    /// far above the plugin's normal batch time. Default 100 ms.
    pub deadline: Duration,
    /// Most messages in one guest call; longer slices are split. Default 256.
    pub max_batch_messages: usize,
    /// Soft cap on one call's batch bytes; longer slices are split (a single
    /// bigger message still goes alone). Default 1 MiB.
    pub max_batch_bytes: usize,
    /// What to do when the plugin keeps failing.
    pub on_failure: FailurePolicy,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            deadline: Duration::from_millis(100),
            max_batch_messages: 256,
            max_batch_bytes: 1 << 20,
            on_failure: FailurePolicy::default(),
        }
    }
}

/// What happens to messages while a plugin's circuit is open, written
/// `on_failure = { mode = "open" }` or `"closed"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// `open`: messages pass as if the plugin had kept them (a filter) or
    /// chosen the route's `to` outputs (a router).
    Open,
    /// `closed`: messages are dropped, counted in
    /// `switchyard_route_dropped_total{reason="plugin_error"}`.
    #[default]
    Closed,
}

impl std::fmt::Display for FailMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FailMode::Open => "fail-open",
            FailMode::Closed => "fail-closed",
        })
    }
}

/// The circuit breaker's settings.
#[derive(Clone, Copy, Debug)]
pub struct FailurePolicy {
    /// What callers do with messages while the circuit is open.
    pub mode: FailMode,
    /// Consecutive failed calls that open the circuit. Default 5.
    pub trip_after: u32,
    /// Wait before the first retry. Default 1 s; doubles per failed retry.
    pub backoff: Duration,
    /// Longest wait between retries. Default 60 s.
    pub max_backoff: Duration,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        Self {
            mode: FailMode::Closed,
            trip_after: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}
