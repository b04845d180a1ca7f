//! Request/reply end to end, against the real `switchyard` binary, with
//! libzmq (pyzmq) REQ clients and REP services: many concurrent clients,
//! a service restarted mid-stream, a slow service (timeouts, late replies,
//! ejection and probing), consistent-hash stickiness, plugins rejecting
//! and answering requests, and the HTTP bridge.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde_json::{Value, json};
use switchyard_tests::router::peer::Peer;
use switchyard_tests::router::plugins::entry;
use switchyard_tests::router::reload::admin_json;
use switchyard_tests::router::{DEADLINE, Router};

/// The router and its request input, as every config here starts.
const CLIENTS: &str = r#"
[router]
admin = "127.0.0.1:0"

[[input]]
name = "clients"
kind = "zmq-router"
bind = "tcp://127.0.0.1:0"
envelope = "topic-attrs-payload"
"#;

/// Services connect to the router's bound `zmq-dealer` output.
fn config(request_timeout: &str, extra: &str) -> String {
    format!(
        r#"{CLIENTS}
[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"

[[output]]
name = "services"
kind = "zmq-dealer"
bind = "tcp://127.0.0.1:0"

[[route]]
name = "rpc"
match = "rpc.>"
to = ["services"]
request_timeout = "{request_timeout}"
{extra}
"#
    )
}

/// Starts a router on [`config`] whose route runs the built plugin `file`
/// as the filter `name`, with `settings` as its config.
fn with_filter(name: &str, file: &str, settings: &str) -> Result<Router> {
    let plugin = entry(name, file, &format!("config = {settings}"))?;
    let text = config("10s", &format!("filters = [{name:?}]\n")) + &plugin;
    Router::start(&text)
}

/// A run of `clients` request clients sending `count` requests each on
/// `topic`, with a `key` attribute.
fn requests(clients: u32, count: u32, topic: &str) -> Value {
    json!({"clients": clients, "count": count, "topic": topic, "attrs": true})
}

/// The `done` summary's count of answers with error `code`.
fn errors(done: &Value, code: &str) -> u64 {
    done["errors"][code].as_u64().unwrap_or(0)
}

/// Every error code of a `done` summary, with its count.
fn error_codes(done: &Value) -> BTreeMap<String, u64> {
    done["errors"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

fn count(done: &Value, key: &str) -> u64 {
    done[key].as_u64().unwrap_or(0)
}

/// Waits until the output has `n` services up.
fn services_up(router: &Router, n: usize) -> Result<()> {
    router
        .wait_metric(
            "switchyard_output_services",
            &[("output", "services"), ("state", "up")],
            n as f64,
        )
        .map(drop)
}

#[test]
fn a_hundred_clients_each_get_their_own_replies() -> Result<()> {
    let router = Router::start(&config("10s", ""))?;
    let services: Vec<Peer> = (0..3)
        .map(|i| {
            Peer::rep(
                &router.output_endpoint("services")?,
                &format!("s{i}"),
                false,
            )
        })
        .collect::<Result<_>>()?;
    services_up(&router, 3)?;
    let mut clients = Peer::req(&router.input_endpoint("clients")?)?;
    let run = requests(100, 20, "rpc.echo");
    let done = clients.run_requests(&run, DEADLINE * 2)?;
    ensure!(count(&done, "ok") == 2000, "{done}");
    ensure!(count(&done, "mismatches") == 0, "{done}");
    ensure!(count(&done, "timeouts") == 0, "{done}");
    ensure!(error_codes(&done).is_empty(), "{done}");
    let used = done["services"].as_object().map_or(0, |m| m.len());
    ensure!(used == 3, "round-robin reaches every service: {done}");
    let scrape = router.wait_metric("switchyard_request_pending", &[("input", "clients")], 0.0)?;
    let replied = [("input", "clients"), ("outcome", "replied")];
    ensure!(scrape.get("switchyard_request_outcomes_total", &replied) == 2000.0);
    drop(services);
    Ok(())
}

#[test]
fn a_service_restarted_mid_stream_is_used_again() -> Result<()> {
    let router = Router::start(&config("10s", ""))?;
    let services = router.output_endpoint("services")?;
    let mut first = Peer::rep(&services, "first", false)?;
    services_up(&router, 1)?;
    let mut clients = Peer::req(&router.input_endpoint("clients")?)?;
    let run =
        json!({"clients": 4, "count": 400, "pause_ms": 5, "topic": "rpc.echo", "attrs": true});
    clients.command(&json!({ "run": run }))?;
    first.recv_n(40, DEADLINE)?;
    drop(first);
    let mut second = Peer::rep(&services, "second", false)?;
    second.recv_n(40, DEADLINE)?;
    let done = clients.wait_event("done", DEADLINE * 3)?;
    // Every request had exactly one answer: a reply of its own, or an
    // error while no service was there.
    let codes = error_codes(&done);
    let failed: u64 = codes.values().sum();
    ensure!(count(&done, "ok") + failed == 1600, "{done}");
    ensure!(count(&done, "mismatches") == 0, "{done}");
    ensure!(count(&done, "timeouts") == 0, "no client hung: {done}");
    ensure!(
        codes
            .keys()
            .all(|c| c == "SERVICE_FAILED" || c == "NO_SERVICE"),
        "{done}"
    );
    // The first service answered what it had before it went (all but
    // what it held when killed), the second what came after.
    ensure!(
        done["services"]["first"].as_u64().unwrap_or(0) >= 30,
        "{done}"
    );
    ensure!(
        done["services"]["second"].as_u64().unwrap_or(0) >= 30,
        "{done}"
    );
    // The last client's last answers came from the restarted service.
    let answers = done["answers"].as_array().cloned().unwrap_or_default();
    ensure!(answers.last() == Some(&json!("second")), "{done}");
    Ok(())
}

#[test]
fn a_slow_service_times_out_is_ejected_probed_and_put_back() -> Result<()> {
    // Probed again 3s after its ejection, then 6s after a failed probe.
    let text = config("300ms", "").replace(
        "bind = \"tcp://127.0.0.1:0\"\n\n[[route]]",
        "bind = \"tcp://127.0.0.1:0\"\nprobe_interval = \"3s\"\n\n[[route]]",
    );
    let router = Router::start(&text)?;
    let mut service = Peer::rep(&router.output_endpoint("services")?, "slow", false)?;
    services_up(&router, 1)?;
    service.set_delay(Duration::from_millis(900))?;
    let mut clients = Peer::req(&router.input_endpoint("clients")?)?;
    // Three timeouts (eject_after's default) take the only service out.
    let run = requests(1, 3, "rpc.echo");
    let done = clients.run_requests(&run, DEADLINE)?;
    ensure!(errors(&done, "REQUEST_TIMEOUT") == 3, "{done}");
    ensure!(count(&done, "timeouts") == 0, "the router answered: {done}");
    // Out of rotation: no service to ask.
    let run1 = requests(1, 1, "rpc.echo");
    let done = clients.run_requests(&run1, DEADLINE)?;
    ensure!(errors(&done, "NO_SERVICE") == 1, "{done}");
    let scrape = router.scrape()?;
    ensure!(
        scrape.get(
            "switchyard_output_service_ejections_total",
            &[("output", "services")]
        ) == 1.0,
        "{}",
        scrape.show("switchyard_service")
    );
    ensure!(scrape.get("switchyard_request_timeouts_total", &[("route", "rpc")]) == 3.0);
    // Its replies come late: discarded and counted, never delivered.
    router.wait_metric(
        "switchyard_request_late_replies_total",
        &[("output", "services")],
        3.0,
    )?;
    // Quick again: a probe finds it answering and puts it back.
    service.set_delay(Duration::ZERO)?;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let done = clients.run_requests(&run1, DEADLINE)?;
        ensure!(count(&done, "mismatches") == 0, "{done}");
        if count(&done, "ok") == 1 {
            break;
        }
        ensure!(errors(&done, "NO_SERVICE") == 1, "{done}");
        ensure!(Instant::now() < deadline, "never put back: {done}");
        std::thread::sleep(Duration::from_millis(50));
    }
    services_up(&router, 1)?;
    let run = requests(2, 50, "rpc.echo");
    let done = clients.run_requests(&run, DEADLINE)?;
    ensure!(count(&done, "ok") == 100, "{done}");
    Ok(())
}

#[test]
fn consistent_hashing_keeps_each_key_on_one_service() -> Result<()> {
    let services: Vec<Peer> = (0..3)
        .map(|i| Peer::rep("tcp://127.0.0.1:0", &format!("s{i}"), true))
        .collect::<Result<_>>()?;
    let endpoints: Vec<String> = services
        .iter()
        .map(|s| format!("{:?}", s.endpoint()))
        .collect();
    let text = config("10s", "").replace(
        "bind = \"tcp://127.0.0.1:0\"\n\n[[route]]",
        &format!(
            "connect = [{}]\nbalance = \"consistent-hash\"\nhash_attribute = \"key\"\n\n[[route]]",
            endpoints.join(", ")
        ),
    );
    let router = Router::start(&text)?;
    services_up(&router, 3)?;
    let mut clients = Peer::req(&router.input_endpoint("clients")?)?;
    let run = json!({"clients": 4, "count": 60, "keys": 12, "topic": "rpc.echo", "attrs": true});
    let done = clients.run_requests(&run, DEADLINE)?;
    ensure!(count(&done, "ok") == 240, "{done}");
    let keys = done["keys"].as_object().cloned().unwrap_or_default();
    ensure!(keys.len() == 12, "{done}");
    for (key, seen) in &keys {
        ensure!(
            seen.as_array().map_or(0, Vec::len) == 1,
            "key {key} reached {seen}"
        );
    }
    let used = done["services"].as_object().map_or(0, |m| m.len());
    ensure!(used >= 2, "keys spread over the services: {done}");
    // A second run sends each key where the first did.
    let again = clients.run_requests(&run, DEADLINE)?;
    ensure!(again["keys"] == done["keys"], "{again} vs {done}");
    // /v1/status shows each service, its state and what it has in flight.
    let status = admin_json(&router, "/v1/status")?;
    let services = status["outputs"][0]["services"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(services.len() == 3, "{status}");
    for (service, endpoint) in services.iter().zip(&endpoints) {
        ensure!(service["state"] == "up", "{service}");
        ensure!(service["in_flight"] == 0, "{service}");
        ensure!(
            format!("{:?}", service["endpoint"].as_str().unwrap_or("")) == *endpoint,
            "{service}"
        );
    }
    Ok(())
}

#[test]
fn a_filter_plugin_rejects_requests_with_an_error_reply() -> Result<()> {
    let router = with_filter(
        "deny-k1",
        "attr_filter",
        r#"{ key = "key", deny = ["k1"] }"#,
    )?;
    let _service = Peer::rep(&router.output_endpoint("services")?, "s", false)?;
    services_up(&router, 1)?;
    let mut clients = Peer::req(&router.input_endpoint("clients")?)?;
    let run = json!({"clients": 2, "count": 10, "keys": 2, "topic": "rpc.echo", "attrs": true});
    let done = clients.run_requests(&run, DEADLINE)?;
    ensure!(count(&done, "ok") == 10, "{done}");
    ensure!(errors(&done, "REJECTED") == 10, "{done}");
    let scrape = router.scrape()?;
    let rejected = [("input", "clients"), ("outcome", "rejected")];
    ensure!(scrape.get("switchyard_request_outcomes_total", &rejected) == 10.0);
    Ok(())
}

#[test]
fn a_plugin_answers_requests_itself() -> Result<()> {
    let router = with_filter(
        "health",
        "edge_reply",
        r#"{ replies = [{ match = "rpc.health", payload = "ok" }] }"#,
    )?;
    // No service at all: the plugin answers at the edge.
    let mut clients = Peer::req(&router.input_endpoint("clients")?)?;
    let run = requests(3, 10, "rpc.health");
    let done = clients.run_requests(&run, DEADLINE)?;
    ensure!(count(&done, "timeouts") == 0, "{done}");
    let answers = done["answers"].as_array().cloned().unwrap_or_default();
    ensure!(answers.len() == 10, "{done}");
    ensure!(answers.iter().all(|a| a == "ok"), "{done}");
    let scrape = router.scrape()?;
    let answered = [("input", "clients"), ("outcome", "answered_by_plugin")];
    ensure!(scrape.get("switchyard_request_outcomes_total", &answered) == 30.0);
    // Anything else goes on to the (absent) services.
    let other = requests(1, 1, "rpc.other");
    let done = clients.run_requests(&other, DEADLINE)?;
    ensure!(errors(&done, "NO_SERVICE") == 1, "{done}");
    Ok(())
}

#[test]
fn the_http_bridge_answers_replies_timeouts_and_missing_services() -> Result<()> {
    let router = Router::start(&config("300ms", ""))?;
    let mut api = router.http("api")?;
    // No service yet: 503.
    let resp = api.post("/v1/request/rpc.echo", &[], b"hello")?;
    ensure!(resp.status == 503, "{}", resp.text());
    ensure!(resp.error_code().as_deref() == Some("NO_SERVICE"));
    // No route: 404.
    let resp = api.post("/v1/request/other.topic", &[], b"x")?;
    ensure!(resp.status == 404, "{}", resp.text());
    ensure!(resp.error_code().as_deref() == Some("ROUTE_NOT_FOUND"));
    let mut service = Peer::rep(&router.output_endpoint("services")?, "svc", false)?;
    services_up(&router, 1)?;
    let resp = api.post("/v1/request/rpc.echo", &[("x-attr-key", "k")], b"hello")?;
    ensure!(resp.status == 200, "{}", resp.text());
    ensure!(resp.text() == "hello", "{}", resp.text());
    ensure!(resp.header("x-switchyard-reply-frames") == Some("2"));
    let got = service.recv_n(1, DEADLINE)?;
    ensure!(got[0].frames == ["rpc.echo", "hello"], "{got:?}");
    // A slow service: 504.
    service.set_delay(Duration::from_millis(900))?;
    let resp = api.post("/v1/request/rpc.echo", &[], b"late")?;
    ensure!(resp.status == 504, "{}", resp.text());
    ensure!(resp.error_code().as_deref() == Some("REQUEST_TIMEOUT"));
    router.wait_metric(
        "switchyard_request_late_replies_total",
        &[("output", "services")],
        1.0,
    )?;
    Ok(())
}

#[test]
fn a_shutdown_answers_the_requests_it_still_holds() -> Result<()> {
    let text = config("20s", "").replace(
        "admin = \"127.0.0.1:0\"",
        "admin = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"",
    );
    let mut router = Router::start(&text)?;
    let mut service = Peer::rep(&router.output_endpoint("services")?, "stuck", false)?;
    services_up(&router, 1)?;
    service.set_delay(Duration::from_secs(25))?;
    let mut clients = Peer::req(&router.input_endpoint("clients")?)?;
    let run = requests(3, 1, "rpc.echo");
    clients.command(&json!({ "run": run }))?;
    // The service holds one; the others wait in the output for it.
    service.recv_n(1, DEADLINE)?;
    router.wait_metric("switchyard_request_pending", &[("input", "clients")], 3.0)?;
    router.signal("TERM")?;
    let done = clients.wait_event("done", DEADLINE)?;
    ensure!(errors(&done, "SHUTTING_DOWN") == 3, "{done}");
    ensure!(count(&done, "timeouts") == 0, "{done}");
    let status = router.wait_exit(DEADLINE)?;
    ensure!(status.success(), "{status}");
    Ok(())
}

#[test]
fn a_routing_plugin_chooses_the_service() -> Result<()> {
    let plugin = entry(
        "by-key",
        "content_router",
        "config = { rules = [{ attributes = { key = \"k0\" }, to = [\"east\"] }], otherwise = [\"west\"] }",
    )?;
    let text = format!(
        r#"{CLIENTS}
[[output]]
name = "east"
kind = "zmq-dealer"
bind = "tcp://127.0.0.1:0"

[[output]]
name = "west"
kind = "zmq-dealer"
bind = "tcp://127.0.0.1:0"

[[route]]
name = "rpc"
match = "rpc.>"
router = "by-key"
to = ["east", "west"]
{plugin}"#
    );
    let router = Router::start(&text)?;
    let _east = Peer::rep(&router.output_endpoint("east")?, "e", false)?;
    let _west = Peer::rep(&router.output_endpoint("west")?, "w", false)?;
    for output in ["east", "west"] {
        router.wait_metric(
            "switchyard_output_services",
            &[("output", output), ("state", "up")],
            1.0,
        )?;
    }
    let mut clients = Peer::req(&router.input_endpoint("clients")?)?;
    let run = json!({"clients": 2, "count": 20, "keys": 2, "topic": "rpc.echo", "attrs": true});
    let done = clients.run_requests(&run, DEADLINE)?;
    ensure!(count(&done, "ok") == 40, "{done}");
    ensure!(done["keys"]["k0"] == json!(["e"]), "{done}");
    ensure!(done["keys"]["k1"] == json!(["w"]), "{done}");
    Ok(())
}

/// The config of the reload test: one connect-mode dealer output.
fn connecting(endpoints: &[&str], note: &str) -> String {
    let list: Vec<String> = endpoints.iter().map(|e| format!("{e:?}")).collect();
    format!(
        r#"
# {note}
{CLIENTS}
[[output]]
name = "services"
kind = "zmq-dealer"
connect = [{}]

[[route]]
name = "rpc"
match = "rpc.>"
to = ["services"]
"#,
        list.join(", ")
    )
}

#[test]
fn a_reload_adds_a_service_while_clients_keep_asking() -> Result<()> {
    let mut first = Peer::rep("tcp://127.0.0.1:0", "first", true)?;
    let mut second = Peer::rep("tcp://127.0.0.1:0", "second", true)?;
    let (e1, e2) = (first.endpoint().to_owned(), second.endpoint().to_owned());
    let router = Router::start(&connecting(&[&e1], "one service"))?;
    services_up(&router, 1)?;
    let mut clients = Peer::req(&router.input_endpoint("clients")?)?;
    let run =
        json!({"clients": 4, "count": 300, "pause_ms": 5, "topic": "rpc.echo", "attrs": true});
    clients.command(&json!({ "run": run }))?;
    first.recv_n(40, DEADLINE)?;
    std::fs::write(
        router.config_path(),
        connecting(&[&e1, &e2], "two services"),
    )?;
    // The rebuilt output takes over and spreads over both.
    second.recv_n(40, DEADLINE)?;
    let done = clients.wait_event("done", DEADLINE * 2)?;
    ensure!(
        count(&done, "ok") == 1200,
        "every request answered by a service: {done}"
    );
    ensure!(count(&done, "mismatches") == 0, "{done}");
    ensure!(count(&done, "timeouts") == 0, "{done}");
    let scrape = router.scrape()?;
    ensure!(scrape.get("switchyard_config_reloads_total", &[("result", "success")]) >= 1.0);
    Ok(())
}
