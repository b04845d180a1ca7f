//! The `switchyard` command line: `validate` reports every mistake with its
//! line and exits non-zero, accepts every shipped config, and binds
//! nothing; the `plugin` commands scaffold a crate that builds, test and
//! inspect the result, and name what is wrong with bad arguments.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::plugins::fixtures;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the router crate sits in the workspace")
        .to_path_buf()
}

/// A scratch file under the target dir, named per test.
fn scratch(name: &str, text: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli");
    std::fs::create_dir_all(&dir).expect("create the scratch dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the scratch config");
    path
}

fn validate(path: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["validate", "--config"]).arg(path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run switchyard validate")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The 1-based line of `text` holding `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} is in the config"))
        + 1
}

const FIVE_MISTAKES: &str = r#"[router]
name = "site-1"
admin = "127.0.0.1:9464"

[[input]]
name = "sensors"
kind = "zmq-sub"
bind = "tcp://127.0.0.1:5555"
hearbeat_interval = "10s"

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:8080"
max_body = "lots"

[[output]]
name = "dashboard"
kind = "zmq-pub"
bind = "tcp://127.0.0.1:6555"
handshake_timeout = "5 secs"

[[route]]
name = "telemetry"
match = "sensors.>.temp"
to = ["dashboard"]

[[route]]
name = "jobs"
match = "jobs.>"
to = ["dashbord"]
"#;

#[test]
fn validate_lists_five_mistakes_with_their_lines_and_fails() {
    let path = scratch("five-mistakes.toml", FIVE_MISTAKES);
    let out = validate(&path, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr:\n{stderr}");
    let file = path.display().to_string();
    let problems: Vec<&str> = stderr.lines().filter(|l| l.starts_with(&file)).collect();
    let want = [
        ("hearbeat_interval", "unknown field"),
        ("\"lots\"", "max_body"),
        ("\"5 secs\"", "handshake_timeout"),
        ("sensors.>.temp", "`>`"),
        ("dashbord", "is not defined"),
    ];
    assert_eq!(
        problems.len(),
        want.len(),
        "one line per problem:\n{stderr}"
    );
    for (needle, reason) in want {
        let prefix = format!("{file}:{}:", line_of(FIVE_MISTAKES, needle));
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(&prefix) && p.contains(reason)),
            "no problem at {prefix} mentioning {reason:?}:\n{stderr}"
        );
    }
}

/// What the shipped configs (`config/multi-site.toml`, `config/webhook.toml`,
/// ...) require from the environment.
const SITE_ENV: &[(&str, &str)] = &[
    ("SITE_ID", "42"),
    ("LINE1_PASSWORD", "line1-secret"),
    ("LINE2_PASSWORD", "line2-secret"),
    ("UPLINK_PASSWORD", "uplink-secret"),
    ("NATS_TOKEN", "nats-token"),
    ("HOOK_TOKEN", "hook-token"),
    ("HOOK_SECRET", "hook-secret"),
];

/// Config files: `*.toml` other than Cargo manifests, below `dir`,
/// skipping build output.
fn configs(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            // config/keys holds the example CURVE keys and clients file
            // (TOML, but not a router config).
            if path
                .file_name()
                .is_some_and(|n| n != "target" && n != "keys")
            {
                configs(&path, found);
            }
        } else if path.extension().is_some_and(|e| e == "toml")
            && path.file_name().is_some_and(|n| n != "Cargo.toml")
        {
            found.push(path);
        }
    }
}

/// Builds the first-party plugins where the shipped configs look for them
/// (`plugins/target`, as `./dev run` builds them), so the configs' plugins
/// load.
fn shipped_plugins() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        switchyard::plugin::tooling::ensure_wasm_target().expect("the wasm32 target installs");
        let plugins = repo().join("plugins");
        switchyard::plugin::tooling::build_wasm(&plugins, &plugins.join("target"))
            .unwrap_or_else(|e| panic!("building plugins/: {e}"));
    });
}

#[test]
fn every_shipped_config_validates() {
    shipped_plugins();
    let mut found = Vec::new();
    configs(&repo().join("config"), &mut found);
    let in_config = found.len();
    configs(&repo().join("examples"), &mut found);
    assert!(in_config >= 4, "the configs in config/: {found:?}");
    assert!(
        found.iter().any(|p| p.ends_with("config/switchyard.toml")),
        "{found:?}"
    );
    for path in &found {
        let out = validate(path, SITE_ENV);
        assert!(
            out.status.success(),
            "{} does not validate:\n{}",
            path.display(),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains(": ok ("),
            "{}",
            text(&out.stdout)
        );
    }
}

#[test]
fn multi_site_needs_its_environment() {
    let path = repo().join("config/multi-site.toml");
    let out = validate(&path, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("SITE_ID"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn validate_binds_nothing() {
    // The input's port is taken: `run` could not bind it; `validate` does
    // not try, so the config is fine.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = taken.local_addr().expect("local addr").port();
    let path = scratch(
        "taken-port.toml",
        &format!(
            r#"[router]
admin = "127.0.0.1:0"

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:{port}"

[[output]]
name = "out"
kind = "zmq-pub"
bind = "tcp://127.0.0.1:0"

[[route]]
name = "all"
match = ">"
to = ["out"]
"#
        ),
    );
    let out = validate(&path, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    drop(taken);
}

#[test]
fn version_and_missing_file() {
    let out = Command::new(BIN)
        .arg("--version")
        .output()
        .expect("run switchyard --version");
    assert!(out.status.success());
    assert!(
        text(&out.stdout).starts_with(&format!("switchyard {}", env!("CARGO_PKG_VERSION"))),
        "{}",
        text(&out.stdout)
    );
    let out = validate(Path::new("no/such/file.toml"), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no/such/file.toml"),
        "{}",
        text(&out.stderr)
    );
}

fn switchyard(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run switchyard {args:?}: {e}"))
}

/// `switchyard plugin test` with `input` on stdin.
fn plugin_test_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(["plugin", "test"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run switchyard plugin test");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())
        .expect("write the messages");
    child
        .wait_with_output()
        .expect("switchyard plugin test ends")
}

/// A fresh directory under the target dir, named per test.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("cli")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the scratch dir");
    dir
}

/// The JSON lines of a command's stdout.
fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("scratch paths are UTF-8")
}

/// The author's path, end to end: scaffold, build (the one wasm32 build of
/// this file), test against the sample messages, inspect.
#[test]
fn plugin_new_build_test_inspect() {
    let dir = scratch_dir("plugin-e2e");
    let out = switchyard(&["plugin", "new", "my-filter", "--dir", path_str(&dir)]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let root = dir.join("my-filter");
    assert!(
        stdout.starts_with(&format!(
            "created filter plugin my-filter in {}",
            root.display()
        )),
        "{stdout}"
    );
    for next in [
        "switchyard plugin build",
        "switchyard plugin test",
        "cargo test",
    ] {
        assert!(stdout.contains(next), "{stdout}");
    }
    // The scaffold points at this checkout's SDK.
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    let sdk = std::fs::canonicalize(repo().join("sdk")).expect("sdk/");
    assert!(
        manifest.contains(&format!("{{ path = {:?} }}", path_str(&sdk))),
        "{manifest}"
    );

    // Into the fixtures' target dir, which the plugin tests keep warm.
    let out = switchyard(&[
        "plugin",
        "build",
        "--manifest-path",
        path_str(&root),
        "--target-dir",
        path_str(&fixtures::target_dir()),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let built: Vec<PathBuf> = text(&out.stdout).lines().map(PathBuf::from).collect();
    assert_eq!(built.len(), 1, "{}", text(&out.stdout));
    let wasm = &built[0];
    assert!(wasm.ends_with("wasm32-unknown-unknown/release/my_filter.wasm"));
    assert!(wasm.is_file(), "{}", wasm.display());

    // The sample messages the scaffold ships, as its next steps say.
    let out = switchyard(&[
        "plugin",
        "test",
        path_str(wasm),
        "--config",
        r#"{"drop_level":"debug"}"#,
        "--input",
        path_str(&root.join("msgs.jsonl")),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines = json_lines(&out);
    assert_eq!(
        lines,
        [
            serde_json::json!({"line": 1, "topic": "app.log", "verdict": "drop"}),
            serde_json::json!({"line": 2, "topic": "app.log", "verdict": "keep"}),
        ]
    );
    assert!(
        text(&out.stderr).contains("2 messages: 1 passed, 1 stopped, 0 failed; 0 bad lines"),
        "{}",
        text(&out.stderr)
    );

    // The default config drops debug too; a line that is no message is
    // reported in place and makes the exit code 2.
    let out = plugin_test_stdin(
        &[path_str(wasm)],
        "{\"topic\":\"a.b\",\"attributes\":{\"level\":\"info\"}}\n[1]\n",
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "{}", text(&out.stdout));
    assert_eq!(lines[0]["verdict"], "keep");
    assert_eq!(lines[1]["line"], 2);
    assert_eq!(lines[1]["error"], "not a JSON object");
    assert!(
        text(&out.stderr).contains("1 message: 1 passed, 0 stopped, 0 failed; 1 bad line"),
        "{}",
        text(&out.stderr)
    );

    let out = switchyard(&["plugin", "inspect", path_str(wasm)]);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}{}", text(&out.stderr));
    for want in [
        "abi version: 1\n",
        "kind:        filter\n",
        "  switchyard_batch: func (i32, i32) -> (i64)\n",
        "imports:\n  env.switchyard_log: func (i32, i32, i32) -> ()\n",
        "status:      ok\n",
    ] {
        assert!(report.contains(want), "{want:?} in\n{report}");
    }
    let out = switchyard(&["plugin", "inspect", "--json", path_str(wasm)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(json["abi_version"], 1);
    assert_eq!(json["kind"], "filter");
    assert_eq!(json["ok"], true);
    assert_eq!(
        json["imports"],
        serde_json::json!([{"module": "env", "name": "switchyard_log", "type": "func (i32, i32, i32) -> ()"}])
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `plugin test` and `inspect` on a module written in WebAssembly text
/// (no cargo build): verdicts, a plugin failure (exit 1), problems.
#[test]
fn plugin_test_reports_verdicts_and_failures() {
    let dir = scratch_dir("plugin-wat");
    // Drops topics starting with `d`; traps on a batch starting with `h`.
    let wasm = dir.join("wat-filter.wasm");
    std::fs::write(
        &wasm,
        fixtures::assemble(&fixtures::wat_filter("unreachable")),
    )
    .expect("write the module");
    let wasm = path_str(&wasm);

    let input = "{\"topic\":\"keep.me\"}\n\n{\"topic\":\"drop.me\",\"payload\":{\"a\":1}}\n";
    let out = plugin_test_stdin(&[wasm, "--input", "-"], input);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines = json_lines(&out);
    assert_eq!(
        lines,
        [
            serde_json::json!({"line": 1, "topic": "keep.me", "verdict": "keep"}),
            serde_json::json!({"line": 3, "topic": "drop.me", "verdict": "drop"}),
        ]
    );

    let out = plugin_test_stdin(&[wasm], "{\"topic\":\"hostile\"}\n{\"topic\":\"fine\"}\n");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let lines = json_lines(&out);
    assert_eq!(lines[0]["reason"], "unreachable", "{}", text(&out.stdout));
    assert!(
        lines[0]["error"]
            .as_str()
            .expect("an error")
            .contains("wat-filter.wasm"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(lines[1]["verdict"], "keep");
    assert!(
        text(&out.stderr).contains("2 messages: 1 passed, 0 stopped, 1 failed; 0 bad lines"),
        "{}",
        text(&out.stderr)
    );

    // A module a router would refuse: inspected, problems listed, exit 1.
    let bad = dir.join("clock.wasm");
    let wat = fixtures::wat_filter("nop").replace(
        "(memory (export",
        "(import \"env\" \"clock\" (func (result i64)))\n  (memory (export",
    );
    std::fs::write(&bad, fixtures::assemble(&wat)).expect("write the module");
    let out = switchyard(&["plugin", "inspect", path_str(&bad)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("problems:\n  - forbidden import env.clock"),
        "{}",
        text(&out.stdout)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Exit code 2 and a message naming the problem.
fn assert_refused(args: &[&str], needles: &[&str]) {
    let out = switchyard(args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{args:?}: {needle:?} in {stderr}");
    }
}

#[test]
fn bad_plugin_invocations_exit_2_naming_the_problem() {
    let dir = scratch_dir("plugin-bad");
    let d = path_str(&dir);
    let missing = dir.join("missing.wasm");
    let not_wasm = dir.join("notes.wasm");
    std::fs::write(&not_wasm, "not a module").expect("write");
    let module = dir.join("filter.wasm");
    std::fs::write(&module, fixtures::assemble(&fixtures::wat_filter("nop")))
        .expect("write the module");
    let (missing, not_wasm, module) = (path_str(&missing), path_str(&not_wasm), path_str(&module));

    for cmd in ["test", "inspect"] {
        assert_refused(
            &["plugin", cmd, missing],
            &[missing, "No such file or directory"],
        );
        assert_refused(
            &["plugin", cmd, not_wasm],
            &[&format!("{not_wasm}: not a core WebAssembly module")],
        );
    }
    assert_refused(
        &["plugin", "test", module, "--config", "{drop_level: debug}"],
        &["plugin config is not valid JSON"],
    );
    let no_input = dir.join("no-such-input.jsonl");
    assert_refused(
        &["plugin", "test", module, "--input", path_str(&no_input)],
        &[path_str(&no_input)],
    );

    let out = switchyard(&["plugin", "new", "taken", "--dir", d]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let taken = dir.join("taken");
    assert_refused(
        &["plugin", "new", "taken", "--dir", d],
        &[&format!("{} already exists", taken.display())],
    );
    assert_refused(
        &["plugin", "new", "Not-A-Crate", "--dir", d],
        &["plugin name \"Not-A-Crate\""],
    );
    assert!(!dir.join("Not-A-Crate").exists());
    assert_refused(
        &["plugin", "new", "other", "--dir", d, "--sdk-path", d],
        &[&format!("{d} is not the switchyard-sdk crate")],
    );
    assert!(!dir.join("other").exists());

    let nowhere = dir.join("nowhere");
    assert_refused(
        &["plugin", "build", "--manifest-path", path_str(&nowhere)],
        &[path_str(&nowhere), "No such file or directory"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}
