//! `[[acl]]`: who may publish and subscribe where, and use which admin
//! endpoints.
//!
//! ```toml
//! [[acl]]
//! principals = ["*"]                      # any authenticated principal
//! publish    = ["sensors.{principal}.>"]  # `{principal}`, `{claim.x}` fill whole tokens
//! subscribe  = ["commands.{principal}.>"]
//!
//! [[acl]]
//! when  = { role = "ops" }                # claims to match (JWT principals)
//! admin = ["read", "reload"]
//! deny_publish = ["sensors.secret.>"]     # deny rules win over every allow
//! ```
//!
//! Principals: `"*"` is any authenticated principal, `"anonymous"` a
//! request without credentials (on a listener that accepts it), anything
//! else one principal's name. A rule applies when its principals match and
//! every `when` claim equals the given value (or, for a list claim, holds
//! it). Once `[[auth]]` or `[[acl]]` is in the file, what no rule allows is
//! denied. Rules reload live.

use std::collections::BTreeMap;

use serde::Serialize;

use super::checker::Checker;
use super::error::Subject;
use super::raw::{RawAcl, S};
use crate::message::Pattern;

/// One `[[acl]]` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AclRule {
    /// Whom the rule is for: `"*"`, `"anonymous"` or principal names. When
    /// not written: `["*"]` if `when` is, else required.
    pub principals: Vec<String>,
    /// Claims that must match, claim name to value.
    pub when: BTreeMap<String, String>,
    /// Topic patterns the principal may publish to.
    pub publish: Vec<TopicRule>,
    /// Topic patterns the principal may subscribe to.
    pub subscribe: Vec<TopicRule>,
    /// Topic patterns the principal may never publish to.
    pub deny_publish: Vec<TopicRule>,
    /// Topic patterns the principal may never subscribe to.
    pub deny_subscribe: Vec<TopicRule>,
    /// Admin scopes granted.
    pub admin: Vec<Scope>,
}

/// An admin scope: what a group of admin endpoints needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Scope {
    /// `read`: `/v1/status`, `/v1/routes`, `/v1/plugins`, `/v1/config`.
    #[serde(rename = "read")]
    Read,
    /// `reload`: `POST /v1/reload`.
    #[serde(rename = "reload")]
    Reload,
    /// `routes:write`: changing routes, outputs and plugins through the API.
    #[serde(rename = "routes:write")]
    RoutesWrite,
    /// `dead-letters`: browsing, replaying and purging dead letters.
    #[serde(rename = "dead-letters")]
    DeadLetters,
    /// `metrics`: `/metrics` (unless `[router] metrics_open = true`).
    #[serde(rename = "metrics")]
    Metrics,
}

impl Scope {
    /// Every scope, with its name in the file.
    pub const ALL: [(&'static str, Scope); 5] = [
        ("read", Scope::Read),
        ("reload", Scope::Reload),
        ("routes:write", Scope::RoutesWrite),
        ("dead-letters", Scope::DeadLetters),
        ("metrics", Scope::Metrics),
    ];

    /// Its name in the file.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, s)| *s == self)
            .map_or("read", |(n, _)| n)
    }
}

/// A topic pattern that may hold placeholders (`{principal}`,
/// `{claim.x}`), each filling one whole token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRule {
    text: String,
    tokens: Vec<RuleToken>,
}

/// One dot-separated token of a [`TopicRule`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleToken {
    /// A literal token, `*` or `>`.
    Text(String),
    /// `{principal}`.
    Principal,
    /// `{claim.NAME}`: the claim's value.
    Claim(String),
}

impl Serialize for TopicRule {
    fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        s.serialize_str(&self.text)
    }
}

impl TopicRule {
    /// Parses a rule.
    ///
    /// # Errors
    /// Why it is not a pattern with whole-token placeholders.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        for token in split_tokens(text) {
            let parsed = if let Some(inner) = token.strip_prefix('{') {
                let inner = inner.strip_suffix('}').ok_or_else(|| {
                    format!("{text:?}: token {token:?} opens `{{` without closing it")
                })?;
                match inner {
                    "principal" => RuleToken::Principal,
                    _ => match inner.strip_prefix("claim.") {
                        Some(claim) if !claim.is_empty() && !claim.contains(['{', '}']) => {
                            RuleToken::Claim(claim.to_owned())
                        }
                        _ => {
                            return Err(format!(
                                "{text:?}: unknown placeholder {{{inner}}}; write {{principal}} or {{claim.NAME}}"
                            ));
                        }
                    },
                }
            } else if token.contains(['{', '}']) {
                return Err(format!(
                    "{text:?}: a placeholder must fill a whole token (`a.{{principal}}.b`), not part of {token:?}"
                ));
            } else {
                RuleToken::Text(token.to_owned())
            };
            tokens.push(parsed);
        }
        // The shape must be a valid pattern with the placeholders filled.
        let sample: Vec<&str> = tokens
            .iter()
            .map(|t| match t {
                RuleToken::Text(s) => s.as_str(),
                RuleToken::Principal | RuleToken::Claim(_) => "x",
            })
            .collect();
        Pattern::parse(&sample.join(".")).map_err(|e| e.to_string())?;
        Ok(Self {
            text: text.to_owned(),
            tokens,
        })
    }

    /// The rule as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Its tokens.
    pub fn tokens(&self) -> &[RuleToken] {
        &self.tokens
    }
}

/// `text` split at its dots, except the dots inside a `{...}`
/// placeholder (`{claim.sub}`).
fn split_tokens(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut depth) = (0, 0u32);
    for (i, ch) in text.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            '.' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

/// Reads one `[[acl]]`.
pub(crate) fn build(
    raw: &RawAcl,
    span: std::ops::Range<usize>,
    subject: &Subject,
    c: &mut Checker<'_>,
) -> Option<AclRule> {
    let when: BTreeMap<String, String> = raw.when.as_ref().map_or_else(BTreeMap::new, |w| {
        w.get_ref()
            .iter()
            .map(|(k, v)| (k.clone(), v.get_ref().clone()))
            .collect()
    });
    let principals = match &raw.principals {
        Some(list) if list.get_ref().is_empty() => {
            c.invalid(subject, "principals", list.span(), "lists no principal");
            Vec::new()
        }
        Some(list) => list.get_ref().iter().map(|p| p.get_ref().clone()).collect(),
        None if !when.is_empty() => vec!["*".to_owned()],
        None => {
            c.invalid(
                subject,
                "principals",
                span,
                "is required (or `when`): say whom the rule is for, e.g. [\"*\"] or [\"ops\"]",
            );
            Vec::new()
        }
    };
    if let Some(list) = &raw.principals {
        for p in list.get_ref() {
            if p.get_ref().is_empty() {
                c.invalid(subject, "principals", p.span(), "holds an empty name");
            }
        }
    }
    let mut rules = |field: &str, value: &Option<S<Vec<S<String>>>>| -> Vec<TopicRule> {
        let Some(list) = value else {
            return Vec::new();
        };
        list.get_ref()
            .iter()
            .filter_map(|t| match TopicRule::parse(t.get_ref()) {
                Ok(rule) => Some(rule),
                Err(reason) => {
                    c.invalid(subject, field, t.span(), reason);
                    None
                }
            })
            .collect()
    };
    let publish = rules("publish", &raw.publish);
    let subscribe = rules("subscribe", &raw.subscribe);
    let deny_publish = rules("deny_publish", &raw.deny_publish);
    let deny_subscribe = rules("deny_subscribe", &raw.deny_subscribe);
    let admin = raw.admin.as_ref().map_or_else(Vec::new, |list| {
        list.get_ref()
            .iter()
            .filter_map(
                |s| match Scope::ALL.iter().find(|(n, _)| *n == s.get_ref().as_str()) {
                    Some((_, scope)) => Some(*scope),
                    None => {
                        let names: Vec<&str> = Scope::ALL.iter().map(|(n, _)| *n).collect();
                        c.invalid(
                            subject,
                            "admin",
                            s.span(),
                            format!(
                                "unknown scope {:?}; expected one of {}",
                                s.get_ref(),
                                names.join(", ")
                            ),
                        );
                        None
                    }
                },
            )
            .collect()
    });
    Some(AclRule {
        principals,
        when,
        publish,
        subscribe,
        deny_publish,
        deny_subscribe,
        admin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_fill_whole_tokens() {
        let r = TopicRule::parse("sensors.{principal}.>").expect("valid");
        assert_eq!(
            r.tokens(),
            [
                RuleToken::Text("sensors".into()),
                RuleToken::Principal,
                RuleToken::Text(">".into())
            ]
        );
        let r = TopicRule::parse("user.{claim.sub}.*").expect("valid");
        assert_eq!(r.tokens()[1], RuleToken::Claim("sub".into()));
        for bad in [
            "sensors.x{principal}",
            "sensors.{principal",
            "a.{who}",
            "a.{claim.}",
            "a..b",
            "a.>.b",
            "",
        ] {
            assert!(TopicRule::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
