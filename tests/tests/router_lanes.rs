//! A durable route's targets, each with its own cursor, and retry
//! policies, on the real binary: a target whose worker is gone holds back
//! only itself and takes its backlog when it is back, across a restart;
//! what an output keeps failing goes to the dead-letter store.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Result, ensure};
use switchyard_tests::router::http::{get, numbered_batch};
use switchyard_tests::router::peer::{Peer, PullOptions};
use switchyard_tests::router::{Router, TempDir};

const WAIT: Duration = Duration::from_secs(120);

/// A durable route `jobs` to PUSH outputs `a` and `b`, with quick retries.
fn config(data_dir: &std::path::Path, b_retry: &str) -> String {
    format!(
        r#"
[router]
admin = "127.0.0.1:0"
shutdown_grace = "1s"
data_dir = "{}"

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"

[[output]]
name = "a"
kind = "zmq-push"
bind = "tcp://127.0.0.1:0"
send_timeout = "100ms"
retry = {{ initial = "10ms", max = "100ms" }}

[[output]]
name = "b"
kind = "zmq-push"
bind = "tcp://127.0.0.1:0"
send_timeout = "100ms"
retry = {b_retry}

[[route]]
name = "jobs"
match = "jobs.>"
to = ["a", "b"]
queue = {{ durable = true, fsync = "batch" }}
"#,
        data_dir.display()
    )
}

fn numbers(msgs: &[switchyard_tests::router::peer::Msg]) -> BTreeSet<u64> {
    msgs.iter()
        .filter_map(|m| m.payload().trim_end_matches('.').parse().ok())
        .collect()
}

#[test]
fn a_target_that_is_gone_holds_back_only_itself_and_catches_up_after_a_restart() -> Result<()> {
    let data = TempDir::new()?;
    let config = config(data.path(), r#"{ initial = "10ms", max = "100ms" }"#);
    let mut router = Router::start(&config)?;
    let mut a = Peer::pull(&router.output_endpoint("a")?, PullOptions::default())?;
    let mut api = router.http("api")?;
    for start in (0..200).step_by(50) {
        let resp = api.post_json(
            "/v1/publish",
            &numbered_batch("jobs.x", start, start + 50, 32),
        )?;
        ensure!(resp.status == 202, "{}", resp.text());
    }
    // `a` gets everything while `b` has no worker at all.
    let got = a.recv_n(200, WAIT)?;
    ensure!(
        numbers(&got) == (0..200).collect(),
        "a got {:?}",
        numbers(&got)
    );
    let scrape = router.scrape()?;
    ensure!(
        scrape.route("jobs").depth == 200 && scrape.route("jobs").delivered == 0,
        "held until b has them: {:?}",
        scrape.route("jobs")
    );
    router.signal("TERM")?;
    router.wait_exit(WAIT)?;

    // After a restart `a` goes on from its own cursor: nothing again; `b`
    // takes the whole backlog once its worker is there.
    let router = Router::start(&config)?;
    let mut b = Peer::pull(&router.output_endpoint("b")?, PullOptions::default())?;
    let got = b.recv_n(200, WAIT)?;
    ensure!(
        numbers(&got) == (0..200).collect(),
        "b got {:?}",
        numbers(&got)
    );
    router.wait_scrape("the backlog released", "switchyard_route", WAIT, |s| {
        s.route("jobs").depth == 0
    })?;
    let scrape = router.scrape()?;
    ensure!(
        scrape.get("switchyard_output_messages_total", &[("output", "a")]) == 0.0,
        "a was sent what it had taken before the restart"
    );
    ensure!(
        scrape.route("jobs").delivered == 200,
        "{:?}",
        scrape.route("jobs")
    );
    Ok(())
}

#[test]
fn what_an_output_keeps_failing_goes_to_the_dead_letter_store() -> Result<()> {
    let data = TempDir::new()?;
    let config = config(
        data.path(),
        r#"{ initial = "10ms", max = "20ms", max_attempts = 3 }"#,
    );
    let router = Router::start(&config)?;
    let mut a = Peer::pull(&router.output_endpoint("a")?, PullOptions::default())?;
    let mut api = router.http("api")?;
    let resp = api.post_json("/v1/publish", &numbered_batch("jobs.x", 0, 5, 16))?;
    ensure!(resp.status == 202, "{}", resp.text());
    ensure!(a.recv_n(5, WAIT)?.len() == 5);
    // `b` has no worker: three sends of each, then the store.
    let scrape = router.wait_scrape("dead-lettered", "switchyard_route", WAIT, |s| {
        s.route("jobs").dead_lettered == 5 && s.route("jobs").depth == 0
    })?;
    ensure!(
        scrape.sum("switchyard_output_retries_total", &[("output", "b")]) >= 10.0,
        "two resends of each of five"
    );
    let resp = get(
        router.admin(),
        "/v1/dead-letters?reason=retries_exhausted&output=b",
    )?;
    ensure!(resp.status == 200, "{}", resp.text());
    let body: serde_json::Value = serde_json::from_str(&resp.text())?;
    let entries = body["entries"].as_array().cloned().unwrap_or_default();
    ensure!(entries.len() == 5, "{body}");
    for e in &entries {
        ensure!(e["attempts"] == 3 && e["route"] == "jobs", "{e}");
    }
    Ok(())
}

#[test]
fn a_backlog_on_disk_while_the_worker_is_gone_keeps_memory_flat_and_arrives_whole() -> Result<()> {
    let data = TempDir::new()?;
    let config = format!(
        r#"
[router]
admin = "127.0.0.1:0"
data_dir = "{}"

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"
max_body = "4MiB"

[[output]]
name = "a"
kind = "zmq-push"
bind = "tcp://127.0.0.1:0"
send_timeout = "100ms"

[[route]]
name = "jobs"
match = "jobs.>"
to = ["a"]
queue = {{ durable = true, max_bytes = "256MiB" }}
"#,
        data.path().display()
    );
    let router = Router::start(&config)?;
    let mut api = router.http("api")?;
    // Warm up the paths a publish takes before measuring.
    let resp = api.post_json("/v1/publish", &numbered_batch("jobs.x", 0, 100, 1024))?;
    ensure!(resp.status == 202, "{}", resp.text());
    let idle = router.rss_kib()?;
    // 64 MiB of 1 KiB messages, with nobody to take them.
    const N: u64 = 65_536;
    for start in (100..N).step_by(1000) {
        let end = (start + 1000).min(N);
        let resp = api.post_json("/v1/publish", &numbered_batch("jobs.x", start, end, 1024))?;
        ensure!(resp.status == 202, "{}", resp.text());
    }
    let scrape = router.scrape()?;
    ensure!(
        scrape.route("jobs").depth == N,
        "{:?}",
        scrape.route("jobs")
    );
    let held = router.rss_kib()?;
    ensure!(
        held < idle + 32 * 1024,
        "RSS grew from {idle} KiB to {held} KiB with the backlog on disk"
    );
    // The worker is back: all of it arrives.
    let mut worker = Peer::pull(&router.output_endpoint("a")?, PullOptions::default())?;
    let got = worker.recv_n(N as usize, WAIT)?;
    ensure!(numbers(&got) == (0..N).collect(), "all delivered once");
    router.wait_scrape("released", "switchyard_route", WAIT, |s| {
        s.route("jobs").depth == 0
    })?;
    Ok(())
}
