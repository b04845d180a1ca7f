//! Settings shared by every ZMTP peer role: limits, security, timeouts,
//! high-water marks and reconnect backoff.
//!
//! Every field has a safe default ([`Options::default`]); the router's
//! config layer overrides what the operator set. Sizes are in bytes,
//! counts in messages.

use std::time::Duration;

use bytes::Bytes;

use super::handshake::Mechanism;
use super::limits::Limits;

/// Settings of one ZMTP socket (one router input or output).
#[derive(Clone, Debug)]
pub struct Options {
    /// Frame, message and command size limits, enforced before allocating.
    pub limits: Limits,
    /// Identity sent in our READY (`Identity` property); empty = none.
    pub identity: Bytes,
    /// Security mechanism (NULL, PLAIN or CURVE).
    pub mechanism: Mechanism,
    /// Time a new connection has to finish the greeting and READY exchange;
    /// a peer that is silent or slow for longer is dropped and counted
    /// (`handshake_failures_total{reason="timeout"}`). Default 5 s.
    pub handshake_timeout: Duration,
    /// Interval of the PING commands sent to ZMTP 3.1 peers. `ZERO` turns
    /// heartbeats (and the dead-peer check) off. Default 10 s.
    pub heartbeat_interval: Duration,
    /// A heartbeating peer from which nothing (not even a PONG) arrived for
    /// this long is disconnected (`disconnects_total{reason="heartbeat_timeout"}`).
    /// Default 30 s.
    pub heartbeat_timeout: Duration,
    /// Connections accepted at once per bound endpoint; excess connections
    /// are closed at once and counted
    /// (`connections_rejected_total{reason="max_connections"}`). Default 1024.
    pub max_connections: usize,
    /// Messages queued per peer before the role's full-queue rule applies
    /// (PUB drops for that subscriber, PUSH/DEALER/ROUTER wait). Default 1000.
    pub send_hwm: usize,
    /// Bytes (sum of frame bodies) queued per peer before the full-queue rule
    /// applies. Default 8 MiB.
    pub send_hwm_bytes: usize,
    /// Messages buffered inbound for the whole socket (SUB, PULL, ROUTER);
    /// when full, connection readers stop reading (TCP backpressure).
    /// Default 1000.
    pub recv_hwm: usize,
    /// Bytes (sum of frame bodies) buffered inbound for the whole socket,
    /// with the same backpressure. Default 64 MiB.
    pub recv_hwm_bytes: usize,
    /// First reconnect delay of a connecting socket; doubles after each
    /// failed attempt. Default 100 ms.
    pub reconnect_interval: Duration,
    /// Cap of the reconnect delay. Default 10 s.
    pub reconnect_interval_max: Duration,
    /// How long PUSH and DEALER wait for a peer when none is connected, and
    /// ROUTER waits for room in one peer's queue, before returning an error.
    /// Default 5 s.
    pub send_timeout: Duration,
    /// PUB: disconnect a subscriber whose queue stayed full this long
    /// (`disconnects_total{reason="slow_subscriber"}`). Default `None`
    /// (never; its messages are dropped and counted instead).
    pub slow_subscriber_timeout: Option<Duration>,
    /// PUB: most distinct subscription prefixes one subscriber may hold; one
    /// more closes that connection (`protocol_errors_total{reason="too_many_subscriptions"}`).
    /// Default 10,000.
    pub max_subscriptions: usize,
    /// PUB: most bytes of subscription prefixes one subscriber may hold.
    /// Default 1 MiB.
    pub max_subscription_bytes: usize,
    /// Kernel send buffer (`SO_SNDBUF`) of each connection, in bytes;
    /// `None` (default) = the OS default.
    pub send_buffer_size: Option<u32>,
    /// Kernel receive buffer (`SO_RCVBUF`) of each connection, in bytes;
    /// `None` (default) = the OS default.
    pub recv_buffer_size: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            identity: Bytes::new(),
            mechanism: Mechanism::Null,
            handshake_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(30),
            max_connections: 1024,
            send_hwm: 1000,
            send_hwm_bytes: 8 << 20,
            recv_hwm: 1000,
            recv_hwm_bytes: 64 << 20,
            reconnect_interval: Duration::from_millis(100),
            reconnect_interval_max: Duration::from_secs(10),
            send_timeout: Duration::from_secs(5),
            slow_subscriber_timeout: None,
            max_subscriptions: 10_000,
            max_subscription_bytes: 1 << 20,
            send_buffer_size: None,
            recv_buffer_size: None,
        }
    }
}

impl Options {
    /// `send_hwm` and `recv_hwm` clamped to at least one message (a zero
    /// capacity channel cannot be built), and the reconnect cap at least the
    /// first interval.
    pub(crate) fn sanitized(mut self) -> Self {
        self.send_hwm = self.send_hwm.clamp(1, MAX_QUEUE);
        self.recv_hwm = self.recv_hwm.clamp(1, MAX_QUEUE);
        self.send_hwm_bytes = self.send_hwm_bytes.max(1);
        self.recv_hwm_bytes = self.recv_hwm_bytes.max(1);
        self.max_connections = self.max_connections.max(1);
        if self.reconnect_interval.is_zero() {
            self.reconnect_interval = Duration::from_millis(1);
        }
        if self.reconnect_interval_max < self.reconnect_interval {
            self.reconnect_interval_max = self.reconnect_interval;
        }
        self
    }
}

/// Largest queue capacity tokio's bounded channel accepts, with margin.
const MAX_QUEUE: usize = 1 << 28;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitized_fixes_degenerate_values() {
        let o = Options {
            send_hwm: 0,
            recv_hwm: 0,
            reconnect_interval: Duration::ZERO,
            reconnect_interval_max: Duration::ZERO,
            ..Options::default()
        }
        .sanitized();
        assert_eq!(o.send_hwm, 1);
        assert_eq!(o.recv_hwm, 1);
        assert!(o.reconnect_interval_max >= o.reconnect_interval);
        assert!(!o.reconnect_interval.is_zero());
    }
}
