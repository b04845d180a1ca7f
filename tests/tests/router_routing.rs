//! End to end over real sockets against the real `switchyard` binary:
//! PUSH → router → PULL workers, a route nobody listens to, one message on
//! three routes, attribute conditions, `${ENV}` substitution.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::json;
use switchyard_tests::router::peer::{Msg, Peer, PullOptions, PushOptions};
use switchyard_tests::router::{DEADLINE, Router};

/// Publishes an `end` marker to `topic` and collects what `sub` receives
/// up to it, without the messages on `topic`. Call once the routes feeding
/// `sub` are idle: its queue is FIFO, so the marker comes last.
fn until_end(router: &Router, topic: &str, sub: &mut Peer) -> Result<Vec<Msg>> {
    let got = sub.recv_through_marker(router, "api", topic)?;
    Ok(got.into_iter().filter(|m| m.topic() != topic).collect())
}

const PUSH_PULL: &str = r#"
[router]
admin = "127.0.0.1:0"

[[input]]
name = "producers"
kind = "zmq-pull"
bind = "tcp://127.0.0.1:0"

[[output]]
name = "workers"
kind = "zmq-push"
bind = "tcp://127.0.0.1:0"

[[route]]
name = "jobs"
match = "jobs.>"
to = ["workers"]
"#;

/// Collects messages from `workers` until `n` have arrived in total.
fn collect(workers: &mut [Peer], n: usize) -> Result<Vec<Vec<Msg>>> {
    let deadline = Instant::now() + DEADLINE;
    let mut got: Vec<Vec<Msg>> = workers.iter().map(|_| Vec::new()).collect();
    loop {
        let total: usize = got.iter().map(Vec::len).sum();
        if total >= n {
            return Ok(got);
        }
        if Instant::now() >= deadline {
            let per: Vec<usize> = got.iter().map(Vec::len).collect();
            bail!("workers got {per:?}, {total} of {n}, within {DEADLINE:?}");
        }
        for (w, g) in workers.iter_mut().zip(&mut got) {
            g.extend(w.drain());
        }
        if let Some(m) = workers[0].recv_timeout(Duration::from_millis(20)) {
            got[0].push(m);
        }
    }
}

#[test]
fn push_to_pull_workers_exactly_once_with_load_spread() -> Result<()> {
    const N: u64 = 600;
    let router = Router::start(PUSH_PULL)?;
    let out = router.output_endpoint("workers")?;
    let mut workers = vec![
        Peer::pull(&out, PullOptions::default())?,
        Peer::pull(&out, PullOptions::default())?,
        Peer::pull(&out, PullOptions::default())?,
    ];
    // All three connected before the first message, so the round-robin
    // has all three to choose from.
    router.wait_metric("switchyard_zmtp_peers", &[("socket", "workers")], 3.0)?;
    let mut producer = Peer::push(&router.input_endpoint("producers")?, PushOptions::default())?;
    producer.generate("jobs.resize", 0, N, 16, None)?;
    producer.wait_event("sent", DEADLINE)?;

    let got = collect(&mut workers, N as usize)?;
    let s = router.wait_metric(
        "switchyard_route_messages_total",
        &[("route", "jobs"), ("outcome", "delivered")],
        N as f64,
    )?;
    assert_eq!(
        s.count("switchyard_input_messages_total", &[("input", "producers")]),
        N
    );
    let r = s.route("jobs");
    assert_eq!((r.offered, r.dropped, r.depth), (N, 0, 0));
    assert_eq!(
        s.count("switchyard_output_messages_total", &[("output", "workers")]),
        N
    );
    // Exactly once: every sequence number, no duplicate, nothing else.
    let mut seen = BTreeSet::new();
    for m in got.iter().flatten() {
        assert_eq!(m.topic(), "jobs.resize");
        let seq = m.seq().expect("generated payload");
        assert!(seen.insert(seq), "message {seq} arrived twice");
    }
    assert_eq!(seen, (0..N).collect::<BTreeSet<_>>());
    // Spread: each worker took a share, and each one's share is in order.
    for (i, g) in got.iter().enumerate() {
        assert!(
            !g.is_empty(),
            "worker {i} got nothing: {:?}",
            got.iter().map(Vec::len).collect::<Vec<_>>()
        );
        let seqs: Vec<u64> = g.iter().filter_map(Msg::seq).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "worker {i} out of order"
        );
    }
    for w in &mut workers {
        assert!(w.drain().is_empty(), "no message arrives twice");
    }
    Ok(())
}

const NO_SUBSCRIBER: &str = r#"
[router]
admin = "127.0.0.1:0"

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"

# Nobody connects to either output.
[[output]]
name = "lonely-pub"
kind = "zmq-pub"
bind = "tcp://127.0.0.1:0"

[[output]]
name = "lonely-push"
kind = "zmq-push"
bind = "tcp://127.0.0.1:0"
send_timeout = "50ms"

[[route]]
name = "orphan-pub"
match = "orphan.pub"
to = ["lonely-pub"]

[[route]]
name = "orphan-push"
match = "orphan.push"
to = ["lonely-push"]
"#;

#[test]
fn a_route_without_subscribers_counts_its_messages_dropped() -> Result<()> {
    let router = Router::start(NO_SUBSCRIBER)?;
    let mut api = router.http("api")?;
    for topic in ["orphan.pub", "orphan.push"] {
        let batch: Vec<_> = (0..7)
            .map(|i| json!({"topic": topic, "payload": format!("{i}")}))
            .collect();
        let resp = api.post_json("/v1/publish", &json!({ "messages": batch }))?;
        assert_eq!(resp.status, 202, "{}", resp.text());
        assert_eq!(resp.ids()?.len(), 7);
    }
    let s = router.wait_scrape("both routes idle", "switchyard_route", DEADLINE, |s| {
        s.route("orphan-pub").no_subscriber == 7 && s.route("orphan-push").no_subscriber == 7
    })?;
    for route in ["orphan-pub", "orphan-push"] {
        let r = s.route(route);
        assert_eq!(
            (r.offered, r.delivered, r.dropped, r.depth),
            (7, 0, 7, 0),
            "{route}"
        );
        assert_eq!(r.dropped_outcome, 7);
        assert!(r.conserved());
    }
    assert_eq!(
        s.count("switchyard_input_messages_total", &[("input", "api")]),
        14
    );
    for output in ["lonely-pub", "lonely-push"] {
        assert_eq!(
            s.count("switchyard_output_messages_total", &[("output", output)]),
            0
        );
    }
    Ok(())
}

const THREE_ROUTES: &str = r#"
[router]
admin = "127.0.0.1:0"

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"

[[output]]
name = "o1"
kind = "zmq-pub"
bind = "tcp://127.0.0.1:0"

[[output]]
name = "o2"
kind = "zmq-pub"
bind = "tcp://127.0.0.1:0"

[[output]]
name = "o3"
kind = "zmq-pub"
bind = "tcp://127.0.0.1:0"

# plant.line1.temp matches all three, each to its own output.
[[route]]
name = "all-plant"
match = "plant.>"
to = ["o1"]
queue = { when_full = "drop_oldest" }

[[route]]
name = "temps"
match = "plant.*.temp"
to = ["o2"]
queue = { when_full = "block" }

[[route]]
name = "line1"
match = "plant.line1.temp"
to = ["o3"]
queue = { when_full = "drop_newest" }

# dup.a matches all three, all to o1.
[[route]]
name = "dup-any"
match = "dup.>"
to = ["o1"]

[[route]]
name = "dup-one"
match = "dup.*"
to = ["o1"]

[[route]]
name = "dup-a"
match = "dup.a"
to = ["o1"]

[[route]]
name = "probe"
match = "probe"
to = ["o1", "o2", "o3"]
"#;

#[test]
fn one_message_matching_three_routes_goes_to_each() -> Result<()> {
    let router = Router::start(THREE_ROUTES)?;
    let mut subs = [
        Peer::sub(&router.output_endpoint("o1")?, &["", "probe"])?,
        Peer::sub(&router.output_endpoint("o2")?, &["", "probe"])?,
        Peer::sub(&router.output_endpoint("o3")?, &["", "probe"])?,
    ];
    let probes = {
        let [a, b, c] = &mut subs;
        router.sync_subscribers("api", "probe", &mut [a, b, c])?
    };
    let mut api = router.http("api")?;
    for topic in ["plant.line1.temp", "dup.a"] {
        let resp = api.post(&format!("/v1/publish/{topic}"), &[], b"7")?;
        assert_eq!(resp.status, 202, "{}", resp.text());
        assert_eq!(resp.ids()?.len(), 1, "one message, one id");
    }
    let s = router.wait_scrape("six routes delivered", "switchyard_route", DEADLINE, |s| {
        ["all-plant", "temps", "line1", "dup-any", "dup-one", "dup-a"]
            .iter()
            .all(|r| s.route(r).delivered == 1)
    })?;
    for route in ["all-plant", "temps", "line1", "dup-any", "dup-one", "dup-a"] {
        let r = s.route(route);
        assert_eq!(
            (r.offered, r.delivered, r.dropped, r.depth),
            (1, 1, 0, 0),
            "{route}"
        );
    }
    assert_eq!(
        s.count("switchyard_input_messages_total", &[("input", "api")]),
        2 + probes
    );
    assert_eq!(s.count("switchyard_pipeline_unrouted_total", &[]), 0);
    assert_eq!(
        s.count("switchyard_output_messages_total", &[("output", "o1")]),
        4 + probes
    );

    let want = [
        vec![
            ("plant.line1.temp", "7"),
            ("dup.a", "7"),
            ("dup.a", "7"),
            ("dup.a", "7"),
        ],
        vec![("plant.line1.temp", "7")],
        vec![("plant.line1.temp", "7")],
    ];
    for (i, (sub, want)) in subs.iter_mut().zip(want).enumerate() {
        let got = until_end(&router, "probe", sub)?;
        let mut got: Vec<(&str, &str)> = got.iter().map(|m| (m.topic(), m.payload())).collect();
        got.sort_unstable();
        let mut want = want;
        want.sort_unstable();
        assert_eq!(got, want, "output o{}", i + 1);
    }
    Ok(())
}

const ATTRIBUTES: &str = r#"
[router]
admin = "127.0.0.1:0"

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"

[[input]]
name = "controllers"
kind = "zmq-sub"
bind = "tcp://127.0.0.1:0"
envelope = "topic-attrs-payload"

[[output]]
name = "site"
kind = "zmq-pub"
bind = "tcp://127.0.0.1:0"
envelope = "topic-attrs-payload"

[[route]]
name = "site42"
match = "sensors.>"
attributes = { site = "42" }
to = ["site"]

[[route]]
name = "line3-site42"
match = "plant.*.alarm"
attributes = { site = "42", line = "3" }
to = ["site"]

[[route]]
name = "probe"
match = "probe"
to = ["site"]
"#;

#[test]
fn attribute_conditions_select_messages() -> Result<()> {
    let router = Router::start(ATTRIBUTES)?;
    let mut sub = Peer::sub(&router.output_endpoint("site")?, &["", "probe"])?;
    let probes = router.sync_subscribers("api", "probe", &mut [&mut sub])?;

    // Over HTTP: attributes from X-Attr-* headers and from JSON.
    let mut api = router.http("api")?;
    let raw = [
        (vec![("X-Attr-site", "42")], "http-yes"),
        (vec![("X-Attr-site", "43")], "http-no-other-site"),
        (vec![], "http-no-attrs"),
        (
            vec![("X-Attr-site", "42"), ("X-Attr-role", "x")],
            "http-yes-extra",
        ),
    ];
    for (headers, payload) in &raw {
        let resp = api.post("/v1/publish/sensors.t", headers, payload.as_bytes())?;
        assert_eq!(resp.status, 202, "{}", resp.text());
    }
    let resp = api.post_json(
        "/v1/publish",
        &json!({"messages": [
            {"topic": "sensors.t", "payload": "json-yes", "attributes": {"site": "42"}},
            {"topic": "sensors.t", "payload": "json-no", "attributes": {"site": "4"}},
        ]}),
    )?;
    assert_eq!(resp.status, 202, "{}", resp.text());

    // Over ZeroMQ: [topic][attributes JSON][payload].
    let mut publisher = Peer::xpub(
        &router.input_endpoint("controllers")?,
        &["sensors.", "plant.", "probe"],
    )?;
    publisher.send(&[
        &["sensors.t", r#"{"site":"42"}"#, "zmq-yes"],
        &["sensors.t", r#"{"site":"7"}"#, "zmq-no"],
        &["sensors.t", "{}", "zmq-no-attrs"],
        &[
            "plant.l3.alarm",
            r#"{"site":"42","line":"3"}"#,
            "zmq-alarm-yes",
        ],
        &[
            "plant.l3.alarm",
            r#"{"site":"42","line":"4"}"#,
            "zmq-alarm-no",
        ],
        &["plant.l3.alarm", r#"{"line":"3"}"#, "zmq-alarm-no-site"],
    ])?;

    let s = router.wait_scrape("every message counted", "switchyard_", DEADLINE, |s| {
        s.count(
            "switchyard_input_messages_total",
            &[("input", "controllers")],
        ) == 6
            && s.route("site42").delivered == 4
            && s.route("line3-site42").delivered == 1
    })?;
    assert_eq!(
        s.count("switchyard_input_messages_total", &[("input", "api")]),
        6 + probes
    );
    // 3 HTTP and 2 ZeroMQ sensor messages, 2 alarms: no route takes them.
    assert_eq!(s.count("switchyard_pipeline_unrouted_total", &[]), 7);
    for (route, n) in [("site42", 4), ("line3-site42", 1)] {
        let r = s.route(route);
        assert_eq!(
            (r.offered, r.delivered, r.dropped, r.depth),
            (n, n, 0, 0),
            "{route}"
        );
    }

    let got = until_end(&router, "probe", &mut sub)?;
    let mut payloads: Vec<&str> = got.iter().map(Msg::payload).collect();
    payloads.sort_unstable();
    assert_eq!(
        payloads,
        [
            "http-yes",
            "http-yes-extra",
            "json-yes",
            "zmq-alarm-yes",
            "zmq-yes"
        ]
    );
    // The output's envelope carries the attributes on.
    for m in &got {
        let attrs: BTreeMap<String, String> = serde_json::from_str(&m.frames[1])?;
        assert_eq!(attrs.get("site").map(String::as_str), Some("42"), "{m:?}");
    }
    Ok(())
}

const ENV_CONFIG: &str = r#"
[router]
name = "site-${E2E_SITE}"
admin = "127.0.0.1:0"

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"

[[output]]
name = "out"
kind = "zmq-pub"
bind = "tcp://127.0.0.1:0"

[[route]]
name = "site-${E2E_SITE}-telemetry"
match = "site${E2E_SITE}.>"
attributes = { site = "${E2E_SITE}" }
to = ["out"]
queue = { capacity = ${E2E_CAPACITY:-123} }
"#;

#[test]
fn env_substitution_in_route_names_patterns_and_values() -> Result<()> {
    let router = Router::builder(ENV_CONFIG).env("E2E_SITE", "42").start()?;
    let route = "site-42-telemetry";
    let mut api = router.http("api")?;
    for (topic, site) in [
        ("site42.temp", "42"),
        ("site42.temp", "43"),
        ("site43.temp", "42"),
        ("site.temp", "42"),
    ] {
        let resp = api.post(
            &format!("/v1/publish/{topic}"),
            &[("X-Attr-site", site)],
            b"x",
        )?;
        assert_eq!(resp.status, 202, "{}", resp.text());
    }
    let s = router.wait_scrape("4 messages counted", "switchyard_", DEADLINE, |s| {
        s.route(route).offered + s.count("switchyard_pipeline_unrouted_total", &[]) == 4
    })?;
    assert_eq!(s.route(route).offered, 1, "only site42.* with site=42");
    assert_eq!(s.count("switchyard_pipeline_unrouted_total", &[]), 3);
    assert_eq!(
        s.value("switchyard_route_queue_capacity", &[("route", route)]),
        Some(123.0),
        "the default after :- applies when the variable is unset"
    );
    let routes = switchyard_tests::router::http::get(router.admin(), "/v1/routes")?;
    assert_eq!(routes.status, 200);
    let text = routes.text();
    assert!(text.contains(r#""site42.>""#), "{text}");
    assert!(text.contains(route), "{text}");
    assert!(!text.contains("${"), "{text}");
    Ok(())
}
