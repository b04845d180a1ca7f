//! The records of the dead-letter log. Sans-IO: values in, bytes out, and
//! back.
//!
//! They share the durable queue's framing (magic, length, CRC-32C of
//! length and body; the body opens with the sequence number and a time),
//! so the segmented [`Log`](super::super::Log) verifies, cuts torn tails
//! and skips damage in them exactly as it does for a route's queue. What
//! follows those two words differs:
//!
//! ```text
//! entry      seq u64, time u64 (last_failed, ns), kind u8 = 0,
//!            summary u32 (bytes of the body before the message),
//!            reason u8, attempts u32, first_failed u64 (ns),
//!            message id u128, publish_time u64 (ns), priority u8,
//!            size u64 (the message's Message::size), route, output flag u8
//!            + [output], topic (u16 length + UTF-8 each), first_error,
//!            last_error (u32 length + UTF-8 each), then the message as a
//!            whole queue record (its own frame, CRC and all)
//! tombstone  seq u64, time u64, kind u8 = 1, count u32, count ids (u64 each)
//! ```
//!
//! An entry's id is its record's sequence number. A tombstone says the
//! entries it lists are gone (purged, replayed or expired); it always
//! comes after them in the log.
//!
//! `summary` lets a listing read only the front of a record: the fields a
//! list shows, never the payload.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::super::record::{self, HEADER, MAGIC};
use super::{DeadLetter, DeadReason};
use crate::message::{MessageId, Topic};

const ENTRY: u8 = 0;
const TOMBSTONE: u8 = 1;
/// Bytes of an entry's body up to and including `summary`.
const SUMMARY_AT: usize = 8 + 8 + 1;
/// Bytes to read for a listing before knowing the summary's length.
pub(crate) const SUMMARY_GUESS: usize = 4 << 10;
/// Most ids one tombstone lists.
pub(crate) const MAX_TOMBSTONE_IDS: usize = 8192;
/// Error texts are kept to this many bytes (cut at a character boundary).
pub(crate) const MAX_ERROR: usize = 1 << 10;

/// The fields a listing shows, read without the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The entry's id.
    pub id: u64,
    /// The original message's id.
    pub message_id: MessageId,
    /// Its topic.
    pub topic: String,
    /// The route it failed on.
    pub route: String,
    /// The output that refused it, if one did.
    pub output: Option<String>,
    /// Why it is here.
    pub reason: DeadReason,
    /// Delivery attempts made.
    pub attempts: u32,
    /// The first error.
    pub first_error: String,
    /// The last error.
    pub last_error: String,
    /// When it first failed.
    pub first_failed: SystemTime,
    /// When it last failed (and so came here).
    pub last_failed: SystemTime,
    /// When the router first accepted the message.
    pub publish_time: SystemTime,
    /// The message's size (topic, payload and attributes), bytes.
    pub size: u64,
    /// Its priority.
    pub priority: u8,
}

/// What one record of the dead-letter log is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    /// An entry (the message not parsed).
    Entry(Box<Summary>),
    /// The entries these ids name are gone.
    Tombstone(Vec<u64>),
}

pub(crate) use super::super::record::nanos;

pub(crate) fn from_nanos(n: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(n)
}

fn finish(out: &mut [u8], start: usize) -> usize {
    let body = out.len() - start - HEADER;
    let len = (body as u32).to_le_bytes();
    out[start + 4..start + 8].copy_from_slice(&len);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), &out[start + HEADER..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

use super::super::record::{Reader, short};

/// Appends an error text with a u32 length, cut to [`MAX_ERROR`].
fn long(out: &mut Vec<u8>, s: &str) {
    record::long(out, record::cut(s, MAX_ERROR));
}

/// Appends `entry` as record `seq` to `out`; returns its length.
pub(crate) fn encode_entry(seq: u64, entry: &DeadLetter, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&nanos(entry.last_failed).to_le_bytes());
    out.push(ENTRY);
    let summary_at = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(entry.reason as u8);
    out.extend_from_slice(&entry.attempts.to_le_bytes());
    out.extend_from_slice(&nanos(entry.first_failed).to_le_bytes());
    let m = &entry.message;
    out.extend_from_slice(&m.id.0.to_le_bytes());
    out.extend_from_slice(&nanos(m.publish_time).to_le_bytes());
    out.push(m.priority);
    out.extend_from_slice(&(m.size() as u64).to_le_bytes());
    short(out, &entry.route);
    out.push(u8::from(entry.output.is_some()));
    if let Some(o) = &entry.output {
        short(out, o);
    }
    short(out, m.topic.as_str());
    long(out, &entry.first_error);
    long(out, &entry.last_error);
    let summary = (out.len() - start - HEADER) as u32;
    out[summary_at..summary_at + 4].copy_from_slice(&summary.to_le_bytes());
    record::encode(seq, m, out);
    finish(out, start)
}

/// Appends a tombstone for `ids` as record `seq` to `out`; returns its
/// length.
pub(crate) fn encode_tombstone(
    seq: u64,
    time: SystemTime,
    ids: &[u64],
    out: &mut Vec<u8>,
) -> usize {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&nanos(time).to_le_bytes());
    out.push(TOMBSTONE);
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
    finish(out, start)
}

/// The bytes of the record at the front of `buf` (header included) needed
/// to parse its summary, once `buf` holds at least [`SUMMARY_GUESS`] bytes
/// or the whole record; `None` if it is no entry.
pub(crate) fn summary_len(buf: &[u8]) -> Option<usize> {
    let body = buf.get(HEADER..)?;
    if *body.get(16)? != ENTRY {
        return None;
    }
    let n = u32::from_le_bytes(body.get(SUMMARY_AT..SUMMARY_AT + 4)?.try_into().ok()?);
    Some(HEADER + n as usize)
}

/// Parses a record's body (`buf` starts at the record, header included,
/// and holds at least its summary; the CRC was checked by whoever framed
/// it, or is not, for a listing's partial read).
pub(crate) fn parse(buf: &[u8]) -> Option<Body> {
    let mut r = Reader(buf.get(HEADER..)?);
    let seq = r.u64()?;
    let time = r.u64()?;
    match r.u8()? {
        ENTRY => {
            let _summary = r.u32()?;
            let reason = DeadReason::from_code(r.u8()?)?;
            let attempts = r.u32()?;
            let first_failed = r.u64()?;
            let message_id = MessageId(u128::from_le_bytes(r.take(16)?.try_into().ok()?));
            let publish_time = r.u64()?;
            let priority = r.u8()?;
            let size = r.u64()?;
            let route = r.short()?.to_owned();
            let output = match r.u8()? {
                0 => None,
                _ => Some(r.short()?.to_owned()),
            };
            let topic = r.short()?.to_owned();
            let first_error = r.long()?.to_owned();
            let last_error = r.long()?.to_owned();
            Some(Body::Entry(Box::new(Summary {
                id: seq,
                message_id,
                topic,
                route,
                output,
                reason,
                attempts,
                first_error,
                last_error,
                first_failed: from_nanos(first_failed),
                last_failed: from_nanos(time),
                publish_time: from_nanos(publish_time),
                size,
                priority,
            })))
        }
        TOMBSTONE => {
            let count = r.u32()? as usize;
            if count > MAX_TOMBSTONE_IDS {
                return None;
            }
            let mut ids = Vec::with_capacity(count);
            for _ in 0..count {
                ids.push(r.u64()?);
            }
            Some(Body::Tombstone(ids))
        }
        _ => None,
    }
}

/// Parses a whole entry record (`buf` is exactly the record, its frame
/// checked): the entry and its summary.
pub(crate) fn parse_entry(buf: &[u8]) -> Option<(DeadLetter, Summary)> {
    let Body::Entry(summary) = parse(buf)? else {
        return None;
    };
    let at = summary_len(buf)?;
    let record::Decoded::Record(rec, _) = record::decode(buf.get(at..)?) else {
        return None;
    };
    // The message was checked against its topic at write time; a record
    // whose two copies disagree is foreign.
    Topic::new(rec.message.topic.as_bytes().clone()).ok()?;
    let entry = DeadLetter {
        message: rec.message,
        route: summary.route.clone(),
        output: summary.output.clone(),
        reason: summary.reason,
        attempts: summary.attempts,
        first_error: summary.first_error.clone(),
        last_error: summary.last_error.clone(),
        first_failed: summary.first_failed,
        last_failed: summary.last_failed,
    };
    Some((entry, *summary))
}
