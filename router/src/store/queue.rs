//! A durable queue: a [`Log`] with its cursors, a writer that commits
//! appends in groups, and an in-memory cache of the newest records so a
//! reader that keeps up never reads the disk.
//!
//! Producers [`Queue::append`] (encodes into a pending buffer, assigns
//! sequence numbers; never blocks on the disk) and then wait for
//! [`Queue::durable`]. The writer takes the whole pending buffer at once,
//! writes it, and syncs per the [`Fsync`] policy: so one `fdatasync`
//! covers every message appended while the previous one ran (group commit,
//! `always`), or within the interval (`batch`). A reader [`Queue::pop`]s
//! records in order and [`Queue::ack`]s them once delivered; the head
//! moves, the cursors are saved with the next commit, and segments behind
//! the head are deleted.
//!
//! Memory does not grow with the backlog: the cache holds at most
//! `cache_bytes` of records; past it, records are read back from disk in
//! windows of at most `cache_bytes`.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("fsync", &self.fsync)
            .field("segment_bytes", &self.segment_bytes)
            .field("cache_bytes", &self.cache_bytes)
            .field("checkpoint_every", &self.checkpoint_every)
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
    /// Of those, how many had been handed to a reader before (as of the
    /// last saved cursors): they will be sent again.
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
    /// Records handed to the reader, not yet acknowledged.
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
    /// Encoded records not yet written, and their sequence numbers.
    pending: Vec<u8>,
    pending_from: u64,
    next: u64,
    written: u64,
    durable: u64,
    /// The newest records, oldest first, for the reader: `(seq, message,
    /// encoded length)`; contiguous, ending at `next` when not empty.
    cache: VecDeque<(u64, Message, usize)>,
    cache_bytes: usize,
    /// The next sequence number the reader takes.
    read: u64,
    /// Where the reader continues on disk.
    read_pos: Position,
    /// Bytes of the records handed to the reader and not acknowledged, by
    /// batch: `(end seq, bytes)`.
    in_flight: VecDeque<(u64, u64)>,
    head: u64,
    held_bytes: u64,
    /// The mark of what the reader had been handed, as last saved.
    saved: Saved,
    last_checkpoint: Option<Instant>,
    missing: u64,
    damaged: u64,
    closed: bool,
    commits: u64,
    committed: u64,
    sync_time: Duration,
}

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
    /// Wakes the writer.
    work: Condvar,
    /// Every sequence number below it is durable.
    durable: watch::Sender<u64>,
    /// Wakes the reader.
    readable: Notify,
}

/// A durable queue. Dropping it without [`Queue::close`] is a crash as far
/// as the files are concerned: what was durable stays.
#[derive(Debug)]
pub struct Queue {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// The mark of the reader's progress kept in the cursors file.
const SENT: &str = "sent";

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
        let sent = saved.targets.get(SENT).copied().unwrap_or(saved.head);
        let (log, recovery) = Log::open(
            Arc::clone(&storage),
            log::Options {
                segment_bytes: options.segment_bytes,
            },
            saved.head,
            [saved.head, sent],
        )?;
        // The head cannot be past the log's end (a cursor saved after
        // records a power cut then lost) nor before its start.
        let next = log.next_seq();
        let head = saved.head.clamp(log.first_seq(), next);
        let [(held, held_bytes), (after_sent, _)] = recovery.from_marks;
        let opened = Opened {
            backlog: held,
            redeliver: held.saturating_sub(after_sent),
            recovery,
            cursors_lost: cursors_lost || (raw.is_none() && held > 0),
        };
        let state = State {
            writer_idle: false,
            pending: Vec::new(),
            pending_from: next,
            next,
            written: next,
            durable: next,
            cache: VecDeque::new(),
            cache_bytes: 0,
            read: head,
            read_pos: Position::at(head),
            in_flight: VecDeque::new(),
            head,
            held_bytes,
            saved: Saved {
                head,
                targets: [(SENT.to_owned(), sent.clamp(head, next))].into(),
            },
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
            log: Mutex::new(log),
            work: Condvar::new(),
            durable: watch::Sender::new(next),
            readable: Notify::new(),
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
        let mut s = lock(&self.shared.state);
        if s.closed {
            return Err(Error::Closed);
        }
        let was_empty = s.read == s.next;
        for message in messages {
            let seq = s.next;
            let len = record::encode(seq, message, &mut s.pending);
            s.next += 1;
            s.held_bytes += len as u64;
            // Cache it for the reader while the cache is contiguous with
            // what the reader will take and has room.
            let contiguous = s
                .cache
                .back()
                .map_or(s.read == seq, |(last, ..)| last + 1 == seq);
            if contiguous && s.cache_bytes + len <= self.shared.options.cache_bytes {
                let mut m = message.clone();
                m.request = None;
                s.cache.push_back((seq, m, len));
                s.cache_bytes += len;
            }
        }
        let end = s.next;
        let wake = std::mem::take(&mut s.writer_idle);
        drop(s);
        if wake {
            self.shared.work.notify_one();
        }
        if was_empty {
            self.shared.readable.notify_one();
        }
        Ok(end)
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
        self.shared.commit(true)?;
        self.shared.checkpoint(false)
    }

    /// Moves up to `max` records (about `max_bytes`), oldest first, into
    /// `out`; they are in flight until [`Queue::ack`]. Returns how many;
    /// 0 when nothing is readable now (see [`Queue::readable`]). Reads from
    /// disk when the cache does not hold them: call it where blocking on a
    /// read is acceptable.
    ///
    /// # Errors
    /// A read failed.
    pub fn pop(&self, max: usize, max_bytes: usize, out: &mut Vec<Record>) -> Result<usize, Error> {
        match self.pop_cached(max, max_bytes, out) {
            Some(n) => Ok(n),
            None => Ok(self.pop_from_disk(max, max_bytes, out)?.0),
        }
    }

    /// As [`Queue::pop`] without touching the disk: `None` when the next
    /// records must be read from it.
    pub fn pop_cached(&self, max: usize, max_bytes: usize, out: &mut Vec<Record>) -> Option<usize> {
        let shared = &*self.shared;
        let mut s = lock(&shared.state);
        // Drop cache entries the reader has passed (read from disk).
        while s.cache.front().is_some_and(|(seq, ..)| *seq < s.read) {
            let (_, _, len) = s.cache.pop_front().expect("front exists");
            s.cache_bytes -= len;
        }
        let from = s.read;
        if s.cache.front().is_some_and(|(seq, ..)| *seq == from) {
            let mut bytes = 0u64;
            let mut n = 0;
            while n < max.max(1) && (bytes as usize) < max_bytes.max(1) {
                let Some((seq, message, len)) = s.cache.pop_front() else {
                    break;
                };
                s.cache_bytes -= len;
                bytes += len as u64;
                n += 1;
                out.push(Record { seq, message });
            }
            s.read += n as u64;
            let read = s.read;
            s.read_pos = Position::at(read);
            s.in_flight.push_back((read, bytes));
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
        max: usize,
        max_bytes: usize,
        out: &mut Vec<Record>,
    ) -> Result<(usize, ReadReport), Error> {
        let shared = &*self.shared;
        let s = lock(&shared.state);
        let from = s.read;
        if from >= s.written {
            return Ok((0, ReadReport::default()));
        }
        let mut pos = s.read_pos;
        drop(s);
        let extents = lock(&shared.log).extents(from);
        let mut buf = Vec::new();
        let before = out.len();
        let report: ReadReport = log::read(
            &extents,
            &mut pos,
            max.max(1),
            max_bytes.min(shared.options.cache_bytes).max(1),
            &mut buf,
            out,
        )?;
        let n = out.len() - before;
        let bytes = report.bytes as u64;
        // One reader: nothing else moved `read` meanwhile. Sequence numbers
        // passed over for damage are in flight with the batch, so its ack
        // releases them too.
        let mut s = lock(&shared.state);
        s.missing += report.missing;
        s.damaged += report.damaged;
        if pos.seq > from {
            s.read = pos.seq;
            s.read_pos = pos;
            s.in_flight.push_back((pos.seq, bytes));
        }
        Ok((n, report))
    }

    /// Resolves when [`Queue::pop`] may have records to hand out.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn readable(&self) {
        loop {
            let notified = self.shared.readable.notified();
            {
                let s = lock(&self.shared.state);
                if s.read < s.written
                    || s.cache.front().is_some_and(|(q, ..)| *q == s.read)
                    || s.closed
                {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Acknowledges the oldest popped batch: every target took it, so its
    /// records are released.
    pub fn ack(&self) {
        let mut s = lock(&self.shared.state);
        if let Some((end, bytes)) = s.in_flight.pop_front() {
            s.head = end;
            s.held_bytes = s.held_bytes.saturating_sub(bytes);
        }
        // The writer saves the cursors on its own schedule
        // (`checkpoint_every`): no wake-up per batch.
    }

    /// Now.
    pub fn stats(&self) -> Stats {
        let s = lock(&self.shared.state);
        let disk_bytes = lock(&self.shared.log).bytes();
        Stats {
            held: s.next - s.head,
            held_bytes: s.held_bytes,
            in_flight: s.read - s.head,
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
        if let Some(writer) = lock(&self.writer).take() {
            let _ = writer.join();
        }
        self.shared.commit(true)?;
        self.shared.checkpoint(true)?;
        self.shared.readable.notify_waiters();
        Ok(())
    }
}

impl Shared {
    /// The writer thread: commit whenever there is work, at most once per
    /// interval under `batch`.
    fn run(&self) {
        let mut backoff = Duration::from_millis(1);
        loop {
            {
                let mut s = lock(&self.state);
                while s.pending.is_empty() && !s.closed && !self.checkpoint_due(&s) {
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
            match self.commit(true).and_then(|()| self.checkpoint(false)) {
                Ok(()) => backoff = Duration::from_millis(1),
                Err(e) => {
                    tracing::warn!(error = %e, "durable queue: commit failed; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            }
            if let Fsync::Batch(interval) = *lock(&self.fsync)
                && let Some(rest) = interval.checked_sub(started.elapsed())
            {
                std::thread::sleep(rest);
            }
        }
    }

    fn checkpoint_due(&self, s: &State) -> bool {
        let changed = s.saved.head != s.head || s.saved.targets.get(SENT) != Some(&s.read);
        changed
            && s.last_checkpoint
                .is_none_or(|t| t.elapsed() >= self.options.checkpoint_every)
    }

    /// Writes the pending records and syncs per the policy.
    fn commit(&self, sync: bool) -> Result<(), Error> {
        let (data, from) = {
            let mut s = lock(&self.state);
            if s.pending.is_empty() {
                return Ok(());
            }
            let data = std::mem::take(&mut s.pending);
            let next = s.next;
            let from = std::mem::replace(&mut s.pending_from, next);
            (data, from..s.next)
        };
        let (from, end) = (from.start, from.end);
        let result = {
            let mut log = lock(&self.log);
            log.write(&data, from..end).map(|()| log.tail())
        };
        let tail = match result {
            Ok(tail) => tail,
            Err(e) => {
                // Put the records back in front of anything appended since.
                let mut s = lock(&self.state);
                let mut back = data;
                back.extend_from_slice(&s.pending);
                s.pending = back;
                s.pending_from = from;
                self.failing.store(true, Ordering::Relaxed);
                return Err(e.into());
            }
        };
        {
            let mut s = lock(&self.state);
            s.written = end;
        }
        self.readable.notify_one();
        let synced = Instant::now();
        let syncs = sync && *lock(&self.fsync) != Fsync::Os;
        if syncs
            && let Some(tail) = tail
            && let Err(e) = tail.sync()
        {
            self.failing.store(true, Ordering::Relaxed);
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
            Saved {
                head: s.head,
                targets: [(SENT.to_owned(), s.read)].into(),
            }
        };
        self.storage.replace(cursors::FILE, &saved.encode())?;
        let head = saved.head;
        lock(&self.state).saved = saved;
        lock(&self.log).release(head)?;
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
