//! The pipeline's Prometheus families and each route's resolved children.
//!
//! Conservation, per route, exact whenever the route is idle:
//! `offered = delivered + filtered + answered + dead_lettered + dropped
//! (all reasons) + queue_depth`, where the
//! depth counts queued messages *and* messages in flight to the outputs.
//! `route_messages_total{outcome="dropped"}` equals the sum of
//! `route_dropped_total` over its reasons. Messages refused to the input
//! (`block` past the deadline, shutdown) were never offered.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::{
    Counter, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};

use crate::egress::Reject;
use crate::metrics::{Registry, latency_buckets};

/// Why a route dropped a message: the `reason` label of
/// `switchyard_route_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// The queue was full (`drop_newest` dropped it, or `drop_oldest`
    /// evicted it).
    QueueFull,
    /// An output had nobody to give it to.
    NoSubscriber,
    /// An output refused it as too large.
    TooLarge,
    /// An output failed on it, or on its whole batch.
    OutputError,
    /// Still queued or in flight when a shutdown's grace period ended.
    Shutdown,
    /// A plugin failed on its batch (`on_error = "drop"`), its circuit was
    /// open and failing closed, or its verdict named an output the route
    /// does not send to.
    PluginError,
    /// A plugin dead-lettered it on a route without a `dead_letter` output.
    NoDeadLetter,
    /// Still queued or in flight when a route removed by a reload ran out
    /// of time to drain.
    RouteRemoved,
    /// A `drop_newest` durable route's disk was full (or failing).
    DiskFull,
    /// A durable route's record was damaged on disk and could not be read.
    Corrupt,
    /// A durable route's retention dropped it: older than `max_age`, or
    /// the oldest when a `drop_oldest` route was full.
    Retention,
    /// An output cannot carry it as it is (an attribute a NATS header
    /// cannot hold).
    Unencodable,
    /// An output's peer answered that it will never take it (a webhook's
    /// 4xx, 501 or redirect).
    Refused,
}

impl DropReason {
    /// Every reason, in label order.
    pub const ALL: [Self; 13] = [
        Self::QueueFull,
        Self::NoSubscriber,
        Self::TooLarge,
        Self::OutputError,
        Self::Shutdown,
        Self::PluginError,
        Self::NoDeadLetter,
        Self::RouteRemoved,
        Self::DiskFull,
        Self::Corrupt,
        Self::Retention,
        Self::Unencodable,
        Self::Refused,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::NoSubscriber => "no_subscriber",
            Self::TooLarge => "too_large",
            Self::OutputError => "output_error",
            Self::Shutdown => "shutdown",
            Self::PluginError => "plugin_error",
            Self::NoDeadLetter => "no_dead_letter",
            Self::RouteRemoved => "route_removed",
            Self::DiskFull => "disk_full",
            Self::Corrupt => "corrupt",
            Self::Retention => "retention",
            Self::Unencodable => "unencodable",
            Self::Refused => "refused",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Whether sending the message again could get past this: a full
    /// queue, an output that failed or had nobody to take it, a stop. Not
    /// for what fails again by itself (too large, a plugin's verdict).
    /// An input that acknowledges to its peer has such a message sent
    /// again ([`crate::message::receipt`]).
    pub fn may_pass_later(self) -> bool {
        match self {
            Self::QueueFull
            | Self::NoSubscriber
            | Self::OutputError
            | Self::Shutdown
            | Self::RouteRemoved
            | Self::DiskFull => true,
            Self::TooLarge
            | Self::PluginError
            | Self::NoDeadLetter
            | Self::Corrupt
            | Self::Retention
            | Self::Unencodable
            | Self::Refused => false,
        }
    }
}

/// The pipeline's metric families. Register once per registry and share
/// across pipelines (a rebuilt pipeline keeps counting on the same series).
#[derive(Debug, Clone)]
pub struct PipelineMetrics {
    messages: IntCounterVec,
    offered: IntCounterVec,
    dropped: IntCounterVec,
    depth: IntGaugeVec,
    capacity: IntGaugeVec,
    capacity_bytes: IntGaugeVec,
    bytes: IntGaugeVec,
    backpressure: IntCounterVec,
    blocked: prometheus::CounterVec,
    latency: HistogramVec,
    recovered: IntCounterVec,
    corrupt: IntCounterVec,
    redelivered: IntCounterVec,
    fsync: HistogramVec,
    oldest_age: prometheus::GaugeVec,
    output_retries: IntCounterVec,
    output_inflight: IntGaugeVec,
    output_ack_latency: HistogramVec,
    pub(crate) unrouted: IntCounter,
    /// What durable routes removed by a reload left on disk, by route:
    /// still counted in their depth, so a route of that name that opens
    /// the queue again in this process does not count it as recovered.
    parked: Arc<Mutex<BTreeMap<String, (u64, u64)>>>,
}

impl PipelineMetrics {
    /// Registers the pipeline's families in `registry`.
    ///
    /// # Panics
    /// If called twice on one registry (the names would clash), which is a
    /// programming error.
    pub fn new(registry: &Registry) -> Self {
        Self {
            messages: registry.counter_vec(
                "switchyard_route_messages_total",
                "Messages that left a route, by outcome (delivered, filtered, answered, dead_lettered, dropped).",
                &["route", "outcome"],
            ),
            offered: registry.counter_vec(
                "switchyard_route_offered_total",
                "Messages admitted to a route.",
                &["route"],
            ),
            dropped: registry.counter_vec(
                "switchyard_route_dropped_total",
                "Messages a route dropped, by reason.",
                &["route", "reason"],
            ),
            depth: registry.gauge_vec(
                "switchyard_route_queue_depth",
                "Messages a route holds now: queued plus in flight to its outputs.",
                &["route"],
            ),
            capacity: registry.gauge_vec(
                "switchyard_route_queue_capacity",
                "Most messages a route's queue holds.",
                &["route"],
            ),
            capacity_bytes: registry.gauge_vec(
                "switchyard_route_queue_capacity_bytes",
                "Most bytes a route's queue holds.",
                &["route"],
            ),
            bytes: registry.gauge_vec(
                "switchyard_route_queue_bytes",
                "Bytes a route holds now: queued plus in flight.",
                &["route"],
            ),
            backpressure: registry.counter_vec(
                "switchyard_route_backpressure_events_total",
                "Times a full queue made a producer wait or a message drop.",
                &["route"],
            ),
            blocked: registry.float_counter_vec(
                "switchyard_route_blocked_seconds_total",
                "Time producers spent waiting for room on a block route.",
                &["route"],
            ),
            latency: registry.histogram_vec(
                "switchyard_route_latency_seconds",
                "Time from a message's acceptance by an input to its hand-off to the outputs.",
                &["route"],
                latency_buckets(),
            ),
            recovered: registry.counter_vec(
                "switchyard_queue_recovered_records_total",
                "Records a durable route's queue found on disk at start, to be delivered.",
                &["route"],
            ),
            corrupt: registry.counter_vec(
                "switchyard_queue_corrupt_records_total",
                "Damaged spans a durable queue skipped (at start or while reading), each logged with its segment and offset.",
                &["route"],
            ),
            redelivered: registry.counter_vec(
                "switchyard_route_redelivered_total",
                "Records found at start that had been handed to the outputs before (as of the last saved cursors): they are sent again.",
                &["route"],
            ),
            fsync: registry.histogram_vec(
                "switchyard_queue_fsync_seconds",
                "Time each fdatasync of a durable queue took.",
                &["route"],
                latency_buckets(),
            ),
            oldest_age: registry.float_gauge_vec(
                "switchyard_route_queue_oldest_age_seconds",
                "Age of the oldest message a durable route holds (since the router accepted it), updated every second; 0 when it holds none.",
                &["route"],
            ),
            output_retries: registry.counter_vec(
                "switchyard_output_retries_total",
                "Messages sent to an output again after it failed to take them (its `retry` policy; durable routes retry by default), by the reason of the refusal before: no_subscriber or failed.",
                &["output", "reason"],
            ),
            output_inflight: registry.gauge_vec(
                "switchyard_output_inflight",
                "Messages handed to an output and not answered yet (retries included), over every route that sends to it.",
                &["output"],
            ),
            output_ack_latency: registry.histogram_vec(
                "switchyard_output_ack_latency_seconds",
                "Time from a batch's hand-off to an output to its answer (written, replied to or acknowledged, retries included), per batch.",
                &["output"],
                latency_buckets(),
            ),
            parked: Arc::default(),
            unrouted: registry.counter(
                "switchyard_pipeline_unrouted_total",
                "Messages that matched no route.",
            ),
        }
    }

    /// Resolves the children of route `name`; done once per route at build.
    pub(crate) fn route(&self, name: &str, capacity: usize, capacity_bytes: usize) -> RouteMetrics {
        let l = &[name];
        let m = RouteMetrics {
            offered: self.offered.with_label_values(l),
            delivered: self.messages.with_label_values(&[name, "delivered"]),
            filtered: self.messages.with_label_values(&[name, "filtered"]),
            answered: self.messages.with_label_values(&[name, "answered"]),
            dead_lettered: self.messages.with_label_values(&[name, "dead_lettered"]),
            dropped_outcome: self.messages.with_label_values(&[name, "dropped"]),
            dropped: DropReason::ALL.map(|r| self.dropped.with_label_values(&[name, r.as_str()])),
            depth: self.depth.with_label_values(l),
            bytes: self.bytes.with_label_values(l),
            backpressure: self.backpressure.with_label_values(l),
            blocked: self.blocked.with_label_values(l),
            latency: self.latency.with_label_values(l),
            recovered: self.recovered.with_label_values(l),
            corrupt: self.corrupt.with_label_values(l),
            redelivered: self.redelivered.with_label_values(l),
            fsync: self.fsync.with_label_values(l),
            retries: self.output_retries.clone(),
            inflight: self.output_inflight.clone(),
            ack_latency: self.output_ack_latency.clone(),
            oldest_age: self.oldest_age.with_label_values(l),
            parked: Arc::clone(&self.parked),
        };
        self.capacity
            .with_label_values(l)
            .set(i64::try_from(capacity).unwrap_or(i64::MAX));
        self.capacity_bytes
            .with_label_values(l)
            .set(i64::try_from(capacity_bytes).unwrap_or(i64::MAX));
        m
    }
}

/// One route's metric children.
#[derive(Debug, Clone)]
pub(crate) struct RouteMetrics {
    pub(crate) offered: IntCounter,
    pub(crate) delivered: IntCounter,
    /// Messages a filter dropped, or a routing plugin sent nowhere.
    pub(crate) filtered: IntCounter,
    /// Requests a filter plugin answered itself (a reply verdict).
    pub(crate) answered: IntCounter,
    /// Messages the dead-letter output accepted.
    pub(crate) dead_lettered: IntCounter,
    dropped_outcome: IntCounter,
    dropped: [IntCounter; DropReason::ALL.len()],
    pub(crate) depth: IntGauge,
    pub(crate) bytes: IntGauge,
    pub(crate) backpressure: IntCounter,
    pub(crate) blocked: Counter,
    pub(crate) latency: Histogram,
    /// Durable queues: records found at start, damaged spans skipped,
    /// records sent again, and each sync's time.
    pub(crate) recovered: IntCounter,
    pub(crate) corrupt: IntCounter,
    pub(crate) redelivered: IntCounter,
    pub(crate) fsync: Histogram,
    /// `output_retries_total{output}`, the family.
    retries: IntCounterVec,
    /// `output_inflight{output}` and `output_ack_latency_seconds{output}`.
    inflight: IntGaugeVec,
    ack_latency: HistogramVec,
    /// Durable routes: the oldest held message's age.
    pub(crate) oldest_age: prometheus::Gauge,
    parked: Arc<Mutex<BTreeMap<String, (u64, u64)>>>,
}

/// Messages counted in `output_inflight` while it lives.
pub(crate) struct InFlight {
    gauge: IntGauge,
    n: i64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.sub(self.n);
    }
}

impl RouteMetrics {
    /// Notes that durable route `route` left `records` (`bytes`) on disk
    /// when a reload removed it: they stay in its depth.
    pub(crate) fn park(&self, route: &str, records: u64, bytes: u64) {
        let mut parked = self.parked.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = parked.entry(route.to_owned()).or_default();
        entry.0 += records;
        entry.1 += bytes;
    }

    /// What [`RouteMetrics::park`] noted for `route`, forgotten.
    pub(crate) fn unpark(&self, route: &str) -> (u64, u64) {
        self.parked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(route)
            .unwrap_or_default()
    }

    /// `output_retries_total` of `output` for `reason` (resolved per
    /// retry: a hash lookup, no allocation once it exists).
    pub(crate) fn output_retries(&self, output: &str, reason: Reject) -> IntCounter {
        self.retries.with_label_values(&[output, reason.label()])
    }

    /// Counts `n` messages in flight to `output` until the guard drops.
    pub(crate) fn output_inflight(&self, output: &str, n: usize) -> InFlight {
        let gauge = self.inflight.with_label_values(&[output]);
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        gauge.add(n);
        InFlight { gauge, n }
    }

    /// `output_ack_latency_seconds` of `output`.
    pub(crate) fn output_ack_latency(&self, output: &str) -> Histogram {
        self.ack_latency.with_label_values(&[output])
    }

    /// Makes sure every one of `outputs` has its retries series, at 0.
    pub(crate) fn declare_retries<'a>(&self, outputs: impl IntoIterator<Item = &'a str>) {
        for o in outputs {
            for reason in [Reject::NoSubscriber, Reject::Failed] {
                let _ = self.retries.with_label_values(&[o, reason.label()]);
            }
            let _ = self.inflight.with_label_values(&[o]);
            let _ = self.ack_latency.with_label_values(&[o]);
        }
    }

    /// Counts `n` messages dropped for `reason`.
    pub(crate) fn dropped(&self, reason: DropReason, n: usize) {
        if n > 0 {
            self.dropped[reason.index()].inc_by(n as u64);
            self.dropped_outcome.inc_by(n as u64);
        }
    }

    /// Messages dropped for `reason` so far.
    pub(crate) fn dropped_count(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()].get()
    }

    /// Messages dropped for any reason so far.
    pub(crate) fn dropped_total(&self) -> u64 {
        self.dropped_outcome.get()
    }

    /// Moves the depth and bytes gauges by a signed amount; deltas commute,
    /// so concurrent updates leave exact values.
    pub(crate) fn held(&self, messages: i64, bytes: i64) {
        if messages != 0 {
            self.depth.add(messages);
        }
        if bytes != 0 {
            self.bytes.add(bytes);
        }
    }
}

/// `usize` to a gauge delta; counts here are bounded by queue capacities.
pub(crate) fn delta(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
