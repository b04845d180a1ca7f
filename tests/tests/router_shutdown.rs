//! Graceful shutdown of the real `switchyard` binary: SIGTERM in the middle
//! of an HTTP stream; every message the router accepted (an id returned by
//! a 202, or by a 503 for the admitted prefix of a request) is delivered to
//! the worker or counted as dropped with reason `shutdown`, and the process
//! exits 0. A second signal cuts the drain short.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, anyhow, bail, ensure};
use switchyard_tests::router::http::{Client, numbered_batch};
use switchyard_tests::router::peer::{Peer, PullOptions};
use switchyard_tests::router::{DEADLINE, Router, message, until};

fn config(grace: &str) -> String {
    format!(
        r#"
[router]
admin = "127.0.0.1:0"
shutdown_grace = "{grace}"

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"
max_body = "4MiB"

[[output]]
name = "workers"
kind = "zmq-push"
bind = "tcp://127.0.0.1:0"
send_hwm = 1
send_hwm_bytes = "64KiB"
send_timeout = "10s"

[[route]]
name = "jobs"
match = "jobs.>"
to = ["workers"]
queue = {{ capacity = 100000, when_full = "drop_newest" }}
"#
    )
}

/// What a producer was told: the sequence numbers of the messages whose
/// ids came back.
#[derive(Debug, Default)]
struct Accepted {
    seqs: BTreeSet<u64>,
    ids: BTreeSet<String>,
}

/// Publishes batches of 20 until the router stops taking them (503
/// SHUTTING_DOWN, or the listener is gone). `progress` counts accepted
/// messages as they come back.
fn stream(mut api: Client, size: usize, progress: &AtomicU64) -> Result<Accepted> {
    let mut accepted = Accepted::default();
    let mut next = 0;
    loop {
        let end = next + 20;
        let resp = match api.post_json("/v1/publish", &numbered_batch("jobs.x", next, end, size)) {
            Ok(r) => r,
            // The listener closed: nothing of this request was accepted
            // (an accepted message is always answered).
            Err(_) => return Ok(accepted),
        };
        let ids = resp.ids()?;
        for (i, id) in ids.iter().enumerate() {
            accepted.seqs.insert(next + i as u64);
            ensure!(accepted.ids.insert(id.clone()), "id {id} returned twice");
        }
        progress.fetch_add(ids.len() as u64, Ordering::Relaxed);
        match resp.status {
            202 => next = end,
            503 if resp.error_code().as_deref() == Some("SHUTTING_DOWN") => return Ok(accepted),
            s => bail!("unexpected {s}: {}", resp.text()),
        }
    }
}

/// The route's line in the shutdown log: offered, delivered, dropped, and
/// left (the messages the grace period cut off; 0 when drained).
fn route_report(router: &Router, route: &str) -> Result<(u64, u64, u64, u64)> {
    let line = router
        .log_json()
        .into_iter()
        .find(|l| {
            l["fields"]["route"] == route
                && matches!(
                    message(l),
                    Some(m) if m == "route drained" || m.starts_with("route had undelivered")
                )
        })
        .ok_or_else(|| anyhow!("no shutdown line for route {route}"))?;
    let field = |k: &str| line["fields"][k].as_u64();
    let get = |k: &str| field(k).ok_or_else(|| anyhow!("no {k} in {line}"));
    Ok((
        get("offered")?,
        get("delivered")?,
        get("dropped")?,
        field("left").unwrap_or(0),
    ))
}

#[test]
fn sigterm_mid_stream_delivers_or_counts_every_accepted_message() -> Result<()> {
    let mut router = Router::start(&config("5s"))?;
    let mut worker = Peer::pull(
        &router.output_endpoint("workers")?,
        PullOptions {
            monitor: true,
            ..PullOptions::default()
        },
    )?;
    router.wait_metric("switchyard_zmtp_peers", &[("socket", "workers")], 1.0)?;
    let progress = Arc::new(AtomicU64::new(0));
    let producer = {
        let api = router.http("api")?;
        let progress = Arc::clone(&progress);
        std::thread::spawn(move || stream(api, 64, &progress))
    };
    until("500 messages accepted", DEADLINE, || {
        (progress.load(Ordering::Relaxed) >= 500).then_some(())
    })?;
    router.signal("TERM")?;
    let status = router.wait_exit(DEADLINE)?;
    let accepted = producer
        .join()
        .map_err(|_| anyhow!("producer panicked"))??;
    assert_eq!(status.code(), Some(0), "clean exit");
    router.wait_log("shutdown complete", DEADLINE, |l| {
        message(l) == Some("shutdown complete")
    })?;

    let (offered, delivered, dropped, left) = route_report(&router, "jobs")?;
    let accepted_n = accepted.seqs.len() as u64;
    assert!(accepted_n >= 500);
    assert_eq!(offered, accepted_n, "every accepted message was offered");
    assert_eq!(
        offered,
        delivered + dropped,
        "delivered or counted: {offered} offered, {delivered} delivered, {dropped} dropped ({left} left)"
    );
    assert_eq!(dropped, left, "only the shutdown dropped anything");

    // What the router delivered reached the worker: outputs hand their
    // peers what is queued before closing.
    worker.wait_event("disconnected", DEADLINE)?;
    let got = worker.drain();
    assert_eq!(
        got.len() as u64,
        delivered,
        "the worker got every message the route delivered"
    );
    let mut seen = BTreeSet::new();
    for m in &got {
        let seq = m.seq().expect("generated");
        assert!(accepted.seqs.contains(&seq), "{seq} was never accepted");
        assert!(seen.insert(seq), "{seq} arrived twice");
    }
    Ok(())
}

#[test]
fn sigint_with_a_stalled_worker_counts_what_the_grace_period_cut_off() -> Result<()> {
    const N: u64 = 300;
    let mut router = Router::start(&config("1s"))?;
    let _worker = Peer::pull(&router.output_endpoint("workers")?, PullOptions::stalled())?;
    router.wait_metric("switchyard_zmtp_peers", &[("socket", "workers")], 1.0)?;
    let mut api = router.http("api")?;
    let mut ids = BTreeSet::new();
    for start in (0..N).step_by(50) {
        let resp = api.post_json(
            "/v1/publish",
            &numbered_batch("jobs.x", start, start + 50, 32 * 1024),
        )?;
        ensure!(resp.status == 202, "{}", resp.text());
        ids.extend(resp.ids()?);
    }
    assert_eq!(ids.len() as u64, N);
    // The worker reads nothing: messages stay queued.
    let s = router.wait_scrape(
        "messages held in the queue",
        "switchyard_route",
        DEADLINE,
        |s| {
            let r = s.route("jobs");
            r.offered == N && r.depth > 0 && r.conserved()
        },
    )?;
    let before = s.route("jobs");
    router.signal("INT")?;
    let status = router.wait_exit(DEADLINE)?;
    assert_eq!(status.code(), Some(0), "clean exit after the grace period");
    let (offered, delivered, dropped, left) = route_report(&router, "jobs")?;
    assert_eq!(offered, N);
    assert!(left > 0, "the grace period ended with messages queued");
    assert_eq!(
        dropped, left,
        "what was left is counted as dropped (shutdown)"
    );
    assert_eq!(offered, delivered + dropped);
    assert!(delivered >= before.delivered);
    Ok(())
}

#[test]
fn a_second_signal_exits_at_once() -> Result<()> {
    // A grace period longer than the test's deadline: only the second
    // signal can end the process in time.
    let mut router = Router::start(&config("10m"))?;
    let _worker = Peer::pull(&router.output_endpoint("workers")?, PullOptions::stalled())?;
    router.wait_metric("switchyard_zmtp_peers", &[("socket", "workers")], 1.0)?;
    let mut api = router.http("api")?;
    for start in (0..200).step_by(50) {
        let resp = api.post_json(
            "/v1/publish",
            &numbered_batch("jobs.x", start, start + 50, 32 * 1024),
        )?;
        ensure!(resp.status == 202, "{}", resp.text());
    }
    router.wait_scrape(
        "messages held in the queue",
        "switchyard_route",
        DEADLINE,
        |s| s.route("jobs").depth > 0,
    )?;
    router.signal("TERM")?;
    router.wait_log("the shutdown to start", DEADLINE, |l| {
        message(l).is_some_and(|m| m.starts_with("shutdown requested"))
    })?;
    // Still draining (the worker reads nothing), so still running.
    ensure!(
        router.wait_exit(Duration::from_millis(200)).is_err(),
        "exited before the second signal"
    );
    router.signal("TERM")?;
    let status = router.wait_exit(DEADLINE)?;
    assert_eq!(status.code(), Some(130), "cut short: {status:?}");
    Ok(())
}
