//! The `nats` output (core NATS) end to end: the real `switchyard` binary
//! publishing to a real `nats-server` (started by each test on a random
//! port), read back by an `async-nats` subscriber or, across server
//! restarts, by a JetStream stream on the subject, which keeps what reached
//! the server and stores a `Nats-Msg-Id` once.
//!
//! - subject template, `Nats-Msg-Id` and attribute headers, payload;
//! - a durable route holds what is published while the uplink is down (a
//!   relay the test cuts) and delivers it once it is back, each message
//!   stored once;
//! - a message over the server's `max_payload`, or with an attribute no
//!   NATS header can hold, goes to the dead-letter store at once
//!   (`too_large`, `unencodable`), and the next is delivered;
//! - a router whose server is not there starts, is not ready, and becomes
//!   ready when the server comes up; token auth from `${ENV}`, and a wrong
//!   token shown in `/v1/status`;
//! - a 30 s outage (the relay cut) under a steady 2,000 msgs/s of 1 KiB
//!   on a durable route to a JetStream output: the backlog waits on disk,
//!   RSS stays within 32 MiB of the loaded router, and the stream holds
//!   every message once the link is back;
//! - the `nats` input: subject as topic, headers as attributes, a message
//!   over `max_message_size` refused and counted, and the subscription
//!   back after a server restart.

use std::collections::BTreeSet;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use switchyard_tests::nats::{
    Certificates, Link, NatsServer, Outgoing, Subscriber, create_stream, publish as nats_publish,
    stream_messages,
};
use switchyard_tests::router::http::{get, numbered_batch};
use switchyard_tests::router::peer::{Msg, Peer, PullOptions};
use switchyard_tests::router::{DEADLINE, Router, Scrape, TempDir, until};

/// An HTTP input `api`, a `nats` output `up` to `server` with `output`
/// lines, and a route `r` from `sensors.>` to it with `route` lines;
/// `router` lines go into `[router]`.
fn config(server: &str, router: &str, output: &str, route: &str) -> String {
    format!(
        r#"
[router]
admin = "127.0.0.1:0"
shutdown_grace = "2s"
{router}

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"

[[output]]
name = "up"
kind = "nats"
servers = ["{server}"]
{output}

[[route]]
name = "r"
match = "sensors.>"
to = ["up"]
{route}
"#
    )
}

fn publish(router: &Router, body: &Value) -> Result<Vec<String>> {
    let resp = router.http("api")?.post_json("/v1/publish", body)?;
    ensure!(resp.status == 202, "{} {}", resp.status, resp.text());
    resp.ids()
}

fn status_of(router: &Router, output: &str) -> Result<Value> {
    let status = get(router.admin(), "/v1/status")?.json()?;
    status["outputs"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["name"] == output).cloned())
        .with_context(|| format!("no output {output} in {status}"))
}

#[test]
fn publishes_each_message_with_its_subject_id_and_attributes() -> Result<()> {
    let server = NatsServer::start()?;
    let sub = Subscriber::start(&server.url(), "site42.>")?;
    let router = Router::start(&config(
        &server.url(),
        "",
        "subject = \"site42.{topic}\"",
        "",
    ))?;
    router.wait_metric("switchyard_output_peers", &[("output", "up")], 1.0)?;
    let ids = publish(
        &router,
        &json!({"messages": [
            {"topic": "sensors.t1", "payload": "21.5", "attributes": {"unit": "C", "site": "42"}},
            {"topic": "sensors.t2", "payload": "19.0"},
            {"topic": "sensors.t1.raw", "payload": "x"},
        ]}),
    )?;
    let got = sub.wait_for(3, DEADLINE)?;
    ensure!(got.len() == 3, "{got:?}");
    let subjects: Vec<&str> = got.iter().map(|m| m.subject.as_str()).collect();
    ensure!(
        subjects
            == [
                "site42.sensors.t1",
                "site42.sensors.t2",
                "site42.sensors.t1.raw"
            ],
        "{subjects:?}"
    );
    for (m, id) in got.iter().zip(&ids) {
        ensure!(
            m.headers.get("Nats-Msg-Id") == Some(id),
            "id {id}: {:?}",
            m.headers
        );
    }
    ensure!(got[0].payload == b"21.5", "{:?}", got[0]);
    ensure!(
        got[0].headers.get("unit").map(String::as_str) == Some("C")
            && got[0].headers.get("site").map(String::as_str) == Some("42"),
        "{:?}",
        got[0].headers
    );
    let scrape =
        router.wait_metric("switchyard_output_messages_total", &[("output", "up")], 3.0)?;
    ensure!(scrape.route("r").conserved(), "{}", scrape.show("r"));
    let up = status_of(&router, "up")?;
    ensure!(
        up["kind"] == "nats" && up["uplink"]["connected"] == true && up["peers"] == 1,
        "{up}"
    );
    ensure!(
        up["uplink"]["server"]
            .as_str()
            .is_some_and(|s| s.ends_with(&format!(":{}", server.port()))),
        "{up}"
    );
    Ok(())
}

#[test]
fn a_durable_route_holds_what_arrives_while_the_uplink_is_down() -> Result<()> {
    // The router reaches the server through a link the test cuts: the
    // server (and the stream that witnesses what reached it) stays up, so
    // what the router sends once the link is back has a stream to go to.
    // (A killed server comes back before its streams do: core NATS
    // publishes that arrive in between are lost, by design.)
    let server = NatsServer::start()?;
    create_stream(&server.url(), "UP", &["up.>"])?;
    let link = Link::new(&format!("127.0.0.1:{}", server.port()))?;
    let data = TempDir::new()?;
    let router = Router::start(&config(
        &link.url(),
        &format!("data_dir = {:?}", data.path().display().to_string()),
        "subject = \"up.{topic}\"",
        "queue = { durable = true }",
    ))?;
    router.wait_metric("switchyard_output_peers", &[("output", "up")], 1.0)?;
    let mut ids = publish(&router, &numbered_batch("sensors.a", 0, 100, 64))?;
    router.wait_metric(
        "switchyard_output_messages_total",
        &[("output", "up")],
        100.0,
    )?;

    // The link goes down; once the output saw it go, what is published
    // waits on disk.
    link.cut();
    router.wait_metric("switchyard_output_peers", &[("output", "up")], 0.0)?;
    router.wait_metric("switchyard_output_connected", &[("output", "up")], 0.0)?;
    for start in (100..400).step_by(100) {
        ids.extend(publish(
            &router,
            &numbered_batch("sensors.b", start, start + 100, 64),
        )?);
    }
    ensure!(
        get(router.admin(), "/ready")?.status == 200,
        "an uplink that connected once keeps the router ready"
    );
    let up = status_of(&router, "up")?;
    ensure!(up["uplink"]["connected"] == false, "{up}");

    link.restore();
    router.wait_metric("switchyard_output_connected", &[("output", "up")], 1.0)?;
    let scrape = router.wait_metric(
        "switchyard_output_messages_total",
        &[("output", "up")],
        400.0,
    )?;
    router.wait_scrape("nothing in flight", "switchyard_output", DEADLINE, |s| {
        s.get("switchyard_output_inflight", &[("output", "up")]) == 0.0
            && s.get(
                "switchyard_output_ack_latency_seconds_count",
                &[("output", "up")],
            ) > 0.0
    })?;
    ensure!(scrape.route("r").conserved(), "{}", scrape.show("r"));
    let stored = until("the stream to hold 400 messages", DEADLINE, || {
        stream_messages(&server.url(), "UP")
            .ok()
            .filter(|m| m.len() >= 400)
    })?;
    let stored_ids: BTreeSet<&str> = stored
        .iter()
        .filter_map(|m| m.headers.get("Nats-Msg-Id").map(String::as_str))
        .collect();
    let published: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    ensure!(
        stored.len() == 400 && stored_ids == published,
        "the stream holds {} messages, {} ids; {} published",
        stored.len(),
        stored_ids.len(),
        published.len()
    );
    Ok(())
}

#[test]
fn what_nats_cannot_carry_is_dead_lettered_for_good() -> Result<()> {
    let server = NatsServer::start_with("max_payload: 1024")?;
    let sub = Subscriber::start(&server.url(), "sensors.>")?;
    let data = TempDir::new()?;
    let router = Router::start(&config(
        &server.url(),
        &format!("data_dir = {:?}", data.path().display().to_string()),
        "",
        "",
    ))?;
    router.wait_metric("switchyard_output_peers", &[("output", "up")], 1.0)?;
    let big = "x".repeat(2000);
    let ids = publish(
        &router,
        &json!({"messages": [
            {"topic": "sensors.big", "payload": big},
            {"topic": "sensors.odd", "payload": "y", "attributes": {"not a header": "v"}},
            {"topic": "sensors.small", "payload": "ok"},
        ]}),
    )?;
    let got = sub.wait_for(1, DEADLINE)?;
    ensure!(got[0].subject == "sensors.small", "{got:?}");
    for reason in ["too_large", "unencodable"] {
        router.wait_metric(
            "switchyard_output_dropped_total",
            &[("output", "up"), ("reason", reason)],
            1.0,
        )?;
    }
    let entries = until("the dead letters", DEADLINE, || {
        let page = get(router.admin(), "/v1/dead-letters").ok()?.json().ok()?;
        let entries = page["entries"].as_array()?.clone();
        (entries.len() >= 2).then_some(entries)
    })?;
    let kept: BTreeSet<(String, String)> = entries
        .iter()
        .filter(|e| e["output"] == "up" && e["attempts"] == 1)
        .filter_map(|e| {
            Some((
                e["message_id"].as_str()?.to_owned(),
                e["reason"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let want = BTreeSet::from([
        (ids[0].clone(), "too_large".to_owned()),
        (ids[1].clone(), "unencodable".to_owned()),
    ]);
    ensure!(kept == want, "{entries:?}");
    let scrape = router.scrape()?;
    ensure!(scrape.route("r").conserved(), "{}", scrape.show("r"));
    ensure!(sub.received().len() == 1, "{:?}", sub.received());
    Ok(())
}

#[test]
fn starts_without_its_server_and_is_ready_once_it_connects() -> Result<()> {
    let token = "t0ken-for-the-test";
    let auth = format!("authorization {{ token: {token:?} }}");
    let mut server = NatsServer::start_with(&auth)?;
    let url = server.url();
    server.kill();
    let router = Router::builder(&config(
        &url,
        "",
        "auth = { token = \"${TEST_NATS_TOKEN}\" }",
        "",
    ))
    .env("TEST_NATS_TOKEN", token)
    .start()?;
    let ready = get(router.admin(), "/ready")?;
    ensure!(ready.status == 503, "{} {}", ready.status, ready.text());
    // Accepted while the server is away: the route holds it.
    let ids = publish(&router, &numbered_batch("sensors.a", 0, 5, 8))?;

    server.restart()?;
    until("/ready to answer 200", DEADLINE, || {
        (get(router.admin(), "/ready").ok()?.status == 200).then_some(())
    })?;
    let sub = Subscriber::start_with(&server.url(), "sensors.>", Some(token))?;
    // Core NATS: the subscriber gets what the server routes once its
    // subscription is in; probe until one arrives.
    let mut probes = 0.0;
    until("a probe through the router", DEADLINE, || {
        probes += 1.0;
        publish(&router, &numbered_batch("sensors.probe", 0, 1, 8)).ok()?;
        sub.received()
            .iter()
            .any(|m| m.subject == "sensors.probe")
            .then_some(())
    })?;
    let more = publish(&router, &numbered_batch("sensors.a", 5, 10, 8))?;
    until("the messages published once connected", DEADLINE, || {
        let got = sub.received();
        let got_ids: BTreeSet<&str> = got
            .iter()
            .filter_map(|m| m.headers.get("Nats-Msg-Id").map(String::as_str))
            .collect();
        more.iter()
            .all(|id| got_ids.contains(id.as_str()))
            .then_some(())
    })?;
    let scrape = router.wait_scrape("every message sent", "switchyard_", DEADLINE, |s| {
        let r = s.route("r");
        r.depth == 0 && r.offered as f64 == 10.0 + probes
    })?;
    ensure!(scrape.route("r").conserved(), "{}", scrape.show("r"));
    ensure!(ids.len() == 5, "{ids:?}");
    ensure!(
        !router.log_lines().iter().any(|l| l.contains(token)),
        "the token shows in the router's log"
    );
    Ok(())
}

#[test]
fn a_refused_login_shows_in_status_and_keeps_the_router_unready() -> Result<()> {
    let server = NatsServer::start_with("authorization { token: \"right\" }")?;
    let dir = TempDir::new()?;
    let token = dir.write("token", "wr0ng-t0ken\n")?;
    let router = Router::start(&config(
        &server.url(),
        "",
        &format!(
            "auth = {{ token_file = {:?} }}",
            token.display().to_string()
        ),
        "",
    ))?;
    let up = until("the refusal in /v1/status", DEADLINE, || {
        let up = status_of(&router, "up").ok()?;
        up["uplink"]["last_error"]
            .as_str()
            .is_some_and(|e| e.to_lowercase().contains("authorization"))
            .then_some(up)
    })?;
    ensure!(up["uplink"]["connected"] == false, "{up}");
    ensure!(
        get(router.admin(), "/ready")?.status == 503,
        "ready with a refused login"
    );
    let status = get(router.admin(), "/v1/status")?.text();
    ensure!(!status.contains("wr0ng-t0ken"), "{status}");
    ensure!(
        !router.log_lines().iter().any(|l| l.contains("wr0ng-t0ken")),
        "the token shows in the router's log"
    );
    Ok(())
}

/// A `nats` input `commands` on `server` (`cmd.>`, with `input` lines), a
/// route to a bound `zmq-push` output `workers` carrying attributes.
fn input_config(server: &str, input: &str) -> String {
    format!(
        r#"
[router]
admin = "127.0.0.1:0"

[[input]]
name = "commands"
kind = "nats"
servers = ["{server}"]
subjects = ["cmd.>"]
{input}

[[output]]
name = "workers"
kind = "zmq-push"
bind = "tcp://127.0.0.1:0"
envelope = "topic-attrs-payload"

[[route]]
name = "cmds"
match = "cmd.>"
to = ["workers"]
"#
    )
}

/// Publishes `cmd.probe` until the worker gets one: the input's
/// subscription is then in force at the server.
fn until_subscribed(server: &NatsServer, worker: &mut Peer) -> Result<()> {
    until("the input's subscription", DEADLINE, || {
        nats_publish(&server.url(), &[("cmd.probe", &[], b"p")]).ok()?;
        let got = worker.recv_timeout(std::time::Duration::from_millis(100))?;
        (got.topic() == "cmd.probe").then_some(())
    })?;
    Ok(())
}

/// The next `n` messages the worker receives past any late probes.
fn recv_data(worker: &mut Peer, n: usize) -> Result<Vec<Msg>> {
    let mut got = Vec::new();
    until(&format!("{n} messages past the probes"), DEADLINE, || {
        while got.len() < n {
            let m = worker.recv_timeout(std::time::Duration::from_millis(20))?;
            if m.topic() != "cmd.probe" {
                got.push(m);
            }
        }
        Some(())
    })?;
    Ok(got)
}

#[test]
fn a_nats_input_offers_subjects_as_topics_and_headers_as_attributes() -> Result<()> {
    let mut server = NatsServer::start()?;
    let router = Router::start(&input_config(
        &server.url(),
        "queue_group = \"routers\"\nmax_message_size = \"1KiB\"",
    ))?;
    let mut worker = Peer::pull(&router.output_endpoint("workers")?, PullOptions::default())?;
    until("/ready", DEADLINE, || {
        (get(router.admin(), "/ready").ok()?.status == 200).then_some(())
    })?;
    until_subscribed(&server, &mut worker)?;
    let big = vec![b'x'; 2000];
    // A subject the server takes but no topic can be: over 1024 bytes.
    let long = format!("cmd.{}", "t".repeat(1100));
    nats_publish(
        &server.url(),
        &[
            ("cmd.valve.open", &[("site", "42"), ("by", "ops")], b"v1"),
            ("cmd.big", &[], &big),
            (&long, &[], b"bad topic"),
            ("other.subject", &[], b"not subscribed"),
            ("cmd.valve.close", &[], b"v2"),
        ],
    )?;
    let got = recv_data(&mut worker, 2)?;
    ensure!(
        got[0].topic() == "cmd.valve.open" && got[0].payload() == "v1",
        "{got:?}"
    );
    let attrs: serde_json::Map<String, Value> = serde_json::from_str(&got[0].frames[1])?;
    ensure!(
        attrs.get("site") == Some(&json!("42")) && attrs.get("by") == Some(&json!("ops")),
        "{attrs:?}"
    );
    ensure!(got[1].topic() == "cmd.valve.close", "{got:?}");
    router.wait_metric(
        "switchyard_input_rejected_total",
        &[("input", "commands"), ("reason", "too_large")],
        1.0,
    )?;
    let scrape = router.wait_metric(
        "switchyard_input_rejected_total",
        &[("input", "commands"), ("reason", "bad_topic")],
        1.0,
    )?;
    ensure!(scrape.route("cmds").conserved(), "{}", scrape.show("cmds"));

    // The server goes and comes back: the input subscribes again.
    server.restart()?;
    until_subscribed(&server, &mut worker)?;
    nats_publish(&server.url(), &[("cmd.after", &[], b"v3")])?;
    let got = recv_data(&mut worker, 1)?;
    ensure!(got[0].topic() == "cmd.after", "{got:?}");
    Ok(())
}

#[test]
fn a_nats_input_counts_what_it_cannot_hold_while_a_route_is_full() -> Result<()> {
    const N: u64 = 3000;
    let server = NatsServer::start()?;
    let router = Router::start(&input_config(&server.url(), "max_pending = 100").replace(
        "to = [\"workers\"]",
        "to = [\"workers\"]\nqueue = { capacity = 100, when_full = \"block\" }",
    ))?;
    let mut probe = Peer::pull(&router.output_endpoint("workers")?, PullOptions::default())?;
    until_subscribed(&server, &mut probe)?;
    probe.close()?;
    let mut worker = Peer::pull(&router.output_endpoint("workers")?, PullOptions::stalled())?;
    router.wait_metric("switchyard_output_peers", &[("output", "workers")], 1.0)?;
    let before = router
        .scrape()?
        .get("switchyard_input_messages_total", &[("input", "commands")]);
    let payload = [b'm'; 16];
    let messages: Vec<Outgoing<'_>> = (0..N)
        .map(|_| ("cmd.flood", &[][..], &payload[..]))
        .collect();
    nats_publish(&server.url(), &messages)?;
    let refused = |s: &Scrape| {
        s.get(
            "switchyard_input_rejected_total",
            &[("input", "commands"), ("reason", "backpressure")],
        )
    };
    router.wait_scrape(
        "refusals while the route is full",
        "switchyard_input",
        DEADLINE,
        |s| refused(s) > 0.0,
    )?;
    // The worker reads again: what the input held goes through, and every
    // message the server delivered is admitted or refused, counted.
    worker.go()?;
    let scrape = router.wait_scrape("every message counted", "switchyard_", DEADLINE, |s| {
        let admitted = s.get("switchyard_input_messages_total", &[("input", "commands")]) - before;
        admitted + refused(s) >= N as f64 && s.route("cmds").depth == 0
    })?;
    let admitted = scrape.get("switchyard_input_messages_total", &[("input", "commands")]) - before;
    let route = scrape.route("cmds");
    ensure!(route.conserved(), "{route:?}");
    // What the worker gets is what was admitted: the flood, and any probe
    // of the subscription that arrived late (counted out, not in).
    let got = worker.recv_n(admitted as usize, DEADLINE)?;
    let late_probes = got.iter().filter(|m| m.topic() == "cmd.probe").count() as f64;
    ensure!(
        got.iter()
            .all(|m| m.topic() == "cmd.flood" || m.topic() == "cmd.probe"),
        "{:?}",
        got.first()
    );
    ensure!(
        admitted - late_probes + refused(&scrape) == N as f64,
        "{admitted} admitted ({late_probes} of them late probes) and {} refused of {N}",
        refused(&scrape)
    );
    Ok(())
}

#[test]
fn nats_over_mutual_tls_carries_messages_out_and_back_in() -> Result<()> {
    let certs = Certificates::new()?;
    let server = NatsServer::start_with(&certs.server_block())?;
    let tls = format!(
        "tls = {{ ca_file = {:?}, cert_file = {:?}, key_file = {:?} }}",
        certs.path("ca.pem").display().to_string(),
        certs.path("client.pem").display().to_string(),
        certs.path("client.key").display().to_string(),
    );
    // HTTP -> nats output (TLS) -> the server -> nats input (TLS) -> PULL.
    let config = format!(
        r#"
[router]
admin = "127.0.0.1:0"

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"

[[input]]
name = "back"
kind = "nats"
servers = ["{url}"]
subjects = ["loop.>"]
{tls}

[[output]]
name = "up"
kind = "nats"
servers = ["{url}"]
subject = "loop.{{topic}}"
{tls}

[[output]]
name = "workers"
kind = "zmq-push"
bind = "tcp://127.0.0.1:0"

[[route]]
name = "out"
match = "sensors.>"
to = ["up"]

[[route]]
name = "in"
match = "loop.>"
to = ["workers"]
"#,
        url = server.url(),
    );
    let router = Router::start(&config)?;
    let mut worker = Peer::pull(&router.output_endpoint("workers")?, PullOptions::default())?;
    until("/ready over TLS", DEADLINE, || {
        (get(router.admin(), "/ready").ok()?.status == 200).then_some(())
    })?;
    // Until the input's subscription is in force, what goes out is lost
    // (core NATS): publish until one comes back.
    let got = until("a message out and back in", DEADLINE, || {
        publish(&router, &numbered_batch("sensors.t", 0, 1, 8)).ok()?;
        worker.recv_timeout(std::time::Duration::from_millis(200))
    })?;
    ensure!(got.topic() == "loop.sensors.t", "{got:?}");
    let up = status_of(&router, "up")?;
    ensure!(up["uplink"]["connected"] == true, "{up}");

    // Without a client certificate the server refuses the router: the
    // handshake's failure shows in /v1/status, and it is not ready.
    let refused = Router::start(&self::config(
        &server.url(),
        "",
        &format!(
            "tls = {{ ca_file = {:?} }}",
            certs.path("ca.pem").display().to_string()
        ),
        "",
    ))?;
    let up = until("the refused handshake in /v1/status", DEADLINE, || {
        let up = status_of(&refused, "up").ok()?;
        up["uplink"]["last_error"].is_string().then_some(up)
    })?;
    ensure!(up["uplink"]["connected"] == false, "{up}");
    ensure!(get(refused.admin(), "/ready")?.status == 503, "{up}");
    println!(
        "without a client certificate: {}",
        up["uplink"]["last_error"]
    );
    Ok(())
}

#[test]
fn a_thirty_second_outage_under_steady_load_keeps_the_router_within_its_memory() -> Result<()> {
    const RATE: u64 = 2000; // messages per second, 1 KiB each
    const OUTAGE: std::time::Duration = std::time::Duration::from_secs(30);
    // A JetStream output, so that what the cut catches in flight is sent
    // again and the stream's count at the end is exact.
    let server = NatsServer::start()?;
    let link = Link::new(&format!("127.0.0.1:{}", server.port()))?;
    let data = TempDir::new()?;
    let router = Router::start(
        &config(
            &link.url(),
            &format!("data_dir = {:?}", data.path().display().to_string()),
            "subject = \"up.{topic}\"\nstream = { name = \"UP\", subjects = [\"up.>\"] }",
            "queue = { durable = true, max_bytes = \"256MiB\" }",
        )
        .replace("kind = \"nats\"", "kind = \"nats-jetstream\""),
    )?;
    router.wait_metric("switchyard_output_peers", &[("output", "up")], 1.0)?;

    // A steady publisher: batches of 20 on a schedule of RATE msgs/s.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let mut api = router.http("api")?;
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || -> Result<u64> {
            let start = std::time::Instant::now();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let due = start + std::time::Duration::from_secs_f64(n as f64 / RATE as f64);
                if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
                    std::thread::sleep(wait); // pacing the load, not waiting for a fact
                }
                let resp =
                    api.post_json("/v1/publish", &numbered_batch("sensors.o", n, n + 20, 1024))?;
                ensure!(resp.status == 202, "{} {}", resp.status, resp.text());
                n += 20;
            }
            Ok(n)
        })
    };
    router.wait_scrape("the load flowing", "switchyard_output", DEADLINE, |s| {
        s.get("switchyard_output_messages_total", &[("output", "up")]) >= 2000.0
    })?;
    let idle = router.rss_kib()?;
    link.cut();
    router.wait_metric("switchyard_output_connected", &[("output", "up")], 0.0)?;
    let cut_at = std::time::Instant::now();
    let mut peak = idle;
    while cut_at.elapsed() < OUTAGE {
        peak = peak.max(router.rss_kib()?);
        std::thread::sleep(std::time::Duration::from_millis(250)); // sampling RSS
    }
    let backlog = router.scrape()?.route("r").depth;
    link.restore();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let published = publisher
        .join()
        .map_err(|_| anyhow::anyhow!("publisher panicked"))??;
    let deadline = DEADLINE * 4;
    router.wait_scrape("the backlog sent", "switchyard_", deadline, |s| {
        s.get("switchyard_output_messages_total", &[("output", "up")]) >= published as f64
            && s.route("r").depth == 0
    })?;
    let stored = until("the stream to hold every message", deadline, || {
        stream_messages(&server.url(), "UP")
            .ok()
            .filter(|m| m.len() as u64 >= published)
    })?;
    ensure!(
        stored.len() as u64 == published,
        "{} stored of {published}",
        stored.len()
    );
    let grew_mib = (peak.saturating_sub(idle)) as f64 / 1024.0;
    println!(
        "outage: {published} published, a backlog of {backlog} on disk after {OUTAGE:?}; RSS {:.1} MiB before, peak {:.1} MiB (+{grew_mib:.1} MiB)",
        idle as f64 / 1024.0,
        peak as f64 / 1024.0,
    );
    ensure!(
        backlog >= RATE * 10 && grew_mib <= 32.0,
        "a backlog of {backlog} grew RSS by {grew_mib:.1} MiB (bound: 32 MiB over the idle router)"
    );
    Ok(())
}
