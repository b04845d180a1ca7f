//! A durable queue: a [`Log`] with its cursors, a writer that commits
//! appends in groups, and an in-memory cache of the newest records so a
//! reader that keeps up never reads the disk.
//!
//! Producers [`Queue::append`] (encodes into a pending buffer, assigns
//! sequence numbers; never blocks on the disk) and then wait for
//! [`Queue::durable`]. The writer takes the whole pending buffer at once,
//! writes it, and syncs per the [`Fsync`] policy: so one `fdatasync`
//! covers every message appended while the previous one ran (group commit,
//! `always`), or within the interval (`batch`).
//!
//! Each *reader* (one per target output of the route, by name) has its own
//! cursor: it [`Queue::pop`]s records in order and [`Queue::ack`]s them
//! once its output took them, independently of the others, so a reader
//! whose output is down does not hold the others back. The head is the
//! slowest reader's acknowledged position; records behind it are released,
//! the cursors are saved on the writer's schedule, and segments behind the
//! head are deleted. After a restart each reader goes on from its own
//! acknowledged position.
//!
//! Memory does not grow with the backlog: the cache holds at most
//! `cache_bytes` of records, favouring the reader furthest ahead; a reader
//! behind it reads from disk, in windows of at most `cache_bytes`.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use smallvec::SmallVec;
use tokio::sync::{Notify, watch};

use super::cursors::{self, Saved};
use super::log::{self, Log, Position, ReadReport, Recovery};
use super::record::{self, Record};
use super::storage::Storage;
use crate::message::Message;

/// When appended records count as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// `fdatasync` before they count: every commit syncs, and what arrives
    /// while one syncs waits for the next.
    Always,
    /// One `fdatasync` per interval covers everything appended in it.
    Batch(Duration),
    /// Written to the file (the kernel's page cache) and no sync: survives
    /// the process, not the machine.
    Os,
}

/// Called with the duration of each `fdatasync` (for a histogram).
pub type SyncObserver = Arc<dyn Fn(Duration) + Send + Sync>;

/// How a durable queue is set up.
#[derive(Clone)]
pub struct Options {
    /// The sync policy.
    pub fsync: Fsync,
    /// A segment is sealed once it holds this many bytes.
    pub segment_bytes: u64,
    /// Most bytes of records kept in memory for the reader, and the most
    /// one read from disk takes.
    pub cache_bytes: usize,
    /// Cursors are saved at most this often (and at close).
    pub checkpoint_every: Duration,
    /// Told how long each sync took.
    pub on_sync: Option<SyncObserver>,
    /// The readers, by name (a route's target outputs); at least one.
    pub readers: Vec<String>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("fsync", &self.fsync)
            .field("segment_bytes", &self.segment_bytes)
            .field("cache_bytes", &self.cache_bytes)
            .field("checkpoint_every", &self.checkpoint_every)
            .field("readers", &self.readers)
            .finish_non_exhaustive()
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            fsync: Fsync::Batch(Duration::from_millis(10)),
            segment_bytes: 64 << 20,
            cache_bytes: 4 << 20,
            checkpoint_every: Duration::from_millis(100),
            on_sync: None,
            readers: vec![ONLY.to_owned()],
        }
    }
}

/// What opening a durable queue found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Opened {
    /// The log's verification.
    pub recovery: Recovery,
    /// Records waiting to be delivered.
    pub backlog: u64,
    /// Records that had been handed to a reader before without its
    /// acknowledgement (as of the last saved cursors), summed over the
    /// readers: they will be sent to it again.
    pub redeliver: u64,
    /// The cursors file was missing or damaged, so the whole log counts as
    /// not yet delivered.
    pub cursors_lost: bool,
}

/// Why a durable queue failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("durable queue: {0}")]
    Io(#[from] io::Error),
    /// The queue was closed.
    #[error("durable queue closed")]
    Closed,
}

/// A point-in-time view of a durable queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records appended and not yet acknowledged (queued + in flight).
    pub held: u64,
    /// Their bytes as encoded.
    pub held_bytes: u64,
    /// Records handed to the reader furthest ahead, not yet released.
    pub in_flight: u64,
    /// Bytes of the log on disk.
    pub disk_bytes: u64,
    /// Sequence numbers: next to assign, all below are written to the
    /// file, all below are durable, first not acknowledged.
    pub next: u64,
    /// See `next`.
    pub written: u64,
    /// See `next`.
    pub durable: u64,
    /// See `next`.
    pub head: u64,
    /// Records found lost to damage while reading.
    pub missing: u64,
    /// Damaged spans passed over while reading (each logged).
    pub damaged: u64,
    /// The last write or sync failed (e.g. the disk is full); it is
    /// retried.
    pub failing: bool,
    /// Commits done (each one write, and one `fdatasync` unless `os`), and
    /// the records they covered: their ratio is the group size.
    pub commits: u64,
    /// See `commits`.
    pub committed: u64,
    /// Time spent in `fdatasync`, in total.
    pub sync_time: Duration,
}

#[derive(Debug)]
struct State {
    /// The writer waits on its condition variable: an append must wake it
    /// (otherwise it looks at the pending buffer by itself, and a wake-up
    /// would be a wasted system call per append).
    writer_idle: bool,
    /// The writer waits for its next `batch` commit: an append that takes
    /// the pending buffer past [`PENDING_HIGH`] wakes it to write early.
    writer_napping: bool,
    /// Encoded records not yet written, and their sequence numbers.
    pending: Vec<u8>,
    /// The buffer the last commit wrote, emptied, to take the next
    /// appends: commits alternate between two buffers instead of growing a
    /// new one each time (a stream of freshly grown multi-megabyte
    /// buffers is memory the allocator keeps once freed).
    spare: Vec<u8>,
    pending_from: u64,
    next: u64,
    written: u64,
    durable: u64,
    /// The newest records, oldest first, for the readers: `(seq, message,
    /// encoded length)`; contiguous, ending at `next` when not empty.
    cache: VecDeque<(u64, Message, usize)>,
    cache_bytes: usize,
    readers: Vec<Reader>,
    head: u64,
    held_bytes: u64,
    /// The bytes of what is held, by range of sequence numbers.
    ledger: Ledger,
    /// The cursors as last saved.
    saved: Saved,
    last_checkpoint: Option<Instant>,
    missing: u64,
    damaged: u64,
    closed: bool,
    commits: u64,
    committed: u64,
    sync_time: Duration,
}

/// One reader's progress.
#[derive(Debug)]
struct Reader {
    name: String,
    /// The next sequence number it takes.
    read: u64,
    /// Where it continues on disk.
    read_pos: Position,
    /// The end of each batch handed to it and not acknowledged, in order.
    in_flight: VecDeque<u64>,
    /// Every record below it was acknowledged by this reader.
    acked: u64,
    /// Wakes it when records arrive.
    wake: Arc<Notify>,
}

impl Reader {
    fn new(name: String, acked: u64, read: u64) -> Self {
        Self {
            name,
            read,
            read_pos: Position::at(read),
            in_flight: VecDeque::new(),
            acked,
            wake: Arc::new(Notify::new()),
        }
    }
}

/// Records released from the head of a queue (every reader acknowledged
/// them): sequence numbers `from..to`, `bytes` as encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    /// The first released sequence number.
    pub from: u64,
    /// The one after the last.
    pub to: u64,
    /// Their bytes (released in steps of the [`Ledger`]'s granularity, so
    /// a part of them may come with a later release).
    pub bytes: u64,
}

impl Released {
    /// How many sequence numbers were released (damaged ones included).
    pub fn records(&self) -> u64 {
        self.to - self.from
    }
}

/// The held records by range of sequence numbers: their bytes, so a
/// release knows how many it frees, and their publish times, for age
/// retention. Bounded: past `LEDGER_MAX` entries, neighbours are merged,
/// so bytes are released (and ages expire) in coarser steps.
#[derive(Debug, Default)]
struct Ledger {
    /// Consecutive ranges, oldest first.
    entries: VecDeque<Span>,
}

/// One range of a [`Ledger`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    /// The sequence number after its last.
    end: u64,
    bytes: u64,
    /// The oldest and newest publish time in it, in ms since the epoch.
    oldest: u64,
    newest: u64,
}

const LEDGER_MAX: usize = 4096;

/// `time` in ms since the Unix epoch (0 before it).
fn millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Ledger {
    fn push(&mut self, span: Span) {
        if self.entries.len() >= LEDGER_MAX {
            // Halve: merge each pair, oldest first.
            let old = std::mem::take(&mut self.entries);
            let mut it = old.into_iter();
            while let Some(a) = it.next() {
                match it.next() {
                    Some(b) => self.entries.push_back(Span {
                        end: b.end,
                        bytes: a.bytes + b.bytes,
                        oldest: a.oldest.min(b.oldest),
                        newest: a.newest.max(b.newest),
                    }),
                    None => self.entries.push_back(a),
                }
            }
        }
        match self.entries.back_mut() {
            Some(last) if last.end == span.end => {
                last.bytes += span.bytes;
                last.oldest = last.oldest.min(span.oldest);
                last.newest = last.newest.max(span.newest);
            }
            _ => self.entries.push_back(span),
        }
    }

    /// Bytes of the ranges that end at or below `head`, removed.
    fn release(&mut self, head: u64) -> u64 {
        let mut bytes = 0;
        while self.entries.front().is_some_and(|e| e.end <= head) {
            bytes += self.entries.pop_front().expect("front exists").bytes;
        }
        bytes
    }

    /// The end of the longest run of ranges from the oldest whose newest
    /// record was published before `cutoff` (ms).
    fn expired(&self, cutoff: u64) -> Option<u64> {
        self.entries
            .iter()
            .take_while(|e| e.newest < cutoff)
            .last()
            .map(|e| e.end)
    }
}

/// The most a kept commit buffer holds on to once emptied.
const SPARE_MAX: usize = 8 << 20;

/// Past this many bytes waiting to be written, the writer writes them
/// without waiting for its next `batch` commit, and [`Queue::keep_up`]
/// holds appenders back until it has: what a queue holds in memory stays
/// bounded however far its appenders run ahead of the disk.
pub(crate) const PENDING_HIGH: usize = 8 << 20;

/// How often [`Queue::keep_up`] looks again by itself (it is woken on
/// every write, failure and close; this is a safety net).
const KEEP_UP_POLL: Duration = Duration::from_millis(250);

#[derive(Debug)]
struct Shared {
    options: Options,
    /// The sync policy now (a reload may change it).
    fsync: Mutex<Fsync>,
    /// The last write or sync failed: read without a lock on every
    /// admission to a durable route.
    failing: AtomicBool,
    storage: Arc<dyn Storage>,
    state: Mutex<State>,
    log: Mutex<Log>,
    /// The log's size, kept apart so [`Queue::stats`] never waits for a
    /// write in progress.
    disk_bytes: AtomicU64,
    /// Wakes the writer.
    work: Condvar,
    /// Every sequence number below it is durable.
    durable: watch::Sender<u64>,
    /// Every sequence number below it is written (also sent, unchanged,
    /// when a write fails or the queue closes, for [`Queue::keep_up`]).
    written: watch::Sender<u64>,
}

/// A durable queue. Dropping it without [`Queue::close`] is a crash as far
/// as the files are concerned: what was durable stays.
#[derive(Debug)]
pub struct Queue {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// The name of the one reader of a queue that was not given any.
pub const ONLY: &str = "only";

/// A reader's marks in the cursors file: what it was handed, and what it
/// acknowledged. Names of routes' outputs cannot hold a colon.
fn sent_key(reader: &str) -> String {
    format!("sent:{reader}")
}

fn acked_key(reader: &str) -> String {
    format!("acked:{reader}")
}

/// The one reader's mark in files written before readers had names.
const LEGACY_SENT: &str = "sent";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Queue {
    /// Opens the queue in `storage` and starts its writer thread.
    ///
    /// # Errors
    /// The log cannot be read or repaired, or the thread cannot start.
    pub fn open(storage: Arc<dyn Storage>, options: Options) -> Result<(Self, Opened), Error> {
        let (queue, opened) = Self::open_unstarted(storage, options)?;
        let shared = Arc::clone(&queue.shared);
        *lock(&queue.writer) = Some(
            std::thread::Builder::new()
                .name("switchyard-queue".into())
                .spawn(move || shared.run())?,
        );
        Ok((queue, opened))
    }

    /// Opens the queue without a writer thread: commits happen only when
    /// [`Queue::commit`] is called. For tests that choose when.
    ///
    /// # Errors
    /// As [`Queue::open`].
    pub fn open_unstarted(
        storage: Arc<dyn Storage>,
        options: Options,
    ) -> Result<(Self, Opened), Error> {
        let raw = storage.read_all(cursors::FILE)?;
        let saved = raw.as_deref().and_then(Saved::decode);
        let cursors_lost = raw.is_some() && saved.is_none();
        let saved = saved.unwrap_or_default();
        let (log, recovery) = Log::open(
            Arc::clone(&storage),
            log::Options {
                segment_bytes: options.segment_bytes,
            },
            saved.head,
            [saved.head, saved.head],
        )?;
        // The head cannot be past the log's end (a cursor saved after
        // records a power cut then lost) nor before its start.
        let next = log.next_seq();
        let head = saved.head.clamp(log.first_seq(), next);
        let [(held, held_bytes), _] = recovery.from_marks;
        // Each reader goes on from what it acknowledged; a reader the file
        // does not name starts at the head.
        let legacy_sent = saved.targets.get(LEGACY_SENT).copied();
        let mut redeliver = 0;
        let mut readers: Vec<Reader> = Vec::with_capacity(options.readers.len().max(1));
        let names = if options.readers.is_empty() {
            vec![ONLY.to_owned()]
        } else {
            options.readers.clone()
        };
        for name in names {
            let acked = saved
                .targets
                .get(&acked_key(&name))
                .copied()
                .unwrap_or(head)
                .clamp(head, next);
            let sent = saved
                .targets
                .get(&sent_key(&name))
                .copied()
                .or(legacy_sent)
                .unwrap_or(acked)
                .clamp(acked, next);
            redeliver += sent - acked;
            readers.push(Reader::new(name, acked, acked));
        }
        let head = readers.iter().map(|r| r.acked).min().unwrap_or(head);
        let opened = Opened {
            backlog: held,
            redeliver,
            recovery,
            cursors_lost: cursors_lost || (raw.is_none() && held > 0),
        };
        // The bytes held, by segment: the head's segment holds what the
        // others do not.
        let mut ledger = Ledger::default();
        let spans = log.spans();
        let later: u64 = spans
            .iter()
            .skip_while(|(base, _)| *base <= head)
            .map(|(_, len)| len)
            .sum();
        let mut ends = spans
            .iter()
            .map(|(base, _)| *base)
            .skip(1)
            .chain(std::iter::once(next));
        // Each segment's records were published from its first record's
        // time to the next one's (or now, for the last).
        let firsts: Vec<u64> = spans
            .iter()
            .map(|(base, _)| first_time(&log, *base).unwrap_or_else(|| millis(SystemTime::now())))
            .collect();
        for (i, (base, len)) in spans.iter().enumerate() {
            let end = ends.next().unwrap_or(next);
            if end <= head {
                continue;
            }
            let bytes = if *base <= head {
                held_bytes.saturating_sub(later)
            } else {
                *len
            };
            let newest = firsts
                .get(i + 1)
                .copied()
                .unwrap_or_else(|| millis(SystemTime::now()));
            ledger.push(Span {
                end,
                bytes,
                oldest: firsts[i],
                newest: newest.max(firsts[i]),
            });
        }
        let state = State {
            writer_idle: false,
            writer_napping: false,
            pending: Vec::new(),
            spare: Vec::new(),
            pending_from: next,
            next,
            written: next,
            durable: next,
            cache: VecDeque::new(),
            cache_bytes: 0,
            head,
            held_bytes,
            ledger,
            saved: saved_of(head, &readers),
            readers,
            last_checkpoint: None,
            missing: 0,
            damaged: 0,
            closed: false,
            commits: 0,
            committed: 0,
            sync_time: Duration::ZERO,
        };
        let shared = Arc::new(Shared {
            fsync: Mutex::new(options.fsync),
            failing: AtomicBool::new(false),
            options,
            storage,
            state: Mutex::new(state),
            disk_bytes: AtomicU64::new(log.bytes()),
            log: Mutex::new(log),
            work: Condvar::new(),
            durable: watch::Sender::new(next),
            written: watch::Sender::new(next),
        });
        Ok((
            Self {
                shared,
                writer: Mutex::new(None),
            },
            opened,
        ))
    }

    /// Appends `messages` in order and returns the sequence number after
    /// the last one: wait for [`Queue::durable`] of it. Never waits for
    /// the disk; bounding what is held is the caller's part.
    ///
    /// # Errors
    /// [`Error::Closed`] after [`Queue::close`].
    pub fn append<'a>(
        &self,
        messages: impl IntoIterator<Item = &'a Message>,
    ) -> Result<u64, Error> {
        self.append_counted(messages).map(|(end, _)| end)
    }

    /// As [`Queue::append`], also returning the bytes appended (as
    /// encoded: the unit of [`Stats::held_bytes`] and [`Released::bytes`]).
    ///
    /// # Errors
    /// As [`Queue::append`].
    pub fn append_counted<'a>(
        &self,
        messages: impl IntoIterator<Item = &'a Message>,
    ) -> Result<(u64, u64), Error> {
        let mut s = lock(&self.shared.state);
        if s.closed {
            return Err(Error::Closed);
        }
        let start = s.next;
        // The reader furthest ahead: the cache serves it first.
        let lead = s.readers.iter().map(|r| r.read).max().unwrap_or(start);
        let mut bytes = 0u64;
        let (mut oldest, mut newest) = (None::<u64>, 0u64);
        for message in messages {
            let seq = s.next;
            let t = millis(message.publish_time);
            oldest = Some(oldest.map_or(t, |o| o.min(t)));
            newest = newest.max(t);
            let len = record::encode(seq, message, &mut s.pending);
            s.next += 1;
            bytes += len as u64;
            // Cache it while the cache is one run, making room by dropping
            // what the lead reader has passed (a reader behind reads it
            // from disk). An empty cache starts a new run here even when
            // the lead is still behind (reading from disk what precedes
            // it): under steady load a reader always has some records
            // still being written, and waiting for it to be exactly caught
            // up kept it reading from disk for good.
            let contiguous = s.cache.back().is_none_or(|(last, ..)| last + 1 == seq);
            if contiguous {
                let limit = self.shared.options.cache_bytes;
                while s.cache_bytes + len > limit
                    && s.cache.front().is_some_and(|(q, ..)| *q < lead)
                {
                    let (_, _, old) = s.cache.pop_front().expect("front exists");
                    s.cache_bytes -= old;
                }
                if s.cache_bytes + len <= limit {
                    let mut m = message.clone();
                    m.request = None;
                    // The disk holds it now; the receipt is the input's
                    // to settle once the sync is done.
                    m.receipt = None;
                    s.cache.push_back((seq, m, len));
                    s.cache_bytes += len;
                }
            }
        }
        let end = s.next;
        s.held_bytes += bytes;
        if end > start {
            s.ledger.push(Span {
                end,
                bytes,
                oldest: oldest.unwrap_or(0),
                newest,
            });
        }
        let wake = std::mem::take(&mut s.writer_idle)
            || (s.pending.len() > PENDING_HIGH && std::mem::take(&mut s.writer_napping));
        // Readers that had taken everything learn there is more.
        let waiting: SmallVec<[Arc<Notify>; 2]> = s
            .readers
            .iter()
            .filter(|r| r.read == start)
            .map(|r| Arc::clone(&r.wake))
            .collect();
        drop(s);
        if wake {
            self.shared.work.notify_one();
        }
        for w in waiting {
            w.notify_one();
        }
        Ok((end, bytes))
    }

    /// Waits until every record below `seq` is durable under the policy.
    ///
    /// # Errors
    /// [`Error::Closed`] when the queue closed first.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn durable(&self, seq: u64) -> Result<(), Error> {
        let mut rx = self.shared.durable.subscribe();
        rx.wait_for(|&d| d >= seq)
            .await
            .map_err(|_| Error::Closed)?;
        Ok(())
    }

    /// Waits while more than [`PENDING_HIGH`] bytes wait to be written,
    /// until the writer has taken them: an appender that does not wait for
    /// [`Queue::durable`] (an input with no acknowledgement) calls it after
    /// appending, so it runs at the disk's pace and the queue's memory
    /// stays bounded. Returns at once while the disk is failing: appends
    /// are bounded by the caller then (a failing queue takes none).
    ///
    /// # Errors
    /// [`Error::Closed`] when the queue closed.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn keep_up(&self) -> Result<(), Error> {
        let mut rx = self.shared.written.subscribe();
        loop {
            let target = {
                let s = lock(&self.shared.state);
                if s.closed {
                    return Err(Error::Closed);
                }
                if s.pending.len() <= PENDING_HIGH || self.failing() {
                    return Ok(());
                }
                s.next
            };
            if *rx.borrow_and_update() >= target {
                continue;
            }
            // Woken by a write, a failure or the close; looks again either
            // way.
            let _ = tokio::time::timeout(KEEP_UP_POLL, rx.changed()).await;
        }
    }

    /// Whether every record below `seq` is durable now.
    pub fn is_durable(&self, seq: u64) -> bool {
        *self.shared.durable.borrow() >= seq
    }

    /// Writes and syncs what is pending and saves the cursors if due, once,
    /// as the writer thread does.
    ///
    /// # Errors
    /// The write or sync failed; the records stay pending.
    pub fn commit(&self) -> Result<(), Error> {
        self.shared.commit()?;
        self.shared.checkpoint(false)
    }

    /// Moves up to `max` records (about `max_bytes`), oldest first, from
    /// `reader`'s position into `out`; they are in flight for it until its
    /// [`Queue::ack`]. Returns how many; 0 when nothing is readable now
    /// (see [`Queue::readable`]). Reads from disk when the cache does not
    /// hold them: call it where blocking on a read is acceptable.
    ///
    /// # Errors
    /// A read failed.
    ///
    /// # Panics
    /// If `reader` is not an index into [`Options::readers`].
    pub fn pop(
        &self,
        reader: usize,
        max: usize,
        max_bytes: usize,
        out: &mut Vec<Record>,
    ) -> Result<usize, Error> {
        match self.pop_cached(reader, max, max_bytes, out) {
            Some(n) => Ok(n),
            None => Ok(self.pop_from_disk(reader, max, max_bytes, out)?.0),
        }
    }

    /// As [`Queue::pop`] without touching the disk: `None` when the next
    /// records must be read from it.
    pub fn pop_cached(
        &self,
        reader: usize,
        max: usize,
        max_bytes: usize,
        out: &mut Vec<Record>,
    ) -> Option<usize> {
        let shared = &*self.shared;
        let mut guard = lock(&shared.state);
        let s = &mut *guard;
        // Drop cache entries every reader has passed.
        let slowest = s.readers.iter().map(|r| r.read).min().unwrap_or(s.next);
        while s.cache.front().is_some_and(|(seq, ..)| *seq < slowest) {
            let (_, _, len) = s.cache.pop_front().expect("front exists");
            s.cache_bytes -= len;
        }
        let from = s.readers[reader].read;
        if let Some(front) = s.cache.front().map(|(seq, ..)| *seq)
            && front <= from
            && from < s.next
            && s.cache.back().is_some_and(|(seq, ..)| *seq >= from)
        {
            // Another reader still needs what this one takes: copy it
            // (cheap: the payload is shared); else move it out.
            let others = s
                .readers
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != reader)
                .map(|(_, r)| r.read)
                .min()
                .unwrap_or(u64::MAX);
            let mut bytes = 0u64;
            let mut n = 0;
            let mut seq = from;
            while n < max.max(1) && (bytes as usize) < max_bytes.max(1) {
                let Some(first) = s.cache.front().map(|(q, ..)| *q) else {
                    break;
                };
                let k = (seq - first) as usize;
                if k >= s.cache.len() {
                    break;
                }
                let message = if k == 0 && others > seq {
                    let (_, message, len) = s.cache.pop_front().expect("front exists");
                    s.cache_bytes -= len;
                    bytes += len as u64;
                    message
                } else {
                    let (_, message, len) = &s.cache[k];
                    bytes += *len as u64;
                    message.clone()
                };
                out.push(Record { seq, message });
                n += 1;
                seq += 1;
            }
            let r = &mut s.readers[reader];
            r.read = seq;
            r.read_pos = Position::at(seq);
            r.in_flight.push_back(seq);
            return Some(n);
        }
        // From disk: only what is written.
        if from >= s.written {
            return Some(0);
        }
        None
    }

    /// As [`Queue::pop`], from disk only (what [`Queue::pop_cached`] could
    /// not hand out), with what the read passed over: damaged spans and
    /// the records lost in them.
    ///
    /// # Errors
    /// A read failed.
    pub fn pop_from_disk(
        &self,
        reader: usize,
        max: usize,
        max_bytes: usize,
        out: &mut Vec<Record>,
    ) -> Result<(usize, ReadReport), Error> {
        let shared = &*self.shared;
        let s = lock(&shared.state);
        let r = &s.readers[reader];
        let from = r.read;
        if from >= s.written {
            return Ok((0, ReadReport::default()));
        }
        let mut pos = r.read_pos;
        // Not past what is written: the tail may hold a record being
        // written (a reader never sees a partial one).
        let written = s.written;
        drop(s);
        let extents = lock(&shared.log).extents(from);
        let mut buf = bytes::Bytes::new();
        let before = out.len();
        let report: ReadReport = log::read(
            &extents,
            &mut pos,
            max.max(1),
            max_bytes.min(shared.options.cache_bytes).max(1),
            &mut buf,
            out,
        )?;
        debug_assert!(
            pos.seq <= written.max(from),
            "reads stop at what is written"
        );
        let n = out.len() - before;
        // Only this reader's task moves its position. Sequence numbers
        // passed over for damage are in flight with the batch, so its ack
        // covers them too.
        let mut s = lock(&shared.state);
        s.missing += report.missing;
        s.damaged += report.damaged;
        let r = &mut s.readers[reader];
        if pos.seq > from {
            r.read = pos.seq;
            r.read_pos = pos;
            r.in_flight.push_back(pos.seq);
        }
        Ok((n, report))
    }

    /// Resolves when [`Queue::pop`] may have records to hand `reader`.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn readable(&self, reader: usize) {
        let wake = Arc::clone(&lock(&self.shared.state).readers[reader].wake);
        loop {
            let notified = wake.notified();
            {
                let s = lock(&self.shared.state);
                let read = s.readers[reader].read;
                if read < s.written
                    || (read < s.next && s.cache.front().is_some_and(|(q, ..)| *q <= read))
                    || s.closed
                {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Acknowledges `reader`'s oldest popped batch: its output took it (or
    /// it is dead-lettered). Returns what that released: the records every
    /// reader has now acknowledged.
    pub fn ack(&self, reader: usize) -> Released {
        let mut s = lock(&self.shared.state);
        let r = &mut s.readers[reader];
        if let Some(end) = r.in_flight.pop_front() {
            r.acked = end;
        }
        // The writer saves the cursors on its own schedule
        // (`checkpoint_every`): no wake-up per batch.
        s.advance_head()
    }

    /// Replaces the readers (a route's targets changed): those whose name
    /// stays keep their positions, new ones start at the head, and what
    /// only removed readers still held is released. Call it while no
    /// reader has a batch in flight. Returns what it released.
    pub fn set_readers(&self, names: &[String]) -> Released {
        let mut s = lock(&self.shared.state);
        let head = s.head;
        let mut old = std::mem::take(&mut s.readers);
        s.readers = names
            .iter()
            .map(|name| match old.iter().position(|r| &r.name == name) {
                Some(i) => {
                    let mut r = old.swap_remove(i);
                    // Batches in flight are given up: they are read again.
                    r.in_flight.clear();
                    r.read = r.acked;
                    r.read_pos = Position::at(r.acked);
                    r
                }
                None => Reader::new(name.clone(), head, head),
            })
            .collect();
        let released = s.advance_head();
        for r in &s.readers {
            r.wake.notify_one();
        }
        released
    }

    /// Now.
    pub fn stats(&self) -> Stats {
        let s = lock(&self.shared.state);
        let disk_bytes = self.shared.disk_bytes.load(Ordering::Relaxed);
        let lead = s.readers.iter().map(|r| r.read).max().unwrap_or(s.head);
        Stats {
            held: s.next - s.head,
            held_bytes: s.held_bytes,
            in_flight: lead - s.head,
            disk_bytes,
            next: s.next,
            written: s.written,
            durable: *self.shared.durable.borrow(),
            head: s.head,
            missing: s.missing,
            damaged: s.damaged,
            failing: self.shared.failing.load(Ordering::Relaxed),
            commits: s.commits,
            committed: s.committed,
            sync_time: s.sync_time,
        }
    }

    /// Drops the oldest records, up to sequence number `to`, that no
    /// reader has in flight (a batch being sent keeps its records): every
    /// reader behind moves past them. Returns what that released; the
    /// caller counts them as dropped.
    pub fn trim(&self, to: u64) -> Released {
        let mut s = lock(&self.shared.state);
        let mut bound = to.min(s.next);
        for r in &s.readers {
            if !r.in_flight.is_empty() {
                bound = bound.min(r.acked);
            }
        }
        if bound <= s.head {
            return Released {
                from: s.head,
                to: s.head,
                bytes: 0,
            };
        }
        for r in &mut s.readers {
            if r.acked < bound {
                r.acked = bound;
            }
            if r.read < bound {
                r.read = bound;
                r.read_pos = Position::at(bound);
            }
        }
        s.advance_head()
    }

    /// Gives up `reader`'s batches in flight: they are read again, from
    /// its acknowledged position (so a trim may now drop them).
    pub fn give_back(&self, reader: usize) {
        let mut s = lock(&self.shared.state);
        let r = &mut s.readers[reader];
        r.in_flight.clear();
        r.read = r.acked;
        r.read_pos = Position::at(r.acked);
    }

    /// The sequence number up to which records published before `cutoff`
    /// may be dropped (in the ledger's steps), if any.
    pub fn expired_to(&self, cutoff: SystemTime) -> Option<u64> {
        lock(&self.shared.state).ledger.expired(millis(cutoff))
    }

    /// [`Queue::trim`] of the oldest range the ledger holds: what a
    /// `drop_oldest` route gives up to make room.
    pub fn trim_oldest(&self) -> Released {
        let to = {
            let s = lock(&self.shared.state);
            s.ledger.entries.front().map_or(s.head, |e| e.end)
        };
        self.trim(to)
    }

    /// When the oldest record held was published (in the ledger's steps).
    pub fn oldest(&self) -> Option<SystemTime> {
        let s = lock(&self.shared.state);
        if s.head == s.next {
            return None;
        }
        s.ledger
            .entries
            .front()
            .map(|e| SystemTime::UNIX_EPOCH + Duration::from_millis(e.oldest))
    }

    /// The next sequence number `reader` takes.
    pub fn read_position(&self, reader: usize) -> u64 {
        lock(&self.shared.state).readers[reader].read
    }

    /// Whether `reader` is (one of) the slowest: the head is its
    /// acknowledged position.
    pub fn holds_head(&self, reader: usize) -> bool {
        let s = lock(&self.shared.state);
        s.readers[reader].acked == s.head
    }

    /// Each reader's name, next sequence number to take, and first not
    /// acknowledged.
    pub fn readers(&self) -> Vec<(String, u64, u64)> {
        lock(&self.shared.state)
            .readers
            .iter()
            .map(|r| (r.name.clone(), r.read, r.acked))
            .collect()
    }

    /// The sequence number the next append gets: waiting for
    /// [`Queue::durable`] of it covers every append made so far.
    pub fn appended(&self) -> u64 {
        lock(&self.shared.state).next
    }

    /// Whether the last write or sync failed (a full disk, say); appends
    /// are still taken, so a caller bounds them.
    pub fn failing(&self) -> bool {
        self.shared.failing.load(Ordering::Relaxed)
    }

    /// Changes the sync policy from the next commit on.
    pub fn set_fsync(&self, fsync: Fsync) {
        *lock(&self.shared.fsync) = fsync;
    }

    /// Commits what is pending, saves the cursors and stops the writer.
    /// Appends fail from then on; calling it again does nothing more.
    ///
    /// # Errors
    /// The last commit failed: what it held is not durable.
    pub fn close(&self) -> Result<(), Error> {
        lock(&self.shared.state).closed = true;
        self.shared.work.notify_all();
        self.shared.written.send_modify(|_| {});
        if let Some(writer) = lock(&self.writer).take() {
            let _ = writer.join();
        }
        self.shared.commit()?;
        self.shared.checkpoint(true)?;
        self.shared.wake_readers();
        Ok(())
    }
}

/// The publish time (ms) of the first intact record of the segment that
/// starts at `base`, if it has one.
fn first_time(log: &Log, base: u64) -> Option<u64> {
    let extents = log.extents(base);
    let mut out = Vec::with_capacity(1);
    let mut pos = Position::at(base);
    log::read(
        &extents[..1.min(extents.len())],
        &mut pos,
        1,
        1,
        &mut bytes::Bytes::new(),
        &mut out,
    )
    .ok()?;
    out.first().map(|r| millis(r.message.publish_time))
}

/// The cursors to save for `readers` and `head`.
fn saved_of(head: u64, readers: &[Reader]) -> Saved {
    let mut targets = std::collections::BTreeMap::new();
    for r in readers {
        targets.insert(sent_key(&r.name), r.read);
        targets.insert(acked_key(&r.name), r.acked);
    }
    Saved { head, targets }
}

impl State {
    /// Moves the head to the slowest reader's acknowledged position.
    fn advance_head(&mut self) -> Released {
        let from = self.head;
        let to = self
            .readers
            .iter()
            .map(|r| r.acked)
            .min()
            .unwrap_or(from)
            .max(from);
        if to == from {
            return Released { from, to, bytes: 0 };
        }
        self.head = to;
        let bytes = self.ledger.release(to).min(self.held_bytes);
        self.held_bytes -= bytes;
        Released { from, to, bytes }
    }
}

impl Shared {
    /// Tells every reader to look again.
    fn wake_readers(&self) {
        let wakes: SmallVec<[Arc<Notify>; 2]> = lock(&self.state)
            .readers
            .iter()
            .map(|r| Arc::clone(&r.wake))
            .collect();
        for w in wakes {
            w.notify_one();
        }
    }

    /// The writer thread: commit whenever there is work, at most once per
    /// interval under `batch`.
    fn run(&self) {
        let mut backoff = Duration::from_millis(1);
        loop {
            {
                let mut s = lock(&self.state);
                while s.pending.is_empty()
                    && s.written == s.durable
                    && !s.closed
                    && !self.checkpoint_due(&s)
                {
                    let wait = self.options.checkpoint_every;
                    s.writer_idle = true;
                    s = self
                        .work
                        .wait_timeout(s, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    s.writer_idle = false;
                }
                if s.closed {
                    return;
                }
            }
            let started = Instant::now();
            match self.commit().and_then(|()| self.checkpoint(false)) {
                Ok(()) => backoff = Duration::from_millis(1),
                Err(e) => {
                    tracing::warn!(error = %e, "durable queue: commit failed; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            }
            if let Fsync::Batch(interval) = *lock(&self.fsync) {
                self.nap(started + interval);
            }
        }
    }

    /// Waits for the next `batch` commit, due `until`, writing (without a
    /// sync) whenever more than [`PENDING_HIGH`] bytes are pending.
    fn nap(&self, until: Instant) {
        let mut s = lock(&self.state);
        loop {
            if s.closed {
                return;
            }
            if s.pending.len() > PENDING_HIGH {
                drop(s);
                if self.write_pending().is_err() {
                    // The commit that follows fails too, and backs off.
                    return;
                }
                s = lock(&self.state);
                continue;
            }
            let Some(rest) = until.checked_duration_since(Instant::now()) else {
                return;
            };
            s.writer_napping = true;
            s = self
                .work
                .wait_timeout(s, rest)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            s.writer_napping = false;
        }
    }

    fn checkpoint_due(&self, s: &State) -> bool {
        let changed = s.saved.head != s.head
            || s.readers.iter().any(|r| {
                s.saved.targets.get(&sent_key(&r.name)) != Some(&r.read)
                    || s.saved.targets.get(&acked_key(&r.name)) != Some(&r.acked)
            });
        changed
            && s.last_checkpoint
                .is_none_or(|t| t.elapsed() >= self.options.checkpoint_every)
    }

    /// Writes the pending records to the log, without a sync.
    fn write_pending(&self) -> Result<(), Error> {
        let (data, from) = {
            let mut s = lock(&self.state);
            if s.pending.is_empty() {
                return Ok(());
            }
            let spare = std::mem::take(&mut s.spare);
            let data = std::mem::replace(&mut s.pending, spare);
            let next = s.next;
            let from = std::mem::replace(&mut s.pending_from, next);
            (data, from..s.next)
        };
        let (from, end) = (from.start, from.end);
        let wrote = {
            let mut log = lock(&self.log);
            let wrote = log.write(&data, from..end);
            self.disk_bytes.store(log.bytes(), Ordering::Relaxed);
            wrote
        };
        if let Err(e) = wrote {
            // Put the records back in front of anything appended since.
            let mut s = lock(&self.state);
            let mut back = data;
            back.extend_from_slice(&s.pending);
            s.pending = back;
            s.pending_from = from;
            self.failing.store(true, Ordering::Relaxed);
            drop(s);
            self.written.send_modify(|_| {});
            return Err(e.into());
        }
        {
            let mut s = lock(&self.state);
            s.written = end;
            let mut data = data;
            data.clear();
            data.shrink_to(SPARE_MAX);
            s.spare = data;
        }
        self.written.send_replace(end);
        self.wake_readers();
        Ok(())
    }

    /// Writes the pending records and syncs what is written per the
    /// policy.
    fn commit(&self) -> Result<(), Error> {
        self.write_pending()?;
        let (from, end) = {
            let s = lock(&self.state);
            (s.durable, s.written)
        };
        if end == from {
            return Ok(());
        }
        let synced = Instant::now();
        let syncs = *lock(&self.fsync) != Fsync::Os;
        if syncs
            && let Some(tail) = lock(&self.log).tail()
            && let Err(e) = tail.sync()
        {
            self.failing.store(true, Ordering::Relaxed);
            self.written.send_modify(|_| {});
            return Err(e.into());
        }
        let took = synced.elapsed();
        if syncs && let Some(observe) = &self.options.on_sync {
            observe(took);
        }
        let mut s = lock(&self.state);
        s.sync_time += took;
        s.commits += 1;
        s.committed += end - from;
        s.durable = end;
        self.failing.store(false, Ordering::Relaxed);
        drop(s);
        self.durable.send_replace(end);
        Ok(())
    }

    /// Saves the cursors if they moved (and, unless `force`, the last save
    /// is old enough), then deletes the segments behind the head.
    fn checkpoint(&self, force: bool) -> Result<(), Error> {
        let saved = {
            let mut s = lock(&self.state);
            if !(force || self.checkpoint_due(&s)) {
                return Ok(());
            }
            s.last_checkpoint = Some(Instant::now());
            saved_of(s.head, &s.readers)
        };
        self.storage.replace(cursors::FILE, &saved.encode())?;
        let head = saved.head;
        lock(&self.state).saved = saved;
        let mut log = lock(&self.log);
        let released = log.release(head);
        self.disk_bytes.store(log.bytes(), Ordering::Relaxed);
        released?;
        Ok(())
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.work.notify_all();
        if let Some(writer) = lock(&self.writer).take() {
            let _ = writer.join();
        }
    }
}
