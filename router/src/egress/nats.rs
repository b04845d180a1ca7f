//! NATS outputs, both `async-nats` clients: `nats` (core NATS, at most
//! once; `core.rs`) and `nats-jetstream` (into a stream, sent on each
//! PubAck; `jetstream.rs`). What they share is here: the [`Uplink`] (the
//! connection, [`crate::nats::Connection`], with the output's counters)
//! and the message's NATS form (subject from the template, `Nats-Msg-Id`
//! and one header per attribute).
//!
//! While the client is not connected an output takes no batch: the route
//! waits, its queue fills and its `when_full` policy applies. A message
//! over the server's `max_payload` is refused as `too_large`; one whose
//! attribute cannot be a NATS header (a name with a space, a control
//! character or `:`, a value with a line break) as `unencodable`, with the
//! attribute named in the log. Both are refusals for good: not retried,
//! and kept in the dead-letter store when the router has one.

use std::ops::Deref;
use std::sync::Arc;

use async_nats::{Client, HeaderMap, HeaderName, HeaderValue, Subject};
use prometheus::IntCounter;

use super::{Context, Delivery, Error, OutputStats, Refusals, Reject};
use crate::config::{NatsConnection, SubjectTemplate};
use crate::message::{Message, Topic};
use crate::nats::Connection;

mod core;
mod jetstream;

pub use self::core::NatsOutput;
pub use self::jetstream::JetStreamOutput;

/// One output's NATS connection and counters.
#[derive(Debug)]
pub(crate) struct Uplink {
    connection: Connection,
    sent: IntCounter,
    refused: Refusals,
}

impl Deref for Uplink {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.connection
    }
}

impl Uplink {
    /// The connection of output `name`; not connecting yet.
    fn new(name: &str, settings: &NatsConnection, ctx: &Context) -> Self {
        ctx.outputs.declare_peers(name);
        Self {
            connection: Connection::new(name, settings, Some(ctx.outputs.peers(name))),
            sent: ctx.outputs.messages(name),
            refused: ctx.outputs.refusals(name),
        }
    }

    /// The client once connected; see [`Connection::connected`].
    ///
    /// # Errors
    /// [`Error::Closed`] once closed.
    async fn client(&self) -> Result<Option<Arc<Client>>, Error> {
        self.connection
            .connected()
            .await
            .map_err(|()| Error::Closed {
                output: self.name().to_owned(),
            })
    }

    /// Counts a batch whose messages met `fates` (`None`: sent) and
    /// reports it.
    fn settle(&self, fates: &[Option<Reject>]) -> Delivery {
        let (delivery, accepted) = Delivery::from_fates(fates);
        self.sent.inc_by(accepted);
        self.refused.count(&delivery, fates.len());
        delivery
    }

    /// The output's counts and connection for `/v1/status`.
    fn stats(&self, kind: &str) -> OutputStats {
        let uplink = self.status();
        OutputStats {
            name: self.name().to_owned(),
            kind: kind.into(),
            sent: self.sent.get(),
            dropped: self.refused.total(),
            peers: u64::from(uplink.connected),
            uplink: Some(uplink),
            ..OutputStats::default()
        }
    }

    /// The subject of a message on `topic`: the topic's own bytes when the
    /// template is `{topic}` (no copy), else the rendered template.
    fn subject(template: &SubjectTemplate, topic: &Topic) -> Subject {
        if template.is_topic() {
            Subject::try_from(topic.as_bytes().clone()).expect("a topic is UTF-8")
        } else {
            Subject::from(template.render(topic))
        }
    }

    /// The message's headers: `Nats-Msg-Id` and one per attribute; `None`
    /// (logged) when an attribute cannot be a header.
    fn headers(&self, message: &Message) -> Option<HeaderMap> {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, message.id.to_string());
        for (key, value) in message.attributes.iter() {
            match (
                key.parse::<HeaderName>(),
                value.as_str().parse::<HeaderValue>(),
            ) {
                (Ok(k), Ok(v)) => headers.insert(k, v),
                _ => {
                    tracing::warn!(
                        output = %self.name(),
                        id = %message.id,
                        attribute = %key.escape_debug(),
                        "an attribute cannot be a NATS header (a name with a space, a control character or ':', or a value with a line break); the message is refused as unencodable"
                    );
                    return None;
                }
            }
        }
        Some(headers)
    }
}
