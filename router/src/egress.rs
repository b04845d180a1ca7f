//! Outputs: one file per output kind (`zmq`: PUB and PUSH; `dealer`: DEALER
//! facing REP services; `nats`: core NATS and JetStream uplinks;
//! `webhook`: HTTP(S) POSTs; `blackhole`), each
//! encoding messages onto the wire.
//! Each output has two halves:
//!
//! - the data half, in this file: the [`Output`] trait route workers hand
//!   batches to, and the [`Delivery`] report that makes each message's
//!   outcome exact;
//! - the lifecycle half ([`Lifecycle`], in `lifecycle`): built from its
//!   config entry by [`build`] with a [`Context`] of shared resources,
//!   attached, waited on, read for `/v1/status`, flushed and closed.
//!
//! Every kind counts into the same families ([`Metrics`]):
//! `switchyard_output_messages_total{output}`,
//! `switchyard_output_dropped_total{output,reason}` and
//! `switchyard_output_peers{output}`.
//!
//! A route worker pops a batch from its queue and calls [`Output::send`] on
//! each of the route's target outputs. A message is *delivered* when every
//! target accepted it; otherwise it is dropped, with the reason the first
//! refusing target (in the route's `to` order) gave. The targets get the
//! batch at the same time, and the worker moves on once all of them have
//! answered, so a slow output holds its routes back (their queues fill and
//! `when_full` applies) rather than growing memory.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::time::Duration;

use crate::config::{self, OutputKind};
use crate::message::Message;

pub mod blackhole;
pub mod dealer;
mod lifecycle;
mod metrics;
pub mod nats;
pub mod webhook;
pub mod zmq;

pub use crate::nats::UplinkStatus;
pub use lifecycle::{AttachError, Context, Handle, Lifecycle, LifecycleFuture, OutputStats};
pub use metrics::{Metrics, Refusals};

/// Builds the output `entry` describes, not yet attached.
pub fn build(entry: &config::Output, ctx: &Context) -> Handle {
    let name = entry.name.as_str();
    match &entry.kind {
        OutputKind::ZmqPub(socket) => zmq::ZmqPubOutput::build(name, socket, ctx),
        OutputKind::ZmqPush(socket) => zmq::ZmqPushOutput::build(name, socket, ctx),
        OutputKind::ZmqDealer(settings) => dealer::ZmqDealerOutput::build(name, settings, ctx),
        OutputKind::Blackhole(settings) => blackhole::BlackholeOutput::build(name, settings, ctx),
        OutputKind::Nats(settings) => nats::NatsOutput::build(name, settings, ctx),
        OutputKind::NatsJetstream(settings) => nats::JetStreamOutput::build(name, settings, ctx),
        OutputKind::Webhook(settings) => webhook::WebhookOutput::build(name, settings, ctx),
    }
}

/// The future [`Output::send`] returns.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<Delivery, Error>> + Send + 'a>>;

/// Where route workers hand batches of messages.
pub trait Output: Send + Sync + 'static {
    /// The output's configured name (the `output` metric label).
    fn name(&self) -> &str;

    /// Takes `batch`, in order. May wait: an output whose own buffers are
    /// full (e.g. PUSH workers not reading) holds the route worker here, so
    /// the route's queue fills and its `when_full` policy applies. Resolves
    /// once the output has taken responsibility for the batch (queued it for
    /// its peers, or written it), reporting per message which ones it
    /// refused and why.
    ///
    /// # Errors
    /// An [`Error`] when the output could take none of the batch; every
    /// message of the batch then counts as dropped.
    ///
    /// # Cancel safety
    /// The pipeline drops this future only when a shutdown's grace period
    /// ends; the whole batch is then counted as dropped (`shutdown`), so an
    /// output should take a batch in one step after any wait.
    fn send<'a>(&'a self, batch: &'a [Message]) -> SendFuture<'a>;

    /// [`send`](Self::send) for a durable route, which releases the batch
    /// from disk on this answer: resolves only once what the output
    /// accepted has left the router's memory (its bytes written to a
    /// peer's socket), so a crash after the answer loses none of it. A
    /// message the output took but could then not write is refused
    /// ([`Reject::Failed`]), so the route sends it again. An output whose
    /// `send` already answers that late (on a reply or an acknowledgement)
    /// keeps this default.
    fn send_written<'a>(&'a self, batch: &'a [Message]) -> SendFuture<'a> {
        self.send(batch)
    }

    /// How many messages one [`send`](Self::send) should carry to keep
    /// the output busy, when that is more than a route's usual batch: an
    /// output that answers a batch only once its peer answered all of it
    /// (a webhook's requests in flight) idles between batches that fill
    /// it only once. A route takes the largest hint of its targets,
    /// within half its queue's capacity. `None`: the route's own size.
    fn preferred_batch(&self) -> Option<usize> {
        None
    }
}

/// Why an output refused one message of a batch it otherwise took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Nobody was there to take it: no subscriber matched its topic, or no
    /// worker is connected.
    NoSubscriber = 0,
    /// It exceeds a size limit of the output or its peers.
    TooLarge = 1,
    /// The output failed on this message (encoding, a peer's error reply).
    Failed = 2,
    /// The output cannot carry it as it is, and never will (an attribute a
    /// NATS header cannot hold). Refused for good, like [`Reject::TooLarge`].
    Unencodable = 3,
    /// The peer answered that it will never take it (a webhook's 4xx other
    /// than 408 and 429, a 501, or a redirect, which is not followed).
    /// Refused for good: not retried, kept in the dead-letter store.
    Refused = 4,
}

impl Reject {
    /// Every reason, in the order of their discriminants.
    pub const ALL: [Reject; 5] = [
        Reject::NoSubscriber,
        Reject::TooLarge,
        Reject::Failed,
        Reject::Unencodable,
        Reject::Refused,
    ];

    /// The `reason` label of `switchyard_output_dropped_total`.
    pub fn label(self) -> &'static str {
        match self {
            Reject::NoSubscriber => "no_subscriber",
            Reject::TooLarge => "too_large",
            Reject::Failed => "failed",
            Reject::Unencodable => "unencodable",
            Reject::Refused => "refused",
        }
    }

    /// Whether the refusal is for good: sending the message again cannot
    /// succeed, so it is not retried (and goes to the dead-letter store).
    pub fn is_permanent(self) -> bool {
        matches!(
            self,
            Reject::TooLarge | Reject::Unencodable | Reject::Refused
        )
    }
}

/// Messages of a batch an output refused, by position in the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Positions in the batch, `start..end`.
    pub messages: Range<usize>,
    /// Why.
    pub reason: Reject,
}

/// What an output did with a batch: every message not listed in
/// [`Delivery::rejections`] was accepted. Accepting everything does not
/// allocate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    rejections: Vec<Rejection>,
    /// The peer's word on when to try again (a webhook's `Retry-After`).
    retry_after: Option<Duration>,
    /// What the peer said about what it refused (a webhook's status line),
    /// for the dead-letter store and the retry log.
    detail: Option<std::sync::Arc<str>>,
}

impl Delivery {
    /// Every message of the batch was accepted.
    pub fn accepted() -> Self {
        Self::default()
    }

    /// Every one of `len` messages was refused for `reason`.
    pub fn rejected_all(len: usize, reason: Reject) -> Self {
        let mut d = Self::default();
        d.reject_range(0..len, reason);
        d
    }

    /// The delivery of a batch whose messages met `fates` (`None`:
    /// accepted), and how many were accepted.
    pub fn from_fates(fates: &[Option<Reject>]) -> (Self, u64) {
        let mut delivery = Self::default();
        let mut accepted = 0;
        for (i, fate) in fates.iter().enumerate() {
            match fate {
                Some(reason) => delivery.reject(i, *reason),
                None => accepted += 1,
            }
        }
        (delivery, accepted)
    }

    /// Marks the message at `index` as refused for `reason`. Consecutive
    /// calls with adjacent indices and the same reason merge into one range.
    pub fn reject(&mut self, index: usize, reason: Reject) {
        self.reject_range(index..index + 1, reason);
    }

    /// Marks the messages at `range` as refused for `reason`.
    pub fn reject_range(&mut self, range: Range<usize>, reason: Reject) {
        if range.is_empty() {
            return;
        }
        if let Some(last) = self.rejections.last_mut()
            && last.reason == reason
            && last.messages.end == range.start
        {
            last.messages.end = range.end;
            return;
        }
        self.rejections.push(Rejection {
            messages: range,
            reason,
        });
    }

    /// The refused messages, in the order they were reported. The pipeline
    /// ignores positions outside the batch and counts each message once
    /// (the first reason given for it wins).
    pub fn rejections(&self) -> &[Rejection] {
        &self.rejections
    }

    /// True when every message was accepted.
    pub fn is_complete(&self) -> bool {
        self.rejections.is_empty()
    }

    /// Records the peer's hint that what it refused should not be sent
    /// again before `after` (an HTTP `Retry-After`). The retry loop pauses
    /// at least this long before the next attempt, capped by its policy's
    /// `max`. Several hints keep the longest.
    pub fn set_retry_after(&mut self, after: Duration) {
        self.retry_after = Some(self.retry_after.map_or(after, |had| had.max(after)));
    }

    /// The peer's hint of when to try again, if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Records what the peer said about what it refused (e.g. `HTTP 400
    /// Bad Request: ...`): the dead-letter store's first and last error
    /// show it after the reason.
    pub fn set_detail(&mut self, detail: impl Into<std::sync::Arc<str>>) {
        self.detail = Some(detail.into());
    }

    /// What the peer said about what it refused, if the output recorded it.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }
}

/// Why an output could take none of a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The output has shut down and takes no more batches.
    #[error("output {output} is closed")]
    Closed {
        /// The output's name.
        output: String,
    },
    /// The output failed to take the batch.
    #[error("output {output} failed: {reason}")]
    Failed {
        /// The output's name.
        output: String,
        /// What went wrong.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_merge_adjacent_runs() {
        let mut d = Delivery::accepted();
        assert!(d.is_complete());
        d.reject(2, Reject::NoSubscriber);
        d.reject(3, Reject::NoSubscriber);
        d.reject(4, Reject::TooLarge);
        d.reject(6, Reject::TooLarge);
        d.reject_range(7..7, Reject::Failed);
        assert_eq!(
            d.rejections(),
            &[
                Rejection {
                    messages: 2..4,
                    reason: Reject::NoSubscriber
                },
                Rejection {
                    messages: 4..5,
                    reason: Reject::TooLarge
                },
                Rejection {
                    messages: 6..7,
                    reason: Reject::TooLarge
                },
            ]
        );
        assert_eq!(
            Delivery::rejected_all(3, Reject::Failed).rejections().len(),
            1
        );
        assert!(Delivery::rejected_all(0, Reject::Failed).is_complete());
    }
}
