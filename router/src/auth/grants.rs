//! What one caller may do: the `[[acl]]` rules that apply to it, with
//! their placeholders filled, as topic patterns and admin scopes.
//!
//! Built once per authenticated identity (and cached with it), so a
//! publish checks a topic against a few ready patterns. Deny patterns win
//! over every allow. A placeholder is filled only by a value that is one
//! whole topic token: a principal `dev1.x` gains nothing through
//! `sensors.{principal}.>`, and a deny rule whose placeholder cannot be
//! filled denies the whole token (`sensors.*.>`), so a bad value can never
//! widen what a caller may do.

use serde_json::Value;

use crate::config::{AclRule, RuleToken, Scope, TopicRule};
use crate::message::{Pattern, Segment};

/// Who is asking, as the rules see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Who<'a> {
    /// The principal, `None` for an anonymous caller.
    pub(crate) principal: Option<&'a str>,
    /// The verified token's claims, when there is one.
    pub(crate) claims: Option<&'a serde_json::Map<String, Value>>,
}

/// A caller's permissions.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Everything is allowed: the router is not secured.
    open: bool,
    publish: Vec<Pattern>,
    deny_publish: Vec<Pattern>,
    subscribe: Vec<Pattern>,
    deny_subscribe: Vec<Pattern>,
    scopes: u8,
}

impl Grants {
    /// Everything allowed (no `[[auth]]` or `[[acl]]` in the config).
    pub fn open() -> Self {
        Self {
            open: true,
            ..Self::default()
        }
    }

    /// The grants of `who` under `rules`.
    pub(crate) fn of(rules: &[AclRule], who: Who<'_>) -> Self {
        let mut g = Self::default();
        for rule in rules.iter().filter(|r| applies(r, who)) {
            let fill = |list: &[TopicRule], into: &mut Vec<Pattern>, deny: bool| {
                into.extend(list.iter().filter_map(|t| substitute(t, who, deny)));
            };
            fill(&rule.publish, &mut g.publish, false);
            fill(&rule.subscribe, &mut g.subscribe, false);
            fill(&rule.deny_publish, &mut g.deny_publish, true);
            fill(&rule.deny_subscribe, &mut g.deny_subscribe, true);
            for scope in &rule.admin {
                g.scopes |= bit(*scope);
            }
        }
        g
    }

    /// Whether a message may be published to `topic`.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.open
            || (!self.deny_publish.iter().any(|p| p.matches_str(topic))
                && self.publish.iter().any(|p| p.matches_str(topic)))
    }

    /// Whether a subscription to `pattern` may be taken: one allowed
    /// pattern covers all of it, and no denied pattern overlaps it. A
    /// subscription wider than the grant is refused, never narrowed.
    pub fn may_subscribe(&self, pattern: &Pattern) -> bool {
        self.open
            || (!self
                .deny_subscribe
                .iter()
                .any(|d| overlaps(d.segments(), pattern.segments()))
                && self
                    .subscribe
                    .iter()
                    .any(|a| covers(a.segments(), pattern.segments())))
    }

    /// Whether a message on `topic` may be delivered to a subscriber with
    /// these grants (for subscriptions that cannot be checked whole, like
    /// ZeroMQ's byte prefixes).
    pub fn may_receive(&self, topic: &str) -> bool {
        self.open
            || (!self.deny_subscribe.iter().any(|p| p.matches_str(topic))
                && self.subscribe.iter().any(|p| p.matches_str(topic)))
    }

    /// Whether the admin `scope` is granted.
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.open || self.scopes & bit(scope) != 0
    }

    /// Whether everything is allowed.
    pub fn is_open(&self) -> bool {
        self.open
    }
}

fn bit(scope: Scope) -> u8 {
    1 << Scope::ALL
        .iter()
        .position(|(_, s)| *s == scope)
        .unwrap_or(0)
}

fn applies(rule: &AclRule, who: Who<'_>) -> bool {
    let principal_matches = rule
        .principals
        .iter()
        .any(|p| match (p.as_str(), who.principal) {
            ("anonymous", None) => true,
            ("*", Some(_)) => true,
            (name, Some(principal)) => name == principal && name != "anonymous",
            _ => false,
        });
    principal_matches
        && rule.when.iter().all(|(claim, want)| {
            who.claims
                .and_then(|c| c.get(claim))
                .is_some_and(|v| claim_matches(v, want))
        })
}

fn claim_matches(value: &Value, want: &str) -> bool {
    match value {
        Value::Array(items) => items.iter().any(|v| claim_text(v).as_deref() == Some(want)),
        v => claim_text(v).as_deref() == Some(want),
    }
}

fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Whether `value` can stand as one topic token.
fn is_token(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && !value
            .chars()
            .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control())
}

/// `rule` with its placeholders filled for `who`. An allow rule whose
/// placeholder cannot be filled grants nothing (`None`); a deny rule's
/// becomes `*`.
fn substitute(rule: &TopicRule, who: Who<'_>, deny: bool) -> Option<Pattern> {
    let mut out: Vec<String> = Vec::with_capacity(rule.tokens().len());
    for token in rule.tokens() {
        let value = match token {
            RuleToken::Text(t) => Some(t.clone()),
            RuleToken::Principal => who.principal.map(str::to_owned),
            RuleToken::Claim(name) => who.claims.and_then(|c| c.get(name)).and_then(claim_text),
        };
        match value {
            Some(v) if matches!(token, RuleToken::Text(_)) || is_token(&v) => out.push(v),
            _ if deny => out.push("*".to_owned()),
            _ => return None,
        }
    }
    Pattern::parse(&out.join(".")).ok()
}

/// Whether every topic `inner` matches is matched by `outer`.
pub(crate) fn covers(outer: &[Segment], inner: &[Segment]) -> bool {
    for (i, o) in outer.iter().enumerate() {
        let Some(n) = inner.get(i) else {
            return false;
        };
        match (o, n) {
            (Segment::Tail, _) => return true,
            (_, Segment::Tail) => return false,
            (Segment::Star, _) => {}
            (Segment::Literal(a), Segment::Literal(b)) if a == b => {}
            _ => return false,
        }
    }
    outer.len() == inner.len()
}

/// Whether some topic is matched by both `a` and `b`.
pub(crate) fn overlaps(a: &[Segment], b: &[Segment]) -> bool {
    for (i, x) in a.iter().enumerate() {
        let Some(y) = b.get(i) else {
            return false;
        };
        match (x, y) {
            (Segment::Tail, _) | (_, Segment::Tail) => return true,
            (Segment::Star, _) | (_, Segment::Star) => {}
            (Segment::Literal(p), Segment::Literal(q)) if p == q => {}
            _ => return false,
        }
    }
    a.len() == b.len()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn rule(principals: &[&str], publish: &[&str], deny: &[&str]) -> AclRule {
        let parse = |l: &[&str]| {
            l.iter()
                .map(|t| TopicRule::parse(t).expect("valid rule"))
                .collect()
        };
        AclRule {
            principals: principals.iter().map(|s| (*s).to_owned()).collect(),
            when: BTreeMap::new(),
            publish: parse(publish),
            subscribe: parse(publish),
            deny_publish: parse(deny),
            deny_subscribe: parse(deny),
            admin: Vec::new(),
        }
    }

    fn who(principal: &str) -> Who<'_> {
        Who {
            principal: Some(principal),
            claims: None,
        }
    }

    #[test]
    fn placeholders_grant_own_topics_only() {
        let rules = [rule(&["*"], &["sensors.{principal}.>"], &[])];
        let g = Grants::of(&rules, who("dev1"));
        assert!(g.may_publish("sensors.dev1.temp"));
        assert!(!g.may_publish("sensors.dev2.temp"));
        assert!(!g.may_publish("sensors.dev1"));
        // A principal that is not one token gains nothing.
        let g = Grants::of(&rules, who("dev1.x"));
        assert!(!g.may_publish("sensors.dev1.x.temp"));
        let g = Grants::of(&rules, who("*"));
        assert!(!g.may_publish("sensors.a.b"));
    }

    #[test]
    fn deny_wins_and_fails_closed() {
        let rules = [
            rule(&["*"], &["sensors.>"], &[]),
            rule(
                &["ops"],
                &[],
                &["sensors.secret.>", "sensors.{claim.site}.>"],
            ),
        ];
        let g = Grants::of(&rules[..1], who("ops"));
        assert!(g.may_publish("sensors.a.b"));
        let g = Grants::of(&rules, who("ops"));
        assert!(!g.may_publish("sensors.secret.x"));
        // `{claim.site}` cannot be filled (no claims): the deny widens to `*`.
        assert!(!g.may_publish("sensors.b.c"));
        let g = Grants::of(&rules, who("dev"));
        assert!(g.may_publish("sensors.b.c"));
    }

    #[test]
    fn anonymous_and_star_are_distinct() {
        let rules = [rule(&["anonymous"], &["public.>"], &[])];
        let anon = Grants::of(
            &rules,
            Who {
                principal: None,
                claims: None,
            },
        );
        assert!(anon.may_publish("public.x"));
        assert!(!Grants::of(&rules, who("alice")).may_publish("public.x"));
        // A principal literally named "anonymous" is not the anonymous caller.
        assert!(!Grants::of(&rules, who("anonymous")).may_publish("public.x"));
        let rules = [rule(&["*"], &["a.>"], &[])];
        let anon = Grants::of(
            &rules,
            Who {
                principal: None,
                claims: None,
            },
        );
        assert!(!anon.may_publish("a.b"));
    }

    #[test]
    fn claims_match_and_fill() {
        let mut r = rule(&["*"], &["user.{claim.sub}.>"], &[]);
        r.when.insert("role".into(), "device".into());
        let claims: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"sub":"u7","role":["device","x"]}"#).expect("json");
        let g = Grants::of(
            std::slice::from_ref(&r),
            Who {
                principal: Some("u7"),
                claims: Some(&claims),
            },
        );
        assert!(g.may_publish("user.u7.inbox"));
        assert!(!g.may_publish("user.u8.inbox"));
        let claims: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"sub":"u7","role":"ops"}"#).expect("json");
        let g = Grants::of(
            &[r],
            Who {
                principal: Some("u7"),
                claims: Some(&claims),
            },
        );
        assert!(!g.may_publish("user.u7.inbox"));
    }

    #[test]
    fn subscriptions_are_refused_not_narrowed() {
        let rules = [rule(&["*"], &["sensors.>"], &["sensors.secret.>"])];
        let g = Grants::of(&rules, who("a"));
        let p = |s: &str| Pattern::parse(s).expect("pattern");
        assert!(g.may_subscribe(&p("sensors.line1.*")));
        assert!(!g.may_subscribe(&p(">")), "wider than the grant");
        assert!(!g.may_subscribe(&p("sensors.>")), "covers a denied topic");
        assert!(!g.may_subscribe(&p("sensors.*.x")), "overlaps the deny");
        assert!(g.may_subscribe(&p("sensors.public.x")));
        assert!(g.may_receive("sensors.public.x"));
        assert!(!g.may_receive("sensors.secret.x"));
    }

    #[test]
    fn pattern_relations() {
        let s = |t: &str| Pattern::parse(t).expect("pattern");
        let covers = |a: &str, b: &str| covers(s(a).segments(), s(b).segments());
        let overlaps = |a: &str, b: &str| overlaps(s(a).segments(), s(b).segments());
        assert!(covers(">", "a.b"));
        assert!(covers("a.*", "a.b"));
        assert!(covers("a.>", "a.*.c"));
        assert!(!covers("a.*", "a.>"));
        assert!(!covers("a.b", "a.*"));
        assert!(!covers("a.*", "a.b.c"));
        assert!(overlaps("a.*", "*.b"));
        assert!(overlaps("a.>", "*.b.c"));
        assert!(!overlaps("a.b", "a.c"));
        assert!(!overlaps("a.*", "a.b.c"));
    }

    #[test]
    fn scopes() {
        let mut r = rule(&["ops"], &[], &[]);
        r.admin = vec![Scope::Read, Scope::Reload];
        let g = Grants::of(&[r], who("ops"));
        assert!(g.has_scope(Scope::Read) && g.has_scope(Scope::Reload));
        assert!(!g.has_scope(Scope::DeadLetters) && !g.has_scope(Scope::Metrics));
        assert!(Grants::open().has_scope(Scope::RoutesWrite));
    }
}
