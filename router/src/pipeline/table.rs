//! The route table: which routes a message goes to.
//!
//! Patterns are indexed in a token trie, so the cost of matching a topic
//! grows with the number of its tokens and of the trie nodes that can match
//! it, not with the number of routes: 10,000 routes cost about what 10 do
//! (see `benches/route_match.rs`). Each trie edge is one literal token or
//! `*`; a route sits at the node where its pattern ends, in the `exact` list
//! (the topic must end there too) or the `tail` list (its pattern ends in
//! `>`, so at least one more topic token must follow).
//!
//! **Fan-out:** a message goes to *every* route it matches, not to the first
//! or the most specific one. A topic reaches each trie node at most once, so
//! each matching route is reported exactly once, in route order (the order
//! routes were inserted, which is config order).
//!
//! Attribute conditions are checked after the trie walk, only for the routes
//! whose pattern matched: every listed attribute must be present with exactly
//! the listed value.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use smallvec::SmallVec;

use crate::message::{Attributes, Message};
use crate::message::{Pattern, Segment};

/// The routes a message matched, as indices into the table in insertion
/// order, ascending. Reuse one across messages: it does not allocate for up
/// to eight matches.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Matches(SmallVec<[u32; 8]>);

impl Matches {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The matched route indices, ascending.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = usize> + '_ {
        self.0.iter().map(|&i| i as usize)
    }

    /// How many routes matched.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no route matched.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Empties the set, keeping its storage.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// A token trie over route patterns, plus each route's attribute conditions.
#[derive(Debug, Default)]
pub struct RouteTable {
    root: Node,
    /// Per route, in insertion order.
    conditions: Vec<Conditions>,
}

/// `(attribute, required value)` pairs; empty means no condition.
type Conditions = Box<[(Box<str>, Box<str>)]>;

#[derive(Debug, Default)]
struct Node {
    children: Children,
    star: Option<Box<Node>>,
    /// Routes whose pattern ends at this node.
    exact: Vec<u32>,
    /// Routes whose pattern is this node's path followed by `>`.
    tail: Vec<u32>,
}

/// Literal edges: a short vector scanned in order while small, a hash map
/// once a node fans out widely (the first tokens of thousands of routes).
#[derive(Debug)]
enum Children {
    Few(Vec<(Box<str>, Node)>),
    Many(HashMap<Box<str>, Node, BuildHasherDefault<TokenHasher>>),
}

impl Default for Children {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

/// Above this many literal children a node switches to a hash map.
const FEW_CHILDREN: usize = 8;

impl Children {
    fn get(&self, token: &str) -> Option<&Node> {
        match self {
            Self::Few(v) => v.iter().find(|(t, _)| &**t == token).map(|(_, n)| n),
            Self::Many(m) => m.get(token),
        }
    }

    fn entry(&mut self, token: &str) -> &mut Node {
        if let Self::Few(v) = self
            && v.len() >= FEW_CHILDREN
            && !v.iter().any(|(t, _)| &**t == token)
        {
            let map = std::mem::take(v).into_iter().collect();
            *self = Self::Many(map);
        }
        match self {
            Self::Few(v) => {
                let at = match v.iter().position(|(t, _)| &**t == token) {
                    Some(at) => at,
                    None => {
                        v.push((token.into(), Node::default()));
                        v.len() - 1
                    }
                };
                &mut v[at].1
            }
            Self::Many(m) => m.entry(token.into()).or_default(),
        }
    }
}

/// A small multiplicative hasher for topic tokens. Tokens come from peers but
/// the map's keys come from the config, so a peer cannot grow a bucket; a
/// keyed SipHash would only cost time here.
#[derive(Default, Clone, Copy)]
struct TokenHasher(u64);

impl TokenHasher {
    const K: u64 = 0x517c_c1b7_2722_0a95;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for TokenHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route and returns its index (0, 1, 2, ... in insertion order).
    /// `conditions` maps attribute names to the exact value each must have;
    /// an empty map means the pattern alone decides.
    pub fn insert(&mut self, pattern: &Pattern, conditions: &BTreeMap<String, String>) -> usize {
        let index = self.conditions.len();
        let id = u32::try_from(index).expect("fewer than 2^32 routes");
        let mut node = &mut self.root;
        for segment in pattern.segments() {
            match segment {
                Segment::Literal(token) => node = node.children.entry(token),
                Segment::Star => node = node.star.get_or_insert_with(Box::default),
                Segment::Tail => {
                    node.tail.push(id);
                    break;
                }
            }
        }
        if !matches!(pattern.segments().last(), Some(Segment::Tail)) {
            node.exact.push(id);
        }
        self.conditions.push(
            conditions
                .iter()
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect(),
        );
        index
    }

    /// How many routes the table holds.
    pub fn len(&self) -> usize {
        self.conditions.len()
    }

    /// True when the table holds no route.
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// Fills `out` with every route `message` matches: its topic matches the
    /// route's pattern and its attributes meet the route's conditions.
    pub fn matches(&self, message: &Message, out: &mut Matches) {
        self.matches_topic(message.topic.as_str(), out);
        self.retain_conditions(&message.attributes, out);
    }

    /// Fills `out` with every route whose pattern matches the dot-separated
    /// `topic`, ignoring attribute conditions.
    pub fn matches_topic(&self, topic: &str, out: &mut Matches) {
        out.clear();
        // A plain byte scan: tokens are short, so this beats `split`'s
        // memchr set-up. Splitting on an ASCII byte keeps UTF-8 boundaries.
        let mut tokens: SmallVec<[&str; 16]> = SmallVec::new();
        let mut start = 0;
        for (i, &b) in topic.as_bytes().iter().enumerate() {
            if b == b'.' {
                tokens.push(&topic[start..i]);
                start = i + 1;
            }
        }
        tokens.push(&topic[start..]);
        let depth = tokens.len();
        // Each node is reached at most once (its path is unique), so no
        // route is reported twice.
        let mut stack: SmallVec<[(&Node, usize); 16]> = SmallVec::new();
        stack.push((&self.root, 0));
        while let Some((node, at)) = stack.pop() {
            if at == depth {
                out.0.extend_from_slice(&node.exact);
                continue;
            }
            out.0.extend_from_slice(&node.tail);
            if let Some(child) = node.children.get(tokens[at]) {
                stack.push((child, at + 1));
            }
            if let Some(star) = &node.star {
                stack.push((star, at + 1));
            }
        }
        if out.0.len() > 1 {
            out.0.sort_unstable();
        }
    }

    fn retain_conditions(&self, attributes: &Attributes, out: &mut Matches) {
        out.0.retain(|&mut id| {
            self.conditions[id as usize]
                .iter()
                .all(|(key, want)| attributes.get(&**key).is_some_and(|v| v == &**want))
        });
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::message::{Publisher, Topic};

    fn table(patterns: &[&str]) -> RouteTable {
        let mut t = RouteTable::new();
        for p in patterns {
            t.insert(&Pattern::parse(p).expect("valid"), &BTreeMap::new());
        }
        t
    }

    fn matched(t: &RouteTable, topic: &str) -> Vec<usize> {
        let mut m = Matches::new();
        t.matches_topic(topic, &mut m);
        m.iter().collect()
    }

    fn message(topic: &str, attrs: &[(&str, &str)]) -> Message {
        let mut m = Message::new(
            Topic::try_from(topic).expect("valid topic"),
            Bytes::new(),
            Publisher::new("test", ""),
        );
        for (k, v) in attrs {
            m.attributes.insert((*k).into(), (*v).into());
        }
        m
    }

    #[test]
    fn one_topic_matches_every_route_it_fits() {
        let t = table(&[
            "sensors.>",
            "sensors.*.temp",
            "sensors.l1.temp",
            "other.>",
            ">",
        ]);
        assert_eq!(matched(&t, "sensors.l1.temp"), vec![0, 1, 2, 4]);
        assert_eq!(matched(&t, "sensors.l2.temp"), vec![0, 1, 4]);
        assert_eq!(matched(&t, "sensors"), vec![4]);
        assert_eq!(matched(&t, "sensors.l1"), vec![0, 4]);
        assert_eq!(matched(&t, "x.y"), vec![4]);
    }

    #[test]
    fn identical_patterns_are_separate_routes() {
        let t = table(&["a.b", "a.b", "a.*"]);
        assert_eq!(matched(&t, "a.b"), vec![0, 1, 2]);
        assert!(matched(&t, "a.b.c").is_empty());
    }

    #[test]
    fn wide_nodes_switch_to_a_map() {
        let names: Vec<String> = (0..100).map(|i| format!("site{i}.>")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let t = table(&refs);
        assert!(matches!(t.root.children, Children::Many(_)));
        for i in 0..100 {
            assert_eq!(matched(&t, &format!("site{i}.x")), vec![i]);
        }
        assert!(matched(&t, "site100.x").is_empty());
    }

    #[test]
    fn attribute_conditions_must_all_hold() {
        let mut t = RouteTable::new();
        let any = Pattern::parse("a.>").expect("valid");
        t.insert(&any, &BTreeMap::new());
        let cond: BTreeMap<String, String> = [("site", "42"), ("level", "info")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        t.insert(&any, &cond);
        let mut m = Matches::new();
        t.matches(
            &message("a.x", &[("site", "42"), ("level", "info")]),
            &mut m,
        );
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![0, 1]);
        t.matches(&message("a.x", &[("site", "42")]), &mut m);
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![0]);
        t.matches(
            &message("a.x", &[("site", "43"), ("level", "info")]),
            &mut m,
        );
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![0]);
        t.matches(
            &message("b.x", &[("site", "42"), ("level", "info")]),
            &mut m,
        );
        assert!(m.is_empty());
    }

    fn pattern_strategy() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            4 => prop::sample::select(vec!["a", "b", "c"]).prop_map(str::to_owned),
            2 => Just("*".to_owned()),
        ];
        (prop::collection::vec(token, 1..5), any::<bool>()).prop_map(|(mut tokens, tail)| {
            if tail {
                tokens.push(">".to_owned());
            }
            tokens.join(".")
        })
    }

    fn topic_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "d"]), 1..7)
            .prop_map(|t| t.join("."))
    }

    proptest! {
        #[test]
        fn trie_agrees_with_naive_matching(
            patterns in prop::collection::vec(pattern_strategy(), 0..40),
            topics in prop::collection::vec(topic_strategy(), 1..20),
        ) {
            let parsed: Vec<Pattern> =
                patterns.iter().map(|p| Pattern::parse(p).expect("generated valid")).collect();
            let mut t = RouteTable::new();
            for p in &parsed {
                t.insert(p, &BTreeMap::new());
            }
            let mut m = Matches::new();
            for topic in &topics {
                t.matches_topic(topic, &mut m);
                let want: Vec<usize> = parsed
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.matches_str(topic))
                    .map(|(i, _)| i)
                    .collect();
                prop_assert_eq!(m.iter().collect::<Vec<_>>(), want, "topic {}", topic);
            }
        }
    }
}
