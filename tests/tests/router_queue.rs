//! Each `when_full` policy against a stalled consumer, on the real
//! `switchyard` binary: a PULL worker (pyzmq) that connects to a `zmq-push`
//! output and reads nothing, with small buffers on both sides, so the
//! route's worker waits on the output and the route's queue fills. (A
//! `zmq-pub` output never stalls a route: it drops per subscriber.)
//!
//! `/metrics` then proves conservation to the message: per route,
//! `offered = delivered + dropped (by reason) + queue_depth`, and the
//! input's accepted count matches what the producer was told. Once the
//! worker reads, exactly the delivered messages arrive.

use std::collections::BTreeSet;

use anyhow::{Result, bail, ensure};
use switchyard_tests::router::http::{Client, numbered_batch};
use switchyard_tests::router::metrics::RouteCounts;
use switchyard_tests::router::peer::{Msg, Peer, PullOptions, PushOptions};
use switchyard_tests::router::{DEADLINE, Router, Scrape};

/// Route queue capacity in the tests.
const CAPACITY: u64 = 20;

fn config(when_full: &str) -> String {
    let block_timeout = if when_full == "block" {
        r#", block_timeout = "200ms""#
    } else {
        ""
    };
    format!(
        r#"
[router]
admin = "127.0.0.1:0"
shutdown_grace = "2s"

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"
max_body = "4MiB"

[[input]]
name = "producers"
kind = "zmq-pull"
bind = "tcp://127.0.0.1:0"
recv_hwm = 4

[[output]]
name = "workers"
kind = "zmq-push"
bind = "tcp://127.0.0.1:0"
send_hwm = 1
send_hwm_bytes = "64KiB"
send_timeout = "60s"

[[route]]
name = "jobs"
match = "jobs.>"
to = ["workers"]
queue = {{ capacity = {CAPACITY}, when_full = "{when_full}"{block_timeout} }}
"#
    )
}

/// A PULL worker that connects and reads nothing until told to, with the
/// smallest buffers libzmq and the kernel allow.
fn stalled_worker(router: &Router) -> Result<Peer> {
    let worker = Peer::pull(&router.output_endpoint("workers")?, PullOptions::stalled())?;
    router.wait_metric("switchyard_zmtp_peers", &[("socket", "workers")], 1.0)?;
    Ok(worker)
}

/// Waits until the route is stalled: its queue full, its counts still
/// (two scrapes in a row agree), `want_offered` offered; returns that
/// scrape.
fn settled(router: &Router, want_offered: u64) -> Result<Scrape> {
    let mut last: Option<RouteCounts> = None;
    router.wait_scrape(
        &format!("route jobs stalled with {want_offered} offered"),
        "switchyard_route",
        DEADLINE,
        |s| {
            let now = s.route("jobs");
            let same = last == Some(now);
            last = Some(now);
            same && now.offered == want_offered && now.depth == CAPACITY
        },
    )
}

/// Reads until the worker has everything the route delivered, then a
/// marker published after the route went idle: nothing can follow.
/// Lets the stalled worker read, waits until route `jobs` is empty (and,
/// with `accepted = Some((input, n))`, until that input has accepted `n`
/// messages, so none is still on its way from a ZeroMQ producer), then
/// sends an end marker and returns what the worker got before it.
fn drain_worker(
    router: &Router,
    worker: &mut Peer,
    api: &mut Client,
    accepted: Option<(&str, u64)>,
) -> Result<Vec<Msg>> {
    worker.go()?;
    router.wait_scrape("route jobs drained", "switchyard_", DEADLINE, |s| {
        let r = s.route("jobs");
        let arrived = accepted.is_none_or(|(input, n)| {
            s.count("switchyard_input_messages_total", &[("input", input)]) == n
        });
        arrived && r.depth == 0 && r.conserved()
    })?;
    let resp = api.post("/v1/publish/jobs.end", &[], b"end")?;
    ensure!(resp.status == 202, "marker: {}", resp.text());
    let mut got = worker.recv_until(DEADLINE, |m| m.topic() == "jobs.end")?;
    got.pop();
    Ok(got)
}

fn assert_conserved(s: &Scrape) -> RouteCounts {
    let r = s.route("jobs");
    assert_eq!(
        r.offered,
        r.delivered + r.dropped + r.depth,
        "offered = delivered + dropped + depth: {r:?}"
    );
    assert_eq!(r.dropped_outcome, r.dropped, "{r:?}");
    r
}

/// `queued` and `in_flight` of route `jobs` from `/v1/status`.
fn queue_status(router: &Router) -> Result<(u64, u64)> {
    let status = switchyard_tests::router::http::get(router.admin(), "/v1/status")?.json()?;
    let route = status["routes"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["name"] == "jobs"))
        .ok_or_else(|| anyhow::anyhow!("no route jobs in {status}"))?;
    let field = |k: &str| {
        route["queue"][k]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("no queue.{k} in {route}"))
    };
    Ok((field("queued")?, field("in_flight")?))
}

/// What the worker received once the stall ended, and how many messages
/// were queued (not in flight) during the stall.
struct Outcome {
    seqs: Vec<u64>,
    queued_at_stall: u64,
}

fn drop_policy(when_full: &str) -> Result<Outcome> {
    const N: u64 = 1000;
    let router = Router::start(&config(when_full))?;
    let mut worker = stalled_worker(&router)?;
    let mut producer = Peer::push(&router.input_endpoint("producers")?, PushOptions::default())?;
    producer.generate("jobs.x", 0, N, 16 * 1024, None)?;
    producer.wait_event("sent", DEADLINE)?;

    let s = settled(&router, N)?;
    let stalled = assert_conserved(&s);
    let (queued, in_flight) = queue_status(&router)?;
    assert_eq!(queued + in_flight, stalled.depth, "{stalled:?}");
    assert_eq!(
        s.count("switchyard_input_messages_total", &[("input", "producers")]),
        N
    );
    assert!(stalled.queue_full > 0, "the queue filled: {stalled:?}");
    assert_eq!(stalled.dropped, stalled.queue_full, "{stalled:?}");
    assert_eq!(
        stalled.depth, CAPACITY,
        "a stalled route's queue is full: {stalled:?}"
    );
    assert!(stalled.backpressure_events > 0, "{stalled:?}");

    let mut api = router.http("api")?;
    let got = drain_worker(&router, &mut worker, &mut api, None)?;
    let s = router.scrape()?;
    let end = assert_conserved(&s);
    assert_eq!(end.offered, N + 1, "the marker too");
    assert_eq!(end.depth, 0);
    assert_eq!(
        end.queue_full, stalled.queue_full,
        "no drop after the stall"
    );
    assert_eq!(
        got.len() as u64 + 1,
        end.delivered,
        "the worker got exactly what was delivered"
    );
    let seqs: Vec<u64> = got.iter().map(|m| m.seq().expect("generated")).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in order, each once: {seqs:?}"
    );
    Ok(Outcome {
        seqs,
        queued_at_stall: queued,
    })
}

#[test]
fn drop_newest_against_a_stalled_worker() -> Result<()> {
    let out = drop_policy("drop_newest")?;
    assert!(!out.seqs.contains(&999), "the newest were dropped");
    Ok(())
}

#[test]
fn drop_oldest_against_a_stalled_worker() -> Result<()> {
    let out = drop_policy("drop_oldest")?;
    // What was queued (not yet handed to the output) at the stall is the
    // newest messages: the older ones were evicted to make room.
    let queued = out.queued_at_stall as usize;
    assert!(queued > 0);
    let tail = &out.seqs[out.seqs.len() - queued..];
    assert_eq!(
        tail,
        (1000 - queued as u64..1000).collect::<Vec<_>>(),
        "the queue kept the newest"
    );
    Ok(())
}

#[test]
fn block_holds_an_http_producer_back_without_loss() -> Result<()> {
    const N: u64 = 400;
    const SIZE: usize = 16 * 1024;
    let router = Router::start(&config("block"))?;
    let mut worker = stalled_worker(&router)?;
    let mut api = router.http("api")?;

    // Publish until the router pushes back: 503 BACKPRESSURE with
    // Retry-After, naming the admitted prefix of the request.
    let mut accepted = BTreeSet::new();
    let mut next = 0;
    let mut refused = 0;
    let held = loop {
        ensure!(next < N, "never held back after {N} messages");
        let end = (next + 10).min(N);
        let resp = api.post_json("/v1/publish", &numbered_batch("jobs.x", next, end, SIZE))?;
        let ids = resp.ids()?;
        accepted.extend(ids.iter().cloned());
        next += ids.len() as u64;
        match resp.status {
            202 => ensure!(next == end),
            503 => {
                refused += end - next;
                break resp;
            }
            s => bail!("unexpected {s}: {}", resp.text()),
        }
    };
    assert_eq!(
        held.error_code().as_deref(),
        Some("BACKPRESSURE"),
        "{}",
        held.text()
    );
    assert!(held.header("retry-after").is_some(), "{:?}", held.headers);
    // Still held back: the next try is refused whole.
    let resp = api.post_json(
        "/v1/publish",
        &numbered_batch("jobs.x", next, next + 10, SIZE),
    )?;
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert!(resp.ids()?.is_empty());
    refused += 10;

    let s = settled(&router, next)?;
    let stalled = assert_conserved(&s);
    assert_eq!(stalled.dropped, 0, "block never drops: {stalled:?}");
    assert_eq!(stalled.depth, CAPACITY, "{stalled:?}");
    assert!(stalled.backpressure_events > 0, "{stalled:?}");
    assert!(stalled.blocked_seconds > 0.0, "{stalled:?}");
    assert_eq!(
        s.count("switchyard_input_messages_total", &[("input", "api")]),
        accepted.len() as u64
    );
    assert_eq!(
        s.count(
            "switchyard_input_rejected_total",
            &[("input", "api"), ("reason", "backpressure")]
        ),
        refused
    );

    // The worker reads; the producer retries what was refused.
    worker.go()?;
    while next < N {
        let end = (next + 10).min(N);
        let resp = api.post_json("/v1/publish", &numbered_batch("jobs.x", next, end, SIZE))?;
        let ids = resp.ids()?;
        accepted.extend(ids.iter().cloned());
        next += ids.len() as u64;
        ensure!(
            resp.status == 202 || resp.status == 503,
            "unexpected {}: {}",
            resp.status,
            resp.text()
        );
    }
    assert_eq!(accepted.len() as u64, N, "one id per message, all distinct");
    let got = drain_worker(&router, &mut worker, &mut api, None)?;
    let seqs: Vec<u64> = got.iter().map(|m| m.seq().expect("generated")).collect();
    assert_eq!(
        seqs,
        (0..N).collect::<Vec<_>>(),
        "everything, once, in order"
    );
    let end = assert_conserved(&router.scrape()?);
    assert_eq!((end.offered, end.delivered, end.dropped), (N + 1, N + 1, 0));
    Ok(())
}

#[test]
fn block_holds_a_zmq_producer_back_with_bounded_memory() -> Result<()> {
    const N: u64 = 4000;
    const SIZE: usize = 16 * 1024;
    /// Far below the 64 MiB the producer tries to send.
    const RSS_BOUND_KIB: u64 = 48 * 1024;
    let router = Router::start(&config("block"))?;
    let mut worker = stalled_worker(&router)?;
    let idle_kib = router.rss_kib()?;
    let mut producer = Peer::push(
        &router.input_endpoint("producers")?,
        PushOptions {
            sndhwm: Some(4),
            sndbuf: Some(64 * 1024),
        },
    )?;
    producer.generate("jobs.x", 0, N, SIZE, None)?;
    // libzmq cannot hand a message to the router for a while: the router
    // stopped reading.
    producer.wait_event("held_back", DEADLINE)?;
    ensure!(
        !producer.has_event("sent"),
        "the producer was never held back"
    );

    let mut last = None;
    let s = router.wait_scrape(
        "route jobs full and still",
        "switchyard_route",
        DEADLINE,
        |s| {
            let now = s.route("jobs");
            let same = last == Some(now);
            last = Some(now);
            same && now.depth == CAPACITY
        },
    )?;
    let stalled = assert_conserved(&s);
    assert_eq!(stalled.dropped, 0, "block never drops: {stalled:?}");
    assert!(stalled.offered < N, "{stalled:?}");
    assert!(stalled.backpressure_events > 0, "{stalled:?}");
    // The input counts a batch once its whole offer completes, so while
    // an offer waits on the full route, the route has admitted a few more
    // than the input has counted yet. Exact again at the end.
    let input = s.count("switchyard_input_messages_total", &[("input", "producers")]);
    assert!(
        input <= stalled.offered,
        "input counted {input}, route admitted {}",
        stalled.offered
    );
    let rss_kib = router.rss_kib()?;
    eprintln!("rss idle {idle_kib} KiB, held back {rss_kib} KiB, offered {stalled:?}");
    assert!(
        rss_kib < RSS_BOUND_KIB,
        "resident memory {rss_kib} KiB while holding a producer back (idle {idle_kib} KiB)"
    );

    worker.go()?;
    producer.wait_event("sent", DEADLINE)?;
    let mut api = router.http("api")?;
    let got = drain_worker(&router, &mut worker, &mut api, Some(("producers", N)))?;
    let seqs: Vec<u64> = got.iter().map(|m| m.seq().expect("generated")).collect();
    assert_eq!(seqs.len() as u64, N);
    assert_eq!(
        seqs,
        (0..N).collect::<Vec<_>>(),
        "everything, once, in order"
    );
    let s = router.scrape()?;
    let end = assert_conserved(&s);
    assert_eq!((end.offered, end.delivered, end.dropped), (N + 1, N + 1, 0));
    assert_eq!(
        s.count("switchyard_input_messages_total", &[("input", "producers")]),
        N
    );
    Ok(())
}

/// Two `block` routes with different `block_timeout`s, each behind a
/// `zmq-push` output no worker ever joins, so one message in flight fills
/// each (capacity 1).
const TWO_TIMEOUTS: &str = r#"
[router]
admin = "127.0.0.1:0"
shutdown_grace = "1s"

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"

[[output]]
name = "fast-workers"
kind = "zmq-push"
bind = "tcp://127.0.0.1:0"
send_timeout = "60s"

[[output]]
name = "slow-workers"
kind = "zmq-push"
bind = "tcp://127.0.0.1:0"
send_timeout = "60s"

[[route]]
name = "fast"
match = "fast.>"
to = ["fast-workers"]
queue = { capacity = 1, when_full = "block", block_timeout = "100ms" }

[[route]]
name = "slow"
match = "slow.>"
to = ["slow-workers"]
queue = { capacity = 1, when_full = "block", block_timeout = "5s" }
"#;

#[test]
fn each_block_route_holds_an_http_publish_for_its_own_timeout() -> Result<()> {
    let router = Router::start(TWO_TIMEOUTS)?;
    let mut api = router.http("api")?;
    // One message each fills both routes.
    for topic in ["fast.a", "slow.a"] {
        let resp = api.post(&format!("/v1/publish/{topic}"), &[], b"x")?;
        ensure!(resp.status == 202, "{topic}: {}", resp.text());
    }
    // A publish to each full route is refused by that route, with its own
    // block_timeout as the pause to wait (rounded up to whole seconds); the
    // deadlines themselves are checked on a paused clock in the pipeline's
    // admission tests.
    for (topic, retry_after) in [("fast.b", "1"), ("slow.b", "5")] {
        let resp = api.post(&format!("/v1/publish/{topic}"), &[], b"x")?;
        assert_eq!(resp.status, 503, "{topic}: {}", resp.text());
        assert_eq!(resp.error_code().as_deref(), Some("BACKPRESSURE"));
        assert_eq!(resp.header("retry-after"), Some(retry_after), "{topic}");
    }
    let s = router.scrape()?;
    assert_eq!(
        s.count(
            "switchyard_input_rejected_total",
            &[("input", "api"), ("reason", "backpressure")]
        ),
        2
    );
    for route in ["fast", "slow"] {
        assert_eq!(
            s.route(route).offered,
            1,
            "{route}: the refused one was not offered"
        );
    }
    Ok(())
}
