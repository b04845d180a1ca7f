//! The `switchyard plugin` command helpers: `new` scaffolds a crate that
//! builds on the first try, `test` runs JSONL through a plugin, `inspect`
//! reports what a module is.

use switchyard::plugin::inspect;
use switchyard::plugin::tooling::{self, SdkSource, Summary};

use super::fixtures::{self, assemble, engine, load, wat_filter};

/// Runs `input` (JSON lines) through the plugin as `switchyard plugin
/// test` does: its summary, its output, and the output's lines parsed.
fn run_lines(
    p: &switchyard::plugin::Plugin,
    input: &str,
) -> (Summary, String, Vec<serde_json::Value>) {
    let mut out = Vec::new();
    let summary = tooling::run_jsonl(p, input.as_bytes(), &mut out, 16).expect("runs");
    let text = String::from_utf8(out).expect("utf8");
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    (summary, text, lines)
}

#[test]
fn plugin_test_prints_one_verdict_per_line() {
    let (engine, _) = engine();
    let p = load(
        &engine,
        "rw",
        "topic_rewrite",
        r#"{"template":"out.{json.kind}"}"#,
        fixtures::limits(),
    );
    let input = concat!(
        r#"{"topic":"a","payload":{"kind":"x"}}"#,
        "\n",
        r#"{"topic":"b","payload":"no json","attributes":{"k":"v"}}"#,
        "\n",
        "\n",
        r#"{"topic":"bad topic"}"#,
        "\n",
        "not json\n",
    );
    let (summary, text, lines) = run_lines(&p, input);
    assert_eq!(
        summary,
        Summary {
            messages: 2,
            bad_lines: 2,
            passed: 2,
            stopped: 0,
            failed: 0
        }
    );
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0]["verdict"], "rewrite");
    assert_eq!(lines[0]["new_topic"], "out.x");
    assert_eq!(lines[1]["verdict"], "keep");
    assert_eq!(lines[2]["line"], 4);
    assert!(lines[2]["error"].as_str().expect("error").contains("topic"));
    assert_eq!(lines[3]["line"], 5);
}

#[test]
fn plugin_test_runs_requests_through_edge_reply() {
    // The SDK-built plugin sees which messages are requests (the batch
    // flag) and its reply and reject verdicts decode and print.
    let (engine, _) = engine();
    let p = load(
        &engine,
        "edge",
        "edge_reply",
        r#"{"replies":[{"match":"status.*","payload":{"status":"ok","asked":"${topic.1}"}}],
            "deny":[{"match":"admin.>","reason":"admin is internal"}]}"#,
        fixtures::limits(),
    );
    let input = concat!(
        r#"{"topic":"status.health","request":true}"#,
        "\n",
        r#"{"topic":"status.health"}"#,
        "\n",
        r#"{"topic":"admin.users","request":true}"#,
        "\n",
        r#"{"topic":"orders.new","request":true}"#,
        "\n",
        r#"{"topic":"x","request":"yes"}"#,
        "\n",
    );
    let (summary, text, lines) = run_lines(&p, input);
    assert_eq!(
        summary,
        Summary {
            messages: 4,
            bad_lines: 1,
            passed: 2,
            stopped: 2,
            failed: 0
        }
    );
    assert_eq!(lines[0]["verdict"], "reply", "{text}");
    let reply: serde_json::Value =
        serde_json::from_str(lines[0]["payload"].as_str().expect("text")).expect("json reply");
    assert_eq!(
        reply,
        serde_json::json!({"status": "ok", "asked": "health"})
    );
    assert_eq!(lines[1]["verdict"], "keep", "not a request: {text}");
    assert_eq!(lines[2]["verdict"], "reject");
    assert_eq!(lines[2]["reason"], "admin is internal");
    assert_eq!(lines[3]["verdict"], "keep");
    assert!(
        lines[4]["error"]
            .as_str()
            .expect("error")
            .contains("request must be true or false"),
        "{text}"
    );
}

#[test]
fn plugin_test_reports_failed_batches() {
    let (engine, _) = engine();
    let bytes = assemble(&wat_filter("unreachable"));
    let p = engine
        .load(
            "w",
            switchyard::plugin::Source::Bytes(&bytes),
            "{}",
            fixtures::limits(),
        )
        .expect("loads");
    let input = "{\"topic\":\"hostile\"}\n{\"topic\":\"fine\"}\n";
    let mut out = Vec::new();
    let summary = tooling::run_jsonl(&p, input.as_bytes(), &mut out, 1).expect("runs");
    assert_eq!(summary.failed, 1);
    assert_eq!(summary.passed, 1);
    let text = String::from_utf8(out).expect("utf8");
    assert!(text.contains(r#""reason":"unreachable""#), "{text}");
}

#[test]
fn inspect_reports_version_kind_exports_and_imports() {
    let bytes = std::fs::read(fixtures::wasm("content_router")).expect("built");
    let report = inspect(&bytes).expect("inspects");
    assert_eq!(report.abi_version, Some(1));
    assert_eq!(report.kind, Some(2));
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let text = tooling::inspect_text(&bytes).expect("text");
    assert!(text.contains("kind:        router"), "{text}");
    assert!(text.contains("switchyard_batch"), "{text}");

    let bad = wat_filter("nop").replace(
        "(memory (export",
        r#"(import "env" "clock" (func (result i64)))
  (memory (export"#,
    );
    let report = inspect(&assemble(&bad)).expect("inspects");
    assert!(
        report.problems.iter().any(|p| p.contains("env.clock")),
        "{:?}",
        report.problems
    );
    assert!(tooling::inspect_text(b"nope").is_err());
}

#[test]
fn scaffolded_plugins_build_on_the_first_try() {
    // The example crate next to the plugins builds as part of the fixtures.
    assert!(fixtures::wasm("hello_filter").exists());

    assert!(tooling::scaffold("Bad Name", &SdkSource::Version("0.1".into())).is_err());
    let dir = std::env::temp_dir().join(format!("switchyard-scaffold-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sdk = fixtures::repo().join("sdk");
    let root = tooling::write_scaffold(
        &dir,
        "my-filter",
        &SdkSource::Path(sdk.to_string_lossy().into_owned()),
    )
    .expect("scaffolds");
    assert!(tooling::write_scaffold(&dir, "my-filter", &SdkSource::Version("0.1".into())).is_err());
    let out = tooling::build_wasm(&root, &fixtures::target_dir()).expect("builds first time");
    let wasm = out.join("my_filter.wasm");
    let (engine, _) = engine();
    let p = engine
        .load(
            "scaffolded",
            switchyard::plugin::Source::Path(&wasm),
            r#"{"drop_level":"debug"}"#,
            fixtures::limits(),
        )
        .expect("the scaffolded plugin loads");
    let mut verdicts = Vec::new();
    let m = super::host::with_attr(super::host::msg("app.log", "x"), "level", "debug");
    p.instance().run_filter(&[m], &mut verdicts).expect("runs");
    assert_eq!(verdicts, [switchyard::plugin::FilterVerdict::Drop]);
    let _ = std::fs::remove_dir_all(&dir);
}
