//! The `nats-jetstream` output end to end: the real `switchyard` binary
//! publishing into a stream of a real `nats-server` (started by each test
//! on a random port, with its store in a temp dir), each message counted
//! sent only on its PubAck.
//!
//! - ZMQ PUSH (pyzmq) → router → stream, with `kill -9` of nats-server in
//!   the middle of 100,000 messages and a restart on the same store: the
//!   stream holds each of the 100,000 exactly once (what was in flight at
//!   the kill is sent again with the same `Nats-Msg-Id`), and the router's
//!   metrics account for every message.
//! - HTTP → durable route → stream, with `kill -9` of the router in the
//!   middle and a restart on the same `data_dir`: every `202`-acknowledged
//!   message is in the stream exactly once, though the restart sends again
//!   what the killed router had not released.
//! - A stream that must exist and does not: batches fail (retried), the
//!   reason shows in `/v1/status`, and they go through once it is created.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use anyhow::{Result, ensure};
use switchyard_tests::nats::{NatsServer, Received, create_stream, stream_messages};
use switchyard_tests::router::http::{get, numbered_batch};
use switchyard_tests::router::peer::{Peer, PushOptions};
use switchyard_tests::router::{DEADLINE, Router, TempDir, until};

/// A `nats-jetstream` output `up` to `server` with `output` lines, fed by a
/// `zmq-pull` input `producers` and an HTTP input `api` through route `r`
/// (`sensors.>`) with `route` lines; `router` lines go into `[router]`.
fn config(server: &str, router: &str, output: &str, route: &str) -> String {
    format!(
        r#"
[router]
admin = "127.0.0.1:0"
shutdown_grace = "2s"
{router}

[[input]]
name = "producers"
kind = "zmq-pull"
bind = "tcp://127.0.0.1:0"

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"

[[output]]
name = "up"
kind = "nats-jetstream"
servers = ["{server}"]
subject = "up.{{topic}}"
ack_timeout = "2s"
{output}

[[route]]
name = "r"
match = "sensors.>"
to = ["up"]
{route}
"#
    )
}

/// The stream the router manages in these tests.
const MANAGED: &str = r#"stream = { name = "UP", subjects = ["up.>"], storage = "file" }"#;

/// The number at the start of a numbered payload (`42......`).
fn number(m: &Received) -> Option<u64> {
    let text = std::str::from_utf8(&m.payload).ok()?;
    text.trim_end_matches('.').parse().ok()
}

/// Checks `stored` holds each of `want` exactly once (by payload number,
/// and by `Nats-Msg-Id`).
fn exactly_once(stored: &[Received], want: &BTreeSet<u64>) -> Result<()> {
    let numbers: Vec<u64> = stored.iter().filter_map(number).collect();
    let distinct: BTreeSet<u64> = numbers.iter().copied().collect();
    let ids: BTreeSet<&str> = stored
        .iter()
        .filter_map(|m| m.headers.get("Nats-Msg-Id").map(String::as_str))
        .collect();
    let missing = want.difference(&distinct).count();
    ensure!(
        missing == 0 && numbers.len() == want.len() && ids.len() == want.len(),
        "the stream holds {} messages ({} distinct numbers, {} distinct ids) for {} published; {missing} missing",
        numbers.len(),
        distinct.len(),
        ids.len(),
        want.len()
    );
    Ok(())
}

#[test]
fn a_nats_server_killed_mid_stream_costs_no_message_and_stores_none_twice() -> Result<()> {
    const N: u64 = 100_000;
    let mut server = NatsServer::start()?;
    let router = Router::start(&config(
        &server.url(),
        "",
        &format!("{MANAGED}\nretry = {{ initial = \"50ms\", max = \"500ms\" }}"),
        "queue = { capacity = 20000, when_full = \"block\" }",
    ))?;
    router.wait_metric("switchyard_output_peers", &[("output", "up")], 1.0)?;
    let mut producer = Peer::push(&router.input_endpoint("producers")?, PushOptions::default())?;
    producer.generate("sensors.x", 0, N, 16, None)?;

    router.wait_scrape(
        "a third of the stream acknowledged",
        "switchyard_output",
        DEADLINE,
        |s| s.get("switchyard_output_messages_total", &[("output", "up")]) >= (N / 3) as f64,
    )?;
    server.kill();
    router.wait_metric("switchyard_output_peers", &[("output", "up")], 0.0)?;
    let before = router
        .scrape()?
        .get("switchyard_output_messages_total", &[("output", "up")]);
    server.restart()?;
    // How long after the server listens again the first PubAck counts:
    // printed, not asserted (the issue's bar is 500 ms).
    let back = std::time::Instant::now();
    router.wait_scrape(
        "the first PubAck after the restart",
        "switchyard_output",
        DEADLINE,
        |s| s.get("switchyard_output_messages_total", &[("output", "up")]) > before,
    )?;
    let first_ack = back.elapsed();

    let deadline = DEADLINE * 4;
    let scrape =
        router.wait_scrape("every message acknowledged", "switchyard_", deadline, |s| {
            s.get("switchyard_output_messages_total", &[("output", "up")]) >= N as f64
        })?;
    let route = scrape.route("r");
    ensure!(
        route.conserved() && route.delivered == N && route.depth == 0,
        "{}",
        scrape.show("r")
    );
    let stored = stream_messages(&server.url(), "UP")?;
    exactly_once(&stored, &(0..N).collect())?;
    let retried = scrape.sum("switchyard_output_retries_total", &[("output", "up")]);
    println!(
        "jetstream kill: {N} stored once each; {retried} sends retried; first PubAck {first_ack:?} after the server listened again"
    );
    Ok(())
}

#[test]
fn a_router_killed_mid_stream_on_a_durable_route_stores_each_message_once() -> Result<()> {
    let server = NatsServer::start()?;
    let data = TempDir::new()?;
    let text = config(
        &server.url(),
        &format!("data_dir = {:?}", data.path().display().to_string()),
        // A narrow window keeps a backlog behind the output, so the kill
        // finds messages published to the stream and not yet released.
        &format!("{MANAGED}\nmax_ack_pending = 4"),
        "queue = { durable = true, fsync = \"batch\" }",
    );
    let router = Router::start(&text)?;
    router.wait_metric("switchyard_output_peers", &[("output", "up")], 1.0)?;

    // A publisher that goes on until the router is gone.
    let accepted = Arc::new(Mutex::new(BTreeSet::new()));
    let publisher = {
        let mut api = router.http("api")?;
        let accepted = Arc::clone(&accepted);
        std::thread::spawn(move || {
            let mut n = 0u64;
            while let Ok(resp) =
                api.post_json("/v1/publish", &numbered_batch("sensors.k", n, n + 200, 24))
            {
                if resp.status == 202 {
                    accepted.lock().expect("lock").extend(n..n + 200);
                }
                n += 200;
            }
            // The batch that failed may have reached the disk (and the
            // stream) without its 202: the numbers after it are fresh.
            n + 200
        })
    };
    router.wait_scrape(
        "some messages acknowledged",
        "switchyard_output",
        DEADLINE,
        |s| s.get("switchyard_output_messages_total", &[("output", "up")]) >= 2000.0,
    )?;
    router.signal("KILL")?;
    let next = publisher
        .join()
        .map_err(|_| anyhow::anyhow!("publisher panicked"))?;
    drop(router);

    let router = Router::start(&text)?;
    let mut api = router.http("api")?;
    let resp = api.post_json(
        "/v1/publish",
        &numbered_batch("sensors.k", next, next + 50, 24),
    )?;
    ensure!(resp.status == 202, "{} {}", resp.status, resp.text());
    accepted.lock().expect("lock").extend(next..next + 50);
    let want = accepted.lock().expect("lock").clone();
    until(
        "the stream to hold every acknowledged message",
        DEADLINE,
        || {
            let stored = stream_messages(&server.url(), "UP").ok()?;
            let numbers: BTreeSet<u64> = stored.iter().filter_map(number).collect();
            want.is_subset(&numbers).then_some(())
        },
    )?;
    let scrape = router.wait_scrape("the backlog sent", "switchyard_route", DEADLINE, |s| {
        s.route("r").depth == 0
    })?;
    let stored = stream_messages(&server.url(), "UP")?;
    // What the killed router had in flight was published but never
    // acknowledged to the client (no 202): it may be in the stream too.
    let extra: BTreeSet<u64> = stored
        .iter()
        .filter_map(number)
        .filter(|n| !want.contains(n))
        .collect();
    let mut expected = want.clone();
    expected.extend(&extra);
    exactly_once(&stored, &expected)?;
    let redelivered = scrape.get("switchyard_route_redelivered_total", &[("route", "r")]);
    println!(
        "router kill: {} acknowledged, {} more published unacknowledged, each stored once; {redelivered} sent again after the restart",
        want.len(),
        extra.len()
    );
    Ok(())
}

#[test]
fn a_stream_that_must_exist_holds_batches_back_until_it_does() -> Result<()> {
    let server = NatsServer::start()?;
    let router = Router::start(&config(
        &server.url(),
        "",
        "stream = { name = \"LATER\" }\nretry = { initial = \"20ms\", max = \"200ms\" }",
        "",
    ))?;
    router.wait_metric("switchyard_output_peers", &[("output", "up")], 1.0)?;
    let mut api = router.http("api")?;
    let resp = api.post_json("/v1/publish", &numbered_batch("sensors.a", 0, 10, 8))?;
    ensure!(resp.status == 202, "{}", resp.text());
    let up = until("the missing stream in /v1/status", DEADLINE, || {
        let status = get(router.admin(), "/v1/status").ok()?.json().ok()?;
        let up = status["outputs"]
            .as_array()?
            .iter()
            .find(|o| o["name"] == "up")?
            .clone();
        up["uplink"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("LATER"))
            .then_some(up)
    })?;
    ensure!(up["kind"] == "nats-jetstream" && up["sent"] == 0, "{up}");
    create_stream(&server.url(), "LATER", &["up.>"])?;
    let scrape = router.wait_metric(
        "switchyard_output_messages_total",
        &[("output", "up")],
        10.0,
    )?;
    ensure!(scrape.route("r").conserved(), "{}", scrape.show("r"));
    let stored = stream_messages(&server.url(), "LATER")?;
    exactly_once(&stored, &(0..10).collect())?;
    Ok(())
}
