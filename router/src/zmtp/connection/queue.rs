//! Per-peer outbound queue: a bounded lock-free channel (messages) plus an
//! atomic byte count (sum of frame bodies), and the socket-wide [`Room`]
//! signal that wakes producers waiting for space.
//!
//! The producer side never blocks: [`QueueTx::try_push`] either enqueues or
//! hands the message back, and the role decides (PUB drops and counts,
//! PUSH/DEALER try the next peer or wait on [`Room`], ROUTER waits). Bytes
//! are released by the writer only once they were written, so the byte
//! bound also covers the batch being written.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, mpsc};

use super::receipt::Token;
use crate::zmtp::frame::Multipart;

/// A message in a peer queue, with the [`Token`] of the receipt waiting
/// for it to be written, if one does.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) msg: Multipart,
    pub(crate) token: Option<Token>,
}

impl From<Multipart> for Queued {
    #[inline]
    fn from(msg: Multipart) -> Self {
        Self { msg, token: None }
    }
}

/// Why a push was refused; the message is handed back.
#[derive(Debug)]
pub(crate) enum PushError {
    /// The queue is at its message or byte high-water mark.
    Full(Queued),
    /// The connection is gone.
    Closed(Queued),
}

/// Sum of the frame body sizes of `frames`.
#[inline]
pub(crate) fn message_size(frames: &[bytes::Bytes]) -> usize {
    frames.iter().map(|f| f.len()).sum()
}

/// Producer side of a peer queue (held by the role's peer table).
#[derive(Debug)]
pub(crate) struct QueueTx {
    tx: mpsc::Sender<Queued>,
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// Consumer side of a peer queue (held by the connection's writer).
#[derive(Debug)]
pub(crate) struct QueueRx {
    pub(crate) rx: mpsc::Receiver<Queued>,
    pub(crate) bytes: Arc<AtomicUsize>,
}

/// A bounded queue of `max_msgs` messages and `max_bytes` bytes. One
/// message larger than `max_bytes` is accepted when the queue holds no
/// bytes, so it can always make progress.
pub(crate) fn peer_queue(max_msgs: usize, max_bytes: usize) -> (QueueTx, QueueRx) {
    let (tx, rx) = mpsc::channel(max_msgs.max(1));
    let bytes = Arc::new(AtomicUsize::new(0));
    (
        QueueTx {
            tx,
            bytes: bytes.clone(),
            max_bytes,
        },
        QueueRx { rx, bytes },
    )
}

impl QueueTx {
    /// Enqueues `msg` if there is room in messages and bytes.
    #[inline]
    pub(crate) fn try_push(&self, item: impl Into<Queued>) -> Result<(), PushError> {
        let msg = item.into();
        let size = message_size(&msg.msg);
        // Count before sending so the writer's release (after the write) can
        // never run ahead of this add.
        let held = self.bytes.fetch_add(size, Ordering::Relaxed);
        if held > 0 && held + size > self.max_bytes {
            self.bytes.fetch_sub(size, Ordering::Relaxed);
            return Err(PushError::Full(msg));
        }
        match self.tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.bytes.fetch_sub(size, Ordering::Relaxed);
                Err(match e {
                    mpsc::error::TrySendError::Full(m) => PushError::Full(m),
                    mpsc::error::TrySendError::Closed(m) => PushError::Closed(m),
                })
            }
        }
    }
}

impl QueueTx {
    /// Whether everything queued was written to the kernel (or the
    /// connection is gone).
    pub(crate) fn is_drained(&self) -> bool {
        self.tx.is_closed()
            || (self.tx.capacity() == self.tx.max_capacity()
                && self.bytes.load(Ordering::Relaxed) == 0)
    }
}

/// Socket-wide "a queue has room again / the peer set changed" signal.
/// Writers only pay for a notification when someone waits.
#[derive(Debug, Default)]
pub(crate) struct Room {
    notify: Notify,
    waiters: AtomicUsize,
}

impl Room {
    /// Wakes every waiter (after a writer drained a batch).
    #[inline]
    pub(crate) fn freed(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// Wakes every waiter unconditionally (peer set changed).
    pub(crate) fn changed(&self) {
        self.notify.notify_waiters();
    }

    /// A future resolving on the next [`freed`](Self::freed) or
    /// [`changed`](Self::changed) that happens after this call; create it
    /// *before* re-checking the condition you wait for.
    pub(crate) fn wait(&self) -> RoomWait<'_> {
        let notified = self.notify.notified();
        self.waiters.fetch_add(1, Ordering::SeqCst);
        RoomWait {
            room: self,
            notified: Box::pin(notified),
        }
    }
}

/// A registered wait on [`Room`]; deregisters on drop.
pub(crate) struct RoomWait<'a> {
    room: &'a Room,
    notified: std::pin::Pin<Box<tokio::sync::futures::Notified<'a>>>,
}

impl RoomWait<'_> {
    /// Waits for the signal.
    pub(crate) async fn until_signalled(mut self) {
        self.notified.as_mut().await;
    }
}

impl Drop for RoomWait<'_> {
    fn drop(&mut self) {
        self.room.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use smallvec::smallvec;

    use super::*;

    fn msg(n: usize) -> Multipart {
        smallvec![Bytes::from(vec![0u8; n])]
    }

    #[test]
    fn bounded_in_messages_and_bytes() {
        let (tx, mut rx) = peer_queue(3, 100);
        assert!(tx.try_push(msg(60)).is_ok());
        assert!(matches!(tx.try_push(msg(60)), Err(PushError::Full(_))));
        assert!(tx.try_push(msg(40)).is_ok());
        assert!(tx.try_push(msg(0)).is_ok());
        assert!(matches!(tx.try_push(msg(0)), Err(PushError::Full(_))));
        assert_eq!(rx.bytes.load(Ordering::Relaxed), 100);
        assert!(rx.rx.try_recv().is_ok());
        drop(rx);
        assert!(matches!(tx.try_push(msg(0)), Err(PushError::Closed(_))));
    }

    #[test]
    fn oversized_message_fits_an_empty_queue() {
        let (tx, _rx) = peer_queue(3, 10);
        assert!(tx.try_push(msg(50)).is_ok());
        assert!(matches!(tx.try_push(msg(1)), Err(PushError::Full(_))));
    }
}
