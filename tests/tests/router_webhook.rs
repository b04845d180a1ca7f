//! The `webhook` output end to end: the real `switchyard` binary posting
//! to a scripted hyper server (`switchyard_tests::webhook`) on a random
//! port, which answers each request as the test says and records it.
//!
//! - json batches: split by `max_messages`, custom and bearer headers, the
//!   HMAC signature checked by the test, the `Idempotency-Key` recomputed;
//! - raw requests: payload as the body, topic, id and attributes as
//!   headers; an attribute no header can hold is dead-lettered as
//!   `unencodable`, a message over `max_bytes` as `too_large`;
//! - the retry matrix, one message at a time: 503, 502, 429, 408, a reset
//!   connection and garbage bytes are retried (the same `Idempotency-Key`
//!   each time), 400, 501 and 301 are not and go to the dead-letter store
//!   as `refused`, and three 503s with `max_attempts = 3` as
//!   `retries_exhausted`;
//! - `Retry-After` holds the next attempt back at least that long;
//! - a hanging target is cut by `request_timeout`, retried, and the route
//!   goes on; a slow body after a 200 is not waited for;
//! - a 10 MB answer body is not read: the router's memory stays put;
//! - `max_wait`: two routes' batches share one request;
//! - HTTPS to a server whose certificate a private CA signed: delivered
//!   with `ca_file`, refused (handshake, retried, `retries_exhausted`)
//!   without.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use switchyard_tests::nats::Certificates;
use switchyard_tests::router::http::{Client, Response, get};
use switchyard_tests::router::{DEADLINE, Router, TempDir, until};
use switchyard_tests::webhook::{HookServer, Received, Reply};

/// An HTTP input `api`, a `webhook` output `hook` with `output` lines,
/// and a route `r` from `sensors.>` to it; the dead-letter store in
/// `data`.
fn config(data: &TempDir, output: &str, extra: &str) -> String {
    format!(
        r#"
[router]
admin = "127.0.0.1:0"
shutdown_grace = "2s"
data_dir = {data:?}

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"

[[output]]
name = "hook"
kind = "webhook"
{output}

[[route]]
name = "r"
match = "sensors.>"
to = ["hook"]
{extra}
"#,
        data = data.path().display().to_string()
    )
}

/// Quick retries, a few attempts.
const QUICK: &str = "retry = { initial = \"5ms\", max = \"20ms\", max_attempts = 3 }";

fn publish(router: &Router, body: &Value) -> Result<Vec<String>> {
    let resp = router.http("api")?.post_json("/v1/publish", body)?;
    ensure!(resp.status == 202, "{} {}", resp.status, resp.text());
    resp.ids()
}

fn admin(router: &Router, method: &str, path: &str) -> Result<Response> {
    Client::new(router.admin()).request(method, path, &[], &[])
}

/// The dead-letter entries, as `(message_id, reason)`.
fn dead_letters(router: &Router) -> Result<Vec<(String, String, Value)>> {
    let page = admin(router, "GET", "/v1/dead-letters?limit=1000")?.json()?;
    Ok(page["entries"]
        .as_array()
        .context("entries")?
        .iter()
        .map(|e| {
            (
                e["message_id"].as_str().unwrap_or_default().to_owned(),
                e["reason"].as_str().unwrap_or_default().to_owned(),
                e.clone(),
            )
        })
        .collect())
}

/// Waits until route `r` has `n` messages out (delivered, dead-lettered
/// or dropped), and checks it counted them all.
fn wait_left(router: &Router, n: u64) -> Result<()> {
    let scrape = router.wait_scrape(
        &format!("route r to settle {n} messages"),
        "route",
        DEADLINE,
        // The counters and the depth gauge are read in one scrape but not
        // updated at one instant: wait for a scrape that agrees.
        |s| {
            let r = s.route("r");
            r.left() >= n && r.conserved()
        },
    )?;
    let r = scrape.route("r");
    ensure!(r.conserved() && r.left() == n, "{}", scrape.show("r"));
    Ok(())
}

fn status_of(router: &Router) -> Result<Value> {
    let status = get(router.admin(), "/v1/status")?.json()?;
    status["outputs"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["name"] == "hook").cloned())
        .with_context(|| format!("no output hook in {status}"))
}

fn ids_of(requests: &[Received]) -> Vec<String> {
    requests
        .iter()
        .flat_map(|r| r.messages().unwrap_or_default())
        .filter_map(|m| m["id"].as_str().map(str::to_owned))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn json_batches_carry_headers_a_signature_and_an_idempotency_key() -> Result<()> {
    let server = HookServer::start()?;
    let data = TempDir::new()?;
    let router = Router::builder(&config(
        &data,
        &format!(
            "url = {:?}\nmax_messages = 2\nconcurrency = 1\nheaders = {{ \"X-Site\" = \"42\" }}\nbearer_token = \"${{HOOK_TOKEN}}\"\nhmac_secret = \"s3cret\"",
            server.url("/in?src=sy")
        ),
        "",
    ))
    .env("HOOK_TOKEN", "tok-123")
    .start()?;
    // Readiness does not wait for the webhook.
    ensure!(get(router.admin(), "/ready")?.status == 200);
    let ids = publish(
        &router,
        &json!({"messages": [
            {"topic": "sensors.a", "payload": "one", "attributes": {"unit": "C"}},
            {"topic": "sensors.b", "payload_base64": "/wCA"},
            {"topic": "sensors.c", "payload": "three"},
            {"topic": "sensors.d", "payload": "four"},
            {"topic": "sensors.e", "payload": "five"},
        ]}),
    )?;
    wait_left(&router, 5)?;
    let got = server.received();
    ensure!(ids_of(&got) == ids, "every message once, in order: {got:?}");
    ensure!(
        got.len() >= 3,
        "at most 2 a request: {} requests",
        got.len()
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret");
    for r in &got {
        let messages = r.messages()?;
        ensure!(!messages.is_empty() && messages.len() <= 2, "{messages:?}");
        ensure!(r.path == "/in?src=sy", "{}", r.path);
        ensure!(r.header("x-site") == Some("42"), "{r:?}");
        ensure!(r.header("authorization") == Some("Bearer tok-123"), "{r:?}");
        ensure!(
            r.header("content-type") == Some("application/json"),
            "{r:?}"
        );
        let sig = r.header("x-switchyard-signature").context("a signature")?;
        let tag = ring::hmac::sign(&key, &r.body);
        ensure!(sig == format!("sha256={}", hex(tag.as_ref())), "{sig}");
        // The key: SHA-256 of the ids (16 bytes each, big-endian), first
        // 16 bytes in hex.
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        for m in &messages {
            let id = u128::from_str_radix(m["id"].as_str().context("id")?, 16)?;
            digest.update(&id.to_be_bytes());
        }
        let want = hex(&digest.finish().as_ref()[..16]);
        ensure!(r.header("idempotency-key") == Some(want.as_str()), "{r:?}");
    }
    let all: Vec<Value> = got
        .iter()
        .flat_map(|r| r.messages().unwrap_or_default())
        .collect();
    ensure!(
        all[0]["topic"] == "sensors.a"
            && all[0]["payload_encoding"] == "utf8"
            && all[0]["payload"] == "one"
            && all[0]["attributes"]["unit"] == "C",
        "{}",
        all[0]
    );
    ensure!(
        all[1]["payload_encoding"] == "base64" && all[1]["payload"] == "/wCA",
        "{}",
        all[1]
    );
    let scrape = router.scrape()?;
    ensure!(
        scrape.get("switchyard_output_messages_total", &[("output", "hook")]) == 5.0
            && scrape.get("switchyard_output_connected", &[("output", "hook")]) == 1.0,
        "{}",
        scrape.show("hook")
    );
    let hook = status_of(&router)?;
    ensure!(
        hook["kind"] == "webhook"
            && hook["webhook"]["last_status"] == 200
            && hook["webhook"]["connected"] == true,
        "{hook}"
    );
    let shown = get(router.admin(), "/v1/config")?.text();
    ensure!(
        !shown.contains("tok-123") && !shown.contains("s3cret"),
        "{shown}"
    );
    ensure!(
        !router.log_lines().iter().any(|l| l.contains("tok-123")),
        "the token in the log"
    );
    Ok(())
}

#[test]
fn raw_requests_carry_the_message_in_headers_and_refuse_what_they_cannot() -> Result<()> {
    let server = HookServer::start()?;
    let data = TempDir::new()?;
    let router = Router::start(&config(
        &data,
        &format!(
            "url = {:?}\nencoding = \"raw\"\nmax_bytes = \"1KiB\"\n{QUICK}",
            server.url("/raw")
        ),
        "",
    ))?;
    let big = "x".repeat(2000);
    let ids = publish(
        &router,
        &json!({"messages": [
            {"topic": "sensors.a", "payload_base64": "AAEC", "attributes": {"Level": "warn", "site": "42"}},
            {"topic": "sensors.b", "payload": "bad", "attributes": {"note": "a\nb"}},
            {"topic": "sensors.c", "payload": big},
            {"topic": "sensors.d", "payload": "ok"},
        ]}),
    )?;
    wait_left(&router, 4)?;
    // Sent concurrently: in any order.
    let mut got = server.received();
    got.sort_by(|x, y| {
        x.header("x-switchyard-topic")
            .cmp(&y.header("x-switchyard-topic"))
    });
    ensure!(got.len() == 2, "{got:?}");
    let a = &got[0];
    ensure!(a.body == [0, 1, 2], "{a:?}");
    ensure!(a.header("x-switchyard-topic") == Some("sensors.a"), "{a:?}");
    ensure!(
        a.header("x-switchyard-id") == Some(ids[0].as_str()),
        "{a:?}"
    );
    ensure!(
        a.header("idempotency-key") == Some(ids[0].as_str()),
        "{a:?}"
    );
    ensure!(a.header("x-switchyard-attr-level") == Some("warn"), "{a:?}");
    ensure!(a.header("x-switchyard-attr-site") == Some("42"), "{a:?}");
    ensure!(
        a.header("content-type") == Some("application/octet-stream"),
        "{a:?}"
    );
    ensure!(got[1].body == b"ok", "{:?}", got[1]);
    let dead = dead_letters(&router)?;
    let mut reasons: Vec<(String, String)> = dead
        .iter()
        .map(|(id, r, _)| (id.clone(), r.clone()))
        .collect();
    reasons.sort();
    let mut want = vec![
        (ids[1].clone(), "unencodable".to_owned()),
        (ids[2].clone(), "too_large".to_owned()),
    ];
    want.sort();
    ensure!(reasons == want, "{dead:?}");
    let scrape = router.scrape()?;
    ensure!(
        scrape.get(
            "switchyard_output_dropped_total",
            &[("output", "hook"), ("reason", "unencodable")]
        ) == 1.0,
        "{}",
        scrape.show("hook")
    );
    Ok(())
}

/// One case of the matrix: what the server answers to each attempt, how
/// many requests come, and where the message ends.
struct Case {
    name: &'static str,
    replies: Vec<Reply>,
    requests: usize,
    /// `None`: delivered; else the dead-letter reason.
    dead: Option<&'static str>,
}

fn with(status: u16, headers: &[(&str, &str)]) -> Reply {
    Reply::With {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        body: b"the server's word".to_vec(),
    }
}

#[test]
fn the_retry_matrix_retries_what_may_succeed_and_dead_letters_the_rest() -> Result<()> {
    let server = HookServer::start()?;
    let data = TempDir::new()?;
    let router = Router::start(&config(
        &data,
        &format!(
            "url = {:?}\nencoding = \"raw\"\nconcurrency = 1\nrequest_timeout = \"5s\"\n{QUICK}",
            server.url("/m")
        ),
        "",
    ))?;
    let cases = vec![
        Case {
            name: "200",
            replies: vec![Reply::Status(200)],
            requests: 1,
            dead: None,
        },
        Case {
            name: "204",
            replies: vec![Reply::Status(204)],
            requests: 1,
            dead: None,
        },
        Case {
            name: "503",
            replies: vec![Reply::Status(503), Reply::Status(200)],
            requests: 2,
            dead: None,
        },
        Case {
            name: "502",
            replies: vec![Reply::Status(502), Reply::Status(202)],
            requests: 2,
            dead: None,
        },
        Case {
            name: "429",
            replies: vec![with(429, &[("retry-after", "0")]), Reply::Status(200)],
            requests: 2,
            dead: None,
        },
        Case {
            name: "408",
            replies: vec![Reply::Status(408), Reply::Status(200)],
            requests: 2,
            dead: None,
        },
        Case {
            name: "reset",
            replies: vec![Reply::Reset, Reply::Status(200)],
            requests: 2,
            dead: None,
        },
        Case {
            name: "garbage",
            replies: vec![Reply::Garbage, Reply::Status(200)],
            requests: 2,
            dead: None,
        },
        Case {
            name: "400",
            replies: vec![with(400, &[])],
            requests: 1,
            dead: Some("refused"),
        },
        Case {
            name: "404",
            replies: vec![Reply::Status(404)],
            requests: 1,
            dead: Some("refused"),
        },
        Case {
            name: "501",
            replies: vec![Reply::Status(501)],
            requests: 1,
            dead: Some("refused"),
        },
        Case {
            name: "301",
            replies: vec![with(301, &[("location", "http://elsewhere.invalid/")])],
            requests: 1,
            dead: Some("refused"),
        },
        Case {
            name: "503 x3",
            replies: vec![Reply::Status(503), Reply::Status(503), Reply::Status(503)],
            requests: 3,
            dead: Some("retries_exhausted"),
        },
    ];
    let mut total = 0;
    let mut dead_want = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        server.script(case.replies.clone());
        let id = publish(
            &router,
            &json!({"messages": [{"topic": "sensors.m", "payload": case.name}]}),
        )?
        .remove(0);
        wait_left(&router, n as u64 + 1).with_context(|| case.name)?;
        total += case.requests;
        let got = server.received();
        ensure!(
            got.len() == total,
            "{}: {} requests, expected {total}",
            case.name,
            got.len()
        );
        let mine = &got[total - case.requests..];
        ensure!(
            mine.iter()
                .all(|r| r.header("x-switchyard-id") == Some(id.as_str())
                    && r.header("idempotency-key") == Some(id.as_str())
                    && r.body == case.name.as_bytes()),
            "{}: the same message and key each attempt: {mine:?}",
            case.name
        );
        if let Some(reason) = case.dead {
            dead_want.push((id, reason.to_owned()));
        }
    }
    let dead = dead_letters(&router)?;
    let mut got: Vec<(String, String)> = dead
        .iter()
        .map(|(id, r, _)| (id.clone(), r.clone()))
        .collect();
    got.sort();
    dead_want.sort();
    ensure!(got == dead_want, "{dead:?}");
    let exhausted = dead
        .iter()
        .find(|(_, r, _)| r == "retries_exhausted")
        .context("exhausted")?;
    ensure!(exhausted.2["attempts"] == 3, "{}", exhausted.2);
    ensure!(
        exhausted.2["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 503")),
        "{}",
        exhausted.2
    );
    // What the receiver said is kept with the entry.
    ensure!(
        dead.iter().any(|(_, r, e)| r == "refused"
            && e["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("HTTP 400") && e.contains("the server's word"))),
        "{dead:?}"
    );
    let scrape = router.scrape()?;
    let r = scrape.route("r");
    ensure!(
        r.delivered == 8 && r.dead_lettered == 5 && r.conserved(),
        "{}",
        scrape.show("r")
    );
    ensure!(
        scrape.get(
            "switchyard_output_dropped_total",
            &[("output", "hook"), ("reason", "refused")]
        ) == 4.0,
        "{}",
        scrape.show("hook")
    );
    ensure!(
        scrape.sum("switchyard_output_retries_total", &[("output", "hook")]) == 8.0,
        "{}",
        scrape.show("retries")
    );
    router.wait_log("the redirect's location logged", DEADLINE, |l| {
        l.to_string().contains("elsewhere.invalid")
    })?;
    Ok(())
}

#[test]
fn retry_after_holds_the_next_attempt_back() -> Result<()> {
    let server = HookServer::start()?;
    let data = TempDir::new()?;
    let router = Router::start(&config(
        &data,
        &format!(
            "url = {:?}\nretry = {{ initial = \"1ms\", max = \"10s\" }}",
            server.url("/ra")
        ),
        "",
    ))?;
    server.script([with(503, &[("retry-after", "1")]), Reply::Status(200)]);
    publish(
        &router,
        &json!({"messages": [{"topic": "sensors.x", "payload": "p"}]}),
    )?;
    let got = server.wait_for(2, DEADLINE)?;
    wait_left(&router, 1)?;
    let gap = got[1].at - got[0].at;
    // A lower bound only: the router may take longer, never less.
    ensure!(gap >= Duration::from_millis(990), "{gap:?}");
    ensure!(
        got[0].header("idempotency-key") == got[1].header("idempotency-key"),
        "{got:?}"
    );
    Ok(())
}

#[test]
fn a_hanging_target_is_cut_and_the_route_goes_on() -> Result<()> {
    let server = HookServer::start()?;
    let data = TempDir::new()?;
    let router = Router::start(&config(
        &data,
        &format!(
            "url = {:?}\nrequest_timeout = \"300ms\"\nretry = {{ initial = \"5ms\", max = \"20ms\" }}",
            server.url("/h")
        ),
        "",
    ))?;
    server.script([Reply::Hang, Reply::Hang, Reply::Status(200)]);
    publish(
        &router,
        &json!({"messages": [{"topic": "sensors.x", "payload": "1"}]}),
    )?;
    wait_left(&router, 1)?;
    ensure!(server.received().len() == 3);
    let scrape = router.scrape()?;
    ensure!(scrape.route("r").delivered == 1, "{}", scrape.show("r"));
    // The status saw the timeouts.
    until("the connected gauge back at 1", DEADLINE, || {
        router
            .scrape()
            .ok()
            .filter(|s| s.get("switchyard_output_connected", &[("output", "hook")]) == 1.0)
    })?;
    // A 200 whose body never ends: the status stands, the body is not
    // waited for past request_timeout.
    server.script([Reply::SlowBody]);
    publish(
        &router,
        &json!({"messages": [{"topic": "sensors.x", "payload": "2"}]}),
    )?;
    wait_left(&router, 2)?;
    ensure!(server.received().len() == 4);
    // And the next one goes through.
    publish(
        &router,
        &json!({"messages": [{"topic": "sensors.x", "payload": "3"}]}),
    )?;
    wait_left(&router, 3)?;
    let scrape = router.scrape()?;
    ensure!(scrape.route("r").delivered == 3, "{}", scrape.show("r"));
    Ok(())
}

#[test]
fn a_hanging_target_shows_disconnected_until_it_answers() -> Result<()> {
    let server = HookServer::start()?;
    let data = TempDir::new()?;
    let router = Router::start(&config(
        &data,
        &format!(
            "url = {:?}\nrequest_timeout = \"200ms\"\nretry = {{ initial = \"50ms\", max = \"50ms\" }}",
            server.url("/h")
        ),
        "",
    ))?;
    server.script(std::iter::repeat_n(Reply::Hang, 1000));
    publish(
        &router,
        &json!({"messages": [{"topic": "sensors.x", "payload": "1"}]}),
    )?;
    server.wait_for(2, DEADLINE)?;
    let hook = until("a timeout in /v1/status", DEADLINE, || {
        status_of(&router).ok().filter(|h| {
            h["webhook"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("request_timeout"))
        })
    })?;
    ensure!(hook["webhook"]["connected"] == false, "{hook}");
    ensure!(
        router
            .scrape()?
            .get("switchyard_output_connected", &[("output", "hook")])
            == 0.0
    );
    Ok(())
}

#[test]
fn a_10_mb_answer_is_not_read_into_memory() -> Result<()> {
    let server = HookServer::start()?;
    let data = TempDir::new()?;
    let router = Router::start(&config(
        &data,
        &format!("url = {:?}\nconcurrency = 1", server.url("/big")),
        "",
    ))?;
    // Warm up: the first request's client, pool and buffers.
    publish(
        &router,
        &json!({"messages": [{"topic": "sensors.x", "payload": "w"}]}),
    )?;
    wait_left(&router, 1)?;
    let before = router.rss_kib()?;
    for n in 0..5u64 {
        server.script([Reply::Huge(10 << 20)]);
        publish(
            &router,
            &json!({"messages": [{"topic": "sensors.x", "payload": "p"}]}),
        )?;
        wait_left(&router, n + 2)?;
    }
    let after = router.rss_kib()?;
    ensure!(
        after <= before + 4 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    let scrape = router.scrape()?;
    ensure!(scrape.route("r").delivered == 6, "{}", scrape.show("r"));
    Ok(())
}

#[test]
fn https_to_a_private_ca_with_ca_file_and_refused_without() -> Result<()> {
    let certs = Certificates::new()?;
    let server = HookServer::start_tls(&certs.path("server.pem"), &certs.path("server.key"))?;
    let data = TempDir::new()?;
    let url = server.url("/tls");
    ensure!(url.starts_with("https://127.0.0.1:"), "{url}");
    let router = Router::start(&config(
        &data,
        &format!(
            "url = {url:?}\nca_file = {:?}\n{QUICK}",
            certs.path("ca.pem").display().to_string()
        ),
        "",
    ))?;
    publish(
        &router,
        &json!({"messages": [{"topic": "sensors.x", "payload": "over tls"}]}),
    )?;
    wait_left(&router, 1)?;
    let got = server.received();
    ensure!(got.len() == 1 && ids_of(&got).len() == 1, "{got:?}");
    ensure!(router.scrape()?.route("r").delivered == 1);
    drop(router);

    // Without ca_file the system roots do not know the CA: every attempt
    // fails its handshake, and the message ends as retries_exhausted.
    let data = TempDir::new()?;
    let router = Router::start(&config(&data, &format!("url = {url:?}\n{QUICK}"), ""))?;
    publish(
        &router,
        &json!({"messages": [{"topic": "sensors.x", "payload": "untrusted"}]}),
    )?;
    wait_left(&router, 1)?;
    let dead = dead_letters(&router)?;
    ensure!(
        dead.len() == 1 && dead[0].1 == "retries_exhausted",
        "{dead:?}"
    );
    let hook = status_of(&router)?;
    let error = hook["webhook"]["last_error"].as_str().unwrap_or_default();
    ensure!(error.to_lowercase().contains("certificate"), "{hook}");
    ensure!(server.received().len() == 1, "no request got through");
    Ok(())
}

#[test]
fn mtls_to_a_server_that_asks_for_a_client_certificate() -> Result<()> {
    let certs = Certificates::new()?;
    let server = HookServer::start_tls_verifying(
        &certs.path("server.pem"),
        &certs.path("server.key"),
        Some(&certs.path("ca.pem")),
    )?;
    let url = server.url("/mtls");
    let p = |n: &str| certs.path(n).display().to_string();
    let data = TempDir::new()?;
    let router = Router::start(&config(
        &data,
        &format!(
            "url = {url:?}\nca_file = {:?}\nclient_cert = {:?}\nclient_key = {:?}\n{QUICK}",
            p("ca.pem"),
            p("client.pem"),
            p("client.key"),
        ),
        "",
    ))?;
    publish(
        &router,
        &json!({"messages": [{"topic": "sensors.x", "payload": "with a certificate"}]}),
    )?;
    wait_left(&router, 1)?;
    ensure!(
        server.received().len() == 1,
        "delivered with the client certificate"
    );
    drop(router);

    // Without it, the server refuses every handshake.
    let data = TempDir::new()?;
    let router = Router::start(&config(
        &data,
        &format!("url = {url:?}\nca_file = {:?}\n{QUICK}", p("ca.pem")),
        "",
    ))?;
    publish(
        &router,
        &json!({"messages": [{"topic": "sensors.x", "payload": "without"}]}),
    )?;
    wait_left(&router, 1)?;
    let dead = dead_letters(&router)?;
    ensure!(
        dead.len() == 1 && dead[0].1 == "retries_exhausted",
        "{dead:?}"
    );
    ensure!(
        server.received().len() == 1,
        "no request got through without one"
    );
    Ok(())
}

#[test]
fn a_rotated_client_certificate_is_used_without_a_restart() -> Result<()> {
    let trusted = Certificates::new()?;
    let stranger = Certificates::new()?;
    let server = HookServer::start_tls_verifying(
        &trusted.path("server.pem"),
        &trusted.path("server.key"),
        Some(&trusted.path("ca.pem")),
    )?;
    // The router's client certificate lives in files replaced in place; at
    // first they hold one the server's CA did not sign.
    let live = TempDir::new()?;
    std::fs::copy(stranger.path("client.pem"), live.path().join("client.pem"))?;
    std::fs::copy(stranger.path("client.key"), live.path().join("client.key"))?;
    let p = |d: &std::path::Path, n: &str| d.join(n).display().to_string();
    let data = TempDir::new()?;
    let router = Router::start(&config(
        &data,
        &format!(
            "url = {:?}\nca_file = {:?}\nclient_cert = {:?}\nclient_key = {:?}\nretry = {{ initial = \"20ms\", max = \"100ms\", max_attempts = 1000 }}",
            server.url("/rotate"),
            p(trusted.path("ca.pem").parent().context("dir")?, "ca.pem"),
            p(live.path(), "client.pem"),
            p(live.path(), "client.key"),
        ),
        "",
    ))?;
    publish(
        &router,
        &json!({"messages": [{"topic": "sensors.x", "payload": "after the rotation"}]}),
    )?;
    router.wait_scrape("refused handshakes retried", "retries", DEADLINE, |s| {
        s.sum("switchyard_output_retries_total", &[("output", "hook")]) >= 2.0
    })?;
    ensure!(
        server.received().is_empty(),
        "the stranger's certificate got through"
    );
    // Rotate in place: the key first, then the certificate. The router
    // notices, reads them again, and the next retry gets through.
    std::fs::copy(trusted.path("client.key"), live.path().join("client.key"))?;
    std::fs::copy(trusted.path("client.pem"), live.path().join("client.pem"))?;
    let got = server.wait_for(1, DEADLINE)?;
    ensure!(got.len() == 1, "{got:?}");
    router.wait_scrape("the message delivered", "route", DEADLINE, |s| {
        s.route("r").delivered == 1
    })?;
    ensure!(
        router.scrape()?.value(
            "switchyard_tls_reloads_total",
            &[("listener", "hook"), ("result", "success")]
        ) >= Some(1.0)
    );
    Ok(())
}

#[test]
fn max_wait_lets_two_routes_share_a_request() -> Result<()> {
    let server = HookServer::start()?;
    let data = TempDir::new()?;
    let text = config(
        &data,
        &format!(
            "url = {:?}\nmax_messages = 2\nmax_wait = \"5s\"",
            server.url("/w")
        ),
        "",
    )
    .replace("match = \"sensors.>\"", "match = \"sensors.a\"")
        + "\n[[route]]\nname = \"r2\"\nmatch = \"sensors.b\"\nto = [\"hook\"]\n";
    let router = Router::start(&text)?;
    let ids = publish(
        &router,
        &json!({"messages": [
            {"topic": "sensors.a", "payload": "a"},
            {"topic": "sensors.b", "payload": "b"},
        ]}),
    )?;
    let got = server.wait_for(1, DEADLINE)?;
    let mut carried = ids_of(&got);
    carried.sort();
    let mut want = ids.clone();
    want.sort();
    ensure!(
        got.len() == 1 && carried == want,
        "one request with both: {got:?}"
    );
    router.wait_scrape("both routes delivered", "route", DEADLINE, |s| {
        s.route("r").delivered == 1 && s.route("r2").delivered == 1
    })?;
    Ok(())
}
