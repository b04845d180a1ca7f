//! Prometheus families of the ZMTP layer, registered once per
//! [`Registry`], and [`SocketMetrics`]: the
//! children of one socket, resolved once when the socket is built so the
//! hot path only touches atomics.
//!
//! Families (the `socket` label is the name the router gives the socket,
//! bounded by the config; `reason` values come from fixed sets):
//! - `switchyard_zmtp_handshake_failures_total{reason}`: greeting, version,
//!   mechanism, READY, socket-type or auth failures, and `timeout`; for
//!   CURVE, one reason per check
//!   ([`CurveError::REASONS`](super::curve::CurveError::REASONS), the one
//!   list an owner may count again): `curve_bad_hello` (HELLO of the wrong
//!   size, version or padding), `curve_wrong_server_key` (the client was
//!   given another server key), `curve_bad_initiate` (short, or its box
//!   does not open), `curve_bad_cookie` (not this connection's cookie),
//!   `curve_bad_vouch` (does not open, or names other keys),
//!   `curve_unknown_client` (a key outside `clients_file`), `curve_replay`
//!   (a short nonce that did not increase), `curve_bad_welcome` and
//!   `curve_bad_ready` (our client refusing the server), `curve_rng`.
//! - `switchyard_zmtp_protocol_errors_total{socket,reason}`: traffic-phase
//!   violations; each closed only the offending connection. CURVE adds
//!   `curve_bad_message` (a MESSAGE that is malformed or does not open) and
//!   `curve_replay` (its nonce did not increase).
//! - `switchyard_zmtp_connections_rejected_total{socket,reason}`:
//!   `max_connections`, `accept_error`, `duplicate_identity`.
//! - `switchyard_zmtp_peers{socket}`: peers past the handshake right now.
//! - `switchyard_zmtp_dropped_total{socket,reason}`: messages dropped, e.g.
//!   `subscriber_queue_full`, `peer_disconnected`, `unroutable`.
//! - `switchyard_zmtp_messages_total{socket,direction}`: messages in / out.
//! - `switchyard_zmtp_disconnects_total{socket,reason}`: why established
//!   connections ended (`peer_closed`, `io_error`, `heartbeat_timeout`,
//!   `protocol_error`, `slow_subscriber`, `peer_error`,
//!   `curve_nonces_exhausted`).
//!
//! A socket's owner may ask for its drops and peers to be counted a second
//! time in families of its own ([`Mirror`]), labelled with its name: the
//! outputs do, so every output kind reports `output_dropped_total` and
//! `output_peers` whatever carries its messages. The ZMTP layer does not
//! know who the owner is; it only counts twice.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use crate::metrics::Registry;

/// The ZMTP metric families. Cheap to clone (shared inside).
#[derive(Clone, Debug)]
pub struct Metrics {
    handshake_failures: IntCounterVec,
    protocol_errors: IntCounterVec,
    rejected: IntCounterVec,
    peers: IntGaugeVec,
    dropped: IntCounterVec,
    messages: IntCounterVec,
    disconnects: IntCounterVec,
    mirror: Option<Mirror>,
    /// Where authentication failures are also counted, labelled
    /// `[socket, reason]` (the auth module's
    /// `switchyard_auth_failures_total{listener,reason}`).
    auth_failures: Option<IntCounterVec>,
}

/// Families a socket's owner counts the socket's drops and peers in as
/// well: `dropped` labelled `[owner, reason]`, `peers` labelled `[owner]`,
/// the owner being the socket's name.
#[derive(Clone, Debug)]
pub struct Mirror {
    dropped: IntCounterVec,
    peers: IntGaugeVec,
}

impl Mirror {
    /// Drops go to `dropped` (labels: owner, reason), peers to `peers`
    /// (label: owner).
    pub fn new(dropped: IntCounterVec, peers: IntGaugeVec) -> Self {
        Self { dropped, peers }
    }
}

/// A counter of the socket, and its owner's copy when it has one.
#[derive(Clone, Debug)]
pub(crate) struct Counter {
    wire: IntCounter,
    also: Option<IntCounter>,
}

impl Counter {
    pub(crate) fn inc(&self) {
        self.inc_by(1);
    }

    pub(crate) fn inc_by(&self, n: u64) {
        self.wire.inc_by(n);
        if let Some(also) = &self.also {
            also.inc_by(n);
        }
    }
}

/// The socket's peer gauge, and its owner's copy when it has one.
#[derive(Clone, Debug)]
pub(crate) struct Gauge {
    wire: IntGauge,
    also: Option<IntGauge>,
}

impl Gauge {
    pub(crate) fn inc(&self) {
        self.wire.inc();
        if let Some(also) = &self.also {
            also.inc();
        }
    }

    pub(crate) fn dec(&self) {
        self.wire.dec();
        if let Some(also) = &self.also {
            also.dec();
        }
    }
}

impl Metrics {
    /// Registers the families in `registry`.
    ///
    /// # Panics
    /// If called twice for the same registry (a family can be registered
    /// once); build one `Metrics` per router and clone it.
    pub fn new(registry: &Registry) -> Self {
        Self {
            handshake_failures: registry.counter_vec(
                "switchyard_zmtp_handshake_failures_total",
                "ZMTP connections closed during the handshake, by reason.",
                &["reason"],
            ),
            protocol_errors: registry.counter_vec(
                "switchyard_zmtp_protocol_errors_total",
                "ZMTP connections closed for a protocol violation after the handshake.",
                &["socket", "reason"],
            ),
            rejected: registry.counter_vec(
                "switchyard_zmtp_connections_rejected_total",
                "Incoming ZMTP connections refused or accept errors, by reason.",
                &["socket", "reason"],
            ),
            peers: registry.gauge_vec(
                "switchyard_zmtp_peers",
                "ZMTP peers connected past the handshake.",
                &["socket"],
            ),
            dropped: registry.counter_vec(
                "switchyard_zmtp_dropped_total",
                "Messages dropped by a ZMTP socket, by reason.",
                &["socket", "reason"],
            ),
            messages: registry.counter_vec(
                "switchyard_zmtp_messages_total",
                "Messages received (in) and written (out) by a ZMTP socket.",
                &["socket", "direction"],
            ),
            disconnects: registry.counter_vec(
                "switchyard_zmtp_disconnects_total",
                "Established ZMTP connections that ended, by reason.",
                &["socket", "reason"],
            ),
            mirror: None,
            auth_failures: None,
        }
    }

    /// The same families, with every socket built from the result also
    /// counting its drops and peers in `mirror`.
    pub fn mirrored(&self, mirror: Mirror) -> Self {
        Self {
            mirror: Some(mirror),
            ..self.clone()
        }
    }

    /// The same families, also counting refused credentials into
    /// `auth_failures` (labelled `[socket, reason]`).
    pub fn with_auth_failures(&self, auth_failures: IntCounterVec) -> Self {
        Self {
            auth_failures: Some(auth_failures),
            ..self.clone()
        }
    }

    /// The children of socket `name`, resolved once.
    pub fn socket(&self, name: &str) -> SocketMetrics {
        let dropped = |reason: &str| Counter {
            wire: self.dropped.with_label_values(&[name, reason]),
            also: self
                .mirror
                .as_ref()
                .map(|m| m.dropped.with_label_values(&[name, reason])),
        };
        let rejected = |reason: &str| self.rejected.with_label_values(&[name, reason]);
        SocketMetrics {
            name: name.into(),
            family: self.clone(),
            messages_in: self.messages.with_label_values(&[name, "in"]),
            messages_out: self.messages.with_label_values(&[name, "out"]),
            peers: Gauge {
                wire: self.peers.with_label_values(&[name]),
                also: self
                    .mirror
                    .as_ref()
                    .map(|m| m.peers.with_label_values(&[name])),
            },
            dropped_queue_full: dropped("subscriber_queue_full"),
            dropped_peer_disconnected: dropped("peer_disconnected"),
            dropped_unroutable: dropped("unroutable"),
            dropped_send_timeout: dropped("send_timeout"),
            rejected_max_connections: rejected("max_connections"),
            rejected_accept_error: rejected("accept_error"),
            handshake_timeout: self.handshake_failures.with_label_values(&["timeout"]),
        }
    }
}

/// The metric children of one socket. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SocketMetrics {
    name: std::sync::Arc<str>,
    family: Metrics,
    /// `messages_total{direction="in"}`.
    pub(crate) messages_in: IntCounter,
    /// `messages_total{direction="out"}`.
    pub(crate) messages_out: IntCounter,
    /// `peers`.
    pub(crate) peers: Gauge,
    /// `dropped_total{reason="subscriber_queue_full"}`.
    pub(crate) dropped_queue_full: Counter,
    /// `dropped_total{reason="peer_disconnected"}`.
    pub(crate) dropped_peer_disconnected: Counter,
    /// `dropped_total{reason="unroutable"}`.
    pub(crate) dropped_unroutable: Counter,
    /// `dropped_total{reason="send_timeout"}`.
    pub(crate) dropped_send_timeout: Counter,
    /// `connections_rejected_total{reason="max_connections"}`.
    pub(crate) rejected_max_connections: IntCounter,
    /// `connections_rejected_total{reason="accept_error"}`.
    pub(crate) rejected_accept_error: IntCounter,
    /// `handshake_failures_total{reason="timeout"}`.
    pub(crate) handshake_timeout: IntCounter,
}

impl SocketMetrics {
    /// The socket's name (its `socket` label).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Messages this socket dropped so far, all reasons together. Reads the
    /// family's series, so it is for status pages, not the hot path.
    pub fn dropped_total(&self) -> u64 {
        use prometheus::core::Collector;
        self.family
            .dropped
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .filter(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "socket" && l.value() == &*self.name)
            })
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    /// Counts a handshake failure (rare path: resolves the child here).
    /// A refused credential is also counted as an authentication failure
    /// of this socket: `curve_handshake` for every CURVE reason,
    /// `bad_signature` for a refused PLAIN user.
    pub(crate) fn handshake_failure(&self, reason: &str) {
        self.family
            .handshake_failures
            .with_label_values(&[reason])
            .inc();
        if let Some(auth) = &self.family.auth_failures {
            let as_auth = if reason.starts_with("curve_") {
                Some("curve_handshake")
            } else if reason == "auth" {
                Some("bad_signature")
            } else {
                None
            };
            if let Some(r) = as_auth {
                auth.with_label_values(&[&self.name, r]).inc();
            }
        }
    }

    /// Counts a protocol error (rare path).
    pub(crate) fn protocol_error(&self, reason: &str) {
        self.family
            .protocol_errors
            .with_label_values(&[&self.name, reason])
            .inc();
    }

    /// Counts a rejected connection (rare path).
    pub(crate) fn rejected(&self, reason: &str) {
        self.family
            .rejected
            .with_label_values(&[&self.name, reason])
            .inc();
    }

    /// Counts the end of an established connection (rare path).
    pub(crate) fn disconnect(&self, reason: &str) {
        self.family
            .disconnects
            .with_label_values(&[&self.name, reason])
            .inc();
    }

    /// Counts `n` dropped messages with `reason` (rare path).
    pub(crate) fn dropped(&self, reason: &str, n: u64) {
        if n > 0 {
            self.family
                .dropped
                .with_label_values(&[&self.name, reason])
                .inc_by(n);
            if let Some(mirror) = &self.family.mirror {
                mirror
                    .dropped
                    .with_label_values(&[&self.name, reason])
                    .inc_by(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_children_share_families() {
        let reg = Registry::new();
        let m = Metrics::new(&reg);
        let a = m.socket("a");
        a.messages_in.inc_by(3);
        a.dropped_queue_full.inc();
        a.protocol_error("frame_too_large");
        let b = m.socket("a");
        assert_eq!(b.messages_in.get(), 3);
        let text = reg.encode();
        assert!(text.contains(
            "switchyard_zmtp_dropped_total{reason=\"subscriber_queue_full\",socket=\"a\"} 1"
        ));
        assert!(text.contains(
            "switchyard_zmtp_protocol_errors_total{reason=\"frame_too_large\",socket=\"a\"} 1"
        ));
    }

    #[test]
    fn a_mirrored_socket_counts_drops_and_peers_twice() {
        let reg = Registry::new();
        let m = Metrics::new(&reg);
        let mirror = Mirror::new(
            reg.counter_vec("owner_dropped_total", "drops", &["owner", "reason"]),
            reg.gauge_vec("owner_peers", "peers", &["owner"]),
        );
        let s = m.mirrored(mirror).socket("o");
        s.dropped_queue_full.inc_by(2);
        s.dropped("peer_queue_full", 1);
        s.peers.inc();
        let plain = m.socket("p");
        plain.dropped_queue_full.inc();
        let text = reg.encode();
        assert!(
            text.contains("owner_dropped_total{owner=\"o\",reason=\"subscriber_queue_full\"} 2")
        );
        assert!(text.contains("owner_dropped_total{owner=\"o\",reason=\"peer_queue_full\"} 1"));
        assert!(text.contains("owner_peers{owner=\"o\"} 1"));
        assert!(text.contains("switchyard_zmtp_peers{socket=\"o\"} 1"));
        assert!(!text.contains("owner=\"p\""));
        assert_eq!(s.dropped_total(), 3);
    }
}
