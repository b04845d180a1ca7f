//! Many producers against many routes on a multi-threaded runtime: the
//! all-or-none admission, per-producer order and exact conservation must
//! survive real interleavings, including a shutdown in the middle of intake.

use crate::ingress::Wait;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::testing::{DEADLINE, assert_conserved, spec, wait_idle};
use super::{Pipeline, PipelineMetrics, WhenFull};
use crate::egress::{Delivery, Output, Reject, SendFuture};
use crate::ingress::{Refusal, Sink};
use crate::message::{Message, Publisher, Topic};
use crate::metrics::Registry;

/// Records `(producer, sequence)` of what it takes; yields a few times per
/// batch so producers and workers interleave; refuses sequence numbers that
/// are multiples of `reject_every` (0: none).
struct Recorder {
    name: String,
    reject_every: u32,
    seen: Mutex<Vec<(u8, u32)>>,
    batches: AtomicUsize,
}

impl Recorder {
    fn new(name: &str, reject_every: u32) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            reject_every,
            seen: Mutex::new(Vec::new()),
            batches: AtomicUsize::new(0),
        })
    }

    fn seen(&self) -> Vec<(u8, u32)> {
        self.seen.lock().expect("test lock").clone()
    }
}

fn decode(m: &Message) -> (u8, u32) {
    let mut seq = [0u8; 4];
    seq.copy_from_slice(&m.payload[1..5]);
    (m.payload[0], u32::from_le_bytes(seq))
}

impl Output for Recorder {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, batch: &'a [Message]) -> SendFuture<'a> {
        Box::pin(async move {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            self.batches.fetch_add(1, Ordering::Relaxed);
            let mut delivery = Delivery::accepted();
            let mut seen = self.seen.lock().expect("test lock");
            for (i, m) in batch.iter().enumerate() {
                let (producer, seq) = decode(m);
                if self.reject_every > 0 && seq % self.reject_every == 0 {
                    delivery.reject(i, Reject::NoSubscriber);
                } else {
                    seen.push((producer, seq));
                }
            }
            Ok(delivery)
        })
    }
}

fn message(producer: u8, seq: u32) -> Message {
    let mut payload = vec![producer];
    payload.extend_from_slice(&seq.to_le_bytes());
    Message::new(
        Topic::try_from("plant.line1.temp").expect("valid topic"),
        Bytes::from(payload),
        Publisher::new("test", ""),
    )
}

/// Checks that each producer's messages arrived in the order sent.
fn assert_ordered(seen: &[(u8, u32)]) {
    let mut last: HashMap<u8, u32> = HashMap::new();
    for &(producer, seq) in seen {
        if let Some(prev) = last.insert(producer, seq) {
            assert!(seq > prev, "producer {producer}: {seq} after {prev}");
        }
    }
}

fn build(outputs: &[&Arc<Recorder>]) -> Pipeline {
    let mut block_b = spec("block-b", "plant.*.temp", 3, WhenFull::Block, &["b"]);
    block_b.queue.max_batch = 2;
    let specs = vec![
        spec("block-a", "plant.>", 16, WhenFull::Block, &["a"]),
        block_b,
        spec(
            "oldest",
            "plant.line1.temp",
            4,
            WhenFull::DropOldest,
            &["c"],
        ),
        spec("newest", "plant.>", 4, WhenFull::DropNewest, &["a", "d"]),
    ];
    let outputs: Vec<Arc<dyn Output>> = outputs
        .iter()
        .map(|o| Arc::clone(o) as Arc<dyn Output>)
        .collect();
    let metrics = PipelineMetrics::new(&Registry::new());
    Pipeline::start(specs, &outputs, &metrics).expect("valid specs")
}

const PRODUCERS: u8 = 4;
const PER_PRODUCER: u32 = 1500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_and_routes_interleave_without_loss() {
    let outs = [
        Recorder::new("a", 0),
        Recorder::new("b", 0),
        Recorder::new("c", 0),
        Recorder::new("d", 7),
    ];
    let p = build(&[&outs[0], &outs[1], &outs[2], &outs[3]]);
    let mut producers = Vec::new();
    for producer in 0..PRODUCERS {
        let p = p.clone();
        producers.push(tokio::spawn(async move {
            let mut seq = 0;
            while seq < PER_PRODUCER {
                let n = 1 + seq % 13;
                let batch = (seq..(seq + n).min(PER_PRODUCER))
                    .map(|s| message(producer, s))
                    .collect::<Vec<_>>();
                let len = batch.len() as u32;
                let offered = p.offer(batch, Wait::Unbounded).await;
                assert_eq!((offered.admitted as u32, offered.refusal), (len, None));
                seq += len;
            }
        }));
    }
    for producer in producers {
        tokio::time::timeout(DEADLINE, producer)
            .await
            .expect("producers finish")
            .expect("join");
    }
    let snap = wait_idle(&p).await;
    assert_conserved(&snap);
    let total = u64::from(PRODUCERS) * u64::from(PER_PRODUCER);
    let [a, b, oldest, newest] = &snap.routes[..] else {
        panic!("four routes")
    };
    // Block routes lose nothing and see every message, in order.
    for r in [a, b] {
        assert_eq!((r.offered, r.delivered, r.dropped.total), (total, total, 0));
    }
    assert_eq!(oldest.offered, total);
    assert_eq!(newest.offered, total);
    assert_eq!(outs[1].seen().len() as u64, total);
    // Per route, each producer's messages arrive in order (`a` mixes two
    // routes, so its order is only per route).
    for out in &outs[1..] {
        assert_ordered(&out.seen());
    }
    // Output `a` takes from two routes; `d` refuses every 7th sequence number.
    assert_eq!(
        outs[0].seen().len() as u64,
        total + newest.delivered + newest.dropped.no_subscriber
    );
    assert!(outs.iter().all(|o| o.batches.load(Ordering::Relaxed) > 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_in_the_middle_of_intake_counts_everything() {
    let outs = [
        Recorder::new("a", 0),
        Recorder::new("b", 0),
        Recorder::new("c", 0),
        Recorder::new("d", 0),
    ];
    let p = build(&[&outs[0], &outs[1], &outs[2], &outs[3]]);
    let admitted = Arc::new(AtomicUsize::new(0));
    let mut producers = Vec::new();
    for producer in 0..PRODUCERS {
        let p = p.clone();
        let admitted = Arc::clone(&admitted);
        producers.push(tokio::spawn(async move {
            let mut seq = 0u32;
            loop {
                let batch: Vec<_> = (seq..seq + 5).map(|s| message(producer, s)).collect();
                let offered = p.offer(batch, Wait::Unbounded).await;
                admitted.fetch_add(offered.admitted, Ordering::Relaxed);
                seq += offered.admitted as u32;
                if let Some(refusal) = offered.refusal {
                    assert_eq!(refusal, Refusal::ShuttingDown);
                    return;
                }
            }
        }));
    }
    // Let intake get going, then shut down while producers are offering.
    let started = tokio::time::Instant::now();
    while p.snapshot().routes[0].delivered < 200 {
        assert!(started.elapsed() < DEADLINE, "traffic flows");
        tokio::task::yield_now().await;
    }
    let report = p.shutdown(Duration::from_secs(20)).await;
    for producer in producers {
        tokio::time::timeout(DEADLINE, producer)
            .await
            .expect("producers are refused")
            .expect("join");
    }
    let admitted = admitted.load(Ordering::Relaxed) as u64;
    let snap = p.snapshot();
    assert_conserved(&snap);
    for r in &report.routes {
        assert_eq!(
            r.offered, admitted,
            "route {}: every admitted message",
            r.name
        );
        assert_eq!(r.offered, r.delivered + r.dropped.total, "route {}", r.name);
    }
    assert!(
        report.drained,
        "outputs keep up, so the queues drain in time"
    );
    assert_eq!(report.left(), 0);
    assert_eq!(snap.routes.iter().map(|r| r.queue.depth).sum::<usize>(), 0);
}

/// A directory under the system's temporary directory, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "switchyard-pipeline-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A durable `block` route `r` on `t.>` to `outputs`, in `dir`.
fn durable_spec(dir: &TempDir, outputs: &[&str]) -> super::RouteSpec {
    let mut s = spec("r", "t.>", 1000, WhenFull::Block, outputs);
    s.queue.durable = Some(super::DurableSpec {
        dir: dir.0.clone(),
        settings: crate::config::Durability {
            fsync: crate::config::Fsync::Os,
            ..crate::config::Durability::default()
        },
    });
    s
}

fn start_with(specs: Vec<super::RouteSpec>, outputs: &[&Arc<FakeOutput>]) -> Pipeline {
    let registry = Registry::new();
    let metrics = PipelineMetrics::new(&registry);
    let outputs: Vec<Arc<dyn Output>> = outputs.iter().map(|o| o.as_output()).collect();
    Pipeline::start(specs, &outputs, &metrics).expect("valid specs")
}

use super::testing::{FakeOutput, Mode, msgs, wait_snapshot};

#[tokio::test]
async fn a_durable_route_s_targets_each_go_at_their_own_pace() {
    let dir = TempDir::new("pace");
    let fast = FakeOutput::new("fast");
    let slow = FakeOutput::stalled("slow");
    let p = start_with(vec![durable_spec(&dir, &["fast", "slow"])], &[&fast, &slow]);
    for round in 0..4u8 {
        let admitted = p
            .offer(msgs("t.x", round * 10..round * 10 + 10), Wait::Unbounded)
            .await
            .admitted;
        assert_eq!(admitted, 10);
    }
    // The fast target takes all of it while the slow one holds its first
    // batch: it is not held back.
    wait_snapshot(&p, |_| fast.taken().len() == 40).await;
    let snap = p.snapshot();
    assert_eq!(snap.routes[0].queue.depth, 40, "nothing released yet");
    assert_eq!(snap.routes[0].delivered, 0, "counted once both have it");
    assert_conserved(&snap);
    slow.release();
    let snap = wait_idle(&p).await;
    assert_eq!(snap.routes[0].delivered, 40);
    assert_eq!(slow.taken(), (0..40).collect::<Vec<u8>>());
    assert_conserved(&snap);
    p.shutdown(DEADLINE).await;
}

#[tokio::test]
async fn a_message_one_target_refuses_counts_once_with_its_reason() {
    let dir = TempDir::new("refuse");
    let all = FakeOutput::new("all");
    let picky = FakeOutput::with("picky", Mode::RejectOdd(Reject::TooLarge), true);
    let p = start_with(vec![durable_spec(&dir, &["all", "picky"])], &[&all, &picky]);
    assert_eq!(
        p.offer(msgs("t.x", 0..10), Wait::Unbounded).await.admitted,
        10
    );
    let snap = wait_idle(&p).await;
    let r = &snap.routes[0];
    assert_eq!((r.delivered, r.dropped.too_large), (5, 5));
    assert_eq!(all.taken().len(), 10);
    assert_conserved(&snap);
    p.shutdown(DEADLINE).await;
}

#[tokio::test]
async fn after_a_restart_each_target_goes_on_from_its_own_cursor() {
    let dir = TempDir::new("restart");
    let a = FakeOutput::new("a");
    let b = FakeOutput::stalled("b");
    let p = start_with(vec![durable_spec(&dir, &["a", "b"])], &[&a, &b]);
    assert_eq!(
        p.offer(msgs("t.x", 0..20), Wait::Unbounded).await.admitted,
        20
    );
    wait_snapshot(&p, |_| a.taken().len() == 20).await;
    // `b` never answers: the shutdown gives up on it; the records stay.
    p.shutdown(Duration::from_millis(50)).await;

    let a2 = FakeOutput::new("a");
    let b2 = FakeOutput::new("b");
    let p = start_with(vec![durable_spec(&dir, &["a", "b"])], &[&a2, &b2]);
    let snap = wait_idle(&p).await;
    assert_eq!(
        b2.taken(),
        (0..20).collect::<Vec<u8>>(),
        "b gets everything"
    );
    assert!(
        a2.taken().is_empty(),
        "a had acknowledged all of it: nothing again, got {:?}",
        a2.taken()
    );
    assert_eq!(snap.routes[0].delivered, 20);
    p.shutdown(DEADLINE).await;
}

/// `family{route="r"}`'s value in `registry`'s text exposition.
fn route_gauge(registry: &Registry, family: &str) -> i64 {
    let prefix = format!("{family}{{route=\"r\"}} ");
    registry
        .encode()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&prefix)
                .map(|v| v.parse().expect("a number"))
        })
        .unwrap_or_else(|| panic!("{family} for route r"))
}

#[tokio::test]
async fn a_recovered_backlog_drains_its_depth_and_bytes_gauges_to_zero() {
    let dir = TempDir::new("gauges");
    let stalled = FakeOutput::stalled("out");
    let p = start_with(vec![durable_spec(&dir, &["out"])], &[&stalled]);
    assert_eq!(
        p.offer(msgs("t.x", 0..50), Wait::Unbounded).await.admitted,
        50
    );
    p.shutdown(Duration::from_millis(50)).await;

    // The restarted route counts what it found in the units it releases in.
    let registry = Registry::new();
    let metrics = PipelineMetrics::new(&registry);
    let out = FakeOutput::new("out");
    let p = Pipeline::start(
        vec![durable_spec(&dir, &["out"])],
        &[out.as_output()],
        &metrics,
    )
    .expect("valid specs");
    let snap = wait_idle(&p).await;
    assert_eq!(out.taken(), (0..50).collect::<Vec<u8>>());
    assert_eq!(snap.routes[0].queue.depth, 0);
    assert_eq!(snap.routes[0].queue.bytes, 0, "the queue holds no bytes");
    assert_eq!(route_gauge(&registry, "switchyard_route_queue_depth"), 0);
    assert_eq!(
        route_gauge(&registry, "switchyard_route_queue_bytes"),
        0,
        "the bytes gauge falls back to zero once the backlog is gone"
    );
    p.shutdown(DEADLINE).await;
}

#[tokio::test]
async fn a_reload_that_adds_a_target_to_a_durable_route_restarts_its_lanes() {
    let dir = TempDir::new("retarget");
    let a = FakeOutput::new("a");
    let b = FakeOutput::new("b");
    let p = start_with(vec![durable_spec(&dir, &["a"])], &[&a, &b]);
    assert_eq!(
        p.offer(msgs("t.x", 0..5), Wait::Unbounded).await.admitted,
        5
    );
    wait_idle(&p).await;
    let outputs: Vec<Arc<dyn Output>> = vec![a.as_output(), b.as_output()];
    p.reconfigure(vec![durable_spec(&dir, &["a", "b"])], &outputs, DEADLINE)
        .expect("reconfigures");
    assert_eq!(
        p.offer(msgs("t.x", 5..10), Wait::Unbounded).await.admitted,
        5
    );
    let snap = wait_snapshot(&p, |s| s.routes[0].queue.depth == 0 && b.taken().len() == 5).await;
    assert_eq!(a.taken(), (0..10).collect::<Vec<u8>>());
    assert_eq!(b.taken(), (5..10).collect::<Vec<u8>>());
    assert_eq!(snap.routes[0].delivered, 10);
    assert_conserved(&snap);
    p.shutdown(DEADLINE).await;
}

/// Retries every few milliseconds, forever.
fn quick_retries(s: &mut super::RouteSpec) {
    for o in s.outputs.clone() {
        s.retry.insert(
            o,
            super::Retry {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(5),
                max_attempts: None,
                max_elapsed: None,
            },
        );
    }
}

#[tokio::test]
async fn a_full_durable_drop_oldest_route_drops_its_oldest_even_while_an_output_retries() {
    let dir = TempDir::new("drop-oldest");
    let out = FakeOutput::with("out", Mode::Fail, true);
    let mut s = durable_spec(&dir, &["out"]);
    s.queue.capacity = 10;
    s.queue.max_batch = 5;
    s.queue.when_full = WhenFull::DropOldest;
    quick_retries(&mut s);
    let p = start_with(vec![s], &[&out]);
    for n in 0..30u8 {
        let before = p.snapshot().routes[0].dropped.queue_full;
        p.offer(msgs("t.x", n..n + 1), Wait::Unbounded).await;
        // A message that found the queue full while the output was being
        // retried is dropped as the newest; the lane gives its batch back
        // at once and the oldest go, making room.
        wait_snapshot(&p, |s| {
            let r = &s.routes[0];
            r.dropped.queue_full == before || r.queue.depth < 10
        })
        .await;
    }
    let snap = p.snapshot();
    let r = &snap.routes[0];
    assert!(r.queue.depth <= 10, "{r:#?}");
    assert!(r.dropped.retention >= 10, "the oldest went: {r:#?}");
    out.set_mode(Mode::Accept);
    let snap = wait_idle(&p).await;
    let r = &snap.routes[0];
    assert_eq!(
        r.delivered + r.dropped.retention + r.dropped.queue_full,
        30,
        "{r:#?}"
    );
    let taken = out.taken();
    assert!(taken.windows(2).all(|w| w[0] < w[1]), "in order: {taken:?}");
    assert!(taken.first() >= Some(&15), "the oldest went: {taken:?}");
    assert!(taken.last() >= Some(&28), "the newest stayed: {taken:?}");
    assert_conserved(&snap);
    p.shutdown(DEADLINE).await;
}

#[tokio::test]
async fn a_durable_route_drops_what_is_older_than_max_age() {
    let dir = TempDir::new("max-age");
    let out = FakeOutput::with("out", Mode::Fail, true);
    let mut s = durable_spec(&dir, &["out"]);
    s.queue.durable.as_mut().expect("durable").settings.max_age = Some(Duration::from_secs(3600));
    quick_retries(&mut s);
    let p = start_with(vec![s], &[&out]);
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    let mut old = msgs("t.x", 0..5);
    for m in &mut old {
        m.publish_time = two_hours_ago;
    }
    p.offer(old, Wait::Unbounded).await;
    p.offer(msgs("t.x", 5..8), Wait::Unbounded).await;
    // Retention runs once a second and takes the old ones from the lane
    // that is retrying them.
    let snap = wait_snapshot(&p, |s| s.routes[0].dropped.retention == 5).await;
    assert_eq!(snap.routes[0].queue.depth, 3);
    out.set_mode(Mode::Accept);
    let snap = wait_idle(&p).await;
    assert_eq!(out.taken(), vec![5, 6, 7]);
    assert_eq!(snap.routes[0].delivered, 3);
    assert_conserved(&snap);
    p.shutdown(DEADLINE).await;
}

#[tokio::test]
async fn turning_a_memory_route_durable_by_reload_moves_its_backlog_to_disk() {
    let dir = TempDir::new("to-durable");
    let out = FakeOutput::stalled("out");
    let mut memory = durable_spec(&dir, &["out"]);
    memory.queue.durable = None;
    memory.queue.max_batch = 2;
    let p = start_with(vec![memory], &[&out]);
    assert_eq!(
        p.offer(msgs("t.x", 0..10), Wait::Unbounded).await.admitted,
        10
    );
    out.wait_arrived(2).await;
    let outputs: Vec<Arc<dyn Output>> = vec![out.as_output()];
    p.reconfigure(vec![durable_spec(&dir, &["out"])], &outputs, DEADLINE)
        .expect("a memory route may turn durable");
    out.release();
    let snap = wait_idle(&p).await;
    let mut taken = out.taken();
    taken.sort_unstable();
    assert_eq!(taken, (0..10).collect::<Vec<u8>>(), "nothing lost");
    assert_eq!(snap.routes[0].delivered, 10);
    assert_conserved(&snap);
    p.shutdown(DEADLINE).await;
}

#[tokio::test]
async fn a_reload_refuses_to_drop_a_durable_backlog_unless_forced() {
    let dir = TempDir::new("refuse-remove");
    let out = FakeOutput::stalled("out");
    let p = start_with(vec![durable_spec(&dir, &["out"])], &[&out]);
    p.offer(msgs("t.x", 0..4), Wait::Unbounded).await;
    out.wait_arrived(1).await;
    let outputs: Vec<Arc<dyn Output>> = vec![out.as_output()];
    let other = spec("other", "o.>", 10, WhenFull::Block, &["out"]);
    let err = p
        .reconfigure(vec![other.clone()], &outputs, DEADLINE)
        .expect_err("removing a durable route with a backlog");
    let text = err.to_string();
    assert!(
        text.contains("\"r\"") && text.contains("holds 4 messages") && text.contains("force"),
        "{text}"
    );
    let mut memory = durable_spec(&dir, &["out"]);
    memory.queue.durable = None;
    let err = p
        .reconfigure(vec![memory], &outputs, DEADLINE)
        .expect_err("turning it into a memory route");
    assert!(err.to_string().contains("into a memory one"), "{err}");
    // Forced: it goes, and its backlog stays on disk for the next time.
    p.reconfigure_forced(vec![other], &outputs, Duration::from_millis(20), true)
        .expect("forced");
    wait_snapshot(&p, |s| s.routes.iter().all(|r| r.name != "r")).await;
    p.shutdown(DEADLINE).await;
    let out2 = FakeOutput::new("out");
    let p = start_with(vec![durable_spec(&dir, &["out"])], &[&out2]);
    wait_idle(&p).await;
    assert_eq!(out2.taken(), vec![0, 1, 2, 3], "delivered when it is back");
    p.shutdown(DEADLINE).await;
}

/// Refuses messages whose first payload byte is odd, for `reason`; keeps
/// nothing it takes (so a receipt settles as the worker lets go).
struct OddRefuser {
    name: &'static str,
    reason: Reject,
}

impl Output for OddRefuser {
    fn name(&self) -> &str {
        self.name
    }

    fn send<'a>(&'a self, batch: &'a [Message]) -> SendFuture<'a> {
        let mut d = Delivery::accepted();
        for (i, m) in batch.iter().enumerate() {
            if m.payload[0] % 2 == 1 {
                d.reject(i, self.reason);
            }
        }
        Box::pin(async move { Ok(d) })
    }
}

#[tokio::test]
async fn receipts_settle_once_every_route_is_done_failed_when_another_try_could_pass() {
    use crate::message::receipt::{Receipt, Settlement};
    use crate::pipeline::testing::{FakeOutput, msg};

    let registry = Registry::new();
    let metrics = PipelineMetrics::new(&registry);
    let failing: Arc<dyn Output> = Arc::new(OddRefuser {
        name: "failing",
        reason: Reject::Failed,
    });
    let small: Arc<dyn Output> = Arc::new(OddRefuser {
        name: "small",
        reason: Reject::TooLarge,
    });
    let stalled = FakeOutput::stalled("stalled");
    let mut full = spec("c", "t.c.>", 1, WhenFull::DropNewest, &["stalled"]);
    full.queue.max_batch = 1;
    let p = Pipeline::start(
        vec![
            spec("a", "t.a.>", 100, WhenFull::Block, &["failing"]),
            spec("b", "t.*.b", 100, WhenFull::Block, &["small"]),
            full,
        ],
        &[failing, small, stalled.as_output()],
        &metrics,
    )
    .expect("valid");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let with_receipt = |topic: &str, n: u8| {
        let mut m = msg(topic, n);
        let tx = tx.clone();
        m.receipt = Some(Receipt::new(move |s| {
            let _ = tx.send((n, s));
        }));
        m
    };
    let batch = vec![
        with_receipt("t.a.x", 0),     // delivered
        with_receipt("t.a.x", 1),     // the output failed: failed
        with_receipt("t.x.b", 3),     // too large: done for good
        with_receipt("t.a.b", 5),     // failed on a, too large on b: failed
        with_receipt("t.nowhere", 7), // no route: done
    ];
    assert_eq!(p.offer(batch, Wait::Durable).await.admitted, 5);
    let mut got = HashMap::new();
    while got.len() < 5 {
        let (n, s) = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .expect("settled before the deadline")
            .expect("sender alive");
        assert!(got.insert(n, s).is_none(), "settles once");
    }
    assert_eq!(got[&0], Settlement::Done);
    assert_eq!(got[&1], Settlement::Failed("output_error"));
    assert_eq!(got[&3], Settlement::Done);
    assert_eq!(got[&5], Settlement::Failed("output_error"));
    assert_eq!(got[&7], Settlement::Done);

    // The stalled route holds one, in flight; the next is dropped for a
    // full queue, which settles it at once, failed.
    assert_eq!(
        p.offer(vec![with_receipt("t.c.x", 10)], Wait::Durable)
            .await
            .admitted,
        1
    );
    stalled.wait_arrived(1).await;
    assert_eq!(
        p.offer(vec![with_receipt("t.c.x", 12)], Wait::Durable)
            .await
            .admitted,
        1,
        "admitted, then dropped (drop_newest)"
    );
    let (n, s) = tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("settled before the deadline")
        .expect("sender alive");
    assert_eq!((n, s), (12, Settlement::Failed("queue_full")));
    assert!(rx.try_recv().is_err(), "the others are still the router's");
}
