//! The output families: one per concept, whatever the kind. Every output
//! counts what it took (`output_messages_total`), what it dropped after
//! taking it, by reason (`output_dropped_total`), and its connected peers
//! (`output_peers`). Kinds whose messages travel over ZeroMQ count drops
//! and peers through their sockets ([`Metrics::mirror`]); the others count
//! them directly.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use super::{Delivery, Reject};
use crate::metrics::Registry;

/// The families every output kind counts into, registered once per
/// registry. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    messages: IntCounterVec,
    dropped: IntCounterVec,
    peers: IntGaugeVec,
    connected: IntGaugeVec,
}

impl Metrics {
    /// Registers the output families.
    pub fn register(registry: &Registry) -> Self {
        Self {
            messages: registry.counter_vec(
                "switchyard_output_messages_total",
                "Messages an output took from its routes (PUB: queued to at least one subscriber; PUSH: queued to a worker; DEALER: sent to a service; blackhole: discarded).",
                &["output"],
            ),
            dropped: registry.counter_vec(
                "switchyard_output_dropped_total",
                "Messages an output dropped after taking them, by output and reason (a subscriber's queue full, a peer gone with messages queued, ...).",
                &["output", "reason"],
            ),
            peers: registry.gauge_vec(
                "switchyard_output_peers",
                "Subscribers, workers or services connected to an output now.",
                &["output"],
            ),
            connected: registry.gauge_vec(
                "switchyard_output_connected",
                "1 while an output reaches its peers (a NATS output: connected to a server; a ZeroMQ output: at least one peer; a blackhole: always), else 0; read at each scrape.",
                &["output"],
            ),
        }
    }

    /// `output_messages_total{output}` of `output`.
    pub fn messages(&self, output: &str) -> IntCounter {
        self.messages.with_label_values(&[output])
    }

    /// `output_dropped_total{output, reason}` of `output`.
    pub fn dropped(&self, output: &str, reason: &str) -> IntCounter {
        self.dropped.with_label_values(&[output, reason])
    }

    /// `output_peers{output}` of an output that counts its peers itself.
    pub fn peers(&self, output: &str) -> IntGauge {
        self.peers.with_label_values(&[output])
    }

    /// Makes sure `output` has an `output_peers` series, at 0 if it has no
    /// peers of its own to count.
    pub fn declare_peers(&self, output: &str) {
        let _ = self.peers.with_label_values(&[output]);
    }

    /// `output_connected{output}` of `output`.
    pub fn connected(&self, output: &str) -> IntGauge {
        self.connected.with_label_values(&[output])
    }

    /// The children `output` counts the messages it refuses in, resolved
    /// once (and so shown at 0 from the start).
    pub fn refusals(&self, output: &str) -> Refusals {
        Refusals(Reject::ALL.map(|reason| self.dropped(output, reason.label())))
    }

    /// The families a ZeroMQ output's sockets count their drops and peers
    /// in as well (see [`crate::zmtp::metrics::Mirror`]).
    pub fn mirror(&self) -> crate::zmtp::metrics::Mirror {
        crate::zmtp::metrics::Mirror::new(self.dropped.clone(), self.peers.clone())
    }
}

/// `output_dropped_total{output, reason}` of one output for the messages it
/// was given and refused ([`Reject`]), resolved once.
#[derive(Clone, Debug)]
pub struct Refusals([IntCounter; Reject::ALL.len()]);

impl Refusals {
    /// Counts what `delivery` refused of a batch of `len` messages.
    pub fn count(&self, delivery: &Delivery, len: usize) {
        for rejection in delivery.rejections() {
            let range = rejection.messages.start.min(len)..rejection.messages.end.min(len);
            let counter = &self.0[rejection.reason as usize];
            counter.inc_by(range.len() as u64);
        }
    }

    /// Every message refused so far, whatever the reason.
    pub fn total(&self) -> u64 {
        self.0.iter().map(IntCounter::get).sum()
    }
}
