//! `content_router`: sends each message to outputs chosen by rules.
//!
//! ```toml
//! [[plugin]]
//! name = "by-content"
//! path = "plugins/content_router.wasm"
//! config = { rules = [
//!   { topic = "sensors.*.temp", json = { path = "value", op = "gt", value = 80 }, to = ["alerts", "dashboard"] },
//!   { attributes = { site = "42" }, to = ["site42"] },
//! ], otherwise = "default" }
//! ```
//!
//! Rules are tried in order; the first whose conditions all hold (topic
//! pattern, attribute equalities, one JSON comparison) names the outputs.
//! When none matches: `otherwise = "default"` (the route's own `to`, the
//! default), `"dead_letter"`, or a list of outputs.

use std::collections::BTreeMap;

use serde::Deserialize;
use switchyard_plugin_common::{Comparison, Pattern};
use switchyard_sdk::json::JsonPath;
use switchyard_sdk::{Config, Error, Message, Route, Router};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    rules: Vec<RuleSettings>,
    #[serde(default)]
    otherwise: Otherwise,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSettings {
    topic: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    json: Option<JsonCondition>,
    to: Vec<String>,
}

#[derive(Deserialize)]
struct JsonCondition {
    path: String,
    #[serde(flatten)]
    cmp: Comparison,
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Otherwise {
    #[default]
    #[serde(skip)]
    Default,
    Named(Named),
    Outputs(Vec<String>),
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Named {
    Default,
    DeadLetter,
}

struct Rule {
    topic: Option<Pattern>,
    attributes: Vec<(String, String)>,
    /// The JSON condition, its path split once here.
    json: Option<(JsonPath, Comparison)>,
    to: Vec<String>,
}

impl Rule {
    fn matches(&self, msg: &Message<'_>) -> bool {
        self.topic.as_ref().is_none_or(|p| p.matches(msg.topic()))
            && self
                .attributes
                .iter()
                .all(|(k, v)| msg.attr(k) == Some(v.as_str()))
            && self
                .json
                .as_ref()
                .is_none_or(|(path, cmp)| cmp.test_json(msg.json_path(path)))
    }
}

/// The content router.
pub struct ContentRouter {
    rules: Vec<Rule>,
    otherwise: Otherwise,
}

fn check_outputs(to: &[String], what: &str) -> Result<(), Error> {
    if to.is_empty() || to.len() > 64 {
        return Err(Error::config(format!("{what}: give 1 to 64 outputs")));
    }
    if let Some(bad) = to.iter().find(|n| n.is_empty() || n.len() > 255) {
        return Err(Error::config(format!("{what}: bad output name {bad:?}")));
    }
    Ok(())
}

impl Router for ContentRouter {
    fn init(config: &Config<'_>) -> Result<Self, Error> {
        let s: Settings = config.parse()?;
        let mut rules = Vec::with_capacity(s.rules.len());
        for (i, r) in s.rules.into_iter().enumerate() {
            check_outputs(&r.to, &format!("rule {i}"))?;
            if let Some(j) = &r.json {
                j.cmp.validate()?;
            }
            rules.push(Rule {
                topic: r.topic.as_deref().map(Pattern::parse).transpose()?,
                attributes: r.attributes.into_iter().collect(),
                json: r.json.map(|j| (JsonPath::new(&j.path), j.cmp)),
                to: r.to,
            });
        }
        if let Otherwise::Outputs(to) = &s.otherwise {
            check_outputs(to, "otherwise")?;
        }
        Ok(Self {
            rules,
            otherwise: s.otherwise,
        })
    }

    fn route(&mut self, msg: &Message<'_>) -> Route<'_> {
        if let Some(rule) = self.rules.iter().find(|r| r.matches(msg)) {
            return Route::ToAll(&rule.to);
        }
        match &self.otherwise {
            Otherwise::Default | Otherwise::Named(Named::Default) => Route::Default,
            Otherwise::Named(Named::DeadLetter) => Route::DeadLetter,
            Otherwise::Outputs(to) => Route::ToAll(to),
        }
    }
}

switchyard_sdk::router!(ContentRouter);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::OwnedMessage;
    use switchyard_sdk::testing::{Routed, RouterHarness};

    const CONFIG: &str = r#"{"rules":[
        {"topic":"sensors.*.temp","json":{"path":"value","op":"gt","value":80},"to":["alerts","dashboard"]},
        {"attributes":{"site":"42"},"to":["site42"]}
    ],"otherwise":"dead_letter"}"#;

    #[test]
    fn first_matching_rule_wins() {
        let mut h = RouterHarness::<ContentRouter>::new(CONFIG).expect("config");
        let v = h.run(&[
            OwnedMessage::new("sensors.a.temp", r#"{"value":90}"#).attr("site", "42"),
            OwnedMessage::new("sensors.a.temp", r#"{"value":10}"#).attr("site", "42"),
            OwnedMessage::new("sensors.a.temp", r#"{"value":10}"#),
        ]);
        assert_eq!(
            v,
            [
                Routed::To(vec!["alerts".into(), "dashboard".into()]),
                Routed::To(vec!["site42".into()]),
                Routed::DeadLetter,
            ]
        );
    }

    #[test]
    fn otherwise_forms() {
        let msg = [OwnedMessage::new("x", "")];
        for (otherwise, want) in [
            ("", Routed::Default),
            (r#","otherwise":"default""#, Routed::Default),
            (
                r#","otherwise":["spill"]"#,
                Routed::To(vec!["spill".into()]),
            ),
        ] {
            let cfg = format!(r#"{{"rules":[]{otherwise}}}"#);
            let mut h = RouterHarness::<ContentRouter>::new(&cfg).expect("config");
            assert_eq!(h.run(&msg), [want]);
        }
    }

    #[test]
    fn bad_configs_are_refused() {
        for cfg in [
            r#"{"rules":[{"to":[]}]}"#,
            r#"{"rules":[{"topic":"a..b","to":["x"]}]}"#,
            r#"{"rules":[],"otherwise":"somewhere"}"#,
        ] {
            assert!(RouterHarness::<ContentRouter>::new(cfg).is_err(), "{cfg}");
        }
    }
}
