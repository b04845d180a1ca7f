//! ROUTER side, facing REQ and DEALER clients.
//!
//! Semantics:
//! - Each connection is a peer with its own [`PeerId`]: the routing id.
//!   [`RouterSocket::recv`] returns it in [`Received::peer`] together with
//!   the frames as the client sent them, **envelope kept** (a REQ client's
//!   empty delimiter frame comes first); reply with
//!   [`RouterSocket::send`]`(peer, frames)` echoing that envelope, and the
//!   reply reaches exactly the connection that asked.
//! - A client that sets the `Identity` property is also findable by it
//!   ([`RouterSocket::peer_by_identity`]). A second connection claiming an
//!   identity already connected is refused
//!   (`connections_rejected_total{reason="duplicate_identity"}`). Identities
//!   starting with a zero byte are reserved by the RFC and ignored.
//! - Inbound is as for PULL: one channel bounded to `recv_hwm` messages and
//!   `recv_hwm_bytes` bytes; when full, readers stop reading (TCP backpressure). Nothing is dropped.
//! - A REQ client whose message does not start with the empty delimiter
//!   frame (after at most one request-id frame, as libzmq's
//!   `ZMQ_REQ_CORRELATE` sends) followed by a body breaks the REQ protocol:
//!   its connection is closed and counted
//!   (`protocol_errors_total{reason="req_envelope"}`).
//! - `send` to a peer that is gone fails with [`SendError::UnknownPeer`]
//!   (`dropped_total{reason="unroutable"}`); to a peer whose queue stays full
//!   for `send_timeout`, with [`SendError::PeerFull`]
//!   (`dropped_total{reason="send_timeout"}`). Replies still queued to a peer
//!   that disconnects are counted in `dropped_total{reason="peer_disconnected"}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::time::{Instant, timeout_at};

use super::connection::{
    Attached, PeerId, PeerLink, PushError, QueueTx, Queued, Received, Role, SendError, SocketCore,
    Stop, peer_queue,
};
use super::frame::Multipart;
use super::handle::{Handle, Inbound, socket_methods};
use super::inbox::{Inbox, Origin};
use super::metrics::Metrics;
use super::options::Options;
use super::socket_type::SocketType;

#[derive(Debug)]
struct RouterPeer {
    queue: QueueTx,
    identity: Option<Bytes>,
}

#[derive(Debug, Default)]
struct Table {
    peers: HashMap<PeerId, Arc<RouterPeer>>,
    identities: HashMap<Bytes, PeerId>,
}

#[derive(Debug)]
struct RouterRole {
    core: Arc<SocketCore>,
    inbox: Inbox,
    snapshot: ArcSwap<HashMap<PeerId, Arc<RouterPeer>>>,
    table: Mutex<Table>,
}

/// A REQ message: an empty delimiter frame followed by a body; the
/// delimiter comes first, or second after a libzmq `ZMQ_REQ_CORRELATE`
/// request id.
fn has_req_envelope(m: &Multipart) -> bool {
    m.iter()
        .take(2)
        .position(|f| f.is_empty())
        .is_some_and(|i| i + 1 < m.len())
}

/// Per-connection state of a ROUTER peer.
#[derive(Debug)]
struct Conn {
    origin: Origin,
    req: bool,
}

impl RouterRole {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `msg` for `peer` if its queue has room now: `Ok(None)` once
    /// queued, `Ok(Some(msg))` back while the queue is full.
    fn try_send(&self, peer: PeerId, msg: Multipart) -> Result<Option<Multipart>, SendError> {
        if msg.is_empty() {
            return Err(SendError::EmptyMessage);
        }
        let target = self.snapshot.load().get(&peer).cloned();
        let Some(target) = target else {
            self.core.metrics.dropped_unroutable.inc();
            return Err(SendError::UnknownPeer(peer));
        };
        match target.queue.try_push(msg) {
            Ok(()) => Ok(None),
            Err(PushError::Closed(_)) => {
                self.core.metrics.dropped_unroutable.inc();
                Err(SendError::UnknownPeer(peer))
            }
            Err(PushError::Full(m)) => Ok(Some(m.msg)),
        }
    }

    async fn send(&self, peer: PeerId, msg: Multipart) -> Result<(), SendError> {
        // Fast path without registering a waiter.
        let Some(mut msg) = self.try_send(peer, msg)? else {
            return Ok(());
        };
        let mut deadline: Option<Instant> = None;
        loop {
            // Register, then re-check, so a wake-up in between is kept.
            let wait = self.core.room.wait();
            match self.try_send(peer, msg)? {
                None => return Ok(()),
                Some(m) => msg = m,
            }
            let timeout = self.core.options.send_timeout;
            let until = *deadline.get_or_insert_with(|| Instant::now() + timeout);
            tokio::select! {
                _ = self.core.cancel.cancelled() => return Err(SendError::Closed),
                r = timeout_at(until, wait.until_signalled()) => {
                    if r.is_err() {
                        self.core.metrics.dropped_send_timeout.inc();
                        return Err(SendError::PeerFull { peer, timeout });
                    }
                }
            }
        }
    }
}

impl Role for RouterRole {
    type Peer = Conn;

    fn attach(self: &Arc<Self>, link: PeerLink<'_>) -> Result<Attached<Conn>, &'static str> {
        let identity = link
            .info
            .identity
            .clone()
            .filter(|i| i.first().is_some_and(|b| *b != 0));
        let o = &self.core.options;
        let (tx, rx) = peer_queue(o.send_hwm, o.send_hwm_bytes);
        let mut table = self.table();
        if let Some(i) = &identity {
            if table.identities.contains_key(i) {
                return Err("duplicate_identity");
            }
            table.identities.insert(i.clone(), link.id);
        }
        table.peers.insert(
            link.id,
            Arc::new(RouterPeer {
                queue: tx,
                identity,
            }),
        );
        self.snapshot.store(Arc::new(table.peers.clone()));
        Ok(Attached {
            state: Conn {
                origin: Origin::of(&link),
                req: link.info.socket_type == SocketType::Req,
            },
            queue: Some(rx),
            subscriptions: None,
        })
    }

    async fn deliver(&self, peer: &mut Conn, msgs: &mut Vec<Multipart>) -> Result<(), Stop> {
        if peer.req && !msgs.iter().all(has_req_envelope) {
            return Err(Stop::Protocol("req_envelope"));
        }
        self.inbox.deliver(&peer.origin, msgs).await
    }

    fn detach(self: &Arc<Self>, peer: Conn, unsent: Vec<Queued>) {
        let mut table = self.table();
        if let Some(p) = table.peers.remove(&peer.origin.id)
            && let Some(i) = &p.identity
        {
            table.identities.remove(i);
        }
        self.snapshot.store(Arc::new(table.peers.clone()));
        drop(table);
        self.core
            .metrics
            .dropped_peer_disconnected
            .inc_by(unsent.len() as u64);
    }
}

/// A ROUTER socket: receives requests with their routing peer and sends
/// replies back to that peer.
#[derive(Debug)]
pub struct RouterSocket {
    sender: RouterSender,
    inbound: Inbound<RouterRole>,
}

/// The sending half of a [`RouterSocket`], for replying from other tasks.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct RouterSender {
    role: Arc<RouterRole>,
}

impl RouterSender {
    /// Queues `frames` for `peer` if its queue has room now, else drops
    /// them, counted (`dropped_total{reason="peer_queue_full"}`): for
    /// answers to a client that has stopped reading. Returns whether they
    /// were queued.
    pub fn send_or_drop(&self, peer: PeerId, frames: Multipart) -> bool {
        match self.role.try_send(peer, frames) {
            Ok(None) => true,
            Ok(Some(_)) => {
                self.role.core.metrics.dropped("peer_queue_full", 1);
                false
            }
            // Counted as unroutable.
            Err(_) => false,
        }
    }

    /// Queues `frames` for `peer` (include the envelope the request came
    /// with, e.g. the REQ delimiter). Waits up to `send_timeout` while the
    /// peer's queue is full.
    ///
    /// # Errors
    /// [`SendError::UnknownPeer`], [`SendError::PeerFull`],
    /// [`SendError::Closed`], [`SendError::EmptyMessage`]; the message is
    /// not sent.
    ///
    /// # Cancel safety
    /// Cancelling drops the message if it was not queued yet.
    pub async fn send(&self, peer: PeerId, frames: Multipart) -> Result<(), SendError> {
        self.role.send(peer, frames).await
    }

    /// The `Identity` the peer announced, if any.
    pub fn identity(&self, peer: PeerId) -> Option<Bytes> {
        self.role
            .snapshot
            .load()
            .get(&peer)
            .and_then(|p| p.identity.clone())
    }

    /// The connected peer that announced `identity`.
    pub fn peer_by_identity(&self, identity: &[u8]) -> Option<PeerId> {
        self.role.table().identities.get(identity).copied()
    }
}

impl RouterSocket {
    /// A ROUTER socket named `name` (its metrics `socket` label).
    pub fn new(name: &str, options: Options, metrics: &Metrics) -> Self {
        let core = SocketCore::new(SocketType::Router, options, metrics.socket(name));
        let (inbox, rx) = Inbox::new(core.options.recv_hwm, core.options.recv_hwm_bytes);
        let role = Arc::new(RouterRole {
            core: core.clone(),
            inbox,
            snapshot: ArcSwap::from_pointee(HashMap::new()),
            table: Mutex::new(Table::default()),
        });
        Self {
            sender: RouterSender { role: role.clone() },
            inbound: Inbound {
                handle: Handle { core, role },
                rx,
            },
        }
    }

    /// A handle for sending replies from other tasks.
    pub fn sender(&self) -> RouterSender {
        self.sender.clone()
    }

    /// See [`RouterSender::send`].
    ///
    /// # Errors
    /// As [`RouterSender::send`].
    pub async fn send(&self, peer: PeerId, frames: Multipart) -> Result<(), SendError> {
        self.sender.send(peer, frames).await
    }

    /// The `Identity` the peer announced, if any.
    pub fn identity(&self, peer: PeerId) -> Option<Bytes> {
        self.sender.identity(peer)
    }

    /// The connected peer that announced `identity`.
    pub fn peer_by_identity(&self, identity: &[u8]) -> Option<PeerId> {
        self.sender.peer_by_identity(identity)
    }

    /// The next request; `None` once the socket is closed.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn recv(&mut self) -> Option<Received> {
        self.inbound.recv().await
    }

    /// Appends up to `max` requests to `buf` (waiting for at least one);
    /// returns how many, 0 once the socket is closed.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn recv_many(&mut self, buf: &mut Vec<Received>, max: usize) -> usize {
        self.inbound.recv_many(buf, max).await
    }

    /// Clients connected past the handshake.
    pub fn peer_count(&self) -> usize {
        self.inbound.handle.peer_count()
    }

    /// Waits until every reply queued so far was written to the kernel, or
    /// until `timeout`; returns whether everything was written. Use before
    /// [`close`](Self::close) so the last replies are not lost.
    pub async fn flush(&self, timeout: std::time::Duration) -> bool {
        let role = &self.sender.role;
        self.inbound
            .handle
            .flush(timeout, || {
                role.snapshot.load().values().all(|p| p.queue.is_drained())
            })
            .await
    }

    /// Stops listening, closes every connection and waits for the socket's
    /// tasks to end.
    pub async fn close(&self) {
        self.inbound.handle.close().await;
    }
}

socket_methods!(RouterSocket, inbound.handle);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use zeromq::{Socket, SocketRecv, SocketSend};

    use super::*;
    use crate::zmtp::connection::testing::{eventually, metric, metrics, msg, raw_client, within};
    use crate::zmtp::dealer::DealerSocket;
    use crate::zmtp::frame::encode_message;

    fn spawn_echo(mut router: RouterSocket) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(r) = router.recv().await {
                if router.send(r.peer, r.frames).await.is_err() {
                    break;
                }
            }
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_dealer_requests_get_their_own_replies() {
        let (_reg, m) = metrics();
        let router = RouterSocket::new("svc", Options::default(), &m);
        let addr = router.bind("tcp://127.0.0.1:0").await.expect("bind");
        let echo = spawn_echo(router);
        let dealer = Arc::new(DealerSocket::new("client", Options::default(), &m));
        dealer.connect(&format!("tcp://{addr}")).expect("connect");
        let mut tasks = Vec::new();
        for i in 0u32..64 {
            let d = dealer.clone();
            tasks.push(tokio::spawn(async move {
                let body = i.to_be_bytes();
                let reply = d
                    .request(msg(&[b"q", &body]), Duration::from_secs(20))
                    .await
                    .expect("reply");
                assert_eq!(reply.len(), 2);
                assert_eq!(&reply[1][..], &body, "reply reached its own caller");
            }));
        }
        for t in tasks {
            within("request", t).await.expect("task ok");
        }
        assert_eq!(dealer.pending_requests(), 0);
        echo.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn zeromq_req_client_gets_its_reply() {
        let (_reg, m) = metrics();
        let mut router = RouterSocket::new("svc", Options::default(), &m);
        let addr = router.bind("tcp://127.0.0.1:0").await.expect("bind");
        let mut req = zeromq::ReqSocket::new();
        within("connect", req.connect(&format!("tcp://{addr}")))
            .await
            .expect("connect");
        within("send", req.send("hello".into()))
            .await
            .expect("send");
        let r = within("request", router.recv()).await.expect("open");
        assert_eq!(r.frames.len(), 2);
        assert!(r.frames[0].is_empty(), "envelope delimiter kept");
        assert_eq!(&r.frames[1][..], b"hello");
        router
            .send(r.peer, msg(&[b"", b"world"]))
            .await
            .expect("reply");
        let reply = within("reply", req.recv()).await.expect("recv");
        assert_eq!(reply.get(0).map(|b| &b[..]), Some(&b"world"[..]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn req_peer_breaking_the_envelope_is_closed_and_counted() {
        let (reg, m) = metrics();
        let router = RouterSocket::new("svc", Options::default(), &m);
        let addr = router.bind("tcp://127.0.0.1:0").await.expect("bind");
        let _echo = spawn_echo(router);
        let (mut s, _) = raw_client(addr, SocketType::Req).await;
        let mut out = bytes::BytesMut::new();
        encode_message(&[bytes::Bytes::from_static(b"no-delimiter")], &mut out);
        s.write_all(&out).await.expect("write");
        eventually("counted", || {
            metric(
                &reg,
                "switchyard_zmtp_protocol_errors_total",
                &[("reason", "req_envelope")],
            ) == 1.0
        })
        .await;
        let dealer = DealerSocket::new("client", Options::default(), &m);
        dealer.connect(&format!("tcp://{addr}")).expect("connect");
        let reply = dealer
            .request(msg(&[b"still"]), Duration::from_secs(20))
            .await
            .expect("a good client is still served");
        assert_eq!(&reply[0][..], b"still");
    }

    #[test]
    fn req_envelopes() {
        assert!(has_req_envelope(&msg(&[b"", b"body"])));
        assert!(has_req_envelope(&msg(&[b"id", b"", b"body"])));
        assert!(has_req_envelope(&msg(&[b"", b""])));
        assert!(!has_req_envelope(&msg(&[b"body"])));
        assert!(!has_req_envelope(&msg(&[b""])));
        assert!(!has_req_envelope(&msg(&[b"a", b"b", b"", b"c"])));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replies_to_gone_peers_are_refused_and_counted() {
        let (reg, m) = metrics();
        let router = RouterSocket::new("svc", Options::default(), &m);
        let r = router.send(PeerId(42), msg(&[b"x"])).await;
        assert!(matches!(r, Err(SendError::UnknownPeer(_))), "{r:?}");
        assert_eq!(
            metric(
                &reg,
                "switchyard_zmtp_dropped_total",
                &[("reason", "unroutable")]
            ),
            1.0
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn identities_are_exposed_and_duplicates_refused() {
        let (reg, m) = metrics();
        let mut router = RouterSocket::new("svc", Options::default(), &m);
        let addr = router.bind("tcp://127.0.0.1:0").await.expect("bind");
        let named = Options {
            identity: bytes::Bytes::from_static(b"client-1"),
            ..Options::default()
        };
        let a = DealerSocket::new("a", named.clone(), &m);
        a.connect(&format!("tcp://{addr}")).expect("connect");
        let b = DealerSocket::new("b", named, &m);
        eventually("first attached", || router.peer_count() == 1).await;
        b.connect(&format!("tcp://{addr}")).expect("connect");
        eventually("duplicate refused", || {
            metric(
                &reg,
                "switchyard_zmtp_connections_rejected_total",
                &[("reason", "duplicate_identity")],
            ) >= 1.0
        })
        .await;
        let pending =
            tokio::spawn(async move { a.request(msg(&[b"hi"]), Duration::from_secs(20)).await });
        let r = within("request", router.recv()).await.expect("open");
        assert_eq!(router.identity(r.peer).as_deref(), Some(&b"client-1"[..]));
        assert_eq!(router.peer_by_identity(b"client-1"), Some(r.peer));
        router.send(r.peer, r.frames).await.expect("reply");
        within("reply", pending)
            .await
            .expect("task")
            .expect("reply");
        drop(b);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dealer_talks_to_a_zeromq_rep_service() {
        let (_reg, m) = metrics();
        let mut rep = zeromq::RepSocket::new();
        let ep = within("bind", rep.bind("tcp://127.0.0.1:0"))
            .await
            .expect("bind");
        let dealer = Arc::new(DealerSocket::new("client", Options::default(), &m));
        dealer.connect(&ep.to_string()).expect("connect");
        let d = dealer.clone();
        let client =
            tokio::spawn(async move { d.request(msg(&[b"ping"]), Duration::from_secs(20)).await });
        let req = within("request", rep.recv()).await.expect("recv");
        assert_eq!(req.get(0).map(|b| &b[..]), Some(&b"ping"[..]));
        within("reply", rep.send("pong".into()))
            .await
            .expect("send");
        let reply = within("reply", client).await.expect("task").expect("reply");
        assert_eq!(&reply[0][..], b"pong");
    }
}
