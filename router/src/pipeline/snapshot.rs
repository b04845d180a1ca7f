//! Plain, serializable views of the pipeline for the admin API and for the
//! shutdown log.

use std::collections::BTreeMap;

use super::metrics::DropReason;
use super::spec::WhenFull;
use super::stages::OnError;
use crate::message::Pattern;

/// The whole pipeline, now.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PipelineSnapshot {
    /// The generation of the route set in force (1 at start, plus one per
    /// applied reload).
    pub generation: u64,
    /// Every route, in config order; then routes a reload removed that are
    /// still draining.
    pub routes: Vec<RouteSnapshot>,
    /// Messages that matched no route, since start.
    pub unrouted: u64,
    /// True once a shutdown has begun (intake refused).
    pub shutting_down: bool,
}

/// One route, now. Counts are totals since the route's metric series began.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RouteSnapshot {
    /// The route's name.
    pub name: String,
    /// Its topic pattern.
    #[serde(rename = "match")]
    pub pattern: Pattern,
    /// Its attribute conditions.
    pub attributes: BTreeMap<String, String>,
    /// Its target outputs.
    pub outputs: Vec<String>,
    /// Its filter plugins, in order.
    pub filters: Vec<String>,
    /// Its routing plugin.
    pub router: Option<String>,
    /// What it does with a batch a plugin failed on.
    pub on_error: OnError,
    /// Its dead-letter output.
    pub dead_letter: Option<String>,
    /// Its queue's policy.
    pub when_full: WhenFull,
    /// Its queue.
    pub queue: QueueSnapshot,
    /// Messages admitted to the route.
    pub offered: u64,
    /// Messages every target output accepted.
    pub delivered: u64,
    /// Messages a filter plugin dropped or rejected, or the routing plugin
    /// sent nowhere.
    pub filtered: u64,
    /// Requests a filter plugin answered itself.
    pub answered: u64,
    /// Messages the dead-letter output accepted.
    pub dead_lettered: u64,
    /// Messages dropped, by reason.
    pub dropped: DroppedCounts,
    /// Times a full queue made a producer wait or a message drop.
    pub backpressure_events: u64,
    /// Time producers spent waiting for room, in seconds.
    pub blocked_seconds: f64,
    /// True for a route a reload removed that still drains its queue.
    pub draining: bool,
}

/// A route's queue, now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct QueueSnapshot {
    /// Messages held: `queued + in_flight` (what the depth gauge shows).
    pub depth: usize,
    /// Messages waiting for the worker.
    pub queued: usize,
    /// Messages handed to the outputs, not yet taken by all of them.
    pub in_flight: usize,
    /// Bytes held.
    pub bytes: usize,
    /// The message bound.
    pub capacity: usize,
    /// The byte bound.
    pub capacity_bytes: usize,
}

impl QueueSnapshot {
    /// Adds another queue's holdings (a replaced route still draining).
    pub fn absorb(&mut self, other: &QueueSnapshot) {
        self.depth += other.depth;
        self.queued += other.queued;
        self.in_flight += other.in_flight;
        self.bytes += other.bytes;
    }
}

/// Dropped messages by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DroppedCounts {
    /// All reasons together.
    pub total: u64,
    /// `queue_full`.
    pub queue_full: u64,
    /// `no_subscriber`.
    pub no_subscriber: u64,
    /// `too_large`.
    pub too_large: u64,
    /// `output_error`.
    pub output_error: u64,
    /// `shutdown`.
    pub shutdown: u64,
    /// `plugin_error`.
    pub plugin_error: u64,
    /// `no_dead_letter`.
    pub no_dead_letter: u64,
    /// `route_removed`.
    pub route_removed: u64,
    /// `disk_full`.
    pub disk_full: u64,
    /// `corrupt`.
    pub corrupt: u64,
    /// `retention`.
    pub retention: u64,
    /// `unencodable`.
    pub unencodable: u64,
    /// `refused`.
    pub refused: u64,
}

impl DroppedCounts {
    /// The count for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::QueueFull => self.queue_full,
            DropReason::NoSubscriber => self.no_subscriber,
            DropReason::TooLarge => self.too_large,
            DropReason::OutputError => self.output_error,
            DropReason::Shutdown => self.shutdown,
            DropReason::PluginError => self.plugin_error,
            DropReason::NoDeadLetter => self.no_dead_letter,
            DropReason::RouteRemoved => self.route_removed,
            DropReason::DiskFull => self.disk_full,
            DropReason::Corrupt => self.corrupt,
            DropReason::Retention => self.retention,
            DropReason::Unencodable => self.unencodable,
            DropReason::Refused => self.refused,
        }
    }
}

/// What a shutdown left behind.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ShutdownReport {
    /// True when every queue drained before the grace period ended.
    pub drained: bool,
    /// Every route, in config order.
    pub routes: Vec<RouteReport>,
}

impl ShutdownReport {
    /// Messages still held when the grace period ended, over all routes.
    pub fn left(&self) -> u64 {
        self.routes.iter().map(|r| r.left).sum()
    }
}

/// One route at the end of a shutdown. Totals since the route's metric
/// series began.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RouteReport {
    /// The route's name.
    pub name: String,
    /// Messages admitted.
    pub offered: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages filtered out.
    pub filtered: u64,
    /// Requests a filter plugin answered itself.
    pub answered: u64,
    /// Messages dead-lettered.
    pub dead_lettered: u64,
    /// Messages dropped, by reason (the `left` ones are in `shutdown`).
    pub dropped: DroppedCounts,
    /// Messages still queued or in flight when the grace period ended,
    /// counted as dropped (`shutdown`).
    pub left: u64,
}
