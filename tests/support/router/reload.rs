//! Config reloads seen from outside the router: saving a file the ways
//! editors do, asking through `POST /v1/reload`, and reading what happened
//! from `/metrics` (`switchyard_config_reloads_total{result}`,
//! `switchyard_config_generation`) and the admin API.
//!
//! A reload started by a saved file finishes at a time the test does not
//! know (after the watcher's debounce): wait for the reload counters
//! ([`wait_attempts`]), never for a time.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, ensure};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::http::{self, Client, Response};
use super::plugins::entry_at;
use super::{DEADLINE, Router};

/// The reload counters of one scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloads {
    /// `switchyard_config_reloads_total{result="success"}`.
    pub success: u64,
    /// `switchyard_config_reloads_total{result="failure"}`.
    pub failure: u64,
    /// `switchyard_config_generation`.
    pub generation: u64,
}

impl Reloads {
    /// Reloads tried, whatever their result.
    pub fn attempts(&self) -> u64 {
        self.success + self.failure
    }
}

/// The reload counters now.
///
/// # Errors
/// When `/metrics` fails or has no generation gauge.
pub fn reloads(router: &Router) -> Result<Reloads> {
    let s = router.scrape()?;
    let result = |r: &str| s.count("switchyard_config_reloads_total", &[("result", r)]);
    Ok(Reloads {
        success: result("success"),
        failure: result("failure"),
        generation: s
            .value("switchyard_config_generation", &[])
            .ok_or_else(|| anyhow!("no switchyard_config_generation in /metrics"))?
            as u64,
    })
}

/// Waits until at least `attempts` reloads have been tried (succeeded or
/// failed); returns the counters of the scrape after the one that saw
/// them. (A scrape reads the generation gauge before the reload counters,
/// so the one that first sees a reload counted may have read the gauge just
/// before that reload set it; the next one reads both after.)
///
/// # Errors
/// When the deadline ([`DEADLINE`]) passes first.
pub fn wait_attempts(router: &Router, attempts: u64) -> Result<Reloads> {
    let mut last = None;
    let found = super::until(
        &format!("{attempts} reloads tried"),
        DEADLINE,
        || match reloads(router) {
            Ok(r) if r.attempts() >= attempts => Some(r),
            Ok(r) => {
                last = Some(r);
                None
            }
            Err(_) => None,
        },
    );
    found.map_err(|e| e.context(format!("last counters: {last:?}")))?;
    reloads(router)
}

/// `POST /v1/reload` with `query` (`""` or `"?dry_run=true"`) and an
/// optional config text as the body. The answer comes once the reload is
/// done (applied or refused).
///
/// # Errors
/// When the admin listener does not answer.
pub fn post(router: &Router, query: &str, body: Option<&str>) -> Result<Response> {
    Client::new(router.admin()).post(
        &format!("/v1/reload{query}"),
        &[("connection", "close")],
        body.unwrap_or("").as_bytes(),
    )
}

/// `GET path` on the admin listener, as JSON (answer 200).
///
/// # Errors
/// When the answer is not 200 JSON.
pub fn admin_json(router: &Router, path: &str) -> Result<Value> {
    let resp = http::get(router.admin(), path)?;
    ensure!(
        resp.status == 200,
        "{path}: {} {}",
        resp.status,
        resp.text()
    );
    resp.json()
}

/// `/v1/status`.
///
/// # Errors
/// As [`admin_json`].
pub fn status(router: &Router) -> Result<Value> {
    admin_json(router, "/v1/status")
}

/// The routes in force (`/v1/routes`), without those still draining after
/// a reload removed them.
///
/// # Errors
/// As [`admin_json`].
pub fn routes(router: &Router) -> Result<Vec<Value>> {
    let v = admin_json(router, "/v1/routes")?;
    let all = v["routes"]
        .as_array()
        .with_context(|| format!("/v1/routes has no routes array: {v}"))?;
    Ok(all
        .iter()
        .filter(|r| r["draining"] != Value::Bool(true))
        .cloned()
        .collect())
}

/// The names of the routes in force, in the router's order.
///
/// # Errors
/// As [`admin_json`].
pub fn route_names(router: &Router) -> Result<Vec<String>> {
    Ok(routes(router)?
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect())
}

/// The `/v1/plugins` entry of plugin `name`.
///
/// # Errors
/// As [`admin_json`], or when no such plugin is loaded.
pub fn plugin(router: &Router, name: &str) -> Result<Value> {
    let v = admin_json(router, "/v1/plugins")?;
    v["plugins"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == name))
        .cloned()
        .with_context(|| format!("no plugin {name:?} in {v}"))
}

/// Lowercase hex SHA-256 of `bytes`, as `/v1/plugins` shows a module's.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The temporary sibling a save by rename writes first: a dot file beside
/// `path`, as editors name theirs.
fn temp_sibling(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    Ok(path.with_file_name(format!(".{}.swp", name.to_string_lossy())))
}

/// Saves `bytes` as most editors do: writes a temporary file beside
/// `path`, flushes it, then renames it over `path` (one atomic change).
///
/// # Errors
/// When a write or the rename fails.
pub fn save_by_rename(path: &Path, bytes: &[u8]) -> Result<()> {
    let temp = temp_sibling(path)?;
    {
        let mut f =
            std::fs::File::create(&temp).with_context(|| format!("create {}", temp.display()))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("write {}", temp.display()))?;
    }
    std::fs::rename(&temp, path)
        .with_context(|| format!("rename {} to {}", temp.display(), path.display()))
}

/// Saves `bytes` in place: truncates `path` and writes it again (the same
/// file, as `vi` with `backupcopy=yes` or `echo > file` does).
///
/// # Errors
/// When the write fails.
pub fn save_in_place(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("open {} to write in place", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("write {}", path.display()))
}

/// Whether `text` names a config file and line (`FILE:LINE`), as every
/// refused reload's error must.
pub fn names_file_and_line(text: &str, file: &Path) -> bool {
    let file = file.display().to_string();
    text.match_indices(&file).any(|(at, _)| {
        let rest = &text[at + file.len()..];
        rest.strip_prefix(':')
            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
    })
}

/// The versions the stamp plugin is built as, in swap order.
pub const VERSIONS: [&str; 4] = ["v1", "v2", "v3", "v4"];

/// The router, the HTTP input `api`, and the outputs every test config
/// shares: `steady_out` and `stamped_out` (PUSH, workers connect with
/// PULL; `stamped_out` carries attributes), `spare_a` and `spare_b` (PUB,
/// nobody subscribes: what reaches them is dropped as `no_subscriber`).
pub const HEAD: &str = r#"
[router]
admin = "127.0.0.1:0"
shutdown_grace = "1s"

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"
max_body = "4MiB"

[[output]]
name = "steady_out"
kind = "zmq-push"
bind = "tcp://127.0.0.1:0"
send_timeout = "60s"

[[output]]
name = "stamped_out"
kind = "zmq-push"
bind = "tcp://127.0.0.1:0"
envelope = "topic-attrs-payload"
send_timeout = "60s"

[[output]]
name = "spare_a"
kind = "zmq-pub"
bind = "tcp://127.0.0.1:0"

[[output]]
name = "spare_b"
kind = "zmq-pub"
bind = "tcp://127.0.0.1:0"
"#;

/// A `block` queue large enough that the stream never waits long.
pub const BIG_BLOCK_QUEUE: &str =
    r#"queue = { capacity = 100000, when_full = "block", block_timeout = "30s" }"#;

/// A `[[route]]` entry.
pub fn route(name: &str, pattern: &str, filters: &[&str], to: &[&str], queue: &str) -> String {
    let list = |xs: &[&str]| {
        xs.iter()
            .map(|x| format!("{x:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "\n[[route]]\nname = {name:?}\nmatch = {pattern:?}\nfilters = [{}]\nto = [{}]\n{queue}\n",
        list(filters),
        list(to)
    )
}

/// The `stamp` plugin entry for the module at `path`.
pub fn stamp_entry(path: &Path) -> String {
    entry_at("stamp", path, "deadline = \"5s\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_line_are_found() {
        let f = Path::new("/tmp/x/switchyard.toml");
        assert!(names_file_and_line("/tmp/x/switchyard.toml:12:3: bad", f));
        assert!(!names_file_and_line("/tmp/x/switchyard.toml: bad", f));
        assert!(!names_file_and_line("line 12: bad", f));
    }

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
