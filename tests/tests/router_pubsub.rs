//! End to end over real sockets, libzmq (pyzmq) peers outside the real
//! `switchyard` binary: PUB → router → SUB with several route patterns and
//! subscribers' own prefix filters; HTTP publish → router → SUB, single and
//! batched.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use serde_json::json;
use switchyard_tests::router::peer::{Msg, Peer};
use switchyard_tests::router::{DEADLINE, Router};

/// Topics of `msgs` other than `skip`, with how often each arrived.
fn topic_counts(msgs: &[Msg], skip: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for m in msgs.iter().filter(|m| m.topic() != skip) {
        *counts.entry(m.topic().to_owned()).or_insert(0) += 1;
    }
    counts
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect()
}

const PATTERNS: &str = r#"
[router]
admin = "127.0.0.1:0"
shutdown_grace = "2s"

[[input]]
name = "devices"
kind = "zmq-sub"
bind = "tcp://127.0.0.1:0"

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"

[[output]]
name = "dash"
kind = "zmq-pub"
bind = "tcp://127.0.0.1:0"
send_hwm = 100000

[[route]]
name = "sensors"
match = "sensors.>"
to = ["dash"]

[[route]]
name = "abc"
match = "a.*.c"
to = ["dash"]

[[route]]
name = "literal"
match = "plant.line1.alarm"
to = ["dash"]

[[route]]
name = "probe"
match = "probe"
to = ["dash"]
"#;

#[test]
fn pub_to_sub_with_patterns_and_subscriber_prefixes() -> Result<()> {
    let router = Router::start(PATTERNS)?;
    let out = router.output_endpoint("dash")?;
    // One subscriber takes everything, one only `sensors.line1`; each
    // subscribes to `probe` last, so a probe arriving proves the earlier
    // subscription is in force.
    let mut all = Peer::sub(&out, &["", "probe"])?;
    let mut line1 = Peer::sub(&out, &["sensors.line1", "probe"])?;
    let probes = router.sync_subscribers("api", "probe", &mut [&mut all, &mut line1])?;

    // The router subscribes its publishers to the routes' literal prefixes
    // only; the XPUB publisher is ready once it has seen them all.
    let mut publisher = Peer::xpub(
        &router.input_endpoint("devices")?,
        &["sensors.", "a.", "plant.line1.alarm", "probe"],
    )?;
    let subscribed: BTreeSet<String> = publisher
        .take_events("subscribed")
        .iter()
        .filter_map(|e| e["prefix"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        subscribed,
        ["a.", "plant.line1.alarm", "probe", "sensors."]
            .map(String::from)
            .into(),
        "upstream subscriptions are the routes' literal prefixes"
    );
    let mut sent = Vec::new();
    let mut add = |topic: &str, n: usize| {
        for i in 0..n {
            sent.push([topic.to_owned(), format!("{i}")]);
        }
    };
    add("sensors.line1.temp", 5);
    add("sensors.line2.temp", 3);
    add("a.b.c", 2);
    add("a.x.c", 1);
    add("a.b.d", 1); // matches no route
    add("a.b.c.d", 1); // matches no route
    add("plant.line1.alarm", 2);
    add("plant.line1.alarmx", 1); // passes the upstream prefix; no route
    add("other.topic", 3); // nobody subscribed upstream: never sent
    let frames: Vec<Vec<&str>> = sent
        .iter()
        .map(|[t, p]| vec![t.as_str(), p.as_str()])
        .collect();
    let frames: Vec<&[&str]> = frames.iter().map(Vec::as_slice).collect();
    publisher.send(&frames)?;

    let s = router.wait_scrape(
        "16 messages accepted from devices, 13 delivered",
        "switchyard_",
        DEADLINE,
        |s| {
            s.count("switchyard_input_messages_total", &[("input", "devices")]) == 16
                && ["sensors", "abc", "literal"]
                    .iter()
                    .map(|r| s.route(r).delivered)
                    .sum::<u64>()
                    == 13
                // Delivered is counted just before the batch leaves the
                // depth gauge: wait for both.
                && ["sensors", "abc", "literal"]
                    .iter()
                    .all(|r| s.route(r).depth == 0)
        },
    )?;
    assert_eq!(s.count("switchyard_pipeline_unrouted_total", &[]), 3);
    for (route, n) in [("sensors", 8), ("abc", 3), ("literal", 2)] {
        let r = s.route(route);
        assert_eq!(
            (r.offered, r.delivered, r.dropped, r.depth),
            (n, n, 0, 0),
            "{route}"
        );
    }
    let r = s.route("probe");
    assert_eq!(r.offered, probes);
    assert!(r.conserved(), "{r:?}");

    let got_all = all.recv_through_marker(&router, "api", "probe")?;
    assert_eq!(
        topic_counts(&got_all, "probe"),
        counts(&[
            ("sensors.line1.temp", 5),
            ("sensors.line2.temp", 3),
            ("a.b.c", 2),
            ("a.x.c", 1),
            ("plant.line1.alarm", 2),
        ])
    );
    let got_line1 = line1.recv_through_marker(&router, "api", "probe")?;
    assert_eq!(
        topic_counts(&got_line1, "probe"),
        counts(&[("sensors.line1.temp", 5)]),
        "a subscriber gets only its own prefix"
    );
    // Within one route and one subscriber, order is kept.
    let seqs: Vec<&str> = got_line1
        .iter()
        .filter(|m| m.topic() != "probe")
        .map(Msg::payload)
        .collect();
    assert_eq!(seqs, ["0", "1", "2", "3", "4"]);
    Ok(())
}

const HTTP_TO_SUB: &str = r#"
[router]
admin = "127.0.0.1:0"

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"

[[output]]
name = "dash"
kind = "zmq-pub"
bind = "tcp://127.0.0.1:0"
send_hwm = 100000

[[route]]
name = "sensors"
match = "sensors.>"
to = ["dash"]

[[route]]
name = "probe"
match = "probe"
to = ["dash"]
"#;

fn is_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn http_publish_single_and_batched_to_sub() -> Result<()> {
    let router = Router::start(HTTP_TO_SUB)?;
    let mut sub = Peer::sub(&router.output_endpoint("dash")?, &["sensors.", "probe"])?;
    let probes = router.sync_subscribers("api", "probe", &mut [&mut sub])?;
    let mut api = router.http("api")?;
    let mut ids = Vec::new();

    // Raw body, topic in the path.
    let resp = api.post("/v1/publish/sensors.line1.temp", &[], b"21.5")?;
    assert_eq!(resp.status, 202, "{}", resp.text());
    ids.extend(resp.ids()?);
    // One JSON message: a string payload is sent as its bytes, any other
    // JSON value as its compact text.
    let resp = api.post_json(
        "/v1/publish",
        &json!({"topic": "sensors.line2.temp", "payload": "hello"}),
    )?;
    assert_eq!(resp.status, 202, "{}", resp.text());
    ids.extend(resp.ids()?);
    let resp = api.post_json(
        "/v1/publish",
        &json!({"topic": "sensors.line3.temp", "payload": {"celsius": 20}}),
    )?;
    assert_eq!(resp.status, 202, "{}", resp.text());
    ids.extend(resp.ids()?);
    // A batch: one id per message, in order.
    let batch: Vec<_> = (0..50)
        .map(|i| json!({"topic": "sensors.batch", "payload": format!("{i}")}))
        .collect();
    let resp = api.post_json("/v1/publish", &json!({ "messages": batch }))?;
    assert_eq!(resp.status, 202, "{}", resp.text());
    let batch_ids = resp.ids()?;
    assert_eq!(batch_ids.len(), 50);
    ids.extend(batch_ids);
    // A batch with a topic no route wants is accepted and counted unrouted.
    let resp = api.post_json(
        "/v1/publish",
        &json!({"messages": [{"topic": "nobody.here", "payload": "x"}]}),
    )?;
    assert_eq!(resp.status, 202, "{}", resp.text());
    ids.extend(resp.ids()?);

    assert_eq!(ids.len(), 54);
    assert!(ids.iter().all(|id| is_id(id)), "{ids:?}");
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "ids are unique");

    let s = router.wait_metric(
        "switchyard_route_messages_total",
        &[("route", "sensors"), ("outcome", "delivered")],
        53.0,
    )?;
    assert_eq!(
        s.count("switchyard_input_messages_total", &[("input", "api")]),
        54 + probes
    );
    assert_eq!(s.count("switchyard_pipeline_unrouted_total", &[]), 1);
    let r = s.route("sensors");
    assert_eq!((r.offered, r.dropped, r.depth), (53, 0, 0));

    let got: Vec<Msg> = sub
        .recv_through_marker(&router, "api", "probe")?
        .into_iter()
        .filter(|m| m.topic() != "probe")
        .collect();
    assert_eq!(got.len(), 53);
    assert_eq!(
        (got[0].topic(), got[0].payload()),
        ("sensors.line1.temp", "21.5")
    );
    assert_eq!(
        (got[1].topic(), got[1].payload()),
        ("sensors.line2.temp", "hello")
    );
    assert_eq!(
        (got[2].topic(), got[2].payload()),
        ("sensors.line3.temp", r#"{"celsius":20}"#)
    );
    let batch: Vec<&str> = got[3..].iter().map(Msg::payload).collect();
    let want: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    assert_eq!(batch, want);
    assert!(got[3..].iter().all(|m| m.topic() == "sensors.batch"));
    Ok(())
}
