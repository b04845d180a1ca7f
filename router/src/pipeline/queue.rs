//! One route's bounded queue: bounded in messages and in bytes, with the
//! route's `when_full` policy.
//!
//! The bound covers everything the route holds: messages queued, messages
//! handed to the worker but not yet taken by the outputs ("in flight"), and
//! room reserved by producers that are admitting a message to several
//! `block` routes at once. So a route's memory is bounded at every instant,
//! and a stalled output fills exactly `capacity` messages.
//!
//! A durable route's queue keeps the same bounds and policy, but its
//! messages live in a [`store::Queue`] on disk rather than in memory: a push
//! appends, and each *lane* (one per target output, or one for all of
//! them) pops from its own cursor (from the store's cache, or from disk on
//! the blocking pool) and acknowledges its batches; a record is released
//! once every lane has acknowledged it. What a durable queue holds counts
//! against the bounds until it is released, in bytes as encoded on disk.
//! What it holds when the router stops is not dropped: it stays on disk
//! and is delivered after the next start.
//!
//! The queue is a plain data structure with async waits; it counts nothing in
//! Prometheus. It reports what happened ([`Pushed`], [`Waited`], [`Popped`])
//! and the route turns that into metrics. One mutex guards the state; it is
//! taken once per pushed *run* of messages and once per popped batch, never
//! held across an `.await`.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::metrics::DropReason;
use super::spec::{QueueSpec, WhenFull};
use crate::message::Message;
use crate::store;

/// A bounded queue of messages for one route.
#[derive(Debug)]
pub struct RouteQueue {
    state: Mutex<State>,
    /// The bounds; changed only under the state lock ([`RouteQueue::resize`]).
    capacity: AtomicUsize,
    capacity_bytes: AtomicUsize,
    when_full: WhenFull,
    /// Wakes the worker (single waiter; `notify_one` keeps a permit).
    not_empty: Notify,
    /// Wakes producers waiting for room (`block` queues only).
    room: Notify,
    /// Where a durable queue's messages are.
    store: Option<Arc<store::Queue>>,
    /// A durable queue's retention could not drop the oldest records
    /// because a lane holds them in flight, retrying: set here, and the
    /// lane gives them back at its next pause ([`RouteQueue::room_wanted`]).
    wants_room: AtomicBool,
    room_wanted: Notify,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<(Message, usize)>,
    /// A durable queue's messages not yet released (queued or in flight
    /// on some lane), which are in its store, and their bytes as encoded.
    stored: usize,
    stored_bytes: usize,
    queued_bytes: usize,
    in_flight: usize,
    in_flight_bytes: usize,
    reserved: usize,
    reserved_bytes: usize,
    /// Producers may no longer wait for room.
    intake_closed: bool,
    /// No more messages may enter; the worker exits once it has drained.
    finished: bool,
}

/// What became of a run of messages pushed without waiting.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// Messages that entered the queue.
    pub queued: usize,
    /// Their bytes.
    pub queued_bytes: usize,
    /// Incoming messages dropped because the queue was full.
    pub dropped_newest: usize,
    /// Queued messages evicted to make room (`drop_oldest`).
    pub evicted: usize,
    /// The evicted messages' bytes.
    pub evicted_bytes: usize,
    /// Messages that found the queue full (each dropped or evicted for).
    pub full_events: usize,
    /// Messages that arrived after [`RouteQueue::finish`] and were not
    /// queued; the caller counts them as dropped at shutdown.
    pub after_finish: usize,
    /// Incoming messages dropped because a durable queue's disk was full.
    pub disk_full: usize,
    /// A `drop_oldest` durable queue: the oldest records its store dropped
    /// to make room (the caller counts them as dropped, `retention`).
    pub trimmed: store::Released,
}

/// How long a producer waited for room; `None` when there was room at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waited(pub Option<Duration>);

/// Why a producer stopped waiting for room without getting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// The deadline passed first.
    #[error("queue stayed full until the deadline ({waited:?} waited)")]
    Timeout {
        /// Time spent waiting.
        waited: Duration,
    },
    /// The queue was closed for intake (shutdown).
    #[error("queue closed while waiting ({waited:?} waited)")]
    Closed {
        /// Time spent waiting.
        waited: Duration,
    },
}

/// A batch handed to the worker: it now counts as in flight until
/// [`RouteQueue::complete`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Popped {
    /// Messages appended to the caller's buffer; 0 means the queue is
    /// finished and empty.
    pub count: usize,
    /// Their bytes.
    pub bytes: usize,
    /// Durable queues: damaged spans on disk this pop passed over (the
    /// reader logged each).
    pub damaged: u64,
    /// Durable queues: records lost in them (not in `count`); the caller
    /// counts them as dropped.
    pub lost: usize,
    /// Durable queues: the sequence numbers the pop passed, `start..end`
    /// (the batch's records and the lost ones).
    pub start: u64,
    /// See `start`.
    pub end: u64,
}

/// A point-in-time view of a queue.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    /// Messages waiting in the queue.
    pub queued: usize,
    /// Messages handed to the worker, not yet taken by every output.
    pub in_flight: usize,
    /// Bytes of queued and in-flight messages.
    pub bytes: usize,
}

/// Above this allocated length an emptied queue gives memory back.
const SHRINK_ABOVE: usize = 4096;

/// How often a producer waiting on a durable queue whose disk is failing
/// looks again (nothing else wakes it when space returns).
const FAILING_RECHECK: Duration = Duration::from_millis(100);

impl RouteQueue {
    /// An empty queue with `spec`'s bounds and policy (a zero bound is
    /// treated as 1).
    pub fn new(spec: &QueueSpec) -> Self {
        Self {
            state: Mutex::new(State::default()),
            capacity: AtomicUsize::new(spec.capacity.max(1)),
            capacity_bytes: AtomicUsize::new(spec.capacity_bytes.max(1)),
            when_full: spec.when_full,
            not_empty: Notify::new(),
            room: Notify::new(),
            store: None,
            wants_room: AtomicBool::new(false),
            room_wanted: Notify::new(),
        }
    }

    /// A queue with `spec`'s bounds and policy whose messages are in
    /// `store`, which already holds `recovered` of them (`bytes` in all)
    /// from before a restart.
    pub fn durable(
        spec: &QueueSpec,
        store: Arc<store::Queue>,
        recovered: usize,
        bytes: usize,
    ) -> Self {
        let q = Self {
            store: Some(store),
            ..Self::new(spec)
        };
        {
            let mut s = q.lock();
            s.stored = recovered;
            s.stored_bytes = bytes;
        }
        q
    }

    /// The bytes `message` (of `size`) holds in this queue: as encoded on
    /// disk for a durable queue.
    pub fn held_size(&self, message: &Message, size: usize) -> usize {
        if self.store.is_some() {
            store::encoded_len(message)
        } else {
            size
        }
    }

    /// The store of a durable queue.
    pub fn store(&self) -> Option<&Arc<store::Queue>> {
        self.store.as_ref()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock; if one ever did, the counts
        // are still consistent between statements, so keep going.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a message of `size` bytes fits now. An empty queue takes any
    /// one message, however large, so nothing waits forever.
    fn fits(&self, s: &State, size: usize) -> bool {
        if self.store.as_ref().is_some_and(|q| q.failing()) {
            // The disk is failing (full): take nothing until it recovers,
            // so what waits to be written stays bounded.
            return false;
        }
        let held = s.items.len() + s.stored + s.in_flight + s.reserved;
        held == 0
            || (held < self.capacity.load(Ordering::Relaxed)
                && s.queued_bytes + s.stored_bytes + s.in_flight_bytes + s.reserved_bytes + size
                    <= self.capacity_bytes.load(Ordering::Relaxed))
    }

    /// Queues `message`; `None` (and dropped) if a durable queue's store
    /// is closed, else the bytes it holds ([`RouteQueue::held_size`]).
    #[inline]
    fn enqueue(&self, s: &mut State, message: Message, size: usize) -> Option<usize> {
        if let Some(store) = &self.store {
            // The store wakes the lanes waiting for records.
            let (_, bytes) = store.append_counted([&message]).ok()?;
            let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
            s.stored += 1;
            s.stored_bytes += bytes;
            return Some(bytes);
        }
        if s.items.is_empty() {
            self.not_empty.notify_one();
        }
        s.items.push_back((message, size));
        s.queued_bytes += size;
        Some(size)
    }

    /// Pushes `run` (message, size) in order without waiting, applying the
    /// drop policy to each message that finds the queue full, and leaves
    /// `run` empty. Meant for `drop_newest` and `drop_oldest` queues; a full
    /// `block` queue drops the newest here too, so block routes use
    /// [`RouteQueue::push_waiting`] and [`RouteQueue::reserve`] instead.
    pub fn push(&self, run: &mut Vec<(Message, usize)>) -> Pushed {
        let mut out = Pushed::default();
        let mut s = self.lock();
        if s.finished {
            out.after_finish = run.len();
            drop(s);
            run.clear();
            return out;
        }
        let failing = self.store.as_ref().is_some_and(|q| q.failing());
        for (message, size) in run.drain(..) {
            if failing {
                out.disk_full += 1;
                continue;
            }
            if !self.fits(&s, size) {
                out.full_events += 1;
                if let (WhenFull::DropOldest, Some(store)) = (self.when_full, &self.store) {
                    while !self.fits(&s, size) {
                        let released = store.trim_oldest();
                        if released.records() == 0 {
                            // The oldest are in flight on a lane.
                            self.want_room();
                            break;
                        }
                        Self::unstore_locked(&mut s, released);
                        out.trimmed = store::Released {
                            from: if out.trimmed.records() == 0 {
                                released.from
                            } else {
                                out.trimmed.from
                            },
                            to: released.to,
                            bytes: out.trimmed.bytes + released.bytes,
                        };
                    }
                }
                if self.when_full == WhenFull::DropOldest && self.store.is_none() {
                    while !self.fits(&s, size) {
                        let Some((evicted, old)) = s.items.pop_front() else {
                            break;
                        };
                        note_queue_full(&evicted);
                        s.queued_bytes -= old;
                        out.evicted += 1;
                        out.evicted_bytes += old;
                    }
                }
                if !self.fits(&s, size) {
                    out.dropped_newest += 1;
                    note_queue_full(&message);
                    continue;
                }
            }
            if let Some(bytes) = self.enqueue(&mut s, message, size) {
                out.queued += 1;
                out.queued_bytes += bytes;
            } else {
                out.after_finish += 1;
            }
        }
        out
    }

    /// Waits until a message of `size` bytes fits, then queues it. Calls
    /// `on_full` once if it has to wait.
    ///
    /// # Errors
    /// [`WaitError::Timeout`] when `deadline` passes first,
    /// [`WaitError::Closed`] when intake is closed while the queue is full
    /// or the queue is finished; `message` is then dropped unqueued.
    ///
    /// # Cancel safety
    /// Cancel safe: the message is queued only in the poll that returns.
    pub async fn push_waiting(
        &self,
        message: Message,
        size: usize,
        deadline: Option<Instant>,
        on_full: impl FnOnce(),
    ) -> Result<Waited, WaitError> {
        let mut message = Some(message);
        let mut stored = true;
        let waited = self
            .wait_for_room(size, deadline, on_full, |queue, s| {
                if let Some(m) = message.take() {
                    stored = queue.enqueue(s, m, size).is_some();
                }
            })
            .await?;
        if stored {
            Ok(waited)
        } else {
            Err(WaitError::Closed {
                waited: waited.0.unwrap_or_default(),
            })
        }
    }

    /// Waits until a message of `size` bytes fits, then holds room for it
    /// until [`RouteQueue::commit`] or [`RouteQueue::release`]. Calls
    /// `on_full` once if it has to wait.
    ///
    /// # Errors
    /// As [`RouteQueue::push_waiting`].
    ///
    /// # Cancel safety
    /// Cancel safe: room is reserved only in the poll that returns.
    pub async fn reserve(
        &self,
        size: usize,
        deadline: Option<Instant>,
        on_full: impl FnOnce(),
    ) -> Result<Waited, WaitError> {
        self.wait_for_room(size, deadline, on_full, |_, s| {
            s.reserved += 1;
            s.reserved_bytes += size;
        })
        .await
    }

    /// Queues `message` into room reserved for it with [`RouteQueue::reserve`].
    /// Returns false, dropping the message, if the queue was finished
    /// meanwhile (the caller counts it as dropped at shutdown).
    pub fn commit(&self, message: Message, size: usize) -> bool {
        let mut s = self.lock();
        s.reserved -= 1;
        s.reserved_bytes -= size;
        if s.finished {
            return false;
        }
        self.enqueue(&mut s, message, size).is_some()
    }

    /// Gives back room reserved with [`RouteQueue::reserve`].
    pub fn release(&self, size: usize) {
        let mut s = self.lock();
        s.reserved -= 1;
        s.reserved_bytes -= size;
        drop(s);
        self.room.notify_waiters();
    }

    async fn wait_for_room(
        &self,
        size: usize,
        deadline: Option<Instant>,
        on_full: impl FnOnce(),
        mut admit: impl FnMut(&Self, &mut State),
    ) -> Result<Waited, WaitError> {
        // Fast path: room now. No clock read, no waiter registration.
        {
            let mut s = self.lock();
            if s.finished {
                return Err(WaitError::Closed {
                    waited: Duration::ZERO,
                });
            }
            if self.fits(&s, size) {
                admit(self, &mut s);
                return Ok(Waited(None));
            }
        }
        on_full();
        let start = Instant::now();
        loop {
            // Register for a wake-up before checking, so room freed between
            // the check and the await is not missed.
            let mut notified = pin!(self.room.notified());
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if s.finished {
                    return Err(WaitError::Closed {
                        waited: start.elapsed(),
                    });
                }
                if self.fits(&s, size) {
                    admit(self, &mut s);
                    return Ok(Waited(Some(start.elapsed())));
                }
                if s.intake_closed {
                    return Err(WaitError::Closed {
                        waited: start.elapsed(),
                    });
                }
            }
            // A failing disk frees no room when it recovers: look again
            // now and then.
            let recheck = self
                .store
                .as_ref()
                .is_some_and(|q| q.failing())
                .then(|| Instant::now() + FAILING_RECHECK);
            let wake = match (deadline, recheck) {
                (Some(d), Some(r)) => Some(d.min(r)),
                (d, r) => d.or(r),
            };
            match deadline {
                Some(d) if Instant::now() >= d => {
                    return Err(WaitError::Timeout {
                        waited: start.elapsed(),
                    });
                }
                _ => {}
            }
            match wake {
                Some(w) => {
                    if tokio::time::timeout_at(w, notified).await.is_err()
                        && deadline.is_some_and(|d| Instant::now() >= d)
                    {
                        return Err(WaitError::Timeout {
                            waited: start.elapsed(),
                        });
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Waits for messages and moves up to `max` of them, oldest first, into
    /// `out`; they stay counted against the bounds (in flight) until
    /// [`RouteQueue::complete`]. Returns a zero count once the queue is
    /// finished and empty.
    ///
    /// # Cancel safety
    /// Cancel safe: messages move only in the poll that returns.
    pub async fn pop_batch(&self, max: usize, out: &mut Vec<Message>) -> Popped {
        if let Some(store) = &self.store {
            return self.pop_lane(store, 0, max, out, &mut Vec::new()).await;
        }
        loop {
            let notified = self.not_empty.notified();
            {
                let mut s = self.lock();
                if !s.items.is_empty() {
                    let count = max.max(1).min(s.items.len());
                    let mut bytes = 0;
                    out.reserve(count);
                    for (message, size) in s.items.drain(..count) {
                        bytes += size;
                        out.push(message);
                    }
                    s.queued_bytes -= bytes;
                    s.in_flight += count;
                    s.in_flight_bytes += bytes;
                    if s.items.is_empty() && s.items.capacity() > SHRINK_ABOVE {
                        s.items.shrink_to(SHRINK_ABOVE / 16);
                    }
                    return Popped {
                        count,
                        bytes,
                        ..Popped::default()
                    };
                }
                if s.finished {
                    return Popped::default();
                }
            }
            notified.await;
        }
    }

    /// [`RouteQueue::pop_batch`] for one lane of a durable queue, whose
    /// store reader is `lane`: from the store's cache, or from disk on the
    /// blocking pool; `seqs` gets each message's sequence number. A
    /// finished durable queue hands out nothing more: what it holds stays
    /// on disk.
    pub async fn pop_lane(
        &self,
        store: &Arc<store::Queue>,
        lane: usize,
        max: usize,
        out: &mut Vec<Message>,
        seqs: &mut Vec<u64>,
    ) -> Popped {
        let max = max.max(1);
        let mut records = Vec::with_capacity(max);
        // What disk reads passed over: damaged spans, and the records lost
        // in them, reported with the next batch that has any message.
        let (mut damaged, mut lost) = (0, 0);
        // Only this lane moves its reader.
        let start = store.read_position(lane);
        loop {
            let finished = self.not_empty.notified();
            let readable = store.readable(lane);
            if self.lock().finished {
                return Popped::default();
            }
            let read = match store.pop_cached(lane, max, usize::MAX, &mut records) {
                Some(n) => Ok((n, store::ReadReport::default())),
                None => {
                    let store = Arc::clone(store);
                    tokio::task::spawn_blocking(move || {
                        let mut records = Vec::with_capacity(max);
                        store
                            .pop_from_disk(lane, max, usize::MAX, &mut records)
                            .map(|(_, report)| (records, report))
                            .map_err(|e| e.to_string())
                    })
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
                    .map(|(read, report)| {
                        records = read;
                        (records.len(), report)
                    })
                }
            };
            let (n, report) = match read {
                Ok(read) => read,
                Err(e) => {
                    // A read error: the records stay on disk; try again
                    // after a pause rather than spin.
                    tracing::warn!(error = %e, "durable queue read failed; retrying");
                    tokio::time::sleep(FAILING_RECHECK).await;
                    continue;
                }
            };
            damaged += report.damaged;
            lost += usize::try_from(report.missing).unwrap_or(usize::MAX);
            if n == 0 && report.missing == 0 {
                // Nothing readable yet (appended, not yet written): wait
                // for the store, or the finish.
                tokio::select! {
                    () = readable => {}
                    () = finished => {}
                    () = tokio::time::sleep(FAILING_RECHECK) => {}
                }
                continue;
            }
            if n == 0 {
                continue;
            }
            let end = records.last().map_or(start, |r| r.seq + 1);
            let mut bytes = 0;
            out.reserve(n);
            seqs.reserve(n);
            for record in records.drain(..) {
                bytes += record.message.size();
                seqs.push(record.seq);
                out.push(record.message);
            }
            return Popped {
                count: n,
                bytes,
                damaged,
                lost,
                start,
                end,
            };
        }
    }

    /// Ends the in-flight state of a popped batch: the outputs took (or
    /// refused) it, so its room is free again. For a durable queue, use
    /// [`RouteQueue::complete_lane`].
    pub fn complete(&self, popped: Popped) {
        if popped.count == 0 {
            return;
        }
        if let Some(store) = &self.store {
            self.complete_lane(store, 0, popped);
            return;
        }
        self.uncount(popped);
    }

    /// Acknowledges lane `lane`'s oldest batch of a durable queue, and
    /// frees the room of what that released (every lane has it now).
    pub fn complete_lane(
        &self,
        store: &store::Queue,
        lane: usize,
        popped: Popped,
    ) -> store::Released {
        if popped.count == 0 && popped.lost == 0 {
            return store::Released::default();
        }
        let released = store.ack(lane);
        self.unstore(released)
    }

    /// Frees the room of records a durable store released.
    pub fn unstore(&self, released: store::Released) -> store::Released {
        if released.records() == 0 && released.bytes == 0 {
            return released;
        }
        Self::unstore_locked(&mut self.lock(), released);
        if self.when_full == WhenFull::Block {
            self.room.notify_waiters();
        }
        released
    }

    /// Asks the lanes of a durable queue to give back what they hold in
    /// flight while they retry, so retention can drop the oldest.
    pub fn want_room(&self) {
        self.wants_room.store(true, Ordering::Relaxed);
        self.room_wanted.notify_waiters();
    }

    /// Whether retention is waiting for a lane to give back its batch;
    /// clears the request.
    pub fn take_room_wanted(&self) -> bool {
        self.wants_room.swap(false, Ordering::Relaxed)
    }

    /// Whether retention is waiting for a lane (without clearing it).
    pub fn room_is_wanted(&self) -> bool {
        self.wants_room.load(Ordering::Relaxed)
    }

    /// Resolves when [`RouteQueue::want_room`] is called.
    pub async fn room_wanted(&self) {
        let notified = self.room_wanted.notified();
        if self.room_is_wanted() {
            return;
        }
        notified.await;
    }

    /// Whether a durable queue is full: a message of `size` would not fit.
    pub fn is_full(&self, size: usize) -> bool {
        let s = self.lock();
        let held = s.items.len() + s.stored + s.in_flight + s.reserved;
        held > 0 && !self.fits(&s, size)
    }

    fn unstore_locked(s: &mut State, released: store::Released) {
        s.stored = s
            .stored
            .saturating_sub(usize::try_from(released.records()).unwrap_or(usize::MAX));
        s.stored_bytes = s
            .stored_bytes
            .saturating_sub(usize::try_from(released.bytes).unwrap_or(usize::MAX));
    }

    /// Ends the in-flight state of a batch the outputs never confirmed
    /// (a stop): a durable queue keeps it on disk, to be sent again after
    /// the next start.
    pub fn abandon(&self, popped: Popped) {
        if popped.count > 0 && self.store.is_none() {
            self.uncount(popped);
        }
    }

    fn uncount(&self, popped: Popped) {
        let mut s = self.lock();
        s.in_flight -= popped.count;
        s.in_flight_bytes -= popped.bytes;
        drop(s);
        if self.when_full == WhenFull::Block {
            self.room.notify_waiters();
        }
    }

    /// Stops producers from waiting for room: waiters and later waits fail
    /// with [`WaitError::Closed`] unless there is room at once. The worker
    /// carries on.
    pub fn close_intake(&self) {
        self.lock().intake_closed = true;
        self.room.notify_waiters();
    }

    /// Closes intake and lets no more messages in; the worker drains what
    /// is queued, then [`RouteQueue::pop_batch`] returns a zero count.
    pub fn finish(&self) {
        {
            let mut s = self.lock();
            s.intake_closed = true;
            s.finished = true;
        }
        self.room.notify_waiters();
        self.not_empty.notify_one();
        // A durable queue's lanes all wait on it.
        self.not_empty.notify_waiters();
    }

    /// Removes every queued (not in-flight) message and returns how many and
    /// their bytes, for counting at the end of a shutdown. A durable queue
    /// gives up nothing: its messages stay on disk.
    pub fn take_queued(&self) -> Popped {
        if self.store.is_some() {
            return Popped::default();
        }
        let mut s = self.lock();
        let count = s.items.len();
        let bytes = s.queued_bytes;
        s.items = VecDeque::new();
        s.queued_bytes = 0;
        Popped {
            count,
            bytes,
            ..Popped::default()
        }
    }

    /// Removes and returns what a memory queue has queued (not in flight).
    pub fn take_messages(&self) -> Vec<(Message, usize)> {
        if self.store.is_some() {
            return Vec::new();
        }
        let mut s = self.lock();
        s.queued_bytes = 0;
        let taken = std::mem::take(&mut s.items).into();
        drop(s);
        self.room.notify_waiters();
        taken
    }

    /// Appends `run` to a durable queue whatever its bounds (messages
    /// accepted elsewhere, moving in); returns how many and their bytes
    /// as held ([`RouteQueue::held_size`]).
    pub fn absorb(&self, run: Vec<(Message, usize)>) -> (usize, usize) {
        let mut s = self.lock();
        let (mut n, mut bytes) = (0, 0);
        for (message, size) in run {
            if let Some(b) = self.enqueue(&mut s, message, size) {
                n += 1;
                bytes += b;
            }
        }
        (n, bytes)
    }

    /// Queued and in-flight counts and bytes, now. A durable queue's
    /// in-flight count is what the lane furthest ahead holds.
    pub fn stats(&self) -> QueueStats {
        let s = self.lock();
        let (stored, stored_bytes) = (s.stored, s.stored_bytes);
        let memory = QueueStats {
            queued: s.items.len(),
            in_flight: s.in_flight,
            bytes: s.queued_bytes + s.in_flight_bytes,
        };
        drop(s);
        let Some(store) = &self.store else {
            return memory;
        };
        let in_flight = usize::try_from(store.stats().in_flight)
            .unwrap_or(usize::MAX)
            .min(stored);
        QueueStats {
            queued: stored - in_flight,
            in_flight,
            bytes: stored_bytes,
        }
    }

    /// The message bound.
    pub fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    /// The byte bound.
    pub fn capacity_bytes(&self) -> usize {
        self.capacity_bytes.load(Ordering::Relaxed)
    }

    /// Sets new bounds (a reload). Nothing held is dropped: a queue holding
    /// more than its new bounds takes no more until it has drained below
    /// them. Producers waiting for room look again.
    pub fn resize(&self, capacity: usize, capacity_bytes: usize) {
        {
            let _s = self.lock();
            self.capacity.store(capacity.max(1), Ordering::Relaxed);
            self.capacity_bytes
                .store(capacity_bytes.max(1), Ordering::Relaxed);
        }
        self.room.notify_waiters();
    }

    /// The queue's policy.
    pub fn when_full(&self) -> WhenFull {
        self.when_full
    }
}

/// A request dropped for a full queue says so, if no other route answers
/// it; a receipt settles as failed, so its input has the message sent
/// again.
fn note_queue_full(message: &Message) {
    if let Some(request) = &message.request {
        request.note_drop(DropReason::QueueFull.as_str());
    }
    if let Some(receipt) = &message.receipt {
        receipt.fail(DropReason::QueueFull.as_str());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::message::{Publisher, Topic};

    fn msg(n: u8) -> Message {
        Message::new(
            Topic::try_from("t").expect("valid topic"),
            Bytes::from(vec![n; 9]),
            Publisher::new("test", ""),
        )
    }

    fn queue(capacity: usize, bytes: usize, when_full: WhenFull) -> RouteQueue {
        RouteQueue::new(&QueueSpec::new(capacity, bytes, when_full))
    }

    fn run(ns: &[u8]) -> Vec<(Message, usize)> {
        ns.iter().map(|&n| (msg(n), 10)).collect()
    }

    fn payloads(out: &[Message]) -> Vec<u8> {
        out.iter().map(|m| m.payload[0]).collect()
    }

    #[tokio::test]
    async fn drop_newest_keeps_the_first() {
        let q = queue(3, 1000, WhenFull::DropNewest);
        let pushed = q.push(&mut run(&[1, 2, 3, 4, 5]));
        assert_eq!(
            (pushed.queued, pushed.dropped_newest, pushed.full_events),
            (3, 2, 2)
        );
        let mut out = Vec::new();
        let popped = q.pop_batch(10, &mut out).await;
        assert_eq!(payloads(&out), vec![1, 2, 3]);
        assert_eq!(q.stats().in_flight, 3);
        // In-flight messages still hold their room.
        assert_eq!(q.push(&mut run(&[6])).dropped_newest, 1);
        q.complete(popped);
        assert_eq!(q.push(&mut run(&[7])).queued, 1);
    }

    #[tokio::test]
    async fn drop_oldest_evicts_queued_not_in_flight() {
        let q = queue(3, 1000, WhenFull::DropOldest);
        let pushed = q.push(&mut run(&[1, 2, 3, 4, 5]));
        assert_eq!(
            (pushed.queued, pushed.evicted, pushed.evicted_bytes),
            (5, 2, 20)
        );
        let mut out = Vec::new();
        let popped = q.pop_batch(1, &mut out).await;
        assert_eq!(payloads(&out), vec![3]);
        let pushed = q.push(&mut run(&[6]));
        assert_eq!(pushed.evicted, 1, "4 evicted, 3 is in flight");
        out.clear();
        q.complete(popped);
        q.pop_batch(10, &mut out).await;
        assert_eq!(payloads(&out), vec![5, 6]);
        // Only in-flight messages fill it: the newest is dropped.
        let q = queue(1, 1000, WhenFull::DropOldest);
        q.push(&mut run(&[1]));
        q.pop_batch(1, &mut out).await;
        let pushed = q.push(&mut run(&[2]));
        assert_eq!((pushed.evicted, pushed.dropped_newest), (0, 1));
    }

    #[tokio::test]
    async fn bytes_bound_too_but_an_empty_queue_takes_one() {
        let q = queue(100, 25, WhenFull::DropNewest);
        assert_eq!(q.push(&mut run(&[1, 2, 3])).queued, 2);
        let q = queue(100, 5, WhenFull::DropNewest);
        let pushed = q.push(&mut run(&[1, 2]));
        assert_eq!((pushed.queued, pushed.dropped_newest), (1, 1));
        assert_eq!(q.stats().bytes, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn block_waits_until_room_or_deadline() {
        let q = Arc::new(queue(1, 1000, WhenFull::Block));
        assert_eq!(
            q.push_waiting(msg(1), 10, None, || ()).await,
            Ok(Waited(None))
        );
        let deadline = Instant::now() + Duration::from_secs(1);
        assert_eq!(
            q.push_waiting(msg(2), 10, Some(deadline), || ()).await,
            Err(WaitError::Timeout {
                waited: Duration::from_secs(1)
            })
        );
        let producer = {
            let q = Arc::clone(&q);
            tokio::spawn(async move { q.push_waiting(msg(3), 10, None, || ()).await })
        };
        let mut out = Vec::new();
        let popped = q.pop_batch(10, &mut out).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(!producer.is_finished(), "in flight still holds the room");
        q.complete(popped);
        let waited = producer.await.expect("join").expect("room");
        assert!(waited.0.is_some());
        assert_eq!(q.stats().queued, 1);
    }

    #[tokio::test]
    async fn reservations_hold_room() {
        let q = queue(2, 1000, WhenFull::Block);
        q.reserve(10, None, || ()).await.expect("room");
        q.reserve(10, None, || ()).await.expect("room");
        let past = Some(Instant::now());
        assert!(matches!(
            q.reserve(10, past, || ()).await,
            Err(WaitError::Timeout { .. })
        ));
        q.release(10);
        assert!(q.commit(msg(1), 10));
        assert_eq!(q.stats().queued, 1);
        q.reserve(10, None, || ()).await.expect("room");
        q.finish();
        assert!(!q.commit(msg(2), 10), "finished queues take nothing");
    }

    #[tokio::test]
    async fn close_and_finish() {
        let q = Arc::new(queue(1, 1000, WhenFull::Block));
        q.push_waiting(msg(1), 10, None, || ()).await.expect("room");
        let waiter = {
            let q = Arc::clone(&q);
            tokio::spawn(async move { q.push_waiting(msg(2), 10, None, || ()).await })
        };
        // Wait until the producer is parked, then close intake.
        tokio::task::yield_now().await;
        q.close_intake();
        let res = tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("woken")
            .expect("join");
        assert!(matches!(res, Err(WaitError::Closed { .. })));
        q.finish();
        assert_eq!(q.push(&mut run(&[3])).after_finish, 1);
        let mut out = Vec::new();
        assert_eq!(
            q.pop_batch(10, &mut out).await.count,
            1,
            "drains after finish"
        );
        assert_eq!(q.pop_batch(10, &mut out).await.count, 0);
    }

    #[tokio::test]
    async fn a_durable_queue_reads_past_damage_and_reports_it() {
        let storage = store::MemoryStorage::new();
        let options = store::Options {
            fsync: store::Fsync::Always,
            // No cache: every pop reads the disk.
            cache_bytes: 1,
            ..store::Options::default()
        };
        let (st, _) =
            store::Queue::open_unstarted(Arc::new(Arc::clone(&storage)), options).expect("opens");
        let st = Arc::new(st);
        let q = RouteQueue::durable(
            &QueueSpec::new(10, 1000, WhenFull::Block),
            Arc::clone(&st),
            0,
            0,
        );
        for n in 1..=3 {
            q.push_waiting(msg(n), 10, None, || ()).await.expect("room");
        }
        st.commit().expect("commits");
        // Damage the second record on disk.
        let name = storage.segments().pop().expect("a segment");
        let mut data = storage.bytes(&name).expect("bytes");
        let second = store::encoded_len(&msg(1)) + 20;
        data[second] ^= 0xff;
        storage.set_bytes(&name, data);
        let mut out = Vec::new();
        let mut damaged = 0;
        while out.len() < 2 {
            let popped = q.pop_batch(10, &mut out).await;
            damaged += popped.damaged;
            assert_eq!(popped.lost, usize::from(popped.damaged > 0));
            q.complete(popped);
        }
        assert_eq!(payloads(&out), vec![1, 3]);
        assert_eq!(damaged, 1);
        assert_eq!(q.stats().queued, 0, "the lost record is no longer held");
    }
}
