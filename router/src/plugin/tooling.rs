//! What the `switchyard plugin ...` commands do, as functions main wires
//! up: `new` ([`find_sdk`], [`write_scaffold`], [`next_steps`]), `build`
//! ([`ensure_wasm_target`], [`build_plugins`]), `test` ([`load_for_test`],
//! [`run_jsonl`], [`Summary`]), `inspect` ([`inspect_file`],
//! [`inspect_text`], [`inspection_json`]), and [`build_wasm`], which the
//! test suite uses for its fixtures.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{FilterVerdict, Inspection, Kind, Plugin, PluginError, RouteVerdict};
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
    /// A path given as the SDK is not the `switchyard-sdk` crate.
    #[error(
        "{0} is not the switchyard-sdk crate (no Cargo.toml with package name \"switchyard-sdk\")"
    )]
    NotSdk(PathBuf),
    /// There is no cargo package or workspace to build.
    #[error("{0}: no Cargo.toml there or in a parent directory")]
    NoManifest(PathBuf),
    /// The build succeeded but made no `.wasm` file.
    #[error(
        "{0}: built, but no crate there is a cdylib; add `crate-type = [\"cdylib\"]` under [lib]"
    )]
    NoWasm(PathBuf),
    /// The plugin config given for a test run is not JSON.
    #[error("plugin config is not valid JSON: {0}")]
    BadConfig(String),
    /// The file is not a WebAssembly module that compiles.
    #[error("{path}: {why}")]
    BadModule {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

/// Where a scaffolded crate finds the SDK.
#[derive(Clone, Debug)]
pub enum SdkSource {
    /// A path to the `sdk/` directory (as written into Cargo.toml).
    Path(String),
    /// A registry version requirement, e.g. `"0.1"`.
    Version(String),
}

impl std::fmt::Display for SdkSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SdkSource::Path(p) => write!(f, "switchyard-sdk at {p}"),
            SdkSource::Version(v) => write!(f, "switchyard-sdk {v} from crates.io"),
        }
    }
}

/// The SDK version a scaffold asks the registry for when no local SDK is
/// found: the one released with this router.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where `switchyard plugin new` points the new crate's SDK dependency,
/// first match wins:
///
/// 1. `explicit` (`--sdk-path`): the `sdk/` directory or its `Cargo.toml`;
///    anything else is [`ToolingError::NotSdk`];
/// 2. an `sdk/` directory beside `starts` or one of their ancestors (the
///    crate's parent directory, the working directory): the checkout the
///    command runs in;
/// 3. the checkout this binary was built from, if it is still there;
/// 4. [`SDK_VERSION`] from the registry.
///
/// Paths are made absolute, so the crate can move within the machine.
///
/// # Errors
/// [`ToolingError::NotSdk`] for a bad `explicit` path.
pub fn find_sdk(explicit: Option<&Path>, starts: &[&Path]) -> Result<SdkSource, ToolingError> {
    if let Some(p) = explicit {
        let dir = if p.file_name().is_some_and(|n| n == "Cargo.toml") {
            p.parent().unwrap_or(Path::new("."))
        } else {
            p
        };
        return if is_sdk(dir) {
            Ok(sdk_path(dir))
        } else {
            Err(ToolingError::NotSdk(p.to_owned()))
        };
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|repo| repo.join("sdk"));
    let candidates = starts
        .iter()
        .filter_map(|s| std::path::absolute(s).ok())
        .flat_map(|s| {
            s.ancestors()
                .map(|a| a.join("sdk"))
                .collect::<Vec<PathBuf>>()
        })
        .chain(built_from);
    Ok(first_sdk(candidates)
        .map(|dir| sdk_path(&dir))
        .unwrap_or_else(|| SdkSource::Version(SDK_VERSION.to_owned())))
}

fn first_sdk(candidates: impl IntoIterator<Item = PathBuf>) -> Option<PathBuf> {
    candidates.into_iter().find(|dir| is_sdk(dir))
}

/// Whether `dir` holds the `switchyard-sdk` package's manifest.
fn is_sdk(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
        return false;
    };
    let Ok(manifest) = text.parse::<toml::Table>() else {
        return false;
    };
    manifest
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(toml::Value::as_str)
        == Some("switchyard-sdk")
}

fn sdk_path(dir: &Path) -> SdkSource {
    let abs = std::fs::canonicalize(dir)
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_owned());
    SdkSource::Path(abs.to_string_lossy().into_owned())
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

/// What `switchyard plugin new` prints after [`write_scaffold`]: where the
/// crate is, which SDK it uses, and the commands to build and test it.
pub fn next_steps(root: &Path, name: &str, sdk: &SdkSource) -> String {
    let wasm = format!(
        "target/{WASM_TARGET}/release/{}.wasm",
        name.replace('-', "_")
    );
    format!(
        "created filter plugin {name} in {root} ({sdk})

next:
  cd {root}
  cargo test                    # its unit tests, on the host
  switchyard plugin build       # builds {wasm}
  switchyard plugin test {wasm} --config '{{\"drop_level\":\"debug\"}}' --input msgs.jsonl
  switchyard plugin inspect {wasm}
",
        root = root.display(),
    )
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
    run(wasm_build(manifest_dir)
        .arg("--quiet")
        .arg("--target-dir")
        .arg(target_dir)
        .env_remove("CARGO_TARGET_DIR"))?;
    Ok(target_dir.join(WASM_TARGET).join("release"))
}

/// `cargo build --release --target wasm32-unknown-unknown` in `dir`,
/// without the host-only flags of the environment.
fn wasm_build(dir: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(dir)
        .args(["build", "--release", "--target", WASM_TARGET])
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    cmd
}

/// `switchyard plugin build`: builds the cargo package or workspace at
/// `manifest` (a directory, or a `Cargo.toml`) for wasm32 in release mode,
/// into `target_dir` or wherever cargo puts it by default, and returns the
/// `.wasm` files it made. Cargo's progress and errors go to this process's
/// stderr, as if cargo had been run by hand. Does not install the target:
/// call [`ensure_wasm_target`] first.
///
/// # Errors
/// [`ToolingError::Io`] when `manifest` does not exist,
/// [`ToolingError::NoManifest`] when no `Cargo.toml` is there or above,
/// [`ToolingError::Command`] when the build fails (cargo has printed why),
/// [`ToolingError::NoWasm`] when it made no `.wasm` file.
pub fn build_plugins(
    manifest: &Path,
    target_dir: Option<&Path>,
) -> Result<Vec<PathBuf>, ToolingError> {
    let dir = if manifest.file_name().is_some_and(|n| n == "Cargo.toml") && manifest.is_file() {
        manifest.parent().unwrap_or(Path::new("."))
    } else {
        manifest
    };
    let meta = std::fs::metadata(dir).map_err(|source| ToolingError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    if !meta.is_dir() || !abs.ancestors().any(|a| a.join("Cargo.toml").is_file()) {
        return Err(ToolingError::NoManifest(dir.to_owned()));
    }
    let mut cmd = wasm_build(dir);
    cmd.arg("--message-format=json-render-diagnostics");
    if let Some(t) = target_dir {
        // Relative to where the user is, not to the crate.
        cmd.arg("--target-dir")
            .arg(std::path::absolute(t).unwrap_or_else(|_| t.to_owned()));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let line = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| ToolingError::Command {
        command: line.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(ToolingError::Command {
            command: line,
            detail: format!("{} (cargo's messages are above)", out.status),
        });
    }
    let wasm = wasm_artifacts(&String::from_utf8_lossy(&out.stdout));
    if wasm.is_empty() {
        return Err(ToolingError::NoWasm(dir.to_owned()));
    }
    Ok(wasm)
}

/// The `.wasm` files in cargo's JSON messages (`compiler-artifact`), in
/// order, without repeats.
fn wasm_artifacts(messages: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for line in messages.lines() {
        let Ok(msg) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let files = msg["filenames"].as_array().into_iter().flatten();
        for f in files.filter_map(Value::as_str) {
            let f = PathBuf::from(f);
            if f.extension().is_some_and(|e| e == "wasm") && !out.contains(&f) {
                out.push(f);
            }
        }
    }
    out
}

/// `switchyard plugin inspect`: reads and inspects the module at `path`.
///
/// # Errors
/// [`ToolingError::Io`] when the file cannot be read,
/// [`ToolingError::BadModule`] (naming the file) when it is not a module
/// that compiles.
pub fn inspect_file(path: &Path) -> Result<Inspection, ToolingError> {
    let bytes = std::fs::read(path).map_err(|source| ToolingError::Io {
        path: path.to_owned(),
        source,
    })?;
    super::inspect(&bytes).map_err(|e| module_error(path, e))
}

/// A load or inspect error, told as a problem of the file at `path`.
fn module_error(path: &Path, e: super::Error) -> ToolingError {
    let why = match e {
        super::Error::NotAModule { why, .. } => {
            format!("not a core WebAssembly module ({why})")
        }
        super::Error::Compile { message, .. } => format!("invalid module: {message}"),
        super::Error::Init {
            source: PluginError::Guest { code, message, .. },
            ..
        } => format!("switchyard_init refused the config (code {code}): {message}"),
        other => return ToolingError::Plugin(other),
    };
    ToolingError::BadModule {
        path: path.to_owned(),
        why,
    }
}

/// `switchyard plugin inspect --json`: the report as one JSON object,
/// `{"size", "sha256", "abi_version", "kind", "kind_value", "exports":
/// [{"name", "type"}], "imports": [{"module", "name", "type"}], "problems",
/// "ok"}`; `kind` is `"filter"`, `"router"` or null.
pub fn inspection_json(report: &Inspection) -> Value {
    json!({
        "size": report.size,
        "sha256": report.sha256,
        "abi_version": report.abi_version,
        "kind": report.kind.and_then(Kind::from_abi).map(|k| k.to_string()),
        "kind_value": report.kind,
        "exports": report.exports.iter()
            .map(|(name, ty)| json!({"name": name, "type": ty}))
            .collect::<Vec<_>>(),
        "imports": report.imports.iter()
            .map(|(module, name, ty)| json!({"module": module, "name": name, "type": ty}))
            .collect::<Vec<_>>(),
        "problems": report.problems,
        "ok": report.problems.is_empty(),
    })
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

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = |n: usize, one: &'static str, many: &'static str| {
            if n == 1 { one } else { many }
        };
        write!(
            f,
            "{} {}: {} passed, {} stopped, {} failed; {} bad {}",
            self.messages,
            plural(self.messages, "message", "messages"),
            self.passed,
            self.stopped,
            self.failed,
            self.bad_lines,
            plural(self.bad_lines, "line", "lines"),
        )
    }
}

/// `switchyard plugin test`: loads the module at `path` as the router
/// would (same checks, default [`Limits`](super::Limits)), named after the
/// file, with `config_json` as its config, in an engine of its own. The
/// circuit breaker never trips, so every message is run.
///
/// # Errors
/// [`ToolingError::BadConfig`] when `config_json` is not JSON,
/// [`ToolingError::Io`] when the file cannot be read, and
/// [`ToolingError::Plugin`] when the plugin does not load (the message
/// names the file).
pub fn load_for_test(path: &Path, config_json: &str) -> Result<Plugin, ToolingError> {
    serde_json::from_str::<Value>(config_json)
        .map_err(|e| ToolingError::BadConfig(e.to_string()))?;
    let bytes = std::fs::read(path).map_err(|source| ToolingError::Io {
        path: path.to_owned(),
        source,
    })?;
    let engine = super::Engine::new(
        super::Config {
            max_instances: 2,
            ..super::Config::default()
        },
        &crate::metrics::Registry::new(),
    )?;
    let mut limits = super::Limits::default();
    limits.on_failure.trip_after = u32::MAX;
    let name = path.display().to_string();
    engine
        .load(&name, super::Source::Bytes(&bytes), config_json, limits)
        .map_err(|e| module_error(path, e))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh scratch directory per test.
    fn scratch(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("switchyard-tooling-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch dir");
        dir
    }

    fn fake_sdk(dir: &Path, package: &str) {
        std::fs::create_dir_all(dir).expect("sdk dir");
        std::fs::write(
            dir.join("Cargo.toml"),
            format!("[package]\nname = \"{package}\"\nversion = \"0.1.0\"\n"),
        )
        .expect("sdk manifest");
    }

    #[test]
    fn find_sdk_takes_the_given_path_or_the_nearest_checkout() {
        let root = scratch("find-sdk");
        let sdk = root.join("checkout").join("sdk");
        fake_sdk(&sdk, "switchyard-sdk");
        let canonical = std::fs::canonicalize(&sdk)
            .expect("canonical")
            .to_string_lossy()
            .into_owned();

        for given in [sdk.clone(), sdk.join("Cargo.toml")] {
            match find_sdk(Some(&given), &[]).expect("an sdk") {
                SdkSource::Path(p) => assert_eq!(p, canonical),
                other => panic!("{other:?}"),
            }
        }
        let other = root.join("other");
        fake_sdk(&other, "not-the-sdk");
        for bad in [other.clone(), root.join("missing")] {
            let err = find_sdk(Some(&bad), &[]).expect_err("not the sdk");
            assert!(
                matches!(&err, ToolingError::NotSdk(p) if *p == bad),
                "{err}"
            );
            assert!(err.to_string().contains(&*bad.to_string_lossy()), "{err}");
        }

        // From a directory inside the checkout (which need not exist yet).
        let inside = root.join("checkout").join("plugins").join("new");
        match find_sdk(None, &[&inside]).expect("an sdk") {
            SdkSource::Path(p) => assert_eq!(p, canonical),
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn no_sdk_among_the_candidates_means_the_registry() {
        let root = scratch("no-sdk");
        assert_eq!(first_sdk([root.join("sdk"), root.join("a/sdk")]), None);
        // The checkout this test runs in is found from anywhere, since the
        // binary was built from it.
        assert!(matches!(
            find_sdk(None, &[&root]).expect("an sdk"),
            SdkSource::Path(_)
        ));
        let v = SdkSource::Version(SDK_VERSION.to_owned());
        assert_eq!(
            v.to_string(),
            format!("switchyard-sdk {SDK_VERSION} from crates.io")
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn next_steps_name_the_crate_and_its_commands() {
        let text = next_steps(
            Path::new("plugins/my-filter"),
            "my-filter",
            &SdkSource::Path("/src/switchyard/sdk".into()),
        );
        assert!(
            text.starts_with(
                "created filter plugin my-filter in plugins/my-filter (switchyard-sdk at /src/switchyard/sdk)\n"
            ),
            "{text}"
        );
        assert!(text.contains("  cd plugins/my-filter\n"), "{text}");
        assert!(text.contains("switchyard plugin build"), "{text}");
        assert!(
            text.contains(
                "switchyard plugin test target/wasm32-unknown-unknown/release/my_filter.wasm --config '{\"drop_level\":\"debug\"}' --input msgs.jsonl"
            ),
            "{text}"
        );
    }

    #[test]
    fn summaries_read_as_a_sentence() {
        let s = Summary {
            messages: 3,
            bad_lines: 1,
            passed: 1,
            stopped: 1,
            failed: 1,
        };
        assert_eq!(
            s.to_string(),
            "3 messages: 1 passed, 1 stopped, 1 failed; 1 bad line"
        );
        let s = Summary {
            messages: 1,
            passed: 1,
            ..Summary::default()
        };
        assert_eq!(
            s.to_string(),
            "1 message: 1 passed, 0 stopped, 0 failed; 0 bad lines"
        );
    }

    #[test]
    fn wasm_artifacts_come_from_cargo_messages() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","filenames":["/t/release/deps/libserde.rlib"]}"#,
            "\n",
            r#"{"reason":"compiler-artifact","filenames":["/t/release/a.wasm","/t/release/liba.rlib"]}"#,
            "\n",
            "not json\n",
            r#"{"reason":"compiler-message","filenames":["/t/release/x.wasm"]}"#,
            "\n",
            r#"{"reason":"compiler-artifact","filenames":["/t/release/a.wasm"]}"#,
            "\n",
            r#"{"reason":"compiler-artifact","filenames":["/t/release/b.wasm"]}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
            "\n",
        );
        assert_eq!(
            wasm_artifacts(messages),
            [
                PathBuf::from("/t/release/a.wasm"),
                PathBuf::from("/t/release/b.wasm")
            ]
        );
    }

    #[test]
    fn build_refuses_what_is_not_a_crate() {
        let root = scratch("build");
        let missing = root.join("missing");
        let err = build_plugins(&missing, None).expect_err("missing");
        assert!(
            matches!(&err, ToolingError::Io { path, .. } if *path == missing),
            "{err}"
        );
        if !root.ancestors().any(|a| a.join("Cargo.toml").is_file()) {
            let err = build_plugins(&root, None).expect_err("no manifest");
            assert!(
                matches!(&err, ToolingError::NoManifest(p) if *p == root),
                "{err}"
            );
        }
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn bad_modules_and_configs_are_named() {
        let root = scratch("modules");
        let text = root.join("notes.txt");
        std::fs::write(&text, "hello").expect("write");
        let err = inspect_file(&text).expect_err("not a module");
        assert!(
            matches!(&err, ToolingError::BadModule { path, .. } if *path == text),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("notes.txt: not a core WebAssembly module")
        );
        let err = load_for_test(&text, "{}").expect_err("not a module");
        assert!(
            err.to_string()
                .contains("notes.txt: not a core WebAssembly module")
        );

        let err = load_for_test(&text, "{nope").expect_err("bad config");
        assert!(matches!(err, ToolingError::BadConfig(_)), "{err}");
        let missing = root.join("missing.wasm");
        let err = inspect_file(&missing).expect_err("missing");
        assert!(err.to_string().contains("missing.wasm"), "{err}");
        let err = load_for_test(&missing, "{}").expect_err("missing");
        assert!(err.to_string().contains("missing.wasm"), "{err}");

        // Valid wasm that is not a plugin: inspected, with problems.
        let empty = root.join("empty.wasm");
        std::fs::write(&empty, wat::parse_str("(module)").expect("wat")).expect("write");
        let report = inspect_file(&empty).expect("inspects");
        let json = inspection_json(&report);
        assert_eq!(json["ok"], false);
        assert_eq!(json["kind"], Value::Null);
        assert!(
            json["problems"]
                .as_array()
                .expect("problems")
                .iter()
                .any(|p| p == "missing export switchyard_batch"),
            "{json}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
