//! A route's worker: one task per route that pops batches from the route's
//! queue, hands each batch to every target output at once, and counts each
//! message's outcome exactly.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::SystemTime;

use prometheus::local::LocalHistogram;
use smallvec::SmallVec;
use tokio_util::sync::CancellationToken;

use super::metrics::{DropReason, delta};
use super::queue::Popped;
use super::route::{Program, Route};
use super::stages::{StageRunner, Staged};
use crate::egress::{self, Delivery, Output, Reject, SendFuture};
use crate::message::Message;
use crate::message::request::RouteTag;

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
pub(crate) async fn run(route: Arc<Route>, shared: Arc<Shared>) {
    let mut batch: Vec<Message> = Vec::new();
    let mut scratch = Scratch::default();
    let mut latency = route.metrics.latency.local();
    let mut program = route.program();
    let mut stage = start_stage(&route, &program).await;
    let route_name: Arc<str> = Arc::from(route.name.as_str());
    let tag = |program: &Program| RouteTag {
        name: Arc::clone(&route_name),
        timeout: program.spec.request_timeout,
    };
    let mut request_tag = tag(&program);
    loop {
        let max = program.spec.queue.max_batch.max(1);
        let popped = tokio::select! {
            biased;
            () = route.stop.cancelled() => break,
            popped = route.queue.pop_batch(max, &mut batch) => popped,
        };
        if popped.count == 0 {
            break;
        }
        if popped.damaged > 0 {
            route.metrics.corrupt.inc_by(popped.damaged);
        }
        if popped.lost > 0 {
            // Accepted once, gone to damage on disk: counted, not silent.
            route.metrics.dropped(DropReason::Corrupt, popped.lost);
            route.metrics.held(-delta(popped.lost), 0);
        }
        // A reload's new program applies from a batch boundary: every
        // message of a batch sees one generation's plugins and targets.
        let now = route.program();
        if !Arc::ptr_eq(&now, &program) {
            if now.spec.stages != program.spec.stages || now.spec.outputs != program.spec.outputs {
                stage = start_stage(&route, &now).await;
            }
            program = now;
            request_tag = tag(&program);
        }
        // Requests learn which route carries them, and so their timeout.
        for request in batch.iter_mut().filter_map(|m| m.request.as_mut()) {
            request.set_route(request_tag.clone());
        }
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
                    route.metrics.dropped(DropReason::PluginError, popped.count);
                    route.complete(popped);
                    stage = start_stage(&route, &program).await;
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
        let done = tokio::select! {
            biased;
            () = route.stop.cancelled() => false,
            () = deliver(&route, &program, &batch, staged, &shared, &mut scratch, &mut latency) => true,
        };
        batch.clear();
        if done {
            route.complete(popped);
        } else {
            // The outputs never confirmed this batch.
            route.queue.abandon(popped);
            route.abandon(popped, stop_reason(&shared));
            break;
        }
    }
    latency.flush();
    if route.stop.is_cancelled() && !shared.hard_stop.is_cancelled() {
        // A removed route whose drain time ran out: nobody else will count
        // what it still holds.
        sweep(&route, DropReason::RouteRemoved);
    }
    route.exited.cancel();
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

/// Buffers a worker reuses from batch to batch.
#[derive(Default)]
struct Scratch {
    reasons: Vec<Option<DropReason>>,
    /// Positions set aside as `too_large` for the dead-letter store, and
    /// whether to (the router has one).
    too_large: Vec<u32>,
    keep_too_large: bool,
    /// Per output, the messages a routing plugin chose for it.
    routed: Vec<Vec<Message>>,
}

/// Hands a batch to the outputs and counts each message's outcome. Without
/// plugins, `batch` goes to every output; with them, `staged` says what goes
/// where (and `batch` is empty).
async fn deliver(
    route: &Route,
    program: &Program,
    batch: &[Message],
    staged: Option<&Staged>,
    shared: &Shared,
    scratch: &mut Scratch,
    latency: &mut LocalHistogram,
) {
    let Some(staged) = staged else {
        let results = send_all(program.outputs.iter().map(|o| (o, batch))).await;
        let shutting_down = shared.shutting_down.load(Ordering::Relaxed);
        let all = |_: usize| None;
        scratch.keep_too_large = super::dead_letters::keeps_too_large(shared);
        account(route, batch, &results, all, shutting_down, scratch, latency);
        // Dead-letter store hook: too_large rejections.
        super::dead_letters::keep_too_large(
            route,
            program,
            batch,
            &results,
            all,
            &scratch.too_large,
            shared,
        )
        .await;
        return;
    };
    let m = &route.metrics;
    m.filtered.inc_by(staged.filtered as u64);
    m.answered.inc_by(staged.answered as u64);
    for (reason, n) in &staged.dropped {
        m.dropped(*reason, *n);
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
        .filter(|&o| !for_output(o).is_empty())
        .collect();
    let dead = program
        .dead_letter
        .as_ref()
        .filter(|_| !staged.dead.is_empty())
        .map(|o| (o, staged.dead.as_slice()));
    // Dead-letter store hook: route-level dead letters without an output.
    if dead.is_none()
        && !staged.dead.is_empty()
        && super::dead_letters::keeps_route_level(program, shared)
    {
        super::dead_letters::keep_route_level(route, program, &staged.dead, shared).await;
    }
    if targets.is_empty() && dead.is_none() {
        return;
    }
    let sends = targets
        .iter()
        .map(|&o| (&program.outputs[o], for_output(o)));
    let mut results = send_all(sends.chain(dead)).await;
    let shutting_down = shared.shutting_down.load(Ordering::Relaxed);
    let dead_result = (results.len() > targets.len())
        .then(|| results.pop())
        .flatten();
    if let Some(result) = dead_result {
        let accepted = count_fates(
            route,
            staged.dead.len(),
            std::iter::once((&result, None)),
            shutting_down,
            &mut scratch.reasons,
        );
        m.dead_lettered.inc_by(accepted as u64);
        count_drops(route, &scratch.reasons);
    }
    if staged.messages.is_empty() {
        return;
    }
    let positions = |o: usize| routed.then(|| staged.routed[targets[o]].as_slice());
    scratch.keep_too_large = super::dead_letters::keeps_too_large(shared);
    account(
        route,
        &staged.messages,
        &results,
        positions,
        shutting_down,
        scratch,
        latency,
    );
    // Dead-letter store hook: too_large rejections.
    super::dead_letters::keep_too_large(
        route,
        program,
        &staged.messages,
        &results,
        positions,
        &scratch.too_large,
        shared,
    )
    .await;
}

/// Hands each batch to its output concurrently and collects the results in
/// order.
async fn send_all<'a>(
    sends: impl Iterator<Item = (&'a Arc<dyn Output>, &'a [Message])>,
) -> SmallVec<[Result<Delivery, egress::Error>; 2]> {
    let mut pending: SmallVec<[Option<SendFuture<'a>>; 2]> =
        sends.map(|(o, batch)| Some(o.send(batch))).collect();
    if let [Some(only)] = pending.as_mut_slice() {
        let mut out = SmallVec::new();
        out.push(only.as_mut().await);
        return out;
    }
    let mut results: SmallVec<[Option<Result<Delivery, egress::Error>>; 2]> =
        pending.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut busy = false;
        for (slot, result) in pending.iter_mut().zip(results.iter_mut()) {
            if let Some(fut) = slot {
                match fut.as_mut().poll(cx) {
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
    results
        .into_iter()
        .map(|r| r.expect("poll_fn returns once every send has completed"))
        .collect()
}

fn reason_of(reject: Reject) -> DropReason {
    match reject {
        Reject::NoSubscriber => DropReason::NoSubscriber,
        Reject::TooLarge => DropReason::TooLarge,
        Reject::Failed => DropReason::OutputError,
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
) -> usize {
    reasons.clear();
    reasons.resize(n, None);
    for (result, positions) in results {
        let len = positions.map_or(n, <[u32]>::len);
        let mut mark = |range: std::ops::Range<usize>, reason: DropReason| {
            let range = range.start.min(len)..range.end.min(len);
            for k in range {
                let i = positions.map_or(k, |p| p[k] as usize);
                reasons[i].get_or_insert(reason);
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
fn account<'p>(
    route: &Route,
    batch: &[Message],
    results: &[Result<Delivery, egress::Error>],
    positions: impl Fn(usize) -> Option<&'p [u32]>,
    shutting_down: bool,
    scratch: &mut Scratch,
    latency: &LocalHistogram,
) {
    scratch.too_large.clear();
    let now = SystemTime::now();
    let observe = |m: &Message| {
        let secs = now
            .duration_since(m.publish_time)
            .map_or(0.0, |d| d.as_secs_f64());
        latency.observe(secs);
    };
    if results
        .iter()
        .all(|r| matches!(r, Ok(d) if d.is_complete()))
    {
        route.metrics.delivered.inc_by(batch.len() as u64);
        batch.iter().for_each(observe);
        latency.flush();
        return;
    }
    let with_positions = results.iter().enumerate().map(|(o, r)| (r, positions(o)));
    let delivered = count_fates(
        route,
        batch.len(),
        with_positions,
        shutting_down,
        &mut scratch.reasons,
    );
    for (message, reason) in batch.iter().zip(scratch.reasons.iter()) {
        if reason.is_none() {
            observe(message);
        }
    }
    route.metrics.delivered.inc_by(delivered as u64);
    // Dead-letter store hook: too_large messages are the store's to count.
    if scratch.keep_too_large {
        super::dead_letters::set_aside_too_large(&mut scratch.reasons, &mut scratch.too_large);
    }
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
    use crate::egress::Rejection;
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
