//! ZeroMQ inputs: `zmq-sub` (publishers connect with PUB, or the router
//! connects to them) and `zmq-pull` (producers PUSH). Both read batches from
//! their socket, decode each message with the input's envelope and offer the
//! batch to the pipeline without a deadline ([`Wait::Unbounded`]): while a
//! `block` route is full, the input stops reading, its socket's inbound
//! buffer fills, and its connections stop reading from their peers (TCP
//! backpressure).

use std::collections::HashMap;
use std::sync::Arc;

use prometheus::IntCounter;
use tokio_util::sync::CancellationToken;

use super::{Context, Metrics, Offered, Refusal, Running, Sink, StartError, Wait, attach};
use crate::auth::{Action, Caller, Security};
use crate::config::{OnForbidden, ZmqSocket};
use crate::envelope::{self, Envelope};
use crate::message::{Message, Publisher};
use crate::zmtp::connection::{PeerId, Received};
use crate::zmtp::pull::PullSocket;
use crate::zmtp::sub::SubSocket;

/// Most messages read from the socket and offered as one batch.
const BATCH: usize = 256;
/// Peer names cached before the cache is cleared (peers come and go).
const PEER_NAME_CACHE: usize = 4096;

/// The socket a ZeroMQ input reads from.
#[derive(Debug)]
pub enum Socket {
    /// Subscriber side, facing PUB/XPUB publishers.
    Sub(SubSocket),
    /// PULL side, facing PUSH producers.
    Pull(PullSocket),
}

impl Socket {
    async fn recv_many(&mut self, buf: &mut Vec<Received>, max: usize) -> usize {
        match self {
            Self::Sub(s) => s.recv_many(buf, max).await,
            Self::Pull(s) => s.recv_many(buf, max).await,
        }
    }

    async fn stop_reading(&mut self) {
        match self {
            Self::Sub(s) => s.stop_reading().await,
            Self::Pull(s) => s.stop_reading().await,
        }
    }

    /// Connected peers.
    pub fn peer_count(&self) -> usize {
        match self {
            Self::Sub(s) => s.peer_count(),
            Self::Pull(s) => s.peer_count(),
        }
    }

    fn disconnect(&self, peer: PeerId, reason: &'static str) {
        match self {
            Self::Sub(s) => s.disconnect(peer, reason),
            Self::Pull(s) => s.disconnect(peer, reason),
        };
    }
}

/// Counters of one ZeroMQ input, resolved once.
#[derive(Debug, Clone)]
pub(super) struct Counters {
    accepted: IntCounter,
    bad_envelope: IntCounter,
    pub(super) bad_topic: IntCounter,
    bad_attributes: IntCounter,
    pub(super) shutting_down: IntCounter,
    pub(super) backpressure: IntCounter,
    pub(super) disk_full: IntCounter,
    pub(super) forbidden: IntCounter,
}

impl Counters {
    pub(super) fn new(metrics: &Metrics, input: &str) -> Self {
        let rejected = |reason: &str| metrics.rejected.with_label_values(&[input, reason]);
        Self {
            accepted: metrics.messages.with_label_values(&[input]),
            bad_envelope: rejected("bad_envelope"),
            bad_topic: rejected("bad_topic"),
            bad_attributes: rejected("bad_attributes"),
            shutting_down: rejected("shutting_down"),
            backpressure: rejected("backpressure"),
            disk_full: rejected("disk_full"),
            forbidden: rejected("forbidden"),
        }
    }

    /// Counts what became of `len` messages offered to the sink.
    pub(super) fn offered(&self, len: usize, offered: Offered) {
        self.accepted.inc_by(offered.admitted as u64);
        if let Some(refusal) = offered.refusal {
            let refused = (len - offered.admitted) as u64;
            match refusal {
                Refusal::ShuttingDown => self.shutting_down.inc_by(refused),
                Refusal::Backpressure { .. } => self.backpressure.inc_by(refused),
                Refusal::DiskFull { .. } => self.disk_full.inc_by(refused),
            }
        }
    }

    pub(super) fn rejected(&self, error: &envelope::Error) -> &IntCounter {
        match error {
            envelope::Error::Topic(_) => &self.bad_topic,
            envelope::Error::Attributes(_) => &self.bad_attributes,
            envelope::Error::FrameCount { .. } | envelope::Error::NoSeparator => &self.bad_envelope,
        }
    }
}

/// The [`Publisher`] of each peer of one input, its name cached.
#[derive(Debug)]
pub(super) struct Publishers {
    input: Arc<str>,
    peers: HashMap<PeerId, Arc<str>>,
}

impl Publishers {
    pub(super) fn new(input: &str) -> Self {
        Self {
            input: Arc::from(input),
            peers: HashMap::new(),
        }
    }

    /// The publisher of a message from `peer`: this input, the peer's
    /// address, and `user`, the user its connection authenticated as.
    pub(super) fn of(&mut self, peer: PeerId, user: Option<Arc<str>>) -> Publisher {
        if self.peers.len() >= PEER_NAME_CACHE {
            self.peers.clear();
        }
        let name = self
            .peers
            .entry(peer)
            .or_insert_with(|| Arc::from(peer.to_string()));
        Publisher::new(Arc::clone(&self.input), Arc::clone(name)).with_principal(user)
    }
}

/// The ACL's check of what ZeroMQ peers send: each peer's caller (its
/// PLAIN or CURVE name, or anonymous) resolved once per connection and
/// config generation, each message's topic checked against its grants.
pub(super) struct Permits {
    input: Arc<str>,
    live: crate::auth::Live,
    on_forbidden: OnForbidden,
    /// The settings the cache was filled under (held, so a new generation
    /// is never mistaken for an old one at the same address).
    current: Arc<Security>,
    callers: HashMap<PeerId, Caller>,
}

/// What to do with a message after [`Permits::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Take it.
    Allowed,
    /// Drop it (counted).
    Forbidden,
    /// Drop it (counted) and cut its peer's connection.
    Disconnect,
}

impl Permits {
    pub(super) fn new(input: &str, live: &crate::auth::Live, on_forbidden: OnForbidden) -> Self {
        Self {
            input: Arc::from(input),
            current: live.load_full(),
            live: Arc::clone(live),
            on_forbidden,
            callers: HashMap::new(),
        }
    }

    /// Called once per batch: whether the ACL is in force now (else every
    /// message is allowed and [`Permits::check`] need not be called).
    pub(super) fn begin(&mut self) -> bool {
        let now = self.live.load();
        if !Arc::ptr_eq(&now, &self.current) {
            self.current = Arc::clone(&now);
            self.callers.clear();
        }
        self.current.secured()
    }

    /// Checks a message on `topic` from `peer`, authenticated as
    /// `principal`; a forbidden one is counted (`forbidden`, and
    /// `switchyard_acl_denied_total{listener=input,action="publish"}`).
    pub(super) fn check(
        &mut self,
        peer: PeerId,
        principal: Option<&Arc<str>>,
        topic: &str,
        forbidden: &IntCounter,
    ) -> Verdict {
        if self.callers.len() >= PEER_NAME_CACHE {
            self.callers.clear();
        }
        let security = &self.current;
        let caller = self
            .callers
            .entry(peer)
            .or_insert_with(|| security.caller_for(principal.cloned()));
        if caller.grants().may_publish(topic) {
            return Verdict::Allowed;
        }
        forbidden.inc();
        self.current.count_denied(&self.input, Action::Publish);
        tracing::debug!(input = %self.input, peer = %peer, principal = caller.shown(), topic, "message forbidden by the ACL");
        match self.on_forbidden {
            OnForbidden::Drop => Verdict::Forbidden,
            OnForbidden::Disconnect => {
                self.callers.remove(&peer);
                Verdict::Disconnect
            }
        }
    }
}

/// A running `zmq-sub` or `zmq-pull` input.
pub struct ZmqInput {
    name: Arc<str>,
    socket: Socket,
    envelope: Envelope,
    sink: Arc<dyn Sink>,
    counters: Counters,
    publishers: Publishers,
    permits: Permits,
}

impl std::fmt::Debug for ZmqInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZmqInput")
            .field("name", &self.name)
            .field("envelope", &self.envelope)
            .finish_non_exhaustive()
    }
}

impl ZmqInput {
    /// An input named `name` reading `socket` (already bound or
    /// connecting), its messages checked against the ACL in `security`.
    pub fn new(
        name: &str,
        socket: Socket,
        envelope: Envelope,
        sink: Arc<dyn Sink>,
        metrics: &Metrics,
        security: (&crate::auth::Live, OnForbidden),
    ) -> Self {
        Self {
            name: Arc::from(name),
            socket,
            envelope,
            sink,
            counters: Counters::new(metrics, name),
            publishers: Publishers::new(name),
            permits: Permits::new(name, security.0, security.1),
        }
    }

    /// Starts a `zmq-sub` input subscribed to `prefixes`: bound or
    /// connected as `settings` say, reading on a task of `ctx.tracker`.
    ///
    /// # Errors
    /// [`StartError::Endpoint`] when it cannot bind.
    pub async fn start_sub(
        name: &str,
        settings: &ZmqSocket,
        prefixes: &[String],
        ctx: &Context,
    ) -> Result<Running, StartError> {
        let socket = SubSocket::new(name, settings.options.socket_options(), &ctx.zmtp);
        for prefix in prefixes {
            socket.subscribe(bytes::Bytes::copy_from_slice(prefix.as_bytes()));
        }
        let subscriptions = socket.subscriptions();
        let mut running = Self::start(name, Socket::Sub(socket), settings, ctx).await?;
        running.subscriptions = Some(subscriptions);
        Ok(running)
    }

    /// Starts a `zmq-pull` input, as [`ZmqInput::start_sub`] does.
    ///
    /// # Errors
    /// [`StartError::Endpoint`] when it cannot bind.
    pub async fn start_pull(
        name: &str,
        settings: &ZmqSocket,
        ctx: &Context,
    ) -> Result<Running, StartError> {
        let socket = PullSocket::new(name, settings.options.socket_options(), &ctx.zmtp);
        Self::start(name, Socket::Pull(socket), settings, ctx).await
    }

    async fn start(
        name: &str,
        socket: Socket,
        settings: &ZmqSocket,
        ctx: &Context,
    ) -> Result<Running, StartError> {
        let addr = match &socket {
            Socket::Sub(s) => attach(name, settings, s).await?,
            Socket::Pull(s) => attach(name, settings, s).await?,
        };
        let reader = Self::new(
            name,
            socket,
            settings.envelope,
            Arc::clone(&ctx.sink),
            &ctx.inputs,
            (&ctx.security, settings.options.on_forbidden),
        );
        let stop = ctx.stop.child_token();
        let task = ctx.tracker.spawn(reader.run(stop.clone()));
        Ok(Running::new(addr, stop, task))
    }

    /// Reads, decodes and offers until `stop` is cancelled. Then it closes
    /// the socket (no more reads from the wire) and still offers what the
    /// socket had already buffered, so nothing read from a peer is lost by
    /// the shutdown; the pipeline refuses it only once it stops intake, and
    /// such refusals are counted (`rejected{reason="shutting_down"}`).
    pub async fn run(mut self, stop: CancellationToken) {
        let mut received = Vec::with_capacity(BATCH);
        let mut closing = false;
        loop {
            let n = if closing {
                self.socket.recv_many(&mut received, BATCH).await
            } else {
                tokio::select! {
                    biased;
                    () = stop.cancelled() => {
                        closing = true;
                        self.socket.stop_reading().await;
                        continue;
                    }
                    n = self.socket.recv_many(&mut received, BATCH) => n,
                }
            };
            if n == 0 {
                break;
            }
            let batch = self.decode(&mut received);
            if batch.is_empty() {
                continue;
            }
            let len = batch.len();
            let offered = self.sink.offer(batch, Wait::Unbounded).await;
            self.counters.offered(len, offered);
        }
        if !closing {
            self.socket.stop_reading().await;
        }
        tracing::debug!(input = %self.name, "input stopped");
    }

    fn decode(&mut self, received: &mut Vec<Received>) -> Vec<Message> {
        let mut batch = Vec::with_capacity(received.len());
        let secured = self.permits.begin();
        for mut r in received.drain(..) {
            let publisher = self.publishers.of(r.peer, r.user.take());
            match self.envelope.decode(&r.frames, &publisher) {
                Ok(message) if secured => match self.permits.check(
                    r.peer,
                    message.publisher.principal.as_ref(),
                    message.topic.as_str(),
                    &self.counters.forbidden,
                ) {
                    Verdict::Allowed => batch.push(message),
                    Verdict::Forbidden => {}
                    Verdict::Disconnect => self.socket.disconnect(r.peer, "forbidden"),
                },
                Ok(message) => batch.push(message),
                Err(e) => {
                    self.counters.rejected(&e).inc();
                    tracing::debug!(input = %self.name, peer = %r.peer, error = %e, "message rejected");
                }
            }
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publisher_carries_its_connections_user_as_principal() {
        let mut publishers = Publishers::new("devices");
        let plain = publishers.of(PeerId(7), Some(Arc::from("edge")));
        assert_eq!(&*plain.input, "devices");
        assert_eq!(plain.principal.as_deref(), Some("edge"));
        let anonymous = publishers.of(PeerId(7), None);
        assert_eq!(anonymous.peer, plain.peer);
        assert_eq!(anonymous.principal, None);
    }
}
