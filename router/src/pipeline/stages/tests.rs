//! Route workers with plugins: a filter written in WebAssembly text (keeps
//! messages unless their topic starts with `d`; loops forever, traps or
//! panics when the first topic of a batch starts with `h`), and one that
//! answers requests itself, driven through a pipeline with fake outputs.

use crate::ingress::Wait;
use std::sync::Arc;
use std::time::Duration;

use crate::egress::Output;
use crate::ingress::Sink;
use crate::message::Message;
use crate::message::request::{
    Answer, InputRequests, OneshotReplier, RequestError, RequestMetrics,
};
use crate::metrics::Registry;
use crate::pipeline::testing::{
    DEADLINE, FakeOutput, assert_conserved, msg, msgs, spec, wait_idle,
};
use crate::pipeline::{
    DEAD_LETTER_REASON, DEAD_LETTER_ROUTE, OnError, Pipeline, PipelineMetrics, Stages, WhenFull,
};
use crate::plugin::{self, Engine, FailMode, FailurePolicy, Limits, Plugin, Source};
use bytes::Bytes;

/// Keeps a message unless its topic starts with `d`; runs `HOSTILE` when
/// the batch's first topic starts with `h`.
const FILTER: &str = include_str!("../../../tests/plugins/wat_filter.wat");

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
    assert_eq!(s.pipeline.offer(batch, Wait::Unbounded).await.admitted, 6);
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
    assert_eq!(
        s.pipeline
            .offer(msgs("h.x", 0..3), Wait::Unbounded)
            .await
            .admitted,
        3
    );
    let snap = wait_idle(&s.pipeline).await;
    let r = &snap.routes[0];
    assert_eq!((r.dropped.plugin_error, r.delivered), (3, 0), "{r:?}");
    assert_eq!(f.traps(plugin::TrapReason::Timeout), 1);
    // The instance was rebuilt: the next batch goes through.
    assert_eq!(
        s.pipeline
            .offer(msgs("t.ok", 3..6), Wait::Unbounded)
            .await
            .admitted,
        3
    );
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
    assert_eq!(
        s.pipeline
            .offer(msgs("h.x", 0..4), Wait::Unbounded)
            .await
            .admitted,
        4
    );
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
            s.pipeline
                .offer(vec![msg("h.x", 9)], Wait::Unbounded)
                .await
                .admitted,
            1
        );
        let snap = wait_idle(&s.pipeline).await;
        assert_eq!(snap.routes[0].dropped.plugin_error, 1);
        assert!(f.is_tripped());
        // ...then batches are passed or dropped without calling it.
        let calls = f.calls();
        assert_eq!(
            s.pipeline
                .offer(msgs("h.x", 0..3), Wait::Unbounded)
                .await
                .admitted,
            3
        );
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

/// A filter in WebAssembly text that ends requests itself, by the first
/// byte of each topic: `a` replies `pong`, `x` rejects with `denied`, `d`
/// drops, anything else is kept.
const EDGE: &str = r#"
(module
  (memory (export "memory") 3)
  (data (i32.const 64) "denied")
  (func (export "switchyard_abi_version") (result i32) (i32.const 1))
  (func (export "switchyard_kind") (result i32) (i32.const 1))
  (func (export "switchyard_alloc") (param $len i32) (result i32)
    (if (result i32) (i32.gt_u (local.get $len) (i32.const 65536))
      (then (i32.const 0))
      (else (i32.const 65536))))
  (func $ok (param $len i32) (result i64)
    (i64.or (i64.shl (i64.const 2048) (i64.const 32)) (i64.extend_i32_u (local.get $len))))
  (func (export "switchyard_init") (param i32 i32) (result i64)
    (i32.store (i32.const 2048) (i32.const 0))
    (call $ok (i32.const 4)))
  (func $skip (param $p i32) (result i32)
    (i32.add (i32.add (local.get $p) (i32.const 4)) (i32.load (local.get $p))))
  (func (export "switchyard_batch") (param $ptr i32) (param $len i32) (result i64)
    (local $n i32) (local $i i32) (local $p i32) (local $out i32) (local $attrs i32) (local $t i32)
    (local.set $n (i32.load (local.get $ptr)))
    (i32.store (i32.const 2048) (i32.const 0))
    (i32.store (i32.const 2052) (local.get $n))
    (local.set $out (i32.const 2056))
    (local.set $p (i32.add (local.get $ptr) (i32.const 16)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $p (i32.add (local.get $p) (i32.const 25)))
        (local.set $t (i32.load8_u (i32.add (local.get $p) (i32.const 4))))
        (if (i32.eq (local.get $t) (i32.const 97))
          (then
            ;; reply: tag 3, length 4, "pong"
            (i32.store8 (local.get $out) (i32.const 3))
            (i32.store (i32.add (local.get $out) (i32.const 1)) (i32.const 4))
            (i32.store (i32.add (local.get $out) (i32.const 5)) (i32.const 0x676e6f70))
            (local.set $out (i32.add (local.get $out) (i32.const 9))))
          (else (if (i32.eq (local.get $t) (i32.const 120))
            (then
              ;; reject: tag 4, length 6, "denied"
              (i32.store8 (local.get $out) (i32.const 4))
              (i32.store (i32.add (local.get $out) (i32.const 1)) (i32.const 6))
              (memory.copy (i32.add (local.get $out) (i32.const 5)) (i32.const 64) (i32.const 6))
              (local.set $out (i32.add (local.get $out) (i32.const 11))))
            (else
              ;; 'd' (100) -> 1 (drop), else 0 (keep)
              (i32.store8 (local.get $out) (i32.eq (local.get $t) (i32.const 100)))
              (local.set $out (i32.add (local.get $out) (i32.const 1)))))))
        (local.set $p (call $skip (local.get $p)))
        (local.set $p (call $skip (local.get $p)))
        (local.set $p (call $skip (local.get $p)))
        (local.set $attrs (i32.load (local.get $p)))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (block $attrs_done
          (loop $attr
            (br_if $attrs_done (i32.eqz (local.get $attrs)))
            (local.set $p (call $skip (call $skip (local.get $p))))
            (local.set $attrs (i32.sub (local.get $attrs) (i32.const 1)))
            (br $attr)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (call $ok (i32.sub (local.get $out) (i32.const 2048))))
)
"#;

type Answered = tokio::sync::oneshot::Receiver<Answer>;

/// A request on `topic` (payload `[n; 8]`) and where its answer arrives.
fn request(requests: &InputRequests, topic: &str, n: u8) -> (Message, Answered) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut m = msg(topic, n);
    m.request = Some(requests.start(Box::new(OneshotReplier(tx))));
    (m, rx)
}

async fn answer(rx: Answered) -> Answer {
    tokio::time::timeout(DEADLINE, rx)
        .await
        .expect("answered in time")
        .expect("answered, not dropped")
}

/// A route with the EDGE fixture as its filter: the registry, the plugin,
/// the route's output, the pipeline, and requests of input `clients`.
fn edge_route() -> (Registry, Plugin, Arc<FakeOutput>, Setup, InputRequests) {
    let reg = Registry::new();
    let engine = engine(&reg);
    let wasm = wat::parse_str(EDGE).expect("valid WAT");
    let f = engine
        .load("edge", Source::Bytes(&wasm), "{}", Limits::default())
        .expect("the fixture loads");
    let out = FakeOutput::new("out");
    let s = filtered(&f, &out);
    let requests = RequestMetrics::register(&reg).for_input("clients");
    (reg, f, out, s, requests)
}

fn rejected(plugin: &str, reason: &str) -> Answer {
    Answer::Error(RequestError::Rejected {
        plugin: Arc::from(plugin),
        reason: reason.into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_answers_and_rejects_requests_and_drops_the_rest() {
    let (reg, f, out, s, requests) = edge_route();
    let (ping, ping_rx) = request(&requests, "a.ping", 0);
    let (admin, admin_rx) = request(&requests, "x.admin", 1);
    let (drop, drop_rx) = request(&requests, "d.drop", 2);
    let (kept, _kept_rx) = request(&requests, "t.keep", 3);
    // Requests and other messages interleaved: each run is its own call.
    let batch = vec![
        ping,
        msg("a.ping", 10),
        admin,
        msg("x.plain", 11),
        drop,
        msg("t.plain", 12),
        kept,
    ];
    assert_eq!(s.pipeline.offer(batch, Wait::Unbounded).await.admitted, 7);
    assert_eq!(
        answer(ping_rx).await,
        Answer::Reply(smallvec::smallvec![Bytes::from_static(b"pong")])
    );
    assert_eq!(answer(admin_rx).await, rejected("edge", "denied"));
    assert_eq!(answer(drop_rx).await, rejected("edge", "filtered"));
    let snap = wait_idle(&s.pipeline).await;
    let r = &snap.routes[0];
    // Filtered: the rejected and dropped requests, and the non-requests
    // the plugin replied to or rejected (a plain drop for them).
    assert_eq!(
        (r.offered, r.answered, r.filtered, r.delivered),
        (7, 1, 4, 2),
        "{r:?}"
    );
    assert_conserved(&snap);
    assert_eq!(out.taken(), vec![12, 3], "the kept ones go on, in order");
    assert!(out.messages()[1].request.is_some(), "still a request");
    assert!(f.calls() >= 7, "one call per run of requests or not");
    let text = s.registry.encode();
    assert!(
        text.contains(r#"switchyard_route_messages_total{outcome="answered",route="r"} 1"#),
        "{text}"
    );
    let text = reg.encode();
    for outcome in [
        r#"outcome="answered_by_plugin"} 1"#,
        r#"outcome="rejected"} 2"#,
    ] {
        assert!(text.contains(outcome), "{outcome}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_first_route_answers_is_not_answered_again() {
    let (_reg, _f, _out, s, requests) = edge_route();
    let (ping, rx) = request(&requests, "a.ping", 0);
    let copy = ping.clone();
    assert_eq!(
        s.pipeline.offer(vec![ping], Wait::Unbounded).await.admitted,
        1
    );
    assert!(matches!(answer(rx).await, Answer::Reply(_)));
    let r = wait_idle(&s.pipeline).await.routes[0].clone();
    assert_eq!(r.answered, 1, "{r:?}");
    // A second copy of the answered request still counts as answered here.
    assert_eq!(
        s.pipeline.offer(vec![copy], Wait::Unbounded).await.admitted,
        1
    );
    let snap = wait_idle(&s.pipeline).await;
    assert_eq!(snap.routes[0].answered, 2);
    assert_conserved(&snap);
    assert_eq!(requests.pending(), 0);
}
