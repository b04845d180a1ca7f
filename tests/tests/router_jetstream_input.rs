//! The `nats-jetstream` input end to end: a real `nats-server` (started by
//! each test on a random port, its store in a temp dir) holding a stream
//! the router consumes with a durable pull consumer, delivering to ZMQ
//! PULL workers (the peer harness) through a `zmq-push` output.
//!
//! - acked only after delivery: while the workers read nothing, the
//!   router holds at most `max_ack_pending` unacknowledged and fetches no
//!   more (the rest stays pending on the server; `/v1/status` shows the
//!   window in use), and tells the server it
//!   is still working on them, so for three `ack_wait`s none is sent
//!   again; once they read, every
//!   message arrives and the consumer ends with nothing pending and
//!   nothing unacknowledged;
//! - a router killed (`kill -9`) mid-stream and started again: every
//!   message reaches a worker at least once; the duplicates are counted
//!   (`input_redelivered_total`) and printed;
//! - a message no output can take (no worker connected) comes again up to
//!   `max_deliver` times, then is terminated and counted;
//! - on a durable route, a message is acknowledged once it is on disk,
//!   before any worker took it.

use std::collections::BTreeSet;

use anyhow::{Result, ensure};
use switchyard_tests::nats::{NatsServer, consumer_state, create_stream, publish_to_stream};
use switchyard_tests::router::http::get;
use switchyard_tests::router::peer::{Msg, Peer, PullOptions};
use switchyard_tests::router::{DEADLINE, Router, until};

/// A `nats-jetstream` input `cmds` on stream `CMDS` with `input` lines, a
/// `zmq-push` output `workers`, and a route `r` from `cmds.>` to it with
/// `route` lines.
fn config(server: &str, input: &str, route: &str) -> String {
    format!(
        r#"
[router]
admin = "127.0.0.1:0"
shutdown_grace = "2s"

[[input]]
name = "cmds"
kind = "nats-jetstream"
servers = ["{server}"]
stream = "CMDS"
ack_wait = "2s"
{input}

[[output]]
name = "workers"
kind = "zmq-push"
bind = "tcp://127.0.0.1:0"
send_hwm = 10

[[route]]
name = "r"
match = "cmds.>"
to = ["workers"]
{route}
"#
    )
}

/// The number a numbered payload (`42....`) carries.
fn number(m: &Msg) -> Option<u64> {
    m.frames.get(1)?.trim_end_matches('.').parse().ok()
}

/// A server with stream `CMDS` on `cmds.>` holding `0..n`, each of
/// `size` bytes.
fn server_with(n: u64, size: usize) -> Result<NatsServer> {
    let server = NatsServer::start()?;
    create_stream(&server.url(), "CMDS", &["cmds.>"])?;
    publish_to_stream(&server.url(), "cmds.run", 0, n, size)?;
    Ok(server)
}

#[test]
fn a_jetstream_input_acks_only_what_was_delivered_and_fetches_no_more_than_its_window() -> Result<()>
{
    const N: u64 = 2000;
    const WINDOW: u64 = 50;
    // 4 KiB each: the socket buffers of a stalled worker hold a few.
    let server = server_with(N, 4096)?;
    let router = Router::start(&config(
        &server.url(),
        &format!("max_ack_pending = {WINDOW}"),
        "queue = { capacity = 20, when_full = \"block\" }",
    ))?;
    let mut worker = Peer::pull(&router.output_endpoint("workers")?, PullOptions::stalled())?;
    // The worker reads nothing: the socket, the route's queue and the
    // input's window fill, and the router fetches no more.
    router.wait_scrape("the window in use", "switchyard_input", DEADLINE, |s| {
        s.get("switchyard_input_messages_total", &[("input", "cmds")]) >= WINDOW as f64
    })?;
    let state = until("the server to see the window full", DEADLINE, || {
        let s = consumer_state(&server.url(), "CMDS", "cmds").ok()?;
        (s.ack_pending == WINDOW).then_some(s)
    })?;
    ensure!(
        state.pending > 0 && state.ack_pending + state.pending + state.ack_floor == N,
        "nothing is fetched past the window: {state:?}"
    );
    let status = get(router.admin(), "/v1/status")?.json()?;
    let input = &status["inputs"][0];
    ensure!(
        input["name"] == "cmds"
            && input["kind"] == "nats-jetstream"
            && input["uplink"]["connected"] == true
            && input["window"]["max"] == WINDOW
            // What the server sent and the client holds is not taken yet.
            && input["window"]["in_use"].as_u64().is_some_and(|n| n > 0 && n <= WINDOW),
        "{status}"
    );
    // Held for three times its ack_wait, the window is not sent again: the
    // router tells the server it is still working on it. (An observation
    // over a span, not a wait for something to happen.) The window may
    // still drain a little meanwhile: the kernel grows the router's send
    // buffer toward the stalled worker (autotuning, up to megabytes on
    // loopback), what it takes counts as delivered and is acked, and the
    // router fetches as much again; the window never goes past its bound.
    let held = std::time::Instant::now();
    while held.elapsed() < std::time::Duration::from_secs(6) {
        let s = consumer_state(&server.url(), "CMDS", "cmds")?;
        ensure!(
            s.redelivered == 0 && s.ack_pending <= WINDOW,
            "the held window was sent again, or exceeded: {s:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    worker.go()?;
    let got = worker.recv_n(N as usize, DEADLINE)?;
    let numbers: BTreeSet<u64> = got.iter().filter_map(number).collect();
    ensure!(
        numbers == (0..N).collect(),
        "{} distinct of {N} arrived",
        numbers.len()
    );
    let state = until("every message acknowledged", DEADLINE, || {
        let s = consumer_state(&server.url(), "CMDS", "cmds").ok()?;
        (s.ack_pending == 0 && s.pending == 0).then_some(s)
    })?;
    ensure!(state.ack_floor == N, "{state:?}");
    let scrape = router.scrape()?;
    let route = scrape.route("r");
    ensure!(
        route.conserved() && route.delivered == N,
        "{}",
        scrape.show("r")
    );
    Ok(())
}

#[test]
fn a_router_killed_mid_stream_gets_every_message_to_a_worker_at_least_once() -> Result<()> {
    const N: u64 = 5000;
    let server = server_with(N, 16)?;
    let text = config(
        &server.url(),
        "max_ack_pending = 200",
        "queue = { capacity = 100, when_full = \"block\" }",
    );
    let router = Router::start(&text)?;
    let mut worker = Peer::pull(&router.output_endpoint("workers")?, PullOptions::default())?;
    let mut got = worker.recv_n(1000, DEADLINE)?;
    router.signal("KILL")?;
    drop(router);
    // What the killed router's socket still held reaches the worker or
    // not; either way it is the server's to send again.
    while let Some(m) = worker.recv_timeout(std::time::Duration::from_millis(200)) {
        got.push(m);
    }
    drop(worker);

    let router = Router::start(&text)?;
    let mut worker = Peer::pull(&router.output_endpoint("workers")?, PullOptions::default())?;
    let mut seen: BTreeSet<u64> = got.iter().filter_map(number).collect();
    let before = got.len();
    until("every message delivered once more", DEADLINE * 2, || {
        // Everything that has come, not one per look.
        while let Some(m) = worker.recv_timeout(std::time::Duration::from_millis(100)) {
            seen.extend(number(&m));
            got.push(m);
        }
        (seen.len() as u64 == N).then_some(())
    })?;
    ensure!(seen == (0..N).collect(), "{} of {N} seen", seen.len());
    until("every message acknowledged", DEADLINE, || {
        let s = consumer_state(&server.url(), "CMDS", "cmds").ok()?;
        (s.ack_pending == 0 && s.pending == 0).then_some(())
    })?;
    let redelivered = router
        .scrape()?
        .get("switchyard_input_redelivered_total", &[("input", "cmds")]);
    let duplicates = got.len() as u64 - N;
    println!(
        "jetstream input kill: {N} delivered at least once ({before} before the kill); {duplicates} duplicates; the restarted router counted {redelivered} redeliveries"
    );
    Ok(())
}

#[test]
fn a_message_no_output_takes_is_terminated_after_max_deliver_and_counted() -> Result<()> {
    let server = server_with(1, 16)?;
    let router = Router::start(&config(
        &server.url(),
        "max_deliver = 3\nnak_delay = \"10ms\"",
        "",
    ))?;
    // No worker: the output has nobody to give it to, each time.
    let scrape = router.wait_scrape("terminated", "switchyard_", DEADLINE, |s| {
        s.get(
            "switchyard_input_rejected_total",
            &[("input", "cmds"), ("reason", "max_deliver")],
        ) >= 1.0
    })?;
    let route = scrape.route("r");
    ensure!(
        route.no_subscriber == 3 && route.conserved(),
        "three deliveries, each refused: {}",
        scrape.show("r")
    );
    ensure!(
        scrape.get("switchyard_input_redelivered_total", &[("input", "cmds")]) == 2.0,
        "{}",
        scrape.show("r")
    );
    let state = until("the server to drop it", DEADLINE, || {
        let s = consumer_state(&server.url(), "CMDS", "cmds").ok()?;
        (s.ack_pending == 0).then_some(s)
    })?;
    ensure!(state.pending == 0, "{state:?}");
    Ok(())
}

#[test]
fn on_a_durable_route_a_message_is_acked_once_it_is_on_disk() -> Result<()> {
    const N: u64 = 500;
    let server = server_with(N, 16)?;
    let data = switchyard_tests::router::TempDir::new()?;
    let text = config(
        &server.url(),
        "max_ack_pending = 100",
        "queue = { durable = true, fsync = \"batch\", when_full = \"block\" }",
    )
    .replace(
        "shutdown_grace = \"2s\"",
        &format!(
            "shutdown_grace = \"2s\"\ndata_dir = {:?}",
            data.path().display().to_string()
        ),
    );
    let router = Router::start(&text)?;
    // No worker yet: the route keeps every message on disk, and the server
    // has them all acknowledged.
    let state = until("every message acknowledged", DEADLINE, || {
        let s = consumer_state(&server.url(), "CMDS", "cmds").ok()?;
        (s.ack_floor == N).then_some(s)
    })?;
    ensure!(state.ack_pending == 0 && state.pending == 0, "{state:?}");
    let scrape = router.scrape()?;
    ensure!(scrape.route("r").depth == N, "{}", scrape.show("r"));
    let mut worker = Peer::pull(&router.output_endpoint("workers")?, PullOptions::default())?;
    let got = worker.recv_n(N as usize, DEADLINE)?;
    let numbers: BTreeSet<u64> = got.iter().filter_map(number).collect();
    ensure!(numbers == (0..N).collect(), "{} of {N}", numbers.len());
    Ok(())
}
