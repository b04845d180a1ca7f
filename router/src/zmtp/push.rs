//! PUSH side, facing PULL workers; and `Balancer`, the round-robin over
//! peer queues that DEALER shares.
//!
//! Semantics:
//! - [`PushSocket::send`] puts the message in the queue of the next peer
//!   (round-robin) that has room (`send_hwm` messages and `send_hwm_bytes`
//!   bytes per peer). A full peer is skipped.
//! - When **every** peer is full, `send` **waits** until one has room
//!   (backpressure); nothing is dropped.
//! - With **no** peer connected, `send` waits up to `send_timeout` for one,
//!   then returns [`SendError::NoPeers`] (the message is not sent and not
//!   counted: the caller decides).
//! - When a peer disconnects, the messages still in its queue (and any not
//!   completely written) are sent again to the other peers, waiting for one
//!   up to `send_timeout`; the ones that still find no peer are counted in
//!   `dropped_total{reason="peer_disconnected"}`. Messages fully handed to
//!   the kernel before the peer died cannot be recovered (as with libzmq).
//! - The hot path takes no lock: the peer list is an `ArcSwap` snapshot and
//!   each queue is a lock-free bounded channel with an atomic byte count.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::time::{Instant, timeout_at};

use super::connection::{
    Attached, PeerId, PeerLink, PushError, QueueTx, Queued, Role, SendError, SocketCore, Stop,
    Token, peer_queue,
};
use super::frame::Multipart;
use super::handle::{Handle, socket_methods};
use super::metrics::Metrics;
use super::options::Options;
use super::socket_type::SocketType;

#[derive(Debug)]
struct Target {
    id: PeerId,
    queue: QueueTx,
}

/// Round-robin over the peers with room; lock-free on the send path.
#[derive(Debug, Default)]
pub(crate) struct Balancer {
    snapshot: ArcSwap<Vec<Arc<Target>>>,
    table: Mutex<Vec<Arc<Target>>>,
    next: AtomicUsize,
}

impl Balancer {
    fn update(&self, f: impl FnOnce(&mut Vec<Arc<Target>>)) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut table);
        self.snapshot.store(Arc::new(table.clone()));
    }

    /// Gives a new peer its queue (`send_hwm`/`send_hwm_bytes`), adds it,
    /// and wakes senders waiting for room.
    pub(crate) fn attach(&self, core: &SocketCore, id: PeerId) -> Attached<PeerId> {
        let o = &core.options;
        let (queue, rx) = peer_queue(o.send_hwm, o.send_hwm_bytes);
        self.update(|t| t.push(Arc::new(Target { id, queue })));
        core.room.changed();
        Attached {
            state: id,
            queue: Some(rx),
            subscriptions: None,
        }
    }

    /// Whether every peer's queue was written out.
    pub(crate) fn is_drained(&self) -> bool {
        self.snapshot.load().iter().all(|p| p.queue.is_drained())
    }

    /// Removes a peer.
    pub(crate) fn remove(&self, id: PeerId) {
        self.update(|t| t.retain(|p| p.id != id));
    }

    /// Tries each peer once, starting at the round-robin position.
    /// `pick(peer)` runs before each attempt (so a caller can record where
    /// the message goes before the peer can possibly answer it).
    #[inline]
    // The refused message comes back by value, on the send path: boxing it
    // would allocate for every full peer.
    #[allow(clippy::result_large_err)]
    fn try_send(&self, mut msg: Queued, pick: &impl Fn(PeerId)) -> Result<PeerId, (bool, Queued)> {
        let peers = self.snapshot.load();
        let n = peers.len();
        if n == 0 {
            return Err((false, msg));
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let peer = &peers[(start + i) % n];
            pick(peer.id);
            match peer.queue.try_push(msg) {
                Ok(()) => return Ok(peer.id),
                Err(PushError::Full(m) | PushError::Closed(m)) => msg = m,
            }
        }
        Err((true, msg))
    }

    /// Sends `msg` to a peer with room: waits while all are full; with no
    /// peer, waits up to `send_timeout` for one. Returns the chosen peer;
    /// `pick` is told each peer tried, before the message is queued to it.
    /// A message not queued is dropped with its token (counted lost).
    pub(crate) async fn send(
        &self,
        core: &SocketCore,
        mut msg: Queued,
        pick: impl Fn(PeerId),
    ) -> Result<PeerId, SendError> {
        if msg.msg.is_empty() {
            return Err(SendError::EmptyMessage);
        }
        let mut no_peer_since: Option<Instant> = None;
        loop {
            if core.cancel.is_cancelled() {
                return Err(SendError::Closed);
            }
            // Fast path without registering a waiter.
            match self.try_send(msg, &pick) {
                Ok(peer) => return Ok(peer),
                Err((_, m)) => msg = m,
            }
            // Register, then re-check, so a wake-up in between is kept.
            let wait = core.room.wait();
            let have_peers = match self.try_send(msg, &pick) {
                Ok(peer) => return Ok(peer),
                Err((have_peers, m)) => {
                    msg = m;
                    have_peers
                }
            };
            if have_peers {
                no_peer_since = None;
                tokio::select! {
                    _ = core.cancel.cancelled() => return Err(SendError::Closed),
                    () = wait.until_signalled() => {}
                }
            } else {
                let since = *no_peer_since.get_or_insert_with(Instant::now);
                let deadline = since + core.options.send_timeout;
                tokio::select! {
                    _ = core.cancel.cancelled() => return Err(SendError::Closed),
                    r = timeout_at(deadline, wait.until_signalled()) => {
                        if r.is_err() {
                            return Err(SendError::NoPeers(core.options.send_timeout));
                        }
                    }
                }
            }
        }
    }

    /// Sends `unsent` (taken back from a disconnected peer) to the other
    /// peers in a tracked task, each with its token; what finds no peer is
    /// counted as dropped (and its token as lost). `pick` is told each peer
    /// tried for a message, before it is queued.
    pub(crate) fn resend(
        self: &Arc<Self>,
        core: &Arc<SocketCore>,
        unsent: Vec<Queued>,
        pick: impl Fn(&Multipart, PeerId) + Send + Sync + 'static,
    ) {
        if unsent.is_empty() {
            return;
        }
        let (lb, core2) = (self.clone(), core.clone());
        core.tracker.spawn(async move {
            let total = unsent.len();
            for (i, msg) in unsent.into_iter().enumerate() {
                let key = msg.msg.clone();
                match lb.send(&core2, msg, |peer| pick(&key, peer)).await {
                    Ok(_) => {}
                    Err(_) => {
                        core2
                            .metrics
                            .dropped_peer_disconnected
                            .inc_by((total - i) as u64);
                        // Once one message found no peer within the timeout
                        // (or the socket closed), the rest would not either.
                        return;
                    }
                }
            }
        });
    }
}

#[derive(Debug)]
struct PushRole {
    core: Arc<SocketCore>,
    balancer: Arc<Balancer>,
}

impl Role for PushRole {
    type Peer = PeerId;

    fn attach(self: &Arc<Self>, link: PeerLink<'_>) -> Result<Attached<PeerId>, &'static str> {
        Ok(self.balancer.attach(&self.core, link.id))
    }

    async fn deliver(&self, _peer: &mut PeerId, msgs: &mut Vec<Multipart>) -> Result<(), Stop> {
        // PULL peers never send messages (RFC 30).
        msgs.clear();
        Err(Stop::Protocol("unexpected_message"))
    }

    fn detach(self: &Arc<Self>, peer: PeerId, unsent: Vec<Queued>) {
        self.balancer.remove(peer);
        self.balancer.resend(&self.core, unsent, |_, _| {});
    }
}

/// A PUSH socket: load-balances messages over PULL peers, with backpressure.
#[derive(Debug)]
pub struct PushSocket {
    handle: Handle<PushRole>,
}

impl PushSocket {
    /// A PUSH socket named `name` (its metrics `socket` label).
    pub fn new(name: &str, options: Options, metrics: &Metrics) -> Self {
        let core = SocketCore::new(SocketType::Push, options, metrics.socket(name));
        let role = Arc::new(PushRole {
            core: core.clone(),
            balancer: Arc::new(Balancer::default()),
        });
        Self {
            handle: Handle { core, role },
        }
    }

    /// Sends `frames` to the next peer with room.
    ///
    /// # Errors
    /// [`SendError::NoPeers`] when no peer connected within `send_timeout`;
    /// [`SendError::Closed`] after [`close`](Self::close);
    /// [`SendError::EmptyMessage`] for a message without frames.
    ///
    /// # Cancel safety
    /// Cancelling drops the message if it was not queued yet.
    pub async fn send(&self, frames: Multipart) -> Result<(), SendError> {
        self.send_queued(frames.into()).await
    }

    /// [`send`](Self::send) with `token`, which is marked written once a
    /// worker's socket took every byte of the message, and counts it lost
    /// if the message is dropped instead (not sent, or its worker gone and
    /// no other one taking it within `send_timeout`).
    ///
    /// # Errors
    /// As [`send`](Self::send); the token then counts the message lost.
    pub async fn send_tracked(&self, frames: Multipart, token: Token) -> Result<(), SendError> {
        self.send_queued(Queued {
            msg: frames,
            token: Some(token),
        })
        .await
    }

    async fn send_queued(&self, msg: Queued) -> Result<(), SendError> {
        let h = &self.handle;
        h.role.balancer.send(&h.core, msg, |_| {}).await.map(|_| ())
    }

    /// Waits until every message queued so far was written to the kernel, or
    /// until `timeout`; returns whether everything was written. Use before
    /// [`close`](Self::close) for a graceful shutdown.
    pub async fn flush(&self, timeout: std::time::Duration) -> bool {
        let lb = &self.handle.role.balancer;
        self.handle.flush(timeout, || lb.is_drained()).await
    }

    /// Workers connected past the handshake.
    pub fn peer_count(&self) -> usize {
        self.handle.peer_count()
    }

    /// Closes every connection and waits for the socket's tasks to end.
    /// Messages still queued are dropped and counted
    /// (`dropped_total{reason="peer_disconnected"}`); [`flush`](Self::flush)
    /// first to avoid that.
    pub async fn close(&self) {
        self.handle.close().await;
    }
}

socket_methods!(PushSocket, handle);

#[cfg(test)]
mod tests;
