//! The one shape every error takes on the wire, for HTTP clients and for
//! ZeroMQ clients alike:
//!
//! ```json
//! {"error": {"code": "INVALID_TOPIC", "message": "path: topic has an empty token"}}
//! ```
//!
//! `code` is stable and meant for machines; `message` is for people and may
//! change. Publish refusals also carry `"ids"`: the messages of the request
//! that were admitted before the refusal. HTTP statuses are chosen in
//! `crate::http::error`, ZeroMQ error frames in [`super::request`]; both
//! render their body here.

use serde::Serialize;
use serde::ser::{SerializeSeq, Serializer};

use super::MessageId;

/// An error body, ready to serialise.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    error: Detail<'a>,
}

#[derive(Debug, Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ids: Option<Ids<'a>>,
}

impl<'a> ErrorBody<'a> {
    /// The body of an error with stable `code` and human `message`.
    pub fn new(code: &'a str, message: &'a str) -> Self {
        Self {
            error: Detail {
                code,
                message,
                ids: None,
            },
        }
    }

    /// The same, listing the `ids` admitted before the refusal.
    pub fn with_ids(mut self, ids: &'a [MessageId]) -> Self {
        self.error.ids = Some(Ids(ids));
        self
    }

    /// The body as JSON text.
    pub fn to_json(&self) -> String {
        // Plain strings and ids: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"error":{"code":"INTERNAL","message":"error serialisation failed"}}"#.to_owned()
        })
    }
}

/// Message ids serialised as a JSON array of 32-digit hex strings, without
/// an intermediate `String` per id.
#[derive(Debug, Clone, Copy)]
pub struct Ids<'a>(pub &'a [MessageId]);

impl Serialize for Ids<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for id in self.0 {
            seq.serialize_element(&HexId(*id))?;
        }
        seq.end()
    }
}

struct HexId(MessageId);

impl Serialize for HexId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shape_with_and_without_ids() {
        let plain: serde_json::Value =
            serde_json::from_str(&ErrorBody::new("NOT_FOUND", "no resource at /x").to_json())
                .expect("json");
        assert_eq!(
            plain,
            serde_json::json!({"error": {"code": "NOT_FOUND", "message": "no resource at /x"}})
        );
        let ids = [MessageId(1)];
        let with: serde_json::Value = serde_json::from_str(
            &ErrorBody::new("BACKPRESSURE", "full")
                .with_ids(&ids)
                .to_json(),
        )
        .expect("json");
        assert_eq!(
            with["error"]["ids"],
            serde_json::json!([format!("{:032x}", 1)])
        );
    }
}
