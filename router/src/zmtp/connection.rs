//! One ZMTP connection's life: handshake under a deadline, then a reader and
//! a writer, then detaching from the role. Shared by every role through the
//! `Role` hooks; `SocketCore` holds what a socket's connections share.
//!
//! - **Handshake**: our greeting is sent at once; the peer has
//!   [`Options::handshake_timeout`] to complete greeting + READY. Failures are
//!   counted in `handshake_failures_total{reason}` (the codec's reason, or
//!   `timeout`); a silent connection costs one task and a 64-byte buffer
//!   until then.
//! - **Reader**: reads into one `BytesMut` in bounded chunks (the size it
//!   reserves is capped by the configured limits, never by what the peer
//!   declares), decodes with the sans-IO [`Decoder`](super::frame::Decoder),
//!   and hands decoded messages to the role in batches. A role that cannot
//!   take more (full inbound channel) makes the reader wait, so the kernel's
//!   TCP window pushes back on that peer. A protocol violation closes this
//!   connection only (`protocol_errors_total{reason}`).
//! - **Writer**: drains the peer's queue in batches into one buffer (large
//!   bodies are written vectored, without copying) and writes each batch
//!   with as few syscalls as the kernel allows; PONGs, PINGs and SUB
//!   subscriptions go through the same writer.
//! - **CURVE**: the handshake leaves the connection's keys behind; the
//!   reader is then built over [`CurveDecoder`](super::curve::CurveDecoder)
//!   instead of the plain decoder (the reader is generic over it, so the
//!   NULL and PLAIN paths carry no check for it), and the writer seals each
//!   batch, copying every frame body into the sealed buffer: no vectored
//!   zero-copy writes for CURVE.
//! - **Heartbeats** (ZMTP 3.1 peers only, when the interval is non-zero):
//!   PING every interval; a peer from which nothing arrived for
//!   `heartbeat_timeout` is dropped. 3.0 peers cannot answer PING and are
//!   never timed out this way. The check runs beside the writer, so a writer
//!   blocked on a peer whose TCP window stays closed does not hide it.
//! - **Closing** a dropped connection is graceful: FIN after what the kernel
//!   already holds, then what the peer still sends is read and discarded
//!   (at most 5 s and 1 MiB) until it closes too, so the kernel does not
//!   answer with RST and destroy messages the peer has not read yet.

mod io;
mod queue;
mod receipt;
#[cfg(test)]
pub(crate) mod testing;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::command::Command;
use super::curve::{CurveDecoder, Session};
use super::frame::{Decode, Decoder, Multipart};
use super::handshake::{Handshake, HandshakeConfig, HandshakeError, PeerInfo};
use super::metrics::SocketMetrics;
use super::options::Options;
use super::socket_type::SocketType;
use super::subscriptions::SubscriptionSet;

pub(crate) use queue::{PushError, QueueRx, QueueTx, Queued, Room, message_size, peer_queue};
pub use receipt::{Receipt, Token};

/// Identifies one connection of a socket: unique within the socket, never
/// reused while the socket lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub(crate) u64);

impl PeerId {
    /// The number inside (for logs).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer#{}", self.0)
    }
}

/// One message received from a peer.
#[derive(Clone, Debug)]
pub struct Received {
    /// The connection it came from (ROUTER: where a reply must go).
    pub peer: PeerId,
    /// The name that connection authenticated as (PLAIN user name, or the
    /// CURVE client's listed name); `None` for a NULL-mechanism peer.
    pub user: Option<std::sync::Arc<str>>,
    /// Its frames (ROUTER: without a routing-id frame; the REQ envelope
    /// delimiter, if any, is kept).
    pub frames: Multipart,
}

/// Errors of sending through a socket.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No peer was connected within the send timeout (PUSH, DEALER).
    #[error("no peer connected within {0:?}")]
    NoPeers(std::time::Duration),
    /// The socket was closed.
    #[error("the socket is closed")]
    Closed,
    /// A message needs at least one frame.
    #[error("a message needs at least one frame")]
    EmptyMessage,
    /// ROUTER: the peer is not (or no longer) connected.
    #[error("{0} is not connected")]
    UnknownPeer(PeerId),
    /// ROUTER: the peer's queue stayed full for the send timeout.
    #[error("{peer}'s queue stayed full for {timeout:?}")]
    PeerFull {
        /// The peer.
        peer: PeerId,
        /// How long the send waited.
        timeout: std::time::Duration,
    },
    /// DEALER: no reply arrived within the request timeout.
    #[error("no reply within {0:?}")]
    ReplyTimeout(std::time::Duration),
    /// DEALER: the service holding the request disconnected before replying.
    #[error("the peer disconnected before replying")]
    PeerDisconnected,
}

/// Why a reader hook wants the connection to stop.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The peer broke the protocol; counted with this reason.
    Protocol(&'static str),
    /// The socket is gone (its consumer side was dropped).
    SocketClosed,
}

/// What a socket's connections share.
#[derive(Debug)]
pub(crate) struct SocketCore {
    pub(crate) options: Options,
    pub(crate) socket_type: SocketType,
    pub(crate) metrics: SocketMetrics,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
    pub(crate) room: Room,
    next_peer: AtomicU64,
    peers: AtomicUsize,
    /// Each connection past the handshake, by peer, to cut one
    /// ([`SocketCore::disconnect`]).
    links: std::sync::Mutex<std::collections::HashMap<PeerId, CancellationToken>>,
}

impl SocketCore {
    pub(crate) fn new(
        socket_type: SocketType,
        options: Options,
        metrics: SocketMetrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            options: options.sanitized(),
            socket_type,
            metrics,
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            room: Room::default(),
            next_peer: AtomicU64::new(1),
            peers: AtomicUsize::new(0),
            links: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// Cuts the connection of `peer`, counted as a disconnect for
    /// `reason`; false when it is already gone.
    pub(crate) fn disconnect(&self, peer: PeerId, reason: &'static str) -> bool {
        let link = self
            .links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&peer);
        match link {
            Some(cancel) => {
                cancel.cancel();
                self.metrics.disconnect(reason);
                true
            }
            None => false,
        }
    }

    /// Peers past the handshake now.
    pub(crate) fn peer_count(&self) -> usize {
        self.peers.load(Ordering::Relaxed)
    }

    /// Waits until at least `want` peers are past the handshake, or until
    /// `timeout`; returns whether they are. Woken by every change of the
    /// peer set, not polled.
    pub(crate) async fn wait_for_peers(&self, want: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let wait = self.room.wait();
            if self.peer_count() >= want {
                return true;
            }
            if tokio::time::timeout_at(deadline, wait.until_signalled())
                .await
                .is_err()
            {
                return self.peer_count() >= want;
            }
        }
    }

    /// Waits until `drained()` holds (checked after every write), or until
    /// `timeout`; returns whether it held.
    pub(crate) async fn flush(&self, timeout: Duration, drained: impl Fn() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let wait = self.room.wait();
            if drained() {
                return true;
            }
            if tokio::time::timeout_at(deadline, wait.until_signalled())
                .await
                .is_err()
            {
                return drained();
            }
        }
    }

    /// Cancels every task of the socket and waits for them to end.
    pub(crate) async fn close(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    fn handshake_config(&self) -> HandshakeConfig {
        HandshakeConfig {
            socket_type: self.socket_type,
            identity: self.options.identity.clone(),
            mechanism: self.options.mechanism.clone(),
            limits: self.options.limits.clone(),
        }
    }
}

/// What a role gives a freshly attached connection.
pub(crate) struct Attached<P> {
    /// The role's per-connection state, handed back to the hooks.
    pub(crate) state: P,
    /// The peer's outbound queue, drained by the writer.
    pub(crate) queue: Option<QueueRx>,
    /// SUB: the wanted subscriptions, kept in sync with the peer.
    pub(crate) subscriptions: Option<Arc<SubscriptionSet>>,
}

/// Identity of a connection as the role sees it.
#[derive(Debug)]
pub(crate) struct PeerLink<'a> {
    pub(crate) id: PeerId,
    /// Cancels this connection alone (e.g. a slow subscriber).
    pub(crate) cancel: CancellationToken,
    pub(crate) info: &'a PeerInfo,
    /// The peer's address, when the OS still knows it.
    pub(crate) addr: Option<std::net::SocketAddr>,
}

/// Role-specific behaviour of a connection.
pub(crate) trait Role: Send + Sync + 'static {
    /// Per-connection state.
    type Peer: Send + 'static;

    /// Registers a peer that completed its handshake; `Err(reason)` refuses
    /// it (counted in `connections_rejected_total{reason}`).
    fn attach(self: &Arc<Self>, link: PeerLink<'_>) -> Result<Attached<Self::Peer>, &'static str>;

    /// Takes a batch of decoded messages (drains `msgs`); may wait, which
    /// stops this connection's reader (backpressure).
    fn deliver(
        &self,
        peer: &mut Self::Peer,
        msgs: &mut Vec<Multipart>,
    ) -> impl Future<Output = Result<(), Stop>> + Send;

    /// SUBSCRIBE / CANCEL commands (the only commands a role sees).
    fn command(&self, _peer: &mut Self::Peer, _cmd: Command) -> Result<(), Stop> {
        Ok(())
    }

    /// The connection ended; `unsent` are messages taken from its queue that
    /// were not (completely) written.
    fn detach(self: &Arc<Self>, peer: Self::Peer, unsent: Vec<Queued>);
}

/// How a connection ended, for the connect loop's backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The handshake did not complete.
    HandshakeFailed,
    /// The peer was attached, then the connection ended.
    Established,
}

/// Where the graceful close of a dropped connection runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Linger {
    /// In the connection's task: an accepted connection keeps its
    /// `max_connections` slot until it is really closed.
    Inline,
    /// In a task of its own: a connecting socket reconnects at once.
    Detached,
}

/// Runs one connection to its end.
pub(crate) async fn run<R: Role>(
    mut stream: TcpStream,
    core: Arc<SocketCore>,
    role: Arc<R>,
    closing: Linger,
) -> Outcome {
    let _ = stream.set_nodelay(true);
    let addr = stream.peer_addr().ok();
    let cancel = core.cancel.child_token();
    let hs = tokio::select! {
        _ = cancel.cancelled() => return Outcome::HandshakeFailed,
        r = timeout(core.options.handshake_timeout, handshake(&mut stream, &core)) => r,
    };
    let (info, leftover, session) = match hs {
        Ok(Ok(done)) => done,
        Ok(Err(HandshakeFailure::Rejected(e))) => {
            tracing::debug!(socket = core.metrics.name(), error = %e, "zmtp handshake failed");
            core.metrics.handshake_failure(e.reason());
            return Outcome::HandshakeFailed;
        }
        Ok(Err(HandshakeFailure::Io(e))) => {
            tracing::debug!(socket = core.metrics.name(), error = %e, "zmtp handshake i/o error");
            core.metrics.handshake_failure("io");
            return Outcome::HandshakeFailed;
        }
        Err(_elapsed) => {
            core.metrics.handshake_timeout.inc();
            return Outcome::HandshakeFailed;
        }
    };
    let id = PeerId(core.next_peer.fetch_add(1, Ordering::Relaxed));
    let link = PeerLink {
        id,
        cancel: cancel.clone(),
        info: &info,
        addr,
    };
    let attached = match role.attach(link) {
        Ok(a) => a,
        Err(reason) => {
            core.metrics.rejected(reason);
            return Outcome::HandshakeFailed;
        }
    };
    core.peers.fetch_add(1, Ordering::Relaxed);
    core.metrics.peers.inc();
    core.links
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(id, cancel.clone());
    core.room.changed();
    let Attached {
        mut state,
        queue,
        subscriptions,
    } = attached;
    let heartbeat = (info.minor_version >= 1 && !core.options.heartbeat_interval.is_zero())
        .then(|| io::Heartbeat::new(&core.options));
    let (ctrl_tx, ctrl_rx) = tokio::sync::mpsc::channel(CONTROL_QUEUE);
    let (sealer, opener) = match session {
        Some(Session { sealer, opener }) => (Some(sealer), Some(opener)),
        None => (None, None),
    };
    let mut writer = io::Writer::new(
        &core,
        queue,
        ctrl_rx,
        subscriptions.map(|s| (s, info.minor_version >= 1)),
        heartbeat.clone(),
        sealer,
    );
    let limits = core.options.limits.clone();
    // The decoder is chosen once here; the reader is monomorphised for it.
    let end = match opener {
        None => {
            let reader = io::Reader::new(
                &core,
                leftover,
                ctrl_tx,
                heartbeat.clone(),
                Decoder::new(limits),
            );
            traffic(
                &mut stream,
                &cancel,
                heartbeat,
                reader,
                &mut writer,
                &*role,
                &mut state,
            )
            .await
        }
        Some(opener) => {
            let reader = io::Reader::new(
                &core,
                leftover,
                ctrl_tx,
                heartbeat.clone(),
                CurveDecoder::new(limits, opener),
            );
            traffic(
                &mut stream,
                &cancel,
                heartbeat,
                reader,
                &mut writer,
                &*role,
                &mut state,
            )
            .await
        }
    };
    match end {
        io::End::Cancelled => {}
        io::End::Protocol(reason) => {
            core.metrics.protocol_error(reason);
            core.metrics.disconnect("protocol_error");
        }
        io::End::Disconnect(reason) => core.metrics.disconnect(reason),
    }
    let unsent = writer.into_unsent();
    role.detach(state, unsent);
    core.links
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&id);
    core.peers.fetch_sub(1, Ordering::Relaxed);
    core.metrics.peers.dec();
    core.room.changed();
    if !core.cancel.is_cancelled() {
        match closing {
            Linger::Inline => linger(stream, core.cancel.clone()).await,
            Linger::Detached => {
                core.tracker.spawn(linger(stream, core.cancel.clone()));
            }
        }
    }
    Outcome::Established
}

/// Runs the reader and the writer (and the heartbeat watchdog) until one of
/// them ends the connection; the reader is dropped on return.
async fn traffic<R: Role, D: Decode>(
    stream: &mut TcpStream,
    cancel: &CancellationToken,
    heartbeat: Option<io::Heartbeat>,
    mut reader: io::Reader<D>,
    writer: &mut io::Writer,
    role: &R,
    state: &mut R::Peer,
) -> io::End {
    let (rd, wr) = stream.split();
    // The watchdog runs beside the writer: a writer blocked on a peer whose
    // TCP window stays closed must not keep that dead peer alive.
    tokio::select! {
        biased;
        _ = cancel.cancelled() => io::End::Cancelled,
        end = io::watchdog(heartbeat) => end,
        end = reader.run(rd, role, state) => end,
        end = writer.run(wr) => end,
    }
}

/// Most time a dropped connection is drained before it is closed.
const LINGER: Duration = Duration::from_secs(5);
/// Most bytes read and discarded while draining.
const LINGER_BYTES: usize = 1 << 20;

/// Closes a dropped connection gracefully: FIN after the data already in
/// the kernel's send buffer, then reads and discards what the peer still
/// sends (bounded in time and bytes) until it closes too. Closing at once
/// while the peer still sends (a PONG, say) would make the kernel answer
/// with RST, and the peer would lose the messages it had not read yet.
async fn linger(mut stream: TcpStream, cancel: CancellationToken) {
    let drain = async {
        if stream.shutdown().await.is_err() {
            return;
        }
        let mut buf = [0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    };
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = timeout(LINGER, drain) => {}
    }
}

/// Capacity of the per-connection control queue (PONG replies); a peer that
/// floods PINGs faster than we write loses PONGs, nothing else.
const CONTROL_QUEUE: usize = 16;

enum HandshakeFailure {
    Rejected(HandshakeError),
    Io(std::io::Error),
}

async fn handshake(
    stream: &mut TcpStream,
    core: &SocketCore,
) -> Result<(PeerInfo, BytesMut, Option<Session>), HandshakeFailure> {
    let mut out = BytesMut::with_capacity(64);
    let mut hs = Handshake::start(core.handshake_config(), &mut out);
    let mut input = BytesMut::with_capacity(64);
    loop {
        let step = hs.advance(&mut input, &mut out);
        if !out.is_empty() {
            // On a failure `out` may hold an ERROR command for the peer.
            let sent = stream.write_all(&out).await;
            out.clear();
            if let (Ok(_), Err(e)) = (&step, sent) {
                return Err(HandshakeFailure::Io(e));
            }
        }
        match step {
            Ok(Some(info)) => return Ok((info, input, hs.take_session())),
            Ok(None) => {}
            Err(e) => return Err(HandshakeFailure::Rejected(e)),
        }
        if input.capacity() - input.len() < 64 {
            // Doubling; the codec bounds a command to max_command_size.
            input.reserve(input.len().max(256));
        }
        match stream.read_buf(&mut input).await {
            Ok(0) => {
                return Err(HandshakeFailure::Io(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
            Ok(_) => {}
            Err(e) => return Err(HandshakeFailure::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests;
