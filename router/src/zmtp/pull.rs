//! PULL side, facing PUSH producers.
//!
//! Semantics:
//! - Every peer's reader feeds one channel for the whole socket, bounded to
//!   `recv_hwm` messages and `recv_hwm_bytes` bytes. When it is full, readers **wait** instead of
//!   buffering: they stop reading, so the kernel's TCP window pushes back on
//!   the producers. Nothing is dropped inbound.
//! - A protocol violation (oversized frame or message, too many frames,
//!   malformed command...) closes that peer's connection only and is counted
//!   in `switchyard_zmtp_protocol_errors_total{socket,reason}`.
//! - [`PullSocket::recv_many`] takes up to `max` messages at once; use it in
//!   throughput-sensitive loops.
//!
//! `Inbox` is the shared inbound channel, also used by SUB and ROUTER.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

use super::connection::{
    Attached, PeerId, PeerLink, Received, Role, Room, SocketCore, Stop, message_size,
};
use super::frame::Multipart;
use super::handle::{Handle, Inbound, socket_methods};
use super::metrics::Metrics;
use super::options::Options;
use super::socket_type::SocketType;

/// The inbound side shared by a socket's readers: one channel bounded in
/// messages, plus an atomic count of the bytes it holds, bounded too.
#[derive(Debug)]
pub(crate) struct Inbox {
    tx: mpsc::Sender<Received>,
    /// Permits reserved at once (a slice of the capacity, so readers
    /// pipeline instead of waiting for the channel to empty).
    chunk: usize,
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    room: Arc<Room>,
}

/// The consuming end of an [`Inbox`]: releases bytes as messages leave.
#[derive(Debug)]
pub(crate) struct InboxRx {
    rx: mpsc::Receiver<Received>,
    bytes: Arc<AtomicUsize>,
    room: Arc<Room>,
}

impl InboxRx {
    fn release(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::Relaxed);
        self.room.freed();
    }

    /// The next message; `None` once every sender is gone.
    pub(crate) async fn recv(&mut self) -> Option<Received> {
        let r = self.rx.recv().await?;
        self.release(message_size(&r.frames));
        Some(r)
    }

    /// Refuses further messages; those already buffered can still be
    /// received, then `recv` returns `None`.
    pub(crate) fn close(&mut self) {
        self.rx.close();
    }

    /// Appends up to `max` messages to `buf`; 0 once every sender is gone.
    pub(crate) async fn recv_many(&mut self, buf: &mut Vec<Received>, max: usize) -> usize {
        let start = buf.len();
        let n = self.rx.recv_many(buf, max.max(1)).await;
        let size = buf[start..].iter().map(|r| message_size(&r.frames)).sum();
        self.release(size);
        n
    }
}

impl Inbox {
    /// An inbox of `capacity` messages and `max_bytes` bytes (one bigger
    /// message is let in when it is empty), and its receiving end.
    pub(crate) fn new(capacity: usize, max_bytes: usize) -> (Self, InboxRx) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let chunk = (capacity / 4).clamp(1, 256);
        let bytes = Arc::new(AtomicUsize::new(0));
        let room = Arc::new(Room::default());
        (
            Self {
                tx,
                chunk,
                bytes: bytes.clone(),
                max_bytes,
                room: room.clone(),
            },
            InboxRx { rx, bytes, room },
        )
    }

    /// Waits until `size` more bytes fit.
    async fn room_for(&self, size: usize) {
        loop {
            let fits = || {
                let held = self.bytes.load(Ordering::Relaxed);
                held == 0 || held + size <= self.max_bytes
            };
            if fits() {
                return;
            }
            let wait = self.room.wait();
            if fits() {
                return;
            }
            wait.until_signalled().await;
        }
    }

    /// Moves `msgs` into the channel, waiting for room in messages and bytes
    /// (backpressure).
    pub(crate) async fn deliver(
        &self,
        peer: PeerId,
        msgs: &mut Vec<Multipart>,
    ) -> Result<(), Stop> {
        let mut rest = &mut msgs[..];
        while !rest.is_empty() {
            // A chunk: at most `chunk` messages and a quarter of the bytes.
            let mut k = 0;
            let mut size = 0;
            while k < rest.len().min(self.chunk) {
                let s = message_size(&rest[k]);
                if k > 0 && size + s > self.max_bytes / 4 {
                    break;
                }
                size += s;
                k += 1;
            }
            self.room_for(size).await;
            let permits = self
                .tx
                .reserve_many(k)
                .await
                .map_err(|_| Stop::SocketClosed)?;
            self.bytes.fetch_add(size, Ordering::Relaxed);
            let (now, later) = rest.split_at_mut(k);
            for (permit, frames) in permits.zip(now.iter_mut()) {
                permit.send(Received {
                    peer,
                    frames: std::mem::take(frames),
                });
            }
            rest = later;
        }
        msgs.clear();
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
    inbound: Inbound<PullRole>,
}

impl PullSocket {
    /// A PULL socket named `name` (its metrics `socket` label).
    pub fn new(name: &str, options: Options, metrics: &Metrics) -> Self {
        let core = SocketCore::new(SocketType::Pull, options, metrics.socket(name));
        let (inbox, rx) = Inbox::new(core.options.recv_hwm, core.options.recv_hwm_bytes);
        let role = Arc::new(PullRole { inbox });
        let handle = Handle { core, role };
        Self {
            inbound: Inbound { handle, rx },
        }
    }

    /// Peers connected past the handshake.
    pub fn peer_count(&self) -> usize {
        self.inbound.handle.peer_count()
    }

    /// Stops listening, closes every connection and waits for the socket's
    /// tasks to end. Messages already received stay readable.
    pub async fn close(&self) {
        self.inbound.handle.close().await;
    }
}

socket_methods!(PullSocket, inbound.handle, inbound: inbound);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zmtp::connection::testing::{metrics, msg, within};
    use crate::zmtp::push::PushSocket;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inbound_bytes_are_bounded_and_nothing_is_lost() {
        let (_reg, m) = metrics();
        let o = Options {
            recv_hwm_bytes: 256 * 1024,
            ..Options::default()
        };
        let mut pull = PullSocket::new("in", o.clone(), &m);
        let addr = pull.bind("tcp://127.0.0.1:0").await.expect("bind");
        let push = std::sync::Arc::new(PushSocket::new("out", o, &m));
        push.connect(&format!("tcp://{addr}")).expect("connect");
        let p = push.clone();
        let producer = tokio::spawn(async move {
            let body = vec![5u8; 100 * 1024];
            for i in 0u32..200 {
                p.send(msg(&[&i.to_be_bytes(), &body])).await.expect("send");
            }
        });
        let mut buf = Vec::new();
        let mut next = 0u32;
        while next < 200 {
            // Wait until readers stalled on the byte bound, then check it.
            tokio::task::yield_now().await;
            let held = pull.inbound.rx.bytes.load(Ordering::Relaxed);
            assert!(
                held <= 256 * 1024 + 100 * 1024 + 4,
                "inbox holds {held} bytes"
            );
            within("recv", pull.recv_many(&mut buf, 3)).await;
            for r in buf.drain(..) {
                assert_eq!(&r.frames[0][..], &next.to_be_bytes());
                next += 1;
            }
        }
        within("producer", producer).await.expect("producer");
        assert_eq!(pull.inbound.rx.bytes.load(Ordering::Relaxed), 0);
    }
}
