//! DEALER side, facing REP services (or ROUTER services that echo the
//! envelope).
//!
//! Semantics:
//! - [`DealerSocket::request`] sends one request round-robin to a service
//!   with room (as PUSH: waits while all are full, waits up to
//!   `send_timeout` when none is connected) and returns its reply.
//! - On the wire a request is `[request-id (8 bytes), "" , frames...]`: REP
//!   keeps every frame up to the empty delimiter as the envelope and sends it
//!   back with the reply, so each reply carries the id of its request and is
//!   delivered to the caller that sent it, never to another, whatever the
//!   order replies come back in or how many services there are.
//! - A reply that matches no waiting request (its caller timed out, it is
//!   malformed, or it names a request that was given to another service) is
//!   dropped and counted in `dropped_total{reason="unmatched_reply"}`.
//! - When a service disconnects, requests still queued to it are sent again
//!   to other services; callers whose request it already had get
//!   [`SendError::PeerDisconnected`] (the request may or may not have run).
//! - Each request has its own deadline (`timeout`), after which the caller
//!   gets [`SendError::ReplyTimeout`].
//!
//! `ServiceLinks` is the same wire role for an owner that manages each
//! service itself (the `zmq-dealer` output): it keeps the connections (one
//! per connect slot, or every peer of a bound address), hands the owner
//! each service's queue as it connects, its replies as they arrive, and
//! what it had not written when it goes; choosing, matching and timing out
//! are the owner's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout_at};

use super::connection::{
    Attached, PeerId, PeerLink, QueueTx, Queued, Role, Room, SendError, SocketCore, Stop,
    peer_queue,
};
use super::frame::Multipart;
use super::handle::{Handle, socket_methods};
use super::metrics::Metrics;
use super::options::Options;
use super::push::Balancer;
use super::socket_type::SocketType;

type ReplySlot = oneshot::Sender<Result<Multipart, SendError>>;

#[derive(Debug)]
struct Pending {
    reply: ReplySlot,
    /// The service holding the request (None while being (re)routed).
    peer: Option<PeerId>,
}

#[derive(Debug)]
struct DealerRole {
    core: Arc<SocketCore>,
    balancer: Arc<Balancer>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
}

/// The request id of a request or reply (its first frame), if it has one.
pub(crate) fn request_id(msg: &Multipart) -> Option<u64> {
    let first = msg.first()?;
    Some(u64::from_be_bytes(first.as_ref().try_into().ok()?))
}

impl DealerRole {
    fn pending(&self) -> MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn routed(&self, id: u64, peer: PeerId) {
        if let Some(p) = self.pending().get_mut(&id) {
            p.peer = Some(peer);
        }
    }
}

/// Removes a request's pending entry when its caller stops waiting.
struct PendingGuard<'a>(&'a DealerRole, u64);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.pending().remove(&self.1);
    }
}

impl Role for DealerRole {
    type Peer = PeerId;

    fn attach(self: &Arc<Self>, link: PeerLink<'_>) -> Result<Attached<PeerId>, &'static str> {
        Ok(self.balancer.attach(&self.core, link.id))
    }

    async fn deliver(&self, from: &mut PeerId, msgs: &mut Vec<Multipart>) -> Result<(), Stop> {
        let mut unmatched = 0u64;
        {
            let mut pending = self.pending();
            for mut m in msgs.drain(..) {
                // Only the service that was given the request may answer it:
                // another one cannot forge a reply for someone else's request.
                let entry = match request_id(&m) {
                    Some(id)
                        if m.len() >= 2
                            && m[1].is_empty()
                            && pending.get(&id).is_some_and(|p| p.peer == Some(*from)) =>
                    {
                        pending.remove(&id)
                    }
                    _ => None,
                };
                match entry {
                    Some(p) => {
                        m.drain(..2);
                        // The caller may have just given up; then it is gone.
                        let _ = p.reply.send(Ok(m));
                    }
                    None => unmatched += 1,
                }
            }
        }
        self.core.metrics.dropped("unmatched_reply", unmatched);
        Ok(())
    }

    fn detach(self: &Arc<Self>, peer: PeerId, unsent: Vec<Queued>) {
        self.balancer.remove(peer);
        {
            let mut pending = self.pending();
            for m in &unsent {
                if let Some(p) = request_id(&m.msg).and_then(|id| pending.get_mut(&id)) {
                    p.peer = None;
                }
            }
            let lost: Vec<u64> = pending
                .iter()
                .filter(|(_, p)| p.peer == Some(peer))
                .map(|(id, _)| *id)
                .collect();
            for id in lost {
                if let Some(p) = pending.remove(&id) {
                    let _ = p.reply.send(Err(SendError::PeerDisconnected));
                }
            }
        }
        let me = Arc::downgrade(self);
        self.balancer.resend(&self.core, unsent, move |m, peer| {
            if let (Some(me), Some(id)) = (me.upgrade(), request_id(m)) {
                me.routed(id, peer);
            }
        });
    }
}

/// A DEALER socket for request/reply with REP services.
#[derive(Debug)]
pub struct DealerSocket {
    handle: Handle<DealerRole>,
}

impl DealerSocket {
    /// A DEALER socket named `name` (its metrics `socket` label).
    pub fn new(name: &str, options: Options, metrics: &Metrics) -> Self {
        let core = SocketCore::new(SocketType::Dealer, options, metrics.socket(name));
        let role = Arc::new(DealerRole {
            core: core.clone(),
            balancer: Arc::new(Balancer::default()),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        });
        Self {
            handle: Handle { core, role },
        }
    }

    /// Sends `frames` as one request to the next service with room and
    /// returns its reply (the frames after the envelope). Safe to call from
    /// many tasks at once.
    ///
    /// # Errors
    /// [`SendError::ReplyTimeout`] when no reply came within `timeout`
    /// (counting from this call); [`SendError::NoPeers`] when no service
    /// connected within `send_timeout`; [`SendError::PeerDisconnected`] when
    /// the service that had the request went away; [`SendError::Closed`],
    /// [`SendError::EmptyMessage`].
    ///
    /// # Cancel safety
    /// Cancelling abandons the request; a late reply is dropped and counted.
    pub async fn request(
        &self,
        frames: Multipart,
        timeout: Duration,
    ) -> Result<Multipart, SendError> {
        if frames.is_empty() {
            return Err(SendError::EmptyMessage);
        }
        let deadline = Instant::now() + timeout;
        let role = &*self.handle.role;
        let id = role.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        role.pending().insert(
            id,
            Pending {
                reply: tx,
                peer: None,
            },
        );
        let _guard = PendingGuard(role, id);
        let mut msg = Multipart::with_capacity(frames.len() + 2);
        msg.push(Bytes::copy_from_slice(&id.to_be_bytes()));
        msg.push(Bytes::new());
        msg.extend(frames);
        let pick = |peer| role.routed(id, peer);
        match timeout_at(
            deadline,
            role.balancer.send(&self.handle.core, msg.into(), pick),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(SendError::ReplyTimeout(timeout)),
        }
        match timeout_at(deadline, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(SendError::Closed),
            Err(_) => Err(SendError::ReplyTimeout(timeout)),
        }
    }

    /// Services connected past the handshake.
    pub fn peer_count(&self) -> usize {
        self.handle.peer_count()
    }

    /// Requests waiting for a reply.
    pub fn pending_requests(&self) -> usize {
        self.handle.role.pending().len()
    }

    /// Closes every connection and waits for the socket's tasks to end.
    pub async fn close(&self) {
        self.handle.close().await;
    }
}

socket_methods!(DealerSocket, handle);

/// One service connection, as [`ServiceLinks`] reports it to its owner.
#[derive(Debug)]
pub(crate) struct ServicePeer {
    /// The connection.
    pub(crate) id: PeerId,
    /// The connect slot it belongs to (see [`ServiceLinks::connect`]);
    /// `None` for a peer that connected to a bound address.
    pub(crate) slot: Option<usize>,
    /// The peer's ZMTP `Identity`, if it set one.
    pub(crate) identity: Option<Bytes>,
    /// The peer's address, when known.
    pub(crate) addr: Option<std::net::SocketAddr>,
    /// Its outbound queue (`send_hwm` messages, `send_hwm_bytes` bytes).
    pub(crate) queue: QueueTx,
}

/// What the owner of a [`ServiceLinks`] socket does when services come,
/// answer and go. Called from connection tasks: must not block.
pub(crate) trait ServiceEvents: Send + Sync + 'static {
    /// A service completed its handshake; `Err(reason)` refuses it.
    fn attached(&self, peer: ServicePeer) -> Result<(), &'static str>;
    /// Messages from `peer` (drains `msgs`); returns how many matched no
    /// request it held (counted as `unmatched_reply`).
    fn replies(&self, peer: PeerId, msgs: &mut Vec<Multipart>) -> u64;
    /// `peer`'s connection ended; `unsent` are the requests taken from its
    /// queue that were not (completely) written.
    fn detached(&self, peer: PeerId, unsent: Vec<Multipart>);
}

/// The DEALER role of a [`ServiceLinks`] socket: one per connect slot, one
/// for every bound address.
struct LinkRole<E> {
    core: Arc<SocketCore>,
    events: Arc<E>,
    slot: Option<usize>,
}

impl<E: ServiceEvents> Role for LinkRole<E> {
    type Peer = PeerId;

    fn attach(self: &Arc<Self>, link: PeerLink<'_>) -> Result<Attached<PeerId>, &'static str> {
        let o = &self.core.options;
        let (queue, rx) = peer_queue(o.send_hwm, o.send_hwm_bytes);
        self.events.attached(ServicePeer {
            id: link.id,
            slot: self.slot,
            identity: link.info.identity.clone(),
            addr: link.addr,
            queue,
        })?;
        self.core.room.changed();
        Ok(Attached {
            state: link.id,
            queue: Some(rx),
            subscriptions: None,
        })
    }

    async fn deliver(&self, from: &mut PeerId, msgs: &mut Vec<Multipart>) -> Result<(), Stop> {
        let unmatched = self.events.replies(*from, msgs);
        msgs.clear();
        self.core.metrics.dropped("unmatched_reply", unmatched);
        // Answered requests free room for senders waiting on the in-flight
        // bound.
        self.core.room.freed();
        Ok(())
    }

    fn detach(self: &Arc<Self>, peer: PeerId, unsent: Vec<Queued>) {
        self.events
            .detached(peer, unsent.into_iter().map(|q| q.msg).collect());
    }
}

/// DEALER connections whose requests, replies and peer choice belong to the
/// owner ([`ServiceEvents`]): the socket only keeps the connections (bound,
/// or one per connect slot, reconnecting) and hands over what they carry.
/// Requests are framed as for [`DealerSocket`]: `[id (8 bytes), "", ...]`
/// ([`encode_request_id`], [`request_id`]).
pub(crate) struct ServiceLinks<E> {
    core: Arc<SocketCore>,
    events: Arc<E>,
}

impl<E> std::fmt::Debug for ServiceLinks<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceLinks")
            .field("socket", &self.core.metrics.name())
            .field("peers", &self.core.peer_count())
            .finish()
    }
}

impl<E: ServiceEvents> ServiceLinks<E> {
    /// A socket named `name` (its metrics `socket` label) reporting to
    /// `events`.
    pub(crate) fn new(name: &str, options: Options, metrics: &Metrics, events: Arc<E>) -> Self {
        let core = SocketCore::new(SocketType::Dealer, options, metrics.socket(name));
        Self { core, events }
    }

    /// Listens on `endpoint`; every peer that connects is a service with
    /// `slot: None`.
    ///
    /// # Errors
    /// A malformed endpoint, a name that does not resolve, or a failed bind.
    pub(crate) async fn bind(
        &self,
        endpoint: &str,
    ) -> Result<std::net::SocketAddr, super::endpoint::EndpointError> {
        super::endpoint::bind(&self.core, &self.role(None), endpoint).await
    }

    /// Keeps a connection to `endpoint`, reconnecting forever; its
    /// connections are reported with `slot`.
    ///
    /// # Errors
    /// A malformed endpoint, or a closed socket.
    pub(crate) fn connect(
        &self,
        endpoint: &str,
        slot: usize,
    ) -> Result<(), super::endpoint::EndpointError> {
        super::endpoint::connect(&self.core, &self.role(Some(slot)), endpoint)
    }

    fn role(&self, slot: Option<usize>) -> Arc<LinkRole<E>> {
        Arc::new(LinkRole {
            core: self.core.clone(),
            events: self.events.clone(),
            slot,
        })
    }

    /// Signalled when a queue has room again, a service came or went, or
    /// replies arrived.
    pub(crate) fn room(&self) -> &Room {
        &self.core.room
    }

    /// A handle on the socket's signals for a task of the owner's.
    pub(crate) fn signal(&self) -> LinkSignal {
        LinkSignal(self.core.clone())
    }

    /// The socket's tasks (to run the owner's timer beside them).
    pub(crate) fn tracker(&self) -> &tokio_util::task::TaskTracker {
        &self.core.tracker
    }

    /// Cancelled when the socket closes.
    pub(crate) fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.core.cancel.cancelled()
    }

    /// True once the socket closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.core.cancel.is_cancelled()
    }

    /// Services connected past the handshake.
    pub(crate) fn peer_count(&self) -> usize {
        self.core.peer_count()
    }

    /// See [`SocketCore::wait_for_peers`].
    pub(crate) async fn wait_for_peers(&self, want: usize, timeout: std::time::Duration) -> bool {
        self.core.wait_for_peers(want, timeout).await
    }

    /// Closes every connection and waits for the socket's tasks to end.
    pub(crate) async fn close(&self) {
        self.core.close().await;
    }
}

impl<E> Drop for ServiceLinks<E> {
    fn drop(&mut self) {
        self.core.cancel.cancel();
    }
}

/// The signals of a [`ServiceLinks`] socket, for the owner's own tasks.
/// Holding it does not keep the socket open.
#[derive(Debug, Clone)]
pub(crate) struct LinkSignal(Arc<SocketCore>);

impl LinkSignal {
    /// Wakes senders waiting for room (requests were answered).
    pub(crate) fn freed(&self) {
        self.0.room.freed();
    }

    /// Resolves when the socket closes.
    pub(crate) async fn cancelled(&self) {
        self.0.cancel.cancelled().await;
    }
}

/// The first two frames of a request: its id and the empty delimiter.
pub(crate) fn encode_request_id(id: u64) -> [Bytes; 2] {
    [Bytes::copy_from_slice(&id.to_be_bytes()), Bytes::new()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zmtp::connection::testing::{eventually, metric, metrics, msg, within};
    use crate::zmtp::router::RouterSocket;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_service_cannot_answer_for_another() {
        let (reg, m) = metrics();
        let mut a = RouterSocket::new("a", Options::default(), &m);
        let mut b = RouterSocket::new("b", Options::default(), &m);
        let addr_a = a.bind("tcp://127.0.0.1:0").await.expect("bind");
        let addr_b = b.bind("tcp://127.0.0.1:0").await.expect("bind");
        let dealer = Arc::new(DealerSocket::new("client", Options::default(), &m));
        dealer.connect(&format!("tcp://{addr_a}")).expect("connect");
        dealer.connect(&format!("tcp://{addr_b}")).expect("connect");
        eventually("two services", || dealer.peer_count() == 2).await;
        let mut callers = Vec::new();
        for body in ["one", "two"] {
            let d = dealer.clone();
            callers.push(tokio::spawn(async move {
                let reply = d
                    .request(msg(&[body.as_bytes()]), Duration::from_secs(20))
                    .await
                    .expect("reply");
                (body, reply[0].clone())
            }));
        }
        let ra = within("request at a", a.recv()).await.expect("open");
        let rb = within("request at b", b.recv()).await.expect("open");
        // Service a forges a reply to the request b holds.
        let forged = msg(&[&rb.frames[0], b"", b"forged"]);
        a.send(ra.peer, forged).await.expect("send");
        eventually("forged reply refused", || {
            metric(
                &reg,
                "switchyard_zmtp_dropped_total",
                &[("reason", "unmatched_reply")],
            ) == 1.0
        })
        .await;
        for (svc, r) in [(&a, &ra), (&b, &rb)] {
            let mut reply = r.frames.clone();
            let body = reply[2].clone();
            reply[2] = bytes::Bytes::from([&b"re:"[..], &body].concat());
            svc.send(r.peer, reply).await.expect("reply");
        }
        for c in callers {
            let (body, reply) = within("caller", c).await.expect("task");
            assert_eq!(&reply[..], format!("re:{body}").as_bytes());
        }
    }
}
