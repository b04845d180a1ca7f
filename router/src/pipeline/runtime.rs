//! The running pipeline: routes built from specs, one worker task per route,
//! introspection, and the graceful shutdown.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::Error;
use super::metrics::DropReason;
use super::metrics::PipelineMetrics;
use super::route::{Program, Route};
use super::snapshot::{PipelineSnapshot, RouteReport, RouteSnapshot, ShutdownReport};
use super::spec::RouteSpec;
use super::table::RouteTable;
use super::worker::{self, Shared};
use crate::egress::Output;
use crate::message::subscription_prefixes;

/// The router's core: matches each offered message against the route table,
/// admits it to every matching route's bounded queue (or to none), and runs
/// one worker per route that hands batches to the route's outputs.
///
/// Implements [`crate::ingress::Sink`]. Cheap to clone (shared inside).
#[derive(Clone, Debug)]
pub struct Pipeline {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    /// The routes and table in force; an offer matches and admits all of
    /// its messages against the one it loaded first.
    pub(crate) current: ArcSwap<Generation>,
    /// Routes a reload removed (or replaced) whose workers still drain.
    pub(crate) retired: Mutex<Vec<Arc<Route>>>,
    /// Serialises reconfigurations.
    pub(crate) reconfiguring: Mutex<()>,
    pub(crate) metrics: PipelineMetrics,
    pub(crate) intake: Intake,
    pub(crate) shared: Arc<Shared>,
    pub(crate) tracker: TaskTracker,
}

/// One generation of the route set: the routes (in config order) and the
/// table that matches messages to them.
#[derive(Debug)]
pub(crate) struct Generation {
    /// 1 at start, plus one per applied reconfiguration.
    pub(crate) number: u64,
    pub(crate) routes: Box<[Arc<Route>]>,
    pub(crate) table: RouteTable,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Without a shutdown, workers would wait on their queues forever.
        self.shared.hard_stop.cancel();
    }
}

/// Admission in progress, so a shutdown can wait for it to finish before
/// telling the workers no more messages will come.
#[derive(Debug, Default)]
pub(crate) struct Intake {
    active: AtomicUsize,
    idle: Notify,
    shared: Arc<Shared>,
}

/// Held by an offer while it admits messages.
pub(crate) struct IntakeGuard<'a>(&'a Intake);

impl Intake {
    /// Registers an offer, or returns `None` once shutdown has begun.
    pub(crate) fn enter(&self) -> Option<IntakeGuard<'_>> {
        // SeqCst pairs with the store in `Pipeline::shutdown`: either the
        // shutdown sees this offer as active, or this offer sees the flag.
        self.active.fetch_add(1, Ordering::SeqCst);
        let guard = IntakeGuard(self);
        if self.is_closed() { None } else { Some(guard) }
    }

    /// True once shutdown has begun.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.shutting_down.load(Ordering::SeqCst)
    }

    async fn wait_idle(&self, deadline: Instant) -> bool {
        loop {
            let mut notified = pin!(self.idle.notified());
            notified.as_mut().enable();
            if self.active.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.active.load(Ordering::SeqCst) == 0;
            }
        }
    }
}

impl Drop for IntakeGuard<'_> {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 && self.0.is_closed() {
            self.0.idle.notify_waiters();
        }
    }
}

impl Pipeline {
    /// Builds the routes of `specs` (in config order), resolves their target
    /// outputs by [`Output::name`] in `outputs`, and spawns one worker per
    /// route on the current tokio runtime.
    ///
    /// # Errors
    /// [`Error`] for a duplicate or empty route name, a zero bound, a route
    /// without outputs, an output name that is unknown or given twice, or
    /// when called outside a tokio runtime.
    pub fn start(
        specs: Vec<RouteSpec>,
        outputs: &[Arc<dyn Output>],
        metrics: &PipelineMetrics,
    ) -> Result<Self, Error> {
        Self::start_with(specs, outputs, metrics, None)
    }

    /// [`Pipeline::start`], with the router's dead-letter store: routes
    /// without a `dead_letter` output keep their dead letters in it, and
    /// outputs' `too_large` rejections go there instead of being dropped.
    ///
    /// # Errors
    /// As [`Pipeline::start`].
    pub fn start_with(
        specs: Vec<RouteSpec>,
        outputs: &[Arc<dyn Output>],
        metrics: &PipelineMetrics,
        dead_letters: Option<Arc<crate::store::DeadLetters>>,
    ) -> Result<Self, Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime);
        }
        let programs = programs(specs, outputs)?;
        let shared = Arc::new(Shared {
            dead_letters,
            ..Shared::default()
        });
        let tracker = TaskTracker::new();
        let mut table = RouteTable::new();
        let mut routes = Vec::with_capacity(programs.len());
        for program in programs {
            table.insert(&program.spec.pattern, &program.spec.attributes);
            let route = new_route(program, metrics, &shared)?;
            tracker.spawn(worker::run(Arc::clone(&route), Arc::clone(&shared)));
            routes.push(route);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                current: ArcSwap::from_pointee(Generation {
                    number: 1,
                    routes: routes.into(),
                    table,
                }),
                retired: Mutex::new(Vec::new()),
                reconfiguring: Mutex::new(()),
                metrics: metrics.clone(),
                intake: Intake {
                    shared: Arc::clone(&shared),
                    ..Intake::default()
                },
                shared,
                tracker,
            }),
        })
    }

    /// The generation of the route set in force: 1 at start, plus one per
    /// [`Pipeline::reconfigure`].
    pub fn generation(&self) -> u64 {
        self.inner.current.load().number
    }

    /// The literal prefixes a `zmq-sub` input subscribes its publishers to,
    /// so that traffic no route wants never crosses the wire (see
    /// [`super::Pattern::literal_prefix`]). Minimal: no prefix covers
    /// another; `[""]` means everything.
    pub fn subscription_prefixes(&self) -> Vec<String> {
        let generation = self.inner.current.load();
        let programs: Vec<_> = generation.routes.iter().map(|r| r.program()).collect();
        subscription_prefixes(programs.iter().map(|p| &p.spec.pattern))
    }

    /// Every route's state and counts, for the admin API.
    pub fn snapshot(&self) -> PipelineSnapshot {
        let generation = self.inner.current.load_full();
        let mut routes: Vec<_> = generation.routes.iter().map(|r| r.snapshot()).collect();
        // A removed or replaced route still draining: its messages count in
        // the depth of the route of the same name, if any (they share the
        // metric series), else it is listed as draining.
        for old in self.retired() {
            let snap = old.snapshot();
            match routes.iter_mut().find(|r| r.name == snap.name) {
                Some(r) => r.queue.absorb(&snap.queue),
                None => routes.push(RouteSnapshot {
                    draining: true,
                    ..snap
                }),
            }
        }
        PipelineSnapshot {
            generation: generation.number,
            routes,
            unrouted: self.inner.metrics.unrouted.get(),
            shutting_down: self.inner.intake.is_closed(),
        }
    }

    /// Routes removed or replaced by a reload whose workers still drain.
    pub(crate) fn retired(&self) -> Vec<Arc<Route>> {
        self.inner
            .retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every route with a worker: the current ones, then the retired ones.
    fn all_routes(&self) -> Vec<Arc<Route>> {
        let mut all: Vec<_> = self.inner.current.load().routes.to_vec();
        all.extend(self.retired());
        all
    }

    /// True once [`Pipeline::shutdown`] has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.intake.is_closed()
    }

    /// Shuts the pipeline down:
    /// 1. refuses new offers ([`crate::ingress::Refusal::ShuttingDown`]) and
    ///    wakes producers waiting on `block` routes, which are refused too;
    /// 2. lets offers already admitting finish, then tells each worker that
    ///    no more messages will come;
    /// 3. lets workers drain their queues to the outputs until `grace` has
    ///    passed;
    /// 4. then stops them and counts every message still queued or in flight
    ///    as dropped (`shutdown`).
    ///
    /// Returns per route what was delivered, dropped and left over. Calling
    /// it again returns the same totals at once.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let inner = &self.inner;
        let deadline = Instant::now() + grace;
        {
            // Waits for a reconfiguration in progress; none starts after.
            let _reconfiguring = inner
                .reconfiguring
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            inner.shared.shutting_down.store(true, Ordering::SeqCst);
        }
        let routes = self.all_routes();
        for route in &routes {
            route.queue.close_intake();
        }
        if !inner.intake.wait_idle(deadline).await {
            tracing::warn!("offers still admitting at the end of the grace period");
        }
        for route in &routes {
            route.queue.finish();
        }
        inner.tracker.close();
        let drained = tokio::time::timeout_at(deadline, inner.tracker.wait())
            .await
            .is_ok();
        if !drained {
            inner.shared.hard_stop.cancel();
            inner.tracker.wait().await;
        }
        for route in &routes {
            worker::sweep(route, DropReason::Shutdown);
            // A durable queue's backlog stays on disk: commit what was
            // appended and save the cursors, on the blocking pool.
            if let Some(store) = route.queue.store() {
                let (store, name) = (Arc::clone(store), route.name.clone());
                let kept = store.stats().held;
                match tokio::task::spawn_blocking(move || store.close()).await {
                    Ok(Ok(())) => {
                        if kept > 0 {
                            tracing::info!(route = %name, kept, "durable queue closed; its backlog is delivered after the next start");
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::error!(route = %name, error = %e, "durable queue: the last commit failed")
                    }
                    Err(e) => {
                        tracing::error!(route = %name, error = %e, "durable queue: close failed")
                    }
                }
            }
        }
        let mut reports: Vec<RouteReport> = Vec::new();
        for route in &routes {
            let report = route.report();
            match reports.iter_mut().find(|r| r.name == report.name) {
                // Same name, same metric series: only what was left adds up.
                Some(r) => r.left += report.left,
                None => reports.push(report),
            }
        }
        let report = ShutdownReport {
            drained,
            routes: reports,
        };
        for r in &report.routes {
            if r.left > 0 {
                tracing::warn!(route = %r.name, left = r.left, "messages undelivered at shutdown, counted as dropped");
            }
        }
        report
    }
}

/// Checks `specs` and resolves their outputs by [`Output::name`].
pub(crate) fn programs(
    specs: Vec<RouteSpec>,
    outputs: &[Arc<dyn Output>],
) -> Result<Vec<Program>, Error> {
    let mut by_name: HashMap<&str, &Arc<dyn Output>> = HashMap::new();
    for output in outputs {
        if by_name.insert(output.name(), output).is_some() {
            return Err(Error::DuplicateOutput {
                output: output.name().to_owned(),
            });
        }
    }
    let mut names = std::collections::HashSet::new();
    let mut programs = Vec::with_capacity(specs.len());
    for spec in specs {
        validate(&spec)?;
        if !names.insert(spec.name.clone()) {
            return Err(Error::DuplicateRoute { route: spec.name });
        }
        let find = |name: &String| {
            by_name
                .get(name.as_str())
                .map(|o| Arc::clone(o))
                .ok_or_else(|| Error::UnknownOutput {
                    route: spec.name.clone(),
                    output: name.clone(),
                })
        };
        let outputs = spec
            .outputs
            .iter()
            .map(find)
            .collect::<Result<Box<[_]>, _>>()?;
        let dead_letter = spec.stages.dead_letter.as_ref().map(find).transpose()?;
        let durable = spec.queue.durable.is_some();
        let retry = spec
            .outputs
            .iter()
            .map(|o| {
                spec.retry
                    .get(o)
                    .copied()
                    .or(durable.then_some(super::spec::Retry::DURABLE_DEFAULT))
            })
            .collect();
        programs.push(Program {
            spec,
            outputs,
            dead_letter,
            retry,
        });
    }
    Ok(programs)
}

/// A new route for `program`, with its metric children and a stop token
/// under the pipeline's hard stop. The caller spawns its worker.
pub(crate) fn new_route(
    program: Program,
    metrics: &PipelineMetrics,
    shared: &Shared,
) -> Result<Arc<Route>, Error> {
    let q = &program.spec.queue;
    let route_metrics = metrics.route(&program.spec.name, q.capacity, q.capacity_bytes);
    Ok(Arc::new(Route::new(
        program,
        route_metrics,
        shared.hard_stop.child_token(),
    )?))
}

fn validate(spec: &RouteSpec) -> Result<(), Error> {
    let route = || spec.name.clone();
    if spec.name.is_empty() {
        return Err(Error::EmptyName);
    }
    for (field, value) in [
        ("capacity", spec.queue.capacity),
        ("capacity_bytes", spec.queue.capacity_bytes),
        ("max_batch", spec.queue.max_batch),
    ] {
        if value == 0 {
            return Err(Error::ZeroBound {
                route: route(),
                field,
            });
        }
    }
    if spec.outputs.is_empty() {
        return Err(Error::NoOutputs { route: route() });
    }
    if let Some((plugin, expected)) = spec.stages.misplaced() {
        return Err(Error::WrongPluginKind {
            route: route(),
            plugin: plugin.name().to_owned(),
            kind: plugin.kind(),
            expected,
            place: match expected {
                crate::plugin::Kind::Filter => "filters",
                crate::plugin::Kind::Router => "router",
            },
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::Wait;
    use crate::ingress::{Offered, Refusal, Sink};
    use crate::metrics::Registry;
    use crate::pipeline::WhenFull;
    use crate::pipeline::testing::{
        DEADLINE, FakeOutput, Mode, assert_conserved, msg, msgs, spec, start, wait_idle,
    };

    #[tokio::test]
    async fn shutdown_drains_within_the_grace_period() {
        let out = FakeOutput::stalled("out");
        let (p, _reg) = start(
            vec![
                spec("a", "t.>", 100, WhenFull::Block, &["out"]),
                spec("b", "t.>", 100, WhenFull::DropOldest, &["out"]),
            ],
            &[&out],
        );
        assert_eq!(
            p.offer(msgs("t.x", 0..50), Wait::Unbounded).await.admitted,
            50
        );
        out.wait_arrived(2).await;
        let shutdown = {
            let p = p.clone();
            tokio::spawn(async move { p.shutdown(DEADLINE).await })
        };
        // Intake stops first...
        crate::pipeline::testing::wait_snapshot(&p, |s| s.shutting_down).await;
        assert_eq!(
            p.offer(vec![msg("t.x", 99)], Wait::Unbounded).await,
            Offered {
                admitted: 0,
                refusal: Some(Refusal::ShuttingDown)
            }
        );
        // ...then the queues drain once the output moves.
        out.release();
        let report = tokio::time::timeout(DEADLINE, shutdown)
            .await
            .expect("shutdown ends")
            .expect("join");
        assert!(report.drained);
        assert_eq!(report.left(), 0);
        for r in &report.routes {
            assert_eq!((r.offered, r.delivered, r.dropped.total), (50, 50, 0));
        }
        assert_conserved(&p.snapshot());
        assert_eq!(p.shutdown(DEADLINE).await, report, "idempotent");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_counts_what_is_left_after_the_grace_period() {
        let stuck = FakeOutput::stalled("stuck");
        let (p, _reg) = start(
            vec![spec("r", "t.>", 10, WhenFull::Block, &["stuck"])],
            &[&stuck],
        );
        assert_eq!(
            p.offer(msgs("t.x", 0..10), Wait::Unbounded).await.admitted,
            10
        );
        stuck.wait_arrived(1).await;
        // A producer blocked on the full route is refused by the shutdown.
        let blocked = {
            let p = p.clone();
            tokio::spawn(async move { p.offer(vec![msg("t.x", 10)], Wait::Unbounded).await })
        };
        crate::pipeline::testing::wait_snapshot(&p, |s| s.routes[0].backpressure_events == 1).await;
        let report = p.shutdown(Duration::from_secs(5)).await;
        assert_eq!(
            blocked.await.expect("join"),
            Offered {
                admitted: 0,
                refusal: Some(Refusal::ShuttingDown)
            }
        );
        assert!(!report.drained);
        let r = &report.routes[0];
        assert_eq!((r.offered, r.delivered, r.left), (10, 0, 10));
        assert_eq!((r.dropped.shutdown, r.dropped.total), (10, 10));
        let snap = p.snapshot();
        assert_eq!(snap.routes[0].queue.depth, 0);
        assert_conserved(&snap);
        assert!(stuck.taken().is_empty());
    }

    #[tokio::test]
    async fn closed_outputs_during_shutdown_count_as_shutdown() {
        let closed = FakeOutput::with("closed", Mode::Closed, false);
        let (p, _reg) = start(
            vec![spec("r", "t.>", 10, WhenFull::DropNewest, &["closed"])],
            &[&closed],
        );
        assert_eq!(
            p.offer(msgs("t.x", 0..4), Wait::Unbounded).await.admitted,
            4
        );
        closed.wait_arrived(1).await;
        let shutdown = {
            let p = p.clone();
            tokio::spawn(async move { p.shutdown(DEADLINE).await })
        };
        crate::pipeline::testing::wait_snapshot(&p, |s| s.shutting_down).await;
        closed.release();
        let report = shutdown.await.expect("join");
        assert!(report.drained);
        let r = &report.routes[0];
        assert_eq!((r.dropped.shutdown, r.left, r.delivered), (4, 0, 0));
        assert_conserved(&p.snapshot());
    }

    #[tokio::test]
    async fn snapshot_and_prefixes() {
        let out = FakeOutput::new("out");
        let mut attrs = spec("b", "sensors.*.temp", 5, WhenFull::DropOldest, &["out"]);
        attrs.attributes.insert("site".into(), "42".into());
        let (p, _reg) = start(
            vec![
                spec("a", "sensors.>", 10, WhenFull::Block, &["out"]),
                attrs,
                spec("c", "alerts.fire", 10, WhenFull::DropNewest, &["out"]),
            ],
            &[&out],
        );
        assert_eq!(p.subscription_prefixes(), vec!["alerts.fire", "sensors."]);
        let snap = wait_idle(&p).await;
        let json = serde_json::to_value(&snap).expect("serializable");
        assert_eq!(json["routes"][1]["match"], "sensors.*.temp");
        assert_eq!(json["routes"][1]["attributes"]["site"], "42");
        assert_eq!(json["routes"][1]["when_full"], "drop_oldest");
        assert_eq!(json["routes"][1]["queue"]["capacity"], 5);
        assert_eq!(json["routes"][0]["dropped"]["queue_full"], 0);
        assert_eq!(json["unrouted"], 0);
    }

    #[tokio::test]
    async fn bad_specs_are_refused() {
        let out = FakeOutput::new("out");
        let outputs: Vec<Arc<dyn Output>> = vec![out.as_output()];
        let metrics = PipelineMetrics::new(&Registry::new());
        let ok = || spec("r", "t.>", 10, WhenFull::Block, &["out"]);
        let err = |specs: Vec<RouteSpec>, outputs: &[Arc<dyn Output>]| {
            Pipeline::start(specs, outputs, &metrics).expect_err("refused")
        };
        assert_eq!(
            err(vec![ok(), ok()], &outputs),
            Error::DuplicateRoute { route: "r".into() }
        );
        let mut unknown = ok();
        unknown.outputs.push("nope".into());
        assert_eq!(
            err(vec![unknown], &outputs),
            Error::UnknownOutput {
                route: "r".into(),
                output: "nope".into()
            }
        );
        let mut zero = ok();
        zero.queue.capacity = 0;
        assert!(matches!(
            err(vec![zero], &outputs),
            Error::ZeroBound {
                field: "capacity",
                ..
            }
        ));
        let mut none = ok();
        none.outputs.clear();
        assert!(matches!(err(vec![none], &outputs), Error::NoOutputs { .. }));
        let twice = vec![out.as_output(), out.as_output()];
        assert!(matches!(
            err(vec![ok()], &twice),
            Error::DuplicateOutput { .. }
        ));
    }

    #[test]
    fn starting_needs_a_runtime() {
        let metrics = PipelineMetrics::new(&Registry::new());
        assert_eq!(
            Pipeline::start(Vec::new(), &[], &metrics).expect_err("no runtime"),
            Error::NoRuntime
        );
    }
}
