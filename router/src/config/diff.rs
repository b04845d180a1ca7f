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
    Attach, Authenticator, Config, DealerOutput, Durability, HttpInput, Input, InputKind,
    NatsConnection, Output, OutputKind, Plugin, QueueConfig, Route, Router, WebhookOutput,
    ZmqOptions, ZmqSocket,
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
///   "auth": { "added": [], "removed": [], "changed": [], "renamed": [] },
///   "acl": false,
///   "restart_required": ["router.admin"]
/// }
/// ```
///
/// Field names are the config file's keys (`match`, not `pattern`); a
/// route's queue settings are reported one by one (`queue.capacity`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Diff {
    /// The `[router]` keys that changed, in the section's order: `name`,
    /// `admin`, `shutdown_grace`, `log_level`, `plugin_cache`, `data_dir`.
    /// Only `name` reloads live; a changed `data_dir` is refused outright
    /// ([`Config::reload_conflict`]).
    pub router: Vec<String>,
    /// `[[route]]`s, the only section where renames are detected. Fields:
    /// `match`, `attributes`, `filters`, `router`, `on_error`,
    /// `dead_letter`, `to`, `queue.capacity`, `queue.max_bytes`,
    /// `queue.when_full`, `queue.block_timeout`, `queue.durable` (turned on
    /// or off), and, for a queue durable in both, `queue.max_age`,
    /// `queue.fsync`, `queue.fsync_interval`. A reordered `filters` or
    /// `to` list counts as changed. A route whose plugins or outputs
    /// changed is not itself changed: see those sections.
    pub routes: Changes,
    /// `[[plugin]]`s. Fields: `path`, `config`, `memory`, `deadline`,
    /// `max_batch`, `on_failure`, and `module` when the reload found a new
    /// build of the file ([`Diff::plugin_module_changed`]).
    pub plugins: Changes,
    /// `[[input]]`s. Fields are the entry's keys: `kind`, `bind`, `connect`,
    /// `listen`, `envelope`, `max_body`, `plain`, ... A changed input is
    /// rebuilt by the reload.
    pub inputs: Changes,
    /// `[[output]]`s, as for inputs.
    pub outputs: Changes,
    /// `[[auth]]`s. Fields: `kind`, `keys` (the key file's contents
    /// included), `algorithms`, `issuer`, `audience`, `principal`,
    /// `leeway`, `max_token_size`, `tokens`. Reload live: new requests at
    /// once, open connections at their next message.
    pub auth: Changes,
    /// Whether the `[[acl]]` rules changed (they are not named: any
    /// difference, order included). Reload live, as `auth`.
    pub acl: bool,
    /// Changes the reload does not apply: they take effect at the next
    /// restart. One entry per changed `[router]` key but `name`
    /// (`router.admin`), in the section's order.
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
        let auth = section(&self.auth, &new.auth, |a| &a.name, auth_fields);
        let acl = self.acl != new.acl;

        // Inputs and outputs reload live (rebuilt when changed); of
        // `[router]`, only the name does.
        let mut restart_required: Vec<String> = router
            .iter()
            .filter(|field| !matches!(field.as_str(), "name" | "admin_auth" | "metrics_open"))
            .map(|field| format!("router.{field}"))
            .collect();
        // The dead-letter store is opened once, at start.
        if self.dead_letters != new.dead_letters {
            restart_required.push("dead_letters".to_owned());
        }
        Diff {
            router,
            routes,
            plugins,
            inputs,
            outputs,
            auth,
            acl,
            restart_required,
        }
    }
}

impl Config {
    /// Why a reload from `self` (the running config) to `new` must be
    /// refused as a whole, if it must: `[router] data_dir` changed. The
    /// running router holds that directory locked with the durable queues
    /// in it, so a new one could only be taken by a restart, and applying
    /// the rest of the file would leave routes written for the new
    /// directory running on the old one.
    pub fn reload_conflict(&self, new: &Config) -> Option<String> {
        let (old, new) = (&self.router.data_dir, &new.router.data_dir);
        (old != new).then(|| {
            let shown = |d: &Option<std::path::PathBuf>| match d {
                Some(d) => format!("{d:?}"),
                None => "none".to_owned(),
            };
            format!(
                "[router] data_dir changed from {} to {}: the running router holds its data directory locked, so this needs a restart (nothing was reloaded)",
                shown(old),
                shown(new)
            )
        })
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
            && self.auth.is_empty()
            && !self.acl
            && self.restart_required.is_empty()
    }

    /// Records that the module file of `plugin` (a plugin of the new
    /// config) holds a new build, though its entry may be unchanged: the
    /// plugin is listed as changed with the field `module`. Nothing
    /// happens for a plugin the diff already lists as added (it is loaded
    /// anyway) or removed.
    pub fn plugin_module_changed(&mut self, plugin: &str) {
        let plugins = &mut self.plugins;
        if plugins
            .added
            .iter()
            .chain(&plugins.removed)
            .any(|p| p == plugin)
        {
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
            ("auth", &self.auth),
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
        if self.acl {
            lines.push("[[acl]]: rules changed".to_owned());
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
        data_dir,
        admin_auth,
        metrics_open,
        admin_tls,
    } = old;
    let mut f = Fields::default();
    f.check("name", name, &new.name);
    f.check("admin", admin, &new.admin);
    f.check("shutdown_grace", shutdown_grace, &new.shutdown_grace);
    f.check("log_level", log_level, &new.log_level);
    f.check("plugin_cache", plugin_cache, &new.plugin_cache);
    f.check("data_dir", data_dir, &new.data_dir);
    f.check("admin_auth", admin_auth, &new.admin_auth);
    f.check("metrics_open", metrics_open, &new.metrics_open);
    f.check("admin_tls", admin_tls, &new.admin_tls);
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
        request_timeout,
    } = old;
    let mut f = Fields::default();
    f.check("request_timeout", request_timeout, &new.request_timeout);
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
        durable,
    } = queue;
    f.check("queue.capacity", capacity, &new.queue.capacity);
    f.check("queue.max_bytes", max_bytes, &new.queue.max_bytes);
    f.check("queue.when_full", when_full, &new.queue.when_full);
    f.check(
        "queue.block_timeout",
        block_timeout,
        &new.queue.block_timeout,
    );
    match (durable, &new.queue.durable) {
        (Some(old), Some(new)) => {
            let Durability {
                max_age,
                fsync,
                fsync_interval,
            } = old;
            f.check("queue.max_age", max_age, &new.max_age);
            f.check("queue.fsync", fsync, &new.fsync);
            f.check("queue.fsync_interval", fsync_interval, &new.fsync_interval);
        }
        (None, None) => {}
        // Turned on or off: the durable keys come or go with it.
        _ => f.0.push("queue.durable"),
    }
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
        (InputKind::Nats(a), InputKind::Nats(b)) => {
            let mut f = nats_fields(&a.connection, &b.connection);
            f.check("subjects", &a.subjects, &b.subjects);
            f.check("queue_group", &a.queue_group, &b.queue_group);
            f.check("max_message_size", &a.max_message_size, &b.max_message_size);
            f.check("max_pending", &a.max_pending, &b.max_pending);
            f.0
        }
        (InputKind::NatsJetstream(a), InputKind::NatsJetstream(b)) => {
            let mut f = nats_fields(&a.connection, &b.connection);
            f.check("stream", &a.stream, &b.stream);
            f.check("consumer", &a.consumer, &b.consumer);
            f.check("create", &a.create, &b.create);
            f.check("filter_subject", &a.filter_subject, &b.filter_subject);
            f.check("deliver_policy", &a.deliver_policy, &b.deliver_policy);
            f.check("max_ack_pending", &a.max_ack_pending, &b.max_ack_pending);
            f.check("ack_wait", &a.ack_wait, &b.ack_wait);
            f.check("max_deliver", &a.max_deliver, &b.max_deliver);
            f.check("nak_delay", &a.nak_delay, &b.nak_delay);
            f.check("max_message_size", &a.max_message_size, &b.max_message_size);
            f.check("api_prefix", &a.api_prefix, &b.api_prefix);
            f.0
        }
        (InputKind::ZmqRouter(a), InputKind::ZmqRouter(b)) => {
            let mut f = Fields::default();
            f.check("max_pending", &a.max_pending, &b.max_pending);
            socket_fields(f, &a.socket, &b.socket)
        }
        _ => vec!["kind"],
    }
}

fn output_fields(old: &Output, new: &Output) -> Vec<&'static str> {
    let Output {
        name: _,
        kind,
        retry,
    } = old;
    let mut fields = match (kind, &new.kind) {
        (OutputKind::ZmqPub(a), OutputKind::ZmqPub(b))
        | (OutputKind::ZmqPush(a), OutputKind::ZmqPush(b)) => {
            socket_fields(Fields::default(), a, b)
        }
        (OutputKind::ZmqPub(a), OutputKind::ZmqPush(b))
        | (OutputKind::ZmqPush(a), OutputKind::ZmqPub(b)) => {
            socket_fields(Fields(vec!["kind"]), a, b)
        }
        (OutputKind::ZmqDealer(a), OutputKind::ZmqDealer(b)) => dealer_fields(a, b),
        (OutputKind::Blackhole(_), OutputKind::Blackhole(_)) => Vec::new(),
        (OutputKind::Nats(a), OutputKind::Nats(b)) => {
            let mut f = nats_fields(&a.connection, &b.connection);
            f.check("subject", &a.subject, &b.subject);
            f.0
        }
        (OutputKind::NatsJetstream(a), OutputKind::NatsJetstream(b)) => {
            let mut f = nats_fields(&a.connection, &b.connection);
            f.check("subject", &a.subject, &b.subject);
            f.check("max_ack_pending", &a.max_ack_pending, &b.max_ack_pending);
            f.check("ack_timeout", &a.ack_timeout, &b.ack_timeout);
            f.check("stream", &a.stream, &b.stream);
            f.check("api_prefix", &a.api_prefix, &b.api_prefix);
            f.0
        }
        (OutputKind::Webhook(a), OutputKind::Webhook(b)) => webhook_fields(a, b),
        _ => vec!["kind"],
    };
    if *retry != new.retry {
        fields.push("retry");
    }
    fields
}

fn webhook_fields(old: &WebhookOutput, new: &WebhookOutput) -> Vec<&'static str> {
    let WebhookOutput {
        url,
        encoding,
        max_messages,
        max_bytes,
        max_wait,
        headers,
        bearer_token,
        hmac_secret,
        connect_timeout,
        request_timeout,
        concurrency,
        ca_file,
        client_cert,
    } = old;
    let mut f = Fields::default();
    f.check("url", url, &new.url);
    f.check("encoding", encoding, &new.encoding);
    f.check("max_messages", max_messages, &new.max_messages);
    f.check("max_bytes", max_bytes, &new.max_bytes);
    f.check("max_wait", max_wait, &new.max_wait);
    f.check("headers", headers, &new.headers);
    f.check("bearer_token", bearer_token, &new.bearer_token);
    f.check("hmac_secret", hmac_secret, &new.hmac_secret);
    f.check("connect_timeout", connect_timeout, &new.connect_timeout);
    f.check("request_timeout", request_timeout, &new.request_timeout);
    f.check("concurrency", concurrency, &new.concurrency);
    f.check("ca_file", ca_file, &new.ca_file);
    f.check("client_cert", client_cert, &new.client_cert);
    f.0
}

fn nats_fields(old: &NatsConnection, new: &NatsConnection) -> Fields {
    let NatsConnection {
        servers,
        auth,
        tls,
        connect_timeout,
        reconnect_max,
        required,
    } = old;
    let mut f = Fields::default();
    f.check("servers", servers, &new.servers);
    f.check("auth", auth, &new.auth);
    f.check("tls", tls, &new.tls);
    f.check("connect_timeout", connect_timeout, &new.connect_timeout);
    f.check("reconnect_max", reconnect_max, &new.reconnect_max);
    f.check("required", required, &new.required);
    f
}

fn dealer_fields(old: &DealerOutput, new: &DealerOutput) -> Vec<&'static str> {
    let DealerOutput {
        socket,
        balance,
        weights,
        eject_after,
        probe_interval,
        probe_interval_max,
        max_in_flight,
    } = old;
    let mut f = Fields::default();
    f.check("balance", balance, &new.balance);
    f.check("weights", weights, &new.weights);
    f.check("eject_after", eject_after, &new.eject_after);
    f.check("probe_interval", probe_interval, &new.probe_interval);
    f.check(
        "probe_interval_max",
        probe_interval_max,
        &new.probe_interval_max,
    );
    f.check("max_in_flight", max_in_flight, &new.max_in_flight);
    socket_fields(f, socket, &new.socket)
}

fn http_fields(old: &HttpInput, new: &HttpInput) -> Vec<&'static str> {
    let HttpInput {
        listen,
        max_body,
        header_timeout,
        body_timeout,
        max_batch,
        auth,
        tls,
    } = old;
    let mut f = Fields::default();
    f.check("listen", listen, &new.listen);
    f.check("auth", auth, &new.auth);
    f.check("tls", tls, &new.tls);
    f.check("max_body", max_body, &new.max_body);
    f.check("header_timeout", header_timeout, &new.header_timeout);
    f.check("body_timeout", body_timeout, &new.body_timeout);
    f.check("max_batch", max_batch, &new.max_batch);
    f.0
}

fn auth_fields(old: &Authenticator, new: &Authenticator) -> Vec<&'static str> {
    use super::AuthKind;
    let Authenticator { name: _, kind } = old;
    let mut f = Fields::default();
    match (kind, &new.kind) {
        (AuthKind::Jwt(a), AuthKind::Jwt(b)) => {
            let super::JwtAuth {
                keys,
                algorithms,
                issuer,
                audience,
                principal,
                leeway,
                max_token_size,
            } = a;
            f.check("keys", keys, &b.keys);
            f.check("algorithms", algorithms, &b.algorithms);
            f.check("issuer", issuer, &b.issuer);
            f.check("audience", audience, &b.audience);
            f.check("principal", principal, &b.principal);
            f.check("leeway", leeway, &b.leeway);
            f.check("max_token_size", max_token_size, &b.max_token_size);
        }
        (AuthKind::Token(a), AuthKind::Token(b)) => {
            let super::TokenAuth { path, tokens } = a;
            f.check("tokens_file", path, &b.path);
            f.check("tokens", tokens, &b.tokens);
        }
        (AuthKind::Mtls(a), AuthKind::Mtls(b)) => f.check("principal", a, b),
        _ => f.0.push("kind"),
    }
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
        curve,
        identity,
        anonymous,
        on_forbidden,
    } = options;
    f.check("auth", anonymous, &new.options.anonymous);
    f.check("on_forbidden", on_forbidden, &new.options.on_forbidden);
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
    // Key files are read again by each reload: a rotated key is a change.
    f.check("curve", curve, &n.curve);
    f.check("identity", identity, &n.identity);
    f.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixture::{base, valid};

    const PLUGINS: &str = r#"
[[plugin]]
name = "f"
path = "f.wasm"

[[plugin]]
name = "g"
path = "g.wasm"
"#;
    const OUT2: &str =
        "\n[[output]]\nname = \"out2\"\nkind = \"zmq-pub\"\nbind = \"tcp://127.0.0.1:6557\"";

    /// `base` with a second output, two plugins, and `route_extra` in
    /// route "r".
    fn site(route_extra: &str) -> String {
        format!("{}{PLUGINS}", base("", OUT2, route_extra))
    }

    fn diff(old: &str, new: &str) -> Diff {
        valid(old).diff(&valid(new))
    }

    fn changed(name: &str, fields: &[&str]) -> Changed {
        Changed {
            name: name.into(),
            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
        }
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    /// Entries to arrange into files.
    const IN: &str =
        "[[input]]\nname = \"in\"\nkind = \"zmq-pull\"\nbind = \"tcp://127.0.0.1:5556\"\n";
    const OUT: &str =
        "[[output]]\nname = \"out\"\nkind = \"zmq-push\"\nbind = \"tcp://127.0.0.1:6556\"\n";
    const F: &str = "[[plugin]]\nname = \"f\"\npath = \"f.wasm\"\nconfig = { key = \"level\" }\n";
    const G: &str = "[[plugin]]\nname = \"g\"\npath = \"g.wasm\"\n";
    const A: &str = "[[route]]\nname = \"a\"\nmatch = \"a.>\"\nfilters = [\"f\"]\nto = [\"out\"]\n";
    const B: &str = "[[route]]\nname = \"b\"\nmatch = \"b.>\"\nrouter = \"g\"\nto = [\"out\"]\n";

    fn file(entries: &[&str]) -> String {
        entries.join("\n")
    }

    #[test]
    fn each_webhook_field_is_reported() {
        let hook = |extra: &str| {
            base("", "", "").replace(
                "kind = \"zmq-push\"\nbind = \"tcp://127.0.0.1:6556\"",
                &format!("kind = \"webhook\"\nurl = \"https://h/in\"\n{extra}"),
            )
        };
        let old = hook("");
        assert!(diff(&old, &old).is_empty());
        let cases: &[(&str, &[&str])] = &[
            ("url = \"https://h/other\"", &["url"]),
            ("encoding = \"raw\"", &["encoding"]),
            ("max_messages = 5", &["max_messages"]),
            ("max_bytes = \"64KiB\"", &["max_bytes"]),
            ("max_wait = \"5ms\"", &["max_wait"]),
            ("headers = { \"X-Site\" = \"1\" }", &["headers"]),
            ("bearer_token = \"t\"", &["bearer_token"]),
            ("hmac_secret = \"k\"", &["hmac_secret"]),
            ("connect_timeout = \"1s\"", &["connect_timeout"]),
            ("request_timeout = \"1s\"", &["request_timeout"]),
            ("concurrency = 1", &["concurrency"]),
            ("retry = { max_attempts = 2 }", &["retry"]),
        ];
        for (extra, fields) in cases {
            let new = hook(extra).replacen("url = \"https://h/in\"\nurl", "url", 1);
            let d = diff(&old, &new);
            assert_eq!(d.outputs.changed, [changed("out", fields)], "{extra}");
        }
    }

    #[test]
    fn identical_and_reordered_configs_differ_in_nothing() {
        let text = site("filters = [\"f\"]\nqueue = { capacity = 5 }");
        let d = diff(&text, &text);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(d, Diff::default());
        assert_eq!(d.to_string(), "no changes");

        // Routes, plugins and the sections themselves in another order,
        // so every plugin sits on another line.
        let old = file(&[IN, OUT, F, G, A, B]);
        let new = file(&[B, A, G, OUT, F, IN]);
        let (o, n) = (valid(&old), valid(&new));
        assert_ne!(o.plugins[0].location, n.plugin("f").expect("f").location);
        let d = o.diff(&n);
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn a_plugin_moved_within_the_file_is_unchanged() {
        let old = file(&[IN, OUT, F, G, A, B]);
        let new = file(&[IN, OUT, "# a comment\n# and another\n", G, A, F, B]);
        let (o, n) = (valid(&old), valid(&new));
        // The derived equality sees the move; the diff does not.
        assert_ne!(o.plugin("f"), n.plugin("f"));
        assert!(o.diff(&n).is_empty(), "{:?}", o.diff(&n));
    }

    #[test]
    fn each_route_field_is_reported() {
        let r = site;
        let cases: &[(String, String, &[&str])] = &[
            (r(""), r("").replace("\"jobs.>\"", "\"jobs.*\""), &["match"]),
            (r(""), r("attributes = { site = \"42\" }"), &["attributes"]),
            (
                r("filters = [\"f\"]"),
                r("filters = [\"f\", \"g\"]"),
                &["filters"],
            ),
            (
                r("filters = [\"f\", \"g\"]"),
                r("filters = [\"g\", \"f\"]"),
                &["filters"],
            ),
            (r(""), r("router = \"g\""), &["router"]),
            (
                r("dead_letter = \"out2\""),
                r("dead_letter = \"out2\"\non_error = \"dead_letter\""),
                &["on_error"],
            ),
            (
                r("dead_letter = \"out\""),
                r("dead_letter = \"out2\""),
                &["dead_letter"],
            ),
            (
                r(""),
                r("").replace("[\"out\"]", "[\"out\", \"out2\"]"),
                &["to"],
            ),
            (r(""), r("queue = { capacity = 10 }"), &["queue.capacity"]),
            (
                r(""),
                r("queue = { max_bytes = \"1MiB\" }"),
                &["queue.max_bytes"],
            ),
            (
                r(""),
                r("queue = { when_full = \"block\" }"),
                &["queue.when_full"],
            ),
            (
                r("queue = { when_full = \"block\" }"),
                r("queue = { when_full = \"block\", block_timeout = \"2s\" }"),
                &["queue.block_timeout"],
            ),
            (
                r(""),
                r("filters = [\"f\"]").replace("\"jobs.>\"", "\"jobs.*\""),
                &["match", "filters"],
            ),
        ];
        for (old, new, fields) in cases {
            let d = diff(old, new);
            let want = Diff {
                routes: Changes {
                    changed: vec![changed("r", fields)],
                    ..Changes::default()
                },
                ..Diff::default()
            };
            assert_eq!(d, want, "{fields:?}");
        }
    }

    #[test]
    fn each_plugin_field_is_reported() {
        let with = |extra: &str| file(&[IN, OUT, &format!("{F}{extra}"), G, A, B]);
        let cases = [
            ("", "", "path"),
            ("", "memory = \"16MiB\"", "memory"),
            ("", "deadline = \"1s\"", "deadline"),
            ("", "max_batch = 8", "max_batch"),
            ("", "on_failure = { mode = \"open\" }", "on_failure"),
        ];
        for (old, new, field) in cases {
            let mut new = with(new);
            if field == "path" {
                new = new.replace("\"f.wasm\"", "\"f2.wasm\"");
            }
            let d = diff(&with(old), &new);
            assert_eq!(d.plugins.changed, [changed("f", &[field])], "{field}");
            assert!(
                d.routes.is_empty() && d.restart_required.is_empty(),
                "{d:?}"
            );
        }

        // A changed `config` table is reported; its keys in another order are
        // the same JSON object.
        let old = file(&[IN, OUT, F, G, A]);
        let deny = old.replace(
            "config = { key = \"level\" }",
            "config = { key = \"level\", deny = [\"debug\"] }",
        );
        let deny_reordered = old.replace(
            "config = { key = \"level\" }",
            "config = { deny = [\"debug\"], key = \"level\" }",
        );
        let d = diff(&old, &deny);
        assert_eq!(d.plugins.changed, [changed("f", &["config"])]);
        assert!(diff(&deny, &deny_reordered).is_empty());
    }

    #[test]
    fn routes_and_plugins_added_and_removed() {
        let old = file(&[IN, OUT, F, A]);
        let new = file(&[IN, OUT, G, B]);
        let d = diff(&old, &new);
        assert_eq!(d.routes.added, ["b"]);
        assert_eq!(d.routes.removed, ["a"]);
        assert_eq!(d.plugins.added, ["g"]);
        assert_eq!(d.plugins.removed, ["f"]);
        assert!(d.routes.changed.is_empty() && d.routes.renamed.is_empty());
        assert!(d.restart_required.is_empty());

        // Added in the new file's order; removed sorted by name.
        let c = "[[route]]\nname = \"c\"\nmatch = \"c\"\nto = [\"out\"]\n";
        let d = diff(&file(&[IN, OUT, F, G, B, A]), &file(&[IN, OUT, F, G, c]));
        assert_eq!(d.routes.added, ["c"]);
        assert_eq!(d.routes.removed, ["a", "b"]);
        let d = diff(&file(&[IN, OUT, F, G, c]), &file(&[IN, OUT, F, G, B, A]));
        assert_eq!(d.routes.added, ["b", "a"]);
    }

    #[test]
    fn a_route_renamed_and_nothing_else_is_a_rename() {
        let old = file(&[IN, OUT, F, G, A, B]);
        let renamed = old.replace("name = \"a\"", "name = \"a2\"");
        let d = diff(&old, &renamed);
        let want = Changes {
            renamed: vec![Renamed {
                old: "a".into(),
                new: "a2".into(),
            }],
            ..Changes::default()
        };
        assert_eq!(d.routes, want);
        assert_eq!(d.to_string(), "route \"a\": renamed to \"a2\"");

        // Renamed and changed: a new route and an old one.
        let moved = renamed.replace("\"a.>\"", "\"a.*\"");
        let d = diff(&old, &moved);
        assert_eq!(
            (d.routes.added, d.routes.removed),
            (strings(&["a2"]), strings(&["a"]))
        );
        assert!(d.routes.renamed.is_empty());

        // Two twins renamed: each old name is paired once, by name order.
        let twin =
            |name: &str| format!("[[route]]\nname = \"{name}\"\nmatch = \"t\"\nto = [\"out\"]\n");
        let d = diff(
            &file(&[IN, OUT, &twin("y"), &twin("x")]),
            &file(&[IN, OUT, &twin("q"), &twin("p"), &twin("z")]),
        );
        assert_eq!(
            d.routes.renamed,
            [
                Renamed {
                    old: "x".into(),
                    new: "q".into()
                },
                Renamed {
                    old: "y".into(),
                    new: "p".into()
                },
            ]
        );
        assert_eq!(d.routes.added, ["z"]);
        assert!(d.routes.removed.is_empty());
    }

    #[test]
    fn router_fields_other_than_name_need_a_restart() {
        let body = base("", "", "");
        let d = diff(&body, &format!("[router]\nname = \"site-7\"\n{body}"));
        assert_eq!(d.router, ["name"]);
        assert!(d.restart_required.is_empty());
        assert!(!d.is_empty());

        let d = diff(
            &body,
            &format!("[router]\nadmin = \"127.0.0.1:9465\"\n{body}"),
        );
        assert_eq!(d.router, ["admin"]);
        assert_eq!(d.restart_required, ["router.admin"]);

        let all = "[router]\nname = \"n\"\nadmin = \"127.0.0.1:1\"\nshutdown_grace = \"1s\"\nlog_level = \"warn\"\nplugin_cache = \"cache\"\ndata_dir = \"var\"\n";
        let d = diff(&body, &format!("{all}{body}"));
        assert_eq!(
            d.restart_required,
            [
                "router.admin",
                "router.shutdown_grace",
                "router.log_level",
                "router.plugin_cache",
                "router.data_dir"
            ]
        );
    }

    #[test]
    fn each_durable_queue_field_is_reported() {
        let r = |route_extra: &str| format!("[router]\ndata_dir = \"var\"\n{}", site(route_extra));
        let q = |queue: &str| r(&format!("queue = {{ {queue} }}"));
        let cases: &[(String, String, &[&str])] = &[
            // A durable queue's default bounds are not memory's, so they
            // change with it.
            (
                r(""),
                q("durable = true"),
                &[
                    "queue.capacity",
                    "queue.max_bytes",
                    "queue.when_full",
                    "queue.durable",
                ],
            ),
            (
                q("durable = true"),
                r(""),
                &[
                    "queue.capacity",
                    "queue.max_bytes",
                    "queue.when_full",
                    "queue.durable",
                ],
            ),
            // Turned on with its keys: the keys come with it.
            (
                r(""),
                q(
                    "durable = true, capacity = 10000, max_bytes = \"64MiB\", when_full = \"drop_newest\", fsync = \"os\"",
                ),
                &["queue.when_full", "queue.durable"],
            ),
            // Written as the default: no change.
            (r(""), q("durable = false"), &[]),
            (
                q("durable = true"),
                q("durable = true, fsync = \"batch\", fsync_interval = \"10ms\""),
                &[],
            ),
            (
                q("durable = true"),
                q("durable = true, fsync = \"always\""),
                &["queue.fsync"],
            ),
            (
                q("durable = true"),
                q("durable = true, fsync_interval = \"50ms\""),
                &["queue.fsync_interval"],
            ),
            (
                q("durable = true, fsync = \"always\""),
                q("durable = true, fsync_interval = \"50ms\""),
                &["queue.fsync", "queue.fsync_interval"],
            ),
            (
                q("durable = true"),
                q("durable = true, capacity = 10000"),
                &["queue.capacity"],
            ),
        ];
        for (old, new, fields) in cases {
            let d = diff(old, new);
            let want = Changes {
                changed: if fields.is_empty() {
                    Vec::new()
                } else {
                    vec![changed("r", fields)]
                },
                ..Changes::default()
            };
            assert_eq!(d.routes, want, "{old}\n->\n{new}");
            assert!(d.restart_required.is_empty(), "{d:?}");
        }
        let d = diff(&q("durable = true"), &q("durable = true, fsync = \"os\""));
        assert_eq!(d.to_string(), "route \"r\": changed queue.fsync");
        assert!(
            valid(&r(""))
                .reload_conflict(&valid(&q("durable = true")))
                .is_none()
        );
    }

    #[test]
    fn a_changed_data_dir_refuses_the_reload() {
        let body = base("", "", "");
        let with = |dir: &str| format!("[router]\ndata_dir = \"{dir}\"\n{body}");
        let (none, a, b) = (valid(&body), valid(&with("var/a")), valid(&with("var/b")));
        assert_eq!(none.reload_conflict(&none), None);
        assert_eq!(a.reload_conflict(&valid(&with("var/a"))), None);
        // Other [router] keys are only reported as needing a restart.
        let admin = valid(&format!("[router]\nadmin = \"127.0.0.1:9465\"\n{body}"));
        assert_eq!(none.reload_conflict(&admin), None);

        let why = a.reload_conflict(&b).expect("refused");
        assert_eq!(
            why,
            "[router] data_dir changed from \"var/a\" to \"var/b\": the running router holds its data directory locked, so this needs a restart (nothing was reloaded)"
        );
        assert!(
            none.reload_conflict(&a)
                .expect("refused")
                .starts_with("[router] data_dir changed from none to \"var/a\""),
        );
        assert!(
            a.reload_conflict(&none)
                .expect("refused")
                .contains("from \"var/a\" to none"),
        );
        let d = a.diff(&b);
        assert_eq!(d.router, ["data_dir"]);
        assert_eq!(d.restart_required, ["router.data_dir"]);
    }

    #[test]
    fn input_and_output_changes_are_named_and_reload_live() {
        let old = base("", "", "");
        let d = diff(&old, &old.replace("127.0.0.1:5556", "127.0.0.1:5557"));
        assert_eq!(d.inputs.changed, [changed("in", &["bind"])]);
        assert!(d.restart_required.is_empty());
        assert!(d.routes.is_empty() && d.outputs.is_empty() && d.router.is_empty());

        let d = diff(
            &old,
            &old.replace("bind = \"tcp://127.0.0.1:5556\"", "connect = \"tcp://h:1\""),
        );
        assert_eq!(d.inputs.changed, [changed("in", &["bind", "connect"])]);
        let d = diff(&old, &old.replace("zmq-pull", "zmq-sub"));
        assert_eq!(d.inputs.changed, [changed("in", &["kind"])]);

        // A password change is seen and named, never shown.
        let with_users = |password: &str| {
            base(
                &format!("plain = {{ users = {{ u = \"{password}\" }} }}"),
                "send_hwm = 5",
                "",
            )
        };
        let d = diff(&with_users("hunter2"), &with_users("hunter3"));
        assert_eq!(d.inputs.changed, [changed("in", &["plain"])]);
        assert!(!serde_json::to_string(&d).expect("json").contains("hunter"));

        // An output changed, an input added: both reload live.
        let old = base("", "", "");
        let api = "\n[[input]]\nname = \"api\"\nkind = \"http\"\nlisten = \"127.0.0.1:8080\"";
        let d = diff(&old, &base(api, "send_hwm = 5", ""));
        assert_eq!(d.inputs.added, ["api"]);
        assert_eq!(d.outputs.changed, [changed("out", &["send_hwm"])]);
        assert!(d.restart_required.is_empty());
        let d = diff(
            &base(api, "", ""),
            &base(&api.replace("8080", "8081"), "", ""),
        );
        assert_eq!(d.inputs.changed, [changed("api", &["listen"])]);
    }

    #[test]
    fn a_new_module_build_marks_the_plugin_changed() {
        let old = file(&[IN, OUT, F, A]);
        let new = file(&[IN, OUT, F, G, A]).replace("f.wasm", "f2.wasm");
        let mut d = diff(&old, &new);
        d.plugin_module_changed("f");
        d.plugin_module_changed("f");
        d.plugin_module_changed("g");
        assert_eq!(d.plugins.changed, [changed("f", &["path", "module"])]);
        assert_eq!(d.plugins.added, ["g"]);

        let mut d = diff(&old, &old);
        d.plugin_module_changed("f");
        assert_eq!(d.plugins.changed, [changed("f", &["module"])]);
        assert_eq!(d.to_string(), "plugin \"f\": changed module");
    }

    /// The example in [`Diff`]'s documentation, produced for real.
    #[test]
    fn serializes_to_the_documented_shape() {
        let old = r#"
[router]
name = "site-42"

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:8080"

[[output]]
name = "dashboard"
kind = "zmq-pub"
bind = "tcp://127.0.0.1:6555"

[[plugin]]
name = "drop-debug"
path = "plugins/attr_filter.wasm"
config = { key = "level", deny = ["debug"] }

[[route]]
name = "telemetry"
match = "sensors.>"
to = ["dashboard"]

[[route]]
name = "legacy"
match = "legacy.>"
to = ["dashboard"]

[[route]]
name = "jobs"
match = "jobs.>"
to = ["dashboard"]
"#;
        let new = old
            .replace("\"site-42\"", "\"site-43\"\nadmin = \"127.0.0.1:9465\"")
            .replace("8080", "8081")
            .replace("[\"debug\"]", "[\"debug\", \"trace\"]")
            .replace(
                "match = \"sensors.>\"",
                "match = \"sensors.*.temp\"\nfilters = [\"drop-debug\"]",
            )
            .replace(
                "name = \"legacy\"\nmatch = \"legacy.>\"",
                "name = \"audit\"\nmatch = \"audit.>\"",
            )
            .replace("name = \"jobs\"", "name = \"work\"");
        let d = diff(old, &new);
        let got = serde_json::to_value(&d).expect("serializable");
        let want = serde_json::json!({
            "router": ["name", "admin"],
            "routes": {
                "added": ["audit"],
                "removed": ["legacy"],
                "changed": [{ "name": "telemetry", "fields": ["match", "filters"] }],
                "renamed": [{ "old": "jobs", "new": "work" }]
            },
            "plugins": {
                "added": [],
                "removed": [],
                "changed": [{ "name": "drop-debug", "fields": ["config"] }],
                "renamed": []
            },
            "inputs": {
                "added": [],
                "removed": [],
                "changed": [{ "name": "api", "fields": ["listen"] }],
                "renamed": []
            },
            "outputs": { "added": [], "removed": [], "changed": [], "renamed": [] },
            "auth": { "added": [], "removed": [], "changed": [], "renamed": [] },
            "acl": false,
            "restart_required": ["router.admin"]
        });
        assert_eq!(got, want);
        let back: Diff = serde_json::from_value(got).expect("reads back");
        assert_eq!(back, d);
        let partial: Diff = serde_json::from_str(r#"{"router":["name"]}"#).expect("defaults");
        assert_eq!(partial.router, ["name"]);

        assert_eq!(
            d.to_string(),
            "[router]: changed name, admin\n\
             route \"audit\": added\n\
             route \"legacy\": removed\n\
             route \"jobs\": renamed to \"work\"\n\
             route \"telemetry\": changed match, filters\n\
             plugin \"drop-debug\": changed config\n\
             input \"api\": changed listen\n\
             restart required: router.admin"
        );
    }
}

#[cfg(test)]
mod request_tests {
    use crate::config::fixture::{base, valid};

    #[test]
    fn request_settings_are_named_in_the_diff() {
        let old = base("", "", "")
            .replace("kind = \"zmq-pull\"", "kind = \"zmq-router\"")
            .replace("kind = \"zmq-push\"", "kind = \"zmq-dealer\"");
        let new = old
            .replace(
                "bind = \"tcp://127.0.0.1:5556\"",
                "bind = \"tcp://127.0.0.1:5556\"\nmax_pending = 10",
            )
            .replace(
                "bind = \"tcp://127.0.0.1:6556\"",
                "bind = \"tcp://127.0.0.1:6556\"\neject_after = 5",
            )
            .replace("to = [\"out\"]", "to = [\"out\"]\nrequest_timeout = \"1s\"");
        let d = valid(&old).diff(&valid(&new));
        assert_eq!(d.inputs.changed[0].fields, ["max_pending"]);
        assert_eq!(d.outputs.changed[0].fields, ["eject_after"]);
        assert_eq!(d.routes.changed[0].fields, ["request_timeout"]);
    }
}
