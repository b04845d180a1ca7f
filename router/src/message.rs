//! The shared vocabulary: the message model every input produces, the
//! pipeline routes and every output consumes ([`Message`], [`Topic`],
//! [`Attributes`], [`Publisher`], [`MessageId`]), the topic patterns that
//! routes and permissions are written in ([`Pattern`]), and [`request`], the
//! waiting side of a message whose sender expects an answer.
//!
//! It sits below every other module but the wire layers: ingress, pipeline,
//! plugin and egress all import it, and it imports none of them.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use smallvec::SmallVec;

mod error_body;
mod pattern;
pub mod receipt;
pub mod request;

pub use error_body::{ErrorBody, Ids};
pub use pattern::{Pattern, PatternError, Segment, subscription_prefixes};

/// The frames of one ZeroMQ message (or of a request's reply).
pub type Frames = SmallVec<[Bytes; 3]>;

/// Message attributes: a small string map, sorted by key.
///
/// Shared copy-on-write: cloning a message (once per matching route) only
/// bumps a reference count, and an empty map does not allocate at all. Reads
/// go through [`Deref`] to the map (`get`, `iter`, `len`, `is_empty`, ...);
/// writes (`insert`, `remove`, [`Attributes::make_mut`]) copy the map first
/// if another message still shares it.
#[derive(Clone, Default)]
pub struct Attributes(Option<Arc<BTreeMap<String, String>>>);

/// The map every attribute-less message derefs to.
static EMPTY_ATTRIBUTES: BTreeMap<String, String> = BTreeMap::new();

impl Attributes {
    /// An empty map; does not allocate.
    pub const fn new() -> Self {
        Self(None)
    }

    /// The map for writing, copied first if it is shared.
    pub fn make_mut(&mut self) -> &mut BTreeMap<String, String> {
        Arc::make_mut(self.0.get_or_insert_with(Default::default))
    }

    /// Sets `key` to `value`, returning the previous value.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        self.make_mut().insert(key, value)
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        if self.0.as_ref().is_some_and(|m| m.contains_key(key)) {
            self.make_mut().remove(key)
        } else {
            None
        }
    }
}

impl Deref for Attributes {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        self.0.as_deref().unwrap_or(&EMPTY_ATTRIBUTES)
    }
}

impl PartialEq for Attributes {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Attributes {}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl From<BTreeMap<String, String>> for Attributes {
    fn from(map: BTreeMap<String, String>) -> Self {
        if map.is_empty() {
            Self(None)
        } else {
            Self(Some(Arc::new(map)))
        }
    }
}

impl FromIterator<(String, String)> for Attributes {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        BTreeMap::from_iter(iter).into()
    }
}

impl Extend<(String, String)> for Attributes {
    fn extend<I: IntoIterator<Item = (String, String)>>(&mut self, iter: I) {
        self.make_mut().extend(iter);
    }
}

impl<'a> IntoIterator for &'a Attributes {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl serde::Serialize for Attributes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Attributes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::<String, String>::deserialize(deserializer).map(Self::from)
    }
}

/// One message as it moves through the router.
///
/// Cloning is cheap: the topic and payload are reference-counted [`Bytes`],
/// so fan-out to several routes never copies the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Unique within this router process and sortable by arrival.
    pub id: MessageId,
    /// The dot-separated topic, validated UTF-8.
    pub topic: Topic,
    /// Opaque payload bytes.
    pub payload: Bytes,
    /// String attributes (from HTTP headers, JSON bodies or a ZeroMQ
    /// attributes frame).
    pub attributes: Attributes,
    /// When the router accepted the message.
    pub publish_time: SystemTime,
    /// Which input accepted it, and from which peer.
    pub publisher: Publisher,
    /// 0 (lowest) to 9 (highest); 4 unless the publisher says otherwise.
    pub priority: u8,
    /// Set when the sender waits for a reply (see [`request`]).
    pub request: Option<request::Request>,
    /// Set by an input that acknowledges to its peer (see [`receipt`]).
    pub receipt: Option<receipt::Receipt>,
}

impl Message {
    /// The priority given to messages whose publisher names none.
    pub const DEFAULT_PRIORITY: u8 = 4;
    /// The highest priority a publisher may ask for.
    pub const MAX_PRIORITY: u8 = 9;

    /// A message accepted now from `publisher`, with a fresh id, no
    /// attributes and the default priority.
    pub fn new(topic: Topic, payload: Bytes, publisher: Publisher) -> Self {
        Self {
            id: MessageId::next(),
            topic,
            payload,
            attributes: Attributes::new(),
            publish_time: SystemTime::now(),
            publisher,
            priority: Self::DEFAULT_PRIORITY,
            request: None,
            receipt: None,
        }
    }

    /// Bytes this message holds that count against byte-bounded queues:
    /// topic, payload and attributes.
    pub fn size(&self) -> usize {
        self.topic.len()
            + self.payload.len()
            + self
                .attributes
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// A message id: the router's start time in the high 64 bits and a
/// per-process sequence number in the low 64, so ids are unique across
/// restarts and sort by arrival. Rendered as 32 lowercase hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub u128);

static NEXT_SEQUENCE: AtomicU64 = AtomicU64::new(0);

fn boot_nanos() -> u64 {
    static BOOT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BOOT.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    })
}

impl MessageId {
    /// The next id of this process.
    pub fn next() -> Self {
        let seq = NEXT_SEQUENCE.fetch_add(1, Ordering::Relaxed);
        Self((u128::from(boot_nanos()) << 64) | u128::from(seq))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Where a message came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publisher {
    /// The name of the input that accepted it.
    pub input: Arc<str>,
    /// The remote peer, e.g. `127.0.0.1:50312`; empty when unknown.
    pub peer: Arc<str>,
    /// The identity the peer authenticated as (ZMTP PLAIN's user name, or
    /// the name a CURVE client's key is listed under in `clients_file`);
    /// `None` for an anonymous peer. What authorization checks.
    pub principal: Option<Arc<str>>,
}

impl Publisher {
    /// An anonymous publisher: `peer` on `input`.
    pub fn new(input: impl Into<Arc<str>>, peer: impl Into<Arc<str>>) -> Self {
        Self {
            input: input.into(),
            peer: peer.into(),
            principal: None,
        }
    }

    /// The same publisher, authenticated as `principal`.
    pub fn with_principal(mut self, principal: Option<Arc<str>>) -> Self {
        self.principal = principal;
        self
    }
}

/// A validated topic: non-empty UTF-8 of at most [`Topic::MAX_LEN`] bytes,
/// made of dot-separated tokens that are neither empty nor contain a space
/// or the wildcard characters `*` and `>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Bytes);

/// Why bytes are not a valid topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The topic is empty.
    #[error("topic is empty")]
    Empty,
    /// The topic is longer than [`Topic::MAX_LEN`] bytes.
    #[error("topic is {0} bytes, over the {max} byte limit", max = Topic::MAX_LEN)]
    TooLong(usize),
    /// The topic is not valid UTF-8.
    #[error("topic is not valid UTF-8")]
    NotUtf8,
    /// A token between dots is empty (`a..b`, `.a`, `a.`).
    #[error("topic has an empty token")]
    EmptyToken,
    /// The topic holds whitespace or a wildcard character.
    #[error("topic holds the character {0:?}, which topics may not contain")]
    BadChar(char),
}

impl Topic {
    /// The longest topic accepted, in bytes.
    pub const MAX_LEN: usize = 1024;

    /// Validates `bytes` as a topic without copying them.
    ///
    /// # Errors
    /// A [`TopicError`] naming the first rule the bytes break.
    pub fn new(bytes: Bytes) -> Result<Self, TopicError> {
        if bytes.is_empty() {
            return Err(TopicError::Empty);
        }
        if bytes.len() > Self::MAX_LEN {
            return Err(TopicError::TooLong(bytes.len()));
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| TopicError::NotUtf8)?;
        for token in text.split('.') {
            if token.is_empty() {
                return Err(TopicError::EmptyToken);
            }
            if let Some(c) = token
                .chars()
                .find(|c| c.is_whitespace() || *c == '*' || *c == '>' || c.is_control())
            {
                return Err(TopicError::BadChar(c));
            }
        }
        Ok(Self(bytes))
    }

    /// The topic as text.
    pub fn as_str(&self) -> &str {
        // The constructor checked UTF-8 and the bytes are immutable.
        std::str::from_utf8(&self.0).expect("Topic::new validated UTF-8")
    }

    /// The topic's bytes, shared.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: topics are never empty. Present for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The dot-separated tokens.
    pub fn tokens(&self) -> std::str::Split<'_, char> {
        self.as_str().split('.')
    }
}

impl TryFrom<&str> for Topic {
    type Error = TopicError;
    fn try_from(s: &str) -> Result<Self, TopicError> {
        Self::new(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_validated() {
        assert!(Topic::try_from("sensors.line1.temp").is_ok());
        assert_eq!(Topic::try_from(""), Err(TopicError::Empty));
        assert_eq!(Topic::try_from("a..b"), Err(TopicError::EmptyToken));
        assert_eq!(Topic::try_from("a.*"), Err(TopicError::BadChar('*')));
        assert_eq!(Topic::try_from("a b"), Err(TopicError::BadChar(' ')));
        assert_eq!(
            Topic::new(Bytes::from_static(b"\xff")),
            Err(TopicError::NotUtf8)
        );
    }

    #[test]
    fn attributes_share_until_written() {
        let mut a = Attributes::new();
        assert!(a.is_empty());
        a.insert("site".into(), "42".into());
        let b = a.clone();
        assert_eq!(a, b);
        a.insert("line".into(), "1".into());
        assert_eq!(b.len(), 1, "a write copies a shared map");
        assert_eq!(a.get("line").map(String::as_str), Some("1"));
        assert_eq!(a.remove("line").as_deref(), Some("1"));
        assert_eq!(a, b);
        let json = serde_json::to_string(&a).expect("serialize");
        assert_eq!(json, r#"{"site":"42"}"#);
        let back: Attributes = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, a);
        let mut emptied = b.clone();
        emptied.remove("site");
        assert_eq!(emptied, Attributes::new());
    }

    #[test]
    fn ids_increase() {
        let a = MessageId::next();
        let b = MessageId::next();
        assert!(b > a);
        assert_eq!(a.to_string().len(), 32);
    }
}
