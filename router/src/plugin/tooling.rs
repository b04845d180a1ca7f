//! What the `switchyard plugin ...` commands do, as functions main wires
//! up: `new` ([`scaffold`], [`write_scaffold`]), `test` ([`run_jsonl`]),
//! `inspect` ([`inspect_text`]), and building plugin crates for wasm32
//! ([`build_wasm`]), which the test suite also uses for its fixtures.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{FilterVerdict, Kind, Plugin, PluginError, RouteVerdict};
use crate::pipeline::{Attributes, Message, Publisher, Topic};

/// The wasm target plugins are built for.
pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Why a tooling command failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolingError {
    /// The plugin name cannot be a crate name.
    #[error(
        "plugin name {0:?}: use lowercase letters, digits, '-' and '_', starting with a letter"
    )]
    BadName(String),
    /// The target directory exists already.
    #[error("{0} already exists; pick another name or remove it")]
    Exists(PathBuf),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A command (cargo, rustup) could not run or failed.
    #[error("{command} failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and the end of its output.
        detail: String,
    },
    /// Loading or inspecting the plugin failed.
    #[error(transparent)]
    Plugin(#[from] super::Error),
    /// Writing the report failed.
    #[error("writing output: {0}")]
    Output(std::io::Error),
}

/// Where a scaffolded crate finds the SDK.
#[derive(Clone, Debug)]
pub enum SdkSource {
    /// A path to the `sdk/` directory (as written into Cargo.toml).
    Path(String),
    /// A registry version requirement, e.g. `"0.1"`.
    Version(String),
}

fn valid_crate_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// The files of a new filter plugin crate named `name`: relative path and
/// contents. The crate builds as it is with
/// `cargo build --release --target wasm32-unknown-unknown`.
///
/// # Errors
/// [`ToolingError::BadName`].
pub fn scaffold(name: &str, sdk: &SdkSource) -> Result<Vec<(PathBuf, String)>, ToolingError> {
    if !valid_crate_name(name) {
        return Err(ToolingError::BadName(name.to_owned()));
    }
    let sdk_dep = match sdk {
        SdkSource::Path(p) => format!("{{ path = {} }}", toml_string(p)),
        SdkSource::Version(v) => toml_string(v),
    };
    let lib = name.replace('-', "_");
    let cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
switchyard-sdk = {sdk_dep}
serde = {{ version = "1", features = ["derive"] }}

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "abort"

# A plugin is its own workspace, even inside another project's tree.
[workspace]
"#
    );
    let src = format!(
        r##"//! {name}: a Switchyard filter plugin.
//!
//! Build:   cargo build --release --target {WASM_TARGET}
//! Output:  target/{WASM_TARGET}/release/{lib}.wasm
//! Try it:  switchyard plugin test target/{WASM_TARGET}/release/{lib}.wasm \
//!            --config '{{"drop_level":"debug"}}' --input msgs.jsonl

use serde::Deserialize;
use switchyard_sdk::{{Config, Error, Filter, Message, Verdict}};

/// The plugin's `config` table from the router config.
#[derive(Deserialize)]
struct Settings {{
    /// Messages whose `level` attribute equals this are dropped.
    #[serde(default = "default_level")]
    drop_level: String,
}}

fn default_level() -> String {{
    "debug".into()
}}

/// The filter's state: built once per instance from its config.
pub struct Plugin {{
    settings: Settings,
}}

impl Filter for Plugin {{
    fn init(config: &Config<'_>) -> Result<Self, Error> {{
        Ok(Self {{ settings: config.parse()? }})
    }}

    fn filter(&mut self, msg: &Message<'_>) -> Verdict {{
        if msg.attr("level") == Some(self.settings.drop_level.as_str()) {{
            Verdict::Drop
        }} else {{
            Verdict::Keep
        }}
    }}
}}

switchyard_sdk::filter!(Plugin);

#[cfg(test)]
mod tests {{
    use super::*;
    use switchyard_sdk::OwnedMessage;
    use switchyard_sdk::testing::FilterHarness;

    #[test]
    fn drops_the_configured_level() {{
        let mut h = FilterHarness::<Plugin>::new(r#"{{"drop_level":"debug"}}"#).unwrap();
        let msgs = [
            OwnedMessage::new("app.log", "x").attr("level", "debug"),
            OwnedMessage::new("app.log", "x").attr("level", "info"),
        ];
        assert_eq!(h.run(&msgs), [Verdict::Drop, Verdict::Keep]);
    }}
}}
"##
    );
    let sample = concat!(
        r#"{"topic":"app.log","payload":"hello","attributes":{"level":"debug"}}"#,
        "\n",
        r#"{"topic":"app.log","payload":{"msg":"hi"},"attributes":{"level":"info"}}"#,
        "\n"
    );
    Ok(vec![
        (PathBuf::from("Cargo.toml"), cargo),
        (PathBuf::from("src/lib.rs"), src),
        (PathBuf::from("msgs.jsonl"), sample.to_owned()),
        (PathBuf::from(".gitignore"), "/target\n".to_owned()),
    ])
}

fn toml_string(s: &str) -> String {
    // TOML basic strings use JSON-compatible escapes for what paths hold.
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// Writes [`scaffold`]'s files into `dir/name`, which must not exist.
/// Returns the crate's directory.
///
/// # Errors
/// [`ToolingError::BadName`], [`ToolingError::Exists`], or an I/O error.
pub fn write_scaffold(dir: &Path, name: &str, sdk: &SdkSource) -> Result<PathBuf, ToolingError> {
    let files = scaffold(name, sdk)?;
    let root = dir.join(name);
    if root.exists() {
        return Err(ToolingError::Exists(root));
    }
    for (rel, text) in files {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| ToolingError::Io {
                path: parent.to_owned(),
                source,
            })?;
        }
        std::fs::write(&path, text).map_err(|source| ToolingError::Io { path, source })?;
    }
    Ok(root)
}

fn run(cmd: &mut Command) -> Result<std::process::Output, ToolingError> {
    let line = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| ToolingError::Command {
        command: line.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(ToolingError::Command {
            command: line,
            detail: format!("{}\n{}", out.status, tail.join("\n")),
        });
    }
    Ok(out)
}

/// Installs the wasm target with rustup when it is missing (a no-op when
/// present, or when rustup is not there and the target is).
///
/// # Errors
/// When the target is missing and rustup cannot add it.
pub fn ensure_wasm_target() -> Result<(), ToolingError> {
    let listed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match listed {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains(WASM_TARGET) => Ok(()),
        Ok(_) => run(Command::new("rustup").args(["target", "add", WASM_TARGET])).map(drop),
        // No rustup: a distribution toolchain may still have the target;
        // cargo will say if not.
        Err(_) => Ok(()),
    }
}

/// Builds every plugin crate of the cargo workspace (or package) at
/// `manifest_dir` for wasm32 in release mode, into `target_dir`; returns
/// the directory holding the `.wasm` files. Host-only flags (`RUSTFLAGS`,
/// coverage instrumentation) are not passed on.
///
/// # Errors
/// [`ToolingError::Command`] with cargo's last lines when the build fails.
pub fn build_wasm(manifest_dir: &Path, target_dir: &Path) -> Result<PathBuf, ToolingError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo)
        .current_dir(manifest_dir)
        .args(["build", "--release", "--quiet", "--target", WASM_TARGET])
        .arg("--target-dir")
        .arg(target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTC_WORKSPACE_WRAPPER"))?;
    Ok(target_dir.join(WASM_TARGET).join("release"))
}

/// `switchyard plugin inspect`: the report as text.
///
/// # Errors
/// When the bytes are not a module that compiles.
pub fn inspect_text(bytes: &[u8]) -> Result<String, ToolingError> {
    Ok(super::inspect(bytes)?.to_string())
}

/// Totals of a [`run_jsonl`] run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Input lines that held a message.
    pub messages: usize,
    /// Lines that could not be read as a message.
    pub bad_lines: usize,
    /// Messages kept or rewritten (filters) or routed (routers).
    pub passed: usize,
    /// Messages dropped or dead-lettered.
    pub stopped: usize,
    /// Messages in failed batches.
    pub failed: usize,
}

/// Reads one JSONL line: `{"topic": "...", "payload": "text" | {...},
/// "payload_base64": "...", "attributes": {"k": "v"}, "priority": 0-9}`.
fn parse_line(line: &str, input: &Arc<str>) -> Result<Message, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let topic = obj
        .get("topic")
        .and_then(Value::as_str)
        .ok_or("missing \"topic\"")?;
    let topic = Topic::try_from(topic).map_err(|e| format!("topic: {e}"))?;
    let payload = match (obj.get("payload"), obj.get("payload_base64")) {
        (Some(_), Some(_)) => return Err("give payload or payload_base64, not both".into()),
        (Some(Value::String(s)), None) => Bytes::copy_from_slice(s.as_bytes()),
        (Some(other), None) => Bytes::from(other.to_string()),
        (None, Some(Value::String(b))) => {
            use base64::Engine as _;
            Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|e| format!("payload_base64: {e}"))?,
            )
        }
        (None, Some(_)) => return Err("payload_base64 must be a string".into()),
        (None, None) => Bytes::new(),
    };
    let mut msg = Message::new(
        topic,
        payload,
        Publisher {
            input: input.clone(),
            peer: Arc::from(""),
        },
    );
    if let Some(attrs) = obj.get("attributes") {
        let attrs = attrs.as_object().ok_or("attributes must be an object")?;
        let mut out = Attributes::new();
        for (k, v) in attrs {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.insert(k.clone(), v);
        }
        msg.attributes = out;
    }
    if let Some(p) = obj.get("priority") {
        msg.priority = p
            .as_u64()
            .filter(|p| *p <= u64::from(Message::MAX_PRIORITY))
            .ok_or("priority must be 0 to 9")? as u8;
    }
    Ok(msg)
}

fn payload_json(p: &Bytes) -> Value {
    match std::str::from_utf8(p) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => {
            use base64::Engine as _;
            json!({ "base64": base64::engine::general_purpose::STANDARD.encode(p) })
        }
    }
}

fn filter_json(v: &FilterVerdict) -> Value {
    match v {
        FilterVerdict::Keep => json!({"verdict": "keep"}),
        FilterVerdict::Drop => json!({"verdict": "drop"}),
        FilterVerdict::Rewrite {
            topic,
            payload,
            attributes,
        } => {
            let mut m = Map::new();
            m.insert("verdict".into(), "rewrite".into());
            if let Some(t) = topic {
                m.insert("topic".into(), t.as_str().into());
            }
            if let Some(p) = payload {
                m.insert("payload".into(), payload_json(p));
            }
            if let Some(a) = attributes {
                m.insert("attributes".into(), json!(a));
            }
            Value::Object(m)
        }
    }
}

fn route_json(v: &RouteVerdict) -> Value {
    match v {
        RouteVerdict::Outputs(names) => {
            let names: Vec<&str> = names.iter().map(|n| &**n).collect();
            json!({"verdict": "outputs", "outputs": names})
        }
        RouteVerdict::Default => json!({"verdict": "default"}),
        RouteVerdict::DeadLetter => json!({"verdict": "dead_letter"}),
    }
}

/// `switchyard plugin test`: runs the messages of a JSONL stream through a
/// loaded plugin, `batch` at a time, writing one JSON line per input line
/// (`{"line": N, "topic": ..., "verdict": ...}`, or `"error"` for a line
/// that is not a message and for messages of a failed batch).
///
/// # Errors
/// I/O errors of `input` or `out`; plugin failures are reported in the
/// output and counted in the [`Summary`].
pub fn run_jsonl(
    plugin: &Plugin,
    input: impl BufRead,
    mut out: impl Write,
    batch: usize,
) -> Result<Summary, ToolingError> {
    let input_name: Arc<str> = Arc::from("plugin-test");
    let mut instance = plugin.instance();
    let mut summary = Summary::default();
    let mut pending: Vec<(usize, Message)> = Vec::new();
    let mut flush = |pending: &mut Vec<(usize, Message)>,
                     summary: &mut Summary,
                     out: &mut dyn Write|
     -> Result<(), ToolingError> {
        if pending.is_empty() {
            return Ok(());
        }
        let msgs: Vec<Message> = pending.iter().map(|(_, m)| m.clone()).collect();
        let results: Result<Vec<Value>, PluginError> = match plugin.kind() {
            Kind::Filter => {
                let mut v = Vec::new();
                instance.run_filter(&msgs, &mut v).map(|()| {
                    v.iter()
                        .map(|v| {
                            if *v == FilterVerdict::Drop {
                                summary.stopped += 1;
                            } else {
                                summary.passed += 1;
                            }
                            filter_json(v)
                        })
                        .collect()
                })
            }
            Kind::Router => {
                let mut v = Vec::new();
                instance.run_router(&msgs, &mut v).map(|()| {
                    v.iter()
                        .map(|v| {
                            if *v == RouteVerdict::DeadLetter {
                                summary.stopped += 1;
                            } else {
                                summary.passed += 1;
                            }
                            route_json(v)
                        })
                        .collect()
                })
            }
        };
        for (i, (line, msg)) in pending.iter().enumerate() {
            let mut row = json!({"line": line, "topic": msg.topic.as_str()});
            match &results {
                Ok(verdicts) => {
                    if let (Value::Object(row), Value::Object(v)) = (&mut row, &verdicts[i]) {
                        for (k, val) in v {
                            let key = if k == "topic" {
                                "new_topic"
                            } else {
                                k.as_str()
                            };
                            row.insert(key.to_owned(), val.clone());
                        }
                    }
                }
                Err(e) => {
                    summary.failed += 1;
                    row["error"] = Value::String(e.to_string());
                    if let Some(r) = e.reason() {
                        row["reason"] = Value::String(r.as_str().to_owned());
                    }
                }
            }
            writeln!(out, "{row}").map_err(ToolingError::Output)?;
        }
        pending.clear();
        Ok(())
    };
    for (n, line) in input.lines().enumerate() {
        let line = line.map_err(|source| ToolingError::Io {
            path: PathBuf::from("<input>"),
            source,
        })?;
        let line_no = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line, &input_name) {
            Ok(msg) => {
                summary.messages += 1;
                pending.push((line_no, msg));
                if pending.len() >= batch.max(1) {
                    flush(&mut pending, &mut summary, &mut out)?;
                }
            }
            Err(e) => {
                flush(&mut pending, &mut summary, &mut out)?;
                summary.bad_lines += 1;
                writeln!(out, "{}", json!({"line": line_no, "error": e}))
                    .map_err(ToolingError::Output)?;
            }
        }
    }
    flush(&mut pending, &mut summary, &mut out)?;
    Ok(summary)
}
