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
//! - Inbound is as for PULL: one bounded channel of `recv_hwm` messages;
//!   when full, readers stop reading (TCP backpressure). Nothing is dropped.
//! - A REQ client whose message does not start with the empty delimiter
//!   frame (followed by a body) breaks the REQ protocol: its connection is
//!   closed and counted (`protocol_errors_total{reason="req_envelope"}`).
//! - `send` to a peer that is gone fails with [`SendError::UnknownPeer`]
//!   (`dropped_total{reason="unroutable"}`); to a peer whose queue stays full
//!   for `send_timeout`, with [`SendError::PeerFull`]
//!   (`dropped_total{reason="send_timeout"}`). Replies still queued to a peer
//!   that disconnects are counted in `dropped_total{reason="peer_disconnected"}`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

use super::connection::{
    Attached, PeerId, PeerLink, PushError, QueueTx, Received, Role, SendError, SocketCore, Stop,
    peer_queue,
};
use super::endpoint::{self, EndpointError};
use super::frame::Multipart;
use super::metrics::Metrics;
use super::options::Options;
use super::pull::Inbox;
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

/// Per-connection state of a ROUTER peer.
#[derive(Debug)]
struct Conn {
    id: PeerId,
    req: bool,
}

impl RouterRole {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn send(&self, peer: PeerId, mut msg: Multipart) -> Result<(), SendError> {
        if msg.is_empty() {
            return Err(SendError::EmptyMessage);
        }
        let target = self.snapshot.load().get(&peer).cloned();
        let Some(target) = target else {
            self.core.metrics.dropped_unroutable.inc();
            return Err(SendError::UnknownPeer(peer));
        };
        let mut deadline: Option<Instant> = None;
        loop {
            let wait = self.core.room.wait();
            match target.queue.try_push(msg) {
                Ok(()) => return Ok(()),
                Err(PushError::Closed(_)) => {
                    self.core.metrics.dropped_unroutable.inc();
                    return Err(SendError::UnknownPeer(peer));
                }
                Err(PushError::Full(m)) => msg = m,
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
                id: link.id,
                req: link.info.socket_type == SocketType::Req,
            },
            queue: Some(rx),
            subscriptions: None,
        })
    }

    async fn deliver(&self, peer: &mut Conn, msgs: &mut Vec<Multipart>) -> Result<(), Stop> {
        if peer.req && !msgs.iter().all(|m| m.len() >= 2 && m[0].is_empty()) {
            return Err(Stop::Protocol("req_envelope"));
        }
        self.inbox.deliver(peer.id, msgs).await
    }

    fn detach(self: &Arc<Self>, peer: Conn, unsent: Vec<Multipart>) {
        let mut table = self.table();
        if let Some(p) = table.peers.remove(&peer.id) {
            if let Some(i) = &p.identity {
                table.identities.remove(i);
            }
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
    rx: mpsc::Receiver<Received>,
}

/// The sending half of a [`RouterSocket`], for replying from other tasks.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct RouterSender {
    core: Arc<SocketCore>,
    role: Arc<RouterRole>,
}

impl RouterSender {
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
        let (inbox, rx) = Inbox::new(core.options.recv_hwm);
        let role = Arc::new(RouterRole {
            core: core.clone(),
            inbox,
            snapshot: ArcSwap::from_pointee(HashMap::new()),
            table: Mutex::new(Table::default()),
        });
        Self {
            sender: RouterSender { core, role },
            rx,
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

    /// Listens on `endpoint` (`tcp://host:port`, port 0 = any); returns the
    /// bound address.
    ///
    /// # Errors
    /// A malformed endpoint, a name that does not resolve, or a failed bind.
    pub async fn bind(&self, endpoint: &str) -> Result<SocketAddr, EndpointError> {
        endpoint::bind(&self.sender.core, &self.sender.role, endpoint).await
    }

    /// Connects to `endpoint` in the background, reconnecting forever.
    ///
    /// # Errors
    /// A malformed endpoint, or a closed socket.
    pub fn connect(&self, endpoint: &str) -> Result<(), EndpointError> {
        endpoint::connect(&self.sender.core, &self.sender.role, endpoint)
    }

    /// The next request; `None` once the socket is closed.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn recv(&mut self) -> Option<Received> {
        self.rx.recv().await
    }

    /// Appends up to `max` requests to `buf` (waiting for at least one);
    /// returns how many, 0 once the socket is closed.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn recv_many(&mut self, buf: &mut Vec<Received>, max: usize) -> usize {
        self.rx.recv_many(buf, max.max(1)).await
    }

    /// Clients connected past the handshake.
    pub fn peer_count(&self) -> usize {
        self.sender.core.peer_count()
    }

    /// Stops listening, closes every connection and waits for the socket's
    /// tasks to end.
    pub async fn close(&self) {
        self.sender.core.close().await;
    }
}

impl Drop for RouterSocket {
    fn drop(&mut self) {
        self.sender.core.cancel.cancel();
    }
}
