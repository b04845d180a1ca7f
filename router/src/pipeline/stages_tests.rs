//! Route workers with plugins: a filter written in WebAssembly text (keeps
//! messages unless their topic starts with `d`; loops forever, traps or
//! panics when the first topic of a batch starts with `h`), driven through
//! a pipeline with fake outputs.

use std::sync::Arc;
use std::time::Duration;

use super::testing::{FakeOutput, assert_conserved, msg, msgs, spec, wait_idle};
use super::{DEAD_LETTER_REASON, DEAD_LETTER_ROUTE, OnError, Pipeline, PipelineMetrics, Stages};
use crate::egress::Output;
use crate::ingress::Sink;
use crate::metrics::Registry;
use crate::pipeline::WhenFull;
use crate::plugin::{self, Engine, FailMode, FailurePolicy, Limits, Plugin, Source};

/// Keeps a message unless its topic starts with `d`; runs `HOSTILE` when
/// the batch's first topic starts with `h`.
const FILTER: &str = include_str!("../../tests/plugins/wat_filter.wat");

const LOOP: &str = "(loop $spin (br $spin))";
const TRAP: &str = "unreachable";

fn filter(engine: &Engine, name: &str, hostile: &str, limits: Limits) -> Plugin {
    let wasm = wat::parse_str(FILTER.replace("HOSTILE", hostile)).expect("valid WAT");
    engine
        .load(name, Source::Bytes(&wasm), "{}", limits)
        .expect("the fixture loads")
}

/// Limits whose deadline stops the loop quickly but that a busy machine
/// never reaches on a good batch.
fn limits(mode: FailMode, trip_after: u32) -> Limits {
    Limits {
        deadline: Duration::from_millis(200),
        on_failure: FailurePolicy {
            mode,
            trip_after,
            backoff: Duration::from_secs(3600),
            max_backoff: Duration::from_secs(3600),
        },
        ..Limits::default()
    }
}

struct Setup {
    pipeline: Pipeline,
    registry: Registry,
}

fn start(stages: Stages, outputs: &[&Arc<FakeOutput>]) -> Setup {
    let registry = Registry::new();
    let metrics = PipelineMetrics::new(&registry);
    let mut s = spec("r", ">", 1000, WhenFull::DropNewest, &["out"]);
    s.stages = stages;
    let outputs: Vec<Arc<dyn Output>> = outputs.iter().map(|o| o.as_output()).collect();
    let pipeline = Pipeline::start(vec![s], &outputs, &metrics).expect("valid spec");
    Setup { pipeline, registry }
}

/// A pipeline whose one route runs filter `f` into `out`.
fn filtered(f: &Plugin, out: &Arc<FakeOutput>) -> Setup {
    start(
        Stages {
            filters: vec![f.clone()],
            ..Stages::default()
        },
        &[out],
    )
}

fn engine(registry: &Registry) -> Engine {
    Engine::new(plugin::Config::default(), registry).expect("engine")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_drop_and_count_what_they_filter() {
    let reg = Registry::new();
    let engine = engine(&reg);
    let f = filter(&engine, "f", TRAP, limits(FailMode::Closed, 5));
    let out = FakeOutput::new("out");
    let s = filtered(&f, &out);
    let mut batch = msgs("t.keep", 0..3);
    batch.extend(msgs("d.drop", 3..5));
    batch.push(msg("t.keep", 5));
    assert_eq!(s.pipeline.offer(batch, None).await.admitted, 6);
    let snap = wait_idle(&s.pipeline).await;
    let r = &snap.routes[0];
    assert_eq!((r.offered, r.filtered, r.delivered), (6, 2, 4), "{r:?}");
    assert_eq!(r.filters, vec!["f".to_owned()]);
    assert_conserved(&snap);
    assert_eq!(out.taken(), vec![0, 1, 2, 5], "order kept");
    assert!(f.calls() >= 1);
    let text = s.registry.encode();
    assert!(
        text.contains(r#"switchyard_route_messages_total{outcome="filtered",route="r"} 2"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_filter_is_stopped_and_its_batch_dropped_while_the_route_goes_on() {
    let reg = Registry::new();
    let engine = engine(&reg);
    let f = filter(&engine, "spin", LOOP, limits(FailMode::Closed, 100));
    let out = FakeOutput::new("out");
    let s = filtered(&f, &out);
    assert_eq!(s.pipeline.offer(msgs("h.x", 0..3), None).await.admitted, 3);
    let snap = wait_idle(&s.pipeline).await;
    let r = &snap.routes[0];
    assert_eq!((r.dropped.plugin_error, r.delivered), (3, 0), "{r:?}");
    assert_eq!(f.traps(plugin::TrapReason::Timeout), 1);
    // The instance was rebuilt: the next batch goes through.
    assert_eq!(s.pipeline.offer(msgs("t.ok", 3..6), None).await.admitted, 3);
    let snap = wait_idle(&s.pipeline).await;
    assert_eq!(snap.routes[0].delivered, 3);
    assert_eq!(out.taken(), vec![3, 4, 5]);
    assert_conserved(&snap);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_goes_to_the_dead_letter_output_marked() {
    let reg = Registry::new();
    let engine = engine(&reg);
    let f = filter(&engine, "trap", TRAP, limits(FailMode::Closed, 100));
    let out = FakeOutput::new("out");
    let dlq = FakeOutput::new("dlq");
    let s = start(
        Stages {
            filters: vec![f],
            on_error: OnError::DeadLetter,
            dead_letter: Some("dlq".into()),
            ..Stages::default()
        },
        &[&out, &dlq],
    );
    assert_eq!(s.pipeline.offer(msgs("h.x", 0..4), None).await.admitted, 4);
    let snap = wait_idle(&s.pipeline).await;
    let r = &snap.routes[0];
    assert_eq!((r.dead_lettered, r.delivered, r.dropped.total), (4, 0, 0));
    assert_conserved(&snap);
    let dead = dlq.messages();
    assert_eq!(dead.len(), 4);
    assert_eq!(
        dead[0]
            .attributes
            .get(DEAD_LETTER_ROUTE)
            .map(String::as_str),
        Some("r")
    );
    assert_eq!(
        dead[0]
            .attributes
            .get(DEAD_LETTER_REASON)
            .map(String::as_str),
        Some("unreachable")
    );
    assert!(out.taken().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tripped_filter_fails_open_or_closed_as_configured() {
    let reg = Registry::new();
    let engine = engine(&reg);
    for (mode, delivered, dropped) in [(FailMode::Open, 3, 0), (FailMode::Closed, 0, 3)] {
        let name = format!("trap-{mode}");
        let f = filter(&engine, &name, TRAP, limits(mode, 1));
        let out = FakeOutput::new("out");
        let s = start(
            Stages {
                filters: vec![f.clone()],
                ..Stages::default()
            },
            &[&out],
        );
        // One failure trips it (trip_after = 1)...
        assert_eq!(
            s.pipeline.offer(vec![msg("h.x", 9)], None).await.admitted,
            1
        );
        let snap = wait_idle(&s.pipeline).await;
        assert_eq!(snap.routes[0].dropped.plugin_error, 1);
        assert!(f.is_tripped());
        // ...then batches are passed or dropped without calling it.
        let calls = f.calls();
        assert_eq!(s.pipeline.offer(msgs("h.x", 0..3), None).await.admitted, 3);
        let snap = wait_idle(&s.pipeline).await;
        let r = &snap.routes[0];
        assert_eq!(
            (r.delivered, r.dropped.plugin_error - 1),
            (delivered, dropped),
            "{mode}: {r:?}"
        );
        assert_eq!(f.calls(), calls, "{mode}: not called while tripped");
        assert_conserved(&snap);
    }
}

#[tokio::test]
async fn a_router_cannot_be_a_filter() {
    let reg = Registry::new();
    let engine = engine(&reg);
    let f = filter(&engine, "f", TRAP, Limits::default());
    let mut s = spec("r", "t.>", 10, WhenFull::Block, &["out"]);
    s.stages.router = Some(f);
    let out = FakeOutput::new("out");
    let err = Pipeline::start(vec![s], &[out.as_output()], &PipelineMetrics::new(&reg))
        .expect_err("refused");
    assert!(
        err.to_string()
            .contains("plugin \"f\" is a filter plugin; router must be a router plugin"),
        "{err}"
    );
}
