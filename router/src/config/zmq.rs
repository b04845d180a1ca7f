//! Settings shared by every ZeroMQ input and output: where it attaches, the
//! envelope, the wire limits, queues, timers and PLAIN or CURVE security.

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use super::checker::Checker;
use super::curve::{self, Curve};
use super::endpoint::{Attach, parse_bind, parse_connect};
use super::error::Subject;
use super::plain::{self, Plain};
use super::raw::{OneOrMany, RawZmq, RawZmqQueues, S};
use super::units::{format_size, serialize_duration, serialize_opt_duration};
use crate::zmtp;
use crate::zmtp::handshake::Mechanism;

/// One ZeroMQ input or output: where it attaches, how messages map onto
/// frames, and its limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZmqSocket {
    /// Bind or connect. Reloads live (the entry is rebuilt).
    pub attach: Attach,
    /// How a message maps onto ZeroMQ frames. Reloads live (the entry is rebuilt).
    pub envelope: Envelope,
    /// Limits, queues, timers, authentication. Reloads live (the entry is rebuilt).
    pub options: ZmqOptions,
}

pub use crate::envelope::Envelope;

/// Wire limits, queues and timers of one ZeroMQ input or output. Every
/// field has a safe default ([`ZmqOptions::default`]); all are restart
/// required. Limits are enforced before anything is allocated, so a hostile
/// peer costs at most `max_message_size` of memory per connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZmqOptions {
    /// Largest frame accepted, in bytes. Default 1 MiB; 64 B to 256 MiB, and
    /// at most `max_message_size`. A larger frame closes the connection.
    pub max_frame_size: usize,
    /// Largest message (sum of its frames) accepted, in bytes. Default
    /// 1 MiB; 64 B to 256 MiB.
    pub max_message_size: usize,
    /// Most frames in one message. Default 64; 1 to 65536, and at least the
    /// envelope's frame count on inputs.
    pub max_frames: usize,
    /// How long a new connection has to finish the ZMTP handshake. Default
    /// 5s; 100ms to 5m.
    #[serde(serialize_with = "serialize_duration")]
    pub handshake_timeout: Duration,
    /// How often to PING an idle peer; `None` (written `"off"`) sends no
    /// heartbeats. Default 10s; 100ms to 1h.
    #[serde(serialize_with = "serialize_opt_duration")]
    pub heartbeat_interval: Option<Duration>,
    /// How long a peer may stay silent (no traffic, no PONG) before it is
    /// dropped. Default 30s; longer than `heartbeat_interval`, at most 1h.
    #[serde(serialize_with = "serialize_duration")]
    pub heartbeat_timeout: Duration,
    /// Most peers connected at once to a bound socket; more are refused.
    /// Default 1024; 1 to 65536. Bind only.
    pub max_connections: usize,
    /// Per-peer send queue bound, in messages. Default 1000; 1 to 10000000.
    /// Outputs only.
    pub send_hwm: usize,
    /// Per-peer send queue bound, in bytes. Default 8 MiB; 1 KiB to 1 GiB.
    /// Outputs only.
    pub send_hwm_bytes: usize,
    /// Per-peer receive bound, in messages read ahead before the input
    /// stops reading that peer. Default 1000; 1 to 10000000. Inputs only.
    pub recv_hwm: usize,
    /// First delay before reconnecting a lost peer; it doubles per failure
    /// up to `reconnect_interval_max`. Default 100ms; 10ms to 10m. Connect
    /// only.
    #[serde(serialize_with = "serialize_duration")]
    pub reconnect_interval: Duration,
    /// Cap of the reconnect backoff. Default 10s; at least
    /// `reconnect_interval`, at most 1h. Connect only.
    #[serde(serialize_with = "serialize_duration")]
    pub reconnect_interval_max: Duration,
    /// How long a send waits for a worker with room (or any worker at all)
    /// before failing. Default 5s; 1ms to 1h. `zmq-push` outputs only.
    #[serde(serialize_with = "serialize_duration")]
    pub send_timeout: Duration,
    /// Disconnect a subscriber whose queue stays full this long; `None`
    /// (the default, or `"off"`) keeps it and drops its messages, counted.
    /// 100ms to 1h. `zmq-pub` outputs only.
    #[serde(serialize_with = "serialize_opt_duration")]
    pub slow_subscriber_timeout: Option<Duration>,
    /// ZMTP PLAIN authentication; `None` (the default) uses NULL.
    pub plain: Option<Plain>,
    /// ZMTP CURVE authentication and encryption (never with `plain`);
    /// `None` (the default) uses NULL. Its key files are read again on
    /// every reload.
    pub curve: Option<Curve>,
    /// The ZMTP Identity sent in READY: 1 to 255 bytes, not starting with
    /// a zero byte. Default none.
    pub identity: Option<String>,
    /// `auth = ["anonymous"]`: its peers carry no principal (no PLAIN or
    /// CURVE server) and their messages, or subscriptions, are taken
    /// under the anonymous ACL rules. Required for such an input or
    /// `zmq-pub` output once the config has `[[auth]]` or `[[acl]]`.
    pub anonymous: bool,
    /// What a message the ACL forbids costs its peer: `drop` (the default:
    /// the message is dropped and counted) or `disconnect` (also the
    /// connection is cut). Inputs only.
    pub on_forbidden: OnForbidden,
}

/// [`ZmqOptions::on_forbidden`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnForbidden {
    /// Drop the message, count it, keep the connection.
    #[default]
    Drop,
    /// Drop the message, count it, and cut the connection.
    Disconnect,
}

impl ZmqOptions {
    /// Whether the peers authenticate to this socket, so their messages
    /// carry a principal: it is a PLAIN or CURVE server.
    pub fn authenticates_peers(&self) -> bool {
        matches!(self.plain, Some(Plain::Server { .. }))
            || matches!(self.curve, Some(Curve::Server { .. }))
    }
}

impl Default for ZmqOptions {
    /// The ZMTP layer's own defaults: one source of truth for both.
    fn default() -> Self {
        let wire = zmtp::options::Options::default();
        Self {
            max_frame_size: wire.limits.max_frame_size,
            max_message_size: wire.limits.max_message_size,
            max_frames: wire.limits.max_frames,
            handshake_timeout: wire.handshake_timeout,
            heartbeat_interval: (!wire.heartbeat_interval.is_zero())
                .then_some(wire.heartbeat_interval),
            heartbeat_timeout: wire.heartbeat_timeout,
            max_connections: wire.max_connections,
            send_hwm: wire.send_hwm,
            send_hwm_bytes: wire.send_hwm_bytes,
            recv_hwm: wire.recv_hwm,
            reconnect_interval: wire.reconnect_interval,
            reconnect_interval_max: wire.reconnect_interval_max,
            send_timeout: wire.send_timeout,
            slow_subscriber_timeout: wire.slow_subscriber_timeout,
            plain: None,
            curve: None,
            identity: None,
            anonymous: false,
            on_forbidden: OnForbidden::Drop,
        }
    }
}

impl ZmqOptions {
    /// The ZMTP layer's settings for a socket built from this entry; what
    /// the entry does not set keeps the ZMTP layer's default.
    pub fn socket_options(&self) -> zmtp::options::Options {
        let defaults = zmtp::options::Options::default();
        zmtp::options::Options {
            limits: zmtp::limits::Limits {
                max_frame_size: self.max_frame_size,
                max_message_size: self.max_message_size,
                max_frames: self.max_frames,
                ..defaults.limits
            },
            identity: self
                .identity
                .as_ref()
                .map(|i| Bytes::copy_from_slice(i.as_bytes()))
                .unwrap_or_default(),
            mechanism: match (&self.plain, &self.curve) {
                (Some(plain), _) => plain.mechanism(),
                (None, Some(curve)) => curve.mechanism(),
                (None, None) => Mechanism::Null,
            },
            handshake_timeout: self.handshake_timeout,
            // The ZMTP layer spells "no heartbeats" as a zero interval.
            heartbeat_interval: self.heartbeat_interval.unwrap_or(Duration::ZERO),
            heartbeat_timeout: self.heartbeat_timeout,
            max_connections: self.max_connections,
            send_hwm: self.send_hwm,
            send_hwm_bytes: self.send_hwm_bytes,
            recv_hwm: self.recv_hwm,
            reconnect_interval: self.reconnect_interval,
            reconnect_interval_max: self.reconnect_interval_max,
            send_timeout: self.send_timeout,
            slow_subscriber_timeout: self.slow_subscriber_timeout,
            ..defaults
        }
    }
}

/// Which ZeroMQ kind an entry is; decides which options apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ZmqRole {
    /// `zmq-sub` input.
    Sub,
    /// `zmq-pull` input.
    Pull,
    /// `zmq-pub` output.
    Pub,
    /// `zmq-push` output.
    Push,
    /// `zmq-router` input.
    Router,
    /// `zmq-dealer` output.
    Dealer,
}

impl ZmqRole {
    fn is_input(self) -> bool {
        matches!(self, ZmqRole::Sub | ZmqRole::Pull | ZmqRole::Router)
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            ZmqRole::Sub => "a zmq-sub input",
            ZmqRole::Pull => "a zmq-pull input",
            ZmqRole::Pub => "a zmq-pub output",
            ZmqRole::Push => "a zmq-push output",
            ZmqRole::Router => "a zmq-router input",
            ZmqRole::Dealer => "a zmq-dealer output",
        }
    }
}

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;
const MS: Duration = Duration::from_millis(1);
const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// Reads the ZeroMQ part of one entry: the common fields, and the queue
/// settings its kind has (a field its kind lacks was refused when the entry
/// was read).
pub(crate) fn build(
    raw: RawZmq<'_>,
    queues: RawZmqQueues<'_>,
    role: ZmqRole,
    subject: &Subject,
    c: &mut Checker<'_>,
) -> ZmqSocket {
    let attach = build_attach(raw, subject, c);
    let envelope = c.choice(
        subject,
        "envelope",
        raw.envelope.as_ref(),
        Envelope::TopicPayload,
        &[
            ("topic-payload", Envelope::TopicPayload),
            ("topic-attrs-payload", Envelope::TopicAttrsPayload),
            ("single-frame", Envelope::SingleFrame),
        ],
    );

    let by_attach = [
        (
            raw.connect.is_some(),
            "max_connections",
            span_of(raw.max_connections),
            "bind",
        ),
        (
            raw.bind.is_some(),
            "reconnect_interval",
            span_of(raw.reconnect_interval),
            "connect",
        ),
        (
            raw.bind.is_some(),
            "reconnect_interval_max",
            span_of(raw.reconnect_interval_max),
            "connect",
        ),
    ];
    for (refuse, field, span, needs) in by_attach {
        if let (true, Some(span)) = (refuse, span) {
            c.invalid(subject, field, span, format!("only applies with `{needs}`"));
        }
    }

    let d = ZmqOptions::default();
    let max_frame_size = c.size(
        subject,
        "max_frame_size",
        raw.max_frame_size.as_ref(),
        d.max_frame_size,
        64..=256 * MIB,
    );
    let max_message_size = c.size(
        subject,
        "max_message_size",
        raw.max_message_size.as_ref(),
        d.max_message_size,
        64..=256 * MIB,
    );
    if max_frame_size > max_message_size {
        let span = first_span(raw, &[raw.max_frame_size, raw.max_message_size]);
        c.invalid(
            subject,
            "max_frame_size",
            span,
            format!(
                "{} is larger than max_message_size ({}); a frame is part of a message",
                format_size(max_frame_size as u64),
                format_size(max_message_size as u64)
            ),
        );
    }
    let max_frames = c.count(
        subject,
        "max_frames",
        raw.max_frames.as_ref(),
        d.max_frames,
        1..=65536,
    );
    if role.is_input() && max_frames < envelope.frames() {
        let span = first_span(raw, &[raw.max_frames]);
        c.invalid(
            subject,
            "max_frames",
            span,
            format!(
                "is {max_frames}, but the {:?} envelope needs {} frames per message",
                Envelope::name(envelope),
                envelope.frames()
            ),
        );
    }
    let handshake_timeout = c.duration(
        subject,
        "handshake_timeout",
        raw.handshake_timeout.as_ref(),
        d.handshake_timeout,
        100 * MS..=5 * MIN,
    );
    let heartbeat_interval = c.duration_or_off(
        subject,
        "heartbeat_interval",
        raw.heartbeat_interval.as_ref(),
        d.heartbeat_interval,
        100 * MS..=HOUR,
        true,
    );
    let heartbeat_timeout = c.duration(
        subject,
        "heartbeat_timeout",
        raw.heartbeat_timeout.as_ref(),
        d.heartbeat_timeout,
        100 * MS..=HOUR,
    );
    match (heartbeat_interval, raw.heartbeat_timeout) {
        (None, Some(t)) => c.invalid(
            subject,
            "heartbeat_timeout",
            t.span(),
            "has no effect while heartbeat_interval is \"off\"",
        ),
        (Some(i), _) if heartbeat_timeout <= i => {
            let span = first_span(raw, &[raw.heartbeat_timeout, raw.heartbeat_interval]);
            c.invalid(subject, "heartbeat_timeout", span, "must be longer than heartbeat_interval, or every peer would time out between pings");
        }
        _ => {}
    }
    let max_connections = c.count(
        subject,
        "max_connections",
        raw.max_connections.as_ref(),
        d.max_connections,
        1..=65536,
    );
    let send_hwm = c.count(
        subject,
        "send_hwm",
        queues.send_hwm,
        d.send_hwm,
        1..=10_000_000,
    );
    let send_hwm_bytes = c.size(
        subject,
        "send_hwm_bytes",
        queues.send_hwm_bytes,
        d.send_hwm_bytes,
        KIB..=GIB,
    );
    let recv_hwm = c.count(
        subject,
        "recv_hwm",
        queues.recv_hwm,
        d.recv_hwm,
        1..=10_000_000,
    );
    let reconnect_interval = c.duration(
        subject,
        "reconnect_interval",
        raw.reconnect_interval.as_ref(),
        d.reconnect_interval,
        10 * MS..=10 * MIN,
    );
    let reconnect_interval_max = c.duration(
        subject,
        "reconnect_interval_max",
        raw.reconnect_interval_max.as_ref(),
        d.reconnect_interval_max,
        10 * MS..=HOUR,
    );
    if reconnect_interval_max < reconnect_interval {
        let span = first_span(raw, &[raw.reconnect_interval_max, raw.reconnect_interval]);
        c.invalid(
            subject,
            "reconnect_interval_max",
            span,
            "must be at least reconnect_interval",
        );
    }
    let send_timeout = c.duration(
        subject,
        "send_timeout",
        queues.send_timeout,
        d.send_timeout,
        MS..=HOUR,
    );
    let slow_subscriber_timeout = c.duration_or_off(
        subject,
        "slow_subscriber_timeout",
        queues.slow_subscriber_timeout,
        None,
        100 * MS..=HOUR,
        true,
    );

    let plain = raw
        .plain
        .as_ref()
        .and_then(|p| plain::build(p.get_ref(), p.span(), subject, c));
    let curve = match (&raw.plain, &raw.curve) {
        (Some(_), Some(curve)) => {
            c.invalid(
                subject,
                "curve",
                curve.span(),
                "set either `plain` or `curve`, not both",
            );
            None
        }
        (None, Some(raw)) => curve::build(raw.get_ref(), raw.span(), subject, c),
        (_, None) => None,
    };
    let identity = raw.identity.as_ref().and_then(|id| {
        let text = id.get_ref();
        if text.is_empty() || text.len() > 255 || text.starts_with('\0') {
            c.invalid(
                subject,
                "identity",
                id.span(),
                "must be 1 to 255 bytes and not start with a zero byte",
            );
            None
        } else {
            Some(text.clone())
        }
    });

    let on_forbidden = c.choice(
        subject,
        "on_forbidden",
        queues.on_forbidden,
        OnForbidden::Drop,
        &[
            ("drop", OnForbidden::Drop),
            ("disconnect", OnForbidden::Disconnect),
        ],
    );
    let anonymous = match raw.auth {
        None => false,
        Some(list) => {
            if !matches!(
                role,
                ZmqRole::Sub | ZmqRole::Pull | ZmqRole::Router | ZmqRole::Pub
            ) {
                c.invalid(
                    subject,
                    "auth",
                    list.span(),
                    format!("has no effect on {}", role.describe()),
                );
            }
            let names = list.get_ref();
            if names.len() != 1 || names[0].get_ref() != super::auth::ANONYMOUS {
                c.invalid(
                    subject,
                    "auth",
                    list.span(),
                    "ZeroMQ peers authenticate with `plain` or `curve`; `auth` can only say [\"anonymous\"]",
                );
            }
            let server = matches!(plain, Some(Plain::Server { .. }))
                || matches!(curve, Some(Curve::Server { .. }));
            if server {
                c.invalid(
                    subject,
                    "auth",
                    list.span(),
                    "[\"anonymous\"] contradicts the `plain` or `curve` users, who authenticate every peer",
                );
            }
            true
        }
    };
    ZmqSocket {
        attach,
        envelope,
        options: ZmqOptions {
            max_frame_size,
            max_message_size,
            max_frames,
            handshake_timeout,
            heartbeat_interval,
            heartbeat_timeout,
            max_connections,
            send_hwm,
            send_hwm_bytes,
            recv_hwm,
            reconnect_interval,
            reconnect_interval_max,
            send_timeout,
            slow_subscriber_timeout,
            plain,
            curve,
            identity,
            anonymous,
            on_forbidden,
        },
    }
}

/// The span of an optional raw value.
pub(crate) fn span_of<T>(value: &Option<S<T>>) -> Option<Range<usize>> {
    value.as_ref().map(|v| v.span())
}

/// Where to point at a problem between settings: the first of `settings`
/// that is set, else the entry's name.
pub(crate) fn first_span<T>(raw: RawZmq<'_>, settings: &[&Option<S<T>>]) -> Range<usize> {
    settings
        .iter()
        .find_map(|v| span_of(v))
        .unwrap_or_else(|| raw.name.span())
}

/// Reads `bind` or `connect`: exactly one of them.
fn build_attach(raw: RawZmq<'_>, subject: &Subject, c: &mut Checker<'_>) -> Attach {
    let placeholder = Attach::Connect(Vec::new());
    match (raw.bind, raw.connect) {
        (Some(bind), None) => match parse_bind(bind.get_ref()) {
            Ok(addr) => Attach::Bind(addr),
            Err(reason) => {
                c.invalid(subject, "bind", bind.span(), reason);
                placeholder
            }
        },
        (None, Some(connect)) => {
            let items: Vec<(String, Range<usize>)> = match connect.get_ref() {
                OneOrMany::One(s) => vec![(s.clone(), connect.span())],
                OneOrMany::Many(list) => list
                    .iter()
                    .map(|s| (s.get_ref().clone(), s.span()))
                    .collect(),
            };
            if items.is_empty() {
                c.invalid(subject, "connect", connect.span(), "lists no endpoint");
            }
            let mut endpoints = Vec::with_capacity(items.len());
            for (text, span) in items {
                match parse_connect(&text) {
                    Ok(e) if endpoints.contains(&e) => {
                        c.invalid(subject, "connect", span, format!("{e} is listed twice"));
                    }
                    Ok(e) => endpoints.push(e),
                    Err(reason) => c.invalid(subject, "connect", span, reason),
                }
            }
            Attach::Connect(endpoints)
        }
        (Some(bind), Some(_)) => {
            c.invalid(
                subject,
                "bind",
                bind.span(),
                "set either `bind` or `connect`, not both",
            );
            placeholder
        }
        (None, None) => {
            c.invalid(
                subject,
                "bind",
                raw.name.span(),
                "needs `bind = \"tcp://IP:port\"` or `connect = \"tcp://host:port\"`",
            );
            placeholder
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::fixture::{assert_one, base, problems};

    #[test]
    fn options_that_do_not_apply_are_refused() {
        let got = problems(&base(
            "send_hwm = 5\nslow_subscriber_timeout = \"1s\"",
            "recv_hwm = 5\nreconnect_interval = \"1s\"",
            "",
        ));
        assert_eq!(got.len(), 4, "{got:#?}");
        assert!(
            got[0].contains("input \"in\": send_hwm: has no effect on a zmq-pull input"),
            "{got:#?}"
        );
        assert!(
            got[1].contains("slow_subscriber_timeout: has no effect on a zmq-pull input"),
            "{got:#?}"
        );
        assert!(
            got[2].contains("output \"out\": recv_hwm: has no effect on a zmq-push output"),
            "{got:#?}"
        );
        assert!(
            got[3].contains("reconnect_interval: only applies with `connect`"),
            "{got:#?}"
        );
        let text = base("", "", "").replace(
            "bind = \"tcp://127.0.0.1:6556\"",
            "connect = \"tcp://127.0.0.1:6556\"\nmax_connections = 5",
        );
        assert_one(
            &problems(&text),
            "max_connections: only applies with `bind`",
        );
    }

    #[test]
    fn limits_must_fit_together() {
        let got = problems(&base(
            "max_frame_size = \"2MiB\"\nmax_message_size = \"1MiB\"",
            "",
            "",
        ));
        assert_one(
            &got,
            "input \"in\": max_frame_size: 2MiB is larger than max_message_size (1MiB)",
        );
        let got = problems(&base(
            "envelope = \"topic-attrs-payload\"\nmax_frames = 2",
            "",
            "",
        ));
        assert_one(
            &got,
            "max_frames: is 2, but the \"topic-attrs-payload\" envelope needs 3 frames",
        );
        let got = problems(&base("heartbeat_interval = \"30s\"", "", ""));
        assert_one(
            &got,
            "heartbeat_timeout: must be longer than heartbeat_interval",
        );
        let got = problems(&base(
            "heartbeat_interval = \"off\"\nheartbeat_timeout = \"5s\"",
            "",
            "",
        ));
        assert_one(
            &got,
            "heartbeat_timeout: has no effect while heartbeat_interval is \"off\"",
        );
        let text = base("", "", "").replace(
            "bind = \"tcp://127.0.0.1:6556\"",
            "connect = \"tcp://h:1\"\nreconnect_interval = \"5s\"\nreconnect_interval_max = \"1s\"",
        );
        assert_one(
            &problems(&text),
            "reconnect_interval_max: must be at least reconnect_interval",
        );
        let got = problems(&base(
            "max_frames = 0\nmax_message_size = \"10GiB\"",
            "",
            "",
        ));
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[0]
                .contains("t.toml:5:14: input \"in\": max_frames: must be from 1 to 65536, got 0"),
            "{got:#?}"
        );
        assert!(
            got[1].contains("max_message_size: must be from 64B to 256MiB, got 10GiB"),
            "{got:#?}"
        );
    }

    #[test]
    fn attach_and_envelope_mistakes() {
        let text = base("", "", "").replace("bind = \"tcp://127.0.0.1:5556\"", "");
        assert_one(
            &problems(&text),
            "input \"in\": bind: needs `bind = \"tcp://IP:port\"` or `connect",
        );
        let got = problems(&base("connect = \"tcp://h:1\"", "", ""));
        assert_one(&got, "set either `bind` or `connect`, not both");
        let text = base("envelope = \"topic_payload\"", "", "");
        assert_one(
            &problems(&text),
            "envelope: \"topic_payload\" is not one of \"topic-payload\", \"topic-attrs-payload\", \"single-frame\" (did you mean \"topic-payload\"?)",
        );
        let text = base("", "", "").replace(
            "bind = \"tcp://127.0.0.1:6556\"",
            "connect = [\"tcp://a:1\", \"tcp://*:2\", \"ipc:///x\"]",
        );
        let got = problems(&text);
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[0].contains("t.toml:10:25: output \"out\": connect: \"tcp://*:2\""),
            "{got:#?}"
        );
        assert!(
            got[1].contains("only tcp:// endpoints are supported"),
            "{got:#?}"
        );
    }

    #[test]
    fn identity_mistakes() {
        let got = problems(&base("identity = \"\"", "", ""));
        assert_one(&got, "identity: must be 1 to 255 bytes");
        let long = "x".repeat(256);
        let got = problems(&base(&format!("identity = \"{long}\""), "", ""));
        assert_one(&got, "identity: must be 1 to 255 bytes");
    }
}
