//! The policies a route is written with: what it does when its queue is
//! full ([`WhenFull`]), when a durable queue syncs to disk ([`Fsync`]) and
//! when a plugin fails on a batch ([`OnError`]).
//! Settings, shared as they are by the config and the pipeline that
//! applies them.

use std::fmt;
use std::str::FromStr;

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

/// When a durable queue (`queue = { durable = true }`) forces what it wrote
/// to disk, written `queue = { fsync = "batch" }`: the trade between how
/// much a power cut can lose and how many messages a second the disk takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// `always`: each message is `fdatasync`ed before it counts as
    /// accepted. Nothing accepted is lost, even to a power cut; the
    /// slowest.
    Always,
    /// `batch`: group commit: one `fdatasync` covers every message accepted
    /// within the queue's `fsync_interval`, and none of them counts as
    /// accepted before it. Nothing accepted is lost; a producer waits up to
    /// one interval longer.
    #[default]
    Batch,
    /// `os`: no `fdatasync`; the operating system writes back when it
    /// likes. What is accepted survives a crash of the process, not a power
    /// cut or a kernel crash.
    Os,
}

impl Fsync {
    /// The config spelling: `always`, `batch` or `os`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Batch => "batch",
            Self::Os => "os",
        }
    }
}

impl fmt::Display for Fsync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not an `fsync` mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fsync mode {0:?}; expected always, batch or os")]
pub struct UnknownFsync(pub String);

impl FromStr for Fsync {
    type Err = UnknownFsync;
    fn from_str(s: &str) -> Result<Self, UnknownFsync> {
        match s {
            "always" => Ok(Self::Always),
            "batch" => Ok(Self::Batch),
            "os" => Ok(Self::Os),
            other => Err(UnknownFsync(other.to_owned())),
        }
    }
}

/// What a route does with a batch a plugin failed on (trap, timeout, broken
/// verdict), written `on_error = "drop"` or `"dead_letter"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// `drop`: the batch is dropped, counted in
    /// `switchyard_route_dropped_total{route, reason="plugin_error"}`.
    #[default]
    Drop,
    /// `dead_letter`: the batch goes, unchanged, to the route's
    /// `dead_letter` output, each message marked with `switchyard.dead_letter.route`
    /// and `switchyard.dead_letter.reason`.
    DeadLetter,
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
        for f in [Fsync::Always, Fsync::Batch, Fsync::Os] {
            assert_eq!(f.as_str().parse::<Fsync>(), Ok(f));
            assert_eq!(
                serde_json::to_string(&f).expect("serialize"),
                format!("\"{f}\"")
            );
        }
        assert_eq!(Fsync::default(), Fsync::Batch);
        assert_eq!(
            "never".parse::<Fsync>().unwrap_err().to_string(),
            "unknown fsync mode \"never\"; expected always, batch or os"
        );
    }
}
