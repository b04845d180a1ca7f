//! NATS-style topic patterns: dot-separated tokens where `*` matches exactly
//! one token and a final `>` matches one or more trailing tokens.
//!
//! | pattern          | matches                          | does not match            |
//! |------------------|----------------------------------|---------------------------|
//! | `sensors.>`      | `sensors.a`, `sensors.a.temp`    | `sensors`                 |
//! | `sensors.*.temp` | `sensors.line1.temp`             | `sensors.temp`, `sensors.a.b.temp` |
//! | `a.b`            | `a.b`                            | `a.b.c`, `a.bc`           |
//!
//! Patterns are sans-IO values: parsing and matching take strings and return
//! values. The route table ([`crate::pipeline::RouteTable`]) indexes many patterns in a
//! trie; [`Pattern::matches`] is the plain one-pattern matcher it is tested
//! against.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::Topic;

/// One token of a [`Pattern`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A token that must equal the topic's token exactly.
    Literal(Box<str>),
    /// `*`: any one token.
    Star,
    /// `>`: one or more tokens; only ever the last segment.
    Tail,
}

/// A parsed topic pattern. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: Arc<str>,
    segments: Arc<[Segment]>,
}

/// Why a string is not a valid pattern. Token positions count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is empty.
    #[error("pattern is empty")]
    Empty,
    /// The pattern is longer than a topic may be.
    #[error("pattern is {0} bytes, over the {max} byte limit", max = Topic::MAX_LEN)]
    TooLong(usize),
    /// A token between dots is empty (`a..b`, `.a`, `a.`).
    #[error("pattern {pattern:?} has an empty token at position {position}")]
    EmptyToken {
        /// The whole pattern.
        pattern: String,
        /// Which token, from 1.
        position: usize,
    },
    /// A wildcard shares its token with other characters (`a*`, `>b`).
    #[error(
        "pattern {pattern:?}: token {token:?} mixes a wildcard with other characters; `*` and `>` must stand alone"
    )]
    PartialWildcard {
        /// The whole pattern.
        pattern: String,
        /// The offending token.
        token: String,
    },
    /// `>` appears before the last token (`a.>.b`).
    #[error("pattern {pattern:?}: `>` may only be the last token, found at position {position}")]
    TailNotLast {
        /// The whole pattern.
        pattern: String,
        /// Which token, from 1.
        position: usize,
    },
    /// The pattern holds whitespace or a control character.
    #[error("pattern {pattern:?} holds the character {found:?}, which topics may not contain")]
    BadChar {
        /// The whole pattern.
        pattern: String,
        /// The offending character.
        found: char,
    },
}

impl Pattern {
    /// Parses `text`.
    ///
    /// # Errors
    /// A [`PatternError`] naming the first rule the text breaks.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text.len() > Topic::MAX_LEN {
            return Err(PatternError::TooLong(text.len()));
        }
        let count = text.split('.').count();
        let mut segments = Vec::with_capacity(count);
        for (i, token) in text.split('.').enumerate() {
            let position = i + 1;
            if token.is_empty() {
                return Err(PatternError::EmptyToken {
                    pattern: text.to_owned(),
                    position,
                });
            }
            if let Some(found) = token.chars().find(|c| c.is_whitespace() || c.is_control()) {
                return Err(PatternError::BadChar {
                    pattern: text.to_owned(),
                    found,
                });
            }
            let segment = match token {
                "*" => Segment::Star,
                ">" if position == count => Segment::Tail,
                ">" => {
                    return Err(PatternError::TailNotLast {
                        pattern: text.to_owned(),
                        position,
                    });
                }
                _ if token.contains(['*', '>']) => {
                    return Err(PatternError::PartialWildcard {
                        pattern: text.to_owned(),
                        token: token.to_owned(),
                    });
                }
                _ => Segment::Literal(token.into()),
            };
            segments.push(segment);
        }
        Ok(Self {
            text: text.into(),
            segments: segments.into(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed tokens, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// True when the pattern has no wildcard, so it matches one topic only.
    pub fn is_literal(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Literal(_)))
    }

    /// The longest prefix every matching topic starts with: the literal
    /// tokens before the first wildcard, with their trailing dot.
    ///
    /// This is what a ZeroMQ SUB socket subscribes to upstream, so traffic no
    /// route wants never crosses the wire: `sensors.>` and `sensors.*.temp`
    /// give `sensors.`, a literal `a.b` gives `a.b`, and `*` or `>` give the
    /// empty prefix (everything). The prefix is a superset filter (`a.b` also
    /// lets `a.bc` through); the route table does the exact match.
    pub fn literal_prefix(&self) -> &str {
        let mut end = 0;
        for segment in self.segments.iter() {
            match segment {
                // Token plus its dot; the last literal token has no dot
                // after it, which the `min` below accounts for.
                Segment::Literal(token) => end += token.len() + 1,
                Segment::Star | Segment::Tail => break,
            }
        }
        &self.text[..end.min(self.text.len())]
    }

    /// Whether `topic` matches this pattern. This is the plain reference
    /// matcher; routing uses the trie in [`crate::pipeline::RouteTable`].
    pub fn matches(&self, topic: &Topic) -> bool {
        self.matches_str(topic.as_str())
    }

    /// Whether the dot-separated `topic` text matches this pattern.
    pub fn matches_str(&self, topic: &str) -> bool {
        let mut tokens = topic.split('.');
        for segment in self.segments.iter() {
            match segment {
                Segment::Tail => return tokens.next().is_some(),
                Segment::Star => {
                    if tokens.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(lit) => {
                    if tokens.next() != Some(&**lit) {
                        return false;
                    }
                }
            }
        }
        tokens.next().is_none()
    }
}

/// The smallest set of subscription prefixes that covers `patterns`: the
/// [`Pattern::literal_prefix`] of each, sorted, without duplicates and
/// without any prefix that a shorter one already covers (an empty prefix,
/// from `*` or `>`, covers everything and is returned alone).
pub fn subscription_prefixes<'a>(patterns: impl IntoIterator<Item = &'a Pattern>) -> Vec<String> {
    let mut prefixes: Vec<&str> = patterns.into_iter().map(Pattern::literal_prefix).collect();
    // Sorted order puts a prefix right before everything it covers.
    prefixes.sort_unstable();
    prefixes.dedup();
    let mut out: Vec<String> = Vec::with_capacity(prefixes.len());
    for p in prefixes {
        if out.last().is_some_and(|kept| p.starts_with(kept.as_str())) {
            continue;
        }
        out.push(p.to_owned());
    }
    out
}

impl FromStr for Pattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, PatternError> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for Pattern {
    type Error = PatternError;
    fn try_from(s: &str) -> Result<Self, PatternError> {
        Self::parse(s)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).expect("valid pattern")
    }

    #[test]
    fn parses_wildcards() {
        assert_eq!(
            p("a.*.>").segments(),
            &[Segment::Literal("a".into()), Segment::Star, Segment::Tail]
        );
        assert!(p("a.b").is_literal());
        assert!(!p("a.*").is_literal());
    }

    #[test]
    fn parse_errors_are_typed() {
        assert_eq!(Pattern::parse(""), Err(PatternError::Empty));
        assert!(matches!(
            Pattern::parse("a..b"),
            Err(PatternError::EmptyToken { position: 2, .. })
        ));
        assert!(matches!(
            Pattern::parse("a."),
            Err(PatternError::EmptyToken { position: 2, .. })
        ));
        assert!(matches!(
            Pattern::parse("a.>.b"),
            Err(PatternError::TailNotLast { position: 2, .. })
        ));
        assert!(matches!(
            Pattern::parse("a.b*"),
            Err(PatternError::PartialWildcard { token, .. }) if token == "b*"
        ));
        assert!(matches!(
            Pattern::parse("a.>x"),
            Err(PatternError::PartialWildcard { .. })
        ));
        assert!(matches!(
            Pattern::parse("a b"),
            Err(PatternError::BadChar { found: ' ', .. })
        ));
        assert_eq!(
            Pattern::parse(&"a".repeat(Topic::MAX_LEN + 1)),
            Err(PatternError::TooLong(Topic::MAX_LEN + 1))
        );
        let msg = Pattern::parse("a.>.b").expect_err("invalid").to_string();
        assert!(msg.contains("a.>.b") && msg.contains("position 2"), "{msg}");
    }

    #[test]
    fn matching() {
        let cases = [
            ("sensors.>", "sensors.a", true),
            ("sensors.>", "sensors.a.b.c", true),
            ("sensors.>", "sensors", false),
            ("sensors.>", "other.a", false),
            ("sensors.*.temp", "sensors.l1.temp", true),
            ("sensors.*.temp", "sensors.temp", false),
            ("sensors.*.temp", "sensors.l1.x.temp", false),
            ("a.b", "a.b", true),
            ("a.b", "a.b.c", false),
            ("a.b", "a.bc", false),
            ("*", "x", true),
            ("*", "x.y", false),
            (">", "x", true),
            (">", "x.y.z", true),
            ("*.>", "x", false),
            ("*.>", "x.y", true),
        ];
        for (pat, topic, want) in cases {
            assert_eq!(p(pat).matches_str(topic), want, "{pat} vs {topic}");
        }
    }

    #[test]
    fn literal_prefixes() {
        assert_eq!(p("sensors.>").literal_prefix(), "sensors.");
        assert_eq!(p("sensors.*.temp").literal_prefix(), "sensors.");
        assert_eq!(p("a.b").literal_prefix(), "a.b");
        assert_eq!(p("a.b.*").literal_prefix(), "a.b.");
        assert_eq!(p("*").literal_prefix(), "");
        assert_eq!(p(">").literal_prefix(), "");
        assert_eq!(p("*.a").literal_prefix(), "");
    }

    #[test]
    fn prefixes_are_minimal() {
        let pats = [
            p("a.b"),
            p("a.b.>"),
            p("a.bc"),
            p("x.*.y"),
            p("x.>"),
            p("a.b"),
        ];
        assert_eq!(subscription_prefixes(&pats), vec!["a.b", "x."]);
        let all = [p("a.b"), p("*.c")];
        assert_eq!(subscription_prefixes(&all), vec![""]);
        assert!(subscription_prefixes(&[]).is_empty());
    }
}
