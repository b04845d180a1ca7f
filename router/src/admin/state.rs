//! What the admin endpoints ask the application, and the JSON they answer
//! with. The app implements [`State`]; admin never sees pipeline internals.

use std::collections::BTreeMap;

use serde::Serialize;

/// The application's view, as the admin endpoints need it. Implemented by
/// the app; every method is cheap and synchronous (reads of atomics, metric
/// values or the live config snapshot), called once per admin request.
pub trait State: Send + Sync + 'static {
    /// True once the router serves: config loaded, inputs bound. `/ready`
    /// answers 200 when true, `503 NOT_READY` otherwise.
    fn ready(&self) -> bool;

    /// The generation of the live config: 1 for the config loaded at start,
    /// plus one per successful reload.
    fn config_generation(&self) -> u64;

    /// Per-route counts for `/v1/status`, in config order.
    fn route_stats(&self) -> Vec<RouteStats>;

    /// Per-output counts for `/v1/status`, in config order.
    fn output_stats(&self) -> Vec<OutputStats>;

    /// The live routes for `/v1/routes`, in config order.
    fn routes(&self) -> Vec<RouteInfo>;
}

/// One route's counters, as `/v1/status` shows them. For each route,
/// `offered = delivered + filtered + dropped + errors + queued` once the
/// router is idle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RouteStats {
    /// The route's name.
    pub name: String,
    /// Messages admitted to the route's queue.
    pub offered: u64,
    /// Messages handed to the route's outputs.
    pub delivered: u64,
    /// Messages a filter plugin removed.
    pub filtered: u64,
    /// Messages dropped (queue full, plugin error, no subscriber, ...).
    pub dropped: u64,
    /// Messages that failed in a plugin or an output.
    pub errors: u64,
    /// Messages waiting in the queue now.
    pub queued: u64,
    /// The queue's bound, in messages.
    pub capacity: u64,
}

/// One output's counters, as `/v1/status` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutputStats {
    /// The output's name.
    pub name: String,
    /// The output kind, e.g. `zmq-pub`.
    pub kind: String,
    /// Messages sent.
    pub sent: u64,
    /// Messages the output dropped.
    pub dropped: u64,
    /// Subscribers or workers connected now.
    pub peers: u64,
}

/// One live route, as `/v1/routes` shows it (the shape of its config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RouteInfo {
    /// The route's name.
    pub name: String,
    /// Its topic pattern, e.g. `sensors.>`.
    #[serde(rename = "match")]
    pub pattern: String,
    /// Attribute conditions, all of which must hold.
    pub attributes: BTreeMap<String, String>,
    /// Filter plugins, in order.
    pub filters: Vec<String>,
    /// The routing plugin, if any.
    pub router: Option<String>,
    /// Target outputs.
    pub to: Vec<String>,
    /// The queue's bound, in messages.
    pub capacity: u64,
    /// The queue's bound, in bytes, if it has one.
    pub capacity_bytes: Option<u64>,
    /// `block`, `drop_newest` or `drop_oldest`.
    pub when_full: String,
}
