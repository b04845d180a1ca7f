//! SUB side, facing PUB/XPUB publishers.
//!
//! Semantics:
//! - [`SubSocket::subscribe`] / [`SubSocket::unsubscribe`] change the set of
//!   wanted prefixes (counted: subscribing twice needs two unsubscribes).
//!   Every connected publisher is told the difference at once, and every
//!   (re)connected publisher gets the whole set: SUBSCRIBE/CANCEL commands
//!   for ZMTP 3.1 peers, `0x01`/`0x00`-prefixed messages for 3.0 peers.
//! - Inbound messages go, as for PULL, into one channel bounded to
//!   `recv_hwm` messages and `recv_hwm_bytes` bytes; when it is full the readers stop reading (TCP
//!   backpressure on the publishers; a libzmq publisher then drops for us at
//!   its own high-water mark). Nothing is dropped here for lack of room.
//! - A message whose first frame matches no current subscription (sent by a
//!   publisher before it saw our CANCEL) is dropped and counted in
//!   `dropped_total{reason="unsubscribed"}`.
//! - A protocol violation closes that publisher's connection only and is
//!   counted in `protocol_errors_total{socket,reason}`.

use std::sync::Arc;

use bytes::Bytes;

use super::connection::{Attached, PeerLink, Role, SocketCore, Stop};
use super::frame::Multipart;
use super::handle::{Handle, Inbound, socket_methods};
use super::inbox::{Inbox, Origin};
use super::metrics::Metrics;
use super::options::Options;
use super::socket_type::SocketType;
use super::subscriptions::SubscriptionSet;

#[derive(Debug)]
struct SubRole {
    inbox: Inbox,
    subscriptions: Arc<SubscriptionSet>,
    core: Arc<SocketCore>,
}

impl Role for SubRole {
    type Peer = Origin;

    fn attach(self: &Arc<Self>, link: PeerLink<'_>) -> Result<Attached<Origin>, &'static str> {
        Ok(Attached {
            state: Origin::of(&link),
            queue: None,
            subscriptions: Some(self.subscriptions.clone()),
        })
    }

    async fn deliver(&self, peer: &mut Origin, msgs: &mut Vec<Multipart>) -> Result<(), Stop> {
        let filter = self.subscriptions.filter();
        let before = msgs.len();
        msgs.retain(|m| m.first().is_some_and(|topic| filter.matches_any(topic)));
        let filtered = before - msgs.len();
        if filtered > 0 {
            self.core.metrics.dropped("unsubscribed", filtered as u64);
        }
        self.inbox.deliver(peer, msgs).await
    }

    fn detach(self: &Arc<Self>, _peer: Origin, _unsent: Vec<super::connection::Queued>) {}
}

/// Changes a [`SubSocket`]'s subscriptions; cheap to clone.
#[derive(Clone, Debug)]
pub struct Subscriptions(Arc<SubscriptionSet>);

impl Subscriptions {
    /// As [`SubSocket::subscribe`].
    pub fn subscribe(&self, prefix: impl Into<Bytes>) {
        self.0.subscribe(prefix.into());
    }

    /// As [`SubSocket::unsubscribe`].
    pub fn unsubscribe(&self, prefix: &[u8]) -> bool {
        self.0.unsubscribe(prefix)
    }
}

/// A SUB socket: subscribes to prefixes and receives matching messages.
#[derive(Debug)]
pub struct SubSocket {
    inbound: Inbound<SubRole>,
}

impl SubSocket {
    /// A SUB socket named `name` (its metrics `socket` label), subscribed to
    /// nothing yet.
    pub fn new(name: &str, options: Options, metrics: &Metrics) -> Self {
        let core = SocketCore::new(SocketType::Sub, options, metrics.socket(name));
        let (inbox, rx) = Inbox::new(core.options.recv_hwm, core.options.recv_hwm_bytes);
        let role = Arc::new(SubRole {
            inbox,
            subscriptions: Arc::new(SubscriptionSet::default()),
            core: core.clone(),
        });
        let handle = Handle { core, role };
        Self {
            inbound: Inbound { handle, rx },
        }
    }

    /// Subscribes to messages whose first frame starts with `prefix` (empty
    /// = everything). Sent to every connected publisher now and to every
    /// publisher that (re)connects later.
    pub fn subscribe(&self, prefix: impl Into<Bytes>) {
        self.inbound
            .handle
            .role
            .subscriptions
            .subscribe(prefix.into());
    }

    /// Removes one subscription to `prefix`; returns false if there was
    /// none. Publishers are told once the last one is gone.
    pub fn unsubscribe(&self, prefix: &[u8]) -> bool {
        self.inbound.handle.role.subscriptions.unsubscribe(prefix)
    }

    /// A handle that changes this socket's subscriptions from elsewhere
    /// (a reload), while the socket itself is read by its input.
    pub fn subscriptions(&self) -> Subscriptions {
        Subscriptions(Arc::clone(&self.inbound.handle.role.subscriptions))
    }

    /// Publishers connected past the handshake.
    pub fn peer_count(&self) -> usize {
        self.inbound.handle.peer_count()
    }

    /// Stops listening, closes every connection and waits for the socket's
    /// tasks to end.
    pub async fn close(&self) {
        self.inbound.handle.close().await;
    }
}

socket_methods!(SubSocket, inbound.handle, inbound: inbound);
