//! Wasm plugins in routes, end to end over real sockets against the real
//! `switchyard` binary: filtering, rewriting, content routing with a
//! dead-letter output, filter chains beside a plain route, hostile plugins
//! stopped and counted while healthy routes deliver everything, circuit
//! breakers, modules refused at load (`run` and `validate` exit 2 naming
//! file, line and problem), and the admin API's view of it all.
//!
//! The plugins are built by the test setup (`support::router::plugins`,
//! once per test binary, into `target/plugin-fixtures`); hand-written
//! WebAssembly-text filters are assembled here. Every count that can be
//! counted is asserted exactly, and every route obeys
//! `offered = delivered + filtered + dead_lettered + dropped + depth`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use switchyard_tests::router::http::get;
use switchyard_tests::router::peer::{Msg, Peer};
use switchyard_tests::router::plugins::{
    self, WAT_WRONG_COUNT, assemble, entry, entry_at, wat_filter, wat_router,
};
use switchyard_tests::router::{DEADLINE, Router, Scrape, TempDir, cli};

/// The router, the HTTP input `api` (probes, end markers, publishing) and
/// the ZeroMQ input `devices`, whose envelope carries attributes.
const HEAD: &str = r#"
[router]
admin = "127.0.0.1:0"

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"

[[input]]
name = "devices"
kind = "zmq-sub"
bind = "tcp://127.0.0.1:0"
envelope = "topic-attrs-payload"
"#;

/// A bound `zmq-pub` output whose envelope carries attributes.
fn output(name: &str) -> String {
    format!(
        "\n[[output]]\nname = \"{name}\"\nkind = \"zmq-pub\"\nbind = \"tcp://127.0.0.1:0\"\nenvelope = \"topic-attrs-payload\"\n"
    )
}

/// The `probe` route (no plugin) to `outputs`, for
/// [`Router::sync_subscribers`] and end markers.
fn probe_route(outputs: &[&str]) -> String {
    let to: Vec<String> = outputs.iter().map(|o| format!("{o:?}")).collect();
    format!(
        "\n[[route]]\nname = \"probe\"\nmatch = \"probe\"\nto = [{}]\n",
        to.join(", ")
    )
}

/// What `sub` received up to an end marker, without the probes. Call once
/// the routes feeding it are idle: its queue is FIFO, so the marker comes
/// after everything they delivered.
fn received(router: &Router, sub: &mut Peer) -> Result<Vec<Msg>> {
    let got = sub.recv_through_marker(router, "api", "probe")?;
    Ok(got.into_iter().filter(|m| m.topic() != "probe").collect())
}

/// The attributes frame of a `topic-attrs-payload` message.
fn attrs(m: &Msg) -> Result<BTreeMap<String, String>> {
    let frame = m.frames.get(1).context("no attributes frame")?;
    serde_json::from_str(frame).with_context(|| format!("attributes of {m:?}"))
}

/// Waits until each route of `want` has been offered exactly its count and
/// every one has left it (delivered, filtered, dead-lettered or dropped);
/// checks conservation on that scrape.
fn settle(router: &Router, want: &[(&str, u64)]) -> Result<Scrape> {
    let s = router.wait_scrape(
        &format!("routes {want:?} offered and idle"),
        "switchyard_",
        DEADLINE,
        |s| {
            want.iter().all(|(route, n)| {
                let r = s.route(route);
                r.offered == *n && r.depth == 0 && r.left() == *n
            })
        },
    )?;
    for (route, _) in want {
        let r = s.route(route);
        assert!(r.conserved(), "{route}: {r:?}");
    }
    Ok(s)
}

/// Publishes `messages` (`[topic, attributes JSON, payload]`) from a
/// libzmq XPUB publisher on input `devices`, once it sees the router's
/// subscription to each of `prefixes`.
fn publish_zmq(router: &Router, prefixes: &[&str], messages: &[[String; 3]]) -> Result<Peer> {
    let mut publisher = Peer::xpub(&router.input_endpoint("devices")?, prefixes)?;
    let frames: Vec<Vec<&str>> = messages
        .iter()
        .map(|m| m.iter().map(String::as_str).collect())
        .collect();
    let refs: Vec<&[&str]> = frames.iter().map(Vec::as_slice).collect();
    publisher.send(&refs)?;
    Ok(publisher)
}

/// Publishes `messages` as one JSON batch on input `api`; all admitted.
fn publish_http(router: &Router, messages: Vec<Value>) -> Result<()> {
    let n = messages.len();
    let resp = router
        .http("api")?
        .post_json("/v1/publish", &json!({ "messages": messages }))?;
    ensure!(
        resp.status == 202,
        "publish: {} {}",
        resp.status,
        resp.text()
    );
    ensure!(resp.ids()?.len() == n, "all {n} admitted: {}", resp.text());
    Ok(())
}

fn calls(s: &Scrape, plugin: &str) -> u64 {
    s.count("switchyard_plugin_calls_total", &[("plugin", plugin)])
}

fn traps(s: &Scrape, plugin: &str, reason: &str) -> u64 {
    s.count(
        "switchyard_plugin_traps_total",
        &[("plugin", plugin), ("reason", reason)],
    )
}

fn all_traps(s: &Scrape, plugin: &str) -> u64 {
    s.sum("switchyard_plugin_traps_total", &[("plugin", plugin)]) as u64
}

/// `GET path` on the admin listener, as JSON.
fn admin_json(router: &Router, path: &str) -> Result<Value> {
    let resp = get(router.admin(), path)?;
    ensure!(
        resp.status == 200,
        "{path}: {} {}",
        resp.status,
        resp.text()
    );
    resp.json()
}

/// The entry called `name` of the array `key` in an admin answer.
fn named<'a>(v: &'a Value, key: &str, name: &str) -> Result<&'a Value> {
    v[key]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == name))
        .with_context(|| format!("no {key} entry {name:?} in {v}"))
}

/// The deadline of plugins that behave: the default (100ms) is wall-clock
/// time, which a busy 2-core machine can let pass while a call's thread
/// waits for a core.
const CALM: &str = "deadline = \"5s\"";

/// A healthy plugin's settings: `config` and [`CALM`].
fn healthy(config: &str) -> String {
    format!("{config}\n{CALM}")
}

/// The level attribute message `i` of the filter tests carries.
fn level(i: usize) -> Option<&'static str> {
    if i % 10 == 9 {
        return None;
    }
    Some(["debug", "info", "warn"][i % 3])
}

#[test]
fn attr_filter_drops_debug_messages_arriving_over_zeromq() -> Result<()> {
    const N: usize = 300;
    let started = Instant::now();
    let config = format!(
        "{HEAD}{}{}\n[[route]]\nname = \"logs\"\nmatch = \"logs.>\"\nfilters = [\"drop-debug\"]\nto = [\"out\"]\n{}",
        output("out"),
        probe_route(&["out"]),
        entry(
            "drop-debug",
            "attr_filter",
            &healthy(r#"config = { key = "level", deny = ["debug"] }"#)
        )?,
    );
    let router = Router::start(&config)?;
    let mut sub = Peer::sub(&router.output_endpoint("out")?, &[""])?;
    let probes = router.sync_subscribers("api", "probe", &mut [&mut sub])?;

    let messages: Vec<[String; 3]> = (0..N)
        .map(|i| {
            let attrs = match level(i) {
                Some(l) => json!({ "level": l, "n": i.to_string() }),
                None => json!({ "n": i.to_string() }),
            };
            ["logs.app".into(), attrs.to_string(), i.to_string()]
        })
        .collect();
    let _publisher = publish_zmq(&router, &["logs."], &messages)?;
    let kept: Vec<usize> = (0..N).filter(|&i| level(i) != Some("debug")).collect();
    let debug = (N - kept.len()) as u64;

    let s = settle(&router, &[("logs", N as u64)])?;
    let r = s.route("logs");
    assert_eq!(
        (r.delivered, r.filtered, r.dead_lettered, r.dropped),
        (kept.len() as u64, debug, 0, 0),
        "{r:?}"
    );
    assert_eq!(
        s.count("switchyard_input_messages_total", &[("input", "devices")]),
        N as u64
    );
    assert_eq!(
        s.count("switchyard_input_messages_total", &[("input", "api")]),
        probes
    );
    assert!(calls(&s, "drop-debug") > 0, "the plugin was called");
    assert_eq!(all_traps(&s, "drop-debug"), 0);
    assert!(
        s.get(
            "switchyard_plugin_duration_seconds_count",
            &[("plugin", "drop-debug")]
        ) > 0.0
    );

    // Exactly the others, in order, with their attributes.
    let got = received(&router, &mut sub)?;
    let payloads: Vec<usize> = got
        .iter()
        .map(|m| m.payload().parse().context("numbered payload"))
        .collect::<Result<_>>()?;
    assert_eq!(payloads, kept);
    for m in &got {
        assert_eq!(m.topic(), "logs.app");
        let a = attrs(m)?;
        assert_eq!(a.get("n").map(String::as_str), Some(m.payload()), "{m:?}");
        assert_ne!(a.get("level").map(String::as_str), Some("debug"));
    }
    println!("filtering: {:?}", started.elapsed());
    Ok(())
}

#[test]
fn topic_rewrite_sets_topics_from_attributes() -> Result<()> {
    const N: usize = 200;
    let started = Instant::now();
    let config = format!(
        "{HEAD}{}{}\n[[route]]\nname = \"raw\"\nmatch = \"raw.>\"\nfilters = [\"by-site\"]\nto = [\"out\"]\n{}",
        output("out"),
        probe_route(&["out"]),
        entry(
            "by-site",
            "topic_rewrite",
            &healthy(r#"config = { template = "site.{attr.site}.{topic.1}" }"#)
        )?,
    );
    let router = Router::start(&config)?;
    let mut sub = Peer::sub(&router.output_endpoint("out")?, &["site.", "raw.", "probe"])?;
    router.sync_subscribers("api", "probe", &mut [&mut sub])?;

    // Each message: its topic, its site attribute (if any), and the topic
    // the subscriber should see.
    let plan: Vec<(String, Option<String>, String)> = (0..N)
        .map(|i| {
            let kind = if i % 2 == 0 { "temp" } else { "hum" };
            let topic = format!("raw.{kind}");
            match i % 10 {
                // A dot in a value cannot go into a token: it becomes `_`.
                3 => (
                    topic,
                    Some("north.2".into()),
                    format!("site.north_2.{kind}"),
                ),
                // No site: kept unchanged.
                7 => (topic.clone(), None, topic),
                _ => {
                    let site = format!("s{}", i % 4);
                    let want = format!("site.{site}.{kind}");
                    (topic, Some(site), want)
                }
            }
        })
        .collect();
    let messages = plan
        .iter()
        .enumerate()
        .map(|(i, (topic, site, _))| {
            let mut m = json!({ "topic": topic, "payload": i.to_string() });
            if let Some(site) = site {
                m["attributes"] = json!({ "site": site });
            }
            m
        })
        .collect();
    publish_http(&router, messages)?;

    let s = settle(&router, &[("raw", N as u64)])?;
    let r = s.route("raw");
    assert_eq!((r.delivered, r.filtered, r.dropped), (N as u64, 0, 0));
    assert!(calls(&s, "by-site") > 0);
    assert_eq!(all_traps(&s, "by-site"), 0);

    let got = received(&router, &mut sub)?;
    let got: Vec<(&str, &str)> = got.iter().map(|m| (m.topic(), m.payload())).collect();
    let payloads: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    let want: Vec<(&str, &str)> = plan
        .iter()
        .zip(&payloads)
        .map(|((_, _, want), p)| (want.as_str(), p.as_str()))
        .collect();
    assert_eq!(got, want);
    println!("rewriting: {:?}", started.elapsed());
    Ok(())
}

/// The classes of message the content-router test sends, in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// `value` over 80: rule 1, to `hot`.
    Hot,
    /// `zone = cold`: rule 2, to `cold`.
    Cold,
    /// `both = yes`: rule 3, to `hot` and `cold`.
    Both,
    /// No rule: `otherwise = "dead_letter"`.
    Otherwise,
    /// `bad = yes`: rule 4 names an output the route does not send to.
    Unknown,
}

const CLASSES: [Class; 5] = [
    Class::Hot,
    Class::Cold,
    Class::Both,
    Class::Otherwise,
    Class::Unknown,
];

fn reading(topic: &str, i: usize, class: Class) -> Value {
    let value = if class == Class::Hot { 90 } else { 10 };
    let attributes = match class {
        Class::Cold => json!({ "zone": "cold" }),
        Class::Both => json!({ "both": "yes" }),
        Class::Unknown => json!({ "bad": "yes" }),
        Class::Hot | Class::Otherwise => json!({}),
    };
    json!({
        "topic": topic,
        "payload": { "value": value, "i": i },
        "attributes": attributes,
    })
}

/// The `i` of each message's JSON payload.
fn indices(got: &[Msg]) -> Result<Vec<usize>> {
    got.iter()
        .map(|m| {
            let v: Value =
                serde_json::from_str(m.payload()).with_context(|| format!("payload of {m:?}"))?;
            v["i"]
                .as_u64()
                .map(|i| i as usize)
                .with_context(|| format!("no i in {m:?}"))
        })
        .collect()
}

#[test]
fn content_router_splits_between_outputs_and_dead_letters_the_rest() -> Result<()> {
    const N: usize = 250;
    const ELSEWHERE: usize = 20;
    let started = Instant::now();
    let plugin = entry(
        "by-content",
        "content_router",
        &healthy(
            r#"config = { rules = [
  { json = { path = "value", op = "gt", value = 80 }, to = ["hot"] },
  { attributes = { zone = "cold" }, to = ["cold"] },
  { attributes = { both = "yes" }, to = ["hot", "cold"] },
  { attributes = { bad = "yes" }, to = ["nowhere"] },
], otherwise = "dead_letter" }"#,
        ),
    )?;
    let config = format!(
        r#"{HEAD}{}{}{}{}
[[route]]
name = "readings"
match = "readings.>"
router = "by-content"
to = ["hot", "cold"]
dead_letter = "dlq"

# The same plugin on a route without a dead-letter output.
[[route]]
name = "elsewhere"
match = "elsewhere.>"
router = "by-content"
to = ["hot", "cold"]
{plugin}"#,
        output("hot"),
        output("cold"),
        output("dlq"),
        probe_route(&["hot", "cold", "dlq"]),
    );
    let router = Router::start(&config)?;
    let mut subs = [
        Peer::sub(&router.output_endpoint("hot")?, &[""])?,
        Peer::sub(&router.output_endpoint("cold")?, &[""])?,
        Peer::sub(&router.output_endpoint("dlq")?, &[""])?,
    ];
    {
        let [a, b, c] = &mut subs;
        router.sync_subscribers("api", "probe", &mut [a, b, c])?;
    }

    let class = |i: usize| CLASSES[i % CLASSES.len()];
    let mut messages: Vec<Value> = (0..N)
        .map(|i| reading("readings.line1", i, class(i)))
        .collect();
    messages.extend((N..N + ELSEWHERE).map(|i| reading("elsewhere.x", i, Class::Otherwise)));
    publish_http(&router, messages)?;

    let of = |classes: &[Class]| -> Vec<usize> {
        (0..N).filter(|&i| classes.contains(&class(i))).collect()
    };
    let per_class = (N / CLASSES.len()) as u64;
    let s = settle(
        &router,
        &[("readings", N as u64), ("elsewhere", ELSEWHERE as u64)],
    )?;
    let r = s.route("readings");
    assert_eq!(r.delivered, 3 * per_class, "hot, cold, both: {r:?}");
    assert_eq!(r.dead_lettered, per_class, "otherwise: {r:?}");
    assert_eq!(r.plugin_error, per_class, "an unknown output: {r:?}");
    assert_eq!((r.filtered, r.dropped), (0, per_class), "{r:?}");
    let e = s.route("elsewhere");
    assert_eq!(
        (e.delivered, e.dead_lettered, e.no_dead_letter, e.dropped),
        (0, 0, ELSEWHERE as u64, ELSEWHERE as u64),
        "dead letters without a dead-letter output: {e:?}"
    );
    assert!(calls(&s, "by-content") > 0);
    assert_eq!(
        all_traps(&s, "by-content"),
        0,
        "an unknown output is the message's problem, not a failed call"
    );

    let [hot, cold, dlq] = &mut subs;
    let hot = received(&router, hot)?;
    assert_eq!(indices(&hot)?, of(&[Class::Hot, Class::Both]));
    let cold = received(&router, cold)?;
    assert_eq!(indices(&cold)?, of(&[Class::Cold, Class::Both]));
    let dead = received(&router, dlq)?;
    assert_eq!(indices(&dead)?, of(&[Class::Otherwise]));
    for m in &dead {
        assert_eq!(m.topic(), "readings.line1");
        let a = attrs(m)?;
        assert_eq!(
            a.get("switchyard.dead_letter.route").map(String::as_str),
            Some("readings"),
            "{m:?}"
        );
        assert_eq!(
            a.get("switchyard.dead_letter.reason").map(String::as_str),
            Some("dead_lettered"),
            "{m:?}"
        );
    }
    for m in hot.iter().chain(&cold) {
        let a = attrs(m)?;
        assert!(
            !a.keys().any(|k| k.starts_with("switchyard.dead_letter")),
            "{m:?}"
        );
    }

    // The admin API: the route's router and dead-letter output, the
    // plugin's kind, routes and calls.
    let routes = admin_json(&router, "/v1/routes")?;
    let readings = named(&routes, "routes", "readings")?;
    assert_eq!(readings["router"], "by-content");
    assert_eq!(readings["filters"], json!([]));
    assert_eq!(readings["dead_letter"], "dlq");
    assert_eq!(readings["dead_lettered"], per_class);
    assert_eq!(
        named(&routes, "routes", "elsewhere")?["dead_letter"],
        Value::Null
    );
    let plugins = admin_json(&router, "/v1/plugins")?;
    let p = named(&plugins, "plugins", "by-content")?;
    assert_eq!(p["kind"], "router");
    assert_eq!(p["routes"], json!(["readings", "elsewhere"]));
    assert_eq!(p["calls"], calls(&router.scrape()?, "by-content"));
    assert_eq!(p["traps"], json!({}));
    println!("content routing: {:?}", started.elapsed());
    Ok(())
}

#[test]
fn a_filter_chain_runs_in_order_beside_a_route_without_plugins() -> Result<()> {
    const N: usize = 300;
    let started = Instant::now();
    let config = format!(
        r#"{HEAD}{}{}{}
[[route]]
name = "chain"
match = "chain.>"
filters = ["drop-debug", "by-site", "shorten"]
to = ["out"]

[[route]]
name = "everything"
match = "chain.>"
to = ["mirror"]
{}{}{}"#,
        output("out"),
        output("mirror"),
        probe_route(&["out", "mirror"]),
        entry(
            "drop-debug",
            "attr_filter",
            &healthy(r#"config = { key = "level", deny = ["debug"] }"#)
        )?,
        entry(
            "by-site",
            "topic_rewrite",
            "config = { template = \"site.{attr.site}.{topic}\", on_missing = \"drop\" }\ndeadline = \"5s\"\nmax_batch = 16"
        )?,
        // Only after by-site does a topic have a fourth token: run first,
        // it would keep `chain.a` as it is.
        entry(
            "shorten",
            "topic_rewrite",
            &healthy(r#"config = { template = "{topic.1}.{topic.3}" }"#)
        )?,
    );
    let router = Router::start(&config)?;
    let mut out = Peer::sub(&router.output_endpoint("out")?, &[""])?;
    let mut mirror = Peer::sub(&router.output_endpoint("mirror")?, &[""])?;
    router.sync_subscribers("api", "probe", &mut [&mut out, &mut mirror])?;

    // Every fourth message has no site: by-site drops it, unless
    // drop-debug took it first.
    let site = |i: usize| (i % 4 != 3).then(|| format!("s{}", i % 5));
    let messages: Vec<[String; 3]> = (0..N)
        .map(|i| {
            let mut a = serde_json::Map::new();
            if let Some(l) = level(i) {
                a.insert("level".into(), l.into());
            }
            if let Some(s) = site(i) {
                a.insert("site".into(), s.into());
            }
            [
                "chain.a".into(),
                Value::Object(a).to_string(),
                i.to_string(),
            ]
        })
        .collect();
    let _publisher = publish_zmq(&router, &["chain."], &messages)?;

    let debug: BTreeSet<usize> = (0..N).filter(|&i| level(i) == Some("debug")).collect();
    let kept: Vec<usize> = (0..N)
        .filter(|i| !debug.contains(i) && site(*i).is_some())
        .collect();
    let s = settle(&router, &[("chain", N as u64), ("everything", N as u64)])?;
    let chain = s.route("chain");
    assert_eq!(
        (chain.delivered, chain.filtered, chain.dropped),
        (kept.len() as u64, (N - kept.len()) as u64, 0),
        "{chain:?}"
    );
    let plain = s.route("everything");
    assert_eq!(
        (plain.delivered, plain.filtered, plain.dropped),
        (N as u64, 0, 0)
    );
    for p in ["drop-debug", "by-site", "shorten"] {
        assert!(calls(&s, p) > 0, "{p} was called");
        assert_eq!(all_traps(&s, p), 0, "{p}");
    }
    assert!(
        calls(&s, "by-site") >= (N - debug.len()).div_ceil(16) as u64,
        "max_batch = 16 splits what drop-debug kept into batches of 16 at most"
    );

    let got = received(&router, &mut out)?;
    let want: Vec<(String, String)> = kept
        .iter()
        .map(|&i| {
            let site = site(i).expect("kept messages have a site");
            (format!("{site}.a"), i.to_string())
        })
        .collect();
    let got_pairs: Vec<(String, String)> = got
        .iter()
        .map(|m| (m.topic().to_owned(), m.payload().to_owned()))
        .collect();
    assert_eq!(got_pairs, want);

    let all = received(&router, &mut mirror)?;
    assert_eq!(all.len(), N, "the plain route receives everything");
    for (i, m) in all.iter().enumerate() {
        assert_eq!(
            (m.topic(), m.payload()),
            ("chain.a", i.to_string().as_str())
        );
        assert_eq!(attrs(m)?.get("level").map(String::as_str), level(i));
    }

    // The admin API shows the chain in order, and each plugin's use.
    let routes = admin_json(&router, "/v1/routes")?;
    let r = named(&routes, "routes", "chain")?;
    assert_eq!(r["filters"], json!(["drop-debug", "by-site", "shorten"]));
    assert_eq!(r["router"], Value::Null);
    assert_eq!(r["on_error"], "drop");
    assert_eq!(r["filtered"], chain.filtered);
    assert_eq!(
        named(&routes, "routes", "everything")?["filters"],
        json!([])
    );
    let plugins = admin_json(&router, "/v1/plugins")?;
    let names: Vec<&str> = plugins["plugins"]
        .as_array()
        .context("plugins")?
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["drop-debug", "by-site", "shorten"]);
    let now = router.scrape()?;
    for (name, file) in [
        ("drop-debug", "attr_filter"),
        ("by-site", "topic_rewrite"),
        ("shorten", "topic_rewrite"),
    ] {
        let p = named(&plugins, "plugins", name)?;
        assert_eq!(p["kind"], "filter");
        assert_eq!(p["routes"], json!(["chain"]));
        assert_eq!(p["calls"], calls(&now, name), "{name}");
        assert_eq!(p["traps"], json!({}));
        assert_eq!(p["tripped"], false);
        assert_eq!(p["on_failure"], "fail-closed");
        let path = p["path"].as_str().context("path")?;
        assert!(path.ends_with(&format!("{file}.wasm")), "{path}");
        assert_eq!(p["sha256"].as_str().map(str::len), Some(64));
    }
    let by_site = named(&plugins, "plugins", "by-site")?;
    assert_eq!(
        (
            by_site["deadline_ms"].as_u64(),
            by_site["max_batch"].as_u64()
        ),
        (Some(5000), Some(16))
    );
    println!("chain: {:?}", started.elapsed());
    Ok(())
}

/// Settings for a hostile plugin that must not trip and must not hit its
/// deadline by accident on a busy machine.
const NEVER_TRIP: &str = "deadline = \"10s\"\non_failure = { trip_after = 1000 }";

#[test]
fn hostile_plugins_are_stopped_and_counted_while_healthy_routes_deliver() -> Result<()> {
    const N: usize = 200;
    let started = Instant::now();
    let dir = TempDir::new()?;
    let wat = |name: &str, hostile: &str| -> Result<std::path::PathBuf> {
        let path = dir.path().join(format!("{name}.wasm"));
        std::fs::write(&path, assemble(&wat_filter(hostile))?)?;
        Ok(path)
    };
    // (plugin, route, trap reason, dead-lettered rather than dropped)
    let hostile = [
        ("loop", "looping", "timeout", false),
        ("grow", "growing", "memory", true),
        ("panic", "panicking", "panic", false),
        ("recurse", "recursing", "stack_overflow", false),
        ("unreachable", "unreaching", "unreachable", false),
        ("bad-verdict", "misanswering", "bad_verdict", false),
    ];
    let mut plugins = String::new();
    plugins += &entry(
        "loop",
        "hostile",
        "config = { mode = \"loop\" }\ndeadline = \"50ms\"\non_failure = { trip_after = 1000 }",
    )?;
    plugins += &entry(
        "grow",
        "hostile",
        &format!("config = {{ mode = \"grow\" }}\nmemory = \"16MiB\"\n{NEVER_TRIP}"),
    )?;
    for mode in ["panic", "recurse"] {
        plugins += &entry(
            mode,
            "hostile",
            &format!("config = {{ mode = \"{mode}\" }}\n{NEVER_TRIP}"),
        )?;
    }
    plugins += &entry_at(
        "unreachable",
        &wat("unreachable", "unreachable")?,
        NEVER_TRIP,
    );
    plugins += &entry_at("bad-verdict", &wat("bad", WAT_WRONG_COUNT)?, NEVER_TRIP);
    plugins += &entry_at("wat-keep", &wat("keep", "")?, CALM);
    let mut routes = String::from(
        r#"
[[route]]
name = "plain"
match = "work.>"
to = ["out"]

[[route]]
name = "healthy-plugin"
match = "work.>"
filters = ["wat-keep"]
to = ["kept"]
"#,
    );
    for (plugin, route, _, dead_letter) in hostile {
        routes += &format!(
            "\n[[route]]\nname = \"{route}\"\nmatch = \"work.>\"\nfilters = [\"{plugin}\"]\nto = [\"out\"]\n"
        );
        if dead_letter {
            routes += "on_error = \"dead_letter\"\ndead_letter = \"dlq\"\n";
        }
    }
    let config = format!(
        "{HEAD}{}{}{}{}{routes}{plugins}",
        output("out"),
        output("kept"),
        output("dlq"),
        probe_route(&["out", "kept", "dlq"]),
    );
    let router = Router::start(&config)?;
    let mut out = Peer::sub(&router.output_endpoint("out")?, &[""])?;
    let mut kept = Peer::sub(&router.output_endpoint("kept")?, &[""])?;
    let mut dlq = Peer::sub(&router.output_endpoint("dlq")?, &[""])?;
    router.sync_subscribers("api", "probe", &mut [&mut out, &mut kept, &mut dlq])?;

    // Two requests: usually two batches, so two failed calls per route.
    let batch = |range: std::ops::Range<usize>| {
        range
            .map(|i| json!({ "topic": "work.item", "payload": i.to_string() }))
            .collect::<Vec<_>>()
    };
    publish_http(&router, batch(0..N / 2))?;
    publish_http(&router, batch(N / 2..N))?;

    let mut want: Vec<(&str, u64)> = vec![("plain", N as u64), ("healthy-plugin", N as u64)];
    want.extend(hostile.iter().map(|(_, route, _, _)| (*route, N as u64)));
    let s = settle(&router, &want)?;
    for route in ["plain", "healthy-plugin"] {
        let r = s.route(route);
        assert_eq!(
            (r.delivered, r.filtered, r.dropped),
            (N as u64, 0, 0),
            "{route}"
        );
    }
    for (plugin, route, reason, dead_letter) in hostile {
        let r = s.route(route);
        let (dead, dropped) = if dead_letter {
            (N as u64, 0)
        } else {
            (0, N as u64)
        };
        assert_eq!(
            (
                r.delivered,
                r.filtered,
                r.dead_lettered,
                r.plugin_error,
                r.dropped
            ),
            (0, 0, dead, dropped, dropped),
            "{route}: {r:?}"
        );
        let counted = traps(&s, plugin, reason);
        assert!(counted >= 1, "{plugin}: no {reason} trap");
        assert_eq!(
            all_traps(&s, plugin),
            counted,
            "{plugin}: every failure is a {reason}:\n{}",
            s.show("switchyard_plugin_traps_total")
        );
        assert!(calls(&s, plugin) >= counted, "{plugin}");
        println!(
            "{plugin}: {} calls, {counted} {reason} traps",
            calls(&s, plugin)
        );
        assert_eq!(
            s.get("switchyard_plugin_circuit_open", &[("plugin", plugin)]),
            0.0,
            "{plugin} never trips"
        );
    }
    assert_eq!(all_traps(&s, "wat-keep"), 0);

    // The router is up and the healthy routes delivered everything, once.
    let health = get(router.admin(), "/health")?;
    assert_eq!(health.status, 200, "{}", health.text());
    let numbers: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    for (what, sub) in [("plain", &mut out), ("healthy-plugin", &mut kept)] {
        let got = received(&router, sub)?;
        let payloads: Vec<&str> = got.iter().map(Msg::payload).collect();
        assert_eq!(payloads, numbers, "{what}");
    }
    let dead = received(&router, &mut dlq)?;
    let payloads: Vec<&str> = dead.iter().map(Msg::payload).collect();
    assert_eq!(payloads, numbers, "every failed batch is dead-lettered");
    for m in &dead {
        let a = attrs(m)?;
        assert_eq!(
            a.get("switchyard.dead_letter.route").map(String::as_str),
            Some("growing")
        );
        assert_eq!(
            a.get("switchyard.dead_letter.reason").map(String::as_str),
            Some("memory")
        );
    }

    // /v1/plugins names each failure's reason.
    let listed = admin_json(&router, "/v1/plugins")?;
    let now = router.scrape()?;
    for (plugin, route, reason, _) in hostile {
        let p = named(&listed, "plugins", plugin)?;
        assert_eq!(p["routes"], json!([route]));
        let reasons: Vec<&String> = p["traps"].as_object().context("traps")?.keys().collect();
        assert_eq!(reasons, [reason], "{plugin}: {p}");
        assert_eq!(p["traps"][reason], traps(&now, plugin, reason), "{plugin}");
        assert_eq!(p["tripped"], false);
    }
    assert_eq!(named(&listed, "plugins", "loop")?["deadline_ms"], 50);
    assert_eq!(
        named(&listed, "plugins", "grow")?["memory_bytes"],
        16u64 << 20
    );
    let health = get(router.admin(), "/health")?;
    assert_eq!(health.status, 200, "{}", health.text());
    println!(
        "hostile: {:?}, router RSS {} KiB",
        started.elapsed(),
        router.rss_kib()?
    );
    Ok(())
}

#[test]
fn a_failing_plugin_trips_its_circuit_then_fails_open_or_closed() -> Result<()> {
    const N: usize = 100;
    let started = Instant::now();
    // A backoff no test run outlasts: once open, the circuit stays open.
    let policy = |mode: &str| {
        format!(
            "config = {{ mode = \"panic\" }}\ndeadline = \"10s\"\non_failure = {{ mode = \"{mode}\", trip_after = 2, backoff = \"10m\" }}"
        )
    };
    let config = format!(
        r#"{HEAD}{}{}
[[route]]
name = "fails-open"
match = "trip.>"
filters = ["flaky-open"]
to = ["out"]

[[route]]
name = "fails-closed"
match = "trip.>"
filters = ["flaky-closed"]
to = ["out"]
{}{}"#,
        output("out"),
        probe_route(&["out"]),
        entry("flaky-open", "hostile", &policy("open"))?,
        entry("flaky-closed", "hostile", &policy("closed"))?,
    );
    let router = Router::start(&config)?;
    let mut sub = Peer::sub(&router.output_endpoint("out")?, &[""])?;
    router.sync_subscribers("api", "probe", &mut [&mut sub])?;
    let one = |i: usize| vec![json!({ "topic": "trip.x", "payload": i.to_string() })];
    let plugins = ["flaky-open", "flaky-closed"];

    // Two failed calls, one message each, then the circuits are open.
    for i in 0..2 {
        publish_http(&router, one(i))?;
        router.wait_scrape(
            &format!("failed call {}", i + 1),
            "switchyard_plugin",
            DEADLINE,
            |s| plugins.iter().all(|p| traps(s, p, "panic") == i as u64 + 1),
        )?;
    }
    let s = router.wait_scrape("both circuits open", "switchyard_plugin", DEADLINE, |s| {
        plugins
            .iter()
            .all(|p| s.get("switchyard_plugin_circuit_open", &[("plugin", p)]) == 1.0)
    })?;
    for p in plugins {
        assert_eq!(calls(&s, p), 2, "{p}");
    }

    // Now nothing calls them: fail-open passes everything, fail-closed
    // drops everything.
    publish_http(&router, (2..N).flat_map(one).collect())?;
    let s = settle(
        &router,
        &[("fails-open", N as u64), ("fails-closed", N as u64)],
    )?;
    let open = s.route("fails-open");
    assert_eq!(
        (
            open.delivered,
            open.filtered,
            open.plugin_error,
            open.dropped
        ),
        (N as u64 - 2, 0, 2, 2),
        "{open:?}"
    );
    let closed = s.route("fails-closed");
    assert_eq!(
        (closed.delivered, closed.plugin_error, closed.dropped),
        (0, N as u64, N as u64),
        "{closed:?}"
    );
    for p in plugins {
        assert_eq!(calls(&s, p), 2, "{p} is not called while open");
        assert_eq!(all_traps(&s, p), 2, "{p}");
        assert_eq!(
            s.get("switchyard_plugin_circuit_open", &[("plugin", p)]),
            1.0
        );
    }
    let got = received(&router, &mut sub)?;
    let payloads: Vec<&str> = got.iter().map(Msg::payload).collect();
    let want: Vec<String> = (2..N).map(|i| i.to_string()).collect();
    assert_eq!(payloads, want, "fail-open passed everything after the trip");

    let listed = admin_json(&router, "/v1/plugins")?;
    for (p, mode) in [("flaky-open", "fail-open"), ("flaky-closed", "fail-closed")] {
        let entry = named(&listed, "plugins", p)?;
        assert_eq!(entry["tripped"], true, "{p}");
        assert_eq!(entry["on_failure"], mode);
        assert_eq!(entry["traps"], json!({ "panic": 2 }));
    }
    println!("circuit breaker: {:?}", started.elapsed());
    Ok(())
}

#[test]
fn a_tripped_fail_open_router_sends_to_the_routes_outputs() -> Result<()> {
    const N: usize = 10;
    let dir = TempDir::new()?;
    let path = dir.path().join("router.wasm");
    std::fs::write(&path, assemble(&wat_router())?)?;
    let config = format!(
        r#"{HEAD}{}{}
[[route]]
name = "split"
match = "*.x"
router = "flaky-router"
to = ["out"]
{}"#,
        output("out"),
        probe_route(&["out"]),
        entry_at(
            "flaky-router",
            &path,
            "deadline = \"10s\"\non_failure = { mode = \"open\", trip_after = 1, backoff = \"10m\" }"
        ),
    );
    let router = Router::start(&config)?;
    let mut sub = Peer::sub(&router.output_endpoint("out")?, &[""])?;
    router.sync_subscribers("api", "probe", &mut [&mut sub])?;
    let msg = |topic: &str, i: usize| json!({ "topic": topic, "payload": i.to_string() });

    // A batch it routes (default: the route's `to`), then one it traps on,
    // which opens its circuit.
    publish_http(&router, vec![msg("ok.x", 0)])?;
    settle(&router, &[("split", 1)])?;
    publish_http(&router, vec![msg("h.x", 1)])?;
    let s = settle(&router, &[("split", 2)])?;
    assert_eq!(
        s.get(
            "switchyard_plugin_circuit_open",
            &[("plugin", "flaky-router")]
        ),
        1.0
    );
    assert_eq!(traps(&s, "flaky-router", "unreachable"), 1);

    // Fail-open: what comes next goes to the route's outputs unrouted.
    publish_http(&router, (2..2 + N).map(|i| msg("ok.x", i)).collect())?;
    let s = settle(&router, &[("split", 2 + N as u64)])?;
    let r = s.route("split");
    assert_eq!(
        (r.delivered, r.plugin_error, r.dropped),
        (1 + N as u64, 1, 1),
        "{r:?}"
    );
    assert_eq!(calls(&s, "flaky-router"), 2, "not called while open");
    let got = received(&router, &mut sub)?;
    let payloads: Vec<&str> = got.iter().map(Msg::payload).collect();
    let want: Vec<String> = std::iter::once(0)
        .chain(2..2 + N)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(payloads, want);
    Ok(())
}

/// How a refused case's route uses its plugin.
#[derive(Debug, Clone, Copy)]
enum Use {
    Filter,
    Router,
}

/// A plugin the router must refuse at load.
struct Refused {
    name: &'static str,
    /// The `[[plugin]]` entry.
    entry: String,
    used_as: Use,
    /// Text the problem must contain.
    needle: String,
}

/// Every kind of plugin the router refuses at load, with its files in
/// `dir`.
fn refused_cases(dir: &Path) -> Result<Vec<Refused>> {
    let write = |name: &str, bytes: &[u8]| -> Result<std::path::PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    };
    let good = wat_filter("");
    let abi2 = good.replace(
        r#"(func (export "switchyard_abi_version") (result i32) (i32.const 1))"#,
        r#"(func (export "switchyard_abi_version") (result i32) (i32.const 2))"#,
    );
    let no_batch = good.replace(r#"(export "switchyard_batch")"#, "");
    let wasi = good.replace(
        "(memory (export",
        "(import \"wasi_snapshot_preview1\" \"fd_write\" (func (param i32 i32 i32 i32) (result i32)))\n  (memory (export",
    );
    ensure!(
        abi2 != good && no_batch != good && wasi != good,
        "the WAT edits apply"
    );
    // Past the 16 MiB cap, with a valid header; sparse, so cheap to write.
    let big = dir.join("big.wasm");
    let file = std::fs::File::create(&big)?;
    std::io::Write::write_all(&mut &file, b"\0asm\x01\0\0\0")?;
    file.set_len((16 << 20) + 1)?;

    let at = |name: &'static str, path: &Path, used_as: Use, needle: &str| Refused {
        name,
        entry: entry_at(name, path, ""),
        used_as,
        needle: needle.to_owned(),
    };
    Ok(vec![
        at(
            "abi-two",
            &write("abi2.wasm", &assemble(&abi2)?)?,
            Use::Filter,
            "ABI version 2, but this router speaks version 1",
        ),
        at(
            "no-batch",
            &write("no_batch.wasm", &assemble(&no_batch)?)?,
            Use::Filter,
            "export \"switchyard_batch\" is missing",
        ),
        at(
            "wasi",
            &write("wasi.wasm", &assemble(&wasi)?)?,
            Use::Filter,
            "forbidden import wasi_snapshot_preview1.fd_write",
        ),
        at(
            "too-big",
            &big,
            Use::Filter,
            "module is 16777217 bytes, over the 16777216 byte limit",
        ),
        at(
            "not-wasm",
            &write("notes.wasm", b"these are notes, not a module\n")?,
            Use::Filter,
            "not a core WebAssembly module (no \\0asm magic at the start)",
        ),
        at(
            "wat-text",
            &write("text.wasm", wat_filter("").trim_start().as_bytes())?,
            Use::Filter,
            "this is WebAssembly text; build it to a binary .wasm",
        ),
        at(
            "missing",
            &dir.join("nowhere.wasm"),
            Use::Filter,
            "No such file or directory",
        ),
        Refused {
            name: "refuses-init",
            entry: entry("refuses-init", "hostile", r#"config = { mode = "panic_init" }"#)?,
            used_as: Use::Filter,
            needle: "this fixture refuses to start".into(),
        },
        Refused {
            name: "typo",
            entry: entry(
                "typo",
                "attr_filter",
                r#"config = { key = "level", dney = ["debug"] }"#,
            )?,
            used_as: Use::Filter,
            needle: "unknown field `dney`".into(),
        },
        Refused {
            name: "router-as-filter",
            entry: entry(
                "router-as-filter",
                "content_router",
                r#"config = { rules = [] }"#,
            )?,
            used_as: Use::Filter,
            needle: "is a router plugin, but route \"r-router-as-filter\" uses it in `filters`, which takes filter plugins".into(),
        },
        Refused {
            name: "filter-as-router",
            entry: entry(
                "filter-as-router",
                "attr_filter",
                r#"config = { key = "level" }"#,
            )?,
            used_as: Use::Router,
            needle: "is a filter plugin, but route \"r-filter-as-router\" uses it in `router`, which takes router plugins".into(),
        },
    ])
}

/// A config whose routes use each of `cases`' plugins (route `r-NAME`).
fn refused_config(cases: &[&Refused]) -> String {
    let mut text = format!("{HEAD}{}", output("out"));
    for (i, case) in cases.iter().enumerate() {
        let uses = match case.used_as {
            Use::Filter => format!("filters = [\"{}\"]", case.name),
            Use::Router => format!("router = \"{}\"", case.name),
        };
        text += &format!(
            "\n[[route]]\nname = \"r-{}\"\nmatch = \"t{i}.>\"\n{uses}\nto = [\"out\"]\n",
            case.name
        );
    }
    for case in cases {
        text += &case.entry;
    }
    text
}

/// The 1-based line of `name`'s `path = ...` in `text`.
fn path_line(text: &str, name: &str) -> Result<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == format!("name = \"{name}\""))
        .with_context(|| format!("no plugin {name:?} in the config"))?;
    let path = lines[at..]
        .iter()
        .position(|l| l.starts_with("path = "))
        .context("no path line")?;
    Ok(at + path + 1)
}

/// Checks `stderr` has the problem of `case` in `file` (as
/// `file:line:col: plugin "name": ...`, at its `path` value).
fn assert_problem(stderr: &str, file: &Path, text: &str, case: &Refused) -> Result<()> {
    let line = path_line(text, case.name)?;
    let prefix = format!("{}:{line}:8: plugin \"{}\": ", file.display(), case.name);
    let Some(found) = stderr.lines().find(|l| l.starts_with(&prefix)) else {
        bail!("no line starting {prefix:?} in stderr:\n{stderr}");
    };
    ensure!(
        found.contains(&case.needle),
        "{found:?} should contain {:?}",
        case.needle
    );
    Ok(())
}

#[test]
fn plugins_that_cannot_load_make_run_and_validate_exit_2_naming_them() -> Result<()> {
    let started = Instant::now();
    let dir = TempDir::new()?;
    let cases = refused_cases(dir.path())?;
    let limit = Duration::from_secs(60);

    for (i, case) in cases.iter().enumerate() {
        let text = refused_config(&[case]);
        let file = dir.write(&format!("case-{i}.toml"), &text)?;
        let exited = cli::run(
            ["run".as_ref(), "--config".as_ref(), file.as_os_str()],
            limit,
        )?;
        assert_eq!(
            exited.code(),
            Some(2),
            "{}: run should refuse the config; stderr:\n{}",
            case.name,
            exited.stderr
        );
        assert_problem(&exited.stderr, &file, &text, case)
            .with_context(|| format!("switchyard run, case {}", case.name))?;
    }

    // validate loads the plugins too, and reports every problem at once.
    let all: Vec<&Refused> = cases.iter().collect();
    let text = refused_config(&all);
    let file = dir.write("all.toml", &text)?;
    let exited = cli::run(
        ["validate".as_ref(), "--config".as_ref(), file.as_os_str()],
        limit,
    )?;
    assert_eq!(exited.code(), Some(2), "stderr:\n{}", exited.stderr);
    for case in &cases {
        assert_problem(&exited.stderr, &file, &text, case)
            .with_context(|| format!("switchyard validate, case {}", case.name))?;
    }
    let problems = exited
        .stderr
        .lines()
        .filter(|l| l.starts_with(&format!("{}:", file.display())))
        .count();
    assert_eq!(
        problems,
        cases.len(),
        "one problem each:\n{}",
        exited.stderr
    );

    // A config whose plugins all load validates.
    let good = format!(
        "{HEAD}{}\n[[route]]\nname = \"r\"\nmatch = \"t.>\"\nfilters = [\"ok\"]\nrouter = \"by-content\"\nto = [\"out\"]\n{}{}",
        output("out"),
        entry_at(
            "ok",
            &{
                let p = dir.path().join("keep.wasm");
                std::fs::write(&p, assemble(&wat_filter(""))?)?;
                p
            },
            ""
        ),
        entry(
            "by-content",
            "content_router",
            r#"config = { rules = [{ topic = "t.a", to = ["out"] }] }"#
        )?,
    );
    let file = dir.write("good.toml", &good)?;
    let exited = cli::run(
        ["validate".as_ref(), "--config".as_ref(), file.as_os_str()],
        limit,
    )?;
    assert_eq!(
        exited.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        exited.stdout,
        exited.stderr
    );
    assert!(
        exited.stdout.contains("ok (") && exited.stdout.contains("2 plugins"),
        "{}",
        exited.stdout
    );
    println!("refused at load: {:?}", started.elapsed());
    Ok(())
}

#[test]
fn a_plugin_path_is_resolved_against_the_config_files_directory() -> Result<()> {
    // Not the working directory: the router runs from its own temp dir,
    // the config names the plugin relative to where the config is.
    let dir = TempDir::new()?;
    std::fs::create_dir_all(dir.path().join("conf/wasm"))?;
    std::fs::copy(
        plugins::wasm("attr_filter")?,
        dir.path().join("conf/wasm/f.wasm"),
    )?;
    let text = format!(
        "{HEAD}{}\n[[route]]\nname = \"r\"\nmatch = \"t.>\"\nfilters = [\"f\"]\nto = [\"out\"]\n\n[[plugin]]\nname = \"f\"\npath = \"wasm/f.wasm\"\nconfig = {{ key = \"level\" }}\n",
        output("out")
    );
    let file = dir.path().join("conf/switchyard.toml");
    std::fs::write(&file, text)?;
    let validate = |config: &Path| {
        cli::run(
            ["validate".as_ref(), "--config".as_ref(), config.as_os_str()],
            Duration::from_secs(60),
        )
    };
    let exited = validate(&file)?;
    assert_eq!(exited.code(), Some(0), "stderr:\n{}", exited.stderr);
    // The same file one directory up no longer finds it.
    let moved = dir.path().join("switchyard.toml");
    std::fs::rename(&file, &moved)?;
    let exited = validate(&moved)?;
    assert_eq!(exited.code(), Some(2), "stderr:\n{}", exited.stderr);
    assert!(
        exited.stderr.contains("wasm/f.wasm: No such file"),
        "{}",
        exited.stderr
    );
    Ok(())
}
