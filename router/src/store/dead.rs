//! The dead-letter store: what failed for good, kept on disk in
//! `<data_dir>/dead-letters/` until an operator replays or purges it, or
//! its retention drops it.
//!
//! One segmented [`Log`] holds two kinds of record (see `codec`): entries
//! (the original message and why it failed) and tombstones (the ids of
//! entries that are gone). Entries leave out of order (a purge by route, a
//! replay by ids), so instead of rewriting segments a removal appends a
//! tombstone; a segment is deleted once every entry in it is gone, which
//! also drops the tombstones it held (they only ever name earlier
//! entries). An entry's id is its record's sequence number: unique, never
//! reused, stable across restarts.
//!
//! In memory there is only the index (`index`): per live entry its place
//! on disk and the fields filters use, a few dozen bytes. Listings read the
//! front of each record (never the payload); `get` reads one record.
//!
//! Writes go through one writer thread that commits in groups: a
//! [`DeadLetters::put`] resolves once its entries are durable under the
//! store's [`Fsync`] policy, and one `fdatasync` covers every put that
//! arrived meanwhile (`always`), or within the interval (`batch`).
//! Retention runs on the same thread: past `max_entries`, past
//! `max_bytes` (of files on disk), or older than `max_age`, the oldest
//! entries are dropped and counted.
//!
//! Recovery is the log's: torn tails cut, damaged spans skipped and
//! reported, every intact record kept. A tombstone lost in a crash brings
//! its entries back (a purge is repeated, a replay may deliver twice:
//! never a loss); an entry `put` did not report durable may be gone, and
//! nothing is invented.

mod codec;
mod index;

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use prometheus::{IntCounter, IntCounterVec, IntGauge};
use serde::Serialize;
use tokio::sync::oneshot;

pub use codec::Summary;
pub use index::Filter;

use self::index::{Index, Slot};
use super::log::{Extent, Log, Options as LogOptions, Recovery};
use super::queue::{Error, Fsync};
use super::record;
use super::scan::{Cursor, Step, Window};
use super::storage::Storage;
use crate::message::Message;
use crate::metrics::Registry;

/// Why a message is in the dead-letter store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadReason {
    /// An output kept refusing it until its retries ran out.
    RetriesExhausted = 0,
    /// An output refused it as over its message size limit.
    TooLarge = 1,
    /// A plugin failed on its batch under `on_error = "dead_letter"`.
    PluginError = 2,
    /// A routing plugin's verdict was `dead_letter`.
    Verdict = 3,
}

impl DeadReason {
    /// Every reason, in code order.
    pub const ALL: [DeadReason; 4] = [
        Self::RetriesExhausted,
        Self::TooLarge,
        Self::PluginError,
        Self::Verdict,
    ];

    /// The metric label and API name.
    pub fn label(self) -> &'static str {
        match self {
            Self::RetriesExhausted => "retries_exhausted",
            Self::TooLarge => "too_large",
            Self::PluginError => "plugin_error",
            Self::Verdict => "verdict",
        }
    }

    /// The reason called `label`.
    pub fn parse(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.label() == label)
    }

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }
}

impl std::fmt::Display for DeadReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// One message that failed for good, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The original message (its `request` is not kept).
    pub message: Message,
    /// The route it failed on.
    pub route: String,
    /// The target output that refused it; `None` for route-level reasons
    /// (verdict, plugin_error).
    pub output: Option<String>,
    /// Why.
    pub reason: DeadReason,
    /// Delivery attempts made.
    pub attempts: u32,
    /// The first error (at most 1 KiB is kept).
    pub first_error: String,
    /// The last error (at most 1 KiB is kept).
    pub last_error: String,
    /// When it first failed.
    pub first_failed: SystemTime,
    /// When it last failed, and so came here; what `max_age` and the time
    /// filters look at.
    pub last_failed: SystemTime,
}

/// How the store is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Most entries kept; past it the oldest are dropped.
    pub max_entries: u64,
    /// Most bytes of files kept; past it the oldest entries are dropped.
    pub max_bytes: u64,
    /// Entries older than this (by `last_failed`) are dropped.
    pub max_age: Duration,
    /// When a put counts as durable.
    pub fsync: Fsync,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_entries: 1_000_000,
            max_bytes: 1 << 30,
            max_age: Duration::from_secs(7 * 86_400),
            fsync: Fsync::Batch(Duration::from_millis(10)),
        }
    }
}

impl Options {
    /// Segments are a sixteenth of `max_bytes` (64 KiB to 64 MiB), so
    /// deleting whole segments keeps the files near their bound.
    fn segment_bytes(&self) -> u64 {
        (self.max_bytes / 16).clamp(64 << 10, 64 << 20)
    }
}

/// The store's metric families.
#[derive(Debug, Clone)]
pub struct Metrics {
    messages: IntCounterVec,
    depth: IntGauge,
    disk_bytes: IntGauge,
    replayed: IntCounterVec,
    expired: IntCounterVec,
    purged: IntCounter,
}

impl Metrics {
    /// Registers the families in `registry`.
    pub fn register(registry: &Registry) -> Self {
        Self {
            messages: registry.counter_vec(
                "switchyard_dead_letter_messages_total",
                "Messages put into the dead-letter store, by route and reason.",
                &["route", "reason"],
            ),
            depth: registry.gauge(
                "switchyard_dead_letter_depth",
                "Entries held in the dead-letter store.",
            ),
            disk_bytes: registry.gauge(
                "switchyard_dead_letter_bytes",
                "Bytes of the dead-letter store's files.",
            ),
            replayed: registry.counter_vec(
                "switchyard_dead_letter_replayed_total",
                "Dead letters replayed, by the route they were replayed into.",
                &["route"],
            ),
            expired: registry.counter_vec(
                "switchyard_dead_letter_expired_total",
                "Dead letters dropped by retention (max_entries, max_bytes, max_age), by their reason.",
                &["reason"],
            ),
            purged: registry.counter(
                "switchyard_dead_letter_purged_total",
                "Dead letters purged through the admin API.",
            ),
        }
    }
}

/// What opening the store found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Opened {
    /// The log's verification.
    pub recovery: Recovery,
    /// Live entries.
    pub entries: u64,
    /// Records with a good CRC that did not parse (skipped).
    pub unreadable: u64,
}

/// A point-in-time view of the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Live entries.
    pub entries: u64,
    /// Bytes of their records.
    pub bytes: u64,
    /// Bytes of the files.
    pub disk_bytes: u64,
    /// The id the next entry gets (ids below it may be tombstones).
    pub next_id: u64,
}

/// Why entries leave the store through [`DeadLetters::remove`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal<'a> {
    /// Purged by an operator.
    Purged,
    /// Replayed into this route.
    Replayed(&'a str),
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// The entries, in id order.
    pub entries: Vec<Summary>,
    /// Where the next page starts (give it back as `after`); `None` at the
    /// end.
    pub next: Option<u64>,
}

/// The most ids one [`DeadLetters::remove`] should be given (one
/// tombstone's worth), so a large purge goes in steps.
pub const MAX_REMOVE: usize = codec::MAX_TOMBSTONE_IDS;

/// Entries one index scan looks at before it lets go of the lock.
const SCAN_BUDGET: usize = 16_384;

type Reply = oneshot::Sender<Result<(), (io::ErrorKind, String)>>;

enum Request {
    Put(Vec<DeadLetter>, Reply),
    Tombstone(Vec<u64>, Reply),
}

#[derive(Default)]
struct Pending {
    requests: Vec<Request>,
    closed: bool,
}

struct Inner {
    log: Log,
    index: Index,
}

struct Shared {
    options: Options,
    metrics: Metrics,
    inner: Mutex<Inner>,
    pending: Mutex<Pending>,
    work: Condvar,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The store. `Send + Sync`; share it as `Arc<DeadLetters>`.
pub struct DeadLetters {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl DeadLetters {
    /// Opens (or creates) the store in `storage`, verifying every segment
    /// and rebuilding the index, and starts its writer thread.
    ///
    /// # Errors
    /// A file cannot be listed, read or truncated, or the thread cannot be
    /// started.
    pub fn open(
        storage: Arc<dyn Storage>,
        options: Options,
        metrics: Metrics,
    ) -> Result<(Self, Opened), Error> {
        let log_options = LogOptions {
            segment_bytes: options.segment_bytes(),
        };
        let (log, recovery) = Log::open(storage, log_options, 0, [0, 0])?;
        let mut index = Index::default();
        let unreadable = rebuild(&log, &mut index)?;
        let opened = Opened {
            recovery,
            entries: index.len() as u64,
            unreadable,
        };
        metrics.depth.set(index.len() as i64);
        metrics.disk_bytes.set(log.bytes() as i64);
        let shared = Arc::new(Shared {
            options,
            metrics,
            inner: Mutex::new(Inner { log, index }),
            pending: Mutex::new(Pending::default()),
            work: Condvar::new(),
        });
        // Retention applies at once to what was found.
        shared.enforce_retention()?;
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("dead-letters".into())
                .spawn(move || shared.write_loop())?
        };
        Ok((
            Self {
                shared,
                writer: Mutex::new(Some(writer)),
            },
            opened,
        ))
    }

    /// Stores `entries`; resolves once they are durable under the store's
    /// fsync policy. Counts `switchyard_dead_letter_messages_total`.
    ///
    /// # Errors
    /// The write or sync failed, or the store is closed.
    ///
    /// # Cancel safety
    /// Dropping the future does not withdraw the entries.
    pub async fn put(&self, entries: Vec<DeadLetter>) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut counts: BTreeMap<(&str, DeadReason), u64> = BTreeMap::new();
        for e in &entries {
            *counts.entry((e.route.as_str(), e.reason)).or_default() += 1;
        }
        let counts: Vec<(String, DeadReason, u64)> = counts
            .into_iter()
            .map(|((r, why), n)| (r.to_owned(), why, n))
            .collect();
        let (tx, rx) = oneshot::channel();
        self.shared.submit(Request::Put(entries, tx))?;
        wait(rx).await?;
        for (route, reason, n) in counts {
            self.shared
                .metrics
                .messages
                .with_label_values(&[route.as_str(), reason.label()])
                .inc_by(n);
        }
        Ok(())
    }

    /// Up to `limit` entries matching `filter` with ids above `after`.
    /// Blocking (reads the front of each record from disk): call it from
    /// the blocking pool.
    ///
    /// # Errors
    /// A read failed.
    pub fn list(&self, filter: &Filter, after: Option<u64>, limit: usize) -> Result<Page, Error> {
        let limit = limit.max(1);
        let mut entries = Vec::new();
        let mut next = after;
        let mut found = Vec::new();
        let mut buf = Vec::new();
        // Scan in budgets, letting go of the lock between them, until the
        // page is full or the index ends.
        loop {
            let (cut, extents) = {
                let inner = locked(&self.shared.inner);
                let cut =
                    inner
                        .index
                        .scan(filter, next, limit - entries.len(), SCAN_BUDGET, &mut found);
                (cut, inner.log.extents(0))
            };
            for (id, slot) in found.drain(..) {
                if let Some(s) = read_summary(&extents, id, &slot, &mut buf)? {
                    entries.push(s);
                }
            }
            match cut {
                None => {
                    return Ok(Page {
                        entries,
                        next: None,
                    });
                }
                Some(c) if entries.len() >= limit => {
                    return Ok(Page {
                        entries,
                        next: Some(c),
                    });
                }
                Some(c) => next = Some(c),
            }
        }
    }

    /// The ids of up to `limit` entries matching `filter` above `after`,
    /// and where to continue (`None` at the end). In memory only; may
    /// return fewer than `limit` and a place to continue.
    pub fn ids(
        &self,
        filter: &Filter,
        after: Option<u64>,
        limit: usize,
    ) -> (Vec<u64>, Option<u64>) {
        let mut found = Vec::new();
        let cut =
            locked(&self.shared.inner)
                .index
                .scan(filter, after, limit, SCAN_BUDGET, &mut found);
        (found.into_iter().map(|(id, _)| id).collect(), cut)
    }

    /// Entry `id` whole (payload included), or `None` if there is none.
    /// Blocking: call it from the blocking pool.
    ///
    /// # Errors
    /// The read failed, or the record no longer checks out.
    pub fn get(&self, id: u64) -> Result<Option<(DeadLetter, Summary)>, Error> {
        let (slot, extents) = {
            let inner = locked(&self.shared.inner);
            let Some(slot) = inner.index.get(id) else {
                return Ok(None);
            };
            (slot, inner.log.extents(id))
        };
        let Some(extent) = extents.first() else {
            return Ok(None);
        };
        let mut buf = vec![0; slot.len as usize];
        let got = extent.file().read_at(slot.offset, &mut buf)?;
        buf.truncate(got);
        match record::frame(&buf) {
            record::Framed::Frame(f) if f.seq == id && f.len == buf.len() => {}
            _ => return Err(damaged(id)),
        }
        codec::parse_entry(&buf)
            .map(Some)
            .ok_or_else(|| damaged(id))
    }

    /// Removes the entries `ids` names (ids not in the store are passed
    /// over) and resolves once their tombstones are durable; counts them
    /// as purged or replayed. Returns how many were removed.
    ///
    /// # Errors
    /// The tombstone could not be written; the entries are gone from the
    /// index but may come back after a restart.
    pub async fn remove(&self, ids: &[u64], why: Removal<'_>) -> Result<u64, Error> {
        let removed: Vec<u64> = {
            let mut inner = locked(&self.shared.inner);
            let removed = ids
                .iter()
                .copied()
                .filter(|&id| inner.index.remove(id).is_some())
                .collect();
            self.shared.metrics.depth.set(inner.index.len() as i64);
            removed
        };
        if removed.is_empty() {
            return Ok(0);
        }
        let n = removed.len() as u64;
        match why {
            Removal::Purged => self.shared.metrics.purged.inc_by(n),
            Removal::Replayed(route) => self
                .shared
                .metrics
                .replayed
                .with_label_values(&[route])
                .inc_by(n),
        }
        let (tx, rx) = oneshot::channel();
        self.shared.submit(Request::Tombstone(removed, tx))?;
        wait(rx).await?;
        Ok(n)
    }

    /// Removes every entry matching `filter`, [`MAX_REMOVE`] at a time
    /// (each step scans a bounded part of the index, then waits for its
    /// tombstone); returns how many were removed.
    ///
    /// # Errors
    /// As [`DeadLetters::remove`]; what was removed before stays removed.
    pub async fn remove_matching(&self, filter: &Filter, why: Removal<'_>) -> Result<u64, Error> {
        let mut removed = 0;
        let mut after = None;
        loop {
            let (ids, next) = self.ids(filter, after, MAX_REMOVE);
            removed += self.remove(&ids, why).await?;
            match next {
                Some(n) => after = Some(n),
                None => return Ok(removed),
            }
        }
    }

    /// Now.
    pub fn stats(&self) -> Stats {
        let inner = locked(&self.shared.inner);
        Stats {
            entries: inner.index.len() as u64,
            bytes: inner.index.bytes(),
            disk_bytes: inner.log.bytes(),
            next_id: inner.log.next_seq(),
        }
    }

    /// Stops the writer once it has written (and synced) everything
    /// submitted. Later puts fail with [`Error::Closed`].
    ///
    /// # Errors
    /// The last sync failed.
    pub fn close(&self) -> Result<(), Error> {
        {
            let mut pending = locked(&self.shared.pending);
            pending.closed = true;
        }
        self.shared.work.notify_all();
        if let Some(writer) = locked(&self.writer).take() {
            let _ = writer.join();
        }
        let tail = locked(&self.shared.inner).log.tail();
        if let Some(tail) = tail {
            tail.sync()?;
        }
        Ok(())
    }
}

impl Drop for DeadLetters {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

fn damaged(id: u64) -> Error {
    Error::Io(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("dead letter {id}: its record no longer checks out"),
    ))
}

async fn wait(rx: oneshot::Receiver<Result<(), (io::ErrorKind, String)>>) -> Result<(), Error> {
    match rx.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err((kind, message))) => Err(Error::Io(io::Error::new(kind, message))),
        Err(_) => Err(Error::Closed),
    }
}

/// The extent holding `id`.
fn extent_of(extents: &[Extent], id: u64) -> Option<&Extent> {
    extents.iter().rev().find(|e| e.base() <= id)
}

/// The summary of entry `id`, reading only the front of its record.
fn read_summary(
    extents: &[Extent],
    id: u64,
    slot: &Slot,
    buf: &mut Vec<u8>,
) -> Result<Option<Summary>, Error> {
    let Some(extent) = extent_of(extents, id) else {
        return Ok(None);
    };
    let len = slot.len as usize;
    buf.resize(len.min(codec::SUMMARY_GUESS), 0);
    let got = extent.file().read_at(slot.offset, buf)?;
    buf.truncate(got);
    let Some(need) = codec::summary_len(buf).filter(|&n| n <= len) else {
        tracing::warn!(
            id,
            "a dead letter's record does not parse; left out of the listing"
        );
        return Ok(None);
    };
    if need > buf.len() {
        buf.resize(need, 0);
        let got = extent.file().read_at(slot.offset, buf)?;
        buf.truncate(got);
    }
    match codec::parse(buf) {
        Some(codec::Body::Entry(s)) if s.id == id => Ok(Some(*s)),
        _ => {
            tracing::warn!(
                id,
                "a dead letter's record does not parse; left out of the listing"
            );
            Ok(None)
        }
    }
}

/// Builds the index from every intact record of `log`; returns how many
/// records framed well but did not parse.
fn rebuild(log: &Log, index: &mut Index) -> io::Result<u64> {
    let mut unreadable = 0;
    let mut buf = Vec::new();
    for extent in log.extents(0) {
        let mut window = Window::new(&**extent.file(), extent.len(), std::mem::take(&mut buf));
        let mut cursor = Cursor {
            pos: 0,
            last_seq: extent.base().checked_sub(1),
        };
        loop {
            match cursor.step(&mut window)? {
                Step::Record { offset, frame } => {
                    let mut view = window.view(offset, frame.len.min(codec::SUMMARY_GUESS))?;
                    if let Some(need) = codec::summary_len(view)
                        && need > view.len()
                        && need <= frame.len
                    {
                        view = window.view(offset, need)?;
                    }
                    match codec::parse(view) {
                        Some(codec::Body::Entry(s)) => index.insert(
                            frame.seq,
                            offset,
                            frame.len as u32,
                            &s.route,
                            s.output.as_deref(),
                            s.reason,
                            s.last_failed,
                        ),
                        Some(codec::Body::Tombstone(ids)) => {
                            for id in ids {
                                index.remove(id);
                            }
                        }
                        None => unreadable += 1,
                    }
                }
                // The log reported (and cut) damage when it opened.
                Step::Damaged(_) => {}
                Step::Torn(_) | Step::End => break,
            }
        }
        buf = window.into_buf();
    }
    Ok(unreadable)
}

impl Shared {
    fn submit(&self, request: Request) -> Result<(), Error> {
        let mut pending = locked(&self.pending);
        if pending.closed {
            return Err(Error::Closed);
        }
        pending.requests.push(request);
        drop(pending);
        self.work.notify_one();
        Ok(())
    }

    /// The writer thread: takes what was submitted, writes it as one
    /// group, syncs per the policy, answers; enforces retention between
    /// groups and at least once a second.
    fn write_loop(&self) {
        let mut last_sync = Instant::now();
        let mut buf = Vec::new();
        loop {
            let (requests, closed) = {
                let mut pending = locked(&self.pending);
                if pending.requests.is_empty() && !pending.closed {
                    pending = self
                        .work
                        .wait_timeout(pending, Duration::from_secs(1))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                if let Fsync::Batch(interval) = self.options.fsync
                    && !pending.requests.is_empty()
                    && !pending.closed
                {
                    // Group commit: let the interval since the last sync
                    // fill up before taking the group.
                    let since = last_sync.elapsed();
                    if since < interval {
                        drop(pending);
                        std::thread::sleep(interval - since);
                        pending = locked(&self.pending);
                    }
                }
                (std::mem::take(&mut pending.requests), pending.closed)
            };
            if !requests.is_empty() {
                let result = self.commit(&requests, &mut buf);
                if !matches!(self.options.fsync, Fsync::Os) {
                    last_sync = Instant::now();
                }
                let answer = result.map_err(|e| (e.kind(), e.to_string()));
                for request in requests {
                    let (Request::Put(_, reply) | Request::Tombstone(_, reply)) = request;
                    let _ = reply.send(answer.clone());
                }
            }
            if let Err(e) = self.enforce_retention() {
                tracing::warn!(error = %e, "dead-letter store: retention failed; tried again");
            }
            if closed && locked(&self.pending).requests.is_empty() {
                return;
            }
        }
    }

    /// Writes `requests` as one group and syncs it per the policy.
    fn commit(&self, requests: &[Request], buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        let now = SystemTime::now();
        let tail = {
            let mut inner = locked(&self.inner);
            let first = inner.log.next_seq();
            let mut seq = first;
            // (id, offset in buf, len) of each entry written.
            let mut placed = Vec::new();
            for request in requests {
                match request {
                    Request::Put(entries, _) => {
                        for e in entries {
                            let at = buf.len();
                            let len = codec::encode_entry(seq, e, buf);
                            placed.push((seq, at, len, e));
                            seq += 1;
                        }
                    }
                    Request::Tombstone(ids, _) => {
                        for chunk in ids.chunks(codec::MAX_TOMBSTONE_IDS) {
                            codec::encode_tombstone(seq, now, chunk, buf);
                            seq += 1;
                        }
                    }
                }
            }
            inner.log.write(buf, first..seq)?;
            let tail = inner.log.tail().expect("a write leaves a tail segment");
            let start = tail.size()? - buf.len() as u64;
            for (id, at, len, e) in placed {
                inner.index.insert(
                    id,
                    start + at as u64,
                    len as u32,
                    &e.route,
                    e.output.as_deref(),
                    e.reason,
                    e.last_failed,
                );
            }
            self.metrics.depth.set(inner.index.len() as i64);
            self.metrics.disk_bytes.set(inner.log.bytes() as i64);
            tail
        };
        if !matches!(self.options.fsync, Fsync::Os) {
            tail.sync()?;
        }
        Ok(())
    }

    /// Drops the oldest entries past `max_entries`, `max_bytes` or
    /// `max_age`, writes their tombstones, and deletes segments no live
    /// entry needs.
    fn enforce_retention(&self) -> io::Result<()> {
        let o = &self.options;
        let mut inner = locked(&self.inner);
        let Inner { log, index } = &mut *inner;
        let mut expired: Vec<(u64, DeadReason)> = Vec::new();
        let oldest_kept = codec::nanos(
            SystemTime::now()
                .checked_sub(o.max_age)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        );
        while index.len() as u64 > o.max_entries
            || index.bytes() > o.max_bytes
            || index
                .first()
                .is_some_and(|(_, s)| s.last_failed < oldest_kept)
        {
            let Some((id, slot)) = index.pop_first() else {
                break;
            };
            expired.push((id, slot.reason));
        }
        // The files: drop whole front segments while over the bound.
        loop {
            let head = index.first().map_or(log.next_seq(), |(id, _)| id);
            log.release(head)?;
            if log.bytes() <= o.max_bytes {
                break;
            }
            let extents = log.extents(0);
            let Some(second) = extents.get(1) else {
                break;
            };
            let upto = second.base();
            let before = expired.len();
            while let Some((id, slot)) = index.first().filter(|(id, _)| *id < upto) {
                index.remove(id);
                expired.push((id, slot.reason));
            }
            if expired.len() == before {
                // Nothing live pins the front segment, yet it stays: stop
                // rather than spin.
                break;
            }
        }
        if !expired.is_empty() {
            let mut counts = [0u64; DeadReason::ALL.len()];
            for (_, reason) in &expired {
                counts[*reason as usize] += 1;
            }
            for reason in DeadReason::ALL {
                if counts[reason as usize] > 0 {
                    self.metrics
                        .expired
                        .with_label_values(&[reason.label()])
                        .inc_by(counts[reason as usize]);
                }
            }
            let ids: Vec<u64> = expired.iter().map(|(id, _)| *id).collect();
            let mut buf = Vec::new();
            let first = log.next_seq();
            let mut seq = first;
            for chunk in ids.chunks(codec::MAX_TOMBSTONE_IDS) {
                codec::encode_tombstone(seq, SystemTime::now(), chunk, &mut buf);
                seq += 1;
            }
            log.write(&buf, first..seq)?;
            tracing::debug!(
                expired = ids.len(),
                "dead-letter store: retention dropped the oldest entries"
            );
        }
        self.metrics.depth.set(index.len() as i64);
        self.metrics.disk_bytes.set(log.bytes() as i64);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
