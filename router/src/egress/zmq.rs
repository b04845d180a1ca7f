//! ZeroMQ outputs: `zmq-pub` (subscribers connect with SUB) and `zmq-push`
//! (workers connect with PULL).
//!
//! - `zmq-pub` never waits: each message is queued to every subscriber whose
//!   prefix subscription matches its topic; a subscriber whose own queue is
//!   full loses that message alone, counted by the ZMTP layer
//!   (`switchyard_zmtp_dropped_total{socket,reason}`). A message that no
//!   subscriber wants is reported to the route as `no_subscriber`.
//! - `zmq-push` hands each message to one worker, round-robin over the
//!   workers with room; when all are full it waits, so the route's queue
//!   fills and its `when_full` policy applies. With no worker connected for
//!   the output's `send_timeout`, the message is reported as
//!   `no_subscriber`.

use std::future::Future;
use std::time::Duration;

use prometheus::IntCounter;

use super::{Delivery, Error, Output, Reject, SendFuture};
use crate::admin::OutputStats;
use crate::envelope::Envelope;
use crate::message::Message;
use crate::metrics::Registry;
use crate::zmtp::connection::SendError;
use crate::zmtp::metrics::SocketMetrics;
use crate::zmtp::publish::PubSocket;
use crate::zmtp::push::PushSocket;

/// Families every output kind counts into, registered once per registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub(super) messages: prometheus::IntCounterVec,
}

impl Metrics {
    /// Registers the output families.
    pub fn register(registry: &Registry) -> Self {
        Self {
            messages: registry.counter_vec(
                "switchyard_output_messages_total",
                "Messages an output took from its routes (PUB: queued to at least one subscriber; PUSH: queued to a worker).",
                &["output"],
            ),
        }
    }
}

/// What an output needs of its socket beyond sending.
pub trait Socket: Send + Sync + 'static {
    /// The output kind, as `/v1/status` names it.
    const KIND: &'static str;
    /// Connected subscribers or workers.
    fn peer_count(&self) -> usize;
    /// Waits until every queued message is written, or `timeout`; returns
    /// whether everything was.
    fn flush(&self, timeout: Duration) -> impl Future<Output = bool> + Send;
    /// Closes the socket; what is still queued is dropped and counted.
    fn close(&self) -> impl Future<Output = ()> + Send;
}

macro_rules! output_socket {
    ($socket:ty, $kind:literal) => {
        impl Socket for $socket {
            const KIND: &'static str = $kind;
            fn peer_count(&self) -> usize {
                <$socket>::peer_count(self)
            }
            async fn flush(&self, timeout: Duration) -> bool {
                <$socket>::flush(self, timeout).await
            }
            async fn close(&self) {
                <$socket>::close(self).await
            }
        }
    };
}

output_socket!(PubSocket, "zmq-pub");
output_socket!(PushSocket, "zmq-push");

/// A ZeroMQ output over socket `S`.
#[derive(Debug)]
pub struct ZmqOutput<S> {
    name: String,
    socket: S,
    envelope: Envelope,
    sent: IntCounter,
    wire: SocketMetrics,
}

/// A `zmq-pub` output.
pub type ZmqPubOutput = ZmqOutput<PubSocket>;
/// A `zmq-push` output.
pub type ZmqPushOutput = ZmqOutput<PushSocket>;

impl<S: Socket> ZmqOutput<S> {
    /// An output named `name` over `socket` (already bound or connecting).
    pub fn new(
        name: &str,
        socket: S,
        envelope: Envelope,
        metrics: &Metrics,
        wire: &crate::zmtp::metrics::Metrics,
    ) -> Self {
        Self {
            name: name.to_owned(),
            socket,
            envelope,
            sent: metrics.messages.with_label_values(&[name]),
            wire: wire.socket(name),
        }
    }

    /// The socket, e.g. to bind or connect it after the output was built.
    pub fn socket(&self) -> &S {
        &self.socket
    }

    /// Gives the peers up to `linger` to take what is queued for them,
    /// then closes. What they did not take is counted as dropped by the
    /// ZMTP layer (`peer_disconnected`).
    pub async fn flush_and_close(&self, linger: Duration) {
        if !self.socket.flush(linger).await {
            tracing::warn!(output = %self.name, ?linger, "peers did not take every queued message before the output closed");
        }
        self.socket.close().await;
    }

    /// Counts for `/v1/status`.
    pub fn stats(&self) -> OutputStats {
        OutputStats {
            name: self.name.clone(),
            kind: S::KIND.into(),
            sent: self.sent.get(),
            dropped: self.wire.dropped_total(),
            peers: self.socket.peer_count() as u64,
            services: Vec::new(),
        }
    }
}

impl Output for ZmqPubOutput {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, batch: &'a [Message]) -> SendFuture<'a> {
        Box::pin(async move {
            let mut delivery = Delivery::accepted();
            let mut sent = 0;
            for (i, message) in batch.iter().enumerate() {
                let fanout = self.socket.send(self.envelope.encode(message));
                if fanout.queued == 0 && fanout.dropped == 0 {
                    delivery.reject(i, Reject::NoSubscriber);
                } else {
                    sent += 1;
                }
            }
            self.sent.inc_by(sent);
            Ok(delivery)
        })
    }
}

impl Output for ZmqPushOutput {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, batch: &'a [Message]) -> SendFuture<'a> {
        Box::pin(async move {
            let mut delivery = Delivery::accepted();
            for (i, message) in batch.iter().enumerate() {
                match self.socket.send(self.envelope.encode(message)).await {
                    Ok(()) => self.sent.inc(),
                    Err(SendError::NoPeers(_)) => delivery.reject(i, Reject::NoSubscriber),
                    Err(SendError::Closed) if i == 0 => {
                        return Err(Error::Closed {
                            output: self.name.clone(),
                        });
                    }
                    Err(SendError::Closed) => {
                        delivery.reject_range(i..batch.len(), Reject::Failed);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(output = %self.name, error = %e, "push failed");
                        delivery.reject(i, Reject::Failed);
                    }
                }
            }
            Ok(delivery)
        })
    }
}
