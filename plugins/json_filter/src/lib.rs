//! `json_filter`: keeps or drops messages by one field of a JSON payload.
//!
//! ```toml
//! [[plugin]]
//! name   = "hot"
//! path   = "plugins/json_filter.wasm"
//! config = { path = "sensor.temp", op = "gt", value = 30 }
//! ```
//!
//! `op` is one of `eq ne lt le gt ge contains prefix suffix in exists
//! missing`; numbers compare as numbers. By default matching messages are
//! kept and the rest dropped; `action = "drop"` inverts that. A payload
//! that is not JSON, or lacks the field, does not match (unless `op =
//! "missing"`). The field is found without parsing the whole document.

use serde::Deserialize;
use switchyard_plugin_common::Comparison;
use switchyard_sdk::json::JsonPath;
use switchyard_sdk::{Config, Error, Filter, Message, Verdict};

// No `deny_unknown_fields`: serde does not support it with `flatten`.
#[derive(Deserialize)]
struct Settings {
    path: String,
    #[serde(flatten)]
    cmp: Comparison,
    #[serde(default)]
    action: Action,
}

#[derive(Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Action {
    /// Keep the messages that match.
    #[default]
    Keep,
    /// Drop the messages that match.
    Drop,
}

/// The JSON field filter.
pub struct JsonFilter {
    settings: Settings,
    /// `settings.path`, split once here rather than on every message.
    path: JsonPath,
}

impl Filter for JsonFilter {
    fn init(config: &Config<'_>) -> Result<Self, Error> {
        let settings: Settings = config.parse()?;
        settings.cmp.validate()?;
        let path = JsonPath::new(&settings.path);
        Ok(Self { settings, path })
    }

    fn filter(&mut self, msg: &Message<'_>) -> Verdict {
        let s = &self.settings;
        let matched = s.cmp.test_json(msg.json_path(&self.path));
        if matched == (s.action == Action::Keep) {
            Verdict::Keep
        } else {
            Verdict::Drop
        }
    }
}

switchyard_sdk::filter!(JsonFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::OwnedMessage;
    use switchyard_sdk::testing::FilterHarness;

    fn run(config: &str, payloads: &[&str]) -> Vec<Verdict> {
        let msgs: Vec<_> = payloads
            .iter()
            .map(|p| OwnedMessage::new("t", *p))
            .collect();
        FilterHarness::<JsonFilter>::new(config)
            .expect("config")
            .run(&msgs)
    }

    #[test]
    fn keeps_matching_numbers() {
        let v = run(
            r#"{"path":"sensor.temp","op":"gt","value":30}"#,
            &[
                r#"{"sensor":{"temp":31}}"#,
                r#"{"sensor":{"temp":3}}"#,
                r#"{"sensor":{}}"#,
                "not json",
            ],
        );
        assert_eq!(
            v,
            [Verdict::Keep, Verdict::Drop, Verdict::Drop, Verdict::Drop]
        );
    }

    #[test]
    fn drop_action_and_strings() {
        let v = run(
            r#"{"path":"level","op":"in","value":["debug","trace"],"action":"drop"}"#,
            &[r#"{"level":"debug"}"#, r#"{"level":"warn"}"#, "{}"],
        );
        assert_eq!(v, [Verdict::Drop, Verdict::Keep, Verdict::Keep]);
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(FilterHarness::<JsonFilter>::new(r#"{"op":"eq","value":1}"#).is_err());
        assert!(FilterHarness::<JsonFilter>::new(r#"{"path":"a","op":"between"}"#).is_err());
    }
}
