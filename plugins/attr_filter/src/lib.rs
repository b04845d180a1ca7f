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
        if let Some(key) = &s.key {
            let refused = match msg.attr(key) {
                None => s.missing == Missing::Drop,
                Some(v) => {
                    (!s.allow.is_empty() && !s.allow.iter().any(|a| a == v))
                        || s.deny.iter().any(|d| d == v)
                }
            };
            if refused {
                return Verdict::Drop;
            }
        }
        if s.compare.iter().all(|c| c.cmp.test_text(msg.attr(&c.key))) {
            Verdict::Keep
        } else {
            Verdict::Drop
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
