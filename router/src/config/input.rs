//! Inputs: where messages enter the router. One `[[input]]` per listener
//! or set of connections; `kind` picks the protocol.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use super::checker::Checker;
use super::endpoint::parse_listen;
use super::error::Subject;
use super::raw::{RawHttp, RawJetStreamInput, RawNatsInput, RawZmqReader, RawZmqRouter};
use super::units::serialize_duration;
use super::zmq::{self, ZmqRole, ZmqSocket};

/// One `[[input]]`. Reloads live: a changed input is rebuilt (stopped, then
/// started from its new entry); the others keep their listeners and peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Input {
    /// Unique among inputs, outputs, plugins and routes; a metric label
    /// (`switchyard_input_messages_total{input}`).
    pub name: String,
    /// The protocol and its settings.
    #[serde(flatten)]
    pub kind: InputKind,
}

/// An input's protocol, written `kind = "zmq-sub"` and so on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum InputKind {
    /// `zmq-sub`: the SUB side facing PUB publishers (devices connect with
    /// PUB to a bound input, or the input connects to them). It subscribes
    /// its publishers to the literal prefixes of the route patterns.
    ZmqSub(ZmqSocket),
    /// `zmq-pull`: the PULL side facing PUSH producers.
    ZmqPull(ZmqSocket),
    /// `zmq-router`: the ROUTER side facing REQ and DEALER clients. Each
    /// request is a message that waits for one reply.
    ZmqRouter(RouterInput),
    /// `http`: `POST /v1/publish` and `POST /v1/publish/{topic}`.
    Http(HttpInput),
    /// `nats`: a core NATS client subscribed to subjects.
    Nats(super::NatsInput),
    /// `nats-jetstream`: a durable pull consumer of a JetStream stream.
    NatsJetstream(super::JetStreamInput),
}

impl Input {
    /// The largest message this input accepts, in bytes: a ZeroMQ input's
    /// `max_message_size`, an HTTP input's `max_body`.
    pub fn max_message_size(&self) -> usize {
        match &self.kind {
            InputKind::Http(h) => h.max_body,
            InputKind::Nats(n) => n.max_message_size,
            InputKind::NatsJetstream(j) => j.max_message_size,
            _ => self.zmq().map_or(0, |z| z.options.max_message_size),
        }
    }

    /// The resources it holds while it runs: what two entries may not
    /// share, and what a rebuilt entry must give up before its successor
    /// can take it.
    pub fn resources(&self) -> Vec<super::Resource> {
        let listen = match &self.kind {
            InputKind::Http(h) => Some(("listen", h.listen)),
            _ => self
                .zmq()
                .and_then(|z| z.attach.bound())
                .map(|a| ("bind", a)),
        };
        listen
            .map(|(field, addr)| super::Resource::Listen { field, addr })
            .into_iter()
            .collect()
    }

    /// The ZeroMQ settings of a ZeroMQ input.
    pub fn zmq(&self) -> Option<&ZmqSocket> {
        match &self.kind {
            InputKind::ZmqSub(z) | InputKind::ZmqPull(z) => Some(z),
            InputKind::ZmqRouter(r) => Some(&r.socket),
            InputKind::Http(_) | InputKind::Nats(_) | InputKind::NatsJetstream(_) => None,
        }
    }
}

/// A `zmq-router` input. Every field reloads live (the input is rebuilt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouterInput {
    /// Where it attaches, its envelope (of the request body, after the
    /// REQ envelope) and limits.
    #[serde(flatten)]
    pub socket: ZmqSocket,
    /// Most requests accepted and not answered yet; at the bound the input
    /// stops reading until answers go out. Default 10000; 1 to 1000000.
    pub max_pending: usize,
}

impl RouterInput {
    /// The default `max_pending`.
    pub const DEFAULT_MAX_PENDING: usize = 10_000;
}

/// An HTTP publish listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpInput {
    /// The address to listen on, `IP:port`; port 0 picks a free port.
    /// Required; reloads live (the entry is rebuilt).
    pub listen: SocketAddr,
    /// Largest request body, in bytes; bigger gets 413. Default 1 MiB; 1 B
    /// to 256 MiB. Reloads live (the entry is rebuilt).
    pub max_body: usize,
    /// How long a client has to send the request headers. Default 10s;
    /// 100ms to 5m. Reloads live (the entry is rebuilt).
    #[serde(serialize_with = "serialize_duration")]
    pub header_timeout: Duration,
    /// How long a client has to send the body once the headers are in.
    /// Default 30s; 100ms to 1h. Reloads live (the entry is rebuilt).
    #[serde(serialize_with = "serialize_duration")]
    pub body_timeout: Duration,
    /// Most messages in one `POST /v1/publish` batch; more gets 413.
    /// Default 1000; 1 to 100000. Reloads live (the entry is rebuilt).
    pub max_batch: usize,
    /// The authenticators the listener accepts (`[[auth]]` names, or
    /// `"anonymous"`). Required once the file has `[[auth]]` or `[[acl]]`.
    /// Default none: anyone may publish. Reloads live (the entry is
    /// rebuilt).
    pub auth: Option<Vec<String>>,
    /// TLS on the listener. Default none: plain HTTP. The files reload
    /// live; other changes rebuild the entry.
    pub tls: Option<super::ListenerTls>,
}

impl Default for HttpInput {
    /// The defaults, listening on `127.0.0.1:8080`.
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body: 1 << 20,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_batch: 1000,
            auth: None,
            tls: None,
        }
    }
}

/// Reads a `zmq-sub` or `zmq-pull` input.
pub(crate) fn build_reader(
    raw: &RawZmqReader,
    role: ZmqRole,
    subject: &Subject,
    c: &mut Checker<'_>,
) -> Input {
    let socket = zmq::build(raw.zmq(), raw.queues(), role, subject, c);
    let kind = match role {
        ZmqRole::Pull => InputKind::ZmqPull(socket),
        _ => InputKind::ZmqSub(socket),
    };
    Input {
        name: raw.name.get_ref().clone(),
        kind,
    }
}

/// Reads a `zmq-router` input.
pub(crate) fn build_router(raw: &RawZmqRouter, subject: &Subject, c: &mut Checker<'_>) -> Input {
    let socket = zmq::build(raw.zmq(), raw.queues(), ZmqRole::Router, subject, c);
    let max_pending = c.count(
        subject,
        "max_pending",
        raw.max_pending.as_ref(),
        RouterInput::DEFAULT_MAX_PENDING,
        1..=1_000_000,
    );
    Input {
        name: raw.name.get_ref().clone(),
        kind: InputKind::ZmqRouter(RouterInput {
            socket,
            max_pending,
        }),
    }
}

/// Reads an `http` input.
pub(crate) fn build_http(
    raw: &RawHttp,
    auth_names: &[String],
    subject: &Subject,
    c: &mut Checker<'_>,
) -> Input {
    let d = HttpInput::default();
    let listen = match parse_listen(raw.listen.get_ref()) {
        Ok(addr) => addr,
        Err(reason) => {
            c.invalid(subject, "listen", raw.listen.span(), reason);
            d.listen
        }
    };
    let ms = Duration::from_millis(1);
    let http = HttpInput {
        listen,
        max_body: c.size(
            subject,
            "max_body",
            raw.max_body.as_ref(),
            d.max_body,
            1..=256 << 20,
        ),
        header_timeout: c.duration(
            subject,
            "header_timeout",
            raw.header_timeout.as_ref(),
            d.header_timeout,
            100 * ms..=Duration::from_secs(300),
        ),
        body_timeout: c.duration(
            subject,
            "body_timeout",
            raw.body_timeout.as_ref(),
            d.body_timeout,
            100 * ms..=Duration::from_secs(3600),
        ),
        max_batch: c.count(
            subject,
            "max_batch",
            raw.max_batch.as_ref(),
            d.max_batch,
            1..=100_000,
        ),
        auth: super::auth::read_list(raw.auth.as_ref(), "auth", subject, auth_names, c),
        tls: raw
            .tls
            .as_ref()
            .and_then(|t| super::tls::build(t, "tls", subject, c)),
    };
    Input {
        name: raw.name.get_ref().clone(),
        kind: InputKind::Http(http),
    }
}

/// Reads a `nats` input.
pub(crate) fn build_nats(raw: &RawNatsInput, subject: &Subject, c: &mut Checker<'_>) -> Input {
    Input {
        name: raw.name.get_ref().clone(),
        kind: InputKind::Nats(super::nats::build_input(raw, subject, c)),
    }
}

/// Reads a `nats-jetstream` input.
pub(crate) fn build_jetstream(
    raw: &RawJetStreamInput,
    subject: &Subject,
    c: &mut Checker<'_>,
) -> Input {
    Input {
        name: raw.name.get_ref().clone(),
        kind: InputKind::NatsJetstream(super::nats::build_jetstream_input(raw, subject, c)),
    }
}
