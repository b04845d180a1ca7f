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
//! - Fan-out clones `Bytes` handles (a reference count), never payloads. The
//!   subscriber table sits behind one mutex taken once per `send` (not per
//!   subscriber); connection readers take it only to change subscriptions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::command::Command;
use super::connection::{Attached, PeerLink, PushError, QueueTx, Role, SocketCore, Stop, peer_queue};
use super::endpoint::{self, EndpointError};
use super::frame::Multipart;
use super::metrics::Metrics;
use super::options::Options;
use super::socket_type::SocketType;
use super::subscriptions::{SubscriberId, SubscriptionTrie};

#[derive(Debug)]
struct Subscriber {
    queue: QueueTx,
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
    /// Subscribers the message was queued to.
    pub queued: usize,
    /// Matching subscribers it was dropped for (queue full or gone).
    pub dropped: usize,
}

#[derive(Debug)]
struct PubRole {
    core: Arc<SocketCore>,
    table: Mutex<Table>,
}

impl PubRole {
    fn table(&self) -> MutexGuard<'_, Table> {
        // Every mutation below leaves the table consistent at each step, so a
        // panic elsewhere while holding the lock does not corrupt it.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self, table: &mut Table, slot: SubscriberId, subscribe: bool, prefix: &[u8]) -> Result<(), Stop> {
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

    fn send(&self, frames: Multipart) -> Fanout {
        let mut out = Fanout::default();
        let Some(topic) = frames.first() else {
            return out;
        };
        let slow_after = self.core.options.slow_subscriber_timeout;
        let metrics = &self.core.metrics;
        let (mut full, mut gone) = (0u64, 0u64);
        let mut table = self.table();
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
            match sub.queue.try_push(frames.clone()) {
                Ok(()) => {
                    out.queued += 1;
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
        drop(table);
        if full > 0 {
            metrics.dropped_queue_full.inc_by(full);
        }
        if gone > 0 {
            metrics.dropped_peer_disconnected.inc_by(gone);
        }
        out.dropped = (full + gone) as usize;
        out
    }
}

impl Role for PubRole {
    type Peer = SubscriberId;

    fn attach(self: &Arc<Self>, link: PeerLink<'_>) -> Result<Attached<SubscriberId>, &'static str> {
        let o = &self.core.options;
        let (tx, rx) = peer_queue(o.send_hwm, o.send_hwm_bytes);
        let sub = Subscriber {
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

    async fn deliver(&self, slot: &mut SubscriberId, msgs: &mut Vec<Multipart>) -> Result<(), Stop> {
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

    fn detach(self: &Arc<Self>, slot: SubscriberId, unsent: Vec<Multipart>) {
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
    core: Arc<SocketCore>,
    role: Arc<PubRole>,
}

impl PubSocket {
    /// A PUB socket named `name` (its metrics `socket` label).
    pub fn new(name: &str, options: Options, metrics: &Metrics) -> Self {
        let core = SocketCore::new(SocketType::Pub, options, metrics.socket(name));
        let role = Arc::new(PubRole {
            core: core.clone(),
            table: Mutex::new(Table::default()),
        });
        Self { core, role }
    }

    /// Queues `frames` to every subscriber whose subscriptions match its
    /// first frame; never waits. A message without frames goes nowhere.
    pub fn send(&self, frames: Multipart) -> Fanout {
        self.role.send(frames)
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

    /// Subscribers connected past the handshake.
    pub fn peer_count(&self) -> usize {
        self.core.peer_count()
    }

    /// Distinct (subscriber, prefix) subscriptions held now.
    pub fn subscription_count(&self) -> usize {
        self.role.table().trie.len()
    }

    /// Closes every connection (queued messages are dropped and counted) and
    /// waits for the socket's tasks to end.
    pub async fn close(&self) {
        self.core.close().await;
    }
}

impl Drop for PubSocket {
    fn drop(&mut self) {
        self.core.cancel.cancel();
    }
}
