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

use super::message::Message;
use super::metrics::DropReason;
use super::queue::Popped;
use super::route::Route;
use crate::egress::{self, Delivery, Output, Reject, SendFuture};

/// What the worker needs to know about the pipeline's state.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Set when a shutdown begins.
    pub(crate) shutting_down: AtomicBool,
    /// Cancelled when a shutdown's grace period ends: workers abandon their
    /// batch in flight and exit.
    pub(crate) hard_stop: CancellationToken,
}

/// Runs `route`'s worker until its queue is finished and drained, or until
/// the hard stop.
pub(crate) async fn run(route: Arc<Route>, shared: Arc<Shared>) {
    let max = route.spec.queue.max_batch.max(1);
    let mut batch: Vec<Message> = Vec::with_capacity(max.min(1024));
    let mut reasons: Vec<Option<DropReason>> = Vec::new();
    let latency = route.metrics.latency.local();
    loop {
        let popped = tokio::select! {
            biased;
            () = shared.hard_stop.cancelled() => break,
            popped = route.queue.pop_batch(max, &mut batch) => popped,
        };
        if popped.count == 0 {
            break;
        }
        let results = tokio::select! {
            biased;
            () = shared.hard_stop.cancelled() => None,
            results = send_all(&route.outputs, &batch) => Some(results),
        };
        match results {
            Some(results) => {
                let shutting_down = shared.shutting_down.load(Ordering::Relaxed);
                account(
                    &route,
                    &batch,
                    &results,
                    shutting_down,
                    &mut reasons,
                    &latency,
                );
                route.complete(popped);
                batch.clear();
            }
            None => {
                // The outputs never confirmed this batch.
                route.queue.complete(popped);
                route.abandon(popped);
                batch.clear();
                break;
            }
        }
    }
    latency.flush();
}

/// Hands `batch` to every output concurrently and collects their results in
/// output order.
async fn send_all(
    outputs: &[Arc<dyn Output>],
    batch: &[Message],
) -> SmallVec<[Result<Delivery, egress::Error>; 2]> {
    if let [only] = outputs {
        let mut out = SmallVec::new();
        out.push(only.send(batch).await);
        return out;
    }
    let mut pending: SmallVec<[Option<SendFuture<'_>>; 2]> =
        outputs.iter().map(|o| Some(o.send(batch))).collect();
    let mut results: SmallVec<[Option<Result<Delivery, egress::Error>>; 2]> =
        outputs.iter().map(|_| None).collect();
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

/// Counts each message of `batch` once: delivered if every output accepted
/// it, else dropped for the first reason an output (in `to` order) gave.
fn account(
    route: &Route,
    batch: &[Message],
    results: &[Result<Delivery, egress::Error>],
    shutting_down: bool,
    reasons: &mut Vec<Option<DropReason>>,
    latency: &LocalHistogram,
) {
    let n = batch.len();
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
        route.metrics.delivered.inc_by(n as u64);
        batch.iter().for_each(observe);
        latency.flush();
        return;
    }
    reasons.clear();
    reasons.resize(n, None);
    for result in results {
        match result {
            Ok(delivery) => {
                for rejection in delivery.rejections() {
                    let range = rejection.messages.start.min(n)..rejection.messages.end.min(n);
                    for slot in &mut reasons[range] {
                        slot.get_or_insert(reason_of(rejection.reason));
                    }
                }
            }
            Err(err) => {
                let reason = match err {
                    egress::Error::Closed { .. } if shutting_down => DropReason::Shutdown,
                    egress::Error::Closed { .. } | egress::Error::Failed { .. } => {
                        DropReason::OutputError
                    }
                };
                tracing::debug!(route = %route.spec.name, error = %err, "output refused a batch");
                for slot in reasons.iter_mut() {
                    slot.get_or_insert(reason);
                }
            }
        }
    }
    let mut counts = [0usize; DropReason::ALL.len()];
    let mut delivered = 0u64;
    for (message, reason) in batch.iter().zip(reasons.iter()) {
        match reason {
            None => {
                delivered += 1;
                observe(message);
            }
            Some(r) => counts[*r as usize] += 1,
        }
    }
    route.metrics.delivered.inc_by(delivered);
    for reason in DropReason::ALL {
        route.metrics.dropped(reason, counts[reason as usize]);
    }
    latency.flush();
}

/// Used by the pipeline's shutdown for what no worker will take any more.
pub(crate) fn sweep(route: &Route) {
    let rest: Popped = route.queue.take_queued();
    route.abandon(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::Rejection;
    use crate::ingress::Sink;
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
                p.offer(msgs("t.x", round * 5..round * 5 + 5), None)
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
        assert_eq!(p.offer(msgs("t.x", 0..3), None).await.admitted, 3);
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
