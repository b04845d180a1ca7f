//! PUB side, facing SUB/XSUB subscribers.
//!
//! Semantics:
//! - Each subscriber's prefix subscriptions are tracked (SUBSCRIBE/CANCEL
//!   commands from ZMTP 3.1 peers, and `0x01`/`0x00`-prefixed single-frame
//!   messages from any peer, which is what 3.0 peers and libzmq send). A
//!   message goes only to the subscribers holding a prefix of its first
//!   frame, found with a [`SubscriptionTrie`]; a subscriber matching through
//!   several prefixes gets it once.
//! - [`PubSocket::send`] never waits. Each subscriber has its own bounded
//!   queue (`send_hwm` messages, `send_hwm_bytes` bytes); when it is full
//!   the message is **dropped for that subscriber alone** and counted in
//!   `dropped_total{reason="subscriber_queue_full"}`; the others are not
//!   slowed. Messages still queued to a subscriber that disconnects are
//!   counted in `dropped_total{reason="peer_disconnected"}`.
//! - With `slow_subscriber_timeout` set, a subscriber whose queue stayed
//!   full that long is disconnected (`disconnects_total{reason="slow_subscriber"}`).
//! - A subscriber may hold at most `max_subscriptions` prefixes totalling
//!   `max_subscription_bytes`; one more closes its connection
//!   (`protocol_errors_total{reason="too_many_subscriptions"}`).
//! - With a delivery policy ([`PubSocket::set_delivery_policy`]), each
//!   subscriber gets only the messages its filter allows (the output's
//!   ACL for the name the peer authenticated as): a ZeroMQ subscription is
//!   a byte prefix, which cannot be refused, so what it may not see is
//!   held back at delivery.
//! - Fan-out clones `Bytes` handles (a reference count), never payloads. The
//!   subscriber table sits behind one mutex taken once per `send` (not per
//!   subscriber); connection readers take it only to change subscriptions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::command::Command;
use super::connection::{
    Attached, PeerLink, PushError, QueueTx, Queued, Receipt, Role, SocketCore, Stop, peer_queue,
};
use super::frame::Multipart;
use super::handle::{Handle, socket_methods};
use super::metrics::Metrics;
use super::options::Options;
use super::socket_type::SocketType;
use super::subscriptions::{SubscriberId, SubscriptionTrie};

/// Decides which messages one subscriber may receive, by topic (the
/// first frame up to its first space: the topic in every envelope).
pub trait DeliveryFilter: Send + Sync + std::fmt::Debug {
    /// Whether a message on `topic` may go to this subscriber.
    fn allows(&self, topic: &[u8]) -> bool;
}

/// What the subscribers of a socket may receive: asked once per send
/// whether filtering is in force at all, and once per subscriber for its
/// filter.
pub trait DeliveryPolicy: Send + Sync {
    /// Whether the subscribers' filters apply now (checked once per send,
    /// so a socket whose policy is off pays nothing per subscriber).
    fn in_force(&self) -> bool;
    /// The filter of a subscriber that authenticated as `user` (PLAIN
    /// user, CURVE client name; `None` for a NULL peer).
    fn filter_for(&self, user: Option<&str>) -> Arc<dyn DeliveryFilter>;
}

#[derive(Debug)]
struct Subscriber {
    queue: QueueTx,
    /// What it may receive; `None`: everything it subscribes to.
    filter: Option<Arc<dyn DeliveryFilter>>,
    /// Distinct prefixes held, with how many times each was subscribed.
    prefixes: HashMap<Bytes, u32>,
    prefix_bytes: usize,
    /// The `send` stamp that last reached this subscriber (de-duplication).
    stamp: u64,
    /// Since when every send found the queue full.
    full_since: Option<Instant>,
    cancel: CancellationToken,
    evicted: bool,
}

#[derive(Debug, Default)]
struct Table {
    trie: SubscriptionTrie,
    slots: Vec<Option<Subscriber>>,
    free: Vec<SubscriberId>,
    stamp: u64,
}

/// How one [`PubSocket::send`] went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fanout {
    /// Subscribers the message was queued to (summed over a batch).
    pub queued: usize,
    /// Matching subscribers it was dropped for, queue full or gone (summed
    /// over a batch).
    pub dropped: usize,
}

struct PubRole {
    core: Arc<SocketCore>,
    table: Mutex<Table>,
    policy: OnceLock<Arc<dyn DeliveryPolicy>>,
}

impl std::fmt::Debug for PubRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubRole")
            .field("core", &self.core)
            .field("filtered", &self.policy.get().is_some())
            .finish_non_exhaustive()
    }
}

impl PubRole {
    fn table(&self) -> MutexGuard<'_, Table> {
        // Every mutation below leaves the table consistent at each step, so a
        // panic elsewhere while holding the lock does not corrupt it.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(
        &self,
        table: &mut Table,
        slot: SubscriberId,
        subscribe: bool,
        prefix: &[u8],
    ) -> Result<(), Stop> {
        let o = &self.core.options;
        let Some(sub) = table.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
            return Ok(());
        };
        if subscribe {
            if let Some(n) = sub.prefixes.get_mut(prefix) {
                *n = n.saturating_add(1);
                return Ok(());
            }
            if sub.prefixes.len() >= o.max_subscriptions
                || sub.prefix_bytes + prefix.len() > o.max_subscription_bytes
            {
                return Err(Stop::Protocol("too_many_subscriptions"));
            }
            // Copy: the prefix must not pin the connection's read buffer.
            sub.prefixes.insert(Bytes::copy_from_slice(prefix), 1);
            sub.prefix_bytes += prefix.len();
            table.trie.insert(prefix, slot);
        } else if let Some(n) = sub.prefixes.get_mut(prefix) {
            *n -= 1;
            if *n == 0 {
                sub.prefixes.remove(prefix);
                sub.prefix_bytes -= prefix.len();
                table.trie.remove(prefix, slot);
            }
        }
        Ok(())
    }

    /// Fans out every message of `msgs` under one lock acquisition; with a
    /// `receipt`, each copy queued carries a token of it (for the message's
    /// position in `msgs`, `first` on).
    fn send_all(
        &self,
        msgs: impl IntoIterator<Item = Multipart>,
        receipt: Option<(&Receipt, usize)>,
    ) -> Fanout {
        let slow_after = self.core.options.slow_subscriber_timeout;
        let metrics = &self.core.metrics;
        let (mut queued, mut full, mut gone) = (0usize, 0u64, 0u64);
        // Asked once per send, not per copy.
        let filtering = self.policy.get().is_some_and(|p| p.in_force());
        let mut table = self.table();
        for (i, frames) in msgs.into_iter().enumerate() {
            let Some(topic) = frames.first() else {
                continue;
            };
            // The topic the filters judge: the first frame up to its first
            // space (single-frame envelopes), found once per message.
            let judged = if filtering {
                let end = topic.iter().position(|&b| b == b' ').unwrap_or(topic.len());
                Some(&topic[..end])
            } else {
                None
            };
            table.stamp += 1;
            let Table {
                trie, slots, stamp, ..
            } = &mut *table;
            trie.for_each_match(topic, |id| {
                let Some(sub) = slots.get_mut(id as usize).and_then(Option::as_mut) else {
                    return;
                };
                if sub.stamp == *stamp {
                    return;
                }
                sub.stamp = *stamp;
                if let (Some(judged), Some(filter)) = (judged, &sub.filter)
                    && !filter.allows(judged)
                {
                    return;
                }
                let copy = Queued {
                    msg: frames.clone(),
                    token: receipt.map(|(r, first)| r.token(first + i)),
                };
                match sub.queue.try_push(copy) {
                    Ok(()) => {
                        queued += 1;
                        sub.full_since = None;
                    }
                    Err(PushError::Full(_)) => {
                        full += 1;
                        if let Some(limit) = slow_after {
                            let now = Instant::now();
                            let since = *sub.full_since.get_or_insert(now);
                            if !sub.evicted && now.duration_since(since) >= limit {
                                sub.evicted = true;
                                sub.cancel.cancel();
                                metrics.disconnect("slow_subscriber");
                            }
                        }
                    }
                    Err(PushError::Closed(_)) => gone += 1,
                }
            });
        }
        drop(table);
        if full > 0 {
            metrics.dropped_queue_full.inc_by(full);
        }
        if gone > 0 {
            metrics.dropped_peer_disconnected.inc_by(gone);
        }
        Fanout {
            queued,
            dropped: (full + gone) as usize,
        }
    }
}

impl Role for PubRole {
    type Peer = SubscriberId;

    fn attach(
        self: &Arc<Self>,
        link: PeerLink<'_>,
    ) -> Result<Attached<SubscriberId>, &'static str> {
        let o = &self.core.options;
        let (tx, rx) = peer_queue(o.send_hwm, o.send_hwm_bytes);
        let sub = Subscriber {
            filter: self
                .policy
                .get()
                .map(|p| p.filter_for(link.info.user.as_deref())),
            queue: tx,
            prefixes: HashMap::new(),
            prefix_bytes: 0,
            stamp: 0,
            full_since: None,
            cancel: link.cancel,
            evicted: false,
        };
        let mut table = self.table();
        let slot = match table.free.pop() {
            Some(slot) => {
                table.slots[slot as usize] = Some(sub);
                slot
            }
            None => {
                table.slots.push(Some(sub));
                SubscriberId::try_from(table.slots.len() - 1).map_err(|_| "too_many_peers")?
            }
        };
        Ok(Attached {
            state: slot,
            queue: Some(rx),
            subscriptions: None,
        })
    }

    async fn deliver(
        &self,
        slot: &mut SubscriberId,
        msgs: &mut Vec<Multipart>,
    ) -> Result<(), Stop> {
        let mut table = self.table();
        for m in msgs.drain(..) {
            // Subscriptions as messages: one frame, first byte 1 or 0. Other
            // messages from subscribers mean nothing to a PUB and are ignored.
            if let [frame] = m.as_slice() {
                match frame.first() {
                    Some(1) => self.apply(&mut table, *slot, true, &frame[1..])?,
                    Some(0) => self.apply(&mut table, *slot, false, &frame[1..])?,
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn command(&self, slot: &mut SubscriberId, cmd: Command) -> Result<(), Stop> {
        let mut table = self.table();
        match cmd {
            Command::Subscribe(p) => self.apply(&mut table, *slot, true, &p),
            Command::Cancel(p) => self.apply(&mut table, *slot, false, &p),
            _ => Ok(()),
        }
    }

    fn detach(self: &Arc<Self>, slot: SubscriberId, unsent: Vec<Queued>) {
        let mut table = self.table();
        if let Some(sub) = table.slots.get_mut(slot as usize).and_then(Option::take) {
            for prefix in sub.prefixes.keys() {
                table.trie.remove(prefix, slot);
            }
            table.free.push(slot);
        }
        drop(table);
        self.core
            .metrics
            .dropped_peer_disconnected
            .inc_by(unsent.len() as u64);
    }
}

/// A PUB socket: fans messages out to matching subscribers, dropping (and
/// counting) per subscriber when its queue is full.
#[derive(Debug)]
pub struct PubSocket {
    handle: Handle<PubRole>,
}

impl PubSocket {
    /// A PUB socket named `name` (its metrics `socket` label).
    pub fn new(name: &str, options: Options, metrics: &Metrics) -> Self {
        let core = SocketCore::new(SocketType::Pub, options, metrics.socket(name));
        let role = Arc::new(PubRole {
            core: core.clone(),
            table: Mutex::new(Table::default()),
            policy: OnceLock::new(),
        });
        Self {
            handle: Handle { core, role },
        }
    }

    /// Gives every subscriber that connects from now on the filter
    /// `policy` makes for it, applied while the policy is in force. Set
    /// once, before the socket binds or connects; a second call is ignored.
    pub fn set_delivery_policy(&self, policy: Arc<dyn DeliveryPolicy>) {
        let _ = self.handle.role.policy.set(policy);
    }

    /// Queues `frames` to every subscriber whose subscriptions match its
    /// first frame; never waits. A message without frames goes nowhere.
    pub fn send(&self, frames: Multipart) -> Fanout {
        self.handle.role.send_all(std::iter::once(frames), None)
    }

    /// [`send`](Self::send), each copy queued to a subscriber with a token
    /// of `receipt` for position `index`: written once that subscriber's
    /// socket took it, lost if it was dropped for that subscriber (queue
    /// full, subscriber gone, socket closed).
    pub fn send_tracked(&self, frames: Multipart, receipt: &Receipt, index: usize) -> Fanout {
        self.handle
            .role
            .send_all(std::iter::once(frames), Some((receipt, index)))
    }

    /// [`send`](Self::send) for a batch: the subscriber table is locked once
    /// for all of them. Returns the totals over the batch.
    pub fn send_many(&self, msgs: impl IntoIterator<Item = Multipart>) -> Fanout {
        self.handle.role.send_all(msgs, None)
    }

    /// Waits until every message queued so far was written to the kernel, or
    /// until `timeout`; returns whether everything was written. Use before
    /// [`close`](Self::close) for a graceful shutdown.
    pub async fn flush(&self, timeout: std::time::Duration) -> bool {
        let role = &self.handle.role;
        self.handle
            .flush(timeout, || {
                role.table()
                    .slots
                    .iter()
                    .flatten()
                    .all(|s| s.queue.is_drained())
            })
            .await
    }

    /// Subscribers connected past the handshake.
    pub fn peer_count(&self) -> usize {
        self.handle.peer_count()
    }

    /// Distinct (subscriber, prefix) subscriptions held now.
    pub fn subscription_count(&self) -> usize {
        self.handle.role.table().trie.len()
    }

    /// Closes every connection and waits for the socket's tasks to end.
    /// Messages still queued are dropped and counted
    /// (`dropped_total{reason="peer_disconnected"}`); [`flush`](Self::flush)
    /// first to avoid that.
    pub async fn close(&self) {
        self.handle.close().await;
    }
}

socket_methods!(PubSocket, handle);

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::zmtp::connection::testing::{eventually, metric, metrics, msg, within};
    use crate::zmtp::sub::SubSocket;

    fn opts() -> Options {
        Options::default()
    }

    async fn next_topic(sub: &mut SubSocket) -> Vec<u8> {
        within("a message", sub.recv()).await.expect("open").frames[0].to_vec()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prefix_filtering_and_unsubscribe() {
        let (_reg, m) = metrics();
        let publ = PubSocket::new("pub", opts(), &m);
        let addr = publ.bind("tcp://127.0.0.1:0").await.expect("bind");
        let mut a = SubSocket::new("a", opts(), &m);
        let mut all = SubSocket::new("all", opts(), &m);
        a.subscribe(&b"a"[..]);
        a.subscribe(&b"ab"[..]);
        all.subscribe(Bytes::new());
        a.connect(&format!("tcp://{addr}")).expect("connect");
        all.connect(&format!("tcp://{addr}")).expect("connect");
        eventually("3 subscriptions", || publ.subscription_count() == 3).await;
        assert_eq!(
            publ.send(msg(&[b"abc", b"1"])),
            Fanout {
                queued: 2,
                dropped: 0
            }
        );
        assert_eq!(
            publ.send(msg(&[b"b", b"2"])),
            Fanout {
                queued: 1,
                dropped: 0
            }
        );
        assert_eq!(
            publ.send_many([msg(&[b"b", b"3"]), msg(&[b"abd"]), msg(&[])]),
            Fanout {
                queued: 3,
                dropped: 0
            }
        );
        assert_eq!(
            next_topic(&mut a).await,
            b"abc",
            "once, though two prefixes match"
        );
        assert_eq!(next_topic(&mut all).await, b"abc");
        assert_eq!(next_topic(&mut all).await, b"b");
        assert_eq!(next_topic(&mut a).await, b"abd");
        assert_eq!(next_topic(&mut all).await, b"b");
        assert_eq!(next_topic(&mut all).await, b"abd");
        assert!(a.unsubscribe(b"a"));
        assert!(a.unsubscribe(b"ab"));
        a.subscribe(&b"m"[..]);
        // The CANCELs go out before the SUBSCRIBE, and the publisher applies
        // them in order: once a marker reaches `a`, the cancels are in force.
        within("a's new subscription in force", async {
            for k in 0u32.. {
                publ.send(msg(&[format!("m{k}").as_bytes()]));
                let got = tokio::time::timeout(Duration::from_millis(20), a.recv()).await;
                if let Ok(r) = got {
                    assert!(r.expect("open").frames[0].starts_with(b"m"));
                    return;
                }
            }
        })
        .await;
        publ.send(msg(&[b"a-after"]));
        publ.send(msg(&[b"m-end"]));
        loop {
            let topic = next_topic(&mut a).await;
            assert_ne!(topic, b"a-after", "nothing after unsubscribe");
            if topic == b"m-end" {
                break;
            }
        }
        while next_topic(&mut all).await != b"a-after" {}
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bound_sub_and_connecting_pub() {
        let (_reg, m) = metrics();
        let mut sub = SubSocket::new("sub", opts(), &m);
        sub.subscribe(&b"t"[..]);
        let addr = sub.bind("tcp://127.0.0.1:0").await.expect("bind");
        let publ = PubSocket::new("pub", opts(), &m);
        publ.connect(&format!("tcp://{addr}")).expect("connect");
        eventually("subscription arrived", || publ.subscription_count() == 1).await;
        publ.send(msg(&[b"x"]));
        publ.send(msg(&[b"t1"]));
        assert_eq!(next_topic(&mut sub).await, b"t1");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscriptions_are_resent_after_publisher_restart() {
        let (_reg, m) = metrics();
        let o = Options {
            reconnect_interval: Duration::from_millis(10),
            reconnect_interval_max: Duration::from_millis(50),
            ..opts()
        };
        let publ = PubSocket::new("pub", o.clone(), &m);
        let addr = publ.bind("tcp://127.0.0.1:0").await.expect("bind");
        let mut sub = SubSocket::new("sub", o.clone(), &m);
        sub.subscribe(&b"k"[..]);
        sub.connect(&format!("tcp://{addr}")).expect("connect");
        eventually("subscribed", || publ.subscription_count() == 1).await;
        publ.close().await;
        drop(publ);
        let publ = PubSocket::new("pub", o, &m);
        publ.bind(&format!("tcp://{addr}")).await.expect("rebind");
        eventually("re-subscribed", || publ.subscription_count() == 1).await;
        publ.send(msg(&[b"k2"]));
        assert_eq!(next_topic(&mut sub).await, b"k2");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_subscriber_drops_alone_and_every_drop_is_counted() {
        let (reg, m) = metrics();
        let o = Options {
            send_hwm: 16,
            ..opts()
        };
        let publ = PubSocket::new("pub", o.clone(), &m);
        let addr = publ.bind("tcp://127.0.0.1:0").await.expect("bind");
        let slow = SubSocket::new(
            "slow",
            Options {
                recv_hwm: 1,
                ..o.clone()
            },
            &m,
        );
        let mut fast = SubSocket::new("fast", o, &m);
        slow.subscribe(Bytes::new());
        fast.subscribe(Bytes::new());
        slow.connect(&format!("tcp://{addr}")).expect("connect");
        fast.connect(&format!("tcp://{addr}")).expect("connect");
        eventually("both subscribed", || publ.subscription_count() == 2).await;
        let body = vec![0u8; 1024];
        let (mut sent, mut dropped) = (0u64, 0u64);
        let mut buf = Vec::new();
        // Paced: 8 messages, then wait until the fast subscriber has them.
        for round in 0u32..2000 {
            for i in 0..8u32 {
                let f = publ.send(msg(&[&(round * 8 + i).to_be_bytes(), &body]));
                sent += 1;
                dropped += f.dropped as u64;
            }
            let mut got = 0;
            while got < 8 {
                got += within("fast subscriber", fast.recv_many(&mut buf, 8)).await;
            }
        }
        assert_eq!(buf.len() as u64, sent, "the fast subscriber lost nothing");
        for (i, r) in buf.iter().enumerate() {
            assert_eq!(&r.frames[0][..], &(i as u32).to_be_bytes());
        }
        assert!(dropped > 0, "the slow subscriber's queue filled");
        assert_eq!(
            metric(
                &reg,
                "switchyard_zmtp_dropped_total",
                &[("socket", "pub"), ("reason", "subscriber_queue_full")]
            ),
            dropped as f64
        );
        drop(slow);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscriber_full_for_too_long_is_disconnected() {
        let (reg, m) = metrics();
        let o = Options {
            send_hwm: 4,
            slow_subscriber_timeout: Some(Duration::from_millis(20)),
            ..opts()
        };
        let publ = Arc::new(PubSocket::new("pub", o.clone(), &m));
        let addr = publ.bind("tcp://127.0.0.1:0").await.expect("bind");
        let slow = SubSocket::new("slow", Options { recv_hwm: 1, ..o }, &m);
        slow.subscribe(Bytes::new());
        slow.connect(&format!("tcp://{addr}")).expect("connect");
        eventually("subscribed", || publ.subscription_count() == 1).await;
        let body = vec![0u8; 64 * 1024];
        within("slow subscriber evicted", async {
            while metric(
                &reg,
                "switchyard_zmtp_disconnects_total",
                &[("reason", "slow_subscriber")],
            ) < 1.0
            {
                publ.send(msg(&[b"t", &body]));
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
    }

    /// Every copy a tracked send queued settles its receipt: written once
    /// the subscriber's socket took it; a copy dropped for a full queue
    /// names its message lost, as does one whose subscriber leaves with it
    /// still queued.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tracked_fan_out_settles_on_every_copy_written_or_dropped() {
        use crate::zmtp::connection::Receipt;

        let (_reg, m) = metrics();
        let o = Options {
            send_hwm: 4,
            send_buffer_size: Some(64 * 1024),
            recv_buffer_size: Some(64 * 1024),
            ..opts()
        };
        let publ = PubSocket::new("pub", o.clone(), &m);
        let addr = publ.bind("tcp://127.0.0.1:0").await.expect("bind");
        let mut fast = SubSocket::new("fast", o.clone(), &m);
        fast.subscribe(Bytes::new());
        fast.connect(&format!("tcp://{addr}")).expect("connect");
        eventually("subscribed", || publ.subscription_count() == 1).await;
        let receipt = Receipt::new();
        for i in 0..3 {
            publ.send_tracked(msg(&[b"t", &[i]]), &receipt, i as usize);
        }
        assert!(within("settled", receipt.settled()).await.is_empty());
        for _ in 0..3 {
            next_topic(&mut fast).await;
        }

        // A subscriber that reads nothing: its copies fill its queue (the
        // rest are dropped for it), then it leaves with them queued.
        let slow = SubSocket::new("slow", Options { recv_hwm: 1, ..o }, &m);
        slow.subscribe(Bytes::new());
        slow.connect(&format!("tcp://{addr}")).expect("connect");
        eventually("both subscribed", || publ.subscription_count() == 2).await;
        let receipt = Receipt::new();
        // 1 MiB: well past what the kernel buffers and the subscriber's
        // read buffer take, so copies stay queued.
        let body = vec![0u8; 16 * 1024];
        const N: usize = 64;
        // Paced by the fast subscriber, so only the slow one's queue fills.
        for i in 0..N {
            publ.send_tracked(msg(&[b"t", &body]), &receipt, i);
            next_topic(&mut fast).await;
        }
        let settled = tokio::spawn({
            let receipt = receipt.clone();
            async move { receipt.settled().await }
        });
        tokio::task::yield_now().await;
        assert!(!settled.is_finished(), "settled with copies still queued");
        slow.close().await;
        drop(slow);
        let lost = within("settled", settled).await.expect("task");
        assert!(!lost.is_empty() && lost.len() < N, "lost {lost:?}");
    }
}
