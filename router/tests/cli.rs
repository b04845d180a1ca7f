//! The `switchyard` command line: `validate` reports every mistake with its
//! line and exits non-zero, accepts every shipped config, and binds
//! nothing. Being an integration test of this package, it also makes
//! `cargo test --workspace` build the binary the end-to-end tests in
//! `tests/` run.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// What `config/multi-site.toml` requires from the environment.
const SITE_ENV: &[(&str, &str)] = &[
    ("SITE_ID", "42"),
    ("LINE1_PASSWORD", "line1-secret"),
    ("LINE2_PASSWORD", "line2-secret"),
    ("UPLINK_PASSWORD", "uplink-secret"),
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
            if path.file_name().is_some_and(|n| n != "target") {
                configs(&path, found);
            }
        } else if path.extension().is_some_and(|e| e == "toml")
            && path.file_name().is_some_and(|n| n != "Cargo.toml")
        {
            found.push(path);
        }
    }
}

#[test]
fn every_shipped_config_validates() {
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
