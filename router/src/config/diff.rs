//! What a reload would change: [`Config::diff`] compares the running config
//! with a new one, entry by entry and by name, and says which entries were
//! added, removed, renamed or changed (and in which fields), and which
//! changes only take effect at the next restart. A reload applies it; a dry
//! run shows it.
//!
//! Only what matters to the running router counts: the order of entries
//! in the file, and where an entry is written (a plugin's
//! [`location`](super::Plugin::location)), do not. A plugin's module file
//! is not read here; the reload adds what it finds there with
//! [`Diff::plugin_module_changed`].
//!
//! Each comparison destructures its struct without `..`, so a field added
//! to the config does not compile until it is compared here.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{
    Attach, Config, HttpInput, Input, InputKind, Output, OutputKind, Plugin, QueueConfig, Route,
    Router, ZmqOptions, ZmqSocket,
};

/// What a reload from one config to another would change.
///
/// Serialized (by `POST /v1/reload?dry_run=true` and
/// `switchyard validate --against URL`) with every key always present:
///
/// ```json
/// {
///   "router": ["name", "admin"],
///   "routes": {
///     "added": ["audit"],
///     "removed": ["legacy"],
///     "changed": [{ "name": "telemetry", "fields": ["match", "filters"] }],
///     "renamed": [{ "old": "jobs", "new": "work" }]
///   },
///   "plugins": {
///     "added": [],
///     "removed": [],
///     "changed": [{ "name": "drop-debug", "fields": ["config"] }],
///     "renamed": []
///   },
///   "inputs": {
///     "added": [],
///     "removed": [],
///     "changed": [{ "name": "api", "fields": ["listen"] }],
///     "renamed": []
///   },
///   "outputs": { "added": [], "removed": [], "changed": [], "renamed": [] },
///   "restart_required": ["router.admin", "input \"api\""]
/// }
/// ```
///
/// Field names are the config file's keys (`match`, not `pattern`); a
/// route's queue settings are reported one by one (`queue.capacity`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Diff {
    /// The `[router]` keys that changed, in the section's order: `name`,
    /// `admin`, `shutdown_grace`, `log_level`, `plugin_cache`. Only `name`
    /// reloads live.
    pub router: Vec<String>,
    /// `[[route]]`s, the only section where renames are detected. Fields:
    /// `match`, `attributes`, `filters`, `router`, `on_error`,
    /// `dead_letter`, `to`, `queue.capacity`, `queue.max_bytes`,
    /// `queue.when_full`, `queue.block_timeout`. A reordered `filters` or
    /// `to` list counts as changed. A route whose plugins or outputs
    /// changed is not itself changed: see those sections.
    pub routes: Changes,
    /// `[[plugin]]`s. Fields: `path`, `config`, `memory`, `deadline`,
    /// `max_batch`, `on_failure`, and `module` when the reload found a new
    /// build of the file ([`Diff::plugin_module_changed`]).
    pub plugins: Changes,
    /// `[[input]]`s. Fields are the entry's keys: `kind`, `bind`, `connect`,
    /// `listen`, `envelope`, `max_body`, `plain`, ... Every change is
    /// restart required, for now.
    pub inputs: Changes,
    /// `[[output]]`s, as for inputs. Every change is restart required, for
    /// now.
    pub outputs: Changes,
    /// Changes the reload does not apply: they take effect at the next
    /// restart. One entry per `[router]` key (`router.admin`) and per
    /// added, removed or changed input or output (`input "api"`,
    /// `output "dashboard"`), in that order, each part sorted by name.
    pub restart_required: Vec<String>,
}

/// The changes to one section of the file, entries named as in the file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Changes {
    /// Entries only in the new config, in its file order.
    pub added: Vec<String>,
    /// Entries only in the old config, sorted by name.
    pub removed: Vec<String>,
    /// Entries in both whose settings differ, sorted by name.
    pub changed: Vec<Changed>,
    /// Entries whose name alone changed: every other field is equal. Each
    /// is in neither `added` nor `removed`. In the new config's file order.
    /// Routes only (a renamed route keeps its queue); empty elsewhere.
    pub renamed: Vec<Renamed>,
}

/// One entry present in both configs with different settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    /// The entry's name.
    pub name: String,
    /// The keys that differ, in the order the entry's type declares them.
    pub fields: Vec<String>,
}

/// An entry whose name alone changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renamed {
    /// Its name in the old config.
    pub old: String,
    /// Its name in the new config.
    pub new: String,
}

impl Config {
    /// What a reload from `self` (the running config) to `new` would
    /// change. Entries are matched by name; the order of entries and where
    /// they are written do not count.
    pub fn diff(&self, new: &Config) -> Diff {
        let router = router_fields(&self.router, &new.router);
        let mut routes = section(&self.routes, &new.routes, |r| &r.name, route_fields);
        find_renames(&mut routes, &self.routes, &new.routes);
        let plugins = section(&self.plugins, &new.plugins, |p| &p.name, plugin_fields);
        let inputs = section(&self.inputs, &new.inputs, |i| &i.name, input_fields);
        let outputs = section(&self.outputs, &new.outputs, |o| &o.name, output_fields);

        let mut restart_required: Vec<String> = router
            .iter()
            .filter(|field| *field != "name")
            .map(|field| format!("router.{field}"))
            .collect();
        for (kind, changes) in [("input", &inputs), ("output", &outputs)] {
            let mut names: Vec<&str> = changes.names().collect();
            names.sort_unstable();
            restart_required.extend(names.into_iter().map(|n| format!("{kind} {n:?}")));
        }
        Diff {
            router,
            routes,
            plugins,
            inputs,
            outputs,
            restart_required,
        }
    }
}

impl Diff {
    /// True when the reload would change nothing.
    pub fn is_empty(&self) -> bool {
        self.router.is_empty()
            && self.routes.is_empty()
            && self.plugins.is_empty()
            && self.inputs.is_empty()
            && self.outputs.is_empty()
            && self.restart_required.is_empty()
    }

    /// Records that the module file of `plugin` (a plugin of the new
    /// config) holds a new build, though its entry may be unchanged: the
    /// plugin is listed as changed with the field `module`. Nothing
    /// happens for a plugin the diff already lists as added (it is loaded
    /// anyway) or removed.
    pub fn plugin_module_changed(&mut self, plugin: &str) {
        let plugins = &mut self.plugins;
        if plugins.added.iter().chain(&plugins.removed).any(|p| p == plugin) {
            return;
        }
        match plugins
            .changed
            .binary_search_by(|c| c.name.as_str().cmp(plugin))
        {
            Ok(i) => {
                let fields = &mut plugins.changed[i].fields;
                if !fields.iter().any(|f| f == "module") {
                    fields.push("module".to_owned());
                }
            }
            Err(i) => plugins.changed.insert(
                i,
                Changed {
                    name: plugin.to_owned(),
                    fields: vec!["module".to_owned()],
                },
            ),
        }
    }
}

impl Changes {
    /// True when nothing in the section changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.renamed.is_empty()
    }

    /// Every name involved: added, removed, changed, and both names of a
    /// rename.
    fn names(&self) -> impl Iterator<Item = &str> {
        self.added
            .iter()
            .chain(&self.removed)
            .chain(self.changed.iter().map(|c| &c.name))
            .chain(self.renamed.iter().flat_map(|r| [&r.old, &r.new]))
            .map(String::as_str)
    }
}

/// One line per change, for logs and `switchyard validate --against`:
///
/// ```text
/// [router]: changed name, admin
/// route "audit": added
/// route "legacy": removed
/// route "jobs": renamed to "work"
/// route "telemetry": changed match, filters
/// restart required: router.admin
/// ```
///
/// `no changes` when there are none.
impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut lines: Vec<String> = Vec::new();
        if !self.router.is_empty() {
            lines.push(format!("[router]: changed {}", self.router.join(", ")));
        }
        for (kind, changes) in [
            ("route", &self.routes),
            ("plugin", &self.plugins),
            ("input", &self.inputs),
            ("output", &self.outputs),
        ] {
            let Changes {
                added,
                removed,
                changed,
                renamed,
            } = changes;
            lines.extend(added.iter().map(|n| format!("{kind} {n:?}: added")));
            lines.extend(removed.iter().map(|n| format!("{kind} {n:?}: removed")));
            lines.extend(
                renamed
                    .iter()
                    .map(|r| format!("{kind} {:?}: renamed to {:?}", r.old, r.new)),
            );
            lines.extend(
                changed
                    .iter()
                    .map(|c| format!("{kind} {:?}: changed {}", c.name, c.fields.join(", "))),
            );
        }
        lines.extend(
            self.restart_required
                .iter()
                .map(|r| format!("restart required: {r}")),
        );
        if lines.is_empty() {
            f.write_str("no changes")
        } else {
            f.write_str(&lines.join("\n"))
        }
    }
}

/// Added, removed and changed entries of one section, matched by name.
fn section<T>(
    old: &[T],
    new: &[T],
    name: impl Fn(&T) -> &String,
    fields: impl Fn(&T, &T) -> Vec<&'static str>,
) -> Changes {
    let old_by_name: BTreeMap<&String, &T> = old.iter().map(|e| (name(e), e)).collect();
    let new_by_name: BTreeMap<&String, &T> = new.iter().map(|e| (name(e), e)).collect();
    let added = new
        .iter()
        .map(&name)
        .filter(|n| !old_by_name.contains_key(n))
        .cloned()
        .collect();
    // Both walks are in name order, so both lists come out sorted.
    let removed = old_by_name
        .keys()
        .filter(|n| !new_by_name.contains_key(*n))
        .map(|n| (*n).clone())
        .collect();
    let changed = old_by_name
        .iter()
        .filter_map(|(n, o)| {
            let differ = fields(o, new_by_name.get(n)?);
            (!differ.is_empty()).then(|| Changed {
                name: (*n).clone(),
                fields: differ.into_iter().map(str::to_owned).collect(),
            })
        })
        .collect();
    Changes {
        added,
        removed,
        changed,
        renamed: Vec::new(),
    }
}

/// Pairs each added route with a removed one equal to it in every field
/// but the name (the first such by name), and moves the pair to `renamed`.
fn find_renames(routes: &mut Changes, old: &[Route], new: &[Route]) {
    fn named<'a>(list: &'a [Route], name: &str) -> Option<&'a Route> {
        list.iter().find(|r| r.name == name)
    }
    let mut added = Vec::new();
    for name in std::mem::take(&mut routes.added) {
        let twin = named(new, &name).and_then(|n| {
            routes.removed.iter().position(|removed| {
                named(old, removed).is_some_and(|o| route_fields(o, n).is_empty())
            })
        });
        match twin {
            Some(i) => {
                let old = routes.removed.remove(i);
                routes.renamed.push(Renamed { old, new: name });
            }
            None => added.push(name),
        }
    }
    routes.added = added;
}

/// Collects the names of the fields that differ.
#[derive(Default)]
struct Fields(Vec<&'static str>);

impl Fields {
    fn check<T: PartialEq>(&mut self, field: &'static str, old: &T, new: &T) {
        if old != new {
            self.0.push(field);
        }
    }
}

fn router_fields(old: &Router, new: &Router) -> Vec<String> {
    let Router {
        name,
        admin,
        shutdown_grace,
        log_level,
        plugin_cache,
    } = old;
    let mut f = Fields::default();
    f.check("name", name, &new.name);
    f.check("admin", admin, &new.admin);
    f.check("shutdown_grace", shutdown_grace, &new.shutdown_grace);
    f.check("log_level", log_level, &new.log_level);
    f.check("plugin_cache", plugin_cache, &new.plugin_cache);
    f.0.into_iter().map(str::to_owned).collect()
}

/// Every field of a route but its name.
fn route_fields(old: &Route, new: &Route) -> Vec<&'static str> {
    let Route {
        name: _,
        pattern,
        attributes,
        filters,
        router,
        on_error,
        dead_letter,
        to,
        queue,
    } = old;
    let mut f = Fields::default();
    f.check("match", pattern, &new.pattern);
    f.check("attributes", attributes, &new.attributes);
    f.check("filters", filters, &new.filters);
    f.check("router", router, &new.router);
    f.check("on_error", on_error, &new.on_error);
    f.check("dead_letter", dead_letter, &new.dead_letter);
    f.check("to", to, &new.to);
    let QueueConfig {
        capacity,
        max_bytes,
        when_full,
        block_timeout,
    } = queue;
    f.check("queue.capacity", capacity, &new.queue.capacity);
    f.check("queue.max_bytes", max_bytes, &new.queue.max_bytes);
    f.check("queue.when_full", when_full, &new.queue.when_full);
    f.check("queue.block_timeout", block_timeout, &new.queue.block_timeout);
    f.0
}

/// Every field of a plugin entry but its name and where it is written.
fn plugin_fields(old: &Plugin, new: &Plugin) -> Vec<&'static str> {
    let Plugin {
        name: _,
        path,
        config,
        memory,
        deadline,
        max_batch,
        on_failure,
        location: _,
    } = old;
    let mut f = Fields::default();
    f.check("path", path, &new.path);
    f.check("config", config, &new.config);
    f.check("memory", memory, &new.memory);
    f.check("deadline", deadline, &new.deadline);
    f.check("max_batch", max_batch, &new.max_batch);
    f.check("on_failure", on_failure, &new.on_failure);
    f.0
}

fn input_fields(old: &Input, new: &Input) -> Vec<&'static str> {
    let Input { name: _, kind } = old;
    match (kind, &new.kind) {
        (InputKind::ZmqSub(a), InputKind::ZmqSub(b))
        | (InputKind::ZmqPull(a), InputKind::ZmqPull(b)) => socket_fields(Fields::default(), a, b),
        (InputKind::ZmqSub(a), InputKind::ZmqPull(b))
        | (InputKind::ZmqPull(a), InputKind::ZmqSub(b)) => {
            socket_fields(Fields(vec!["kind"]), a, b)
        }
        (InputKind::Http(a), InputKind::Http(b)) => http_fields(a, b),
        _ => vec!["kind"],
    }
}

fn output_fields(old: &Output, new: &Output) -> Vec<&'static str> {
    let Output { name: _, kind } = old;
    match (kind, &new.kind) {
        (OutputKind::ZmqPub(a), OutputKind::ZmqPub(b))
        | (OutputKind::ZmqPush(a), OutputKind::ZmqPush(b)) => {
            socket_fields(Fields::default(), a, b)
        }
        (OutputKind::ZmqPub(a), OutputKind::ZmqPush(b))
        | (OutputKind::ZmqPush(a), OutputKind::ZmqPub(b)) => {
            socket_fields(Fields(vec!["kind"]), a, b)
        }
    }
}

fn http_fields(old: &HttpInput, new: &HttpInput) -> Vec<&'static str> {
    let HttpInput {
        listen,
        max_body,
        header_timeout,
        body_timeout,
        max_batch,
    } = old;
    let mut f = Fields::default();
    f.check("listen", listen, &new.listen);
    f.check("max_body", max_body, &new.max_body);
    f.check("header_timeout", header_timeout, &new.header_timeout);
    f.check("body_timeout", body_timeout, &new.body_timeout);
    f.check("max_batch", max_batch, &new.max_batch);
    f.0
}

/// A ZeroMQ entry's keys as written: its options sit beside `bind`.
fn socket_fields(mut f: Fields, old: &ZmqSocket, new: &ZmqSocket) -> Vec<&'static str> {
    let ZmqSocket {
        attach,
        envelope,
        options,
    } = old;
    match (attach, &new.attach) {
        (a, b) if a == b => {}
        (Attach::Bind(_), Attach::Bind(_)) => f.0.push("bind"),
        (Attach::Connect(_), Attach::Connect(_)) => f.0.push("connect"),
        _ => f.0.extend(["bind", "connect"]),
    }
    f.check("envelope", envelope, &new.envelope);
    let ZmqOptions {
        max_frame_size,
        max_message_size,
        max_frames,
        handshake_timeout,
        heartbeat_interval,
        heartbeat_timeout,
        max_connections,
        send_hwm,
        send_hwm_bytes,
        recv_hwm,
        reconnect_interval,
        reconnect_interval_max,
        send_timeout,
        slow_subscriber_timeout,
        plain,
        identity,
    } = options;
    let n = &new.options;
    f.check("max_frame_size", max_frame_size, &n.max_frame_size);
    f.check("max_message_size", max_message_size, &n.max_message_size);
    f.check("max_frames", max_frames, &n.max_frames);
    f.check("handshake_timeout", handshake_timeout, &n.handshake_timeout);
    f.check(
        "heartbeat_interval",
        heartbeat_interval,
        &n.heartbeat_interval,
    );
    f.check("heartbeat_timeout", heartbeat_timeout, &n.heartbeat_timeout);
    f.check("max_connections", max_connections, &n.max_connections);
    f.check("send_hwm", send_hwm, &n.send_hwm);
    f.check("send_hwm_bytes", send_hwm_bytes, &n.send_hwm_bytes);
    f.check("recv_hwm", recv_hwm, &n.recv_hwm);
    f.check(
        "reconnect_interval",
        reconnect_interval,
        &n.reconnect_interval,
    );
    f.check(
        "reconnect_interval_max",
        reconnect_interval_max,
        &n.reconnect_interval_max,
    );
    f.check("send_timeout", send_timeout, &n.send_timeout);
    f.check(
        "slow_subscriber_timeout",
        slow_subscriber_timeout,
        &n.slow_subscriber_timeout,
    );
    // Passwords are compared, never shown: only the key is reported.
    f.check("plain", plain, &n.plain);
    f.check("identity", identity, &n.identity);
    f.0
}
