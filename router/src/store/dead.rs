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
//! Files: `codec` (the two kinds of record), `index` (the in-memory
//! index and filters), `read` (rebuilding the index at open, reading
//! summaries), `writer` (the writer thread: group commit and retention).
//!
//! Recovery is the log's: torn tails cut, damaged spans skipped and
//! reported, every intact record kept. A tombstone lost in a crash brings
//! its entries back (a purge is repeated, a replay may deliver twice:
//! never a loss); an entry `put` did not report durable may be gone, and
//! nothing is invented.

mod codec;
mod index;
mod read;
mod writer;

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use prometheus::{IntCounter, IntCounterVec, IntGauge};
use serde::Serialize;
use tokio::sync::oneshot;

pub use codec::Summary;
pub use index::Filter;

use self::index::Index;
use self::read::{read_summary, rebuild};
use self::writer::{Pending, Request};
use super::log::{Log, Options as LogOptions, Recovery};
use super::queue::{Error, Fsync};
use super::record;
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
    /// An output cannot carry it as it is (an attribute a NATS header
    /// cannot hold).
    Unencodable = 4,
    /// An output's peer answered that it will never take it (a webhook's
    /// 4xx, 501 or redirect).
    Refused = 5,
}

impl DeadReason {
    /// Every reason, in code order.
    pub const ALL: [DeadReason; 6] = [
        Self::RetriesExhausted,
        Self::TooLarge,
        Self::PluginError,
        Self::Verdict,
        Self::Unencodable,
        Self::Refused,
    ];

    /// The metric label and API name.
    pub fn label(self) -> &'static str {
        match self {
            Self::RetriesExhausted => "retries_exhausted",
            Self::TooLarge => "too_large",
            Self::PluginError => "plugin_error",
            Self::Verdict => "verdict",
            Self::Unencodable => "unencodable",
            Self::Refused => "refused",
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

#[cfg(test)]
mod tests;
