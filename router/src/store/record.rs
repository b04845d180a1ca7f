//! One record of a durable queue's log: a [`Message`] and its sequence
//! number, framed so that a reader can tell a whole, intact record from a
//! torn or damaged one, and find the next record after damage. Sans-IO:
//! bytes in, values out.
//!
//! ```text
//! magic  4  b"SYR1"
//! len    4  u32 LE: bytes of the body
//! crc    4  u32 LE: CRC-32C of `len` and the body
//! body      seq u64, time u64 (ns since the epoch), id u128, priority u8,
//!           flags u8 (bit 0: a principal follows), topic, input, peer,
//!           [principal] (each u16 length + UTF-8), attribute count u32,
//!           each key and value (u32 length + UTF-8), payload (the rest)
//! ```
//!
//! The CRC covers the length, so a flipped bit there is caught like one in
//! the body; the magic is what a reader scans for to resynchronise.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::message::{Attributes, Message, MessageId, Publisher, Topic};

/// The first four bytes of every record.
pub(crate) const MAGIC: [u8; 4] = *b"SYR1";
/// Bytes before the body: magic, length, CRC.
pub(crate) const HEADER: usize = 12;
/// The largest body a record may have (a message is far smaller: the
/// router's own limits stop at 16 MiB); a length above it is damage.
pub(crate) const MAX_BODY: usize = 64 << 20;

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its sequence number in the log.
    pub seq: u64,
    /// The message, without a request (a reply path does not outlive the
    /// process).
    pub message: Message,
}

/// What the bytes at the start of a buffer are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A whole, intact record of `len` bytes (header included).
    Record(Box<Record>, usize),
    /// The start of what may be a record: `need` bytes are required in all
    /// to tell.
    Incomplete {
        /// Bytes needed, from the start of the buffer.
        need: usize,
    },
    /// Not a record here: wrong magic, an impossible length, a CRC
    /// mismatch or a body that does not parse.
    Invalid,
}

/// Appends `message` as record `seq` to `out`; returns the record's length.
pub fn encode(seq: u64, message: &Message, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&nanos(message.publish_time).to_le_bytes());
    out.extend_from_slice(&message.id.0.to_le_bytes());
    out.push(message.priority);
    let principal = message.publisher.principal.as_deref();
    out.push(u8::from(principal.is_some()));
    short(out, message.topic.as_str());
    short(out, &message.publisher.input);
    short(out, &message.publisher.peer);
    if let Some(p) = principal {
        short(out, p);
    }
    out.extend_from_slice(&(message.attributes.len() as u32).to_le_bytes());
    for (k, v) in message.attributes.iter() {
        long(out, k);
        long(out, v);
    }
    out.extend_from_slice(&message.payload);
    let body = out.len() - start - HEADER;
    let len = (body as u32).to_le_bytes();
    out[start + 4..start + 8].copy_from_slice(&len);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), &out[start + HEADER..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

/// The length a record of `message` takes, without encoding it.
pub fn encoded_len(message: &Message) -> usize {
    let principal = message
        .publisher
        .principal
        .as_deref()
        .map_or(0, |p| 2 + p.len());
    HEADER
        + 8
        + 8
        + 16
        + 2
        + 2
        + message.topic.len()
        + 2
        + message.publisher.input.len()
        + 2
        + message.publisher.peer.len()
        + principal
        + 4
        + message
            .attributes
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum::<usize>()
        + message.payload.len()
}

/// A whole, intact record found in a buffer: its header fields, not yet
/// parsed into a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Its sequence number.
    pub seq: u64,
    /// Its message's publish time, ns since the epoch.
    pub time: u64,
    /// Its length, header included.
    pub len: usize,
}

/// What the bytes at the start of a buffer are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framed {
    /// A whole record with a good CRC.
    Frame(Frame),
    /// What may be the start of a record: `need` bytes in all are required
    /// to tell.
    Incomplete {
        /// Bytes needed, from the start of the buffer.
        need: usize,
    },
    /// Not a record: wrong magic, an impossible length or a CRC mismatch.
    Invalid,
}

/// Checks the record at the start of `buf` without parsing its message.
pub(crate) fn frame(buf: &[u8]) -> Framed {
    if buf.len() < HEADER {
        let n = buf.len().min(MAGIC.len());
        if buf[..n] != MAGIC[..n] {
            return Framed::Invalid;
        }
        return Framed::Incomplete { need: HEADER };
    }
    if buf[..4] != MAGIC {
        return Framed::Invalid;
    }
    let len = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    if !(16..=MAX_BODY).contains(&len) {
        return Framed::Invalid;
    }
    let total = HEADER + len;
    if buf.len() < total {
        return Framed::Incomplete { need: total };
    }
    let crc = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]);
    let body = &buf[HEADER..total];
    if crc32c::crc32c_append(crc32c::crc32c(&buf[4..8]), body) != crc {
        return Framed::Invalid;
    }
    let word = |at: usize| {
        let mut w = [0; 8];
        w.copy_from_slice(&body[at..at + 8]);
        u64::from_le_bytes(w)
    };
    Framed::Frame(Frame {
        seq: word(0),
        time: word(8),
        len: total,
    })
}

/// Reads the record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded {
    match frame(buf) {
        Framed::Frame(f) => match parse(&buf[HEADER..f.len], None, &mut Names::default()) {
            Some(record) => Decoded::Record(Box::new(record), f.len),
            None => Decoded::Invalid,
        },
        Framed::Incomplete { need } => Decoded::Incomplete { need },
        Framed::Invalid => Decoded::Invalid,
    }
}

/// Parses the message of a record whose frame checked out (`record` is
/// it, whole); `None` if its body does not parse, which a good CRC makes a
/// bug or a foreign writer. The topic and payload point into `record` (no
/// copy); `names` shares the publisher names records repeat.
pub(crate) fn parse_shared(record: &Bytes, frame: &Frame, names: &mut Names) -> Option<Record> {
    parse(record.get(HEADER..frame.len)?, Some(record), names)
}

/// The publisher names (input, peer, principal) of the records parsed
/// lately, so a run of records from one publisher shares one allocation
/// of each.
#[derive(Debug, Default)]
pub(crate) struct Names(Vec<Arc<str>>);

impl Names {
    const KEPT: usize = 8;

    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(known) = self.0.iter().find(|n| &***n == name) {
            return Arc::clone(known);
        }
        let new: Arc<str> = name.into();
        if self.0.len() == Self::KEPT {
            self.0.remove(0);
        }
        self.0.push(Arc::clone(&new));
        new
    }
}

/// `body` parsed; the topic and payload are slices of `owner` when given
/// (`body` lies in it), else copies.
fn parse(body: &[u8], owner: Option<&Bytes>, names: &mut Names) -> Option<Record> {
    let bytes = |part: &[u8]| match owner {
        Some(o) => o.slice_ref(part),
        None => Bytes::copy_from_slice(part),
    };
    let mut r = Reader(body);
    let seq = r.u64()?;
    let time = r.u64()?;
    let id = u128::from_le_bytes(r.take(16)?.try_into().ok()?);
    let priority = r.u8()?;
    let flags = r.u8()?;
    let topic = Topic::new(bytes(r.short()?.as_bytes())).ok()?;
    let input = names.get(r.short()?);
    let peer = names.get(r.short()?);
    let principal = if flags & 1 == 1 {
        Some(names.get(r.short()?))
    } else {
        None
    };
    let count = r.u32()?;
    let mut attributes = Attributes::new();
    for _ in 0..count {
        let k = r.long()?.to_owned();
        let v = r.long()?.to_owned();
        attributes.insert(k, v);
    }
    let payload = bytes(r.0);
    Some(Record {
        seq,
        message: Message {
            id: MessageId(id),
            topic,
            payload,
            attributes,
            publish_time: UNIX_EPOCH + Duration::from_nanos(time),
            publisher: Publisher::new(input, peer).with_principal(principal),
            priority,
            request: None,
            receipt: None,
        },
    })
}

/// `t` in nanoseconds since the Unix epoch (0 before it).
pub(crate) fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    let mut n = s.len().min(max);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s[..n]
}

/// Appends `s` with a u16 length. Topics, input names and peers are far
/// below 64 KiB; a longer one is cut at a character boundary rather than
/// mis-framed.
pub(crate) fn short(out: &mut Vec<u8>, s: &str) {
    let s = cut(s, usize::from(u16::MAX));
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends `s` with a u32 length.
pub(crate) fn long(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Reads the fields [`short`], [`long`] and the fixed-size integers wrote,
/// in order; `None` past the end.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    pub(crate) fn short(&mut self) -> Option<&'a str> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().ok()?);
        std::str::from_utf8(self.take(usize::from(n))?).ok()
    }
    pub(crate) fn long(&mut self) -> Option<&'a str> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
}
