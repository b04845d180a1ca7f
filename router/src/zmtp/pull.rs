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

use std::sync::Arc;

use super::connection::{Attached, PeerLink, Role, SocketCore, Stop};
use super::frame::Multipart;
use super::handle::{Handle, Inbound, socket_methods};
use super::inbox::{Inbox, Origin};
use super::metrics::Metrics;
use super::options::Options;
use super::socket_type::SocketType;

#[derive(Debug)]
struct PullRole {
    inbox: Inbox,
}

impl Role for PullRole {
    type Peer = Origin;

    fn attach(self: &Arc<Self>, link: PeerLink<'_>) -> Result<Attached<Origin>, &'static str> {
        Ok(Attached {
            state: Origin::of(&link),
            queue: None,
            subscriptions: None,
        })
    }

    async fn deliver(&self, peer: &mut Origin, msgs: &mut Vec<Multipart>) -> Result<(), Stop> {
        self.inbox.deliver(peer, msgs).await
    }

    fn detach(self: &Arc<Self>, _peer: Origin, _unsent: Vec<super::connection::Queued>) {}
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
            let held = pull.inbound.rx.bytes_held();
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
        assert_eq!(pull.inbound.rx.bytes_held(), 0);
    }
}
