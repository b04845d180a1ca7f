//! The real router's admin endpoints after traffic on every input and
//! output kind: `promtool check metrics` accepts `/metrics`, and `/health`,
//! `/ready`, `/v1/status` and `/v1/routes` answer.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, ensure};
use serde_json::json;
use switchyard_tests::nats::NatsServer;
use switchyard_tests::router::http::get;
use switchyard_tests::router::peer::{Peer, PullOptions, PushOptions};
use switchyard_tests::router::{DEADLINE, Router};

const EVERY_KIND: &str = r#"
[router]
name = "metrics-e2e"
admin = "127.0.0.1:0"

[[input]]
name = "devices"
kind = "zmq-sub"
bind = "tcp://127.0.0.1:0"

[[input]]
name = "producers"
kind = "zmq-pull"
bind = "tcp://127.0.0.1:0"

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"

[[output]]
name = "dash"
kind = "zmq-pub"
bind = "tcp://127.0.0.1:0"

[[output]]
name = "workers"
kind = "zmq-push"
bind = "tcp://127.0.0.1:0"
send_timeout = "50ms"

[[route]]
name = "telemetry"
match = "sensors.>"
to = ["dash"]

[[route]]
name = "jobs"
match = "jobs.>"
to = ["workers"]
queue = { capacity = 100, when_full = "block", block_timeout = "100ms" }
"#;

#[test]
fn promtool_accepts_metrics_after_traffic() -> Result<()> {
    let router = Router::start(EVERY_KIND)?;
    let mut worker = Peer::pull(&router.output_endpoint("workers")?, PullOptions::default())?;
    router.wait_metric("switchyard_zmtp_peers", &[("socket", "workers")], 1.0)?;
    let mut sub = Peer::sub(&router.output_endpoint("dash")?, &["sensors."])?;

    let mut api = router.http("api")?;
    for topic in ["sensors.a", "jobs.a", "unrouted.a"] {
        let resp = api.post(
            &format!("/v1/publish/{topic}"),
            &[("X-Attr-site", "1")],
            b"x",
        )?;
        ensure!(resp.status == 202, "{}", resp.text());
    }
    // A refused request, so a rejection series moves too.
    let resp = api.post_json("/v1/publish", &json!({"topic": "bad..topic"}))?;
    ensure!(resp.status == 400, "{}", resp.text());
    let mut producer = Peer::push(&router.input_endpoint("producers")?, PushOptions::default())?;
    producer.send(&[&["jobs.b", "y"]])?;
    let mut publisher = Peer::xpub(&router.input_endpoint("devices")?, &["sensors.", "jobs."])?;
    publisher.send(&[&["sensors.b", "z"]])?;
    worker.recv_n(2, DEADLINE)?;
    router.wait_scrape("traffic counted", "switchyard_", DEADLINE, |s| {
        s.route("jobs").delivered == 2 && s.route("telemetry").offered == 2
    })?;
    let _ = sub.drain();

    let text = router.metrics_text()?;
    promtool_check(&text)?;
    // Families PRODUCT.md names, present with their labels.
    for needle in [
        "switchyard_input_messages_total{input=\"api\"}",
        "switchyard_input_rejected_total{input=\"api\",reason=\"bad_topic\"} 1",
        "switchyard_route_queue_capacity{route=\"jobs\"} 100",
        "switchyard_route_latency_seconds_bucket{route=\"jobs\",le=",
        "switchyard_output_messages_total{output=\"workers\"} 2",
        "switchyard_pipeline_unrouted_total 1",
        "switchyard_zmtp_peers{socket=\"workers\"} 1",
    ] {
        assert!(text.contains(needle), "missing {needle}");
    }

    for path in ["/health", "/ready"] {
        let resp = get(router.admin(), path)?;
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
    }
    let status = get(router.admin(), "/v1/status")?.json()?;
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    let names: Vec<&str> = status["routes"]
        .as_array()
        .context("routes")?
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["telemetry", "jobs"]);
    let routes = get(router.admin(), "/v1/routes")?;
    assert_eq!(routes.status, 200);
    assert!(routes.text().contains("sensors.>"), "{}", routes.text());
    Ok(())
}

/// Runs `promtool check metrics` on `text`; fails with its complaint.
fn promtool_check(text: &str) -> Result<()> {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run promtool (installed by `./dev setup`: Debian package prometheus)")?;
    promtool
        .stdin
        .take()
        .context("promtool stdin")?
        .write_all(text.as_bytes())?;
    let out = promtool.wait_with_output()?;
    ensure!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n---- /metrics ----\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// What [`EVERY_KIND`] lacks for one of every input and output kind: a
/// `zmq-router`, a `nats` and a `nats-jetstream` input, a `zmq-dealer`, a `blackhole`, a
/// `nats` and a `nats-jetstream` output (their server at `NATS_URL`), a
/// route to each, and a `nats-jetstream` input on the output's stream.
const THE_OTHER_KINDS: &str = r#"
[[input]]
name = "clients"
kind = "zmq-router"
bind = "tcp://127.0.0.1:0"

[[output]]
name = "services"
kind = "zmq-dealer"
bind = "tcp://127.0.0.1:0"

[[output]]
name = "void"
kind = "blackhole"

[[route]]
name = "calls"
match = "calls.>"
to = ["services"]

[[route]]
name = "bench"
match = "bench.>"
to = ["void"]

[[output]]
name = "uplink"
kind = "nats"
servers = ["NATS_URL"]

[[route]]
name = "upstream"
match = "uplink.>"
to = ["uplink"]

[[output]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:9/never-posted"

[[route]]
name = "hooked"
match = "hook.>"
to = ["hook"]

[[input]]
name = "inbox"
kind = "nats"
servers = ["NATS_URL"]
subjects = ["inbox.>"]

[[output]]
name = "stream"
kind = "nats-jetstream"
servers = ["NATS_URL"]
stream = { name = "UPLINK", subjects = ["stream.>"] }

[[route]]
name = "streamed"
match = "stream.>"
to = ["stream"]

[[input]]
name = "orders"
kind = "nats-jetstream"
servers = ["NATS_URL"]
stream = "UPLINK"
"#;

/// True when `text` has a series of `family` labelled `label="value"`.
fn has_series(text: &str, family: &str, label: &str, value: &str) -> bool {
    let family = format!("{family}{{");
    let label = format!("{label}=\"{value}\"");
    text.lines()
        .any(|l| l.starts_with(&family) && l.contains(&label))
}

/// The rule in `metrics.rs`: every output kind reports the shared
/// `output_*{output}` families, every input kind the `input_*{input}` ones.
#[test]
fn every_kind_reports_the_shared_families() -> Result<()> {
    let nats = NatsServer::start()?;
    let router = Router::start(&format!(
        "{EVERY_KIND}{}",
        THE_OTHER_KINDS.replace("NATS_URL", &nats.url())
    ))?;
    let mut api = router.http("api")?;
    for _ in 0..3 {
        let resp = api.post("/v1/publish/bench.a", &[], b"x")?;
        ensure!(resp.status == 202, "{}", resp.text());
    }
    let scrape = router.wait_metric(
        "switchyard_output_messages_total",
        &[("output", "void")],
        3.0,
    )?;
    ensure!(scrape.get("switchyard_output_peers", &[("output", "void")]) == 0.0);
    let text = router.metrics_text()?;
    promtool_check(&text)?;
    let families = [
        ("output", "switchyard_output_messages_total"),
        ("output", "switchyard_output_dropped_total"),
        ("output", "switchyard_output_peers"),
        ("output", "switchyard_output_connected"),
        ("output", "switchyard_output_inflight"),
        ("output", "switchyard_output_retries_total"),
        ("output", "switchyard_output_ack_latency_seconds_count"),
        ("input", "switchyard_input_messages_total"),
        ("input", "switchyard_input_rejected_total"),
    ];
    for (label, family) in families {
        let names: &[&str] = if label == "output" {
            &[
                "dash", "workers", "services", "void", "uplink", "stream", "hook",
            ]
        } else {
            &["devices", "producers", "clients", "api", "inbox", "orders"]
        };
        for name in names {
            ensure!(
                has_series(&text, family, label, name),
                "no {family}{{{label}=\"{name}\"}} in /metrics:\n{text}"
            );
        }
    }
    let status = get(router.admin(), "/v1/status")?.json()?;
    let void = status["outputs"]
        .as_array()
        .context("outputs")?
        .iter()
        .find(|o| o["name"] == "void")
        .context("void in /v1/status")?;
    ensure!(void["kind"] == "blackhole" && void["sent"] == 3, "{void}");
    Ok(())
}
