//! `attr_filter`: keeps or drops messages by their attributes.
//!
//! ```toml
//! [[plugin]]
//! name   = "drop-debug"
//! path   = "plugins/attr_filter.wasm"
//! config = { key = "level", deny = ["debug", "trace"] }
//!
//! [[plugin]]
//! name   = "hot-line-1"
//! path   = "plugins/attr_filter.wasm"
//! config = { key = "line", allow = ["1"], compare = [{ key = "temp", op = "gt", value = 30 }] }
//! ```
//!
//! A message is kept when all hold: its `key` attribute is in `allow` (if
//! given) and not in `deny`; every `compare` entry holds (numbers compare
//! as numbers). A message without the `key` attribute is kept unless
//! `missing = "drop"`.
//!
//! With `reject = true`, a request (a message whose sender waits for a
//! reply) that would be dropped is refused instead: the client gets a
//! `REJECTED` error saying why, e.g. `attribute level=debug denied`.
//! Without it a dropped request is refused with the reason `filtered`.

use serde::Deserialize;
use switchyard_plugin_common::Comparison;
use switchyard_sdk::{Config, Error, Filter, Message, Verdict};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    key: Option<String>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    missing: Missing,
    #[serde(default)]
    compare: Vec<AttrComparison>,
    #[serde(default)]
    reject: bool,
}

#[derive(Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Missing {
    #[default]
    Keep,
    Drop,
}

#[derive(Deserialize)]
struct AttrComparison {
    key: String,
    #[serde(flatten)]
    cmp: Comparison,
}

/// The attribute filter.
pub struct AttrFilter {
    settings: Settings,
}

impl Filter for AttrFilter {
    fn init(config: &Config<'_>) -> Result<Self, Error> {
        let settings: Settings = config.parse()?;
        if settings.key.is_none() && !(settings.allow.is_empty() && settings.deny.is_empty()) {
            return Err(Error::config("allow/deny need a `key`"));
        }
        if settings.key.is_none() && settings.compare.is_empty() {
            return Err(Error::config("give a `key` with allow/deny, or `compare`"));
        }
        for c in &settings.compare {
            c.cmp.validate()?;
        }
        Ok(Self { settings })
    }

    fn filter(&mut self, msg: &Message<'_>) -> Verdict {
        let s = &self.settings;
        // The reason is only written for a request that gets it.
        let refuse = |why: &dyn Fn() -> String| {
            if s.reject && msg.is_request() {
                Verdict::Reject(why())
            } else {
                Verdict::Drop
            }
        };
        if let Some(key) = &s.key {
            match msg.attr(key) {
                None if s.missing == Missing::Drop => {
                    return refuse(&|| format!("attribute {key} missing"));
                }
                Some(v)
                    if (!s.allow.is_empty() && !s.allow.iter().any(|a| a == v))
                        || s.deny.iter().any(|d| d == v) =>
                {
                    return refuse(&|| format!("attribute {key}={v} denied"));
                }
                _ => {}
            }
        }
        match s
            .compare
            .iter()
            .find(|c| !c.cmp.test_text(msg.attr(&c.key)))
        {
            None => Verdict::Keep,
            Some(c) => refuse(&|| {
                let op = format!("{:?}", c.cmp.op).to_lowercase();
                format!("attribute {} fails {op}", c.key)
            }),
        }
    }
}

switchyard_sdk::filter!(AttrFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::OwnedMessage;
    use switchyard_sdk::testing::FilterHarness;

    fn run(config: &str, msgs: &[OwnedMessage]) -> Vec<Verdict> {
        FilterHarness::<AttrFilter>::new(config)
            .expect("config")
            .run(msgs)
    }

    #[test]
    fn deny_list_drops_matching_values() {
        let msgs = [
            OwnedMessage::new("a", "").attr("level", "debug"),
            OwnedMessage::new("a", "").attr("level", "info"),
            OwnedMessage::new("a", ""),
        ];
        assert_eq!(
            run(r#"{"key":"level","deny":["debug"]}"#, &msgs),
            [Verdict::Drop, Verdict::Keep, Verdict::Keep]
        );
        assert_eq!(
            run(
                r#"{"key":"level","deny":["debug"],"missing":"drop"}"#,
                &msgs
            ),
            [Verdict::Drop, Verdict::Keep, Verdict::Drop]
        );
    }

    #[test]
    fn allow_list_and_comparisons_must_all_hold() {
        let cfg = r#"{"key":"line","allow":["1"],"compare":[{"key":"temp","op":"gt","value":30}]}"#;
        let msgs = [
            OwnedMessage::new("a", "")
                .attr("line", "1")
                .attr("temp", "31"),
            OwnedMessage::new("a", "")
                .attr("line", "1")
                .attr("temp", "29"),
            OwnedMessage::new("a", "")
                .attr("line", "2")
                .attr("temp", "99"),
            OwnedMessage::new("a", "").attr("line", "1"),
        ];
        assert_eq!(
            run(cfg, &msgs),
            [Verdict::Keep, Verdict::Drop, Verdict::Drop, Verdict::Drop]
        );
    }

    #[test]
    fn with_reject_a_refused_request_is_told_why() {
        let cfg = r#"{"key":"level","deny":["debug"],"missing":"drop","compare":[{"key":"temp","op":"lt","value":30}],"reject":true}"#;
        let msgs = [
            OwnedMessage::new("a", "").attr("level", "debug").request(),
            OwnedMessage::new("a", "").request(),
            OwnedMessage::new("a", "")
                .attr("level", "info")
                .attr("temp", "31")
                .request(),
            OwnedMessage::new("a", "").attr("level", "info").request(),
            OwnedMessage::new("a", "").attr("level", "debug"),
        ];
        assert_eq!(
            run(cfg, &msgs),
            [
                Verdict::Reject("attribute level=debug denied".into()),
                Verdict::Reject("attribute level missing".into()),
                Verdict::Reject("attribute temp fails lt".into()),
                Verdict::Reject("attribute temp fails lt".into()),
                Verdict::Drop,
            ]
        );
        // Without `reject`, requests are dropped like any message.
        let cfg = r#"{"key":"level","deny":["debug"]}"#;
        assert_eq!(run(cfg, &msgs[..1]), [Verdict::Drop]);
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        for cfg in [
            "{}",
            r#"{"allow":["x"]}"#,
            r#"{"key":"k","typo":1}"#,
            r#"{"compare":[{"key":"k","op":"in","value":1}]}"#,
        ] {
            let err = FilterHarness::<AttrFilter>::new(cfg)
                .err()
                .expect("refused");
            assert_eq!(err.code(), switchyard_sdk::abi::ERROR_CONFIG, "{cfg}");
        }
    }
}
