//! Walking a segment's bytes record by record, through a bounded window.
//!
//! Damage never stops a scan: where the bytes at a position are no record
//! (a bad magic, length or CRC), the scanner looks for the next position
//! where a whole, intact record starts and goes on from there, reporting
//! the skipped span. Only when no intact record follows does the scan end
//! early: that is a torn (or zero-filled) tail.

use std::io;

use bytes::{Bytes, BytesMut};

use super::record::{self, Frame, Framed, HEADER, MAGIC};
use super::storage::Segment;

/// The window's usual read size; a record larger than it is read whole.
pub(crate) const CHUNK: usize = 256 << 10;

/// Bytes of a segment, read `CHUNK` at a time.
pub(crate) struct Window<'f> {
    file: &'f dyn Segment,
    /// Where the readable part of the file ends.
    end: u64,
    /// Shared, so a record's payload can point into it
    /// ([`Window::shared`]); a refill reuses it once nothing does.
    buf: Bytes,
    start: u64,
}

impl<'f> Window<'f> {
    pub(crate) fn new(file: &'f dyn Segment, end: u64, mut buf: Bytes) -> Self {
        // What it held belongs to another segment (or another place).
        buf.clear();
        Self {
            file,
            end,
            buf,
            start: 0,
        }
    }

    /// Gives the buffer back for reuse.
    pub(crate) fn into_buf(self) -> Bytes {
        self.buf
    }

    /// The bytes from `pos`: at least `want` of them, or all up to the end.
    pub(crate) fn view(&mut self, pos: u64, want: usize) -> io::Result<&[u8]> {
        let have_end = self.start + self.buf.len() as u64;
        let want_end = (pos + want as u64).min(self.end);
        if pos < self.start || want_end > have_end {
            let n = (want.max(CHUNK) as u64).min(self.end.saturating_sub(pos)) as usize;
            // Records handed out may still point into the old buffer: then
            // it stays theirs and this read takes a new one.
            let mut fresh = std::mem::take(&mut self.buf)
                .try_into_mut()
                .unwrap_or_else(|_| BytesMut::new());
            fresh.clear();
            fresh.resize(n, 0);
            let got = self.file.read_at(pos, &mut fresh)?;
            fresh.truncate(got);
            self.buf = fresh.freeze();
            self.start = pos;
        }
        let from = (pos - self.start) as usize;
        Ok(&self.buf[from.min(self.buf.len())..])
    }

    /// `len` bytes from `pos`, sharing the buffer (no copy): call right
    /// after a [`view`](Self::view) of at least that much at `pos`.
    pub(crate) fn shared(&self, pos: u64, len: usize) -> Bytes {
        let from = ((pos - self.start) as usize).min(self.buf.len());
        self.buf.slice(from..(from + len).min(self.buf.len()))
    }

    /// The intact record at `pos`, if one starts there and ends by `end`.
    pub(crate) fn frame_at(&mut self, pos: u64) -> io::Result<Option<Frame>> {
        let mut want = HEADER;
        let end = self.end;
        loop {
            let view = self.view(pos, want)?;
            match record::frame(view) {
                Framed::Frame(f) => return Ok(Some(f)),
                Framed::Invalid => return Ok(None),
                Framed::Incomplete { need } => {
                    if pos + need as u64 > end || need <= view.len() {
                        return Ok(None);
                    }
                    want = need;
                }
            }
        }
    }

    /// The first position after `pos` where an intact record starts whose
    /// sequence number is above `after`, or `None`.
    pub(crate) fn resync(&mut self, pos: u64, after: Option<u64>) -> io::Result<Option<u64>> {
        let mut at = pos + 1;
        while at < self.end {
            let view = self.view(at, CHUNK)?;
            let Some(k) = view.windows(MAGIC.len()).position(|w| w == MAGIC) else {
                // Keep the last bytes: a magic may straddle the window.
                at += (view.len().saturating_sub(MAGIC.len() - 1)).max(1) as u64;
                continue;
            };
            let candidate = at + k as u64;
            match self.frame_at(candidate)? {
                Some(f) if after.is_none_or(|a| f.seq > a) => return Ok(Some(candidate)),
                _ => at = candidate + 1,
            }
        }
        Ok(None)
    }
}

/// A span of a segment that held no intact record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    /// Its first byte.
    pub offset: u64,
    /// Its length.
    pub len: u64,
}

/// What one step of a scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// An intact record at `offset`.
    Record { offset: u64, frame: Frame },
    /// Damage followed by an intact record (which the next step returns).
    Damaged(Damage),
    /// No intact record from `offset` to the end: a torn tail.
    Torn(Damage),
    /// The end.
    End,
}

/// A position in a segment and the sequence number read last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) pos: u64,
    pub(crate) last_seq: Option<u64>,
}

impl Cursor {
    /// The next step from here; the cursor moves past what it returns.
    /// A record whose sequence number is not above the last one read is
    /// treated as damage (stale bytes cannot pass for new records).
    pub(crate) fn step(&mut self, window: &mut Window<'_>) -> io::Result<Step> {
        if self.pos >= window.end {
            return Ok(Step::End);
        }
        if let Some(frame) = window.frame_at(self.pos)?
            && self.last_seq.is_none_or(|l| frame.seq > l)
        {
            let offset = self.pos;
            self.pos += frame.len as u64;
            self.last_seq = Some(frame.seq);
            return Ok(Step::Record { offset, frame });
        }
        let offset = self.pos;
        match window.resync(self.pos, self.last_seq)? {
            Some(next) => {
                self.pos = next;
                Ok(Step::Damaged(Damage {
                    offset,
                    len: next - offset,
                }))
            }
            None => {
                self.pos = window.end;
                Ok(Step::Torn(Damage {
                    offset,
                    len: window.end - offset,
                }))
            }
        }
    }
}
