//! The `nats-jetstream` input's settings: a durable pull consumer on a
//! stream, and how the router acknowledges what it fetches.

use std::time::Duration;

use serde::Serialize;

use super::super::checker::Checker;
use super::super::error::Subject;
use super::super::raw::RawJetStreamInput;
use super::super::units::serialize_duration;
use super::{NatsConnection, api_prefix, check_name, connection};
use crate::message::Pattern;

/// A `nats-jetstream` input: a durable pull consumer of a stream. A
/// message is acknowledged only once the router is done with it: every
/// memory route it matched delivered it (or ended it for good: filtered,
/// dead-lettered, too large), and every durable route has it on disk. One
/// the router dropped for a reason another try could get past (a full
/// queue, a failed output) is sent again by the server after `nak_delay`,
/// up to `max_deliver` deliveries, then terminated and counted. Every
/// field reloads live (the input is rebuilt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JetStreamInput {
    /// How it connects.
    #[serde(flatten)]
    pub connection: NatsConnection,
    /// The stream it consumes. Required; it must exist.
    pub stream: String,
    /// The durable consumer's name. Default: the input's name.
    pub consumer: String,
    /// Whether the router creates the consumer (or updates it to these
    /// settings) when it connects. Default true; with false it binds to
    /// the consumer as it is, which must exist.
    pub create: bool,
    /// Only messages on this subject (wildcards allowed), when the router
    /// creates the consumer. Default none: the whole stream.
    pub filter_subject: Option<String>,
    /// Where a consumer the router creates starts.
    pub deliver_policy: DeliverPolicy,
    /// Most messages fetched and not yet acknowledged; the server sends
    /// no more until some are. Default 1000; 1 to 100000.
    pub max_ack_pending: usize,
    /// How long the server waits for an acknowledgement before it sends a
    /// message again (a message held longer than this in a full route
    /// comes twice). Default 30s; 100ms to 1h.
    #[serde(serialize_with = "serialize_duration")]
    pub ack_wait: Duration,
    /// Deliveries of a message before the router gives up on it: the
    /// last failed one is terminated and counted
    /// (`input_rejected_total{reason="max_deliver"}`). Default 5; 1 to
    /// 10000.
    pub max_deliver: usize,
    /// The pause before the server sends again a message the router
    /// failed to deliver. Default 1s; 0 to 1h.
    #[serde(serialize_with = "serialize_duration")]
    pub nak_delay: Duration,
    /// The largest message taken (payload and headers); a larger one is
    /// terminated and counted (`too_large`). Default 1MiB; 1 byte to
    /// 64MiB.
    pub max_message_size: usize,
    /// The JetStream API prefix, as for the output (`domain` or
    /// `api_prefix`).
    pub api_prefix: String,
}

/// `deliver_policy`: where a consumer the router creates starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliverPolicy {
    /// `all`: the stream's first message (the default).
    #[default]
    All,
    /// `new`: messages stored after the consumer was created.
    New,
    /// `last`: the stream's last message, then what comes.
    Last,
}

/// Reads a `nats-jetstream` input's own settings.
pub(crate) fn build_jetstream_input(
    raw: &RawJetStreamInput,
    subject: &Subject,
    c: &mut Checker<'_>,
) -> JetStreamInput {
    let stream = match &raw.stream {
        Some(s) => {
            check_name(s, "stream", "a stream", subject, c);
            s.get_ref().clone()
        }
        None => {
            c.invalid(
                subject,
                "stream",
                raw.name.span(),
                "a nats-jetstream input needs `stream = \"...\"`, the stream it consumes",
            );
            String::new()
        }
    };
    let consumer = match &raw.consumer {
        Some(s) => {
            check_name(s, "consumer", "a consumer", subject, c);
            s.get_ref().clone()
        }
        None => {
            check_name(&raw.name, "consumer", "a consumer", subject, c);
            raw.name.get_ref().clone()
        }
    };
    let create = raw.create.as_ref().is_none_or(|s| *s.get_ref());
    if !create {
        for (field, span) in [
            (
                "filter_subject",
                raw.filter_subject.as_ref().map(|s| s.span()),
            ),
            (
                "deliver_policy",
                raw.deliver_policy.as_ref().map(|s| s.span()),
            ),
        ] {
            if let Some(span) = span {
                c.invalid(
                    subject,
                    field,
                    span,
                    "has no effect with `create = false` (the consumer is bound as it is)",
                );
            }
        }
    }
    if let Some(f) = &raw.filter_subject
        && let Err(e) = Pattern::parse(f.get_ref())
    {
        c.invalid(
            subject,
            "filter_subject",
            f.span(),
            format!("{:?} is not a subject pattern: {e}", f.get_ref()),
        );
    }
    let deliver_policy = match raw.deliver_policy.as_ref().map(|s| s.get_ref().as_str()) {
        None | Some("all") => DeliverPolicy::All,
        Some("new") => DeliverPolicy::New,
        Some("last") => DeliverPolicy::Last,
        Some(other) => {
            if let Some(s) = &raw.deliver_policy {
                c.invalid(
                    subject,
                    "deliver_policy",
                    s.span(),
                    format!("{other:?} is not a deliver policy; expected all, new or last"),
                );
            }
            DeliverPolicy::All
        }
    };
    let hour = Duration::from_secs(3600);
    JetStreamInput {
        connection: connection(&raw.connection(), subject, c),
        stream,
        consumer,
        create,
        filter_subject: raw.filter_subject.as_ref().map(|s| s.get_ref().clone()),
        deliver_policy,
        max_ack_pending: c.count(
            subject,
            "max_ack_pending",
            raw.max_ack_pending.as_ref(),
            1000,
            1..=100_000,
        ),
        ack_wait: c.duration(
            subject,
            "ack_wait",
            raw.ack_wait.as_ref(),
            Duration::from_secs(30),
            Duration::from_millis(100)..=hour,
        ),
        max_deliver: c.count(
            subject,
            "max_deliver",
            raw.max_deliver.as_ref(),
            5,
            1..=10_000,
        ),
        nak_delay: c.duration(
            subject,
            "nak_delay",
            raw.nak_delay.as_ref(),
            Duration::from_secs(1),
            Duration::ZERO..=hour,
        ),
        max_message_size: c.size(
            subject,
            "max_message_size",
            raw.max_message_size.as_ref(),
            1 << 20,
            1..=64 << 20,
        ),
        api_prefix: api_prefix(raw.domain.as_ref(), raw.api_prefix.as_ref(), subject, c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InputKind;
    use crate::config::fixture::{assert_one, problems, valid};

    /// A file whose one input is a `nats-jetstream` one with `lines`.
    fn file(lines: &str) -> String {
        format!(
            r#"
[[input]]
name = "cmds"
kind = "nats-jetstream"
servers = ["nats://127.0.0.1:4222"]
{lines}

[[output]]
name = "out"
kind = "zmq-push"
bind = "tcp://127.0.0.1:6556"

[[route]]
name = "r"
match = ">"
to = ["out"]
"#
        )
    }

    fn settings(lines: &str) -> JetStreamInput {
        match valid(&file(lines)).inputs.remove(0).kind {
            InputKind::NatsJetstream(j) => j,
            other => panic!("not nats-jetstream: {other:?}"),
        }
    }

    #[test]
    fn jetstream_inputs_read_their_settings() {
        let j = settings("stream = \"CMDS\"");
        assert_eq!(j.stream, "CMDS");
        assert_eq!(j.consumer, "cmds", "the input's name by default");
        assert!(j.create);
        assert_eq!(j.filter_subject, None);
        assert_eq!(j.deliver_policy, DeliverPolicy::All);
        assert_eq!(j.max_ack_pending, 1000);
        assert_eq!(j.ack_wait, Duration::from_secs(30));
        assert_eq!(j.max_deliver, 5);
        assert_eq!(j.nak_delay, Duration::from_secs(1));
        assert_eq!(j.max_message_size, 1 << 20);
        assert_eq!(j.api_prefix, "$JS.API");
        let j = settings(
            "stream = \"CMDS\"\nconsumer = \"site42\"\nfilter_subject = \"cmds.site42.>\"\ndeliver_policy = \"new\"\nmax_ack_pending = 64\nack_wait = \"5s\"\nmax_deliver = 3\nnak_delay = \"0s\"\ndomain = \"hub\"",
        );
        assert_eq!(j.consumer, "site42");
        assert_eq!(j.filter_subject.as_deref(), Some("cmds.site42.>"));
        assert_eq!(j.deliver_policy, DeliverPolicy::New);
        assert_eq!(
            (j.max_ack_pending, j.ack_wait, j.max_deliver, j.nak_delay),
            (64, Duration::from_secs(5), 3, Duration::ZERO)
        );
        assert_eq!(j.api_prefix, "$JS.hub.API");
        assert!(!settings("stream = \"CMDS\"\ncreate = false").create);
    }

    #[test]
    fn bad_jetstream_inputs_are_reported_at_their_line() {
        assert_one(
            &problems(&file("")),
            "input \"cmds\": stream: a nats-jetstream input needs `stream = \"...\"`",
        );
        assert_one(
            &problems(&file("stream = \"a.b\"")),
            "stream: \"a.b\" is not a stream name",
        );
        assert_one(
            &problems(&file("stream = \"S\"\nconsumer = \"x y\"")),
            "consumer: \"x y\" is not a consumer name",
        );
        assert_one(
            &problems(&file("stream = \"S\"\ndeliver_policy = \"first\"")),
            "\"first\" is not a deliver policy",
        );
        assert_one(
            &problems(&file(
                "stream = \"S\"\ncreate = false\nfilter_subject = \"a.>\"",
            )),
            "filter_subject: has no effect with `create = false`",
        );
        assert_one(
            &problems(&file("stream = \"S\"\nmax_deliver = 0")),
            "max_deliver: must be from 1 to 10000, got 0",
        );
        let p = problems(&file(
            "stream = \"S\"\nfilter_subject = \"a..b\"\nack_wait = \"1ms\"",
        ));
        assert_eq!(p.len(), 2, "{p:?}");
    }
}
