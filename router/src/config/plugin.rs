//! Plugins: Wasm modules that routes run messages through, as filters
//! (`filters = [...]`) or as the route's router (`router = "..."`).
//!
//! The config only reads the entry: the module file is opened, checked and
//! compiled when the router loads it, and what goes wrong then is reported
//! at the entry's `path` line through [`Plugin::problem`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::checker::Checker;
use super::error::{Error, Location, Problem, Subject};
use super::raw::{RawOnFailure, RawPlugin, S};
use super::units::serialize_duration;

/// One `[[plugin]]`: a Wasm module and the limits it runs under. Reloads
/// live: a changed entry (or module file) is loaded off the hot path and
/// swapped in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plugin {
    /// Unique among inputs, outputs, plugins and routes; the `plugin`
    /// metric label. Routes refer to the plugin by it. Reloads live.
    pub name: String,
    /// The `.wasm` file, written `path = "..."`. Required. A relative path
    /// is resolved against the config file's directory (not the working
    /// directory); an absolute one is kept. The file is not opened while
    /// the config is read. Reloads live.
    pub path: PathBuf,
    /// The plugin's own settings, handed to it as JSON when it starts:
    /// `config = { key = "level", deny = ["debug"] }`. Always a JSON object;
    /// default `{}`. TOML datetimes become strings as written; a NaN or
    /// infinite float is refused. Reloads live.
    pub config: serde_json::Value,
    /// Memory cap of one instance, in bytes; a plugin growing past it traps.
    /// Written as a size. Default 64 MiB; 1 MiB to 256 MiB. Reloads live.
    pub memory: u64,
    /// Deadline of one batch call; a call still running then is stopped
    /// and counted as a trap. Default 100ms; 1ms to 10s. Reloads live.
    #[serde(serialize_with = "serialize_duration")]
    pub deadline: Duration,
    /// Most messages handed to the plugin in one call; longer batches are
    /// split. Default 256; 1 to 4096. Reloads live.
    pub max_batch: usize,
    /// What happens when the plugin keeps failing. Default
    /// `{ mode = "closed", trip_after = 5, backoff = "1s", max_backoff = "60s" }`.
    /// Reloads live.
    pub on_failure: OnFailure,
    /// Where the `path` value is written, so problems found when the module
    /// is loaded point at the entry ([`Plugin::problem`]).
    #[serde(skip)]
    pub location: Location,
}

/// A plugin's circuit breaker, written `on_failure = { mode = "closed", ... }`:
/// after `trip_after` failed calls in a row (traps, timeouts, broken
/// verdicts) the plugin is not called; `mode` decides what happens to
/// messages meanwhile. After `backoff` one call is tried again: success
/// closes the circuit, failure doubles the wait, up to `max_backoff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OnFailure {
    /// What happens to messages while the circuit is open. Default
    /// `closed`. Reloads live.
    pub mode: FailMode,
    /// Consecutive failed calls that open the circuit. Default 5; 1 to 1000.
    /// Reloads live.
    pub trip_after: u32,
    /// Wait before the first retry. Default 1s; 10ms to 10m. Reloads live.
    #[serde(serialize_with = "serialize_duration")]
    pub backoff: Duration,
    /// Longest wait between retries. Default 60s, or `backoff` when that is
    /// longer; from `backoff` to 1h. Reloads live.
    #[serde(serialize_with = "serialize_duration")]
    pub max_backoff: Duration,
}

impl Default for OnFailure {
    fn default() -> Self {
        Self {
            mode: FailMode::default(),
            trip_after: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

pub use crate::plugin::FailMode;

impl Plugin {
    /// The limits the plugin host loads it with.
    pub fn limits(&self) -> crate::plugin::Limits {
        let f = &self.on_failure;
        crate::plugin::Limits {
            memory_bytes: self.memory,
            deadline: self.deadline,
            max_batch_messages: self.max_batch,
            on_failure: crate::plugin::FailurePolicy {
                mode: f.mode,
                trip_after: f.trip_after,
                backoff: f.backoff,
                max_backoff: f.max_backoff,
            },
            ..crate::plugin::Limits::default()
        }
    }

    /// A problem found while loading this plugin (bad module, wrong ABI,
    /// wrong kind for a route...), placed at its `path` line. Displays as
    /// `file:line:col: plugin "name": reason`; `file` names the config file
    /// as the caller named it when reading it.
    pub fn problem(&self, file: &str, reason: impl std::fmt::Display) -> Problem {
        Problem {
            file: file.to_owned(),
            location: Some(self.location),
            error: Error::Load {
                subject: Subject::plugin(&self.name),
                reason: reason.to_string(),
            },
        }
    }
}

/// `written` as a path: relative ones are resolved against the directory of
/// the config `file` (as the caller named it), absolute ones kept.
pub(crate) fn resolve_path(file: &str, written: &str) -> PathBuf {
    match Path::new(file).parent() {
        Some(dir) => dir.join(written),
        None => PathBuf::from(written),
    }
}

/// Reads one plugin.
pub(crate) fn build(raw: &RawPlugin, subject: &Subject, c: &mut Checker<'_>) -> Plugin {
    let written = raw.path.get_ref();
    if written.trim().is_empty() {
        c.invalid(
            subject,
            "path",
            raw.path.span(),
            "is empty; give the plugin's .wasm file",
        );
    }
    let path = resolve_path(c.file(), written);
    let location = c.location(raw.path.span());

    let config = match &raw.config {
        Some(table) => table_to_json(table.get_ref(), subject, c),
        None => serde_json::Value::Object(serde_json::Map::new()),
    };

    let memory = c.size(
        subject,
        "memory",
        raw.memory.as_ref(),
        64 << 20,
        1 << 20..=256 << 20,
    ) as u64;
    let deadline = c.duration(
        subject,
        "deadline",
        raw.deadline.as_ref(),
        Duration::from_millis(100),
        Duration::from_millis(1)..=Duration::from_secs(10),
    );
    let max_batch = c.count(subject, "max_batch", raw.max_batch.as_ref(), 256, 1..=4096);
    let on_failure = match &raw.on_failure {
        Some(f) => build_on_failure(f.get_ref(), subject, c),
        None => OnFailure::default(),
    };
    Plugin {
        name: raw.name.get_ref().clone(),
        path,
        config,
        memory,
        deadline,
        max_batch,
        on_failure,
        location,
    }
}

fn build_on_failure(raw: &RawOnFailure, subject: &Subject, c: &mut Checker<'_>) -> OnFailure {
    let d = OnFailure::default();
    let mode = c.choice(
        subject,
        "on_failure.mode",
        raw.mode.as_ref(),
        d.mode,
        &[("open", FailMode::Open), ("closed", FailMode::Closed)],
    );
    let trip_after = c.count(
        subject,
        "on_failure.trip_after",
        raw.trip_after.as_ref(),
        d.trip_after as usize,
        1..=1000,
    );
    let backoff = c.duration(
        subject,
        "on_failure.backoff",
        raw.backoff.as_ref(),
        d.backoff,
        Duration::from_millis(10)..=Duration::from_secs(600),
    );
    let max_backoff = c.duration(
        subject,
        "on_failure.max_backoff",
        raw.max_backoff.as_ref(),
        d.max_backoff.max(backoff),
        Duration::from_millis(10)..=Duration::from_secs(3600),
    );
    if let Some(v) = &raw.max_backoff
        && max_backoff < backoff
    {
        c.invalid(
            subject,
            "on_failure.max_backoff",
            v.span(),
            format!(
                "{} is shorter than backoff ({}); retries never wait less than backoff",
                super::units::format_duration(max_backoff),
                super::units::format_duration(backoff)
            ),
        );
    }
    OnFailure {
        mode,
        // In 1..=1000, so it fits.
        trip_after: u32::try_from(trip_after).unwrap_or(d.trip_after),
        backoff,
        max_backoff,
    }
}

/// Converts a plugin's `config` table to a JSON object. A value JSON cannot
/// hold (a NaN or infinite float) is reported at the top-level key's value,
/// naming its path (`config.limits[2]`).
fn table_to_json(
    table: &BTreeMap<String, S<toml::Value>>,
    subject: &Subject,
    c: &mut Checker<'_>,
) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    for (key, value) in table {
        let mut bad = Vec::new();
        let path = format!("config.{}", key_path(key));
        let json = value_to_json(value.get_ref(), &path, &mut bad);
        for (path, float) in bad {
            c.invalid(
                subject,
                &path,
                value.span(),
                format!("{float} is not a finite number, which JSON cannot hold"),
            );
        }
        object.insert(key.clone(), json);
    }
    serde_json::Value::Object(object)
}

/// A TOML value as JSON; datetimes become their text. Non-finite floats
/// become `null` and are added to `bad` with their path.
fn value_to_json(
    value: &toml::Value,
    path: &str,
    bad: &mut Vec<(String, f64)>,
) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(n) => J::from(*n),
        toml::Value::Float(f) => match serde_json::Number::from_f64(*f) {
            Some(n) => J::Number(n),
            None => {
                bad.push((path.to_owned(), *f));
                J::Null
            }
        },
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(items) => J::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| value_to_json(v, &format!("{path}[{i}]"), bad))
                .collect(),
        ),
        toml::Value::Table(t) => J::Object(
            t.iter()
                .map(|(k, v)| {
                    let path = format!("{path}.{}", key_path(k));
                    (k.clone(), value_to_json(v, &path, bad))
                })
                .collect(),
        ),
    }
}

/// A key as it would be written in a dotted TOML path: bare when it can
/// be, quoted otherwise.
fn key_path(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::config::Config;
    use crate::config::fixture::{assert_one, base, problems, valid};

    /// `base` with `plugins` appended (they may come after the routes in
    /// the file) and `route_extra` spliced into the route.
    fn with_plugins(route_extra: &str, plugins: &str) -> String {
        format!("{}\n{plugins}", base("", "", route_extra))
    }

    const TWO_PLUGINS: &str = r#"
[[plugin]]
name = "drop-debug"
path = "plugins/attr_filter.wasm"

[[plugin]]
name = "by-content"
path = "/opt/switchyard/router.wasm"
"#;

    /// The 1-based line of the first line containing `needle`.
    fn line_of(text: &str, needle: &str) -> usize {
        text.lines()
            .position(|l| l.contains(needle))
            .expect("needle in text")
            + 1
    }

    #[test]
    fn a_full_entry_reads_into_typed_values() {
        let text = with_plugins(
            "filters = [\"drop-debug\"]\nrouter = \"by-content\"\non_error = \"dead_letter\"\ndead_letter = \"out\"",
            r#"
[[plugin]]
name = "drop-debug"
path = "../plugins/attr_filter.wasm"
config = { key = "level", deny = ["debug"] }
memory = "16MiB"
deadline = "250ms"
max_batch = 64
on_failure = { mode = "open", trip_after = 3, backoff = "500ms", max_backoff = "2m" }

[[plugin]]
name = "by-content"
path = "router.wasm"
"#,
        );
        let config = Config::parse_with_env(&text, "conf/t.toml", &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        let p = config.plugin("drop-debug").expect("declared");
        assert_eq!(
            p,
            &Plugin {
                name: "drop-debug".into(),
                path: PathBuf::from("conf/../plugins/attr_filter.wasm"),
                config: json!({ "key": "level", "deny": ["debug"] }),
                memory: 16 << 20,
                deadline: Duration::from_millis(250),
                max_batch: 64,
                on_failure: OnFailure {
                    mode: FailMode::Open,
                    trip_after: 3,
                    backoff: Duration::from_millis(500),
                    max_backoff: Duration::from_secs(120),
                },
                location: Location {
                    line: line_of(&text, "attr_filter.wasm"),
                    column: 8,
                },
            }
        );
        let limits = p.limits();
        assert_eq!(limits.memory_bytes, 16 << 20);
        assert_eq!(limits.deadline, Duration::from_millis(250));
        assert_eq!(limits.max_batch_messages, 64);
        assert_eq!(
            limits.max_batch_bytes,
            crate::plugin::Limits::default().max_batch_bytes
        );
        assert_eq!(limits.on_failure.mode, crate::plugin::FailMode::Open);
        assert_eq!(limits.on_failure.trip_after, 3);
        assert_eq!(limits.on_failure.max_backoff, Duration::from_secs(120));

        let defaults = config.plugin("by-content").expect("declared");
        assert_eq!(defaults.path, PathBuf::from("conf/router.wasm"));
        assert_eq!(defaults.config, json!({}));
        assert_eq!(
            (defaults.memory, defaults.deadline, defaults.max_batch),
            (64 << 20, Duration::from_millis(100), 256)
        );
        assert_eq!(defaults.on_failure, OnFailure::default());
        assert_eq!(defaults.on_failure.mode, FailMode::Closed);
        let names: Vec<&str> = config.plugins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["drop-debug", "by-content"]);

        let shown = serde_json::to_value(&config).expect("serializable");
        assert_eq!(shown["plugins"][0]["deadline"], "250ms");
        assert_eq!(shown["plugins"][0]["on_failure"]["mode"], "open");
        assert_eq!(shown["plugins"][0]["config"]["deny"][0], "debug");
        assert!(shown["plugins"][0].get("location").is_none());
    }

    #[test]
    fn paths_resolve_against_the_config_files_directory() {
        let text = with_plugins("", TWO_PLUGINS);
        let at = |file: &str| {
            let config =
                Config::parse_with_env(&text, file, &|_| None).unwrap_or_else(|e| panic!("{e}"));
            config
                .plugins
                .iter()
                .map(|p| p.path.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            at("dir/x.toml"),
            [
                PathBuf::from("dir/plugins/attr_filter.wasm"),
                PathBuf::from("/opt/switchyard/router.wasm")
            ]
        );
        assert_eq!(at("x.toml")[0], PathBuf::from("plugins/attr_filter.wasm"));
        assert_eq!(
            at("/etc/switchyard/x.toml")[0],
            PathBuf::from("/etc/switchyard/plugins/attr_filter.wasm")
        );
        // The file is not opened: it does not exist, and that is for the
        // loader to report.
        let config = valid(&text);
        let p = config.plugin("drop-debug").expect("declared");
        let problem = p.problem("t.toml", "cannot read the module: No such file");
        assert_eq!(
            problem.to_string(),
            format!(
                "t.toml:{}:8: plugin \"drop-debug\": cannot read the module: No such file",
                line_of(&text, "attr_filter.wasm")
            )
        );
        let all = crate::config::ConfigErrors::from_problems(vec![problem]);
        assert_eq!(all.len(), 1);
    }

    #[test]
    fn env_substitution_works_in_paths() {
        let text = with_plugins("", TWO_PLUGINS).replace("plugins/", "${PLUGIN_DIR}/");
        let env = |name: &str| (name == "PLUGIN_DIR").then(|| "/srv/wasm".to_owned());
        let config =
            Config::parse_with_env(&text, "t.toml", &env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.plugins[0].path,
            PathBuf::from("/srv/wasm/attr_filter.wasm")
        );
    }

    #[test]
    fn config_tables_become_json() {
        let text = with_plugins(
            "",
            r#"
[[plugin]]
name = "p"
path = "p.wasm"

[plugin.config]
key = "line"
allow = ["1", "2"]
compare = [{ key = "temp", op = "gt", value = 30.5 }, { key = "x", op = "eq", value = -2 }]
nested = { deep = { list = [[1, 2], [true]], empty = {} } }
since = 1979-05-27T07:32:00Z
day = 1979-05-27
"#,
        );
        let config = valid(&text);
        assert_eq!(
            config.plugins[0].config,
            json!({
                "key": "line",
                "allow": ["1", "2"],
                "compare": [
                    { "key": "temp", "op": "gt", "value": 30.5 },
                    { "key": "x", "op": "eq", "value": -2 }
                ],
                "nested": { "deep": { "list": [[1, 2], [true]], "empty": {} } },
                "since": "1979-05-27T07:32:00Z",
                "day": "1979-05-27",
            })
        );
    }

    #[test]
    fn non_finite_floats_are_refused_where_written() {
        let text = with_plugins(
            "",
            "[[plugin]]\nname = \"p\"\npath = \"p.wasm\"\nconfig = { ok = 1.5, limit = nan, list = [1.0, -inf], \"odd key\" = { x = inf } }",
        );
        let got = problems(&text);
        let line = line_of(&text, "limit = nan");
        assert_eq!(got.len(), 3, "{got:#?}");
        let col = |needle: &str| {
            text.lines()
                .nth(line - 1)
                .expect("line")
                .find(needle)
                .expect("in line")
                + 1
        };
        assert_eq!(
            got[0],
            format!(
                "t.toml:{line}:{}: plugin \"p\": config.limit: NaN is not a finite number, which JSON cannot hold",
                col("nan")
            )
        );
        assert_eq!(
            got[1],
            format!(
                "t.toml:{line}:{}: plugin \"p\": config.list[1]: -inf is not a finite number, which JSON cannot hold",
                col("[1.0")
            )
        );
        assert!(
            got[2].contains("config.\"odd key\".x: inf is not a finite number"),
            "{got:#?}"
        );
    }

    #[test]
    fn each_range_error_at_its_line() {
        let text = with_plugins(
            "",
            r#"[[plugin]]
name = "p"
path = "p.wasm"
memory = "512KiB"
deadline = "11s"
max_batch = 5000
on_failure = { mode = "half", trip_after = 0, backoff = "5ms", max_backoff = "2h" }
"#,
        );
        let got = problems(&text);
        let line = |needle| line_of(&text, needle);
        let want = [
            format!(
                "t.toml:{}:10: plugin \"p\": memory: must be from 1MiB to 256MiB, got 512KiB",
                line("512KiB")
            ),
            format!(
                "t.toml:{}:12: plugin \"p\": deadline: must be from 1ms to 10s, got 11s",
                line("11s")
            ),
            format!(
                "t.toml:{}:13: plugin \"p\": max_batch: must be from 1 to 4096, got 5000",
                line("5000")
            ),
        ];
        assert_eq!(got[..3], want, "{got:#?}");
        let on_failure = line("on_failure");
        assert_eq!(got.len(), 7, "{got:#?}");
        for (problem, needle) in got[3..].iter().zip([
            "on_failure.mode: \"half\" is not one of \"open\", \"closed\"",
            "on_failure.trip_after: must be from 1 to 1000, got 0",
            "on_failure.backoff: must be from 10ms to 10m, got 5ms",
            "on_failure.max_backoff: must be from 10ms to 1h, got 2h",
        ]) {
            assert!(
                problem.starts_with(&format!("t.toml:{on_failure}:")) && problem.contains(needle),
                "{problem:?} should contain {needle:?}"
            );
        }
        let got = problems(&with_plugins(
            "",
            "[[plugin]]\nname = \"p\"\npath = \"p.wasm\"\non_failure = { backoff = \"10s\", max_backoff = \"5s\" }",
        ));
        assert_one(
            &got,
            "on_failure.max_backoff: 5s is shorter than backoff (10s)",
        );
        // An omitted max_backoff is never shorter than backoff.
        let config = valid(&with_plugins(
            "",
            "[[plugin]]\nname = \"p\"\npath = \"p.wasm\"\non_failure = { backoff = \"5m\" }",
        ));
        assert_eq!(
            config.plugins[0].on_failure.max_backoff,
            Duration::from_secs(300)
        );
    }

    #[test]
    fn unknown_keys_and_missing_path() {
        let text = with_plugins(
            "",
            "[[plugin]]\nname = \"p\"\npath = \"p.wasm\"\nmax_bach = 5\non_failure = { mod = \"open\", trip = 3 }",
        );
        let got = problems(&text);
        assert_eq!(got.len(), 3, "{got:#?}");
        assert_eq!(
            got[0],
            format!(
                "t.toml:{}:1: plugin \"p\": unknown field `max_bach` (did you mean \"max_batch\"?)",
                line_of(&text, "max_bach")
            )
        );
        assert!(
            got[1]
                .contains("plugin \"p\": unknown field `on_failure.mod` (did you mean \"mode\"?)"),
            "{got:#?}"
        );
        assert!(
            got[2].ends_with("plugin \"p\": unknown field `on_failure.trip`"),
            "{got:#?}"
        );

        let text = with_plugins("", "[[plugin]]\nname = \"p\"\nconfig = { a = 1 }");
        let got = problems(&text);
        assert_one(
            &got,
            &format!(
                "t.toml:{}:1: plugin \"p\": missing field `path`",
                line_of(&text, "[[plugin]]")
            ),
        );
        let got = problems(&with_plugins("", "[[plugin]]\nname = \"p\"\npath = \"\""));
        assert_one(&got, "plugin \"p\": path: is empty");
        let got = problems(&with_plugins(
            "",
            "[[plugin]]\nname = \"p\"\npath = \"p.wasm\"\nconfig = \"level=debug\"",
        ));
        assert_one(&got, "plugin \"p\": invalid type: string \"level=debug\"");
    }

    #[test]
    fn plugin_names_share_the_declared_names() {
        let got = problems(&with_plugins(
            "",
            "[[plugin]]\nname = \"out\"\npath = \"p.wasm\"",
        ));
        assert_one(
            &got,
            "plugin \"out\": name \"out\" is already used by output \"out\" (line 8)",
        );
        let got = problems(&with_plugins(
            "",
            "[[plugin]]\nname = \"a b\"\npath = \"p.wasm\"",
        ));
        assert_one(&got, "plugin #1: name: \"a b\" is not a valid name");
    }
}
