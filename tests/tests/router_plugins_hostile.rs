//! Hostile plugins end to end: a loop, a memory bomb, a panic, deep
//! recursion, `unreachable` and broken verdicts, each on its own route next
//! to healthy routes fed by the same input; the router stays up, the healthy
//! routes deliver everything, each failure is counted under its reason.
//! Then circuit breakers failing open and closed, and a tripped fail-open
//! routing plugin. Shared pieces: `support/router/plugin_cases.rs`.

use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;
use switchyard_tests::router::http::get;
use switchyard_tests::router::peer::{Msg, Peer};
use switchyard_tests::router::plugin_cases::*;
use switchyard_tests::router::plugins::{
    WAT_WRONG_COUNT, assemble, entry, entry_at, wat_filter, wat_router,
};
use switchyard_tests::router::{DEADLINE, Router, TempDir};

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
