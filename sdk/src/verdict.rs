//! What a plugin answers for each message, and how answers are written into
//! the result buffer (`ABI.md` §5.2).

use crate::abi;
use crate::message::{put_bytes, put_u32};

/// A filter's answer for one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Pass the message on unchanged.
    Keep,
    /// Drop the message (counted as filtered by the route).
    Drop,
    /// Pass it on with the given fields replaced.
    Rewrite(Rewrite),
    /// Answer the request with this payload, as a one-frame reply, and go
    /// no further. On a message that is not a request
    /// ([`Message::is_request`](crate::Message::is_request)) the router
    /// counts it as filtered.
    Reply(Vec<u8>),
    /// Refuse the request: the client gets a `REJECTED` error carrying
    /// this reason (at most [`abi::MAX_REJECT_REASON`] bytes; the SDK
    /// cuts a longer one at a character boundary).
    /// The message goes no further; on a message that is not a request it
    /// is simply filtered.
    Reject(String),
}

/// The fields a [`Verdict::Rewrite`] replaces; `None` keeps the original.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// A new topic; the router refuses an invalid one (`bad_verdict`).
    pub topic: Option<String>,
    /// A new payload.
    pub payload: Option<Vec<u8>>,
    /// A new attribute set, replacing the whole old set.
    pub attributes: Option<Vec<(String, String)>>,
}

impl Rewrite {
    /// A rewrite that changes nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the topic.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Replaces the payload.
    pub fn payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.payload = Some(payload.into());
        self
    }

    /// Replaces the attributes with `attrs`.
    pub fn attributes<K: Into<String>, V: Into<String>>(
        mut self,
        attrs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.attributes = Some(
            attrs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }
}

/// A router's answer for one message; names borrow from the plugin (its
/// config, or `'static` text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// Send to one output.
    To(&'a str),
    /// Send to each of these outputs (1 to 64 names).
    ToAll(&'a [String]),
    /// Send where the route sends without a routing plugin.
    Default,
    /// Hand to the route's dead-letter handling.
    DeadLetter,
}

/// Appends a filter verdict in the ABI layout.
#[inline]
pub(crate) fn encode_verdict(out: &mut Vec<u8>, v: &Verdict) {
    match v {
        Verdict::Keep => out.push(abi::FILTER_KEEP),
        Verdict::Drop => out.push(abi::FILTER_DROP),
        Verdict::Rewrite(r) => encode_rewrite(out, r),
        Verdict::Reply(payload) => {
            out.push(abi::FILTER_REPLY);
            put_bytes(out, payload);
        }
        Verdict::Reject(reason) => {
            out.push(abi::FILTER_REJECT);
            let cut = reason.floor_char_boundary(abi::MAX_REJECT_REASON as usize);
            put_bytes(out, &reason.as_bytes()[..cut]);
        }
    }
}

/// Appends a rewrite verdict (tag, field bits, fields).
fn encode_rewrite(out: &mut Vec<u8>, r: &Rewrite) {
    out.push(abi::FILTER_REWRITE);
    let mut fields = 0;
    if r.topic.is_some() {
        fields |= abi::REWRITE_TOPIC;
    }
    if r.payload.is_some() {
        fields |= abi::REWRITE_PAYLOAD;
    }
    if r.attributes.is_some() {
        fields |= abi::REWRITE_ATTRIBUTES;
    }
    out.push(fields);
    if let Some(t) = &r.topic {
        put_bytes(out, t.as_bytes());
    }
    if let Some(p) = &r.payload {
        put_bytes(out, p);
    }
    if let Some(attrs) = &r.attributes {
        put_u32(out, attrs.len() as u32);
        for (k, v) in attrs {
            put_bytes(out, k.as_bytes());
            put_bytes(out, v.as_bytes());
        }
    }
}

/// Appends a router verdict in the ABI layout.
pub(crate) fn encode_route(out: &mut Vec<u8>, r: &Route<'_>) {
    match r {
        Route::To(name) => {
            out.push(abi::ROUTE_OUTPUTS);
            put_u32(out, 1);
            put_bytes(out, name.as_bytes());
        }
        Route::ToAll(names) => {
            out.push(abi::ROUTE_OUTPUTS);
            put_u32(out, names.len() as u32);
            for n in names.iter() {
                put_bytes(out, n.as_bytes());
            }
        }
        Route::Default => out.push(abi::ROUTE_DEFAULT),
        Route::DeadLetter => out.push(abi::ROUTE_DEAD_LETTER),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(v: &Verdict) -> Vec<u8> {
        let mut out = Vec::new();
        encode_verdict(&mut out, v);
        out
    }

    #[test]
    fn reply_and_reject_are_a_tag_then_a_length_prefixed_field() {
        assert_eq!(
            encoded(&Verdict::Reply(b"ok".to_vec())),
            [abi::FILTER_REPLY, 2, 0, 0, 0, b'o', b'k']
        );
        assert_eq!(
            encoded(&Verdict::Reject("no".into())),
            [abi::FILTER_REJECT, 2, 0, 0, 0, b'n', b'o']
        );
    }

    #[test]
    fn a_long_reason_is_cut_at_a_character_boundary() {
        // 'é' is two bytes: 1023 of them would end mid-character at 1024.
        let out = encoded(&Verdict::Reject("é".repeat(1023)));
        let len = u32::from_le_bytes([out[1], out[2], out[3], out[4]]) as usize;
        assert_eq!(len, 1024);
        assert!(std::str::from_utf8(&out[5..]).is_ok());
        let out = encoded(&Verdict::Reject(format!("x{}", "é".repeat(600))));
        let len = u32::from_le_bytes([out[1], out[2], out[3], out[4]]) as usize;
        assert_eq!(len, 1023, "never past the limit, never inside a character");
        assert!(std::str::from_utf8(&out[5..]).is_ok());
    }
}
