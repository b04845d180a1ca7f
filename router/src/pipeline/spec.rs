//! What the application tells the pipeline about each route: a typed
//! [`RouteSpec`], built from the validated config by the app. The pipeline
//! never reads the config module itself.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::pattern::Pattern;
use super::stages::Stages;

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
    /// The route's plugins and what happens when they fail.
    pub stages: Stages,
    /// How long a request on this route waits for its reply, counted from
    /// when the router accepted it.
    pub request_timeout: std::time::Duration,
}

/// Bounds and policy of one route's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSpec {
    /// Most messages held at once, queued or in flight to the outputs. At
    /// least 1.
    pub capacity: usize,
    /// Most bytes (topic + payload + attributes, see
    /// [`super::Message::size`]) held at once. At least 1. A single message
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
}

impl QueueSpec {
    /// The default for [`QueueSpec::max_batch`].
    pub const DEFAULT_MAX_BATCH: usize = 256;
    /// The default for [`QueueSpec::block_timeout`].
    pub const DEFAULT_BLOCK_TIMEOUT: Duration = Duration::from_secs(1);

    /// A queue of `capacity` messages and `capacity_bytes` bytes with the
    /// default block timeout and the default batch size, capped at half the capacity: messages in flight
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
        }
    }
}

/// What a route does with a message that finds its queue full, written
/// `queue = { when_full = "block" }`. Every message dropped is counted in
/// `switchyard_route_dropped_total{route, reason="queue_full"}`.
///
/// The default is `drop_oldest`: a stalled consumer then costs only its
/// own route the oldest messages, counted, while the inputs, and every other
/// route fed by them, keep flowing; at the edge the newest reading is
/// usually the one worth having. `block` is the choice when nothing may be
/// dropped (work queues): it pushes back to producers instead, but one
/// stalled route then holds back every message from the inputs that feed
/// it, and a ZeroMQ PUB publisher that is pushed back drops at its own
/// high-water mark, where the router cannot count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// `block`: the producer waits for room: ZeroMQ inputs stop reading the
    /// peer (the pressure goes back to it); an HTTP publish waits up to the
    /// route's `block_timeout`, then is answered 503. Nothing is dropped.
    Block,
    /// `drop_newest`: the incoming message is dropped and counted
    /// (`queue_full`).
    DropNewest,
    /// `drop_oldest`: the oldest queued message is evicted and counted
    /// (`queue_full`) to make room. Messages already handed to the worker
    /// cannot be evicted; if only those fill the queue, the incoming message
    /// is dropped instead.
    #[default]
    DropOldest,
}

impl WhenFull {
    /// The config spelling: `block`, `drop_newest` or `drop_oldest`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::DropNewest => "drop_newest",
            Self::DropOldest => "drop_oldest",
        }
    }
}

impl fmt::Display for WhenFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a `when_full` policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown when_full policy {0:?}; expected block, drop_newest or drop_oldest")]
pub struct UnknownPolicy(pub String);

impl FromStr for WhenFull {
    type Err = UnknownPolicy;
    fn from_str(s: &str) -> Result<Self, UnknownPolicy> {
        match s {
            "block" => Ok(Self::Block),
            "drop_newest" => Ok(Self::DropNewest),
            "drop_oldest" => Ok(Self::DropOldest),
            other => Err(UnknownPolicy(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_round_trip() {
        for p in [WhenFull::Block, WhenFull::DropNewest, WhenFull::DropOldest] {
            assert_eq!(p.as_str().parse::<WhenFull>(), Ok(p));
            assert_eq!(
                serde_json::to_string(&p).expect("serialize"),
                format!("\"{p}\"")
            );
        }
        assert!("drop".parse::<WhenFull>().is_err());
    }
}
