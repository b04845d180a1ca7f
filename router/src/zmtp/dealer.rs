//! DEALER side, facing REP services (or ROUTER services that echo the
//! envelope).
//!
//! Semantics:
//! - [`DealerSocket::request`] sends one request round-robin to a service
//!   with room (as PUSH: waits while all are full, waits up to
//!   `send_timeout` when none is connected) and returns its reply.
//! - On the wire a request is `[request-id (8 bytes), "" , frames...]`: REP
//!   keeps every frame up to the empty delimiter as the envelope and sends it
//!   back with the reply, so each reply carries the id of its request and is
//!   delivered to the caller that sent it, never to another, whatever the
//!   order replies come back in or how many services there are.
//! - A reply that matches no waiting request (its caller timed out, it is
//!   malformed, or it names a request that was given to another service) is
//!   dropped and counted in `dropped_total{reason="unmatched_reply"}`.
//! - When a service disconnects, requests still queued to it are sent again
//!   to other services; callers whose request it already had get
//!   [`SendError::PeerDisconnected`] (the request may or may not have run).
//! - Each request has its own deadline (`timeout`), after which the caller
//!   gets [`SendError::ReplyTimeout`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout_at};

use super::connection::{Attached, PeerId, PeerLink, Role, SendError, SocketCore, Stop};
use super::frame::Multipart;
use super::handle::{Handle, socket_methods};
use super::metrics::Metrics;
use super::options::Options;
use super::push::Balancer;
use super::socket_type::SocketType;

type ReplySlot = oneshot::Sender<Result<Multipart, SendError>>;

#[derive(Debug)]
struct Pending {
    reply: ReplySlot,
    /// The service holding the request (None while being (re)routed).
    peer: Option<PeerId>,
}

#[derive(Debug)]
struct DealerRole {
    core: Arc<SocketCore>,
    balancer: Arc<Balancer>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
}

fn request_id(msg: &Multipart) -> Option<u64> {
    let first = msg.first()?;
    Some(u64::from_be_bytes(first.as_ref().try_into().ok()?))
}

impl DealerRole {
    fn pending(&self) -> MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn routed(&self, id: u64, peer: PeerId) {
        if let Some(p) = self.pending().get_mut(&id) {
            p.peer = Some(peer);
        }
    }
}

/// Removes a request's pending entry when its caller stops waiting.
struct PendingGuard<'a>(&'a DealerRole, u64);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.pending().remove(&self.1);
    }
}

impl Role for DealerRole {
    type Peer = PeerId;

    fn attach(self: &Arc<Self>, link: PeerLink<'_>) -> Result<Attached<PeerId>, &'static str> {
        Ok(self.balancer.attach(&self.core, link.id))
    }

    async fn deliver(&self, from: &mut PeerId, msgs: &mut Vec<Multipart>) -> Result<(), Stop> {
        let mut unmatched = 0u64;
        {
            let mut pending = self.pending();
            for mut m in msgs.drain(..) {
                // Only the service that was given the request may answer it:
                // another one cannot forge a reply for someone else's request.
                let entry = match request_id(&m) {
                    Some(id)
                        if m.len() >= 2
                            && m[1].is_empty()
                            && pending.get(&id).is_some_and(|p| p.peer == Some(*from)) =>
                    {
                        pending.remove(&id)
                    }
                    _ => None,
                };
                match entry {
                    Some(p) => {
                        m.drain(..2);
                        // The caller may have just given up; then it is gone.
                        let _ = p.reply.send(Ok(m));
                    }
                    None => unmatched += 1,
                }
            }
        }
        self.core.metrics.dropped("unmatched_reply", unmatched);
        Ok(())
    }

    fn detach(self: &Arc<Self>, peer: PeerId, unsent: Vec<Multipart>) {
        self.balancer.remove(peer);
        {
            let mut pending = self.pending();
            for m in &unsent {
                if let Some(p) = request_id(m).and_then(|id| pending.get_mut(&id)) {
                    p.peer = None;
                }
            }
            let lost: Vec<u64> = pending
                .iter()
                .filter(|(_, p)| p.peer == Some(peer))
                .map(|(id, _)| *id)
                .collect();
            for id in lost {
                if let Some(p) = pending.remove(&id) {
                    let _ = p.reply.send(Err(SendError::PeerDisconnected));
                }
            }
        }
        let me = Arc::downgrade(self);
        self.balancer.resend(&self.core, unsent, move |m, peer| {
            if let (Some(me), Some(id)) = (me.upgrade(), request_id(m)) {
                me.routed(id, peer);
            }
        });
    }
}

/// A DEALER socket for request/reply with REP services.
#[derive(Debug)]
pub struct DealerSocket {
    handle: Handle<DealerRole>,
}

impl DealerSocket {
    /// A DEALER socket named `name` (its metrics `socket` label).
    pub fn new(name: &str, options: Options, metrics: &Metrics) -> Self {
        let core = SocketCore::new(SocketType::Dealer, options, metrics.socket(name));
        let role = Arc::new(DealerRole {
            core: core.clone(),
            balancer: Arc::new(Balancer::default()),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        });
        Self {
            handle: Handle { core, role },
        }
    }

    /// Sends `frames` as one request to the next service with room and
    /// returns its reply (the frames after the envelope). Safe to call from
    /// many tasks at once.
    ///
    /// # Errors
    /// [`SendError::ReplyTimeout`] when no reply came within `timeout`
    /// (counting from this call); [`SendError::NoPeers`] when no service
    /// connected within `send_timeout`; [`SendError::PeerDisconnected`] when
    /// the service that had the request went away; [`SendError::Closed`],
    /// [`SendError::EmptyMessage`].
    ///
    /// # Cancel safety
    /// Cancelling abandons the request; a late reply is dropped and counted.
    pub async fn request(
        &self,
        frames: Multipart,
        timeout: Duration,
    ) -> Result<Multipart, SendError> {
        if frames.is_empty() {
            return Err(SendError::EmptyMessage);
        }
        let deadline = Instant::now() + timeout;
        let role = &*self.handle.role;
        let id = role.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        role.pending().insert(
            id,
            Pending {
                reply: tx,
                peer: None,
            },
        );
        let _guard = PendingGuard(role, id);
        let mut msg = Multipart::with_capacity(frames.len() + 2);
        msg.push(Bytes::copy_from_slice(&id.to_be_bytes()));
        msg.push(Bytes::new());
        msg.extend(frames);
        let pick = |peer| role.routed(id, peer);
        match timeout_at(deadline, role.balancer.send(&self.handle.core, msg, pick)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(SendError::ReplyTimeout(timeout)),
        }
        match timeout_at(deadline, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(SendError::Closed),
            Err(_) => Err(SendError::ReplyTimeout(timeout)),
        }
    }

    /// Services connected past the handshake.
    pub fn peer_count(&self) -> usize {
        self.handle.peer_count()
    }

    /// Requests waiting for a reply.
    pub fn pending_requests(&self) -> usize {
        self.handle.role.pending().len()
    }

    /// Closes every connection and waits for the socket's tasks to end.
    pub async fn close(&self) {
        self.handle.close().await;
    }
}

socket_methods!(DealerSocket, handle);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zmtp::connection::testutil::{eventually, metric, metrics, msg, within};
    use crate::zmtp::router::RouterSocket;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_service_cannot_answer_for_another() {
        let (reg, m) = metrics();
        let mut a = RouterSocket::new("a", Options::default(), &m);
        let mut b = RouterSocket::new("b", Options::default(), &m);
        let addr_a = a.bind("tcp://127.0.0.1:0").await.expect("bind");
        let addr_b = b.bind("tcp://127.0.0.1:0").await.expect("bind");
        let dealer = Arc::new(DealerSocket::new("client", Options::default(), &m));
        dealer.connect(&format!("tcp://{addr_a}")).expect("connect");
        dealer.connect(&format!("tcp://{addr_b}")).expect("connect");
        eventually("two services", || dealer.peer_count() == 2).await;
        let mut callers = Vec::new();
        for body in ["one", "two"] {
            let d = dealer.clone();
            callers.push(tokio::spawn(async move {
                let reply = d
                    .request(msg(&[body.as_bytes()]), Duration::from_secs(20))
                    .await
                    .expect("reply");
                (body, reply[0].clone())
            }));
        }
        let ra = within("request at a", a.recv()).await.expect("open");
        let rb = within("request at b", b.recv()).await.expect("open");
        // Service a forges a reply to the request b holds.
        let forged = msg(&[&rb.frames[0], b"", b"forged"]);
        a.send(ra.peer, forged).await.expect("send");
        eventually("forged reply refused", || {
            metric(
                &reg,
                "switchyard_zmtp_dropped_total",
                &[("reason", "unmatched_reply")],
            ) == 1.0
        })
        .await;
        for (svc, r) in [(&a, &ra), (&b, &rb)] {
            let mut reply = r.frames.clone();
            let body = reply[2].clone();
            reply[2] = bytes::Bytes::from([&b"re:"[..], &body].concat());
            svc.send(r.peer, reply).await.expect("reply");
        }
        for c in callers {
            let (body, reply) = within("caller", c).await.expect("task");
            assert_eq!(&reply[..], format!("re:{body}").as_bytes());
        }
    }
}
