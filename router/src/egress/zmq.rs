//! ZeroMQ outputs: `zmq-pub` (subscribers connect with SUB) and `zmq-push`
//! (workers connect with PULL).
//!
//! - `zmq-pub` never waits: each message is queued to every subscriber whose
//!   prefix subscription matches its topic; a subscriber whose own queue is
//!   full loses that message alone, counted by the ZMTP layer
//!   (`switchyard_zmtp_dropped_total{socket,reason}`). A message that no
//!   subscriber wants is reported to the route as `no_subscriber`.
//! - `zmq-push` hands each message to one worker, round-robin over the
//!   workers with room; when all are full it waits, so the route's queue
//!   fills and its `when_full` policy applies. With no worker connected for
//!   the output's `send_timeout`, the message is reported as
//!   `no_subscriber`.
//!
//! On a durable route (`Output::send_written`) both answer only once what
//! they queued was written to a peer's socket or dropped for it: `zmq-push`
//! refuses as failed (to be sent again) a message it could write to no
//! worker, `zmq-pub` waits for every copy and sends none again.
//!
//! Drops after a message was taken (a subscriber's queue full, a peer gone
//! with messages queued) are counted by the sockets, in
//! `switchyard_zmtp_dropped_total{socket}` and, as the output's,
//! `switchyard_output_dropped_total{output}`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;

use super::{
    AttachError, Context, Delivery, Error, Handle, Lifecycle, LifecycleFuture, Output, OutputStats,
    Refusals, Reject, SendFuture,
};
use crate::config::{Attach, ZmqSocket};
use crate::envelope::Envelope;
use crate::message::Message;
use crate::zmtp::connection::{Receipt, SendError};
use crate::zmtp::metrics::SocketMetrics;
use crate::zmtp::publish::PubSocket;
use crate::zmtp::push::PushSocket;

/// What an output needs of its socket beyond sending.
pub trait Socket: crate::zmtp::endpoint::Attach + Send + Sync + 'static {
    /// The output kind, as `/v1/status` names it.
    const KIND: &'static str;
    /// A socket named `name` (its metrics label), not attached yet.
    fn new(
        name: &str,
        options: crate::zmtp::options::Options,
        wire: &crate::zmtp::metrics::Metrics,
    ) -> Self;
    /// Waits until `want` peers are connected, or `timeout`.
    fn wait_for_peers(&self, want: usize, timeout: Duration) -> impl Future<Output = bool> + Send;
    /// Connected subscribers or workers.
    fn peer_count(&self) -> usize;
    /// Waits until every queued message is written, or `timeout`; returns
    /// whether everything was.
    fn flush(&self, timeout: Duration) -> impl Future<Output = bool> + Send;
    /// Holds back from each peer what the ACL says it may not receive
    /// (PUB); the other kinds have nothing to hold back.
    fn guard(&self, _output: &str, _ctx: &Context) {}
    /// Closes the socket; what is still queued is dropped and counted.
    fn close(&self) -> impl Future<Output = ()> + Send;
}

macro_rules! output_socket {
    ($socket:ty, $kind:literal, guard) => {
        output_socket!(@impl $socket, $kind, {
            fn guard(&self, output: &str, ctx: &Context) {
                self.set_delivery_policy(Arc::new(OutputAcl {
                    live: Arc::clone(&ctx.security),
                    output: Arc::from(output),
                }));
            }
        });
    };
    ($socket:ty, $kind:literal) => {
        output_socket!(@impl $socket, $kind, {});
    };
    (@impl $socket:ty, $kind:literal, { $($guard:tt)* }) => {
        impl Socket for $socket {
            const KIND: &'static str = $kind;
            fn new(
                name: &str,
                options: crate::zmtp::options::Options,
                wire: &crate::zmtp::metrics::Metrics,
            ) -> Self {
                <$socket>::new(name, options, wire)
            }
            fn peer_count(&self) -> usize {
                <$socket>::peer_count(self)
            }
            async fn wait_for_peers(&self, want: usize, timeout: Duration) -> bool {
                <$socket>::wait_for_peers(self, want, timeout).await
            }
            async fn flush(&self, timeout: Duration) -> bool {
                <$socket>::flush(self, timeout).await
            }
            async fn close(&self) {
                <$socket>::close(self).await
            }
            $($guard)*
        }
    };
}

/// What the subscribers of a `zmq-pub` output may receive: the
/// `subscribe` grants of the name each authenticated as (anonymous without
/// one), in force while the ACL is. Each subscriber's grants are resolved
/// again when a reload swaps the rules, so a reload applies to open
/// connections at their next message. A message held back is counted in
/// `switchyard_acl_denied_total{listener=output,action="subscribe"}`.
struct OutputAcl {
    live: crate::auth::Live,
    output: Arc<str>,
}

impl crate::zmtp::publish::DeliveryPolicy for OutputAcl {
    fn in_force(&self) -> bool {
        self.live.load().secured()
    }

    fn filter_for(&self, user: Option<&str>) -> Arc<dyn crate::zmtp::publish::DeliveryFilter> {
        let principal: Option<Arc<str>> = user.map(Arc::from);
        let security = self.live.load_full();
        let caller = security.caller_for(principal.clone());
        Arc::new(SubscriberAcl {
            live: Arc::clone(&self.live),
            principal,
            cached: arc_swap::ArcSwap::from_pointee((security, caller)),
            output: Arc::clone(&self.output),
        })
    }
}

/// One subscriber's filter (see [`OutputAcl`]).
#[derive(Debug)]
struct SubscriberAcl {
    live: crate::auth::Live,
    principal: Option<Arc<str>>,
    /// The caller under the settings it was resolved for.
    cached: arc_swap::ArcSwap<(Arc<crate::auth::Security>, crate::auth::Caller)>,
    output: Arc<str>,
}

impl crate::zmtp::publish::DeliveryFilter for SubscriberAcl {
    fn allows(&self, topic: &[u8]) -> bool {
        let now = self.live.load();
        let mut cached = self.cached.load();
        if !Arc::ptr_eq(&cached.0, &now) {
            let caller = now.caller_for(self.principal.clone());
            self.cached.store(Arc::new((Arc::clone(&now), caller)));
            cached = self.cached.load();
        }
        let ok = std::str::from_utf8(topic).is_ok_and(|t| cached.1.grants().may_receive(t));
        if !ok {
            now.count_denied(&self.output, crate::auth::Action::Subscribe);
        }
        ok
    }
}

output_socket!(PubSocket, "zmq-pub", guard);
output_socket!(PushSocket, "zmq-push");

/// A ZeroMQ output over socket `S`.
#[derive(Debug)]
pub struct ZmqOutput<S> {
    name: String,
    socket: S,
    envelope: Envelope,
    attach: Attach,
    sent: IntCounter,
    refused: Refusals,
    wire: SocketMetrics,
}

/// A `zmq-pub` output.
pub type ZmqPubOutput = ZmqOutput<PubSocket>;
/// A `zmq-push` output.
pub type ZmqPushOutput = ZmqOutput<PushSocket>;

impl<S: Socket> ZmqOutput<S>
where
    Self: Output,
{
    /// The output `name` as `settings` describe it, counting into `ctx`'s
    /// families; not attached yet.
    pub fn build(name: &str, settings: &ZmqSocket, ctx: &Context) -> Handle {
        let wire = ctx.wire();
        let socket = S::new(name, settings.options.socket_options(), &wire);
        socket.guard(name, ctx);
        Arc::new(Self {
            name: name.to_owned(),
            socket,
            envelope: settings.envelope,
            attach: settings.attach.clone(),
            sent: ctx.outputs.messages(name),
            refused: ctx.outputs.refusals(name),
            wire: wire.socket(name),
        })
    }
}

impl<S: Socket> Lifecycle for ZmqOutput<S>
where
    Self: Output,
{
    fn attach(&self) -> LifecycleFuture<'_, Result<Option<SocketAddr>, AttachError>> {
        Box::pin(async move {
            self.attach
                .apply(&self.socket)
                .await
                .map_err(|source| AttachError {
                    output: self.name.clone(),
                    source,
                })
        })
    }

    fn wait_connected(&self, timeout: Duration) -> LifecycleFuture<'_, ()> {
        Box::pin(async move {
            let want = self.attach.endpoints();
            if want > 0 {
                self.socket.wait_for_peers(want, timeout).await;
            }
        })
    }

    fn stats(&self) -> OutputStats {
        OutputStats {
            name: self.name.clone(),
            kind: S::KIND.into(),
            sent: self.sent.get(),
            dropped: self.wire.dropped_total(),
            peers: self.socket.peer_count() as u64,
            services: Vec::new(),
            uplink: None,
            webhook: None,
        }
    }

    /// Gives the peers up to `linger` to take what is queued for them,
    /// then closes. What they did not take is counted as dropped by the
    /// ZMTP layer (`peer_disconnected`).
    fn flush_and_close(&self, linger: Duration) -> LifecycleFuture<'_, ()> {
        Box::pin(async move {
            if !self.socket.flush(linger).await {
                tracing::warn!(output = %self.name, ?linger, "peers did not take every queued message before the output closed");
            }
            self.socket.close().await;
        })
    }
}

impl ZmqPubOutput {
    /// Fans `batch` out; with a `receipt`, every copy queued carries a
    /// token of it.
    fn fan_out(&self, batch: &[Message], receipt: Option<&Receipt>) -> Delivery {
        let mut delivery = Delivery::accepted();
        let mut sent = 0;
        for (i, message) in batch.iter().enumerate() {
            let frames = self.envelope.encode(message);
            let fanout = match receipt {
                Some(r) => self.socket.send_tracked(frames, r, i),
                None => self.socket.send(frames),
            };
            if fanout.queued == 0 && fanout.dropped == 0 {
                delivery.reject(i, Reject::NoSubscriber);
            } else {
                sent += 1;
            }
        }
        self.sent.inc_by(sent);
        self.refused.count(&delivery, batch.len());
        delivery
    }
}

impl Output for ZmqPubOutput {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, batch: &'a [Message]) -> SendFuture<'a> {
        Box::pin(async move { Ok(self.fan_out(batch, None)) })
    }

    /// Waits until every copy queued to a subscriber was written to its
    /// socket or dropped for it: PUB is at most once per subscriber (a copy
    /// dropped for one, its queue full or the subscriber gone, is counted
    /// by the socket and not sent again), but nothing is released while a
    /// copy waits only in the router's memory. A subscriber that stops
    /// reading holds the route back until its queue is written or it is
    /// cut (`slow_subscriber_timeout`).
    fn send_written<'a>(&'a self, batch: &'a [Message]) -> SendFuture<'a> {
        Box::pin(async move {
            let receipt = Receipt::new();
            let delivery = self.fan_out(batch, Some(&receipt));
            receipt.settled().await;
            Ok(delivery)
        })
    }
}

impl ZmqPushOutput {
    /// Hands each message of `batch` to a worker; with a `receipt`, each
    /// carries a token of it. Returns what was refused and how many were
    /// queued.
    async fn push(
        &self,
        batch: &[Message],
        receipt: Option<&Receipt>,
    ) -> Result<(Delivery, u64), Error> {
        let mut delivery = Delivery::accepted();
        let mut queued = 0;
        for (i, message) in batch.iter().enumerate() {
            let frames = self.envelope.encode(message);
            let sent = match receipt {
                Some(r) => self.socket.send_tracked(frames, r.token(i)).await,
                None => self.socket.send(frames).await,
            };
            match sent {
                Ok(()) => queued += 1,
                Err(SendError::NoPeers(_)) => delivery.reject(i, Reject::NoSubscriber),
                Err(SendError::Closed) if i == 0 => {
                    return Err(Error::Closed {
                        output: self.name.clone(),
                    });
                }
                Err(SendError::Closed) => {
                    delivery.reject_range(i..batch.len(), Reject::Failed);
                    break;
                }
                Err(e) => {
                    tracing::warn!(output = %self.name, error = %e, "push failed");
                    delivery.reject(i, Reject::Failed);
                }
            }
        }
        Ok((delivery, queued))
    }
}

impl Output for ZmqPushOutput {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, batch: &'a [Message]) -> SendFuture<'a> {
        Box::pin(async move {
            let (delivery, queued) = self.push(batch, None).await?;
            self.sent.inc_by(queued);
            self.refused.count(&delivery, batch.len());
            Ok(delivery)
        })
    }

    /// Waits until every message queued was written to a worker's socket;
    /// one that was not (its worker gone and no other taking it within
    /// `send_timeout`, or the socket closed) is refused as failed, so the
    /// route sends it again.
    fn send_written<'a>(&'a self, batch: &'a [Message]) -> SendFuture<'a> {
        Box::pin(async move {
            let receipt = Receipt::new();
            let (mut delivery, queued) = self.push(batch, Some(&receipt)).await?;
            let lost = receipt.settled().await;
            let mut unwritten = 0;
            if !lost.is_empty() {
                let refused = refused_positions(&delivery, batch.len());
                for i in lost.into_iter().map(|i| i as usize) {
                    if i < batch.len() && !refused[i] {
                        delivery.reject(i, Reject::Failed);
                        unwritten += 1;
                    }
                }
            }
            self.sent.inc_by(queued - unwritten);
            self.refused.count(&delivery, batch.len());
            Ok(delivery)
        })
    }
}

/// Which of `len` positions `delivery` refused.
fn refused_positions(delivery: &Delivery, len: usize) -> Vec<bool> {
    let mut refused = vec![false; len];
    for r in delivery.rejections() {
        for slot in &mut refused[r.messages.start.min(len)..r.messages.end.min(len)] {
            *slot = true;
        }
    }
    refused
}
