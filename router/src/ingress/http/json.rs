//! The JSON body of `POST /v1/publish`, decoded into messages.
//!
//! One message:
//!
//! ```json
//! {"topic": "sensors.line1.temp", "payload": {"celsius": 21.5},
//!  "attributes": {"site": "42"}, "priority": 6}
//! ```
//!
//! or a batch: `{"messages": [ {...}, {...} ]}`. Per message, `topic` is
//! required; the payload is `payload` (a JSON string is sent as its UTF-8
//! bytes, any other JSON value as its compact JSON text, `null` as `null`)
//! or `payload_base64` (standard alphabet, padded), not both; neither means
//! an empty payload. `attributes` values must be strings. `priority` is an
//! integer from 0 to 9 (default 4). Unknown fields are errors.
//!
//! A request is all or nothing at this stage: one invalid message refuses
//! the whole request before anything is offered to the router.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::http::Error;
use crate::message::{Attributes, Message, Publisher, Topic};

/// The top level: a batch, or the fields of one message.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    messages: Option<Vec<Item>>,
    topic: Option<String>,
    #[serde(default, deserialize_with = "present")]
    payload: Option<Value>,
    payload_base64: Option<String>,
    attributes: Option<BTreeMap<String, Value>>,
    priority: Option<Value>,
}

/// One message of a batch.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Item {
    topic: String,
    #[serde(default, deserialize_with = "present")]
    payload: Option<Value>,
    payload_base64: Option<String>,
    attributes: Option<BTreeMap<String, Value>>,
    priority: Option<Value>,
}

/// A field that is present is `Some`, even when it holds `null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Decodes a publish body into messages from `publisher`, at most
/// `max_batch` of them.
///
/// # Errors
/// [`Error::InvalidJson`], [`Error::BadRequest`] (empty batch, or batch and
/// single fields mixed), [`Error::BatchTooLarge`], and the per-field
/// errors [`Error::InvalidTopic`], [`Error::InvalidAttribute`],
/// [`Error::InvalidPriority`], [`Error::InvalidPayload`], each naming the
/// field, e.g. `messages[3].topic`.
pub(crate) fn decode(
    body: &[u8],
    publisher: &Publisher,
    max_batch: usize,
) -> Result<Vec<Message>, Error> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| Error::InvalidJson(e.to_string()))?;
    let Envelope {
        messages,
        topic,
        payload,
        payload_base64,
        attributes,
        priority,
    } = envelope;
    match messages {
        Some(items) => {
            if topic.is_some()
                || payload.is_some()
                || payload_base64.is_some()
                || attributes.is_some()
                || priority.is_some()
            {
                return Err(Error::BadRequest(
                    "a body holds either `messages` or the fields of one message, not both".into(),
                ));
            }
            if items.is_empty() {
                return Err(Error::BadRequest("`messages` is empty".into()));
            }
            if items.len() > max_batch {
                return Err(Error::BatchTooLarge {
                    count: items.len(),
                    max: max_batch,
                });
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    let at = Field::Batch(i);
                    build(at, item, publisher)
                })
                .collect()
        }
        None => {
            let topic = topic.ok_or_else(|| {
                Error::InvalidJson("missing field `topic` (or `messages` for a batch)".into())
            })?;
            let item = Item {
                topic,
                payload,
                payload_base64,
                attributes,
                priority,
            };
            Ok(vec![build(Field::Single, item, publisher)?])
        }
    }
}

/// Where a message sits in the body, for error messages.
#[derive(Clone, Copy)]
enum Field {
    Single,
    Batch(usize),
}

impl Field {
    fn name(self, field: &str) -> String {
        match self {
            Self::Single => field.to_owned(),
            Self::Batch(i) => format!("messages[{i}].{field}"),
        }
    }
}

fn build(at: Field, item: Item, publisher: &Publisher) -> Result<Message, Error> {
    let topic =
        Topic::new(Bytes::from(item.topic.into_bytes())).map_err(|source| Error::InvalidTopic {
            field: at.name("topic"),
            source,
        })?;
    let payload = match (item.payload, item.payload_base64) {
        (Some(_), Some(_)) => {
            return Err(Error::InvalidPayload {
                field: at.name("payload"),
                reason: "`payload` and `payload_base64` exclude each other".into(),
            });
        }
        (Some(Value::String(text)), None) => Bytes::from(text.into_bytes()),
        (Some(value), None) => {
            Bytes::from(serde_json::to_vec(&value).map_err(|e| Error::Internal(e.to_string()))?)
        }
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map(Bytes::from)
            .map_err(|e| Error::InvalidPayload {
                field: at.name("payload_base64"),
                reason: format!("not valid base64: {e}"),
            })?,
        (None, None) => Bytes::new(),
    };
    let mut message = Message::new(topic, payload, publisher.clone());
    if let Some(attributes) = item.attributes {
        message.attributes = attributes_from(at, attributes)?;
    }
    if let Some(priority) = item.priority {
        message.priority = priority_from(at, &priority)?;
    }
    Ok(message)
}

fn attributes_from(at: Field, raw: BTreeMap<String, Value>) -> Result<Attributes, Error> {
    let mut attributes = Attributes::new();
    for (key, value) in raw {
        if key.is_empty() {
            return Err(Error::InvalidAttribute {
                field: at.name("attributes"),
                reason: "attribute names must not be empty",
            });
        }
        let Value::String(value) = value else {
            return Err(Error::InvalidAttribute {
                field: at.name(&format!("attributes.{key}")),
                reason: "attribute values must be strings",
            });
        };
        attributes.insert(key, value);
    }
    Ok(attributes)
}

fn priority_from(at: Field, value: &Value) -> Result<u8, Error> {
    match value {
        Value::Null => Ok(Message::DEFAULT_PRIORITY),
        Value::Number(n) => n
            .as_u64()
            .filter(|p| *p <= u64::from(Message::MAX_PRIORITY))
            .map(|p| p as u8)
            .ok_or_else(|| Error::InvalidPriority {
                field: at.name("priority"),
            }),
        _ => Err(Error::InvalidPriority {
            field: at.name("priority"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher() -> Publisher {
        Publisher::new("api", "127.0.0.1:1")
    }

    fn decode_str(body: &str) -> Result<Vec<Message>, Error> {
        decode(body.as_bytes(), &publisher(), 3)
    }

    #[test]
    fn single_message_with_every_field() {
        let m = decode_str(
            r#"{"topic":"a.b","payload":"héllo","attributes":{"site":"42"},"priority":7}"#,
        )
        .expect("valid");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].topic.as_str(), "a.b");
        assert_eq!(&m[0].payload[..], "héllo".as_bytes());
        assert_eq!(m[0].attributes.get("site").map(String::as_str), Some("42"));
        assert_eq!(m[0].priority, 7);
        assert_eq!(&*m[0].publisher.input, "api");
    }

    #[test]
    fn payload_forms() {
        let m = decode_str(r#"{"topic":"a","payload":{"x":[1,2]}}"#).expect("valid");
        assert_eq!(&m[0].payload[..], br#"{"x":[1,2]}"#);
        let m = decode_str(r#"{"topic":"a","payload":null}"#).expect("valid");
        assert_eq!(&m[0].payload[..], b"null");
        let m = decode_str(r#"{"topic":"a","payload":12}"#).expect("valid");
        assert_eq!(&m[0].payload[..], b"12");
        let m = decode_str(r#"{"topic":"a","payload_base64":"AAEC/w=="}"#).expect("valid");
        assert_eq!(&m[0].payload[..], &[0, 1, 2, 255]);
        let m = decode_str(r#"{"topic":"a"}"#).expect("valid");
        assert!(m[0].payload.is_empty());
        assert_eq!(m[0].priority, Message::DEFAULT_PRIORITY);
    }

    #[test]
    fn batches() {
        let m = decode_str(r#"{"messages":[{"topic":"a"},{"topic":"b","payload":"x"}]}"#)
            .expect("valid");
        assert_eq!(m.len(), 2);
        assert!(m[0].id < m[1].id);
        let e =
            decode_str(r#"{"messages":[{"topic":"a"},{"topic":"a"},{"topic":"a"},{"topic":"a"}]}"#)
                .expect_err("over max_batch");
        assert_eq!(e.code(), "BATCH_TOO_LARGE");
        let e = decode_str(r#"{"messages":[]}"#).expect_err("empty");
        assert_eq!(e.code(), "BAD_REQUEST");
        let e = decode_str(r#"{"messages":[{"topic":"a"}],"topic":"b"}"#).expect_err("mixed");
        assert_eq!(e.code(), "BAD_REQUEST");
        let e =
            decode_str(r#"{"messages":[{"topic":"a"},{"topic":"a..b"}]}"#).expect_err("bad topic");
        assert_eq!(e.code(), "INVALID_TOPIC");
        assert!(e.to_string().starts_with("messages[1].topic:"), "{e}");
    }

    #[test]
    fn invalid_bodies() {
        let cases = [
            ("{", "INVALID_JSON"),
            ("[]", "INVALID_JSON"),
            (r#"{"payload":"x"}"#, "INVALID_JSON"),
            (r#"{"topic":"a","colour":"red"}"#, "INVALID_JSON"),
            (r#"{"topic":"a.*"}"#, "INVALID_TOPIC"),
            (r#"{"topic":""}"#, "INVALID_TOPIC"),
            (r#"{"topic":"a","attributes":{"n":1}}"#, "INVALID_ATTRIBUTE"),
            (
                r#"{"topic":"a","attributes":{"":"x"}}"#,
                "INVALID_ATTRIBUTE",
            ),
            (r#"{"topic":"a","priority":10}"#, "INVALID_PRIORITY"),
            (r#"{"topic":"a","priority":-1}"#, "INVALID_PRIORITY"),
            (r#"{"topic":"a","priority":"5"}"#, "INVALID_PRIORITY"),
            (r#"{"topic":"a","payload_base64":"***"}"#, "INVALID_PAYLOAD"),
            (
                r#"{"topic":"a","payload":"x","payload_base64":"eA=="}"#,
                "INVALID_PAYLOAD",
            ),
        ];
        for (body, code) in cases {
            let e = decode_str(body).expect_err(body);
            assert_eq!(e.code(), code, "{body}: {e}");
            assert_eq!(e.status(), hyper::StatusCode::BAD_REQUEST, "{body}");
        }
    }
}
