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

use prometheus::IntCounter;

use super::{Delivery, Error, Output, Reject, SendFuture};
use crate::admin::OutputStats;
use crate::envelope::Envelope;
use crate::metrics::Registry;
use crate::pipeline::Message;
use crate::zmtp::connection::SendError;
use crate::zmtp::metrics::SocketMetrics;
use crate::zmtp::publish::PubSocket;
use crate::zmtp::push::PushSocket;

/// Families every output kind counts into, registered once per registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    messages: prometheus::IntCounterVec,
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

/// A `zmq-pub` output.
#[derive(Debug)]
pub struct ZmqPubOutput {
    name: String,
    socket: PubSocket,
    envelope: Envelope,
    sent: IntCounter,
    wire: SocketMetrics,
}

impl ZmqPubOutput {
    /// An output named `name` over `socket` (already bound or connecting).
    pub fn new(
        name: &str,
        socket: PubSocket,
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

    /// The socket, for shutdown.
    pub fn socket(&self) -> &PubSocket {
        &self.socket
    }

    /// Counts for `/v1/status`.
    pub fn stats(&self) -> OutputStats {
        OutputStats {
            name: self.name.clone(),
            kind: "zmq-pub".into(),
            sent: self.sent.get(),
            dropped: self.wire.dropped_total(),
            peers: self.socket.peer_count() as u64,
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

/// A `zmq-push` output.
#[derive(Debug)]
pub struct ZmqPushOutput {
    name: String,
    socket: PushSocket,
    envelope: Envelope,
    sent: IntCounter,
    wire: SocketMetrics,
}

impl ZmqPushOutput {
    /// An output named `name` over `socket` (already bound or connecting).
    pub fn new(
        name: &str,
        socket: PushSocket,
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

    /// The socket, for shutdown.
    pub fn socket(&self) -> &PushSocket {
        &self.socket
    }

    /// Counts for `/v1/status`.
    pub fn stats(&self) -> OutputStats {
        OutputStats {
            name: self.name.clone(),
            kind: "zmq-push".into(),
            sent: self.sent.get(),
            dropped: self.wire.dropped_total(),
            peers: self.socket.peer_count() as u64,
        }
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
