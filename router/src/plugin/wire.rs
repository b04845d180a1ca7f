//! The host side of the ABI's byte layouts (`sdk/ABI.md` §5): batches
//! written straight into guest memory, and verdict buffers read back with
//! every length and field checked. Sans-IO: bytes in, values out.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use smallvec::SmallVec;
use switchyard_sdk::abi;

use crate::message::{Attributes, Message, Topic};

/// A filter's answer for one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilterVerdict {
    /// Pass the message on unchanged.
    Keep,
    /// Drop it (the route counts it as filtered).
    Drop,
    /// Pass it on with these fields replaced (`None` keeps the original).
    Rewrite {
        /// A new, validated topic.
        topic: Option<Topic>,
        /// A new payload.
        payload: Option<Bytes>,
        /// A new attribute set replacing the old one.
        attributes: Option<Attributes>,
    },
    /// Answer the message's request with this payload as a one-frame
    /// reply; the message goes no further (a plain drop when it is not a
    /// request).
    Reply(Bytes),
    /// Refuse the message's request with this reason (at most
    /// [`abi::MAX_REJECT_REASON`] bytes); the message goes no further (a
    /// plain drop when it is not a request).
    Reject(String),
}

impl FilterVerdict {
    /// Applies this verdict to `msg`: `None` when it goes no further
    /// (dropped, replied to or rejected; answering its request is the
    /// caller's business).
    pub fn apply(self, mut msg: Message) -> Option<Message> {
        match self {
            FilterVerdict::Keep => Some(msg),
            FilterVerdict::Drop | FilterVerdict::Reply(_) | FilterVerdict::Reject(_) => None,
            FilterVerdict::Rewrite {
                topic,
                payload,
                attributes,
            } => {
                if let Some(t) = topic {
                    msg.topic = t;
                }
                if let Some(p) = payload {
                    msg.payload = p;
                }
                if let Some(a) = attributes {
                    msg.attributes = a;
                }
                Some(msg)
            }
        }
    }
}

/// Output names of one router verdict; two inline before allocating.
pub type OutputNames = SmallVec<[Arc<str>; 2]>;

/// A router's answer for one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteVerdict {
    /// Send to these outputs (1 to 64 names, not yet checked against the
    /// route: the caller does that).
    Outputs(OutputNames),
    /// Send where the route sends without a routing plugin.
    Default,
    /// Hand to the route's dead-letter handling.
    DeadLetter,
}

/// Bytes `msg` takes in a batch.
pub(crate) fn encoded_len(msg: &Message) -> usize {
    abi::MESSAGE_FIXED_LEN
        + 4
        + msg.topic.len()
        + 4
        + msg.publisher.input.len()
        + 4
        + msg.payload.len()
        + 4
        + msg
            .attributes
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum::<usize>()
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Unix milliseconds of message times, remembering the millisecond last
/// converted: `SystemTime::duration_since` is an out-of-line call costing
/// tens of nanoseconds, while most messages of a batch arrived within the
/// same millisecond, which two inlined comparisons recognise.
struct UnixMs {
    /// The start of the remembered millisecond (inclusive) ...
    lo: SystemTime,
    /// ... its end (exclusive) ...
    hi: SystemTime,
    /// ... and its Unix milliseconds.
    ms: u64,
}

impl UnixMs {
    fn new() -> Self {
        Self {
            lo: UNIX_EPOCH,
            hi: UNIX_EPOCH,
            ms: 0,
        }
    }

    #[inline]
    fn of(&mut self, t: SystemTime) -> u64 {
        if self.lo <= t && t < self.hi {
            return self.ms;
        }
        let ms = unix_ms(t);
        // Every time in [lo, hi) truncates to `ms`; a time before the
        // epoch (0) or too far out to add up is simply not remembered.
        if let Some(lo) = UNIX_EPOCH.checked_add(Duration::from_millis(ms))
            && let Some(hi) = lo.checked_add(Duration::from_millis(1))
        {
            *self = Self { lo, hi, ms };
        }
        ms
    }
}

/// A cursor writing into a region whose size was computed by
/// [`encoded_len`]; a mismatch is a bug, caught by the slice bounds.
struct Out<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Out<'_> {
    #[inline]
    fn put(&mut self, b: &[u8]) {
        let end = self.pos + b.len();
        self.buf[self.pos..end].copy_from_slice(b);
        self.pos = end;
    }

    #[inline]
    fn len_then(&mut self, b: &[u8]) {
        self.put(&(b.len() as u32).to_le_bytes());
        self.put(b);
    }
}

/// Writes the batch header and `msgs` into `dst`, which must be exactly
/// `BATCH_HEADER_LEN + Σ encoded_len` bytes. `msgs` are all requests or
/// none (see [`same_kind`]); the header's flags say which.
pub(crate) fn write_batch(dst: &mut [u8], msgs: &[Message], time_ms: u64) {
    let mut out = Out { buf: dst, pos: 0 };
    let mut header = [0u8; abi::BATCH_HEADER_LEN];
    header[..4].copy_from_slice(&(msgs.len() as u32).to_le_bytes());
    let requests = msgs.first().is_some_and(|m| m.request.is_some());
    debug_assert!(
        msgs.iter().all(|m| m.request.is_some() == requests),
        "a batch holds requests or other messages, not both"
    );
    let flags = if requests { abi::BATCH_REQUESTS } else { 0 };
    header[4..8].copy_from_slice(&flags.to_le_bytes());
    header[8..].copy_from_slice(&time_ms.to_le_bytes());
    out.put(&header);
    let mut clock = UnixMs::new();
    for m in msgs {
        // The fixed part and the topic's length as one fixed-size copy.
        let topic = m.topic.as_bytes();
        let mut fixed = [0u8; abi::MESSAGE_FIXED_LEN + 4];
        fixed[..16].copy_from_slice(&m.id.0.to_le_bytes());
        fixed[16..24].copy_from_slice(&clock.of(m.publish_time).to_le_bytes());
        fixed[24] = m.priority;
        fixed[25..].copy_from_slice(&(topic.len() as u32).to_le_bytes());
        out.put(&fixed);
        out.put(topic);
        out.len_then(m.publisher.input.as_bytes());
        out.len_then(&m.payload);
        out.put(&(m.attributes.len() as u32).to_le_bytes());
        for (k, v) in &m.attributes {
            out.len_then(k.as_bytes());
            out.len_then(v.as_bytes());
        }
    }
    debug_assert_eq!(
        out.pos,
        out.buf.len(),
        "encoded_len agrees with write_batch"
    );
}

/// True when `a` and `b` may share a batch: both requests or neither (the
/// batch flag `BATCH_REQUESTS` covers every message of a batch).
#[inline]
pub(crate) fn same_kind(a: &Message, b: &Message) -> bool {
    a.request.is_some() == b.request.is_some()
}

/// Why a result buffer was refused (`bad_verdict`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum VerdictError {
    /// The buffer ended inside a field.
    #[error("result ends inside {0} at byte {1}")]
    Truncated(&'static str, usize),
    /// A status other than 0 or 1.
    #[error("unknown status {0}")]
    Status(u32),
    /// The verdict count differs from the batch's.
    #[error("{found} verdicts for a batch of {expected}")]
    Count {
        /// Verdicts in the buffer.
        found: u32,
        /// Messages in the batch.
        expected: usize,
    },
    /// An unknown tag or field bit.
    #[error("verdict {index}: unknown {what} {value}")]
    Unknown {
        /// Which message.
        index: usize,
        /// "tag" or "rewrite fields".
        what: &'static str,
        /// The value found.
        value: u8,
    },
    /// A field's content is invalid.
    #[error("verdict {index}: {why}")]
    Invalid {
        /// Which message.
        index: usize,
        /// What is wrong.
        why: String,
    },
    /// Bytes after the last verdict.
    #[error("{0} bytes after the last verdict")]
    Trailing(usize),
}

/// The decoded status of a result buffer.
pub(crate) enum Status<'a> {
    /// Verdicts (count first) follow.
    Ok(Reader<'a>),
    /// The call failed with a code and message.
    Error {
        /// ABI error code.
        code: u32,
        /// The plugin's message.
        message: String,
    },
}

/// A checked little-endian reader over a result buffer.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], VerdictError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(VerdictError::Truncated(what, self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, VerdictError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, VerdictError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], VerdictError> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }

    fn str(&mut self, what: &'static str, index: usize) -> Result<&'a str, VerdictError> {
        std::str::from_utf8(self.bytes(what)?).map_err(|_| VerdictError::Invalid {
            index,
            why: format!("{what} is not UTF-8"),
        })
    }

    fn finish(&self) -> Result<(), VerdictError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => Err(VerdictError::Trailing(n)),
        }
    }

    fn count(&mut self, expected: usize) -> Result<(), VerdictError> {
        let found = self.u32("verdict count")?;
        if found as usize != expected {
            return Err(VerdictError::Count { found, expected });
        }
        Ok(())
    }
}

/// Reads the status word (and an error's code and message).
pub(crate) fn status(buf: &[u8]) -> Result<Status<'_>, VerdictError> {
    let mut r = Reader { buf, pos: 0 };
    match r.u32("status")? {
        abi::STATUS_OK => Ok(Status::Ok(r)),
        abi::STATUS_ERROR => {
            let code = r.u32("error code")?;
            let message = String::from_utf8_lossy(r.bytes("error message")?);
            let mut message = message.into_owned();
            message.truncate(message.floor_char_boundary(1024));
            Ok(Status::Error { code, message })
        }
        other => Err(VerdictError::Status(other)),
    }
}

/// Reads `expected` filter verdicts, appending to `out`.
pub(crate) fn filter_verdicts(
    mut r: Reader<'_>,
    expected: usize,
    out: &mut Vec<FilterVerdict>,
) -> Result<(), VerdictError> {
    r.count(expected)?;
    out.reserve(expected);
    // The common case: only keep and drop, one byte each and nothing
    // after; exactly what the general loop below accepts for such bytes.
    let rest = &r.buf[r.pos..];
    if rest.len() == expected
        && rest
            .iter()
            .all(|&t| t == abi::FILTER_KEEP || t == abi::FILTER_DROP)
    {
        out.extend(rest.iter().map(|&t| {
            if t == abi::FILTER_KEEP {
                FilterVerdict::Keep
            } else {
                FilterVerdict::Drop
            }
        }));
        return Ok(());
    }
    for index in 0..expected {
        let v = match r.u8("verdict tag")? {
            abi::FILTER_KEEP => FilterVerdict::Keep,
            abi::FILTER_DROP => FilterVerdict::Drop,
            abi::FILTER_REWRITE => rewrite(&mut r, index)?,
            abi::FILTER_REPLY => FilterVerdict::Reply(Bytes::copy_from_slice(r.bytes("reply")?)),
            abi::FILTER_REJECT => {
                let reason = r.str("reject reason", index)?;
                if reason.len() > abi::MAX_REJECT_REASON as usize {
                    return Err(VerdictError::Invalid {
                        index,
                        why: format!(
                            "reject reason of {} bytes (at most {})",
                            reason.len(),
                            abi::MAX_REJECT_REASON
                        ),
                    });
                }
                FilterVerdict::Reject(reason.to_owned())
            }
            value => {
                return Err(VerdictError::Unknown {
                    index,
                    what: "tag",
                    value,
                });
            }
        };
        out.push(v);
    }
    r.finish()
}

fn rewrite(r: &mut Reader<'_>, index: usize) -> Result<FilterVerdict, VerdictError> {
    let fields = r.u8("rewrite fields")?;
    let known = abi::REWRITE_TOPIC | abi::REWRITE_PAYLOAD | abi::REWRITE_ATTRIBUTES;
    if fields & !known != 0 {
        return Err(VerdictError::Unknown {
            index,
            what: "rewrite fields",
            value: fields,
        });
    }
    let topic = if fields & abi::REWRITE_TOPIC != 0 {
        let raw = r.bytes("topic")?;
        let topic = Topic::new(Bytes::copy_from_slice(raw)).map_err(|e| VerdictError::Invalid {
            index,
            why: format!("rewritten topic: {e}"),
        })?;
        Some(topic)
    } else {
        None
    };
    let payload = if fields & abi::REWRITE_PAYLOAD != 0 {
        Some(Bytes::copy_from_slice(r.bytes("payload")?))
    } else {
        None
    };
    let attributes = if fields & abi::REWRITE_ATTRIBUTES != 0 {
        let n = r.u32("attribute count")?;
        let mut attrs = Attributes::new();
        for _ in 0..n {
            let k = r.str("attribute key", index)?;
            let v = r.str("attribute value", index)?;
            if k.is_empty() {
                return Err(VerdictError::Invalid {
                    index,
                    why: "empty attribute key".into(),
                });
            }
            if attrs.insert(k.to_owned(), v.to_owned()).is_some() {
                return Err(VerdictError::Invalid {
                    index,
                    why: format!("attribute {k:?} given twice"),
                });
            }
        }
        Some(attrs)
    } else {
        None
    };
    Ok(FilterVerdict::Rewrite {
        topic,
        payload,
        attributes,
    })
}

/// Interned output names, so routing a message does not allocate a string
/// per output. Bounded: past `CAP` distinct names new ones are allocated
/// per use instead of remembered.
#[derive(Default)]
pub(crate) struct NameCache {
    names: Vec<Arc<str>>,
}

impl NameCache {
    const CAP: usize = 256;

    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(n) = self.names.iter().find(|n| &***n == name) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(name);
        if self.names.len() < Self::CAP {
            self.names.push(n.clone());
        }
        n
    }
}

/// Reads `expected` router verdicts, appending to `out`.
pub(crate) fn route_verdicts(
    mut r: Reader<'_>,
    expected: usize,
    out: &mut Vec<RouteVerdict>,
    names: &mut NameCache,
) -> Result<(), VerdictError> {
    r.count(expected)?;
    out.reserve(expected);
    for index in 0..expected {
        let v = match r.u8("verdict tag")? {
            abi::ROUTE_OUTPUTS => {
                let n = r.u32("output count")?;
                if n == 0 || n > abi::MAX_ROUTE_OUTPUTS {
                    return Err(VerdictError::Invalid {
                        index,
                        why: format!("{n} outputs (1 to {} allowed)", abi::MAX_ROUTE_OUTPUTS),
                    });
                }
                let mut outputs = OutputNames::new();
                for _ in 0..n {
                    let name = r.str("output name", index)?;
                    if name.is_empty() || name.len() > abi::MAX_OUTPUT_NAME as usize {
                        return Err(VerdictError::Invalid {
                            index,
                            why: format!("output name of {} bytes", name.len()),
                        });
                    }
                    outputs.push(names.get(name));
                }
                RouteVerdict::Outputs(outputs)
            }
            abi::ROUTE_DEAD_LETTER => RouteVerdict::DeadLetter,
            abi::ROUTE_DEFAULT => RouteVerdict::Default,
            value => {
                return Err(VerdictError::Unknown {
                    index,
                    what: "tag",
                    value,
                });
            }
        };
        out.push(v);
    }
    r.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Publisher;
    use proptest::prelude::*;

    fn msg(topic: &str, payload: &'static [u8]) -> Message {
        let mut m = Message::new(
            Topic::try_from(topic).expect("topic"),
            Bytes::from_static(payload),
            Publisher::new("in", ""),
        );
        m.attributes.insert("k".into(), "v".into());
        m
    }

    #[test]
    fn batches_decode_with_the_sdk() {
        let msgs = [msg("a.b", b"{\"x\":1}"), msg("c", b"")];
        let len = abi::BATCH_HEADER_LEN + msgs.iter().map(encoded_len).sum::<usize>();
        let mut buf = vec![0; len];
        write_batch(&mut buf, &msgs, 42);
        let batch = switchyard_sdk::Batch::decode(&buf).expect("sdk decodes the host's batch");
        assert_eq!(batch.time_ms(), 42);
        let got: Vec<_> = batch.messages().collect();
        assert_eq!(got[0].topic(), "a.b");
        assert_eq!(got[0].attr("k"), Some("v"));
        assert_eq!(got[0].id(), msgs[0].id.0);
        assert_eq!(got[1].input(), "in");
    }

    #[test]
    fn message_times_convert_as_duration_since_does() {
        let mut clock = UnixMs::new();
        let base = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let times = [
            base,
            base + Duration::from_micros(999),
            base + Duration::from_micros(1000),
            base - Duration::from_nanos(1),
            base + Duration::from_micros(1500),
            UNIX_EPOCH,
            UNIX_EPOCH - Duration::from_secs(5),
            UNIX_EPOCH + Duration::from_nanos(999_999),
            base + Duration::from_micros(999),
        ];
        for t in times {
            assert_eq!(clock.of(t), unix_ms(t), "{t:?}");
        }
    }

    #[test]
    fn keep_and_drop_runs_take_the_short_path_with_the_same_checks() {
        assert_eq!(
            filters(&ok(3, &[1, 0, 1]), 3),
            Ok(vec![
                FilterVerdict::Drop,
                FilterVerdict::Keep,
                FilterVerdict::Drop
            ])
        );
        assert!(matches!(
            filters(&ok(2, &[0, 1, 0]), 2),
            Err(VerdictError::Trailing(1))
        ));
        assert!(matches!(
            filters(&ok(2, &[0]), 2),
            Err(VerdictError::Truncated(..))
        ));
        assert!(matches!(
            filters(&ok(2, &[0, 9]), 2),
            Err(VerdictError::Unknown { index: 1, .. })
        ));
    }

    fn ok(count: u32, body: &[u8]) -> Vec<u8> {
        let mut v = 0u32.to_le_bytes().to_vec();
        v.extend_from_slice(&count.to_le_bytes());
        v.extend_from_slice(body);
        v
    }

    fn filters(buf: &[u8], n: usize) -> Result<Vec<FilterVerdict>, VerdictError> {
        let mut out = Vec::new();
        match status(buf)? {
            Status::Ok(r) => filter_verdicts(r, n, &mut out).map(|_| out),
            Status::Error { code, .. } => panic!("error status {code}"),
        }
    }

    #[test]
    fn filter_verdicts_are_checked() {
        assert_eq!(
            filters(&ok(2, &[0, 1]), 2),
            Ok(vec![FilterVerdict::Keep, FilterVerdict::Drop])
        );
        assert!(matches!(
            filters(&ok(1, &[0]), 2),
            Err(VerdictError::Count { .. })
        ));
        assert!(matches!(
            filters(&ok(1, &[9]), 1),
            Err(VerdictError::Unknown { .. })
        ));
        assert!(matches!(
            filters(&ok(1, &[0, 0]), 1),
            Err(VerdictError::Trailing(1))
        ));
        // Rewrite to an invalid topic.
        let mut body = vec![2, 1];
        body.extend_from_slice(&3u32.to_le_bytes());
        body.extend_from_slice(b"a..");
        assert!(matches!(
            filters(&ok(1, &body), 1),
            Err(VerdictError::Invalid { .. })
        ));
        // A length pointing past the end.
        let mut body = vec![2, 2];
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            filters(&ok(1, &body), 1),
            Err(VerdictError::Truncated(..))
        ));
    }

    fn field(tag: u8, bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn reply_and_reject_verdicts_decode() {
        let mut body = field(abi::FILTER_REPLY, b"{\"status\":\"ok\"}");
        body.push(abi::FILTER_KEEP);
        body.extend(field(abi::FILTER_REJECT, "nope é".as_bytes()));
        body.extend(field(abi::FILTER_REPLY, b""));
        assert_eq!(
            filters(&ok(4, &body), 4),
            Ok(vec![
                FilterVerdict::Reply(Bytes::from_static(b"{\"status\":\"ok\"}")),
                FilterVerdict::Keep,
                FilterVerdict::Reject("nope é".into()),
                FilterVerdict::Reply(Bytes::new()),
            ])
        );
        // Neither goes on.
        assert!(
            FilterVerdict::Reply(Bytes::new())
                .apply(msg("a", b""))
                .is_none()
        );
        assert!(
            FilterVerdict::Reject("x".into())
                .apply(msg("a", b""))
                .is_none()
        );
    }

    #[test]
    fn hostile_reply_and_reject_verdicts_are_refused() {
        let limit = abi::MAX_REJECT_REASON as usize;
        // A reason of exactly the limit is fine, one byte more is not.
        let at_limit = field(abi::FILTER_REJECT, &vec![b'x'; limit]);
        assert!(filters(&ok(1, &at_limit), 1).is_ok());
        let over = field(abi::FILTER_REJECT, &vec![b'x'; limit + 1]);
        let err = filters(&ok(1, &over), 1).expect_err("too long");
        assert!(
            err.to_string().contains("reject reason of 1025 bytes"),
            "{err}"
        );
        // Not UTF-8.
        let bad = field(abi::FILTER_REJECT, &[0xff, 0xfe]);
        let err = filters(&ok(1, &bad), 1).expect_err("not UTF-8");
        assert!(
            err.to_string().contains("reject reason is not UTF-8"),
            "{err}"
        );
        // Truncated anywhere: inside the length, inside the bytes.
        for whole in [
            field(abi::FILTER_REPLY, b"pong"),
            field(abi::FILTER_REJECT, b"no"),
        ] {
            for cut in 1..whole.len() {
                assert!(
                    matches!(
                        filters(&ok(1, &whole[..cut]), 1),
                        Err(VerdictError::Truncated(..))
                    ),
                    "cut at {cut} of {whole:?}"
                );
            }
        }
        // A length pointing past the end.
        let mut huge = vec![abi::FILTER_REPLY];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(b"short");
        assert!(matches!(
            filters(&ok(1, &huge), 1),
            Err(VerdictError::Truncated("reply", _))
        ));
        // Trailing bytes after a reply.
        let mut trailing = field(abi::FILTER_REPLY, b"ok");
        trailing.push(0);
        assert!(matches!(
            filters(&ok(1, &trailing), 1),
            Err(VerdictError::Trailing(1))
        ));
    }

    #[test]
    fn requests_are_flagged_in_the_batch_header() {
        use crate::message::request::{OneshotReplier, RequestMetrics};
        let registry = crate::metrics::Registry::new();
        let (tx, _rx) = tokio::sync::oneshot::channel();
        let mut m = msg("status.health", b"");
        m.request = Some(
            RequestMetrics::register(&registry)
                .for_input("x")
                .start(Box::new(OneshotReplier(tx))),
        );
        let plain = msg("a", b"");
        assert!(!same_kind(&m, &plain));
        for (msgs, requests) in [(vec![m.clone(), m], true), (vec![plain], false)] {
            let len = abi::BATCH_HEADER_LEN + msgs.iter().map(encoded_len).sum::<usize>();
            let mut buf = vec![0; len];
            write_batch(&mut buf, &msgs, 7);
            let batch = switchyard_sdk::Batch::decode(&buf).expect("decodes");
            assert_eq!(batch.is_requests(), requests);
            assert!(batch.messages().all(|m| m.is_request() == requests));
        }
    }

    proptest! {
        #[test]
        fn arbitrary_result_buffers_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..64), n in 0usize..4) {
            if let Ok(Status::Ok(r)) = status(&buf) {
                let _ = filter_verdicts(r, n, &mut Vec::new());
            }
            if let Ok(Status::Ok(r)) = status(&buf) {
                let _ = route_verdicts(r, n, &mut Vec::new(), &mut NameCache::default());
            }
        }
    }
}
