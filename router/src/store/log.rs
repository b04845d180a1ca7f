//! A segmented append-only log of records: the files of one durable queue.
//!
//! Segments are named by the sequence number of their first record
//! (`00000000000000000042.log`) and hold records in sequence order. Writes
//! go to the last segment; once it reaches the segment size it is synced
//! (sealed) and a new one begins. The head of the log moves forward as
//! records are released; a segment is deleted once all its records are
//! behind the head. Sans-threads: the queue above decides who calls what.
//!
//! Opening verifies the last segment, the only one a crash can tear: a
//! torn or zero-filled tail is cut off, a damaged span in the middle is
//! skipped and reported with its segment and offset, and every intact
//! record after it is kept. A sealed segment (any but the last) was synced
//! whole before the next one was created, so opening does not read it:
//! its records are counted by sequence number (its base up to the next
//! segment's) and its bytes by its size, and the read path, which checks
//! every record's CRC anyway, finds and counts any damage in it when it
//! gets there. The one exception is a sealed segment that a mark given to
//! [`Log::open`] falls inside: it is verified, so the counts from the
//! mark on are exact. A backlog of any size thus opens in the time of
//! about two segments, not of the whole log.

use std::collections::VecDeque;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::record::{self, Record};
use super::scan::{Cursor, Damage, Step, Window};
use super::storage::{Segment, Storage};

const SUFFIX: &str = ".log";

/// How a log is laid out.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// A segment is sealed once it holds this many bytes.
    pub segment_bytes: u64,
}

/// What opening a log found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Records found: intact ones in the segments verified, plus the
    /// sequence numbers the sealed segments left to the reader span.
    pub records: u64,
    /// Sealed segments not read at open (see the module doc).
    pub unverified_segments: usize,
    /// Damaged spans skipped, by segment.
    pub damaged: Vec<(String, Damage)>,
    /// Torn tails cut off, by segment.
    pub torn: Vec<(String, Damage)>,
    /// For each mark given to [`Log::open`]: the records at or above it,
    /// and their bytes (counted as [`Recovery::records`] is).
    pub from_marks: [(u64, u64); 2],
}

/// One segment file and what it holds.
#[derive(Debug, Clone)]
struct Seg {
    name: String,
    /// The sequence number its name gives: no record in it is below.
    base: u64,
    file: Arc<dyn Segment>,
    /// Bytes of whole records written to it.
    len: u64,
    /// Records in it: intact ones if it was verified at open, else the
    /// sequence numbers it spans.
    records: u64,
    /// The last record's sequence number.
    last_seq: Option<u64>,
}

/// Where a reader of a log is: the next sequence number it wants and, once
/// known, where that record starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The next sequence number wanted.
    pub seq: u64,
    /// The segment (by base) and offset the scan continues at.
    at: Option<(u64, Cursor)>,
}

impl Position {
    /// From `seq` on.
    pub fn at(seq: u64) -> Self {
        Self { seq, at: None }
    }
}

/// What one read found beside its records.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadReport {
    /// Bytes of the records read.
    pub bytes: usize,
    /// Sequence numbers passed over with no intact record: lost to damage.
    pub missing: u64,
    /// Damaged spans passed.
    pub damaged: u64,
}

/// A view of a segment for reading outside the log's lock.
#[derive(Debug, Clone)]
pub struct Extent {
    base: u64,
    file: Arc<dyn Segment>,
    len: u64,
    name: String,
}

impl Extent {
    /// The sequence number its segment's name gives.
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// Its file.
    pub(crate) fn file(&self) -> &Arc<dyn Segment> {
        &self.file
    }

    /// Bytes of whole records in it.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

/// The log.
#[derive(Debug)]
pub struct Log {
    storage: Arc<dyn Storage>,
    options: Options,
    segments: VecDeque<Seg>,
    next_seq: u64,
}

impl Log {
    /// Opens (or creates) the log in `storage`, verifying the last segment
    /// (and any a mark falls inside) and cutting off a torn tail; sealed
    /// segments are left to the read path. `floor` is a sequence number known to be
    /// used already (from the cursors), so numbering never goes back even
    /// when every segment is gone. `marks` are sequence numbers to count
    /// records from ([`Recovery::from_marks`]).
    ///
    /// # Errors
    /// A file cannot be listed, read or truncated.
    pub fn open(
        storage: Arc<dyn Storage>,
        options: Options,
        floor: u64,
        marks: [u64; 2],
    ) -> io::Result<(Self, Recovery)> {
        let mut names: Vec<(u64, String)> = storage
            .list()?
            .into_iter()
            .filter_map(|n| {
                let base = n.strip_suffix(SUFFIX)?.parse::<u64>().ok()?;
                Some((base, n))
            })
            .collect();
        names.sort();
        let mut recovery = Recovery::default();
        let mut segments = VecDeque::with_capacity(names.len());
        let mut buf = Bytes::new();
        let mut last_seq: Option<u64> = None;
        let bases: Vec<u64> = names.iter().map(|(b, _)| *b).collect();
        for (i, (base, name)) in names.into_iter().enumerate() {
            let file = storage.open(&name)?;
            let end = file.size()?;
            // Sealed: the next segment starts at `next`, so this one holds
            // sequence numbers `base..next`.
            if let Some(&next) = bases.get(i + 1)
                && next > base
                && !marks.iter().any(|&m| base < m && m < next)
            {
                for (&mark, (n, bytes)) in marks.iter().zip(&mut recovery.from_marks) {
                    if mark < next {
                        *n += next - mark.max(base);
                    }
                    if mark <= base {
                        *bytes += end;
                    }
                }
                recovery.records += next - base;
                recovery.unverified_segments += 1;
                last_seq = Some(next - 1);
                segments.push_back(Seg {
                    name,
                    base,
                    file,
                    len: end,
                    records: next - base,
                    last_seq: Some(next - 1),
                });
                continue;
            }
            let mut seg = Seg {
                name: name.clone(),
                base,
                file: Arc::clone(&file),
                len: end,
                records: 0,
                last_seq: None,
            };
            let mut window = Window::new(&*file, end, std::mem::take(&mut buf));
            // Records must go on past the previous segment's and not below
            // this one's base.
            let mut cursor = Cursor {
                pos: 0,
                last_seq: last_seq.max(base.checked_sub(1)),
            };
            loop {
                match cursor.step(&mut window)? {
                    Step::Record { frame, .. } => {
                        for (mark, (n, bytes)) in marks.iter().zip(&mut recovery.from_marks) {
                            if frame.seq >= *mark {
                                *n += 1;
                                *bytes += frame.len as u64;
                            }
                        }
                        seg.records += 1;
                        seg.last_seq = Some(frame.seq);
                    }
                    Step::Damaged(d) => recovery.damaged.push((name.clone(), d)),
                    Step::Torn(d) => {
                        seg.len = d.offset;
                        recovery.torn.push((name.clone(), d));
                    }
                    Step::End => break,
                }
            }
            buf = window.into_buf();
            if seg.len < end {
                file.truncate(seg.len)?;
                file.sync()?;
            }
            recovery.records += seg.records;
            last_seq = seg.last_seq.or(last_seq);
            segments.push_back(seg);
        }
        let next_seq = last_seq.map_or(0, |s| s + 1).max(floor);
        Ok((
            Self {
                storage,
                options,
                segments,
                next_seq,
            },
            recovery,
        ))
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The lowest sequence number any segment may hold.
    pub fn first_seq(&self) -> u64 {
        self.segments.front().map_or(self.next_seq, |s| s.base)
    }

    /// Each segment's first sequence number and bytes, oldest first.
    pub fn spans(&self) -> Vec<(u64, u64)> {
        self.segments.iter().map(|s| (s.base, s.len)).collect()
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Writes `records` (whole encoded records, sequence numbers `seqs`,
    /// which must start at [`Log::next_seq`]) to the last segment, sealing
    /// it first if it is full.
    ///
    /// # Errors
    /// The write failed; the segment is cut back to where it was, so no
    /// partial record is left behind, and nothing counts as written.
    pub fn write(&mut self, records: &[u8], seqs: Range<u64>) -> io::Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        debug_assert_eq!(seqs.start, self.next_seq, "records are written in order");
        let roll = self
            .segments
            .back()
            .is_none_or(|s| s.len >= self.options.segment_bytes);
        if roll {
            if let Some(last) = self.segments.back() {
                last.file.sync()?;
            }
            let name = format!("{:020}{SUFFIX}", seqs.start);
            let file = self.storage.open(&name)?;
            self.storage.sync_dir()?;
            self.segments.push_back(Seg {
                name,
                base: seqs.start,
                file,
                len: 0,
                records: 0,
                last_seq: None,
            });
        }
        let seg = self
            .segments
            .back_mut()
            .expect("a segment was just ensured");
        if let Err(e) = seg.file.append(records) {
            // Leave no partial record: cut back to the last whole one.
            let _ = seg.file.truncate(seg.len);
            return Err(e);
        }
        seg.len += records.len() as u64;
        seg.records += seqs.end - seqs.start;
        seg.last_seq = Some(seqs.end - 1);
        self.next_seq = seqs.end;
        Ok(())
    }

    /// The last segment, to sync outside the lock.
    pub fn tail(&self) -> Option<Arc<dyn Segment>> {
        self.segments.back().map(|s| Arc::clone(&s.file))
    }

    /// Deletes every segment whose records are all below `head`, but never
    /// the last one. Returns how many records they held.
    ///
    /// # Errors
    /// A file could not be removed (it is tried again next time).
    pub fn release(&mut self, head: u64) -> io::Result<u64> {
        let mut removed = 0;
        while self.segments.len() > 1 {
            let next_base = self.segments[1].base;
            if next_base > head {
                break;
            }
            let seg = self.segments.front().expect("more than one segment");
            self.storage.remove(&seg.name)?;
            removed += seg.records;
            self.segments.pop_front();
        }
        Ok(removed)
    }

    /// The segments from the one that may hold `seq` on, for reading.
    pub fn extents(&self, seq: u64) -> Vec<Extent> {
        let start = self
            .segments
            .iter()
            .rposition(|s| s.base <= seq)
            .unwrap_or(0);
        self.segments
            .iter()
            .skip(start)
            .map(|s| Extent {
                base: s.base,
                file: Arc::clone(&s.file),
                len: s.len,
                name: s.name.clone(),
            })
            .collect()
    }
}

/// Reads up to `max` records (and about `max_bytes`) from `pos` on, out
/// of `extents` (from [`Log::extents`]), appending them to `out` and moving
/// `pos` past them. Damaged spans are skipped; a record that fails to parse
/// counts as damage.
///
/// # Errors
/// A read failed.
pub(crate) fn read(
    extents: &[Extent],
    pos: &mut Position,
    max: usize,
    max_bytes: usize,
    buf: &mut Bytes,
    out: &mut Vec<Record>,
) -> io::Result<ReadReport> {
    let mut report = ReadReport::default();
    let mut taken = 0;
    let mut names = record::Names::default();
    for extent in extents {
        if taken >= max || report.bytes >= max_bytes {
            break;
        }
        let mut cursor = match pos.at {
            Some((base, cursor)) if base == extent.base => cursor,
            Some((base, _)) if base > extent.base => continue,
            _ => Cursor {
                pos: 0,
                last_seq: extent.base.checked_sub(1),
            },
        };
        let mut window = Window::new(&*extent.file, extent.len, std::mem::take(buf));
        loop {
            if taken >= max || report.bytes >= max_bytes {
                break;
            }
            match cursor.step(&mut window)? {
                Step::Record { offset, frame } => {
                    if frame.seq < pos.seq {
                        continue;
                    }
                    window.view(offset, frame.len)?;
                    match record::parse_shared(
                        &window.shared(offset, frame.len),
                        &frame,
                        &mut names,
                    ) {
                        Some(r) => {
                            report.missing += frame.seq - pos.seq;
                            pos.seq = frame.seq + 1;
                            report.bytes += frame.len;
                            taken += 1;
                            out.push(r);
                        }
                        None => {
                            tracing::warn!(segment = %extent.name, offset, "a record with a good CRC does not parse; skipped");
                            report.damaged += 1;
                        }
                    }
                }
                Step::Damaged(d) | Step::Torn(d) => {
                    tracing::warn!(segment = %extent.name, offset = d.offset, len = d.len, "damaged span in a queue segment; skipped to the next intact record");
                    report.damaged += 1;
                }
                Step::End => break,
            }
        }
        *buf = window.into_buf();
        pos.at = Some((extent.base, cursor));
    }
    Ok(report)
}
