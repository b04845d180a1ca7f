//! Shared pieces of the plugin end-to-end suites (`router_plugins*.rs`):
//! the config head, outputs and probe route they build on, publishing,
//! settling on counts, and reading plugin metrics and admin answers.

use std::collections::BTreeMap;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use super::peer::{Msg, Peer};
pub use super::reload::admin_json;
use super::{DEADLINE, Router, Scrape};

/// The router, the HTTP input `api` (probes, end markers, publishing) and
/// the ZeroMQ input `devices`, whose envelope carries attributes.
pub const HEAD: &str = r#"
[router]
admin = "127.0.0.1:0"

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"

[[input]]
name = "devices"
kind = "zmq-sub"
bind = "tcp://127.0.0.1:0"
envelope = "topic-attrs-payload"
"#;

/// A bound `zmq-pub` output whose envelope carries attributes.
pub fn output(name: &str) -> String {
    format!(
        "\n[[output]]\nname = \"{name}\"\nkind = \"zmq-pub\"\nbind = \"tcp://127.0.0.1:0\"\nenvelope = \"topic-attrs-payload\"\n"
    )
}

/// The `probe` route (no plugin) to `outputs`, for
/// [`Router::sync_subscribers`] and end markers.
pub fn probe_route(outputs: &[&str]) -> String {
    let to: Vec<String> = outputs.iter().map(|o| format!("{o:?}")).collect();
    format!(
        "\n[[route]]\nname = \"probe\"\nmatch = \"probe\"\nto = [{}]\n",
        to.join(", ")
    )
}

/// What `sub` received up to an end marker, without the probes. Call once
/// the routes feeding it are idle: its queue is FIFO, so the marker comes
/// after everything they delivered.
pub fn received(router: &Router, sub: &mut Peer) -> Result<Vec<Msg>> {
    let got = sub.recv_through_marker(router, "api", "probe")?;
    Ok(got.into_iter().filter(|m| m.topic() != "probe").collect())
}

/// The attributes frame of a `topic-attrs-payload` message.
pub fn attrs(m: &Msg) -> Result<BTreeMap<String, String>> {
    let frame = m.frames.get(1).context("no attributes frame")?;
    serde_json::from_str(frame).with_context(|| format!("attributes of {m:?}"))
}

/// Waits until each route of `want` has been offered exactly its count and
/// every one has left it (delivered, filtered, dead-lettered or dropped),
/// on a scrape where every route is conserved: the router updates a
/// drop's outcome and its reason one after the other, so a scrape between
/// the two would see them apart.
pub fn settle(router: &Router, want: &[(&str, u64)]) -> Result<Scrape> {
    let s = router.wait_scrape(
        &format!("routes {want:?} offered and idle"),
        "switchyard_",
        DEADLINE,
        |s| {
            want.iter().all(|(route, n)| {
                let r = s.route(route);
                r.offered == *n && r.depth == 0 && r.left() == *n && r.conserved()
            })
        },
    )?;
    Ok(s)
}

/// Publishes `messages` (`[topic, attributes JSON, payload]`) from a
/// libzmq XPUB publisher on input `devices`, once it sees the router's
/// subscription to each of `prefixes`.
pub fn publish_zmq(router: &Router, prefixes: &[&str], messages: &[[String; 3]]) -> Result<Peer> {
    let mut publisher = Peer::xpub(&router.input_endpoint("devices")?, prefixes)?;
    let frames: Vec<Vec<&str>> = messages
        .iter()
        .map(|m| m.iter().map(String::as_str).collect())
        .collect();
    let refs: Vec<&[&str]> = frames.iter().map(Vec::as_slice).collect();
    publisher.send(&refs)?;
    Ok(publisher)
}

/// Publishes `messages` as one JSON batch on input `api`; all admitted.
pub fn publish_http(router: &Router, messages: Vec<Value>) -> Result<()> {
    let n = messages.len();
    let resp = router
        .http("api")?
        .post_json("/v1/publish", &json!({ "messages": messages }))?;
    ensure!(
        resp.status == 202,
        "publish: {} {}",
        resp.status,
        resp.text()
    );
    ensure!(resp.ids()?.len() == n, "all {n} admitted: {}", resp.text());
    Ok(())
}

/// `switchyard_plugin_calls_total` of `plugin`.
pub fn calls(s: &Scrape, plugin: &str) -> u64 {
    s.count("switchyard_plugin_calls_total", &[("plugin", plugin)])
}

/// `switchyard_plugin_traps_total` of `plugin` for `reason`.
pub fn traps(s: &Scrape, plugin: &str, reason: &str) -> u64 {
    s.count(
        "switchyard_plugin_traps_total",
        &[("plugin", plugin), ("reason", reason)],
    )
}

/// `switchyard_plugin_traps_total` of `plugin`, all reasons.
pub fn all_traps(s: &Scrape, plugin: &str) -> u64 {
    s.sum("switchyard_plugin_traps_total", &[("plugin", plugin)]) as u64
}

/// The entry called `name` of the array `key` in an admin answer.
pub fn named<'a>(v: &'a Value, key: &str, name: &str) -> Result<&'a Value> {
    v[key]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == name))
        .with_context(|| format!("no {key} entry {name:?} in {v}"))
}

/// The deadline of plugins that behave: the default (100ms) is wall-clock
/// time, which a busy 2-core machine can let pass while a call's thread
/// waits for a core.
pub const CALM: &str = "deadline = \"5s\"";

/// A healthy plugin's settings: `config` and [`CALM`].
pub fn healthy(config: &str) -> String {
    format!("{config}\n{CALM}")
}

/// The level attribute message `i` of the filter tests carries.
pub fn level(i: usize) -> Option<&'static str> {
    if i % 10 == 9 {
        return None;
    }
    Some(["debug", "info", "warn"][i % 3])
}
