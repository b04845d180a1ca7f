//! The inbound channel of a socket's readers, shared by the roles that
//! receive (PULL, SUB, ROUTER): bounded in messages and in bytes, so a full
//! one makes readers wait (TCP pushes back on the peers) rather than buffer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

use super::connection::{PeerId, PeerLink, Received, Room, Stop, message_size};
use super::frame::Multipart;

/// Where the messages of one connection come from: the connection, and
/// the PLAIN user it authenticated as (kept per connection, handed on with
/// each message).
#[derive(Clone, Debug)]
pub(crate) struct Origin {
    pub(crate) id: PeerId,
    pub(crate) user: Option<Arc<str>>,
}

impl Origin {
    /// The origin of what arrives on `link`.
    pub(crate) fn of(link: &PeerLink<'_>) -> Self {
        Self {
            id: link.id,
            user: link.info.user.as_deref().map(Arc::from),
        }
    }
}

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

    /// Bytes of the messages waiting.
    #[cfg(test)]
    pub(crate) fn bytes_held(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
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

    /// Moves `msgs` from `origin` into the channel, waiting for room in
    /// messages and bytes (backpressure).
    pub(crate) async fn deliver(
        &self,
        origin: &Origin,
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
                    peer: origin.id,
                    user: origin.user.clone(),
                    frames: std::mem::take(frames),
                });
            }
            rest = later;
        }
        msgs.clear();
        Ok(())
    }
}
