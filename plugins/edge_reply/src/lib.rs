//! `edge_reply`: answers requests at the edge, without any backend.
//!
//! ```toml
//! [[plugin]]
//! name   = "edge"
//! path   = "plugins/edge_reply.wasm"
//! config = { replies = [
//!     { match = "status.health", payload = { status = "ok" } },
//!     { match = "status.echo.*", payload = "you asked ${topic.2} from ${attr.site}" },
//!   ], deny = [{ match = "admin.>", reason = "admin is not served here" }] }
//! ```
//!
//! Only requests (messages whose sender waits for a reply) are touched;
//! every other message passes on unchanged, as does a request nothing
//! matches. For a request, the `deny` entries are tried first, then the
//! `replies`, each in order; the first whose `match` matches the topic
//! wins:
//!
//! - a `deny` entry refuses the request: the client gets a `REJECTED`
//!   error with `reason` (default `denied`; at most 1 KiB);
//! - a `replies` entry answers it with `payload` as a one-frame reply and
//!   the request goes no further.
//!
//! `match` is a topic or a NATS-style pattern: `*` matches one token, a
//! final `>` one or more. `payload` is text (sent as it is) or any other
//! TOML/JSON value (sent as compact JSON). Either may hold placeholders,
//! filled from the request: `${topic}`, `${topic.N}` (token N, from 0),
//! `${attr.NAME}`, `${json.PATH}` (a field of the request's JSON
//! payload), `${input}` and `${id}` (32 hex digits); `$$` is a literal
//! `$`. A placeholder without a value is empty. In a JSON `payload` values
//! are inserted JSON-escaped; in a text one, as they are unless
//! `escape = "json"`.

use serde::Deserialize;
use switchyard_plugin_common::{Pattern, Placeholder};
use switchyard_sdk::serde_json::{self, Value};
use switchyard_sdk::{Config, Error, Filter, Message, Verdict};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    replies: Vec<ReplySettings>,
    #[serde(default)]
    deny: Vec<DenySettings>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplySettings {
    #[serde(rename = "match")]
    pattern: String,
    payload: Value,
    #[serde(default)]
    escape: Option<Escape>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DenySettings {
    #[serde(rename = "match")]
    pattern: String,
    #[serde(default = "default_reason")]
    reason: String,
}

fn default_reason() -> String {
    "denied".to_owned()
}

/// How placeholder values are inserted.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Escape {
    /// As they are.
    None,
    /// As the inside of a JSON string.
    Json,
}

/// One piece of a payload template.
#[derive(Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Value(Placeholder),
}

/// A payload with its placeholders found once, at init.
#[derive(Debug)]
struct Template {
    parts: Vec<Part>,
    escape: Escape,
}

impl Template {
    fn parse(text: &str, escape: Escape) -> Result<Self, Error> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            lit.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                lit.push('$');
                rest = tail;
            } else if let Some(inner) = after.strip_prefix('{') {
                let end = inner.find('}').ok_or_else(|| {
                    Error::config(format!("payload {text:?}: a `${{` is never closed"))
                })?;
                if !lit.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut lit)));
                }
                let name = &inner[..end];
                let placeholder = Placeholder::parse(name).ok_or_else(|| {
                    Error::config(format!(
                        "unknown placeholder ${{{name}}}: expected {}",
                        Placeholder::NAMES
                    ))
                })?;
                parts.push(Part::Value(placeholder));
                rest = &inner[end + 1..];
            } else {
                lit.push('$');
                rest = after;
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Self { parts, escape })
    }

    fn render(&self, msg: &Message<'_>) -> Vec<u8> {
        let mut out = String::new();
        for part in &self.parts {
            let value = match part {
                Part::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Part::Value(p) => p.value(msg),
            };
            let value = value.unwrap_or_default();
            match self.escape {
                Escape::None => out.push_str(&value),
                Escape::Json => {
                    let quoted = serde_json::to_string(&*value).unwrap_or_default();
                    // Without the surrounding quotes.
                    let inner = quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"'));
                    out.push_str(inner.unwrap_or_default());
                }
            }
        }
        out.into_bytes()
    }
}

/// The edge reply filter.
pub struct EdgeReply {
    deny: Vec<(Pattern, String)>,
    replies: Vec<(Pattern, Template)>,
}

impl Filter for EdgeReply {
    fn init(config: &Config<'_>) -> Result<Self, Error> {
        let settings: Settings = config.parse()?;
        if settings.replies.is_empty() && settings.deny.is_empty() {
            return Err(Error::config("give `replies`, `deny` or both"));
        }
        let limit = switchyard_sdk::abi::MAX_REJECT_REASON as usize;
        let deny = settings
            .deny
            .into_iter()
            .map(|d| {
                if d.reason.len() > limit {
                    return Err(Error::config(format!(
                        "deny {:?}: reason of {} bytes (at most {limit})",
                        d.pattern,
                        d.reason.len()
                    )));
                }
                Ok((Pattern::parse(&d.pattern)?, d.reason))
            })
            .collect::<Result<_, Error>>()?;
        let replies = settings
            .replies
            .into_iter()
            .map(|r| {
                let (text, escape) = match r.payload {
                    Value::String(s) => (s, r.escape.unwrap_or(Escape::None)),
                    other => (other.to_string(), r.escape.unwrap_or(Escape::Json)),
                };
                Ok((Pattern::parse(&r.pattern)?, Template::parse(&text, escape)?))
            })
            .collect::<Result<_, Error>>()?;
        Ok(Self { deny, replies })
    }

    fn filter(&mut self, msg: &Message<'_>) -> Verdict {
        if !msg.is_request() {
            return Verdict::Keep;
        }
        let topic = msg.topic();
        if let Some((_, reason)) = self.deny.iter().find(|(p, _)| p.matches(topic)) {
            return Verdict::Reject(reason.clone());
        }
        match self.replies.iter().find(|(p, _)| p.matches(topic)) {
            Some((_, template)) => Verdict::Reply(template.render(msg)),
            None => Verdict::Keep,
        }
    }
}

switchyard_sdk::filter!(EdgeReply);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::OwnedMessage;
    use switchyard_sdk::testing::FilterHarness;

    fn harness(config: &str) -> FilterHarness<EdgeReply> {
        FilterHarness::new(config).expect("config")
    }

    const CONFIG: &str = r#"{
        "replies": [
            {"match": "status.health", "payload": {"status": "ok"}},
            {"match": "status.echo.*", "payload": "${topic.2} from ${attr.site} (${input}) $$5 ${json.n}"},
            {"match": "status.>", "payload": "catch-all"}
        ],
        "deny": [{"match": "status.secret", "reason": "not here"}, {"match": "admin.>"}]
    }"#;

    #[test]
    fn requests_that_match_are_answered_or_refused() {
        let got = harness(CONFIG).run(&[
            OwnedMessage::new("status.health", "").request(),
            OwnedMessage::new("status.echo.x", r#"{"n":7}"#)
                .attr("site", "42")
                .request(),
            OwnedMessage::new("status.secret", "").request(),
            OwnedMessage::new("status.other.thing", "").request(),
            OwnedMessage::new("admin.users", "").request(),
            OwnedMessage::new("orders.new", "").request(),
        ]);
        assert_eq!(
            got,
            [
                Verdict::Reply(br#"{"status":"ok"}"#.to_vec()),
                Verdict::Reply(b"x from 42 (test) $5 7".to_vec()),
                Verdict::Reject("not here".into()),
                Verdict::Reply(b"catch-all".to_vec()),
                Verdict::Reject("denied".into()),
                Verdict::Keep,
            ]
        );
    }

    #[test]
    fn messages_that_are_not_requests_pass() {
        let got = harness(CONFIG).run(&[
            OwnedMessage::new("status.health", ""),
            OwnedMessage::new("admin.users", ""),
        ]);
        assert_eq!(got, [Verdict::Keep, Verdict::Keep]);
    }

    #[test]
    fn json_payloads_get_escaped_values_and_missing_ones_are_empty() {
        let cfg = r#"{"replies": [
            {"match": ">", "payload": {"who": "${attr.who}", "none": "${attr.nope}"}},
            {"match": "never", "payload": "x"}
        ]}"#;
        let got = harness(cfg).run(&[OwnedMessage::new("a", "")
            .attr("who", "say \"hi\"\n")
            .request()]);
        let Verdict::Reply(body) = &got[0] else {
            panic!("a reply: {got:?}")
        };
        let v: Value = serde_json::from_slice(body).expect("still JSON");
        assert_eq!(v["who"], "say \"hi\"\n");
        assert_eq!(v["none"], "");
        let text = r#"{"replies": [{"match": ">", "payload": "\"${attr.q}\"", "escape": "json"}]}"#;
        let got = harness(text).run(&[OwnedMessage::new("a", "").attr("q", "a\"b").request()]);
        assert_eq!(got, [Verdict::Reply(br#""a\"b""#.to_vec())]);
    }

    #[test]
    fn ids_are_32_hex_digits() {
        let cfg = r#"{"replies": [{"match": "id", "payload": "${id}"}]}"#;
        let got = harness(cfg).run(&[OwnedMessage::new("id", "").id(0xabc).request()]);
        assert_eq!(
            got,
            [Verdict::Reply(format!("{:032x}", 0xabc).into_bytes())]
        );
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        for (cfg, why) in [
            ("{}", "give `replies`"),
            (
                r#"{"replies": [{"match": "a..b", "payload": "x"}]}"#,
                "empty token",
            ),
            (
                r#"{"replies": [{"match": "a", "payload": "${nope}"}]}"#,
                "unknown placeholder",
            ),
            (
                r#"{"replies": [{"match": "a", "payload": "${topic.x}"}]}"#,
                "unknown placeholder",
            ),
            (
                r#"{"replies": [{"match": "a", "payload": "${topic"}]}"#,
                "never closed",
            ),
            (r#"{"replies": [{"match": "a"}]}"#, "payload"),
            (r#"{"deny": [{"match": "a", "typo": 1}]}"#, "typo"),
        ] {
            let err = FilterHarness::<EdgeReply>::new(cfg).err().expect("refused");
            assert_eq!(err.code(), switchyard_sdk::abi::ERROR_CONFIG, "{cfg}");
            assert!(err.message().contains(why), "{cfg}: {}", err.message());
        }
        let long = format!(
            r#"{{"deny": [{{"match": "a", "reason": "{}"}}]}}"#,
            "x".repeat(1025)
        );
        let err = FilterHarness::<EdgeReply>::new(&long)
            .err()
            .expect("refused");
        assert!(err.message().contains("1025 bytes"), "{}", err.message());
    }
}
