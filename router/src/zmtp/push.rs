//! PUSH side, facing PULL workers; and [`Balancer`], the round-robin over
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

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::time::{Instant, timeout_at};

use super::connection::{
    Attached, PeerId, PeerLink, PushError, QueueTx, Role, SendError, SocketCore, Stop, peer_queue,
};
use super::endpoint::{self, EndpointError};
use super::frame::Multipart;
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

    /// Adds a peer and its queue.
    pub(crate) fn add(&self, id: PeerId, queue: QueueTx) {
        self.update(|t| t.push(Arc::new(Target { id, queue })));
    }

    /// Removes a peer.
    pub(crate) fn remove(&self, id: PeerId) {
        self.update(|t| t.retain(|p| p.id != id));
    }

    /// Tries each peer once, starting at the round-robin position.
    #[inline]
    fn try_send(&self, mut msg: Multipart) -> Result<PeerId, (bool, Multipart)> {
        let peers = self.snapshot.load();
        let n = peers.len();
        if n == 0 {
            return Err((false, msg));
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let peer = &peers[(start + i) % n];
            match peer.queue.try_push(msg) {
                Ok(()) => return Ok(peer.id),
                Err(PushError::Full(m) | PushError::Closed(m)) => msg = m,
            }
        }
        Err((true, msg))
    }

    /// Sends `msg` to a peer with room: waits while all are full; with no
    /// peer, waits up to `send_timeout` for one. Returns the chosen peer.
    pub(crate) async fn send(
        &self,
        core: &SocketCore,
        mut msg: Multipart,
    ) -> Result<PeerId, SendError> {
        if msg.is_empty() {
            return Err(SendError::EmptyMessage);
        }
        let mut no_peer_since: Option<Instant> = None;
        loop {
            if core.cancel.is_cancelled() {
                return Err(SendError::Closed);
            }
            // Register before re-checking, so a wake-up in between is kept.
            let wait = core.room.wait();
            let have_peers = match self.try_send(msg) {
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
    /// peers in a tracked task; what finds no peer is counted as dropped.
    /// `sent` is told where each message went.
    pub(crate) fn resend(
        self: &Arc<Self>,
        core: &Arc<SocketCore>,
        unsent: Vec<Multipart>,
        sent: impl Fn(&Multipart, PeerId) + Send + 'static,
    ) {
        if unsent.is_empty() {
            return;
        }
        let (lb, core2) = (self.clone(), core.clone());
        core.tracker.spawn(async move {
            let total = unsent.len();
            for (i, msg) in unsent.into_iter().enumerate() {
                let key = msg.clone();
                match lb.send(&core2, msg).await {
                    Ok(peer) => sent(&key, peer),
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
        let o = &self.core.options;
        let (tx, rx) = peer_queue(o.send_hwm, o.send_hwm_bytes);
        self.balancer.add(link.id, tx);
        self.core.room.changed();
        Ok(Attached {
            state: link.id,
            queue: Some(rx),
            subscriptions: None,
        })
    }

    async fn deliver(&self, _peer: &mut PeerId, msgs: &mut Vec<Multipart>) -> Result<(), Stop> {
        // PULL peers never send messages (RFC 30).
        msgs.clear();
        Err(Stop::Protocol("unexpected_message"))
    }

    fn detach(self: &Arc<Self>, peer: PeerId, unsent: Vec<Multipart>) {
        self.balancer.remove(peer);
        self.balancer.resend(&self.core, unsent, |_, _| {});
    }
}

/// A PUSH socket: load-balances messages over PULL peers, with backpressure.
#[derive(Debug)]
pub struct PushSocket {
    core: Arc<SocketCore>,
    role: Arc<PushRole>,
}

impl PushSocket {
    /// A PUSH socket named `name` (its metrics `socket` label).
    pub fn new(name: &str, options: Options, metrics: &Metrics) -> Self {
        let core = SocketCore::new(SocketType::Push, options, metrics.socket(name));
        let role = Arc::new(PushRole {
            core: core.clone(),
            balancer: Arc::new(Balancer::default()),
        });
        Self { core, role }
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
        self.role
            .balancer
            .send(&self.core, frames)
            .await
            .map(|_| ())
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

    /// Workers connected past the handshake.
    pub fn peer_count(&self) -> usize {
        self.core.peer_count()
    }

    /// Closes every connection (queued messages are not flushed) and waits
    /// for the socket's tasks to end.
    pub async fn close(&self) {
        self.core.close().await;
    }
}

impl Drop for PushSocket {
    fn drop(&mut self) {
        self.core.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::zmtp::connection::testutil::{eventually, metric, metrics, msg, within};
    use crate::zmtp::pull::PullSocket;

    fn opts() -> Options {
        Options::default()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn push_connects_to_bound_pull_and_keeps_order() {
        let (_reg, m) = metrics();
        let mut pull = PullSocket::new("in", opts(), &m);
        let addr = pull.bind("tcp://127.0.0.1:0").await.expect("bind");
        let push = PushSocket::new("out", opts(), &m);
        push.connect(&format!("tcp://{addr}")).expect("connect");
        for i in 0u32..2000 {
            let body = i.to_be_bytes();
            within("send", push.send(msg(&[b"topic", &body])))
                .await
                .expect("send");
        }
        let mut got = Vec::new();
        while got.len() < 2000 {
            within("recv", pull.recv_many(&mut got, 500)).await;
        }
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r.frames.len(), 2);
            assert_eq!(&r.frames[1][..], &(i as u32).to_be_bytes());
        }
        push.close().await;
        pull.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pull_connects_to_bound_push_with_large_frames() {
        let (_reg, m) = metrics();
        let push = PushSocket::new("out", opts(), &m);
        let addr = push.bind("tcp://127.0.0.1:0").await.expect("bind");
        let mut pull = PullSocket::new("in", opts(), &m);
        pull.connect(&format!("tcp://{addr}")).expect("connect");
        let big = vec![7u8; 300_000];
        for _ in 0..20 {
            within("send", push.send(msg(&[b"a", &big, b"z"])))
                .await
                .expect("send");
        }
        for _ in 0..20 {
            let r = within("recv", pull.recv()).await.expect("open");
            assert_eq!(r.frames.len(), 3);
            assert_eq!(r.frames[1].len(), big.len());
            assert!(r.frames[1].iter().all(|b| *b == 7));
            assert_eq!(&r.frames[2][..], b"z");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_peer_waits_send_timeout_then_errors() {
        let (_reg, m) = metrics();
        let o = Options {
            send_timeout: Duration::from_millis(50),
            ..opts()
        };
        let push = PushSocket::new("out", o, &m);
        let r = within("send", push.send(msg(&[b"x"]))).await;
        assert!(matches!(r, Err(SendError::NoPeers(_))), "{r:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn backpressure_loses_nothing_with_tiny_queues() {
        let (_reg, m) = metrics();
        let o = Options {
            send_hwm: 2,
            recv_hwm: 2,
            ..opts()
        };
        let mut pull = PullSocket::new("in", o.clone(), &m);
        let addr = pull.bind("tcp://127.0.0.1:0").await.expect("bind");
        let push = Arc::new(PushSocket::new("out", o, &m));
        push.connect(&format!("tcp://{addr}")).expect("connect");
        const N: u32 = 20_000;
        let p = push.clone();
        let producer = tokio::spawn(async move {
            for i in 0..N {
                p.send(msg(&[&i.to_be_bytes()])).await.expect("send");
            }
        });
        let mut next = 0u32;
        while next < N {
            let r = within("recv", pull.recv()).await.expect("open");
            assert_eq!(&r.frames[0][..], &next.to_be_bytes());
            next += 1;
            if next.is_multiple_of(1000) {
                tokio::task::yield_now().await;
            }
        }
        within("producer", producer).await.expect("producer ok");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn round_robins_over_workers() {
        let (_reg, m) = metrics();
        let push = PushSocket::new("out", opts(), &m);
        let addr = push.bind("tcp://127.0.0.1:0").await.expect("bind");
        let mut a = PullSocket::new("a", opts(), &m);
        let mut b = PullSocket::new("b", opts(), &m);
        a.connect(&format!("tcp://{addr}")).expect("connect");
        b.connect(&format!("tcp://{addr}")).expect("connect");
        eventually("two workers", || push.peer_count() == 2).await;
        for i in 0u32..100 {
            push.send(msg(&[&i.to_be_bytes()])).await.expect("send");
        }
        let (mut na, mut nb) = (0, 0);
        let (mut bufa, mut bufb) = (Vec::new(), Vec::new());
        while na + nb < 100 {
            tokio::select! {
                n = a.recv_many(&mut bufa, 100) => na += n,
                n = b.recv_many(&mut bufb, 100) => nb += n,
                () = tokio::time::sleep(crate::zmtp::connection::testutil::DEADLINE) => panic!("timeout"),
            }
        }
        assert!(na > 0 && nb > 0, "both workers got work: {na} {nb}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connect_side_push_recovers_after_pull_restart() {
        let (reg, m) = metrics();
        let o = Options {
            reconnect_interval: Duration::from_millis(10),
            reconnect_interval_max: Duration::from_millis(50),
            send_timeout: Duration::from_secs(20),
            ..opts()
        };
        let mut pull = PullSocket::new("in", o.clone(), &m);
        let addr = pull.bind("tcp://127.0.0.1:0").await.expect("bind");
        let push = Arc::new(PushSocket::new("out", o.clone(), &m));
        push.connect(&format!("tcp://{addr}")).expect("connect");
        push.send(msg(&[b"before"])).await.expect("send");
        assert_eq!(
            &within("recv", pull.recv()).await.expect("open").frames[0][..],
            b"before"
        );
        pull.close().await;
        drop(pull);
        eventually("push saw the disconnect", || push.peer_count() == 0).await;
        let p = push.clone();
        let sends = tokio::spawn(async move {
            p.send(msg(&[b"during-1"])).await.expect("send 1");
            p.send(msg(&[b"during-2"])).await.expect("send 2");
        });
        let mut pull = PullSocket::new("in", o, &m);
        pull.bind(&format!("tcp://{addr}"))
            .await
            .expect("rebind same port");
        let a = within("recv 1", pull.recv()).await.expect("open");
        let b = within("recv 2", pull.recv()).await.expect("open");
        assert_eq!(&a.frames[0][..], b"during-1");
        assert_eq!(&b.frames[0][..], b"during-2");
        within("senders", sends).await.expect("sends ok");
        assert_eq!(
            metric(&reg, "switchyard_zmtp_dropped_total", &[("socket", "out")]),
            0.0
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_messages_move_to_another_worker_when_one_leaves() {
        let (reg, m) = metrics();
        // A worker that never reads: its queue fills; then it disconnects.
        let o = Options {
            send_hwm: 10_000,
            ..opts()
        };
        let push = PushSocket::new("out", o.clone(), &m);
        let addr = push.bind("tcp://127.0.0.1:0").await.expect("bind");
        let stalled = PullSocket::new(
            "stalled",
            Options {
                recv_hwm: 1,
                ..o.clone()
            },
            &m,
        );
        stalled.connect(&format!("tcp://{addr}")).expect("connect");
        eventually("stalled worker", || push.peer_count() == 1).await;
        // Fits in the stalled worker's queue (8 MiB) so no send waits.
        const N: u32 = 1500;
        let body = vec![1u8; 4096];
        for i in 0..N {
            within("send", push.send(msg(&[&i.to_be_bytes(), &body])))
                .await
                .expect("send");
        }
        let mut good = PullSocket::new("good", o, &m);
        good.connect(&format!("tcp://{addr}")).expect("connect");
        eventually("second worker", || push.peer_count() == 2).await;
        stalled.close().await;
        drop(stalled);
        // Every message was queued before `good` connected, so whatever it
        // gets was taken back from the stalled worker's queue. (What that
        // worker's kernel buffers held is lost with it, as with libzmq.)
        eventually("stalled worker gone", || push.peer_count() == 1).await;
        let r = within("a re-sent message", good.recv())
            .await
            .expect("open");
        let first = u32::from_be_bytes(r.frames[0][..].try_into().expect("4 bytes"));
        assert!(first < N);
        assert_eq!(
            metric(&reg, "switchyard_zmtp_dropped_total", &[("socket", "out")]),
            0.0
        );
    }
}
