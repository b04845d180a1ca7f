//! Reconfiguration: a new set of route specs swapped in while messages
//! flow (a reload).
//!
//! The new generation is built in full first (every spec checked, every
//! output resolved), then swapped in with one atomic store; an offer admits
//! all of its messages under the generation it started with. Per route:
//!
//! - **kept**: same spec; the route, its queue, counters and worker stay.
//! - **changed**: same name and `when_full`, something else differs
//!   (pattern, conditions, plugins, targets, bounds); the route keeps its
//!   queue (what is queued stays queued), counters and worker, which takes
//!   up the new program at its next batch. New bounds apply at once; a queue
//!   holding more than its new bound keeps it all and takes no more until
//!   it drains below.
//! - **added**: a new route and worker.
//! - **removed**, or **replaced** (same name, new `when_full`): the old
//!   route leaves the table at once, so no new message reaches it; once the
//!   offers that matched it have finished, its worker drains what it holds
//!   to its outputs and exits. What is still there after the drain time is
//!   counted as dropped (`route_removed`). The reload never waits for any
//!   of this.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::Error;
use super::route::Route;
use super::runtime::{Generation, Pipeline, new_route, programs};
use super::spec::RouteSpec;
use super::table::RouteTable;
use super::worker;
use crate::egress::Output;

/// What a reconfiguration did, by route name.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    /// The generation now in force.
    pub generation: u64,
    /// Routes that did not change.
    pub kept: Vec<String>,
    /// Routes that kept their queue and took a new program.
    pub changed: Vec<String>,
    /// New routes.
    pub added: Vec<String>,
    /// Routes that left; they drain in the background.
    pub removed: Vec<String>,
    /// Routes rebuilt under the same name because their `when_full`
    /// changed; the old queue drains in the background.
    pub replaced: Vec<String>,
}

impl Pipeline {
    /// Swaps in the routes of `specs` (see the module docs), resolving
    /// their targets in `outputs`. Removed and replaced routes get `drain`
    /// to empty their queues. Returns at once; nothing waits for a drain.
    ///
    /// # Errors
    /// As [`Pipeline::start`] for bad specs (nothing changes then), or
    /// [`Error::ShuttingDown`].
    pub fn reconfigure(
        &self,
        specs: Vec<RouteSpec>,
        outputs: &[Arc<dyn Output>],
        drain: Duration,
    ) -> Result<Applied, Error> {
        self.reconfigure_forced(specs, outputs, drain, false)
    }

    /// [`Pipeline::reconfigure`]; with `force`, a durable route that holds
    /// messages may be removed or turned into a memory one: what it does
    /// not deliver within `drain` stays in its directory, delivered when a
    /// durable route of that name runs again.
    ///
    /// # Errors
    /// As [`Pipeline::reconfigure`].
    pub fn reconfigure_forced(
        &self,
        specs: Vec<RouteSpec>,
        outputs: &[Arc<dyn Output>],
        drain: Duration,
        force: bool,
    ) -> Result<Applied, Error> {
        let programs = programs(specs, outputs)?;
        let inner = &self.inner;
        let _one_at_a_time = inner
            .reconfiguring
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if inner.shared.shutting_down.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        let old = inner.current.load_full();
        let mut applied = Applied {
            generation: old.number + 1,
            ..Applied::default()
        };
        durable_changes(&old.routes, &programs, force)?;
        {
            let retired = inner.retired.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(p) = programs.iter().find(|p| {
                p.spec.queue.durable.is_some()
                    && retired
                        .iter()
                        .any(|r| r.name == p.spec.name && r.queue.store().is_some())
            }) {
                return Err(Error::DurableChange {
                    route: p.spec.name.clone(),
                    change: "its previous durable queue is still draining or closing; reload again once it has".to_owned(),
                });
            }
        }
        // Build every new route first: opening a durable queue can fail,
        // and then nothing may have changed.
        let mut built = Vec::with_capacity(programs.len());
        for program in programs {
            let existing = old
                .routes
                .iter()
                .find(|r| r.name == program.spec.name)
                .filter(|r| r.queue.when_full() == program.spec.queue.when_full)
                // Turning a queue durable or back builds a new route.
                .filter(|r| r.queue.store().is_some() == program.spec.queue.durable.is_some());
            built.push(match existing {
                Some(route) => Built::Kept(Arc::clone(route), Box::new(program)),
                None => {
                    let replaced = old.routes.iter().any(|r| r.name == program.spec.name);
                    Built::New(new_route(program, &inner.metrics, &inner.shared)?, replaced)
                }
            });
        }
        let mut table = RouteTable::new();
        let mut routes: Vec<Arc<Route>> = Vec::with_capacity(built.len());
        for built in built {
            match built {
                Built::Kept(route, program) => {
                    let name = program.spec.name.clone();
                    table.insert(&program.spec.pattern, &program.spec.attributes);
                    let now = route.program();
                    let same_targets = now.outputs.len() == program.outputs.len()
                        && now
                            .outputs
                            .iter()
                            .zip(program.outputs.iter())
                            .all(|(a, b)| Arc::ptr_eq(a, b));
                    if now.spec == program.spec && same_targets {
                        applied.kept.push(name);
                    } else {
                        let q = &program.spec.queue;
                        // Refreshes the capacity gauges.
                        inner.metrics.route(&name, q.capacity, q.capacity_bytes);
                        route.set_program(*program);
                        applied.changed.push(name);
                    }
                    routes.push(route);
                }
                Built::New(route, replaced) => {
                    let spec = &route.program().spec;
                    table.insert(&spec.pattern, &spec.attributes);
                    if replaced {
                        applied.replaced.push(route.name.clone());
                    } else {
                        applied.added.push(route.name.clone());
                    }
                    inner
                        .tracker
                        .spawn(worker::run(Arc::clone(&route), Arc::clone(&inner.shared)));
                    routes.push(route);
                }
            }
        }
        let leaving: Vec<Arc<Route>> = old
            .routes
            .iter()
            .filter(|r| !routes.iter().any(|n| Arc::ptr_eq(n, r)))
            .cloned()
            .collect();
        for route in &leaving {
            if !applied.replaced.contains(&route.name) {
                applied.removed.push(route.name.clone());
            }
        }
        inner.current.store(Arc::new(Generation {
            number: applied.generation,
            routes: routes.into(),
            table,
        }));
        if !leaving.is_empty() {
            inner
                .retired
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(leaving.iter().cloned());
            // A memory route turned durable hands its backlog to its
            // successor instead of draining it.
            let successors: Vec<(Arc<Route>, Arc<Route>)> = leaving
                .iter()
                .filter(|r| r.queue.store().is_none())
                .filter_map(|r| {
                    let now = inner.current.load();
                    let next = now.routes.iter().find(|n| n.name == r.name)?;
                    next.queue
                        .store()
                        .is_some()
                        .then(|| (Arc::clone(r), Arc::clone(next)))
                })
                .collect();
            for (from, to) in &successors {
                from.move_backlog(to);
            }
            let pipeline = self.clone();
            inner.tracker.spawn(async move {
                pipeline.retire(old, leaving, successors, drain).await;
            });
        }
        Ok(applied)
    }

    /// Lets `leaving` routes drain, then forgets them: waits until no offer
    /// still admits under `old` (the generation they belonged to), finishes
    /// their queues so their workers exit once empty, and stops whatever is
    /// still draining at the deadline (counted as `route_removed`).
    async fn retire(
        &self,
        old: Arc<Generation>,
        leaving: Vec<Arc<Route>>,
        successors: Vec<(Arc<Route>, Arc<Route>)>,
        drain: Duration,
    ) {
        let deadline = Instant::now() + drain;
        let hard_stop = self.inner.shared.hard_stop.clone();
        // Offers hold the generation they admit under; the last one to
        // finish lets go of it. Polled: reloads are rare, offers short.
        while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
            tokio::select! {
                () = hard_stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(2)) => {}
            }
        }
        drop(old);
        for route in &leaving {
            route.queue.finish();
        }
        // What offers under the old generation still queued moves too.
        for (from, to) in &successors {
            from.move_backlog(to);
        }
        for route in &leaving {
            let exited = tokio::select! {
                () = hard_stop.cancelled() => return,
                exited = tokio::time::timeout_at(deadline, route.exited.cancelled()) => exited.is_ok(),
            };
            if !exited {
                tracing::warn!(route = %route.name, "removed route did not drain in time; what it holds is counted as dropped (route_removed)");
                route.queue.close_intake();
                route.stop.cancel();
                route.exited.cancelled().await;
            }
        }
        // A durable queue that leaves saves its cursors and closes; what
        // it holds stays on disk.
        for route in &leaving {
            if let Some(store) = route.queue.store().cloned() {
                let left = store.stats();
                route.metrics.park(&route.name, left.held, left.held_bytes);
                let name = route.name.clone();
                match tokio::task::spawn_blocking(move || store.close()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(route = %name, error = %e, "durable queue: close failed")
                    }
                    Err(e) => {
                        tracing::error!(route = %name, error = %e, "durable queue: close panicked")
                    }
                }
            }
        }
        self.inner
            .retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|r| !leaving.iter().any(|l| Arc::ptr_eq(l, r)));
    }
}

/// A route of the new set, before the swap.
enum Built {
    /// An existing route that takes the new program.
    Kept(Arc<Route>, Box<super::route::Program>),
    /// A route built for this reload; `true` when it replaces one of the
    /// same name.
    New(Arc<Route>, bool),
}

/// Refuses what a reload must not do to a durable route: remove it, or
/// turn its queue into a memory one, while it holds messages (unless
/// `force`: the backlog then stays on disk), or change its `when_full`
/// (the queue's files cannot be opened twice). Turning a memory queue
/// durable is fine: its backlog moves to disk.
fn durable_changes(
    old: &[Arc<Route>],
    programs: &[super::route::Program],
    force: bool,
) -> Result<(), Error> {
    for route in old {
        if route.queue.store().is_none() {
            continue;
        }
        let stats = route.queue.stats();
        let depth = stats.queued + stats.in_flight;
        let refuse = |change: String| {
            Err(Error::DurableChange {
                route: route.name.clone(),
                change,
            })
        };
        let holding = |what: &str| {
            format!(
                "the reload {what} while its durable queue holds {depth} messages; let it drain first (switchyard_route_queue_depth) or reload with force (what it does not deliver while draining stays on disk, delivered when the route is durable again)"
            )
        };
        match programs.iter().find(|p| p.spec.name == route.name) {
            None if depth > 0 && !force => {
                return refuse(holding("removes (or renames) this route"));
            }
            None => {}
            Some(p) => match &p.spec.queue.durable {
                None if depth > 0 && !force => {
                    return refuse(holding("turns this route's queue into a memory one"));
                }
                None => {}
                Some(_) if p.spec.queue.when_full != route.queue.when_full() => {
                    return refuse(
                        "the reload changes this durable route's when_full; restart the router to change it (the queue stays on disk)".to_owned(),
                    );
                }
                Some(_) => {}
            },
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::Sink;
    use crate::ingress::Wait;
    use crate::pipeline::WhenFull;
    use crate::pipeline::testing::{
        DEADLINE, FakeOutput, assert_conserved, msgs, spec, start, wait_snapshot,
    };

    fn outputs(list: &[&Arc<FakeOutput>]) -> Vec<Arc<dyn Output>> {
        list.iter().map(|o| o.as_output()).collect()
    }

    #[tokio::test]
    async fn routes_are_kept_changed_added_and_removed() {
        let out = FakeOutput::new("out");
        let (p, _reg) = start(
            vec![
                spec("a", "t.>", 100, WhenFull::DropNewest, &["out"]),
                spec("b", "x.>", 100, WhenFull::DropNewest, &["out"]),
                spec("k", "k.>", 100, WhenFull::Block, &["out"]),
            ],
            &[&out],
        );
        assert_eq!(p.generation(), 1);
        let applied = p
            .reconfigure(
                vec![
                    spec("a", "t.y.>", 100, WhenFull::DropNewest, &["out"]),
                    spec("k", "k.>", 100, WhenFull::Block, &["out"]),
                    spec("c", "x.>", 100, WhenFull::DropNewest, &["out"]),
                ],
                &outputs(&[&out]),
                DEADLINE,
            )
            .expect("valid");
        assert_eq!(applied.generation, 2);
        assert_eq!(applied.kept, vec!["k"]);
        assert_eq!(applied.changed, vec!["a"]);
        assert_eq!(applied.added, vec!["c"]);
        assert_eq!(applied.removed, vec!["b"]);
        assert_eq!(p.generation(), 2);
        // The new table: t.z no longer matches "a"; x.1 goes to "c".
        assert_eq!(
            p.offer(msgs("t.z", 0..2), Wait::Unbounded).await.admitted,
            2
        );
        assert_eq!(
            p.offer(msgs("t.y.1", 2..4), Wait::Unbounded).await.admitted,
            2
        );
        assert_eq!(
            p.offer(msgs("x.1", 4..5), Wait::Unbounded).await.admitted,
            1
        );
        let snap = wait_snapshot(&p, |s| {
            s.routes.iter().all(|r| r.queue.depth == 0) && s.routes.len() == 3
        })
        .await;
        assert_eq!(snap.unrouted, 2);
        let by = |n: &str| snap.routes.iter().find(|r| r.name == n).expect("route");
        assert_eq!(by("a").delivered, 2);
        assert_eq!(by("c").delivered, 1);
        assert_eq!(by("a").pattern.to_string(), "t.y.>");
        assert_conserved(&snap);
    }

    #[tokio::test]
    async fn a_changed_route_keeps_what_it_holds_and_a_bad_spec_changes_nothing() {
        let out = FakeOutput::stalled("out");
        let (p, _reg) = start(
            vec![spec("a", "t.>", 100, WhenFull::DropNewest, &["out"])],
            &[&out],
        );
        assert_eq!(
            p.offer(msgs("t.x", 0..20), Wait::Unbounded).await.admitted,
            20
        );
        out.wait_arrived(1).await;
        let mut bad = spec("a", "t.>", 100, WhenFull::DropNewest, &["nope"]);
        bad.queue.max_batch = 4;
        assert!(matches!(
            p.reconfigure(vec![bad], &outputs(&[&out]), DEADLINE),
            Err(Error::UnknownOutput { .. })
        ));
        assert_eq!(p.generation(), 1);
        // Shrunk below what it holds: nothing is dropped, nothing more fits.
        let applied = p
            .reconfigure(
                vec![spec("a", "t.>", 10, WhenFull::DropNewest, &["out"])],
                &outputs(&[&out]),
                DEADLINE,
            )
            .expect("valid");
        assert_eq!(applied.changed, vec!["a"]);
        assert_eq!(
            p.offer(msgs("t.x", 20..21), Wait::Unbounded).await.admitted,
            1
        );
        let snap = p.snapshot();
        assert_eq!(snap.routes[0].queue.capacity, 10);
        assert_eq!(snap.routes[0].queue.depth, 20);
        assert_eq!(snap.routes[0].dropped.queue_full, 1);
        out.release();
        let snap = wait_snapshot(&p, |s| s.routes[0].queue.depth == 0).await;
        assert_eq!(snap.routes[0].delivered, 20);
        assert_eq!(out.taken(), (0..20).collect::<Vec<u8>>(), "in order");
        assert_conserved(&snap);
    }

    #[tokio::test]
    async fn a_removed_route_drains_in_the_background_and_counts_what_it_could_not() {
        let stuck = FakeOutput::stalled("stuck");
        let other = FakeOutput::new("other");
        let (p, reg) = start(
            vec![
                spec("gone", "t.>", 100, WhenFull::DropNewest, &["stuck"]),
                spec("stays", "t.>", 100, WhenFull::DropNewest, &["other"]),
            ],
            &[&stuck, &other],
        );
        assert_eq!(
            p.offer(msgs("t.x", 0..10), Wait::Unbounded).await.admitted,
            10
        );
        stuck.wait_arrived(1).await;
        let applied = p
            .reconfigure(
                vec![spec("stays", "t.>", 100, WhenFull::DropNewest, &["other"])],
                &outputs(&[&stuck, &other]),
                Duration::from_millis(200),
            )
            .expect("valid");
        assert_eq!(applied.removed, vec!["gone"]);
        // Still listed while it drains, then gone, its rest counted.
        assert!(p.snapshot().routes.iter().any(|r| r.draining));
        let snap = wait_snapshot(&p, |s| s.routes.len() == 1).await;
        assert_eq!(snap.routes[0].delivered, 10);
        assert!(p.retired().is_empty());
        let report = p.shutdown(DEADLINE).await;
        let gone = report.routes.iter().find(|r| r.name == "gone");
        assert!(gone.is_none(), "forgotten once drained or stopped");
        assert!(
            reg.encode().contains(
                r#"switchyard_route_dropped_total{reason="route_removed",route="gone"} 10"#
            ),
            "{}",
            reg.encode()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_is_lost_on_an_unchanged_route_while_others_change() {
        let out = FakeOutput::new("out");
        let side = FakeOutput::new("side");
        let (p, _reg) = start(
            vec![spec("steady", "t.>", 100_000, WhenFull::Block, &["out"])],
            &[&out, &side],
        );
        let producer = {
            let p = p.clone();
            tokio::spawn(async move {
                let mut sent = 0usize;
                for round in 0..200u32 {
                    let batch = msgs("t.x", 0..50);
                    sent += p.offer(batch, Wait::Unbounded).await.admitted;
                    if round % 20 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                sent
            })
        };
        for i in 0..50 {
            let mut specs = vec![spec("steady", "t.>", 100_000, WhenFull::Block, &["out"])];
            if i % 2 == 0 {
                specs.push(spec("flip", "t.x", 100, WhenFull::DropOldest, &["side"]));
            }
            p.reconfigure(specs, &outputs(&[&out, &side]), DEADLINE)
                .expect("valid");
            tokio::task::yield_now().await;
        }
        let sent = tokio::time::timeout(DEADLINE, producer)
            .await
            .expect("producer ends")
            .expect("join");
        let snap = wait_snapshot(&p, |s| {
            s.routes.iter().all(|r| r.queue.depth == 0) && s.routes.len() == 1
        })
        .await;
        let steady = snap
            .routes
            .iter()
            .find(|r| r.name == "steady")
            .expect("route");
        assert_eq!(steady.offered as usize, sent);
        assert_eq!(steady.delivered as usize, sent, "{steady:?}");
        assert_eq!(out.messages().len(), sent);
        assert_eq!(p.generation(), 51);
        assert_conserved(&snap);
    }
}
