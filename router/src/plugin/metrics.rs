//! The plugin metric families, and each plugin's children resolved once at
//! load so a batch never looks up a label.

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use super::error::TrapReason;
use crate::metrics::Registry;

/// Per-batch durations, in seconds: 1 µs to 1 s.
fn duration_buckets() -> Vec<f64> {
    vec![
        0.000_001,
        0.000_002_5,
        0.000_005,
        0.000_01,
        0.000_025,
        0.000_05,
        0.000_1,
        0.000_25,
        0.000_5,
        0.001,
        0.002_5,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        1.0,
    ]
}

/// The families, registered once per engine.
pub(crate) struct Families {
    calls: IntCounterVec,
    traps: IntCounterVec,
    duration: HistogramVec,
    circuit_open: IntGaugeVec,
    logs_dropped: IntCounterVec,
}

impl Families {
    pub(crate) fn register(reg: &Registry) -> Self {
        Self {
            calls: reg.counter_vec(
                "switchyard_plugin_calls_total",
                "Batches handed to a plugin (one guest call each).",
                &["plugin"],
            ),
            traps: reg.counter_vec(
                "switchyard_plugin_traps_total",
                "Plugin calls that failed, by reason; the instance was replaced.",
                &["plugin", "reason"],
            ),
            duration: reg.histogram_vec(
                "switchyard_plugin_duration_seconds",
                "Time of one plugin batch call, encoding and decoding included.",
                &["plugin"],
                duration_buckets(),
            ),
            circuit_open: reg.gauge_vec(
                "switchyard_plugin_circuit_open",
                "1 while a plugin's circuit breaker is open after repeated failures.",
                &["plugin"],
            ),
            logs_dropped: reg.counter_vec(
                "switchyard_plugin_logs_dropped_total",
                "Plugin log lines dropped over the per-call limit or malformed.",
                &["plugin"],
            ),
        }
    }

    /// The children for one plugin.
    pub(crate) fn for_plugin(&self, plugin: &str) -> PluginMetrics {
        PluginMetrics {
            calls: self.calls.with_label_values(&[plugin]),
            traps: TrapReason::ALL.map(|r| self.traps.with_label_values(&[plugin, r.as_str()])),
            duration: self.duration.with_label_values(&[plugin]),
            circuit_open: self.circuit_open.with_label_values(&[plugin]),
            logs_dropped: self.logs_dropped.with_label_values(&[plugin]),
        }
    }
}

/// One plugin's metric children.
#[derive(Clone)]
pub(crate) struct PluginMetrics {
    pub(crate) calls: IntCounter,
    traps: [IntCounter; TrapReason::ALL.len()],
    pub(crate) duration: Histogram,
    pub(crate) circuit_open: IntGauge,
    pub(crate) logs_dropped: IntCounter,
}

impl PluginMetrics {
    pub(crate) fn trap(&self, reason: TrapReason) {
        self.traps[reason.slot()].inc();
    }

    pub(crate) fn traps(&self, reason: TrapReason) -> u64 {
        self.traps[reason.slot()].get()
    }
}
