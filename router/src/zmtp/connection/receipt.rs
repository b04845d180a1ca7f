//! Write receipts: whether messages handed to peer queues reached a peer's
//! socket.
//!
//! A sender that must know (a durable route releases a batch from disk only
//! once its output has written it) takes one [`Receipt`] per batch and
//! queues each message with a [`Token`] of it. The connection's writer
//! marks a token written once the kernel accepted every byte of its
//! message; a token dropped any other way (the queue full, the peer gone
//! and no other peer taking it, the socket closed) counts its message as
//! lost. [`Receipt::settled`] resolves once every token was one or the
//! other, so nothing the receipt covers is left only in the router's memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Inner {
    outstanding: AtomicUsize,
    /// Positions of the messages whose token was dropped unwritten.
    lost: Mutex<Vec<u32>>,
    settled: Notify,
}

/// Tracks the messages of one batch through the peer queues.
#[derive(Debug, Clone, Default)]
pub struct Receipt(Arc<Inner>);

/// One message's share of a [`Receipt`], queued beside it.
#[derive(Debug)]
pub struct Token {
    inner: Arc<Inner>,
    index: u32,
    written: bool,
}

impl Receipt {
    /// A receipt covering no message yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A token for the message at `index` of the batch. A message queued
    /// to several peers (PUB fan-out) takes one token per peer.
    pub fn token(&self, index: usize) -> Token {
        self.0.outstanding.fetch_add(1, Ordering::AcqRel);
        Token {
            inner: self.0.clone(),
            index: u32::try_from(index).unwrap_or(u32::MAX),
            written: false,
        }
    }

    /// Waits until every token was written or dropped; returns the
    /// positions of the messages with a token dropped unwritten, in order,
    /// each once.
    pub async fn settled(&self) -> Vec<u32> {
        loop {
            // Created before the check, the future receives a wake-up
            // (`notify_waiters`) from a token settling in between.
            let notified = self.0.settled.notified();
            if self.0.outstanding.load(Ordering::Acquire) == 0 {
                break;
            }
            notified.await;
        }
        let mut lost = std::mem::take(&mut *self.0.lost.lock().unwrap_or_else(|p| p.into_inner()));
        lost.sort_unstable();
        lost.dedup();
        lost
    }
}

impl Token {
    /// Its message was written to a peer's socket.
    pub(crate) fn written(mut self) {
        self.written = true;
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        if !self.written {
            self.inner
                .lost
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(self.index);
        }
        if self.inner.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.settled.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settles_once_every_token_is_written_or_dropped() {
        let receipt = Receipt::new();
        assert!(receipt.settled().await.is_empty());
        let (a, b, c) = (receipt.token(0), receipt.token(1), receipt.token(1));
        let waiting = tokio::spawn({
            let receipt = receipt.clone();
            async move { receipt.settled().await }
        });
        a.written();
        drop(b);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(c);
        assert_eq!(waiting.await.unwrap(), vec![1]);
    }

    #[tokio::test]
    async fn a_receipt_that_settled_midway_waits_for_later_tokens() {
        let receipt = Receipt::new();
        receipt.token(0).written();
        let later = receipt.token(1);
        let waiting = tokio::spawn({
            let receipt = receipt.clone();
            async move { receipt.settled().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        later.written();
        assert!(waiting.await.unwrap().is_empty());
    }
}
