//! PULL side, facing PUSH producers.
//!
//! Semantics:
//! - Every peer's reader feeds one bounded channel of `recv_hwm` messages
//!   for the whole socket. When it is full, readers **wait** instead of
//!   buffering: they stop reading, so the kernel's TCP window pushes back on
//!   the producers. Nothing is dropped inbound.
//! - A protocol violation (oversized frame or message, too many frames,
//!   malformed command...) closes that peer's connection only and is counted
//!   in `switchyard_zmtp_protocol_errors_total{socket,reason}`.
//! - [`PullSocket::recv_many`] takes up to `max` messages at once; use it in
//!   throughput-sensitive loops.
//!
//! [`Inbox`] is the shared inbound channel, also used by SUB and ROUTER.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::connection::{Attached, PeerId, PeerLink, Received, Role, SocketCore, Stop};
use super::endpoint::{self, EndpointError};
use super::frame::Multipart;
use super::metrics::Metrics;
use super::options::Options;
use super::socket_type::SocketType;

/// The inbound side shared by a socket's readers: one bounded channel.
#[derive(Debug)]
pub(crate) struct Inbox {
    tx: mpsc::Sender<Received>,
    /// Permits reserved at once (a slice of the capacity, so readers
    /// pipeline instead of waiting for the channel to empty).
    chunk: usize,
}

impl Inbox {
    /// An inbox of `capacity` messages and its receiving end.
    pub(crate) fn new(capacity: usize) -> (Self, mpsc::Receiver<Received>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let chunk = (capacity / 4).clamp(1, 256);
        (Self { tx, chunk }, rx)
    }

    /// Moves `msgs` into the channel, waiting for room (backpressure).
    pub(crate) async fn deliver(
        &self,
        peer: PeerId,
        msgs: &mut Vec<Multipart>,
    ) -> Result<(), Stop> {
        let mut left = msgs.len();
        let mut it = msgs.drain(..);
        while left > 0 {
            let k = left.min(self.chunk);
            let permits = self
                .tx
                .reserve_many(k)
                .await
                .map_err(|_| Stop::SocketClosed)?;
            for (permit, frames) in permits.zip(&mut it) {
                permit.send(Received { peer, frames });
            }
            left -= k;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct PullRole {
    inbox: Inbox,
}

impl Role for PullRole {
    type Peer = PeerId;

    fn attach(self: &Arc<Self>, link: PeerLink<'_>) -> Result<Attached<PeerId>, &'static str> {
        Ok(Attached {
            state: link.id,
            queue: None,
            subscriptions: None,
        })
    }

    async fn deliver(&self, peer: &mut PeerId, msgs: &mut Vec<Multipart>) -> Result<(), Stop> {
        self.inbox.deliver(*peer, msgs).await
    }

    fn detach(self: &Arc<Self>, _peer: PeerId, _unsent: Vec<Multipart>) {}
}

/// A PULL socket: receives messages from PUSH peers, with backpressure.
#[derive(Debug)]
pub struct PullSocket {
    core: Arc<SocketCore>,
    role: Arc<PullRole>,
    rx: mpsc::Receiver<Received>,
}

impl PullSocket {
    /// A PULL socket named `name` (its metrics `socket` label).
    pub fn new(name: &str, options: Options, metrics: &Metrics) -> Self {
        let core = SocketCore::new(SocketType::Pull, options, metrics.socket(name));
        let (inbox, rx) = Inbox::new(core.options.recv_hwm);
        let role = Arc::new(PullRole { inbox });
        Self { core, role, rx }
    }

    /// Listens on `endpoint` (`tcp://host:port`, port 0 = any); returns the
    /// bound address.
    ///
    /// # Errors
    /// A malformed endpoint, a name that does not resolve, or a failed bind.
    pub async fn bind(&self, endpoint: &str) -> Result<SocketAddr, EndpointError> {
        endpoint::bind(&self.core, &self.role, endpoint).await
    }

    /// Connects to `endpoint` in the background, reconnecting forever.
    ///
    /// # Errors
    /// A malformed endpoint, or a closed socket.
    pub fn connect(&self, endpoint: &str) -> Result<(), EndpointError> {
        endpoint::connect(&self.core, &self.role, endpoint)
    }

    /// The next message; `None` once the socket is closed.
    ///
    /// # Cancel safety
    /// Cancel-safe: a message is either returned or stays queued.
    pub async fn recv(&mut self) -> Option<Received> {
        self.rx.recv().await
    }

    /// Appends up to `max` messages to `buf` (waiting for at least one);
    /// returns how many, 0 once the socket is closed.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn recv_many(&mut self, buf: &mut Vec<Received>, max: usize) -> usize {
        self.rx.recv_many(buf, max.max(1)).await
    }

    /// Peers connected past the handshake.
    pub fn peer_count(&self) -> usize {
        self.core.peer_count()
    }

    /// Stops listening, closes every connection and waits for the socket's
    /// tasks to end. Messages already received stay readable.
    pub async fn close(&self) {
        self.core.close().await;
    }

    /// Stops reading from the wire, as [`Self::close`] does, and ends the
    /// inbound stream: `recv` and `recv_many` still return what had been
    /// received, then `None` / 0. For a graceful shutdown that hands over
    /// everything already read.
    pub async fn stop_reading(&mut self) {
        self.core.close().await;
        self.rx.close();
    }
}

impl Drop for PullSocket {
    fn drop(&mut self) {
        self.core.cancel.cancel();
    }
}
