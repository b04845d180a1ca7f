//! The worker's hook into the dead-letter store: what a route would
//! otherwise drop for good goes to the store when the router has one
//! (`[router] data_dir` set).
//!
//! - Route-level dead letters (a routing plugin's `dead_letter` verdict, a
//!   failed batch under `on_error = "dead_letter"`) on a route without a
//!   `dead_letter` output: reason `verdict` or `plugin_error`.
//! - An output's refusal for good: reason `too_large`, `unencodable` or
//!   `refused` (its peer said never, e.g. a webhook's 400), with that
//!   output.
//!
//! Either way the message leaves the route as `dead_lettered` once
//! [`DeadLetters::put`] resolved (so a durable route acknowledges it only
//! then), or as dropped when the store failed.

use std::time::SystemTime;

use std::sync::Arc;

use super::metrics::DropReason;
use super::retry::Sent;
use super::route::{Program, Route};
use super::stages::{DEAD_LETTER_REASON, DEAD_LETTER_ROUTE};
use super::tally::Fate;
use super::worker::{Counting, Shared};
use crate::egress::Output;
use crate::message::Message;
use crate::store::{DeadLetter, DeadReason};

/// True when `program`'s route-level dead letters are the store's: there
/// is a store and the route has no `dead_letter` output.
pub(crate) fn keeps_route_level(program: &Program, shared: &Shared) -> bool {
    program.dead_letter.is_none() && shared.dead_letters.is_some()
}

/// Puts the route-level dead letters `dead` (marked by the stages with
/// their route and reason) into the store and counts them.
pub(crate) async fn keep_route_level(
    route: &Route,
    program: &Program,
    dead: &[Message],
    shared: &Shared,
) {
    let Some(store) = &shared.dead_letters else {
        return;
    };
    let now = SystemTime::now();
    let router = program.spec.stages.router.as_ref().map(|p| p.name());
    let entries = dead
        .iter()
        .map(|m| {
            let mut message = m.clone();
            message.request = None;
            message.receipt = None;
            // The entry records these itself; the message is kept as it
            // came in.
            message.attributes.remove(DEAD_LETTER_ROUTE);
            let why = message
                .attributes
                .remove(DEAD_LETTER_REASON)
                .unwrap_or_default();
            let (reason, error) = match why.as_str() {
                "dead_lettered" => (
                    DeadReason::Verdict,
                    format!(
                        "routing plugin {:?} dead-lettered it",
                        router.unwrap_or("?")
                    ),
                ),
                other => (
                    DeadReason::PluginError,
                    format!("a plugin failed on its batch: {other}"),
                ),
            };
            DeadLetter {
                message,
                route: route.name.clone(),
                output: None,
                reason,
                attempts: 1,
                first_error: error.clone(),
                last_error: error,
                first_failed: now,
                last_failed: now,
            }
        })
        .collect();
    counted(
        route,
        store.put(entries).await,
        dead.len(),
        DropReason::DiskFull,
    );
}

/// Takes out of `reasons` (so they are not counted as dropped) the
/// messages the dead-letter store keeps instead, listing their positions
/// in `set_aside`: those an output refused for good (too large), and those
/// whose output's retry policy gave up on them (`refused_by[i]` is the
/// result that gave message `i` its reason).
pub(crate) fn set_aside_refused(
    reasons: &mut [Option<DropReason>],
    refused_by: &[u16],
    results: &[Sent],
    set_aside: &mut Vec<(u32, DropReason)>,
) {
    set_aside.clear();
    for (i, r) in reasons.iter_mut().enumerate() {
        let Some(reason) = *r else { continue };
        let exhausted = refused_by
            .get(i)
            .and_then(|&o| results.get(usize::from(o)))
            .is_some_and(|s| s.exhausted);
        let keep = matches!(
            reason,
            DropReason::TooLarge | DropReason::Unencodable | DropReason::Refused
        ) || (exhausted
            && matches!(reason, DropReason::NoSubscriber | DropReason::OutputError));
        if keep {
            *r = None;
            set_aside.push((i as u32, reason));
        }
    }
}

/// Puts the messages of `batch` at `positions` (set aside by
/// [`set_aside_refused`]) into the store, each with the output that
/// refused it (`output_of(refused_by[i])`) and why, and counts them as
/// `counting` says: dead-lettered once the store has them, else dropped.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn keep_refused<'a>(
    route: &Route,
    batch: &[Message],
    results: &[Sent],
    output_of: impl Fn(usize) -> &'a Arc<dyn Output>,
    positions: &[(u32, DropReason)],
    refused_by: &[u16],
    counting: Counting<'_>,
    shared: &Shared,
) {
    let Some(store) = &shared.dead_letters else {
        return;
    };
    if positions.is_empty() {
        return;
    }
    let now = SystemTime::now();
    let mut fallback = Vec::with_capacity(positions.len());
    let entries = positions
        .iter()
        .map(|&(i, why)| {
            let i = i as usize;
            let o = refused_by.get(i).map_or(0, |&o| usize::from(o));
            let sent = results.get(o);
            let output = output_of(o).name().to_owned();
            let mut message = batch[i].clone();
            message.request = None;
            message.receipt = None;
            let (reason, attempts, first, last) = if why == DropReason::TooLarge {
                let error = format!(
                    "output {output:?} refused it as too large ({} bytes)",
                    message.size()
                );
                fallback.push(DropReason::TooLarge);
                (DeadReason::TooLarge, 1, error.clone(), error)
            } else if why == DropReason::Unencodable {
                let error = format!(
                    "output {output:?} cannot carry it (an attribute its protocol cannot hold)"
                );
                fallback.push(DropReason::Unencodable);
                (DeadReason::Unencodable, 1, error.clone(), error)
            } else if why == DropReason::Refused {
                let error = format!(
                    "output {output:?}: its peer refused it for good ({})",
                    sent.and_then(|s| s.last_error.as_deref())
                        .unwrap_or("refused")
                );
                fallback.push(DropReason::Refused);
                (
                    DeadReason::Refused,
                    sent.map_or(1, |s| s.attempts),
                    error.clone(),
                    error,
                )
            } else {
                let sent = sent.expect("a set-aside message has the result that refused it");
                let error = |e: &Option<String>| {
                    format!("output {output:?}: {}", e.as_deref().unwrap_or("refused"))
                };
                fallback.push(DropReason::OutputError);
                (
                    DeadReason::RetriesExhausted,
                    sent.attempts,
                    error(&sent.first_error),
                    error(&sent.last_error),
                )
            };
            DeadLetter {
                message,
                route: route.name.clone(),
                output: Some(output),
                reason,
                attempts,
                first_error: first,
                last_error: last,
                first_failed: now,
                last_failed: now,
            }
        })
        .collect();
    let put = store.put(entries).await;
    match counting {
        Counting::Now => match put {
            Ok(()) => route.metrics.dead_lettered.inc_by(positions.len() as u64),
            Err(e) => {
                tracing::warn!(route = %route.name, error = %e, messages = positions.len(), "the dead-letter store refused messages; dropped");
                for reason in fallback {
                    route.metrics.dropped(reason, 1);
                }
            }
        },
        Counting::Noted { seq_of, .. } => {
            if let Err(e) = &put {
                tracing::warn!(route = %route.name, error = %e, messages = positions.len(), "the dead-letter store refused messages; dropped");
            }
            for (&(i, _), reason) in positions.iter().zip(fallback) {
                let i = i as usize;
                if let Some(seq) = seq_of(i, &batch[i]) {
                    let fate = if put.is_ok() {
                        Fate::DeadLettered
                    } else {
                        Fate::Dropped(reason)
                    };
                    route.tally.note(seq, fate);
                }
            }
        }
    }
}

/// Counts `n` messages dead-lettered once the store has them, or dropped
/// for `otherwise` when it failed.
fn counted(route: &Route, put: Result<(), crate::store::Error>, n: usize, otherwise: DropReason) {
    match put {
        Ok(()) => route.metrics.dead_lettered.inc_by(n as u64),
        Err(e) => {
            tracing::warn!(route = %route.name, error = %e, messages = n, "the dead-letter store refused messages; dropped");
            route.metrics.dropped(otherwise, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::egress::{Output, Reject};
    use crate::ingress::{Sink, Wait};
    use crate::metrics::Registry;
    use crate::pipeline::testing::{FakeOutput, Mode, assert_conserved, msgs, spec, wait_idle};
    use crate::pipeline::{Pipeline, PipelineMetrics, WhenFull};
    use crate::store::dead::{Filter, Metrics, Options};
    use crate::store::{DeadLetters, DeadReason, Fsync, MemoryStorage};

    fn store() -> Arc<DeadLetters> {
        let storage = MemoryStorage::new();
        let (store, _) = DeadLetters::open(
            Arc::new(storage),
            Options {
                fsync: Fsync::Always,
                ..Options::default()
            },
            Metrics::register(&Registry::new()),
        )
        .expect("opens");
        Arc::new(store)
    }

    fn start(store: Option<Arc<DeadLetters>>, outputs: &[&Arc<FakeOutput>]) -> Pipeline {
        let metrics = PipelineMetrics::new(&Registry::new());
        let outs: Vec<Arc<dyn Output>> = outputs.iter().map(|o| o.as_output()).collect();
        let names: Vec<&str> = outputs.iter().map(|o| o.name()).collect();
        Pipeline::start_with(
            vec![spec("r", "t.>", 100, WhenFull::Block, &names)],
            &outs,
            &metrics,
            store,
        )
        .expect("starts")
    }

    #[tokio::test]
    async fn too_large_rejections_go_to_the_store_and_count_as_dead_lettered() {
        let store = store();
        let big = FakeOutput::with("big", Mode::RejectOdd(Reject::TooLarge), true);
        let all = FakeOutput::new("all");
        let pipeline = start(Some(Arc::clone(&store)), &[&big, &all]);
        let offered = pipeline.offer(msgs("t.a", 0..10), Wait::Bounded).await;
        assert_eq!(offered.admitted, 10);
        let snap = wait_idle(&pipeline).await;
        let route = &snap.routes[0];
        assert_eq!(route.dead_lettered, 5, "{route:?}");
        assert_eq!(route.delivered, 5, "{route:?}");
        assert_eq!(route.dropped.too_large, 0, "{route:?}");
        assert_conserved(&snap);
        let page = store.list(&Filter::default(), None, 100).expect("list");
        assert_eq!(page.entries.len(), 5);
        for s in &page.entries {
            assert_eq!(s.reason, DeadReason::TooLarge);
            assert_eq!(s.output.as_deref(), Some("big"));
            assert_eq!(s.route, "r");
        }
        pipeline.shutdown(std::time::Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn what_a_retry_policy_gives_up_on_goes_to_the_store_with_its_attempts() {
        let store = store();
        let flaky = FakeOutput::with("flaky", Mode::RejectOdd(Reject::Failed), true);
        let metrics = PipelineMetrics::new(&Registry::new());
        let mut s = spec("r", "t.>", 100, WhenFull::Block, &["flaky"]);
        s.retry.insert(
            "flaky".into(),
            crate::config::Retry {
                initial: std::time::Duration::from_millis(10),
                max: std::time::Duration::from_millis(10),
                max_attempts: Some(3),
                max_elapsed: None,
            },
        );
        let pipeline = Pipeline::start_with(
            vec![s],
            &[flaky.as_output()],
            &metrics,
            Some(Arc::clone(&store)),
        )
        .expect("starts");
        pipeline.offer(msgs("t.a", 0..10), Wait::Bounded).await;
        let snap = wait_idle(&pipeline).await;
        let route = &snap.routes[0];
        assert_eq!((route.delivered, route.dead_lettered), (5, 5), "{route:?}");
        assert_eq!(route.dropped.total, 0, "{route:?}");
        assert_conserved(&snap);
        let page = store.list(&Filter::default(), None, 100).expect("list");
        assert_eq!(page.entries.len(), 5);
        for s in &page.entries {
            assert_eq!(s.reason, DeadReason::RetriesExhausted);
            assert_eq!(s.output.as_deref(), Some("flaky"));
            assert_eq!(s.attempts, 3);
            assert!(s.last_error.contains("failed"), "{s:?}");
        }
        pipeline.shutdown(std::time::Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn without_a_store_too_large_is_dropped_as_before() {
        let big = FakeOutput::with("big", Mode::RejectOdd(Reject::TooLarge), true);
        let pipeline = start(None, &[&big]);
        pipeline.offer(msgs("t.a", 0..10), Wait::Bounded).await;
        let snap = wait_idle(&pipeline).await;
        assert_eq!(snap.routes[0].dropped.too_large, 5);
        assert_eq!(snap.routes[0].dead_lettered, 0);
        assert_conserved(&snap);
        pipeline.shutdown(std::time::Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn inject_puts_messages_into_a_named_route_only() {
        let out = FakeOutput::new("out");
        let pipeline = start(None, &[&out]);
        // A topic no route matches still enters the named route.
        let offered = pipeline
            .inject("r", msgs("other.topic", 0..3), Wait::Bounded)
            .await
            .expect("route exists");
        assert_eq!(offered.admitted, 3);
        out.wait_arrived(3).await;
        let snap = wait_idle(&pipeline).await;
        assert_eq!(snap.routes[0].offered, 3);
        assert_conserved(&snap);
        let err = pipeline
            .inject("nope", msgs("t.a", 0..1), Wait::Bounded)
            .await
            .expect_err("no such route");
        assert!(
            err.to_string().contains("no route is called \"nope\""),
            "{err}"
        );
        pipeline.shutdown(std::time::Duration::from_secs(1)).await;
    }
}
