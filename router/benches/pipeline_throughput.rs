//! Pipeline hot-path throughput: batches offered through `ingress::Sink`,
//! matched, queued, popped by the route workers and handed to an output that
//! accepts everything at once. No sockets; this is the router's own cost per
//! message between an input and an output.
//!
//! The last two rows put the first-party JSON-field filter plugin (built for
//! wasm32 by the bench if needed) in front of the route, next to the same
//! route and ~100-byte JSON payloads without it: their difference is the
//! cost of one plugin stage inside the pipeline (batch handed to the
//! blocking pool, encoded into guest memory, run with the epoch deadline on,
//! verdicts applied).
//!
//! Run: `cargo bench -p switchyard --bench pipeline_throughput`
//! (`-- --quick` for a short run).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchyard::egress::{Delivery, Output, SendFuture};
use switchyard::ingress::{Sink, Wait};
use switchyard::message::{Message, Pattern, Publisher, Topic};
use switchyard::metrics::Registry;
use switchyard::pipeline::{Pipeline, PipelineMetrics, QueueSpec, RouteSpec, Stages, WhenFull};
use switchyard::plugin::Limits;

// Shared with the integration tests; a bench uses only part of it.
#[allow(dead_code)]
#[path = "../tests/plugins/fixtures.rs"]
mod fixtures;

/// Accepts every batch at once and counts messages.
struct Null {
    name: String,
    taken: AtomicU64,
}

impl Output for Null {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, batch: &'a [Message]) -> SendFuture<'a> {
        self.taken.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Box::pin(async { Ok(Delivery::accepted()) })
    }
}

fn route(name: &str, pattern: &str, when_full: WhenFull) -> RouteSpec {
    RouteSpec {
        stages: Default::default(),
        name: name.to_owned(),
        pattern: Pattern::parse(pattern).expect("valid pattern"),
        attributes: Default::default(),
        queue: QueueSpec::new(10_000, 64 << 20, when_full),
        outputs: vec!["null".to_owned()],
        retry: Default::default(),
        request_timeout: std::time::Duration::from_secs(5),
    }
}

/// CPU time this process has used (user + system), from `/proc/self/stat`;
/// zero where that file does not exist. Less disturbed than wall time when
/// other programs share the machine.
fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall, in clock ticks (100 per second on Linux).
    let Some(rest) = stat.rsplit(')').next() else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

async fn run(label: &str, specs: Vec<RouteSpec>, fan_out: u64, budget: Duration) {
    run_with(label, specs, fan_out, budget, Bytes::from(vec![0u8; 64])).await;
}

async fn run_with(
    label: &str,
    specs: Vec<RouteSpec>,
    fan_out: u64,
    budget: Duration,
    payload: Bytes,
) {
    let null = Arc::new(Null {
        name: "null".into(),
        taken: AtomicU64::new(0),
    });
    let outputs: Vec<Arc<dyn Output>> = vec![null.clone()];
    let metrics = PipelineMetrics::new(&Registry::new());
    let pipeline = Pipeline::start(specs, &outputs, &metrics).expect("valid routes");
    let publisher = Publisher::new("bench", "");
    let topic = Topic::try_from("sensors.line1.temp").expect("valid topic");
    let start = Instant::now();
    let cpu_start = cpu_time();
    let mut offered = 0u64;
    while start.elapsed() < budget {
        let batch: Vec<Message> = (0..64)
            .map(|_| Message::new(topic.clone(), payload.clone(), publisher.clone()))
            .collect();
        let got = pipeline.offer(batch, Wait::Unbounded).await;
        offered += got.admitted as u64;
    }
    let report = pipeline.shutdown(Duration::from_secs(30)).await;
    let elapsed = start.elapsed();
    let cpu = cpu_time() - cpu_start;
    let delivered: u64 = report.routes.iter().map(|r| r.delivered).sum();
    let dropped: u64 = report.routes.iter().map(|r| r.dropped.total).sum();
    let filtered: u64 = report.routes.iter().map(|r| r.filtered).sum();
    assert_eq!(
        delivered + dropped + filtered,
        offered * fan_out,
        "conservation"
    );
    assert_eq!(null.taken.load(Ordering::Relaxed), delivered);
    println!(
        "  {label:<34} {:>7.0} ns/message wall {:>7.0} ns/message CPU  {:>6.2} M messages/s offered  ({delivered} delivered, {dropped} dropped)",
        elapsed.as_nanos() as f64 / offered as f64,
        cpu.as_nanos() as f64 / offered as f64,
        offered as f64 / elapsed.as_secs_f64() / 1e6,
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let budget = Duration::from_millis(if quick { 300 } else { 3000 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("pipeline_throughput: 64 B payloads, batches of 64, null output");
    rt.block_on(async {
        run(
            "1 route, block",
            vec![route("r", "sensors.>", WhenFull::Block)],
            1,
            budget,
        )
        .await;
        run(
            "1 route, drop_oldest",
            vec![route("r", "sensors.>", WhenFull::DropOldest)],
            1,
            budget,
        )
        .await;
        run(
            "3 routes (fan-out), drop_newest",
            vec![
                route("a", "sensors.>", WhenFull::DropNewest),
                route("b", "sensors.*.temp", WhenFull::DropNewest),
                route("c", "sensors.line1.temp", WhenFull::DropNewest),
            ],
            3,
            budget,
        )
        .await;
        let json = Bytes::from_static(
            br#"{"sensor":{"id":"line-1-a","temp":25.5},"unit":"C","seq":12345678,"ok":true,"site":"42"}"#,
        );
        run_with(
            "1 route, block, JSON payload",
            vec![route("r", "sensors.>", WhenFull::Block)],
            1,
            budget,
            json.clone(),
        )
        .await;
        let (engine, _registry) = fixtures::engine();
        let limits = Limits::default();
        let filter = fixtures::load(
            &engine,
            "hot",
            "json_filter",
            r#"{"path":"sensor.temp","op":"gt","value":20}"#,
            limits,
        );
        let mut with_plugin = route("r", "sensors.>", WhenFull::Block);
        with_plugin.stages = Stages {
            filters: vec![filter],
            ..Stages::default()
        };
        run_with(
            "1 route, block, JSON-field filter",
            vec![with_plugin],
            1,
            budget,
            json,
        )
        .await;
    });
}
