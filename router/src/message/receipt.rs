//! Receipts: how an input that acknowledges to its peer (a JetStream
//! consumer) learns when the router is done with a message.
//!
//! The input puts a [`Receipt`] on each message it offers. Every copy of
//! the message (one per route it is admitted to, the copies outputs keep
//! while they write) shares it, and it settles once, when the last copy is
//! gone: [`Settlement::Done`] unless some holder marked it
//! [`failed`](Receipt::fail) first. The pipeline marks a copy failed where
//! it drops it for a reason that another try could get past: a full
//! queue, an output that failed or had nobody to take it, a shutdown. A
//! copy delivered, filtered by a plugin, dead-lettered or refused for good
//! (too large) settles as done.
//!
//! A durable route keeps no receipt: its copy on disk is the router's
//! promise, and an input that waits for the sync
//! ([`crate::ingress::Wait::Durable`]) holds its own copy of the receipt
//! until the offer answered, so the receipt cannot settle before that.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// How a message's journey through the router ended, for its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Every copy was delivered, or ended for good (filtered, dead-lettered,
    /// refused as too large, matched no route): the input may acknowledge.
    Done,
    /// A copy was dropped for this reason (a route's drop reason label, or
    /// `refused` when an offer refused it): the input should have the
    /// message sent again.
    Failed(&'static str),
}

/// What a settled receipt calls, once.
type Settle = Box<dyn FnOnce(Settlement) + Send>;

struct Shared {
    failed: OnceLock<&'static str>,
    settle: Mutex<Option<Settle>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let settle = self
            .settle
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(settle) = settle {
            settle(match self.failed.get() {
                Some(reason) => Settlement::Failed(reason),
                None => Settlement::Done,
            });
        }
    }
}

/// A message's receipt; cloning shares it. See the module docs.
#[derive(Clone)]
pub struct Receipt(Arc<Shared>);

impl Receipt {
    /// A receipt that calls `settle` once, as its last copy goes. `settle`
    /// runs wherever that happens (a route worker, a queue under its lock),
    /// so it must be quick and must not block: hand the outcome to a task.
    pub fn new(settle: impl FnOnce(Settlement) + Send + 'static) -> Self {
        Self(Arc::new(Shared {
            failed: OnceLock::new(),
            settle: Mutex::new(Some(Box::new(settle))),
        }))
    }

    /// Marks the message failed: it settles as [`Settlement::Failed`] with
    /// the first reason given, whatever the other copies do.
    pub fn fail(&self, reason: &'static str) {
        let _ = self.0.failed.set(reason);
    }

    /// The first failure marked, if any.
    pub fn failure(&self) -> Option<&'static str> {
        self.0.failed.get().copied()
    }
}

impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receipt")
            .field("failed", &self.failure())
            .finish_non_exhaustive()
    }
}

/// Two receipts are equal when they are the same receipt.
impl PartialEq for Receipt {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Receipt {}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    fn receipt() -> (Receipt, mpsc::Receiver<Settlement>) {
        let (tx, rx) = mpsc::channel();
        let r = Receipt::new(move |s| tx.send(s).expect("receiver alive"));
        (r, rx)
    }

    #[test]
    fn settles_once_when_the_last_copy_goes() {
        let (r, rx) = receipt();
        let copy = r.clone();
        drop(r);
        assert!(rx.try_recv().is_err(), "a copy is still held");
        drop(copy);
        assert_eq!(rx.try_recv(), Ok(Settlement::Done));
        assert!(rx.try_recv().is_err(), "once");
    }

    #[test]
    fn the_first_failure_wins_whatever_other_copies_do() {
        let (r, rx) = receipt();
        let copy = r.clone();
        copy.fail("queue_full");
        r.fail("no_subscriber");
        assert_eq!(r, copy);
        drop((r, copy));
        assert_eq!(rx.try_recv(), Ok(Settlement::Failed("queue_full")));
    }
}
