//! The router's core: the route table, the bounded per-route queues with
//! their `when_full` policies, and the route workers that hand batches to
//! the outputs.
//!
//! Data flow: an input offers a batch to the [`Pipeline`] (through
//! [`crate::ingress::Sink`]); each message is matched in the [`RouteTable`]
//! (a token trie) and admitted to the queue of **every** route it matches, or
//! to none; each route's worker pops batches, runs them through the route's
//! plugins ([`Stages`]: filters, then a routing plugin) on the blocking pool,
//! and hands what is left to the route's [`crate::egress::Output`]s.
//!
//! It routes [`crate::message::Message`]s: the vocabulary lives in
//! [`crate::message`], below the pipeline and the edges alike.
//!
//! Files: `table`
//! ([`RouteTable`]), `spec` ([`RouteSpec`], what the app builds from config),
//! `queue` ([`RouteQueue`]), `reconfigure` (a reload's new route set,
//! [`Applied`]), `admission` (the [`crate::ingress::Sink`] impl),
//! `stages` (a route's plugins and their runner), `worker` (route
//! workers), `route`, `metrics` ([`PipelineMetrics`]),
//! `snapshot` (admin and shutdown views), `runtime` ([`Pipeline`]).
//!
//! Nothing is lost silently: per route, `offered = delivered + filtered +
//! answered + dead_lettered + dropped (by reason) + depth`, exactly,
//! whenever the route is idle. The metrics:
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `switchyard_route_offered_total` | route | messages admitted to the route |
//! | `switchyard_route_messages_total` | route, outcome | `delivered` (every target took it), `filtered` (by a plugin), `answered` (a filter answered the request itself), `dead_lettered` (the dead-letter output took it) or `dropped` |
//! | `switchyard_route_dropped_total` | route, reason | `queue_full`, `no_subscriber`, `too_large`, `output_error`, `shutdown`, `plugin_error`, `no_dead_letter` |
//! | `switchyard_route_queue_depth` | route | messages held: queued + in flight to the outputs |
//! | `switchyard_route_queue_bytes` | route | bytes held |
//! | `switchyard_route_queue_capacity` / `_capacity_bytes` | route | the bounds |
//! | `switchyard_route_backpressure_events_total` | route | a full queue made a producer wait or a message drop |
//! | `switchyard_route_blocked_seconds_total` | route | time producers waited on a `block` route (added as each wait ends) |
//! | `switchyard_route_latency_seconds` | route | histogram: input acceptance to hand-off, delivered messages |
//! | `switchyard_pipeline_unrouted_total` | | messages that matched no route |
//! | `switchyard_queue_recovered_records_total` | route | durable: records found on disk at start (add them to `offered` for the sum above) |
//! | `switchyard_route_redelivered_total` | route | durable: of those, records handed to the outputs before the restart |
//! | `switchyard_queue_corrupt_records_total` | route | durable: damaged spans skipped, at start or while reading |
//! | `switchyard_queue_fsync_seconds` | route | durable: histogram of each sync |

mod admission;
mod dead_letters;
mod metrics;
mod queue;
mod reconfigure;
mod retry;
mod route;
mod runtime;
mod snapshot;
mod spec;
mod stages;
mod table;
mod tally;
mod worker;

pub use metrics::{DropReason, PipelineMetrics};
pub use queue::{Popped, Pushed, QueueStats, RouteQueue, WaitError, Waited};
pub use reconfigure::Applied;
pub use runtime::Pipeline;
pub use snapshot::{
    DroppedCounts, PipelineSnapshot, QueueSnapshot, RouteReport, RouteSnapshot, ShutdownReport,
};
pub use spec::{
    Durability, DurableSpec, Fsync, QueueSpec, Retry, RouteSpec, UnknownPolicy, WhenFull,
};
pub use stages::{DEAD_LETTER_REASON, DEAD_LETTER_ROUTE, INLINE_BUDGET, OnError, Stages};
pub use table::{Matches, RouteTable};

/// Why a pipeline could not be built from its route specs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A route has an empty name.
    #[error("a route has an empty name")]
    EmptyName,
    /// Two routes share a name.
    #[error("route {route:?} is defined twice")]
    DuplicateRoute {
        /// The repeated name.
        route: String,
    },
    /// A queue bound or batch size is zero.
    #[error("route {route:?}: queue {field} must be at least 1")]
    ZeroBound {
        /// The route.
        route: String,
        /// Which field: `capacity`, `capacity_bytes` or `max_batch`.
        field: &'static str,
    },
    /// A route names no target output.
    #[error("route {route:?} has no target output")]
    NoOutputs {
        /// The route.
        route: String,
    },
    /// A route names an output that was not given.
    #[error("route {route:?} targets unknown output {output:?}")]
    UnknownOutput {
        /// The route.
        route: String,
        /// The missing output's name.
        output: String,
    },
    /// Two outputs share a name.
    #[error("output {output:?} is given twice")]
    DuplicateOutput {
        /// The repeated name.
        output: String,
    },
    /// A route uses a plugin as a filter that is not a filter, or as its
    /// router a plugin that is not a router.
    #[error(
        "route {route:?}: plugin {plugin:?} is a {kind} plugin; {place} must be a {expected} plugin"
    )]
    WrongPluginKind {
        /// The route.
        route: String,
        /// The plugin.
        plugin: String,
        /// What the plugin is.
        kind: crate::plugin::Kind,
        /// What the place needs.
        expected: crate::plugin::Kind,
        /// `filters` or `router`.
        place: &'static str,
    },
    /// A reconfiguration came after the shutdown began.
    #[error("the pipeline is shutting down")]
    ShuttingDown,
    /// A durable route's queue could not be opened.
    #[error("route {route:?}: durable queue: {reason}")]
    Store {
        /// The route.
        route: String,
        /// What failed, with the directory.
        reason: String,
    },
    /// A reload would remove a durable route, or turn its queue into a
    /// memory one, while it holds messages (unless forced); or change a
    /// durable route's `when_full`.
    #[error("route {route:?}: {change}")]
    DurableChange {
        /// The route.
        route: String,
        /// What the reload would do, and what to do instead.
        change: String,
    },
    /// [`Pipeline::inject`] named a route that does not exist.
    #[error("no route is called {route:?}")]
    NoSuchRoute {
        /// The name given.
        route: String,
    },
    /// [`Pipeline::start`] was called outside a tokio runtime.
    #[error("the pipeline must be started inside a tokio runtime")]
    NoRuntime,
}

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
