//! The host with well-behaved plugins: first-party plugins, the WAT plugin
//! written without the SDK, verdicts, kinds, config errors, the cache and
//! the circuit breaker's recovery.

use std::time::Duration;

use bytes::Bytes;
use switchyard::message::{Message, Publisher, Topic};
use switchyard::plugin::{
    self, Engine, Error, FailMode, FailurePolicy, FilterVerdict, Kind, Limits, PluginError,
    RouteVerdict, Source, TrapReason,
};

use super::fixtures::{self, assemble, engine, load, wat_filter};

pub(super) fn msg(topic: &str, payload: &str) -> Message {
    Message::new(
        Topic::try_from(topic).expect("valid topic"),
        Bytes::copy_from_slice(payload.as_bytes()),
        Publisher::new("test", ""),
    )
}

pub(super) fn with_attr(mut m: Message, k: &str, v: &str) -> Message {
    m.attributes.insert(k.into(), v.into());
    m
}

#[test]
fn json_filter_keeps_matching_messages_in_batches() {
    let (engine, registry) = engine();
    let p = load(
        &engine,
        "hot",
        "json_filter",
        r#"{"path":"sensor.temp","op":"gt","value":30}"#,
        fixtures::limits(),
    );
    assert_eq!(p.kind(), Kind::Filter);
    let mut inst = p.instance();
    let msgs: Vec<Message> = (0..300)
        .map(|i| msg("sensors.a.temp", &format!(r#"{{"sensor":{{"temp":{i}}}}}"#)))
        .collect();
    let mut out = Vec::new();
    inst.run_filter(&msgs, &mut out).expect("runs");
    assert_eq!(out.len(), 300);
    for (i, v) in out.iter().enumerate() {
        let want = if i > 30 {
            FilterVerdict::Keep
        } else {
            FilterVerdict::Drop
        };
        assert_eq!(*v, want, "message {i}");
    }
    // 300 messages over the 256-message cap: two guest calls.
    assert_eq!(p.calls(), 2);
    let text = registry.encode();
    assert!(
        text.contains(r#"switchyard_plugin_calls_total{plugin="hot"} 2"#),
        "{text}"
    );
    assert!(text.contains(r#"switchyard_plugin_duration_seconds_count{plugin="hot"} 2"#));
}

#[test]
fn topic_rewrite_rewrites_and_attr_filter_drops() {
    let (engine, _) = engine();
    let rw = load(
        &engine,
        "rw",
        "topic_rewrite",
        r#"{"template":"site.{attr.site}.{topic.1}"}"#,
        fixtures::limits(),
    );
    let mut out = Vec::new();
    let m = with_attr(msg("sensors.l1.temp", "{}"), "site", "42");
    rw.instance()
        .run_filter(std::slice::from_ref(&m), &mut out)
        .expect("runs");
    let rewritten = out.pop().expect("one verdict").apply(m).expect("kept");
    assert_eq!(rewritten.topic.as_str(), "site.42.l1");

    let af = load(
        &engine,
        "af",
        "attr_filter",
        r#"{"key":"level","deny":["debug"]}"#,
        fixtures::limits(),
    );
    let msgs = [
        with_attr(msg("a", ""), "level", "debug"),
        with_attr(msg("a", ""), "level", "info"),
    ];
    af.instance().run_filter(&msgs, &mut out).expect("runs");
    assert_eq!(out, [FilterVerdict::Drop, FilterVerdict::Keep]);
}

#[test]
fn content_router_names_outputs() {
    let (engine, _) = engine();
    let r = load(
        &engine,
        "cr",
        "content_router",
        r#"{"rules":[{"json":{"path":"v","op":"ge","value":5},"to":["alerts","log"]}],"otherwise":"dead_letter"}"#,
        fixtures::limits(),
    );
    assert_eq!(r.kind(), Kind::Router);
    let mut inst = r.instance();
    let mut out = Vec::new();
    inst.run_router(&[msg("a", r#"{"v":7}"#), msg("a", r#"{"v":1}"#)], &mut out)
        .expect("runs");
    match &out[0] {
        RouteVerdict::Outputs(names) => {
            let names: Vec<&str> = names.iter().map(|n| &**n).collect();
            assert_eq!(names, ["alerts", "log"]);
        }
        other => panic!("expected outputs, got {other:?}"),
    }
    assert_eq!(out[1], RouteVerdict::DeadLetter);
    // A router is not a filter.
    let err = inst
        .run_filter(&[msg("a", "")], &mut Vec::new())
        .unwrap_err();
    assert!(matches!(err, PluginError::WrongKind { .. }), "{err}");
    let err = engine
        .load_kind(
            "cr2",
            Source::Path(&fixtures::wasm("content_router")),
            r#"{"rules":[]}"#,
            fixtures::limits(),
            Kind::Filter,
        )
        .unwrap_err();
    assert!(err.to_string().contains("is a router"), "{err}");
}

#[test]
fn a_plugin_written_in_wat_without_the_sdk_works() {
    let (engine, _) = engine();
    let bytes = assemble(&wat_filter("unreachable"));
    let p = engine
        .load("wat", Source::Bytes(&bytes), "{}", fixtures::limits())
        .expect("the WAT plugin loads");
    let msgs = [
        with_attr(msg("debug.x", "p"), "a", "b"),
        msg("info.x", "payload"),
        msg("dev", ""),
    ];
    let mut out = Vec::new();
    p.instance().run_filter(&msgs, &mut out).expect("runs");
    assert_eq!(
        out,
        [
            FilterVerdict::Drop,
            FilterVerdict::Keep,
            FilterVerdict::Drop
        ]
    );
}

#[test]
fn bad_configs_are_refused_at_load_with_the_plugins_message() {
    let (engine, _) = engine();
    let err = engine
        .load(
            "jf",
            Source::Path(&fixtures::wasm("json_filter")),
            r#"{"path":"a","op":"between"}"#,
            fixtures::limits(),
        )
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Init { .. }), "{text}");
    assert!(text.contains("jf") && text.contains("between"), "{text}");
}

#[test]
fn compiled_modules_are_cached_on_disk_and_corruption_is_survived() {
    let dir = std::env::temp_dir().join(format!("switchyard-plugin-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let registry = switchyard::metrics::Registry::new();
    let engine = Engine::new(
        plugin::Config {
            cache_dir: Some(dir.clone()),
            ..plugin::Config::default()
        },
        &registry,
    )
    .expect("engine");
    let path = fixtures::wasm("attr_filter");
    let cfg = r#"{"key":"k","deny":["x"]}"#;
    let first = engine
        .load("a", Source::Path(&path), cfg, fixtures::limits())
        .expect("loads");
    assert!(!first.from_cache());
    let second = engine
        .load("b", Source::Path(&path), cfg, fixtures::limits())
        .expect("loads");
    assert!(second.from_cache(), "the second load deserializes");
    let mut out = Vec::new();
    second
        .instance()
        .run_filter(&[with_attr(msg("t", ""), "k", "x")], &mut out)
        .expect("cached module runs");
    assert_eq!(out, [FilterVerdict::Drop]);

    // Corrupt every entry: the next load recompiles instead of trusting it.
    for entry in std::fs::read_dir(&dir).expect("cache dir") {
        let p = entry.expect("entry").path();
        let mut bytes = std::fs::read(&p).expect("read");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&p, bytes).expect("write");
    }
    let third = engine
        .load("c", Source::Path(&path), cfg, fixtures::limits())
        .expect("loads");
    assert!(!third.from_cache(), "a corrupted entry is recompiled");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn a_tripped_plugin_recovers_after_its_backoff() {
    let (engine, _) = engine();
    let bytes = assemble(&wat_filter("unreachable"));
    let limits = Limits {
        on_failure: FailurePolicy {
            mode: FailMode::Open,
            trip_after: 2,
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(60),
        },
        ..fixtures::limits()
    };
    let p = engine
        .load("flaky", Source::Bytes(&bytes), "{}", limits)
        .expect("loads");
    let mut inst = p.instance();
    let mut out = Vec::new();
    for _ in 0..2 {
        let e = inst
            .run_filter(&[msg("hostile", "")], &mut out)
            .unwrap_err();
        assert_eq!(e.reason(), Some(TrapReason::Unreachable));
    }
    assert!(p.is_tripped());
    let e = inst.run_filter(&[msg("fine", "")], &mut out).unwrap_err();
    assert!(
        matches!(
            e,
            PluginError::CircuitOpen {
                mode: FailMode::Open,
                ..
            }
        ),
        "{e}"
    );
    tokio::time::advance(Duration::from_secs(11)).await;
    inst.run_filter(&[msg("fine", "")], &mut out)
        .expect("the trial call after the backoff runs and succeeds");
    assert!(!p.is_tripped());
    assert_eq!(p.traps(TrapReason::Unreachable), 2);
}
