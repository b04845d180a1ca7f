//! Outputs: where routed messages leave the router. One `[[output]]` per
//! listener or set of connections; `kind` picks the protocol.

use serde::Serialize;

use super::checker::Checker;
use super::error::Subject;
use super::raw::RawZmq;
use super::zmq::{self, ZmqRole, ZmqSocket};

/// One `[[output]]`. Reloads live: a changed output is rebuilt (closed,
/// then built from its new entry); the others keep their listeners and
/// peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// Unique among inputs, outputs, plugins and routes; what routes name
    /// in `to` and `dead_letter`, and a metric label
    /// (`switchyard_output_messages_total{output}`).
    pub name: String,
    /// The protocol and its settings.
    #[serde(flatten)]
    pub kind: OutputKind,
}

/// An output's protocol, written `kind = "zmq-pub"` and so on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum OutputKind {
    /// `zmq-pub`: the PUB side facing SUB subscribers. Each subscriber's
    /// prefix subscriptions are honoured; each has its own bounded queue
    /// (`send_hwm`, `send_hwm_bytes`), and a full queue drops for that
    /// subscriber alone, counted.
    ZmqPub(ZmqSocket),
    /// `zmq-push`: the PUSH side facing PULL workers, round-robin over the
    /// workers with room; when none has room the route waits (up to
    /// `send_timeout`), so nothing is lost on the way out.
    ZmqPush(ZmqSocket),
}

impl Output {
    /// The ZeroMQ settings (every output kind so far is ZeroMQ).
    pub fn zmq(&self) -> &ZmqSocket {
        match &self.kind {
            OutputKind::ZmqPub(z) | OutputKind::ZmqPush(z) => z,
        }
    }
}

/// Reads a `zmq-pub` or `zmq-push` output.
pub(crate) fn build_zmq(
    raw: &RawZmq,
    role: ZmqRole,
    subject: &Subject,
    c: &mut Checker<'_>,
) -> Output {
    let socket = zmq::build(raw, role, subject, c);
    let kind = match role {
        ZmqRole::Push => OutputKind::ZmqPush(socket),
        _ => OutputKind::ZmqPub(socket),
    };
    Output {
        name: raw.name.get_ref().clone(),
        kind,
    }
}
