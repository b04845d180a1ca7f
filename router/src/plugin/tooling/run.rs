//! `switchyard plugin test` and `inspect`: a plugin without a router.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::ToolingError;
use crate::message::request::{Answer, InputRequests, Replier, RequestMetrics};
use crate::message::{Attributes, Message, Publisher, Topic};
use crate::plugin::{FilterVerdict, Inspection, Kind, Plugin, PluginError, RouteVerdict};

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
    crate::plugin::inspect(&bytes).map_err(|e| module_error(path, e))
}

/// A load or inspect error, told as a problem of the file at `path`.
fn module_error(path: &Path, e: crate::plugin::Error) -> ToolingError {
    let why = match e {
        crate::plugin::Error::NotAModule { why, .. } => {
            format!("not a core WebAssembly module ({why})")
        }
        crate::plugin::Error::Compile { message, .. } => format!("invalid module: {message}"),
        crate::plugin::Error::Init {
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
    Ok(crate::plugin::inspect(bytes)?.to_string())
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
    /// Messages dropped, replied to, rejected or dead-lettered.
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
/// would (same checks, default [`Limits`](crate::plugin::Limits)), named after the
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
    let engine = crate::plugin::Engine::new(
        crate::plugin::Config {
            max_instances: 2,
            ..crate::plugin::Config::default()
        },
        &crate::metrics::Registry::new(),
    )?;
    let mut limits = crate::plugin::Limits::default();
    limits.on_failure.trip_after = u32::MAX;
    let name = path.display().to_string();
    engine
        .load(
            &name,
            crate::plugin::Source::Bytes(&bytes),
            config_json,
            limits,
        )
        .map_err(|e| module_error(path, e))
}

/// Where the answers of `plugin test`'s requests go: nowhere (the verdict
/// is what the tool prints).
struct Discard;

impl Replier for Discard {
    fn reply(self: Box<Self>, _: Answer) {}
}

/// Reads one JSONL line: `{"topic": "...", "payload": "text" | {...},
/// "payload_base64": "...", "attributes": {"k": "v"}, "priority": 0-9,
/// "request": true}`.
fn parse_line(line: &str, input: &Arc<str>, requests: &InputRequests) -> Result<Message, String> {
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
    let mut msg = Message::new(topic, payload, Publisher::new(input.clone(), ""));
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
    match obj.get("request") {
        None | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => msg.request = Some(requests.start(Box::new(Discard))),
        Some(_) => return Err("request must be true or false".into()),
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
        FilterVerdict::Reply(payload) => {
            json!({"verdict": "reply", "payload": payload_json(payload)})
        }
        FilterVerdict::Reject(reason) => json!({"verdict": "reject", "reason": reason}),
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
    let requests =
        RequestMetrics::register(&crate::metrics::Registry::new()).for_input(&input_name);
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
                            if matches!(
                                v,
                                FilterVerdict::Drop
                                    | FilterVerdict::Reply(_)
                                    | FilterVerdict::Reject(_)
                            ) {
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
        match parse_line(&line, &input_name, &requests) {
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
