//! Inputs: one file per input kind (`zmq`: SUB and PULL; `zmq_router`:
//! REQ/DEALER clients' requests; `http`: publishes and the request
//! bridge; `nats`: core NATS subscriptions; `jetstream`: a JetStream pull
//! consumer, acknowledged once the router is done with each message). Each decodes what arrives on the wire into [`Message`]s and
//! offers them to a [`Sink`]. Ingress never sees routes; the sink (the
//! pipeline) decides where messages go.
//!
//! [`start`] starts any kind from its config entry with a [`Context`] of
//! shared resources; every kind counts into the same families
//! ([`Metrics`]): `switchyard_input_messages_total{input}` and
//! `switchyard_input_rejected_total{input,reason}`.

use std::future::Future;
use std::pin::Pin;

use prometheus::IntCounterVec;

use crate::config::{self, InputKind};
use crate::message::Message;
use crate::metrics::Registry;

pub mod http;
pub mod jetstream;
mod lifecycle;
pub mod nats;
pub mod zmq;
pub mod zmq_router;

use lifecycle::attach;
pub use lifecycle::{
    Context, InputStatus, Probe, Readiness, Registration, Running, StartError, StatusProbe, Window,
};

/// Starts the input `entry` describes: binds or connects it and spawns
/// its reader. A `zmq-sub` input subscribes to `prefixes` first.
///
/// # Errors
/// [`StartError`] when it cannot bind.
pub async fn start(
    entry: &config::Input,
    prefixes: &[String],
    ctx: &Context,
) -> Result<Running, StartError> {
    let name = entry.name.as_str();
    match &entry.kind {
        InputKind::ZmqSub(socket) => zmq::ZmqInput::start_sub(name, socket, prefixes, ctx).await,
        InputKind::ZmqPull(socket) => zmq::ZmqInput::start_pull(name, socket, ctx).await,
        InputKind::ZmqRouter(settings) => {
            zmq_router::ZmqRouterInput::start(name, settings, ctx).await
        }
        InputKind::Http(settings) => http::HttpInput::start(name, settings, ctx).await,
        InputKind::Nats(settings) => nats::NatsInput::start(name, settings, ctx).await,
        InputKind::NatsJetstream(settings) => {
            jetstream::JetStreamInput::start(name, settings, ctx).await
        }
    }
}

/// Where inputs hand accepted messages. Implemented by the pipeline; tests
/// may implement it to observe an input alone.
pub trait Sink: Send + Sync + 'static {
    /// Offers `batch`, in order. The future resolves once every message has
    /// been admitted to each route it matches (or counted as unrouted). When a
    /// matching route is full and its policy is `block`, this waits for room
    /// as `wait` says: that wait is the backpressure an input passes on to
    /// its peer.
    ///
    /// A message is admitted to all of its routes or to none of them.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future may leave a prefix of the batch
    /// admitted. Offer with [`Wait::Bounded`] instead of cancelling.
    fn offer(
        &self,
        batch: Vec<Message>,
        wait: Wait,
    ) -> Pin<Box<dyn Future<Output = Offered> + Send + '_>>;
}

/// How long an offer waits for room in a full `block` route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Up to each full route's own `block_timeout`, counted from the start
    /// of the offer; then the rest of the batch is refused
    /// ([`Refusal::Backpressure`]). For inputs that answer a client (HTTP),
    /// which had rather say 503 than hang.
    Bounded,
    /// As long as it takes. For inputs whose backpressure is the transport's
    /// (ZeroMQ): they stop reading the peer meanwhile.
    Unbounded,
    /// As long as it takes, and the offer answers only once every durable
    /// route it admitted messages to has them on disk. For inputs that
    /// acknowledge to their peer (JetStream), which stop fetching
    /// meanwhile.
    Durable,
}

/// What became of a batch offered to a [`Sink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offered {
    /// How many messages, from the front of the batch, were admitted.
    pub admitted: usize,
    /// Why the rest (if any) were refused; `None` when all were admitted.
    pub refusal: Option<Refusal>,
}

/// Why a sink refused messages. The input tells its client; the messages
/// were never accepted, so they are not the router's to count as dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A matching route with `when_full = "block"` stayed full until its
    /// `block_timeout` ran out ([`Wait::Bounded`] offers only).
    Backpressure {
        /// That route's `block_timeout`: how long the client is told to
        /// wait before it tries again.
        retry_after: std::time::Duration,
    },
    /// The router is shutting down and takes no more messages.
    ShuttingDown,
    /// A matching durable route cannot write to its disk (it is full, or
    /// failing) and stayed so until its `block_timeout`; it resumes by
    /// itself once the disk takes writes again.
    DiskFull {
        /// That route's `block_timeout`, as for [`Refusal::Backpressure`].
        retry_after: std::time::Duration,
    },
}

/// The families every input kind counts into, registered once per registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// `switchyard_input_messages_total{input}`: messages accepted from the
    /// wire and admitted to the pipeline.
    pub messages: IntCounterVec,
    /// `switchyard_input_rejected_total{input,reason}`: messages or requests
    /// an input refused.
    pub rejected: IntCounterVec,
    /// `switchyard_input_redelivered_total{input}`: messages a peer sent
    /// again (a JetStream redelivery), each counted as it comes.
    pub redelivered: IntCounterVec,
}

impl Metrics {
    /// Registers the input families.
    pub fn register(registry: &Registry) -> Self {
        Self {
            messages: registry.counter_vec(
                "switchyard_input_messages_total",
                "Messages accepted from the wire, by input.",
                &["input"],
            ),
            rejected: registry.counter_vec(
                "switchyard_input_rejected_total",
                "Messages or requests an input refused, by input and reason.",
                &["input", "reason"],
            ),
            redelivered: registry.counter_vec(
                "switchyard_input_redelivered_total",
                "Messages a peer sent again (JetStream redeliveries: the router had not acknowledged them in time, or had them sent again after a failure), by input.",
                &["input"],
            ),
        }
    }
}
