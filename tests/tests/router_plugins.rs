//! Wasm plugins in routes, end to end over real sockets against the real
//! `switchyard` binary: filtering, rewriting, content routing with a
//! dead-letter output, filter chains beside a plain route, and the admin
//! API's view of it all. Hostile plugins and circuit breakers are in
//! `router_plugins_hostile.rs`, modules refused at load in
//! `router_plugins_refused.rs`; the shared pieces in
//! `support/router/plugin_cases.rs`.
//!
//! The plugins are built by the test setup (`support::router::plugins`,
//! once per test binary, into `target/plugin-fixtures`); hand-written
//! WebAssembly-text filters are assembled here. Every count that can be
//! counted is asserted exactly, and every route obeys
//! `offered = delivered + filtered + dead_lettered + dropped + depth`.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use switchyard_tests::router::Router;
use switchyard_tests::router::peer::{Msg, Peer};
use switchyard_tests::router::plugin_cases::*;
use switchyard_tests::router::plugins::entry;

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
