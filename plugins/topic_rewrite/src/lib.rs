//! `topic_rewrite`: sets each message's topic from a template.
//!
//! ```toml
//! [[plugin]]
//! name   = "by-site"
//! path   = "plugins/topic_rewrite.wasm"
//! config = { template = "site.{attr.site}.{topic.1}.{json.sensor.kind}" }
//! ```
//!
//! Placeholders: `{topic}` (the whole topic), `{topic.N}` (token N, from
//! 0), `{attr.NAME}`, `{json.PATH}`, `{input}` and `{id}`. Inserted values have
//! characters a topic token may not hold (`.`, space, `*`, `>`, control
//! characters) replaced by `_`. When a placeholder has no value the message
//! is kept unchanged, or dropped with `on_missing = "drop"`, or the value
//! `default` (if set) is used.

use serde::Deserialize;
use switchyard_plugin_common::Placeholder;
use switchyard_sdk::{Config, Error, Filter, Message, Rewrite, Verdict};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    template: String,
    #[serde(default)]
    on_missing: OnMissing,
    default: Option<String>,
}

#[derive(Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum OnMissing {
    #[default]
    Keep,
    Drop,
}

#[derive(Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Value(Placeholder),
}

fn parse_template(t: &str) -> Result<Vec<Part>, Error> {
    let mut parts = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_owned()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| Error::config(format!("template {t:?}: '{{' without '}}'")))?;
        let name = &rest[open + 1..open + close];
        let placeholder = Placeholder::parse(name).ok_or_else(|| {
            Error::config(format!(
                "template {t:?}: unknown placeholder {{{name}}}; expected {}",
                Placeholder::NAMES
            ))
        })?;
        parts.push(Part::Value(placeholder));
        rest = &rest[open + close + 1..];
    }
    if rest.contains('}') {
        return Err(Error::config(format!("template {t:?}: '}}' without '{{'")));
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    Ok(parts)
}

/// Appends `value` made safe for a topic token.
fn push_token(out: &mut String, value: &str) {
    if value.is_empty() {
        out.push('_');
        return;
    }
    out.extend(value.chars().map(|c| {
        if c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control() {
            '_'
        } else {
            c
        }
    }));
}

/// The topic rewriter.
pub struct TopicRewrite {
    parts: Vec<Part>,
    on_missing: OnMissing,
    default: Option<String>,
    buf: String,
}

impl TopicRewrite {
    fn render(&mut self, msg: &Message<'_>) -> Option<()> {
        self.buf.clear();
        for part in &self.parts {
            let value = match part {
                Part::Text(t) => {
                    self.buf.push_str(t);
                    continue;
                }
                // Already valid in a topic: inserted as they are.
                Part::Value(p @ (Placeholder::Topic | Placeholder::Id)) => {
                    if let Some(v) = p.value(msg) {
                        self.buf.push_str(&v);
                    }
                    continue;
                }
                Part::Value(p) => p.value(msg),
            };
            match (value, &self.default) {
                (Some(v), _) => push_token(&mut self.buf, &v),
                (None, Some(d)) => push_token(&mut self.buf, d),
                (None, None) => return None,
            }
        }
        Some(())
    }
}

fn valid_topic(t: &str) -> bool {
    !t.is_empty() && t.len() <= 1024 && t.split('.').all(|tok| !tok.is_empty())
}

impl Filter for TopicRewrite {
    fn init(config: &Config<'_>) -> Result<Self, Error> {
        let s: Settings = config.parse()?;
        let parts = parse_template(&s.template)?;
        for p in &parts {
            if let Part::Text(t) = p
                && t.chars().any(|c| c == '*' || c == '>' || c.is_whitespace())
            {
                return Err(Error::config(format!(
                    "template {:?}: topics may not hold spaces, '*' or '>'",
                    s.template
                )));
            }
        }
        Ok(Self {
            parts,
            on_missing: s.on_missing,
            default: s.default,
            buf: String::new(),
        })
    }

    fn filter(&mut self, msg: &Message<'_>) -> Verdict {
        if self.render(msg).is_none() || !valid_topic(&self.buf) {
            return match self.on_missing {
                OnMissing::Keep => Verdict::Keep,
                OnMissing::Drop => Verdict::Drop,
            };
        }
        if self.buf == msg.topic() {
            return Verdict::Keep;
        }
        Verdict::Rewrite(Rewrite::new().topic(self.buf.as_str()))
    }
}

switchyard_sdk::filter!(TopicRewrite);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::OwnedMessage;
    use switchyard_sdk::testing::FilterHarness;

    fn topic_of(v: &Verdict) -> Option<&str> {
        match v {
            Verdict::Rewrite(r) => r.topic.as_deref(),
            _ => None,
        }
    }

    #[test]
    fn fills_the_template_from_tokens_attributes_and_json() {
        let mut h = FilterHarness::<TopicRewrite>::new(
            r#"{"template":"site.{attr.site}.{topic.1}.{json.sensor.kind}"}"#,
        )
        .expect("config");
        let v = h.run(&[
            OwnedMessage::new("sensors.line1.temp", r#"{"sensor":{"kind":"pt.100"}}"#)
                .attr("site", "42"),
            OwnedMessage::new("sensors.line1.temp", "{}").attr("site", "42"),
        ]);
        assert_eq!(topic_of(&v[0]), Some("site.42.line1.pt_100"));
        assert_eq!(v[1], Verdict::Keep, "a missing field keeps the message");
    }

    #[test]
    fn missing_values_drop_or_use_the_default() {
        let msg = [OwnedMessage::new("a.b", "")];
        let mut h = FilterHarness::<TopicRewrite>::new(
            r#"{"template":"x.{attr.site}","on_missing":"drop"}"#,
        )
        .expect("config");
        assert_eq!(h.run(&msg), [Verdict::Drop]);
        let mut h = FilterHarness::<TopicRewrite>::new(
            r#"{"template":"x.{attr.site}","default":"unknown site"}"#,
        )
        .expect("config");
        assert_eq!(topic_of(&h.run(&msg)[0]), Some("x.unknown_site"));
    }

    #[test]
    fn bad_templates_are_refused() {
        for t in ["x.{nope}", "x.{attr.a", "x}", "a b.{topic}", "{topic.x}"] {
            let cfg = format!(r#"{{"template":{t:?}}}"#);
            assert!(FilterHarness::<TopicRewrite>::new(&cfg).is_err(), "{t}");
        }
    }
}
