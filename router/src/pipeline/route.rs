//! One running route: its spec, queue, outputs and metric children, and the
//! bookkeeping that keeps `offered = delivered + dropped + depth` exact.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::metrics::{DropReason, RouteMetrics, delta};
use super::queue::{Popped, RouteQueue, WaitError, Waited};
use super::snapshot::{DroppedCounts, QueueSnapshot, RouteReport, RouteSnapshot};
use super::spec::{RouteSpec, WhenFull};
use super::tally::Tally;
use crate::egress::Output;
use crate::ingress::Wait;
use crate::message::Message;
use crate::store;

/// A route at run time, shared by the admission path and its worker. Its
/// queue, counters and worker live as long as the route keeps its name and
/// policy across reloads; what it does with messages (its [`Program`]) is
/// swapped whole, and the worker takes it up at its next batch.
pub(crate) struct Route {
    pub(crate) name: String,
    pub(crate) queue: RouteQueue,
    pub(crate) metrics: RouteMetrics,
    program: ArcSwap<Program>,
    /// Cancelled to stop this route's worker: at the end of a shutdown's
    /// grace period (a child of the pipeline's hard stop), or when a
    /// removed route's drain time is up.
    pub(crate) stop: CancellationToken,
    /// Cancelled by the worker when it exits.
    pub(crate) exited: CancellationToken,
    /// Messages counted as dropped because a shutdown's grace period ended.
    left: AtomicU64,
    /// A durable route with several targets: what its lanes noted.
    pub(crate) tally: Tally,
    /// Cancelled when a reload changes a durable route's targets: its
    /// lanes stop at once and start again, one per new target.
    retarget: Mutex<CancellationToken>,
}

/// What a route does with its messages: its spec (pattern, plugins,
/// targets) and the outputs it resolved to. Replaced whole by a reload.
pub(crate) struct Program {
    pub(crate) spec: RouteSpec,
    pub(crate) outputs: Box<[Arc<dyn Output>]>,
    /// The output receiving dead-lettered messages.
    pub(crate) dead_letter: Option<Arc<dyn Output>>,
    /// How a failed send to each of `outputs` is retried (none: once).
    pub(crate) retry: Box<[Option<super::spec::Retry>]>,
}

impl Program {
    /// Most messages the worker hands its outputs at once: the queue's
    /// `max_batch`, or more when a target prefers more
    /// ([`Output::preferred_batch`]), within half the queue's capacity
    /// (what is in flight cannot be evicted).
    pub(crate) fn max_batch(&self) -> usize {
        let queue = &self.spec.queue;
        let preferred = self
            .outputs
            .iter()
            .filter_map(|o| o.preferred_batch())
            .max()
            .unwrap_or(0)
            .min(queue.capacity / 2);
        queue.max_batch.max(preferred).max(1)
    }
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("name", &self.name)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl Route {
    /// The route `program` describes. A durable route opens its queue's
    /// directory: what it finds there (from before a restart) is counted
    /// and delivered first.
    ///
    /// # Errors
    /// A durable queue's directory cannot be created, read or repaired.
    pub(crate) fn new(
        program: Program,
        metrics: RouteMetrics,
        stop: CancellationToken,
    ) -> Result<Self, super::Error> {
        let spec = &program.spec.queue;
        let queue = match &spec.durable {
            None => RouteQueue::new(spec),
            Some(durable) => open_durable(
                &program.spec.name,
                &program.spec.outputs,
                spec,
                durable,
                &metrics,
            )?,
        };
        Ok(Self {
            name: program.spec.name.clone(),
            queue,
            program: ArcSwap::from_pointee(program),
            metrics,
            stop,
            exited: CancellationToken::new(),
            left: AtomicU64::new(0),
            tally: Tally::default(),
            retarget: Mutex::new(CancellationToken::new()),
        })
    }

    /// The token a durable route's lanes stop on when its targets change.
    pub(crate) fn retargeted(&self) -> CancellationToken {
        self.retarget
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A fresh token for the next set of lanes.
    pub(crate) fn reset_retarget(&self) -> CancellationToken {
        let fresh = CancellationToken::new();
        *self.retarget.lock().unwrap_or_else(PoisonError::into_inner) = fresh.clone();
        fresh
    }

    /// What the route does now.
    pub(crate) fn program(&self) -> Arc<Program> {
        self.program.load_full()
    }

    /// Replaces what the route does (a reload): new bounds and sync policy
    /// apply at once, the rest from the worker's next batch.
    pub(crate) fn set_program(&self, program: Program) {
        let q = &program.spec.queue;
        if q.capacity != self.queue.capacity() || q.capacity_bytes != self.queue.capacity_bytes() {
            self.queue.resize(q.capacity, q.capacity_bytes);
        }
        if let (Some(store), Some(durable)) = (self.queue.store(), &q.durable) {
            store.set_fsync(fsync(&durable.settings));
        }
        let retarget = self.queue.store().is_some()
            && self.program.load().spec.outputs != program.spec.outputs;
        self.program.store(Arc::new(program));
        if retarget {
            self.retargeted().cancel();
        }
    }

    /// Moves what this memory route has queued (not in flight) into `to`,
    /// its durable successor of the same name: it was accepted, so it goes
    /// in whatever the bounds say.
    pub(crate) fn move_backlog(&self, to: &Route) {
        let run = self.queue.take_messages();
        if run.is_empty() {
            return;
        }
        let bytes: usize = run.iter().map(|(_, size)| size).sum();
        self.metrics.held(-delta(run.len()), -delta(bytes));
        let total = run.len();
        let (moved, held) = to.queue.absorb(run);
        to.metrics.held(delta(moved), delta(held));
        // Only a closed store takes nothing: the router is stopping.
        to.metrics.dropped(DropReason::Shutdown, total - moved);
        tracing::info!(route = %self.name, moved, "moved the memory queue's backlog to its durable queue");
    }

    /// Whether this is a durable route with retention (`drop_oldest` or
    /// `max_age`): one whose lanes give back a batch they retry when
    /// retention needs its records.
    pub(crate) fn retains(&self) -> bool {
        self.queue.store().is_some()
            && (self.queue.when_full() == WhenFull::DropOldest
                || self
                    .program
                    .load()
                    .spec
                    .queue
                    .durable
                    .as_ref()
                    .is_some_and(|d| d.settings.max_age.is_some()))
    }

    /// True for `when_full = "block"` routes (fixed for a route's life: a
    /// reload that changes it builds a new route).
    pub(crate) fn blocks(&self) -> bool {
        self.queue.when_full() == WhenFull::Block
    }

    /// Until when an offer that started at `since` waits for room in this
    /// block route: its own `block_timeout` later for a bounded wait, no
    /// deadline for an unbounded one.
    pub(crate) fn deadline(&self, wait: Wait, since: Instant) -> Option<Instant> {
        match wait {
            Wait::Bounded => Some(since + self.block_timeout()),
            Wait::Unbounded | Wait::Durable => None,
        }
    }

    /// How long a bounded offer waits for room here, as configured now.
    pub(crate) fn block_timeout(&self) -> std::time::Duration {
        self.program.load().spec.queue.block_timeout
    }

    /// Admits a run of messages without waiting (drop policies), counting
    /// every one as offered and each drop with its reason.
    pub(crate) fn push_run(&self, run: &mut Vec<(Message, usize)>) {
        if run.is_empty() {
            return;
        }
        let p = self.queue.push(run);
        let m = &self.metrics;
        m.offered
            .inc_by((p.queued + p.dropped_newest + p.after_finish + p.disk_full) as u64);
        m.dropped(DropReason::QueueFull, p.dropped_newest + p.evicted);
        m.dropped(DropReason::Shutdown, p.after_finish);
        m.dropped(DropReason::DiskFull, p.disk_full);
        if p.trimmed.records() > 0 {
            // Records the trim released were counted in `held` when they
            // came in: the trim takes them out, as dropped.
            self.count_released(p.trimmed, Unnoted::Dropped(DropReason::Retention));
        }
        if p.full_events > 0 {
            m.backpressure.inc_by(p.full_events as u64);
        }
        m.held(
            delta(p.queued) - delta(p.evicted),
            delta(p.queued_bytes) - delta(p.evicted_bytes),
        );
    }

    /// Admits one message to this block route, waiting for room.
    pub(crate) async fn push_waiting(
        &self,
        message: Message,
        size: usize,
        deadline: Option<Instant>,
    ) -> Result<(), WaitError> {
        let held = self.queue.held_size(&message, size);
        let res = self
            .queue
            .push_waiting(message, size, deadline, || self.metrics.backpressure.inc())
            .await;
        self.record_wait(&res);
        if res.is_ok() {
            self.metrics.offered.inc();
            self.metrics.held(1, delta(held));
        }
        res.map(drop)
    }

    /// Reserves room for one message on this block route, waiting for it.
    pub(crate) async fn reserve(
        &self,
        size: usize,
        deadline: Option<Instant>,
    ) -> Result<(), WaitError> {
        let res = self
            .queue
            .reserve(size, deadline, || self.metrics.backpressure.inc())
            .await;
        self.record_wait(&res);
        res.map(drop)
    }

    /// Fills room reserved with [`Route::reserve`].
    pub(crate) fn commit(&self, message: Message, size: usize) {
        self.metrics.offered.inc();
        let held = self.queue.held_size(&message, size);
        if self.queue.commit(message, size) {
            self.metrics.held(1, delta(held));
        } else {
            self.metrics.dropped(DropReason::Shutdown, 1);
        }
    }

    /// Adds a finished wait to the blocked time (the backpressure event was
    /// counted when the wait began).
    fn record_wait(&self, res: &Result<Waited, WaitError>) {
        let waited = match res {
            Ok(Waited(None)) => return,
            Ok(Waited(Some(w))) => *w,
            Err(WaitError::Timeout { waited } | WaitError::Closed { waited }) => *waited,
        };
        if waited > Duration::ZERO {
            self.metrics.blocked.inc_by(waited.as_secs_f64());
        }
    }

    /// Ends a popped batch's in-flight state once its outcome is counted.
    /// A durable route's lane `lane` acknowledges it instead; `tallied`
    /// when the route's lanes count outcomes at release ([`Tally`]).
    pub(crate) fn complete(&self, lane: usize, tallied: bool, popped: Popped) {
        let unnoted = if tallied {
            Unnoted::Delivered
        } else {
            Unnoted::Counted
        };
        match self.queue.store() {
            None => {
                self.queue.complete(popped);
                self.metrics
                    .held(-delta(popped.count), -delta(popped.bytes));
            }
            Some(store) => {
                let released = self.queue.complete_lane(store, lane, popped);
                self.count_released(released, unnoted);
            }
        }
    }

    /// After a lane gave back its batch for retention: a full
    /// `drop_oldest` durable route drops its oldest now (counted,
    /// `retention`), leaving an eighth of its capacity free so the
    /// producers that come next find room; and `max_age` applies.
    pub(crate) fn make_room(&self, now: std::time::SystemTime) {
        if let Some(store) = self.queue.store()
            && self.queue.when_full() == WhenFull::DropOldest
            && self.queue.is_full(0)
        {
            let keep = self.queue.capacity() - (self.queue.capacity() / 8).max(1);
            while self.queue.stats().queued + self.queue.stats().in_flight > keep {
                let released = self.queue.unstore(store.trim_oldest());
                if released.records() == 0 {
                    break;
                }
                self.count_released(released, Unnoted::Dropped(DropReason::Retention));
            }
        }
        self.keep(now);
    }

    /// A durable route's retention at `now`: drops (counted, `retention`)
    /// what was published before `max_age` ago, and sets the oldest
    /// message's age.
    pub(crate) fn keep(&self, now: std::time::SystemTime) {
        let Some(store) = self.queue.store() else {
            return;
        };
        let program = self.program.load();
        let max_age = program
            .spec
            .queue
            .durable
            .as_ref()
            .and_then(|d| d.settings.max_age);
        if let Some(to) = max_age
            .and_then(|age| now.checked_sub(age))
            .and_then(|cutoff| store.expired_to(cutoff))
        {
            let released = self.queue.unstore(store.trim(to));
            if released.to < to {
                // The rest is in flight on a lane that is retrying.
                self.queue.want_room();
            }
            if released.records() > 0 {
                tracing::debug!(route = %self.name, dropped = released.records(), "durable queue: dropped messages past max_age");
            }
            self.count_released(released, Unnoted::Dropped(DropReason::Retention));
        }
        let age = store
            .oldest()
            .and_then(|t| now.duration_since(t).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        self.metrics.oldest_age.set(age);
    }

    /// Moves the gauges for records a durable route's store released and
    /// counts their outcomes: from the lanes' notes, the rest as `unnoted`
    /// says.
    pub(crate) fn count_released(&self, released: store::Released, unnoted: Unnoted) {
        let records = usize::try_from(released.records()).unwrap_or(usize::MAX);
        let bytes = usize::try_from(released.bytes).unwrap_or(usize::MAX);
        self.metrics.held(-delta(records), -delta(bytes));
        let rest = match unnoted {
            Unnoted::Counted => return,
            Unnoted::Delivered => None,
            Unnoted::Dropped(reason) => Some(reason),
        };
        if records == 0 {
            return;
        }
        let counts = self.tally.release(released.from..released.to, rest);
        let m = &self.metrics;
        m.delivered.inc_by(counts.delivered);
        m.dead_lettered.inc_by(counts.dead_lettered);
        for (reason, n) in counts.dropped {
            m.dropped(reason, usize::try_from(n).unwrap_or(usize::MAX));
        }
    }

    /// Counts `popped` messages, already out of the queue's bookkeeping, as
    /// dropped for `reason` (`shutdown` at the end of a shutdown's grace
    /// period, `route_removed` when a removed route's drain time is up):
    /// they were queued or in flight.
    pub(crate) fn abandon(&self, popped: Popped, reason: DropReason) {
        if popped.count == 0 || self.queue.store().is_some() {
            // A durable route's batch stays on disk, sent again after the
            // next start: not dropped.
            return;
        }
        self.metrics.dropped(reason, popped.count);
        self.metrics
            .held(-delta(popped.count), -delta(popped.bytes));
        self.left.fetch_add(popped.count as u64, Ordering::Relaxed);
    }

    fn dropped_counts(&self) -> DroppedCounts {
        let m = &self.metrics;
        DroppedCounts {
            total: m.dropped_total(),
            queue_full: m.dropped_count(DropReason::QueueFull),
            no_subscriber: m.dropped_count(DropReason::NoSubscriber),
            too_large: m.dropped_count(DropReason::TooLarge),
            output_error: m.dropped_count(DropReason::OutputError),
            shutdown: m.dropped_count(DropReason::Shutdown),
            plugin_error: m.dropped_count(DropReason::PluginError),
            no_dead_letter: m.dropped_count(DropReason::NoDeadLetter),
            route_removed: m.dropped_count(DropReason::RouteRemoved),
            disk_full: m.dropped_count(DropReason::DiskFull),
            corrupt: m.dropped_count(DropReason::Corrupt),
            retention: m.dropped_count(DropReason::Retention),
            unencodable: m.dropped_count(DropReason::Unencodable),
            refused: m.dropped_count(DropReason::Refused),
        }
    }

    pub(crate) fn snapshot(&self) -> RouteSnapshot {
        let stats = self.queue.stats();
        let m = &self.metrics;
        let program = self.program();
        let spec = &program.spec;
        RouteSnapshot {
            name: self.name.clone(),
            pattern: spec.pattern.clone(),
            attributes: spec.attributes.clone(),
            outputs: spec.outputs.clone(),
            filters: spec
                .stages
                .filters
                .iter()
                .map(|p| p.name().to_owned())
                .collect(),
            router: spec.stages.router.as_ref().map(|p| p.name().to_owned()),
            on_error: spec.stages.on_error,
            dead_letter: spec.stages.dead_letter.clone(),
            when_full: self.queue.when_full(),
            queue: QueueSnapshot {
                depth: stats.queued + stats.in_flight,
                queued: stats.queued,
                in_flight: stats.in_flight,
                bytes: stats.bytes,
                capacity: self.queue.capacity(),
                capacity_bytes: self.queue.capacity_bytes(),
            },
            offered: m.offered.get(),
            delivered: m.delivered.get(),
            filtered: m.filtered.get(),
            answered: m.answered.get(),
            dead_lettered: m.dead_lettered.get(),
            dropped: self.dropped_counts(),
            backpressure_events: m.backpressure.get(),
            blocked_seconds: m.blocked.get(),
            draining: false,
        }
    }

    pub(crate) fn report(&self) -> RouteReport {
        RouteReport {
            name: self.name.clone(),
            offered: self.metrics.offered.get(),
            delivered: self.metrics.delivered.get(),
            filtered: self.metrics.filtered.get(),
            answered: self.metrics.answered.get(),
            dead_lettered: self.metrics.dead_lettered.get(),
            dropped: self.dropped_counts(),
            left: self.left.load(Ordering::Relaxed),
        }
    }
}

/// How released records without a lane's note count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unnoted {
    /// Already counted, by a lane that counts per batch.
    Counted,
    /// Delivered: every lane passed them.
    Delivered,
    /// Dropped for a reason: retention trimmed them.
    Dropped(DropReason),
}

/// The store's sync policy for a durable route's settings.
fn fsync(settings: &super::spec::Durability) -> store::Fsync {
    match settings.fsync {
        super::spec::Fsync::Always => store::Fsync::Always,
        super::spec::Fsync::Batch => store::Fsync::Batch(settings.fsync_interval),
        super::spec::Fsync::Os => store::Fsync::Os,
    }
}

/// Opens a durable route's queue in its directory, counting what it finds.
fn open_durable(
    route: &str,
    readers: &[String],
    spec: &super::spec::QueueSpec,
    durable: &super::spec::DurableSpec,
    metrics: &RouteMetrics,
) -> Result<RouteQueue, super::Error> {
    let failed = |e: &dyn std::fmt::Display| super::Error::Store {
        route: route.to_owned(),
        reason: format!("{}: {e}", durable.dir.display()),
    };
    let dir = store::Directory::create(&durable.dir).map_err(|e| failed(&e))?;
    let histogram = metrics.fsync.clone();
    let options = store::Options {
        fsync: fsync(&durable.settings),
        // Segments small enough that a release frees disk soon, large
        // enough that a roll (a sync and a new file) is rare.
        segment_bytes: (spec.capacity_bytes as u64 / 8).clamp(1 << 20, 64 << 20),
        on_sync: Some(Arc::new(move |took| histogram.observe(took.as_secs_f64()))),
        // One cursor per target output, by name.
        readers: readers.to_vec(),
        ..store::Options::default()
    };
    let (queue, opened) = store::Queue::open(Arc::new(dir), options).map_err(|e| failed(&e))?;
    for (segment, d) in opened.recovery.damaged.iter().chain(&opened.recovery.torn) {
        tracing::warn!(
            route,
            segment,
            offset = d.offset,
            len = d.len,
            "durable queue: damaged span skipped"
        );
    }
    if opened.cursors_lost {
        tracing::warn!(
            route,
            "durable queue: cursors missing or damaged; its whole log is delivered again"
        );
    }
    // Counted in sequence numbers, so records damaged on disk are in it
    // too: the reader passes over them and counts them dropped (`corrupt`),
    // which keeps `offered + recovered = delivered + ... + depth`.
    let stats = queue.stats();
    // What a reload removed from this process's route of that name is
    // still in its depth: not recovered again.
    let (parked, parked_bytes) = metrics.unpark(route);
    let stats = store::Stats {
        held: stats.held.saturating_sub(parked),
        held_bytes: stats.held_bytes.saturating_sub(parked_bytes),
        ..stats
    };
    if stats.held > 0 {
        tracing::info!(
            route,
            backlog = stats.held,
            intact = opened.backlog,
            redeliver = opened.redeliver,
            "durable queue: delivering what was on disk"
        );
    }
    metrics.recovered.inc_by(stats.held);
    metrics.redelivered.inc_by(opened.redeliver);
    metrics.corrupt.inc_by(opened.recovery.damaged.len() as u64);
    let backlog = usize::try_from(stats.held).unwrap_or(usize::MAX);
    let bytes = usize::try_from(stats.held_bytes).unwrap_or(usize::MAX);
    metrics.held(delta(backlog), delta(bytes));
    let all = queue.stats();
    Ok(RouteQueue::durable(
        spec,
        Arc::new(queue),
        usize::try_from(all.held).unwrap_or(usize::MAX),
        usize::try_from(all.held_bytes).unwrap_or(usize::MAX),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::SendFuture;
    use crate::pipeline::WhenFull;
    use crate::pipeline::testing::spec;

    /// An output that asks for its own number of messages per send.
    struct Prefers(Option<usize>);

    impl Output for Prefers {
        fn name(&self) -> &str {
            "prefers"
        }

        fn send<'a>(&'a self, _batch: &'a [crate::message::Message]) -> SendFuture<'a> {
            Box::pin(std::future::ready(Ok(crate::egress::Delivery::accepted())))
        }

        fn preferred_batch(&self) -> Option<usize> {
            self.0
        }
    }

    fn program(capacity: usize, prefs: &[Option<usize>]) -> Program {
        Program {
            spec: spec("r", "a.>", capacity, WhenFull::Block, &[]),
            outputs: prefs
                .iter()
                .map(|&p| Arc::new(Prefers(p)) as Arc<dyn Output>)
                .collect(),
            dead_letter: None,
            retry: prefs.iter().map(|_| None).collect(),
        }
    }

    #[test]
    fn a_route_batch_grows_to_its_largest_preference_within_half_its_capacity() {
        assert_eq!(
            program(100_000, &[None]).max_batch(),
            256,
            "the queue's own"
        );
        assert_eq!(
            program(100_000, &[Some(10)]).max_batch(),
            256,
            "never smaller"
        );
        assert_eq!(
            program(100_000, &[Some(400), None, Some(1600)]).max_batch(),
            1600,
            "the largest"
        );
        assert_eq!(
            program(1000, &[Some(1600)]).max_batch(),
            500,
            "half the capacity"
        );
        assert_eq!(program(1, &[Some(1600)]).max_batch(), 1, "at least one");
    }
}
