//! What the application tells the pipeline about each route: a typed
//! [`RouteSpec`], built from the validated config by the app. The pipeline
//! never reads the config module itself.

use std::collections::BTreeMap;
use std::time::Duration;

use super::stages::Stages;
use crate::message::Pattern;

/// One route, as the pipeline needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Unique route name; the `route` label of every route metric.
    pub name: String,
    /// The topic pattern messages must match.
    pub pattern: Pattern,
    /// Attribute conditions: each listed attribute must be present with
    /// exactly this value. Empty means the pattern alone decides.
    pub attributes: BTreeMap<String, String>,
    /// The route's queue.
    pub queue: QueueSpec,
    /// Names of the target outputs; a message is delivered once every one of
    /// them has accepted it (or, with a routing plugin, every one it chose).
    pub outputs: Vec<String>,
    /// How a send to each target output that has a policy is retried.
    /// A target without one is tried once on a memory queue; on a durable
    /// queue it is retried with [`Retry::DURABLE_DEFAULT`].
    pub retry: BTreeMap<String, Retry>,
    /// The route's plugins and what happens when they fail.
    pub stages: Stages,
    /// How long a request on this route waits for its reply, counted from
    /// when the router accepted it.
    pub request_timeout: std::time::Duration,
}

/// Bounds and policy of one route's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// Most messages held at once, queued or in flight to the outputs. At
    /// least 1.
    pub capacity: usize,
    /// Most bytes (topic + payload + attributes, see
    /// [`crate::message::Message::size`]) held at once. At least 1. A single message
    /// larger than this is still taken when the queue is empty, so the bound
    /// is `max(capacity_bytes, largest message)`.
    pub capacity_bytes: usize,
    /// What happens to a message that finds the queue full.
    pub when_full: WhenFull,
    /// Under [`WhenFull::Block`], how long an offer that asked for a
    /// bounded wait ([`crate::ingress::Wait::Bounded`]) waits for room
    /// before the route refuses it. Changes apply to offers made from then
    /// on.
    pub block_timeout: Duration,
    /// Most messages the route's worker hands to its outputs in one batch.
    /// At least 1.
    pub max_batch: usize,
    /// `Some` when the route's queue is kept on disk.
    pub durable: Option<DurableSpec>,
}

/// Where and how a durable route keeps its queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableSpec {
    /// The queue's own directory (the app uses
    /// `<data_dir>/queues/<route>`); created if missing.
    pub dir: std::path::PathBuf,
    /// Its sync policy and retention.
    pub settings: Durability,
}

impl QueueSpec {
    /// The default for [`QueueSpec::max_batch`].
    pub const DEFAULT_MAX_BATCH: usize = 256;
    /// The default for [`QueueSpec::block_timeout`].
    pub const DEFAULT_BLOCK_TIMEOUT: Duration = crate::config::QueueConfig::DEFAULT_BLOCK_TIMEOUT;

    /// A queue in memory of `capacity` messages and `capacity_bytes` bytes
    /// with the default block timeout and the default batch size, capped at half the capacity: messages in flight
    /// to a stalled output cannot be evicted, so this keeps at least half
    /// of a full queue evictable and `drop_oldest` meaningful on small
    /// queues.
    pub fn new(capacity: usize, capacity_bytes: usize, when_full: WhenFull) -> Self {
        Self {
            capacity,
            capacity_bytes,
            when_full,
            block_timeout: Self::DEFAULT_BLOCK_TIMEOUT,
            max_batch: Self::DEFAULT_MAX_BATCH.min((capacity / 2).max(1)),
            durable: None,
        }
    }
}

pub use crate::config::{Durability, Fsync, Retry, UnknownPolicy, WhenFull};

impl QueueSpec {
    /// The spec of `queue`, a route's settings; a durable one keeps its
    /// files in `dir`.
    pub fn from_config(
        queue: &crate::config::QueueConfig,
        dir: Option<std::path::PathBuf>,
    ) -> Self {
        Self {
            block_timeout: queue.block_timeout,
            durable: queue
                .durable
                .zip(dir)
                .map(|(settings, dir)| DurableSpec { dir, settings }),
            ..Self::new(queue.capacity, queue.max_bytes, queue.when_full)
        }
    }
}
