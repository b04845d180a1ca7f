//! Pieces the first-party plugins share: comparisons read from config
//! ([`Condition`]), message keys (`"attr:device"`, `"json:a.b"`, ...)
//! ([`KeySpec`]), NATS-style topic patterns ([`Pattern`]) and the values
//! templates insert ([`Placeholder`]).

use std::borrow::Cow;
use std::hash::{Hash, Hasher};

use serde::Deserialize;
use switchyard_sdk::json::Value;
use switchyard_sdk::{Error, Message};

/// A comparison operator, as written in config.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Equal (numbers compare as numbers).
    Eq,
    /// Not equal.
    Ne,
    /// Less than.
    Lt,
    /// Less than or equal.
    Le,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Ge,
    /// Text contains the value.
    Contains,
    /// Text starts with the value.
    Prefix,
    /// Text ends with the value.
    Suffix,
    /// Equal to one of a list.
    In,
    /// Present at all (the value is ignored).
    Exists,
    /// Absent.
    Missing,
}

/// The right-hand side of a comparison.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Operand {
    /// A boolean.
    Bool(bool),
    /// A number.
    Number(f64),
    /// Text.
    Text(String),
    /// A list of texts (for `in`).
    List(Vec<String>),
    /// No value (for `exists`/`missing`).
    #[default]
    None,
}

/// One comparison: `op` applied to a found value and `value`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Comparison {
    /// The operator.
    pub op: Op,
    /// The operand.
    #[serde(default)]
    pub value: Operand,
}

impl Comparison {
    /// Checks the operand suits the operator.
    ///
    /// # Errors
    /// A config error naming the mismatch.
    pub fn validate(&self) -> Result<(), Error> {
        let ok = match self.op {
            Op::Exists | Op::Missing => true,
            Op::In => matches!(self.value, Operand::List(_)),
            Op::Lt | Op::Le | Op::Gt | Op::Ge => {
                matches!(self.value, Operand::Number(_) | Operand::Text(_))
            }
            Op::Contains | Op::Prefix | Op::Suffix => matches!(self.value, Operand::Text(_)),
            Op::Eq | Op::Ne => !matches!(self.value, Operand::None | Operand::List(_)),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::config(format!(
                "operator {:?} cannot take the value {:?}",
                self.op, self.value
            )))
        }
    }

    /// Applies the comparison to a text value (`None` when absent).
    pub fn test_text(&self, actual: Option<&str>) -> bool {
        let Some(actual) = actual else {
            return self.op == Op::Missing;
        };
        match (self.op, &self.value) {
            (Op::Exists, _) => true,
            (Op::Missing, _) => false,
            (Op::In, Operand::List(list)) => list.iter().any(|v| v == actual),
            (Op::Contains, Operand::Text(v)) => actual.contains(v.as_str()),
            (Op::Prefix, Operand::Text(v)) => actual.starts_with(v.as_str()),
            (Op::Suffix, Operand::Text(v)) => actual.ends_with(v.as_str()),
            (op, Operand::Number(n)) => match switchyard_sdk::json::parse_number(actual.trim()) {
                Some(a) => ordered(op, a.partial_cmp(n)),
                None => op == Op::Ne,
            },
            (op, Operand::Bool(b)) => match actual {
                "true" => ordered(op, Some(true.cmp(b))),
                "false" => ordered(op, Some(false.cmp(b))),
                _ => op == Op::Ne,
            },
            (op, Operand::Text(v)) => ordered(op, Some(actual.cmp(v.as_str()))),
            _ => false,
        }
    }

    /// Applies the comparison to a JSON value (`None` when absent).
    pub fn test_json(&self, actual: Option<Value<'_>>) -> bool {
        match (actual, &self.value) {
            (None, _) => self.test_text(None),
            // Numbers against numbers without a detour through text.
            (Some(v @ Value::Number(_)), Operand::Number(n))
                if !matches!(self.op, Op::Exists | Op::Missing) =>
            {
                match v.as_f64() {
                    Some(a) => ordered(self.op, a.partial_cmp(n)),
                    None => self.op == Op::Ne,
                }
            }
            (Some(v), _) => self.test_text(Some(&v.to_text())),
        }
    }
}

fn ordered(op: Op, ord: Option<std::cmp::Ordering>) -> bool {
    use std::cmp::Ordering::*;
    match (op, ord) {
        (_, None) => op == Op::Ne,
        (Op::Eq, Some(o)) => o == Equal,
        (Op::Ne, Some(o)) => o != Equal,
        (Op::Lt, Some(o)) => o == Less,
        (Op::Le, Some(o)) => o != Greater,
        (Op::Gt, Some(o)) => o == Greater,
        (Op::Ge, Some(o)) => o != Less,
        _ => false,
    }
}

/// Which part of a message a plugin keys on, written `"id"`, `"topic"`,
/// `"payload"`, `"input"`, `"attr:NAME"` or `"json:PATH"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySpec {
    /// The message id.
    Id,
    /// The topic.
    Topic,
    /// The whole payload.
    Payload,
    /// The input's name.
    Input,
    /// One attribute.
    Attr(String),
    /// One JSON field of the payload.
    Json(String),
}

impl KeySpec {
    /// Parses the config form.
    ///
    /// # Errors
    /// A config error listing the accepted forms.
    pub fn parse(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "id" => KeySpec::Id,
            "topic" => KeySpec::Topic,
            "payload" => KeySpec::Payload,
            "input" => KeySpec::Input,
            _ => match s.split_once(':') {
                Some(("attr", k)) if !k.is_empty() => KeySpec::Attr(k.to_owned()),
                Some(("json", p)) if !p.is_empty() => KeySpec::Json(p.to_owned()),
                _ => {
                    return Err(Error::config(format!(
                        "key {s:?}: expected id, topic, payload, input, attr:NAME or json:PATH"
                    )));
                }
            },
        })
    }

    /// A 64-bit hash of the key's value, or `None` when the message has
    /// no such value. Deterministic (SipHash with fixed keys).
    pub fn hash(&self, msg: &Message<'_>) -> Option<u64> {
        let mut h = std::hash::DefaultHasher::new();
        match self {
            KeySpec::Id => msg.id().hash(&mut h),
            KeySpec::Topic => msg.topic().hash(&mut h),
            KeySpec::Payload => msg.payload().hash(&mut h),
            KeySpec::Input => msg.input().hash(&mut h),
            KeySpec::Attr(k) => msg.attr(k)?.hash(&mut h),
            KeySpec::Json(p) => msg.json(p)?.to_text().hash(&mut h),
        }
        Some(h.finish())
    }

    /// The key's value as text (ids in hex), or `None` when absent.
    pub fn text<'a>(&self, msg: &Message<'a>) -> Option<Cow<'a, str>> {
        Some(match self {
            KeySpec::Id => Cow::Owned(format!("{:032x}", msg.id())),
            KeySpec::Topic => Cow::Borrowed(msg.topic()),
            KeySpec::Payload => String::from_utf8_lossy(msg.payload()),
            KeySpec::Input => Cow::Borrowed(msg.input()),
            KeySpec::Attr(k) => Cow::Borrowed(msg.attr(k)?),
            KeySpec::Json(p) => msg.json(p)?.to_text(),
        })
    }
}

/// A NATS-style topic pattern: `*` matches one token, a final `>` one or
/// more tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    tokens: Vec<String>,
}

impl Pattern {
    /// Parses a pattern.
    ///
    /// # Errors
    /// A config error for an empty token or a `>` that is not last.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let tokens: Vec<String> = s.split('.').map(str::to_owned).collect();
        for (i, t) in tokens.iter().enumerate() {
            if t.is_empty() {
                return Err(Error::config(format!("pattern {s:?} has an empty token")));
            }
            if t == ">" && i + 1 != tokens.len() {
                return Err(Error::config(format!("pattern {s:?}: '>' must be last")));
            }
        }
        Ok(Self { tokens })
    }

    /// Whether `topic` matches.
    pub fn matches(&self, topic: &str) -> bool {
        let mut parts = topic.split('.');
        for t in &self.tokens {
            match (t.as_str(), parts.next()) {
                (">", Some(_)) => return true,
                ("*", Some(_)) => {}
                (lit, Some(p)) if lit == p => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }
}

/// A value a template inserts, named `topic`, `topic.N` (the Nth token,
/// from 0), `attr.NAME`, `json.PATH`, `input` or `id` (32 hex digits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placeholder {
    /// The whole topic.
    Topic,
    /// One token of the topic.
    Token(usize),
    /// An attribute.
    Attr(String),
    /// A field of the JSON payload.
    Json(String),
    /// The input that accepted the message.
    Input,
    /// The message id.
    Id,
}

impl Placeholder {
    /// The names a template may use, for error messages.
    pub const NAMES: &'static str = "topic, topic.N, attr.NAME, json.PATH, input or id";

    /// Reads a placeholder's name; `None` when it names nothing known.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "topic" => Self::Topic,
            "input" => Self::Input,
            "id" => Self::Id,
            _ => match name.split_once('.')? {
                ("topic", n) => Self::Token(n.parse().ok()?),
                ("attr", k) if !k.is_empty() => Self::Attr(k.to_owned()),
                ("json", p) if !p.is_empty() => Self::Json(p.to_owned()),
                _ => return None,
            },
        })
    }

    /// Its value in `msg`; `None` when the message has none (no such
    /// token, attribute or field).
    pub fn value<'a>(&self, msg: &Message<'a>) -> Option<Cow<'a, str>> {
        match self {
            Self::Topic => Some(msg.topic().into()),
            Self::Token(n) => msg.topic().split('.').nth(*n).map(Into::into),
            Self::Attr(k) => msg.attr(k).map(Into::into),
            Self::Json(p) => msg.json(p).map(|v| v.to_text()),
            Self::Input => Some(msg.input().into()),
            Self::Id => Some(format!("{:032x}", msg.id()).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(json: &str) -> Comparison {
        let c: Comparison = serde_json::from_str(json).expect("comparison");
        c.validate().expect("valid");
        c
    }

    #[test]
    fn comparisons_use_numbers_when_they_can() {
        assert!(cmp(r#"{"op":"gt","value":30}"#).test_text(Some("31.5")));
        assert!(!cmp(r#"{"op":"gt","value":30}"#).test_text(Some("4")));
        assert!(
            cmp(r#"{"op":"gt","value":"30"}"#).test_text(Some("4")),
            "text order"
        );
        assert!(cmp(r#"{"op":"in","value":["a","b"]}"#).test_text(Some("b")));
        assert!(cmp(r#"{"op":"missing"}"#).test_text(None));
        assert!(!cmp(r#"{"op":"eq","value":1}"#).test_text(None));
        assert!(cmp(r#"{"op":"eq","value":true}"#).test_text(Some("true")));
        assert!(cmp(r#"{"op":"ne","value":1}"#).test_text(Some("x")));
        let bad: Comparison = serde_json::from_str(r#"{"op":"in","value":3}"#).expect("parses");
        assert!(bad.validate().is_err());
    }

    #[test]
    fn patterns_match_like_nats() {
        let p = Pattern::parse("sensors.*.temp").expect("pattern");
        assert!(p.matches("sensors.a.temp"));
        assert!(!p.matches("sensors.a.b.temp"));
        let p = Pattern::parse("sensors.>").expect("pattern");
        assert!(p.matches("sensors.a.b"));
        assert!(!p.matches("sensors"));
        assert!(Pattern::parse("a.>.b").is_err());
    }

    #[test]
    fn keys_parse() {
        assert_eq!(KeySpec::parse("attr:dev"), Ok(KeySpec::Attr("dev".into())));
        assert_eq!(KeySpec::parse("json:a.b"), Ok(KeySpec::Json("a.b".into())));
        assert!(KeySpec::parse("attr:").is_err());
        assert!(KeySpec::parse("nope").is_err());
    }
}
