//! Borrowed views of the messages in a batch: no allocation per message or
//! per field. A [`Batch`] checks the whole buffer once (lengths and UTF-8),
//! so the views hand out `&str` and `&[u8]` without checking again.

use crate::abi;

/// Why a batch buffer could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset where decoding stopped.
    pub offset: usize,
    /// What was wrong there.
    pub what: &'static str,
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "bad batch at byte {}: {}", self.offset, self.what)
    }
}

/// A bounds-checked little-endian reader.
#[derive(Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    fn err(&self, what: &'static str) -> DecodeError {
        DecodeError {
            offset: self.pos,
            what,
        }
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| self.err(what))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u128(&mut self, what: &'static str) -> Result<u128, DecodeError> {
        Ok(u128::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(what)? as usize;
        self.take(len, what)
    }

    /// A string already checked by [`Batch::decode`]: skips the UTF-8 check.
    fn str_checked_before(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let bytes = self.bytes(what)?;
        // SAFETY: only called on a buffer that `Batch::decode` validated
        // (every string field is UTF-8); the buffer is borrowed immutably
        // for 'a, so it cannot have changed since.
        Ok(unsafe { core::str::from_utf8_unchecked(bytes) })
    }

    pub(crate) fn str(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let at = self.pos;
        let bytes = self.bytes(what)?;
        crate::json::utf8(bytes).ok_or(DecodeError {
            offset: at,
            what: "invalid UTF-8",
        })
    }
}

/// A decoded batch: its header and an iterator over its messages.
#[derive(Clone)]
pub struct Batch<'a> {
    count: u32,
    time_ms: u64,
    /// The header's [`abi::BATCH_REQUESTS`] bit.
    requests: bool,
    body: &'a [u8],
    /// True once every message was checked (`decode`), so iteration may
    /// skip the UTF-8 checks.
    validated: bool,
}

impl<'a> Batch<'a> {
    /// Checks the whole buffer (every length and every string's UTF-8).
    ///
    /// # Errors
    /// A [`DecodeError`] naming the first byte that breaks the layout.
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let mut batch = Self::header(buf)?;
        let mut checking = batch.checking();
        while checking.next_checked()?.is_some() {}
        checking.finish()?;
        batch.validated = true;
        Ok(batch)
    }

    /// Reads only the header; the messages are checked as they are read
    /// with [`Checking`], in one pass (what the ABI glue does).
    ///
    /// # Errors
    /// A [`DecodeError`] when the header is short.
    pub fn header(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        let count = r.u32("batch header")?;
        // Unknown bits are ignored, as the ABI asks.
        let flags = r.u32("batch header")?;
        let time_ms = r.u64("batch header")?;
        Ok(Self {
            count,
            time_ms,
            requests: flags & abi::BATCH_REQUESTS != 0,
            body: &buf[r.pos()..],
            validated: false,
        })
    }

    /// A one-pass reader that checks each message as it goes.
    pub fn checking(&self) -> Checking<'a> {
        Checking {
            reader: Reader::new(self.body),
            left: self.count,
            time_ms: self.time_ms,
            requests: self.requests,
        }
    }

    /// How many messages the batch holds.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True for a batch of no messages (the host never sends one).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The router's wall clock when it built the batch, in milliseconds
    /// since the Unix epoch: the plugin's clock.
    pub fn time_ms(&self) -> u64 {
        self.time_ms
    }

    /// True when every message of the batch is a request (the host puts
    /// requests and other messages in separate batches).
    pub fn is_requests(&self) -> bool {
        self.requests
    }

    /// The messages, in order. On a batch from [`Batch::header`] this
    /// checks as it goes and stops at the first bad message.
    pub fn messages(&self) -> Messages<'a> {
        Messages {
            reader: Reader::new(self.body),
            left: self.count,
            time_ms: self.time_ms,
            requests: self.requests,
            validated: self.validated,
        }
    }
}

/// Reads a batch's messages once, checking each as it is read.
pub struct Checking<'a> {
    reader: Reader<'a>,
    left: u32,
    time_ms: u64,
    requests: bool,
}

impl<'a> Checking<'a> {
    /// The next message, `None` after the last, or why the bytes are bad.
    ///
    /// # Errors
    /// A [`DecodeError`] at the first byte that breaks the layout.
    #[inline]
    pub fn next_checked(&mut self) -> Result<Option<Message<'a>>, DecodeError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let mut msg = decode_one::<false>(&mut self.reader)?;
        msg.batch_time_ms = self.time_ms;
        msg.request = self.requests;
        Ok(Some(msg))
    }

    /// Checks nothing follows the last message.
    ///
    /// # Errors
    /// A [`DecodeError`] for messages left unread or trailing bytes.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.left != 0 || !self.reader.is_empty() {
            return Err(self.reader.err("trailing bytes after the last message"));
        }
        Ok(())
    }
}

/// Iterator over a batch's messages.
pub struct Messages<'a> {
    reader: Reader<'a>,
    left: u32,
    time_ms: u64,
    requests: bool,
    validated: bool,
}

impl<'a> Iterator for Messages<'a> {
    type Item = Message<'a>;

    fn next(&mut self) -> Option<Message<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let msg = if self.validated {
            // `Batch::decode` checked these same bytes.
            decode_one::<true>(&mut self.reader)
        } else {
            decode_one::<false>(&mut self.reader)
        };
        let Ok(mut msg) = msg else {
            self.left = 0;
            return None;
        };
        msg.batch_time_ms = self.time_ms;
        msg.request = self.requests;
        Some(msg)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

/// Decodes one message; `CHECKED` says `Batch::decode` already validated
/// these bytes, so UTF-8 need not be checked again.
#[inline]
fn decode_one<'a, const CHECKED: bool>(r: &mut Reader<'a>) -> Result<Message<'a>, DecodeError> {
    match decode_fast::<CHECKED>(r.buf, r.pos) {
        Some((msg, end)) => {
            r.pos = end;
            Ok(msg)
        }
        // Something is wrong (or unusual): the careful decoder finds what.
        None => decode_careful::<CHECKED>(r),
    }
}

/// The `len` bytes of `b` from `*at`, moving `*at` past them.
#[inline(always)]
fn slice_at<'a>(b: &'a [u8], at: &mut usize, len: usize) -> Option<&'a [u8]> {
    let end = at.checked_add(len)?;
    let s = b.get(*at..end)?;
    *at = end;
    Some(s)
}

/// A little-endian `u32` from `*at`, moving `*at` past it.
#[inline(always)]
fn u32_at(b: &[u8], at: &mut usize) -> Option<u32> {
    let bytes: [u8; 4] = slice_at(b, at, 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

/// A length-prefixed field from `*at`, moving `*at` past it.
#[inline(always)]
fn field_at<'a>(b: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let len = u32_at(b, at)? as usize;
    slice_at(b, at, len)
}

/// A length-prefixed UTF-8 field (checked unless `CHECKED`).
#[inline(always)]
fn text_at<'a, const CHECKED: bool>(b: &'a [u8], at: &mut usize) -> Option<&'a str> {
    let bytes = field_at(b, at)?;
    if CHECKED {
        // SAFETY: as `Reader::str_checked_before`: `Batch::decode` checked
        // every string field of this immutably borrowed buffer.
        Some(unsafe { core::str::from_utf8_unchecked(bytes) })
    } else {
        crate::json::utf8(bytes)
    }
}

/// The message at `at` and where it ends, reading each field with as few
/// checks as the layout allows; `None` for anything [`decode_careful`]
/// would refuse (which then says why). It checks exactly what that one
/// does, so both accept the same bytes and return the same message.
#[inline(always)]
fn decode_fast<'a, const CHECKED: bool>(
    b: &'a [u8],
    mut at: usize,
) -> Option<(Message<'a>, usize)> {
    let fixed: &[u8; abi::MESSAGE_FIXED_LEN] = slice_at(b, &mut at, abi::MESSAGE_FIXED_LEN)?
        .try_into()
        .ok()?;
    let (id, rest) = fixed.split_first_chunk::<16>()?;
    let (time, rest) = rest.split_first_chunk::<8>()?;
    let priority = rest[0];
    let topic = text_at::<CHECKED>(b, &mut at)?;
    let input = text_at::<CHECKED>(b, &mut at)?;
    let payload = field_at(b, &mut at)?;
    let attr_count = u32_at(b, &mut at)?;
    let attrs_start = at;
    for _ in 0..attr_count {
        text_at::<CHECKED>(b, &mut at)?;
        text_at::<CHECKED>(b, &mut at)?;
    }
    let msg = Message {
        id: u128::from_le_bytes(*id),
        publish_time_ms: u64::from_le_bytes(*time),
        batch_time_ms: 0,
        request: false,
        priority,
        topic,
        input,
        payload,
        attributes: Attributes {
            count: attr_count,
            bytes: b.get(attrs_start..at)?,
        },
    };
    Some((msg, at))
}

/// Decodes one message field by field, naming the first that is wrong.
#[cold]
fn decode_careful<'a, const CHECKED: bool>(r: &mut Reader<'a>) -> Result<Message<'a>, DecodeError> {
    let id = r.u128("message id")?;
    let publish_time_ms = r.u64("publish time")?;
    let priority = r.u8("priority")?;
    let (topic, input) = if CHECKED {
        (
            r.str_checked_before("topic")?,
            r.str_checked_before("input")?,
        )
    } else {
        (r.str("topic")?, r.str("input")?)
    };
    let payload = r.bytes("payload")?;
    let attr_count = r.u32("attribute count")?;
    let attrs_start = r.pos();
    let attrs_all = r.clone();
    for _ in 0..attr_count {
        if CHECKED {
            r.bytes("attribute key")?;
            r.bytes("attribute value")?;
        } else {
            r.str("attribute key")?;
            r.str("attribute value")?;
        }
    }
    let attrs_len = r.pos() - attrs_start;
    let mut a = attrs_all;
    let attrs = a.take(attrs_len, "attributes")?;
    Ok(Message {
        id,
        publish_time_ms,
        batch_time_ms: 0,
        request: false,
        priority,
        topic,
        input,
        payload,
        attributes: Attributes {
            count: attr_count,
            bytes: attrs,
        },
    })
}

/// One message of a batch, borrowed from the batch buffer.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    id: u128,
    publish_time_ms: u64,
    batch_time_ms: u64,
    request: bool,
    priority: u8,
    topic: &'a str,
    input: &'a str,
    payload: &'a [u8],
    attributes: Attributes<'a>,
}

impl<'a> Message<'a> {
    /// The router's unique id of this message.
    pub fn id(&self) -> u128 {
        self.id
    }

    /// The dot-separated topic.
    pub fn topic(&self) -> &'a str {
        self.topic
    }

    /// The payload bytes.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The payload as text, if it is UTF-8.
    pub fn payload_str(&self) -> Option<&'a str> {
        core::str::from_utf8(self.payload).ok()
    }

    /// The attribute `key`, if present.
    pub fn attr(&self, key: &str) -> Option<&'a str> {
        self.attributes.get(key)
    }

    /// All attributes, sorted by key.
    pub fn attributes(&self) -> Attributes<'a> {
        self.attributes.clone()
    }

    /// The name of the input that accepted the message.
    pub fn input(&self) -> &'a str {
        self.input
    }

    /// 0 (lowest) to 9 (highest).
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// When the router accepted the message, in Unix milliseconds.
    pub fn publish_time_ms(&self) -> u64 {
        self.publish_time_ms
    }

    /// When the router built this batch, in Unix milliseconds: "now" for
    /// the plugin (there is no clock import).
    pub fn batch_time_ms(&self) -> u64 {
        self.batch_time_ms
    }

    /// True when the message is a request: its sender waits for exactly
    /// one answer, which a filter may give itself with
    /// [`Verdict::Reply`](crate::Verdict::Reply) or
    /// [`Verdict::Reject`](crate::Verdict::Reject).
    pub fn is_request(&self) -> bool {
        self.request
    }

    /// Looks up a field of a JSON payload by a dotted path, without
    /// allocating; see [`crate::json::find`].
    pub fn json(&self, path: &str) -> Option<crate::json::Value<'a>> {
        crate::json::find(self.payload, path)
    }

    /// [`Message::json`] with a path compiled once: the same answer, for
    /// the plugin that looks up the same field in every message.
    pub fn json_path(&self, path: &crate::json::JsonPath) -> Option<crate::json::Value<'a>> {
        path.find(self.payload)
    }
}

/// A message's attributes: `(key, value)` pairs sorted by key, borrowed.
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    count: u32,
    bytes: &'a [u8],
}

impl<'a> Attributes<'a> {
    /// How many attributes there are.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The pairs in key order.
    pub fn iter(&self) -> AttributeIter<'a> {
        AttributeIter {
            reader: Reader::new(self.bytes),
            left: self.count,
        }
    }
}

impl<'a> IntoIterator for Attributes<'a> {
    type Item = (&'a str, &'a str);
    type IntoIter = AttributeIter<'a>;
    fn into_iter(self) -> AttributeIter<'a> {
        self.iter()
    }
}

/// Iterator over `(key, value)` attribute pairs.
pub struct AttributeIter<'a> {
    reader: Reader<'a>,
    left: u32,
}

impl<'a> Iterator for AttributeIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Attributes only come from a batch `Batch::decode` validated.
        let k = self.reader.str_checked_before("attribute key").ok()?;
        let v = self.reader.str_checked_before("attribute value").ok()?;
        Some((k, v))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

/// Writes a batch in the ABI layout; what the host does, for tests and
/// for [`crate::testing`].
#[derive(Default)]
pub struct BatchWriter {
    buf: Vec<u8>,
    count: u32,
}

/// The fields of one message for [`BatchWriter::push`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnedMessage {
    /// The message id.
    pub id: u128,
    /// Unix milliseconds when accepted.
    pub publish_time_ms: u64,
    /// 0..=9.
    pub priority: u8,
    /// The topic.
    pub topic: String,
    /// The input's name.
    pub input: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// Attributes; sorted by key when written.
    pub attributes: Vec<(String, String)>,
    /// True for a request (see [`Message::is_request`]).
    pub request: bool,
}

impl OwnedMessage {
    /// A message with `topic` and `payload`, priority 4, no attributes.
    pub fn new(topic: &str, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            topic: topic.to_owned(),
            payload: payload.into(),
            priority: 4,
            input: "test".to_owned(),
            ..Self::default()
        }
    }

    /// Adds an attribute.
    pub fn attr(mut self, key: &str, value: &str) -> Self {
        self.attributes.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Sets the id.
    pub fn id(mut self, id: u128) -> Self {
        self.id = id;
        self
    }

    /// Marks it as a request.
    pub fn request(mut self) -> Self {
        self.request = true;
        self
    }
}

impl BatchWriter {
    /// An empty batch with the given batch time.
    pub fn new(time_ms: u64) -> Self {
        Self::with_flags(time_ms, 0)
    }

    /// An empty batch with the given batch time and header flags (e.g.
    /// [`abi::BATCH_REQUESTS`]). [`BatchWriter::push`] writes messages as
    /// they are: their [`OwnedMessage::request`] is the flags' business.
    pub fn with_flags(time_ms: u64, flags: u32) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_le_bytes());
        buf.extend_from_slice(&flags.to_le_bytes());
        buf.extend_from_slice(&time_ms.to_le_bytes());
        Self { buf, count: 0 }
    }

    /// Appends one message.
    pub fn push(&mut self, m: &OwnedMessage) {
        self.buf.extend_from_slice(&m.id.to_le_bytes());
        self.buf.extend_from_slice(&m.publish_time_ms.to_le_bytes());
        self.buf.push(m.priority);
        put_bytes(&mut self.buf, m.topic.as_bytes());
        put_bytes(&mut self.buf, m.input.as_bytes());
        put_bytes(&mut self.buf, &m.payload);
        let mut attrs: Vec<&(String, String)> = m.attributes.iter().collect();
        attrs.sort_by(|a, b| a.0.cmp(&b.0));
        put_u32(&mut self.buf, attrs.len() as u32);
        for (k, v) in attrs {
            put_bytes(&mut self.buf, k.as_bytes());
            put_bytes(&mut self.buf, v.as_bytes());
        }
        self.count += 1;
    }

    /// The finished buffer.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[..4].copy_from_slice(&self.count.to_le_bytes());
        self.buf
    }
}

pub(crate) fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_u32(buf, b.len() as u32);
    buf.extend_from_slice(b);
}

const _: () = assert!(abi::BATCH_HEADER_LEN == 16 && abi::MESSAGE_FIXED_LEN == 25);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_batch() {
        let mut w = BatchWriter::new(1234);
        w.push(
            &OwnedMessage::new("a.b", "hello")
                .attr("z", "1")
                .attr("k", "v")
                .id(7),
        );
        w.push(&OwnedMessage::new("c", Vec::new()));
        let buf = w.finish();
        let batch = Batch::decode(&buf).expect("valid");
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.time_ms(), 1234);
        let msgs: Vec<_> = batch.messages().collect();
        assert_eq!(msgs[0].topic(), "a.b");
        assert_eq!(msgs[0].payload(), b"hello");
        assert_eq!(msgs[0].id(), 7);
        assert_eq!(msgs[0].attr("k"), Some("v"));
        assert_eq!(msgs[0].attr("nope"), None);
        let keys: Vec<_> = msgs[0].attributes().iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["k", "z"]);
        assert_eq!(msgs[1].batch_time_ms(), 1234);
    }

    #[test]
    fn the_requests_flag_marks_every_message_and_other_bits_are_ignored() {
        for (flags, request) in [
            (0, false),
            (abi::BATCH_REQUESTS, true),
            (0xff00_0000, false),
        ] {
            let mut w = BatchWriter::with_flags(0, flags);
            w.push(&OwnedMessage::new("a", "x"));
            w.push(&OwnedMessage::new("b", "y"));
            let buf = w.finish();
            let batch = Batch::decode(&buf).expect("valid");
            assert_eq!(batch.is_requests(), request, "{flags:#x}");
            assert!(batch.messages().all(|m| m.is_request() == request));
            let mut checking = Batch::header(&buf).expect("header").checking();
            while let Some(m) = checking.next_checked().expect("valid") {
                assert_eq!(m.is_request(), request);
            }
        }
    }

    #[test]
    fn truncated_and_trailing_bytes_are_errors() {
        let mut w = BatchWriter::new(0);
        w.push(&OwnedMessage::new("a", "x"));
        let buf = w.finish();
        for cut in 0..buf.len() {
            assert!(Batch::decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = buf.clone();
        long.push(0);
        assert!(Batch::decode(&long).is_err());
    }
}
