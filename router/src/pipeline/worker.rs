//! A route's worker: one task per route that pops batches from the route's
//! queue, hands each batch to every target output at once, and counts each
//! message's outcome exactly.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::SystemTime;

use prometheus::local::LocalHistogram;
use smallvec::SmallVec;
use tokio_util::sync::CancellationToken;

use super::metrics::DropReason;
use super::queue::Popped;
use super::retry::{self, Sent, Until};
use super::route::{Program, Route, Unnoted};
use super::spec::Retry;
use super::stages::{StageRunner, Staged};
use super::tally::Fate;
use crate::egress::{self, Delivery, Output, Reject};
use crate::message::request::RouteTag;
use crate::message::{Message, MessageId};

/// What the worker needs to know about the pipeline's state.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Set when a shutdown begins.
    pub(crate) shutting_down: AtomicBool,
    /// Cancelled when a shutdown's grace period ends: workers abandon their
    /// batch in flight and exit.
    pub(crate) hard_stop: CancellationToken,
    /// The dead-letter store, when the router has one.
    pub(crate) dead_letters: Option<Arc<crate::store::DeadLetters>>,
}

/// Runs `route`'s worker until its queue is finished and drained, or until
/// the route is stopped (the hard stop of a shutdown, or a removed route's
/// drain deadline); then counts what it still held as dropped for `reason`
/// of the stop.
///
/// A memory route, and a durable route with one target, has one lane that
/// hands each batch to every target at once. A durable route with several
/// targets has one lane per target, each with its own cursor in the store,
/// so a target that is down holds back only its own lane; their outcomes
/// are counted at release ([`super::tally`]). A reload that changes a
/// durable route's targets stops its lanes and starts new ones.
pub(crate) async fn run(route: Arc<Route>, shared: Arc<Shared>) {
    match route.queue.store().cloned() {
        None => {
            run_lane(&route, &shared, Lane::ALL, None).await;
        }
        Some(store) => loop {
            let retarget = route.reset_retarget();
            let program = route.program();
            let released = store.set_readers(&program.spec.outputs);
            route.count_released(released, Unnoted::Delivered);
            let targets = program.spec.outputs.len();
            let lanes: Vec<Lane> = if targets <= 1 {
                vec![Lane::ALL]
            } else {
                (0..targets).map(Lane::one).collect()
            };
            let lanes = futures_join(
                lanes
                    .into_iter()
                    .map(|lane| Box::pin(run_lane(&route, &shared, lane, Some(&retarget)))),
            );
            let ends = tokio::select! {
                ends = lanes => ends,
                never = keep(&route) => match never {},
            };
            if !ends.contains(&LaneEnd::Retarget) || route.stop.is_cancelled() {
                break;
            }
        },
    }
    if route.stop.is_cancelled() && !shared.hard_stop.is_cancelled() {
        // A removed route whose drain time ran out: nobody else will count
        // what it still holds.
        sweep(&route, DropReason::RouteRemoved);
    }
    route.exited.cancel();
}

/// A durable route's housekeeping while its lanes run, once a second: drops
/// what is older than `max_age`, and sets the oldest message's age.
async fn keep(route: &Route) -> std::convert::Infallible {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        route.keep(SystemTime::now());
    }
}

/// Runs every future to completion, concurrently, on this task, and
/// returns their outputs in order.
async fn futures_join<F: Future + Unpin>(
    futures: impl Iterator<Item = F>,
) -> SmallVec<[F::Output; 2]> {
    let mut pending: SmallVec<[Option<F>; 2]> = futures.map(Some).collect();
    let mut out: SmallVec<[Option<F::Output>; 2]> = pending.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut busy = false;
        for (slot, result) in pending.iter_mut().zip(out.iter_mut()) {
            if let Some(f) = slot {
                match Pin::new(f).poll(cx) {
                    Poll::Ready(r) => {
                        *result = Some(r);
                        *slot = None;
                    }
                    Poll::Pending => busy = true,
                }
            }
        }
        if busy { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    out.into_iter()
        .map(|r| r.expect("poll_fn returns once every future has completed"))
        .collect()
}

/// One lane of a route's worker: which store reader it moves, and which
/// targets it sends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lane {
    /// The store reader (durable routes); 0 for a memory route.
    reader: usize,
    /// `Some(o)`: only target `o`, one lane per target, outcomes counted
    /// at release. `None`: every target, outcomes counted per batch.
    only: Option<usize>,
}

impl Lane {
    const ALL: Self = Self {
        reader: 0,
        only: None,
    };

    fn one(target: usize) -> Self {
        Self {
            reader: target,
            only: Some(target),
        }
    }

    /// Whether outcomes are counted at release, from notes.
    fn tallied(self) -> bool {
        self.only.is_some()
    }

    /// The lane that counts what the route's plugins decide (once, though
    /// every lane runs them) and sends dead letters.
    fn primary(self) -> bool {
        self.only.is_none_or(|o| o == 0)
    }
}

/// Why a lane ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LaneEnd {
    /// The queue is finished and drained, or the route stopped.
    Done,
    /// A reload changed the route's targets.
    Retarget,
}

/// Runs one lane until its queue is finished, the route stops, or (on a
/// durable route) `retarget` is cancelled.
async fn run_lane(
    route: &Route,
    shared: &Shared,
    lane: Lane,
    retarget: Option<&CancellationToken>,
) -> LaneEnd {
    let never = CancellationToken::new();
    let retarget = retarget.unwrap_or(&never);
    let store = route.queue.store();
    let mut batch: Vec<Message> = Vec::new();
    let mut seqs: Vec<u64> = Vec::new();
    let mut scratch = Scratch::default();
    let mut latency = route.metrics.latency.local();
    let mut program = route.program();
    route
        .metrics
        .declare_retries(program.outputs.iter().map(|o| o.name()));
    let mut stage = start_stage(route, &program).await;
    let route_name: Arc<str> = Arc::from(route.name.as_str());
    let tag = |program: &Program| RouteTag {
        name: Arc::clone(&route_name),
        timeout: program.spec.request_timeout,
    };
    let mut request_tag = tag(&program);
    let mut max = program.max_batch();
    let end = loop {
        if lane.tallied() {
            let slowest = || store.is_some_and(|s| s.holds_head(lane.reader));
            tokio::select! {
                biased;
                () = route.stop.cancelled() => break LaneEnd::Done,
                () = retarget.cancelled() => break LaneEnd::Retarget,
                () = route.tally.room(slowest) => {}
            }
        }
        seqs.clear();
        let pop = async {
            match store {
                Some(store) => {
                    route
                        .queue
                        .pop_lane(store, lane.reader, max, &mut batch, &mut seqs)
                        .await
                }
                None => route.queue.pop_batch(max, &mut batch).await,
            }
        };
        let popped = tokio::select! {
            biased;
            () = route.stop.cancelled() => break LaneEnd::Done,
            () = retarget.cancelled() => break LaneEnd::Retarget,
            popped = pop => popped,
        };
        if popped.count == 0 {
            break LaneEnd::Done;
        }
        if popped.damaged > 0 {
            route.metrics.corrupt.inc_by(popped.damaged);
        }
        if popped.lost > 0 {
            // Accepted once, gone to damage on disk: counted, not silent.
            if lane.tallied() {
                let passed: std::collections::HashSet<u64> = seqs.iter().copied().collect();
                let gaps = (popped.start..popped.end).filter(|q| !passed.contains(q));
                route
                    .tally
                    .note_all(gaps, Fate::Dropped(DropReason::Corrupt));
            } else {
                route.metrics.dropped(DropReason::Corrupt, popped.lost);
            }
        }
        // A reload's new program applies from a batch boundary: every
        // message of a batch sees one generation's plugins and targets.
        let now = route.program();
        if !Arc::ptr_eq(&now, &program) {
            if store.is_some() && now.spec.outputs != program.spec.outputs {
                // Not confirmed: read again by the new lanes.
                break LaneEnd::Retarget;
            }
            if now.spec.stages != program.spec.stages || now.spec.outputs != program.spec.outputs {
                stage = start_stage(route, &now).await;
            }
            program = now;
            route
                .metrics
                .declare_retries(program.outputs.iter().map(|o| o.name()));
            request_tag = tag(&program);
            max = program.max_batch();
        }
        // Requests learn which route carries them, and so their timeout.
        for request in batch.iter_mut().filter_map(|m| m.request.as_mut()) {
            request.set_route(request_tag.clone());
        }
        // A tallied lane finds each message's sequence number by its id
        // once the plugins have sorted them.
        let by_id: HashMap<MessageId, u64> = if lane.tallied() {
            batch
                .iter()
                .map(|m| m.id)
                .zip(seqs.iter().copied())
                .collect()
        } else {
            HashMap::new()
        };
        let staged = match stage.take() {
            None => None,
            Some(mut s) if s.0.runs_inline() => {
                let (runner, staged) = &mut *s;
                runner.run(&mut batch, staged);
                Some(stage.insert(s))
            }
            Some(s) => match run_stage(s, &mut batch).await {
                Ok(s) => Some(stage.insert(s)),
                Err(()) => {
                    // The runner was lost with the batch; count it and
                    // start afresh.
                    if lane.tallied() {
                        route
                            .tally
                            .note_all(seqs.iter().copied(), Fate::Dropped(DropReason::PluginError));
                    } else {
                        route.metrics.dropped(DropReason::PluginError, popped.count);
                    }
                    route.complete(lane.reader, lane.tallied(), popped);
                    stage = start_stage(route, &program).await;
                    continue;
                }
            },
        };
        let staged = staged.map(|s| &s.1);
        if let Some(s) = staged {
            debug_assert_eq!(
                s.messages.len()
                    + s.dead.len()
                    + s.filtered
                    + s.answered
                    + s.dropped.iter().map(|d| d.1).sum::<usize>(),
                popped.count,
                "every staged message has exactly one fate"
            );
        }
        let view = View {
            lane,
            by_id: &by_id,
            seqs: &seqs,
        };
        let done = tokio::select! {
            biased;
            () = route.stop.cancelled() => Outcome::Unconfirmed,
            () = retarget.cancelled() => Outcome::Retarget,
            outcome = deliver(route, &program, view, &batch, staged, shared, &mut scratch, &mut latency) => outcome,
        };
        batch.clear();
        match done {
            Outcome::Counted => route.complete(lane.reader, lane.tallied(), popped),
            Outcome::Retarget => break LaneEnd::Retarget,
            Outcome::GivenBack => {
                if let Some(store) = store {
                    store.give_back(lane.reader);
                }
                route.make_room(SystemTime::now());
            }
            Outcome::Unconfirmed => {
                // The outputs never confirmed this batch.
                route.queue.abandon(popped);
                route.abandon(popped, stop_reason(shared));
                break LaneEnd::Done;
            }
        }
    };
    latency.flush();
    end
}

/// Why a stopped worker's messages are dropped.
fn stop_reason(shared: &Shared) -> DropReason {
    if shared.hard_stop.is_cancelled() {
        DropReason::Shutdown
    } else {
        DropReason::RouteRemoved
    }
}

/// A route's plugin runner and its reusable result, moved to the blocking
/// pool for each batch and back.
type Stage = Box<(StageRunner, Staged)>;

/// Builds the runner for `program`'s plugins, if it has any, and starts
/// their instances off the runtime.
async fn start_stage(route: &Route, program: &Program) -> Option<Stage> {
    let spec = &program.spec;
    if spec.stages.is_empty() {
        return None;
    }
    let build = || StageRunner::new(&route.name, &spec.stages, &spec.outputs);
    let mut runner = build();
    let runner = tokio::task::spawn_blocking(move || {
        runner.warm_up();
        runner
    })
    .await
    .unwrap_or_else(|_| build());
    Some(Box::new((runner, Staged::default())))
}

/// Runs `batch` through the plugins on the blocking pool, for plugins that
/// may run long (see [`StageRunner::runs_inline`]): such calls must not hold
/// a runtime thread. `Err` if the runner panicked (a host bug), losing the
/// batch.
async fn run_stage(mut stage: Stage, batch: &mut Vec<Message>) -> Result<Stage, ()> {
    let mut moved = std::mem::take(batch);
    let (stage, back) = tokio::task::spawn_blocking(move || {
        let (runner, staged) = &mut *stage;
        runner.run(&mut moved, staged);
        (stage, moved)
    })
    .await
    .map_err(|e| tracing::error!(error = %e, "a plugin stage panicked"))?;
    *batch = back;
    Ok(stage)
}

/// How a batch's delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Every message's fate is counted: the batch is done.
    Counted,
    /// A durable route's outputs had not taken all of it when a shutdown
    /// stopped the retrying: nothing is counted, and the batch stays on
    /// disk to be sent again after the next start.
    Unconfirmed,
    /// A reload changed a durable route's targets while the batch was
    /// out: nothing is counted, and the new lanes read it again.
    Retarget,
    /// A durable route's retention wanted the batch back while an output
    /// was retrying it: nothing is counted, the lane reads again from its
    /// cursor after retention has dropped what it drops.
    GivenBack,
}

/// Buffers a worker reuses from batch to batch.
#[derive(Default)]
struct Scratch {
    reasons: Vec<Option<DropReason>>,
    /// For each message with a reason: the result (output) that gave it.
    refused_by: Vec<u16>,
    /// Positions set aside for the dead-letter store: refused for good
    /// (too large), or given up on by a retry policy.
    set_aside: Vec<(u32, DropReason)>,
    /// Per output, the messages a routing plugin chose for it.
    routed: Vec<Vec<Message>>,
}

/// Hands a batch to the outputs and counts each message's outcome. Without
/// plugins, `batch` goes to every output; with them, `staged` says what goes
/// where (and `batch` is empty).
#[allow(clippy::too_many_arguments)]
async fn deliver(
    route: &Route,
    program: &Program,
    view: View<'_>,
    batch: &[Message],
    staged: Option<&Staged>,
    shared: &Shared,
    scratch: &mut Scratch,
    latency: &mut LocalHistogram,
) -> Outcome {
    let shutting = &shared.shutting_down;
    let lane = view.lane;
    let mine = |o: &usize| lane.only.is_none_or(|only| only == *o);
    let Some(staged) = staged else {
        let sends = (0..program.outputs.len())
            .filter(mine)
            .map(|o| program.target(o, batch, route));
        let results = send_all(sends, shutting).await;
        if results.iter().any(|s| s.given_back) {
            return Outcome::GivenBack;
        }
        if unconfirmed(route, &results, shutting) {
            return Outcome::Unconfirmed;
        }
        let shutting_down = shutting.load(Ordering::Relaxed);
        let all = |_: usize| None;
        let seq_of = |i: usize, _: &Message| view.seqs.get(i).copied();
        let output_of = |o: usize| &program.outputs[lane.only.unwrap_or(o)];
        let counting = view.counting(&seq_of);
        settle(
            route,
            batch,
            &results,
            all,
            output_of,
            shutting_down,
            scratch,
            latency,
            counting,
            shared,
        )
        .await;
        return Outcome::Counted;
    };
    let m = &route.metrics;
    if lane.primary() {
        // What the plugins decided, counted once: by the only lane, or by
        // the first target's.
        m.filtered.inc_by(staged.filtered as u64);
        m.answered.inc_by(staged.answered as u64);
        for (reason, n) in &staged.dropped {
            m.dropped(*reason, *n);
        }
        if lane.tallied() {
            // Every message not going on to an output is counted now.
            let forwarded: std::collections::HashSet<u64> = staged
                .messages
                .iter()
                .filter_map(|m| view.by_id.get(&m.id).copied())
                .collect();
            route.tally.note_all(
                view.seqs.iter().copied().filter(|q| !forwarded.contains(q)),
                Fate::Counted,
            );
        }
    }
    let routed = staged.by_output;
    if routed {
        scratch.routed.resize_with(program.outputs.len(), Vec::new);
        for (list, positions) in scratch.routed.iter_mut().zip(&staged.routed) {
            list.clear();
            list.extend(
                positions
                    .iter()
                    .map(|&i| staged.messages[i as usize].clone()),
            );
        }
    }
    let for_output = |o: usize| -> &[Message] {
        if routed {
            &scratch.routed[o]
        } else {
            &staged.messages
        }
    };
    // The outputs with something to send, in `to` order.
    let targets: SmallVec<[usize; 4]> = (0..program.outputs.len())
        .filter(mine)
        .filter(|&o| !for_output(o).is_empty())
        .collect();
    let dead = program
        .dead_letter
        .as_ref()
        .filter(|_| !staged.dead.is_empty() && lane.primary())
        .map(|o| (o, staged.dead.as_slice()));
    // Dead-letter store hook: route-level dead letters without an output.
    if dead.is_none()
        && !staged.dead.is_empty()
        && super::dead_letters::keeps_route_level(program, shared)
    {
        super::dead_letters::keep_route_level(route, program, &staged.dead, shared).await;
    }
    if targets.is_empty() && dead.is_none() {
        return Outcome::Counted;
    }
    let sends = targets
        .iter()
        .map(|&o| program.target(o, for_output(o), route));
    let dead = dead.map(|(o, batch)| Target {
        output: o,
        batch,
        retry: None,
        route,
    });
    let mut results = send_all(sends.chain(dead), shutting).await;
    if results.iter().any(|s| s.given_back) {
        return Outcome::GivenBack;
    }
    if unconfirmed(route, &results, shutting) {
        return Outcome::Unconfirmed;
    }
    let shutting_down = shutting.load(Ordering::Relaxed);
    let dead_result = (results.len() > targets.len())
        .then(|| results.pop())
        .flatten()
        .map(|s| s.result);
    if let Some(result) = dead_result {
        let accepted = count_fates(
            route,
            staged.dead.len(),
            std::iter::once((&result, None)),
            shutting_down,
            &mut scratch.reasons,
            &mut scratch.refused_by,
        );
        m.dead_lettered.inc_by(accepted as u64);
        count_drops(route, &scratch.reasons);
    }
    if staged.messages.is_empty() {
        return Outcome::Counted;
    }
    let positions = |o: usize| routed.then(|| staged.routed[targets[o]].as_slice());
    let seq_of = |_: usize, m: &Message| view.by_id.get(&m.id).copied();
    let output_of = |o: usize| &program.outputs[targets[o]];
    let counting = view.counting(&seq_of);
    let messages = &staged.messages;
    settle(
        route,
        messages,
        &results,
        positions,
        output_of,
        shutting_down,
        scratch,
        latency,
        counting,
        shared,
    )
    .await;
    Outcome::Counted
}

/// Counts each message's outcome ([`account`]), and puts what the
/// dead-letter store keeps into it. `output_of(o)` is the output of
/// result `o`.
#[allow(clippy::too_many_arguments)]
async fn settle<'p, 'o>(
    route: &Route,
    batch: &[Message],
    results: &[Sent],
    positions: impl Fn(usize) -> Option<&'p [u32]>,
    output_of: impl Fn(usize) -> &'o Arc<dyn Output>,
    shutting_down: bool,
    scratch: &mut Scratch,
    latency: &mut LocalHistogram,
    counting: Counting<'_>,
    shared: &Shared,
) {
    let keeps = shared.dead_letters.is_some();
    account(
        route,
        batch,
        results,
        positions,
        shutting_down,
        scratch,
        &*latency,
        counting,
        keeps,
    );
    super::dead_letters::keep_refused(
        route,
        batch,
        results,
        output_of,
        &scratch.set_aside,
        &scratch.refused_by,
        counting,
        shared,
    )
    .await;
}

/// What a lane's delivery needs to know beyond the batch.
#[derive(Clone, Copy)]
struct View<'a> {
    lane: Lane,
    /// Tallied lanes: each popped message's sequence number, by id, and
    /// in popped order.
    by_id: &'a HashMap<MessageId, u64>,
    seqs: &'a [u64],
}

impl<'a> View<'a> {
    fn counting(self, seq_of: &'a SeqOf<'a>) -> Counting<'a> {
        if self.lane.tallied() {
            Counting::Noted {
                seq_of,
                primary: self.lane.primary(),
            }
        } else {
            Counting::Now
        }
    }
}

/// A message's sequence number from its position in what was sent and
/// the message.
pub(crate) type SeqOf<'a> = dyn Fn(usize, &Message) -> Option<u64> + Sync + 'a;

/// How a lane counts its messages' outcomes.
#[derive(Clone, Copy)]
pub(crate) enum Counting<'a> {
    /// In the route's counters, now.
    Now,
    /// As notes in the route's tally, counted at release; the primary
    /// lane observes the latency.
    Noted {
        seq_of: &'a SeqOf<'a>,
        primary: bool,
    },
}

/// One output's share of a batch, and how failed sends to it are retried.
struct Target<'a> {
    output: &'a Arc<dyn Output>,
    batch: &'a [Message],
    retry: Option<Retry>,
    route: &'a Route,
}

impl Program {
    /// Output `o`'s share `batch`, with the route's retry policy for it.
    fn target<'a>(&'a self, o: usize, batch: &'a [Message], route: &'a Route) -> Target<'a> {
        Target {
            output: &self.outputs[o],
            batch,
            retry: self.retry[o],
            route,
        }
    }
}

/// Whether a durable route's batch must stay on disk: a shutdown stopped
/// the retrying before some output took its share.
fn unconfirmed(route: &Route, results: &[Sent], shutting: &AtomicBool) -> bool {
    route.queue.store().is_some()
        && shutting.load(Ordering::Relaxed)
        && results.iter().any(|s| {
            !s.exhausted
                && match &s.result {
                    Err(_) => true,
                    Ok(d) => d.rejections().iter().any(|r| !r.reason.is_permanent()),
                }
        })
}

/// A send (with its retries) in progress.
type Sending<'a> = Pin<Box<dyn Future<Output = Sent> + Send + 'a>>;

/// Hands each batch to its output concurrently, retrying per its policy,
/// and collects the results in order.
async fn send_all<'a>(
    sends: impl Iterator<Item = Target<'a>>,
    shutting: &'a AtomicBool,
) -> SmallVec<[Sent; 2]> {
    let mut pending: SmallVec<[Option<Sending<'a>>; 2]> = sends
        .map(|t| -> Option<Sending<'a>> {
            // A durable route releases the batch on the answer: the output
            // answers once it has written it, not once it has queued it.
            let until = if t.route.queue.store().is_some() {
                Until::Written
            } else {
                Until::Taken
            };
            let sending: Sending<'a> = Box::pin(async move {
                let metrics = &t.route.metrics;
                let _inflight = metrics.output_inflight(t.output.name(), t.batch.len());
                let started = std::time::Instant::now();
                let sent = match t.retry {
                    Some(policy) => {
                        let retried = |reason: Reject, n| {
                            metrics.output_retries(t.output.name(), reason).inc_by(n);
                        };
                        let queue = t.route.retains().then_some(&t.route.queue);
                        retry::send(
                            t.output,
                            t.batch,
                            until,
                            Some(policy),
                            shutting,
                            retried,
                            queue,
                        )
                        .await
                    }
                    None => Sent::once(until.send(t.output, t.batch).await),
                };
                metrics
                    .output_ack_latency(t.output.name())
                    .observe(started.elapsed().as_secs_f64());
                sent
            });
            Some(sending)
        })
        .collect();
    if let [Some(only)] = pending.as_mut_slice() {
        let mut out = SmallVec::new();
        out.push(only.as_mut().await);
        return out;
    }
    futures_join(pending.into_iter().flatten()).await
}

fn reason_of(reject: Reject) -> DropReason {
    match reject {
        Reject::NoSubscriber => DropReason::NoSubscriber,
        Reject::TooLarge => DropReason::TooLarge,
        Reject::Failed => DropReason::OutputError,
        Reject::Unencodable => DropReason::Unencodable,
        Reject::Refused => DropReason::Refused,
    }
}

/// Fills `reasons` with each of `n` messages' fate from the outputs'
/// results: `None` if every output it went to accepted it, else the first
/// reason an output (in order) gave. `positions` maps an output's batch
/// positions to the `n` messages (`None`: the output had all of them).
/// Returns how many were accepted.
fn count_fates<'a>(
    route: &Route,
    n: usize,
    results: impl Iterator<Item = (&'a Result<Delivery, egress::Error>, Option<&'a [u32]>)>,
    shutting_down: bool,
    reasons: &mut Vec<Option<DropReason>>,
    refused_by: &mut Vec<u16>,
) -> usize {
    reasons.clear();
    reasons.resize(n, None);
    refused_by.clear();
    refused_by.resize(n, 0);
    for (o, (result, positions)) in results.enumerate() {
        let len = positions.map_or(n, <[u32]>::len);
        let mut mark = |range: std::ops::Range<usize>, reason: DropReason| {
            let range = range.start.min(len)..range.end.min(len);
            for k in range {
                let i = positions.map_or(k, |p| p[k] as usize);
                if reasons[i].is_none() {
                    reasons[i] = Some(reason);
                    refused_by[i] = u16::try_from(o).unwrap_or(u16::MAX);
                }
            }
        };
        match result {
            Ok(delivery) => {
                for rejection in delivery.rejections() {
                    mark(rejection.messages.clone(), reason_of(rejection.reason));
                }
            }
            Err(err) => {
                let reason = match err {
                    egress::Error::Closed { .. } if shutting_down => DropReason::Shutdown,
                    egress::Error::Closed { .. } | egress::Error::Failed { .. } => {
                        DropReason::OutputError
                    }
                };
                tracing::debug!(route = %route.name, error = %err, "output refused a batch");
                mark(0..len, reason);
            }
        }
    }
    reasons.iter().filter(|r| r.is_none()).count()
}

/// Counts the drops `reasons` holds.
fn count_drops(route: &Route, reasons: &[Option<DropReason>]) {
    let mut counts = [0usize; DropReason::ALL.len()];
    for r in reasons.iter().flatten() {
        counts[*r as usize] += 1;
    }
    for reason in DropReason::ALL {
        route.metrics.dropped(reason, counts[reason as usize]);
    }
}

/// Counts each message of `batch` once: delivered if every output it went
/// to accepted it, else dropped for the first reason an output gave.
/// `positions(o)` maps output `o`'s batch positions to `batch` (`None`: it
/// had all of it).
#[allow(clippy::too_many_arguments)]
fn account<'p>(
    route: &Route,
    batch: &[Message],
    results: &[Sent],
    positions: impl Fn(usize) -> Option<&'p [u32]>,
    shutting_down: bool,
    scratch: &mut Scratch,
    latency: &LocalHistogram,
    counting: Counting<'_>,
    keeps_refused: bool,
) {
    scratch.set_aside.clear();
    let now = SystemTime::now();
    let observe = |m: &Message| {
        let secs = now
            .duration_since(m.publish_time)
            .map_or(0.0, |d| d.as_secs_f64());
        latency.observe(secs);
    };
    if results
        .iter()
        .all(|s| matches!(&s.result, Ok(d) if d.is_complete()))
    {
        match counting {
            Counting::Now => route.metrics.delivered.inc_by(batch.len() as u64),
            // Delivered is what is not noted.
            Counting::Noted { primary: false, .. } => return,
            Counting::Noted { primary: true, .. } => {}
        }
        batch.iter().for_each(observe);
        latency.flush();
        return;
    }
    let with_positions = results
        .iter()
        .enumerate()
        .map(|(o, s)| (&s.result, positions(o)));
    let delivered = count_fates(
        route,
        batch.len(),
        with_positions,
        shutting_down,
        &mut scratch.reasons,
        &mut scratch.refused_by,
    );
    // Dead-letter store hook: what an output refused for good, or a retry
    // policy gave up on, is the store's to count.
    if keeps_refused {
        super::dead_letters::set_aside_refused(
            &mut scratch.reasons,
            &scratch.refused_by,
            results,
            &mut scratch.set_aside,
        );
    }
    if let Counting::Noted { seq_of, primary } = counting {
        for (i, (message, reason)) in batch.iter().zip(scratch.reasons.iter()).enumerate() {
            match reason {
                Some(r) => {
                    if let Some(seq) = seq_of(i, message) {
                        route.tally.note(seq, Fate::Dropped(*r));
                    }
                }
                None if primary => observe(message),
                None => {}
            }
        }
        latency.flush();
        return;
    }
    for (message, reason) in batch.iter().zip(scratch.reasons.iter()) {
        match reason {
            None => observe(message),
            Some(r) => {
                if let Some(receipt) = &message.receipt
                    && r.may_pass_later()
                {
                    receipt.fail(r.as_str());
                }
            }
        }
    }
    route.metrics.delivered.inc_by(delivered as u64);
    count_drops(route, &scratch.reasons);
    latency.flush();
}

/// Counts what no worker will take any more as dropped for `reason`: at
/// the end of a shutdown, or of a removed route's drain time.
pub(crate) fn sweep(route: &Route, reason: DropReason) {
    let rest: Popped = route.queue.take_queued();
    route.abandon(rest, reason);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::{Rejection, SendFuture};
    use crate::ingress::Sink;
    use crate::ingress::Wait;
    use crate::pipeline::WhenFull;
    use crate::pipeline::testing::{FakeOutput, assert_conserved, msgs, spec, start, wait_idle};

    /// An output whose report is sloppy: overlapping and out-of-range
    /// positions.
    struct Sloppy;

    impl Output for Sloppy {
        fn name(&self) -> &str {
            "sloppy"
        }

        fn send<'a>(&'a self, batch: &'a [Message]) -> SendFuture<'a> {
            let n = batch.len();
            Box::pin(async move {
                let mut d = Delivery::accepted();
                d.reject_range(0..2, Reject::TooLarge);
                d.reject_range(1..3, Reject::Failed);
                d.reject_range(n..n + 10, Reject::NoSubscriber);
                Ok(d)
            })
        }
    }

    #[tokio::test]
    async fn each_message_is_counted_once_whatever_the_output_reports() {
        let registry = crate::metrics::Registry::new();
        let metrics = crate::pipeline::PipelineMetrics::new(&registry);
        let mut s = spec("r", "t.>", 100, WhenFull::DropNewest, &["sloppy"]);
        s.queue.max_batch = 5;
        let outputs: Vec<Arc<dyn Output>> = vec![Arc::new(Sloppy)];
        let p = crate::pipeline::Pipeline::start(vec![s], &outputs, &metrics).expect("valid");
        // Each offer's five are queued under one lock, so the worker pops
        // them as one batch.
        for round in 0..2u8 {
            assert_eq!(
                p.offer(msgs("t.x", round * 5..round * 5 + 5), Wait::Unbounded)
                    .await
                    .admitted,
                5
            );
            wait_idle(&p).await;
        }
        let snap = p.snapshot();
        let r = &snap.routes[0];
        assert_eq!(r.offered, 10);
        assert_eq!(
            r.dropped.too_large + r.dropped.output_error,
            r.dropped.total
        );
        assert_eq!(
            r.dropped.no_subscriber, 0,
            "positions past the batch are ignored"
        );
        assert_eq!(r.delivered + r.dropped.total, 10);
        assert_conserved(&snap);
    }

    #[tokio::test]
    async fn a_slow_output_holds_the_batch_for_all_targets() {
        let fast = FakeOutput::new("fast");
        let slow = FakeOutput::stalled("slow");
        let (p, _reg) = start(
            vec![spec(
                "r",
                "t.>",
                100,
                WhenFull::DropNewest,
                &["fast", "slow"],
            )],
            &[&fast, &slow],
        );
        assert_eq!(
            p.offer(msgs("t.x", 0..3), Wait::Unbounded).await.admitted,
            3
        );
        slow.wait_arrived(3).await;
        fast.wait_arrived(3).await;
        assert_eq!(fast.taken(), vec![0, 1, 2], "sent to both at once");
        assert_eq!(
            p.snapshot().routes[0].queue.in_flight,
            3,
            "not delivered yet"
        );
        slow.release();
        let snap = wait_idle(&p).await;
        assert_eq!(snap.routes[0].delivered, 3);
        assert_conserved(&snap);
    }

    #[test]
    fn rejections_map_to_reasons() {
        assert_eq!(reason_of(Reject::NoSubscriber), DropReason::NoSubscriber);
        assert_eq!(reason_of(Reject::TooLarge), DropReason::TooLarge);
        assert_eq!(reason_of(Reject::Failed), DropReason::OutputError);
        let r = Rejection {
            messages: 0..1,
            reason: Reject::Failed,
        };
        assert_eq!(r.messages.len(), 1);
    }
}
