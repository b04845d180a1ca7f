//! A webhook's requests, sans IO: which messages go in which request, each
//! request's body and headers, its signature and its idempotency key.
//!
//! - `json`: one request per run of at most `max_messages` messages and
//!   `max_bytes` of body, a JSON array of
//!   `{"id","topic","publish_time_ms","attributes":{..},"payload_encoding","payload"}`;
//!   `payload_encoding` is `"utf8"` when the payload is valid UTF-8 (then
//!   `payload` is that text), else `"base64"` (standard alphabet, padded).
//!   `Idempotency-Key`: the first 128 bits of the SHA-256 of the request's
//!   message ids, in hex.
//! - `raw`: one request per message, its payload as the body; the topic,
//!   id and attributes as `X-Switchyard-Topic`, `X-Switchyard-Id` and
//!   `X-Switchyard-Attr-<name>` (HTTP header names are case-insensitive:
//!   they arrive lowercased). An attribute no header can carry is refused
//!   as `unencodable`. `Idempotency-Key`: the message id.
//!
//! With `hmac_secret`, `X-Switchyard-Signature: sha256=<lowercase hex
//! HMAC-SHA256 of the body bytes>`.

use std::time::UNIX_EPOCH;

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

use crate::egress::Reject;
use crate::message::{Message, MessageId};

/// `X-Switchyard-Topic`.
pub(crate) const TOPIC: HeaderName = HeaderName::from_static("x-switchyard-topic");
/// `X-Switchyard-Id`.
pub(crate) const ID: HeaderName = HeaderName::from_static("x-switchyard-id");
/// `X-Switchyard-Signature`.
pub(crate) const SIGNATURE: HeaderName = HeaderName::from_static("x-switchyard-signature");
/// `Idempotency-Key`.
pub(crate) const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The prefix of an attribute's header name.
pub(crate) const ATTRIBUTE_PREFIX: &str = "x-switchyard-attr-";

/// One request to make: the positions (in the batch) of the messages it
/// carries, its body, and the headers of its own.
#[derive(Debug)]
pub(crate) struct Planned {
    pub(crate) positions: Vec<usize>,
    pub(crate) body: Bytes,
    pub(crate) headers: HeaderMap,
}

/// One message as a `json` request's array holds it.
#[derive(Serialize)]
struct Element<'a> {
    #[serde(serialize_with = "as_display")]
    id: MessageId,
    topic: &'a str,
    publish_time_ms: u64,
    attributes: &'a std::collections::BTreeMap<String, String>,
    payload_encoding: &'static str,
    payload: Payload<'a>,
}

/// A payload as its JSON string: the text itself, or its base64.
enum Payload<'a> {
    Text(&'a str),
    Base64(&'a [u8]),
}

impl Serialize for Payload<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Payload::Text(t) => s.serialize_str(t),
            Payload::Base64(b) => s.collect_str(&base64::display::Base64Display::new(
                b,
                &base64::engine::general_purpose::STANDARD,
            )),
        }
    }
}

fn as_display<S: serde::Serializer>(id: &MessageId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

/// Appends `message` to `out` as one element of a `json` request's array.
pub(crate) fn write_json_element(message: &Message, out: &mut Vec<u8>) {
    let (payload_encoding, payload) = match std::str::from_utf8(&message.payload) {
        Ok(text) => ("utf8", Payload::Text(text)),
        Err(_) => ("base64", Payload::Base64(&message.payload)),
    };
    let element = Element {
        id: message.id,
        topic: message.topic.as_str(),
        publish_time_ms: message
            .publish_time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        attributes: &message.attributes,
        payload_encoding,
        payload,
    };
    serde_json::to_writer(out, &element).expect("a message serializes to JSON");
}

/// `message` as one element of a `json` request's array.
#[cfg(test)]
pub(crate) fn json_element(message: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    write_json_element(message, &mut out);
    out
}

/// About how many bytes `message` takes as an element (for reserving).
fn estimate(message: &Message) -> usize {
    let attributes: usize = message
        .attributes
        .iter()
        .map(|(k, v)| k.len() + v.len() + 6)
        .sum();
    message.payload.len() * 4 / 3 + message.topic.as_str().len() + attributes + 160
}

/// The `Idempotency-Key` of a `json` request carrying `ids`: stable for
/// the same messages in the same order, whichever attempt sends them.
pub(crate) fn idempotency_key(ids: impl Iterator<Item = MessageId>) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for id in ids {
        ctx.update(&id.0.to_be_bytes());
    }
    hex(&ctx.finish().as_ref()[..16])
}

/// `X-Switchyard-Signature`'s value for `body`.
pub(crate) fn signature(key: &ring::hmac::Key, body: &[u8]) -> HeaderValue {
    let tag = ring::hmac::sign(key, body);
    HeaderValue::from_str(&format!("sha256={}", hex(tag.as_ref()))).expect("hex is a header value")
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Splits the messages of `batch` not yet given a fate into `json`
/// requests of at most `max_messages` messages and `max_bytes` of body;
/// a message whose element alone does not fit is marked too large.
pub(crate) fn json_requests(
    batch: &[Message],
    fates: &mut [Option<Reject>],
    max_messages: usize,
    max_bytes: usize,
) -> Vec<Planned> {
    let mut planned = Vec::new();
    let mut body: Vec<u8> = Vec::new();
    let mut positions: Vec<usize> = Vec::new();
    let close = |body: &mut Vec<u8>, positions: &mut Vec<usize>, planned: &mut Vec<Planned>| {
        if positions.is_empty() {
            return;
        }
        body.push(b']');
        let mut headers = HeaderMap::new();
        let key = idempotency_key(positions.iter().map(|&i| batch[i].id));
        headers.insert(
            IDEMPOTENCY_KEY,
            HeaderValue::from_str(&key).expect("hex is a header value"),
        );
        planned.push(Planned {
            positions: std::mem::take(positions),
            body: Bytes::from(std::mem::take(body)),
            headers,
        });
    };
    let mut spill: Vec<u8> = Vec::new();
    for (i, message) in batch.iter().enumerate() {
        if fates[i].is_some() {
            continue;
        }
        if positions.len() == max_messages {
            close(&mut body, &mut positions, &mut planned);
        }
        if positions.is_empty() && body.capacity() == 0 {
            // About what this request will hold, so the body grows once.
            let ahead: usize = batch[i..].iter().take(max_messages).map(estimate).sum();
            body.reserve(ahead.min(max_bytes) + 2);
        }
        let mark = body.len();
        body.push(if positions.is_empty() { b'[' } else { b',' });
        write_json_element(message, &mut body);
        let element = body.len() - mark - 1;
        // `[` + element + `]`.
        if element + 2 > max_bytes {
            body.truncate(mark);
            fates[i] = Some(Reject::TooLarge);
            continue;
        }
        if body.len() + 1 > max_bytes {
            // It does not fit beside the others: it opens the next request.
            spill.clear();
            spill.extend_from_slice(&body[mark + 1..]);
            body.truncate(mark);
            close(&mut body, &mut positions, &mut planned);
            let ahead: usize = batch[i..].iter().take(max_messages).map(estimate).sum();
            body.reserve(ahead.min(max_bytes).max(spill.len()) + 2);
            body.push(b'[');
            body.extend_from_slice(&spill);
        }
        positions.push(i);
    }
    close(&mut body, &mut positions, &mut planned);
    planned
}

/// Why a message cannot be a `raw` request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RawRefusal {
    /// Its payload is over `max_bytes`.
    TooLarge,
    /// This attribute cannot be a header (its name is not an HTTP token,
    /// its value holds a line break or a control character, or another
    /// attribute differs from it only in case).
    Attribute(String),
}

/// `message` as a `raw` request: its payload, and its headers.
pub(crate) fn raw_request(
    message: &Message,
    max_bytes: usize,
) -> Result<(Bytes, HeaderMap), RawRefusal> {
    if message.payload.len() > max_bytes {
        return Err(RawRefusal::TooLarge);
    }
    let mut headers = HeaderMap::with_capacity(3 + message.attributes.len());
    let id = message.id.to_string();
    headers.insert(
        TOPIC,
        HeaderValue::from_str(message.topic.as_str())
            .or_else(|_| HeaderValue::from_bytes(message.topic.as_str().as_bytes()))
            .map_err(|_| RawRefusal::Attribute("(topic)".into()))?,
    );
    headers.insert(ID, HeaderValue::from_str(&id).expect("hex"));
    headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_str(&id).expect("hex"));
    for (key, value) in message.attributes.iter() {
        let name = HeaderName::from_bytes(format!("{ATTRIBUTE_PREFIX}{key}").as_bytes());
        let value = HeaderValue::from_bytes(value.as_bytes());
        match (name, value) {
            (Ok(name), Ok(value)) if !headers.contains_key(&name) => {
                headers.insert(name, value);
            }
            _ => return Err(RawRefusal::Attribute(key.clone())),
        }
    }
    Ok((message.payload.clone(), headers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Publisher, Topic};

    fn message(topic: &str, payload: &[u8], attributes: &[(&str, &str)]) -> Message {
        let mut m = Message::new(
            Topic::new(Bytes::copy_from_slice(topic.as_bytes())).expect("topic"),
            Bytes::copy_from_slice(payload),
            Publisher::new("in", ""),
        );
        for (k, v) in attributes {
            m.attributes.insert((*k).into(), (*v).into());
        }
        m
    }

    #[test]
    fn json_elements_say_how_the_payload_is_encoded() {
        let m = message("a.b", b"hello \"x\"", &[("site", "42")]);
        let v: serde_json::Value = serde_json::from_slice(&json_element(&m)).expect("json");
        assert_eq!(v["id"], m.id.to_string());
        assert_eq!(v["topic"], "a.b");
        assert_eq!(v["attributes"]["site"], "42");
        assert_eq!(v["payload_encoding"], "utf8");
        assert_eq!(v["payload"], "hello \"x\"");
        assert!(v["publish_time_ms"].as_u64().is_some_and(|t| t > 0));

        let m = message("a.b", &[0xff, 0x00, 0x80], &[]);
        let v: serde_json::Value = serde_json::from_slice(&json_element(&m)).expect("json");
        assert_eq!(v["payload_encoding"], "base64");
        assert_eq!(v["payload"], "/wCA");
        assert_eq!(v["attributes"], serde_json::json!({}));
    }

    #[test]
    fn json_requests_split_by_count_and_bytes_and_refuse_the_too_large() {
        let batch: Vec<Message> = (0..7)
            .map(|i| {
                let size = if i == 3 { 5000 } else { 10 };
                message("t", &vec![b'x'; size], &[])
            })
            .collect();
        let mut fates = vec![None; batch.len()];
        let planned = json_requests(&batch, &mut fates, 2, 1024);
        assert_eq!(fates[3], Some(Reject::TooLarge));
        let groups: Vec<Vec<usize>> = planned.iter().map(|p| p.positions.clone()).collect();
        assert_eq!(groups, vec![vec![0, 1], vec![2, 4], vec![5, 6]]);
        for p in &planned {
            let v: Vec<serde_json::Value> = serde_json::from_slice(&p.body).expect("an array");
            assert_eq!(v.len(), p.positions.len());
            assert!(p.body.len() <= 1024);
            let key = p.headers[&IDEMPOTENCY_KEY].to_str().expect("ascii");
            assert_eq!(key.len(), 32);
        }
        // By bytes: each element is about 150 bytes.
        let mut fates = vec![None; batch.len()];
        fates[3] = Some(Reject::TooLarge);
        let planned = json_requests(&batch, &mut fates, 100, 400);
        assert!(planned.len() >= 3, "{planned:?}");
        assert!(planned.iter().all(|p| p.body.len() <= 400));
        let all: Vec<usize> = planned.iter().flat_map(|p| p.positions.clone()).collect();
        assert_eq!(all, vec![0, 1, 2, 4, 5, 6], "every message once, in order");
    }

    #[test]
    fn idempotency_keys_are_stable_for_the_same_messages() {
        let a = MessageId(1);
        let b = MessageId(2);
        assert_eq!(
            idempotency_key([a, b].into_iter()),
            idempotency_key([a, b].into_iter())
        );
        assert_ne!(
            idempotency_key([a, b].into_iter()),
            idempotency_key([a].into_iter())
        );
        assert_ne!(
            idempotency_key([a, b].into_iter()),
            idempotency_key([b, a].into_iter())
        );
    }

    #[test]
    fn signatures_are_hmac_sha256_of_the_body_in_lowercase_hex() {
        // RFC 4231, test case 2.
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"Jefe");
        let sig = signature(&key, b"what do ya want for nothing?");
        assert_eq!(
            sig.to_str().expect("ascii"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn raw_requests_carry_the_message_in_headers() {
        let m = message("a.b", b"\x00bin", &[("Level", "warn"), ("note", "café")]);
        let (body, headers) = raw_request(&m, 1024).expect("encodes");
        assert_eq!(&body[..], b"\x00bin");
        assert_eq!(headers[&TOPIC], "a.b");
        assert_eq!(headers[&ID], m.id.to_string().as_str());
        assert_eq!(headers[&IDEMPOTENCY_KEY], m.id.to_string().as_str());
        assert_eq!(headers["x-switchyard-attr-level"], "warn");
        assert_eq!(
            headers["x-switchyard-attr-note"].as_bytes(),
            "café".as_bytes()
        );
        for (attribute, why) in [
            (("bad name", "v"), "a space"),
            (("k", "a\nb"), "a line break"),
            (("k", "a\rb"), "a carriage return"),
        ] {
            let m = message("a.b", b"x", &[attribute]);
            assert_eq!(
                raw_request(&m, 1024).map(|_| ()),
                Err(RawRefusal::Attribute(attribute.0.into())),
                "{why}"
            );
        }
        let m = message("a.b", b"x", &[("A", "1"), ("a", "2")]);
        assert!(matches!(
            raw_request(&m, 1024),
            Err(RawRefusal::Attribute(_))
        ));
        let m = message("a.b", &[0; 2000], &[]);
        assert_eq!(raw_request(&m, 1024).map(|_| ()), Err(RawRefusal::TooLarge));
    }
}
