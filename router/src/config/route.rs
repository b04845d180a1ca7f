//! Routes: which messages (topic pattern, attribute conditions) go through
//! which plugins to which outputs, through what bounded queue.

use crate::message::Pattern;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::checker::{Checker, closest};
use super::error::{Error, Subject, Suggestion};
use super::names::Declared;
use super::raw::{RawQueue, RawRoute, S};
use super::units::{Quantity, format_size, serialize_duration, serialize_duration_or_none};

/// One `[[route]]`. Reloads live: routes are the part of the file operators
/// edit while the router runs.
///
/// A message that matches several routes goes to each of them, once per
/// route, through each route's own queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    /// Unique among inputs, outputs, plugins and routes; a metric label.
    /// Reloads live.
    pub name: String,
    /// The NATS-style topic pattern, written `match = "sensors.>"`: tokens
    /// split at `.`, `*` matches exactly one token, `>` (last token only)
    /// matches one or more remaining tokens. Syntax checked here; matching
    /// is the pipeline's. Reloads live.
    #[serde(rename = "match")]
    pub pattern: Pattern,
    /// Attribute conditions: every key must be present on the message with
    /// exactly this value. Default none (match on topic alone). Reloads
    /// live.
    pub attributes: BTreeMap<String, String>,
    /// Names of the filter plugins the route's messages go through, in
    /// order; each names a [`Plugin`](super::Plugin), at most once. A
    /// message a filter drops goes no further. Default none. Reloads live.
    pub filters: Vec<String>,
    /// The routing plugin, run after the filters: for each message it names
    /// outputs, keeps the route's `to`, or dead-letters it. Names a
    /// [`Plugin`](super::Plugin) not also in `filters`. Default none: every
    /// message goes to `to`. Reloads live.
    pub router: Option<String>,
    /// What happens to a batch a plugin failed on (trap, timeout, broken
    /// verdict). Default `drop`. Reloads live.
    pub on_error: OnError,
    /// The output that receives dead-lettered messages: those a router
    /// plugin dead-letters, and failed batches under
    /// `on_error = "dead_letter"`. Names an output; required with
    /// `on_error = "dead_letter"` unless `[router] data_dir` is set, in
    /// which case a route without one keeps its dead letters in the
    /// dead-letter store. Default none. Reloads live.
    pub dead_letter: Option<String>,
    /// Names of the outputs that receive matching messages (those the
    /// filters keep, unless a `router` picks otherwise), each defined and
    /// listed once. Reloads live.
    pub to: Vec<String>,
    /// The route's bounded queue. Reloads live.
    pub queue: QueueConfig,
    /// How long a request (from a `zmq-router` input or the HTTP bridge)
    /// on this route may wait for its reply, counted from when the router
    /// accepted it; then the client gets a `REQUEST_TIMEOUT` error. Default
    /// 5s; 1ms to 1h. Reloads live (applies to requests the route takes
    /// from then on).
    #[serde(serialize_with = "super::units::serialize_duration")]
    pub request_timeout: std::time::Duration,
}

impl Route {
    /// The default `request_timeout`.
    pub const DEFAULT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
}

/// A route's bounded queue, written `queue = { capacity = 10000, ... }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueConfig {
    /// Bound in messages. Default 10000, or 10000000 for a durable queue;
    /// 1 to 10000000.
    pub capacity: usize,
    /// Bound in bytes (topic + payload + attributes of queued messages).
    /// Default 64 MiB, or 1 GiB for a durable queue; 1 KiB to 16 GiB, and
    /// at least the largest message an input accepts.
    pub max_bytes: usize,
    /// What to do with a message when either bound is reached. Default
    /// `drop_oldest`.
    pub when_full: WhenFull,
    /// Under `block`, how long an HTTP publish waits for room in this
    /// route before it is answered 503 with `Retry-After`; each route holds
    /// a publish for its own timeout. ZeroMQ inputs wait as long as it takes
    /// (they stop reading the peer). Default 1s; 0s to 5m. Only valid with
    /// `when_full = "block"`.
    #[serde(serialize_with = "serialize_duration")]
    pub block_timeout: Duration,
    /// `Some` for a durable queue, written `durable = true`: kept on disk
    /// under `[router] data_dir` (which it requires), so what it holds
    /// survives a restart. Default `None` (`durable = false`): in memory.
    /// Turning it on or off reloads; what is queued is kept.
    pub durable: Option<Durability>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            max_bytes: 64 << 20,
            when_full: WhenFull::default(),
            block_timeout: Self::DEFAULT_BLOCK_TIMEOUT,
            durable: None,
        }
    }
}

impl QueueConfig {
    /// The default `block_timeout`.
    pub const DEFAULT_BLOCK_TIMEOUT: Duration = Duration::from_secs(1);
    /// The default `capacity` of a durable queue: a disk holds far more
    /// than memory.
    pub const DEFAULT_DURABLE_CAPACITY: usize = 10_000_000;
    /// The default `max_bytes` of a durable queue, 1 GiB.
    pub const DEFAULT_DURABLE_MAX_BYTES: usize = 1 << 30;
}

/// How a durable queue keeps its messages: the keys only a queue with
/// `durable = true` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Durability {
    /// Queued messages older than this (since the router accepted them)
    /// are dropped. Default none: unbounded, only `capacity` and
    /// `max_bytes` limit the queue; 1ms to 3650d. Changes apply on reload.
    #[serde(serialize_with = "serialize_duration_or_none")]
    pub max_age: Option<Duration>,
    /// When what is written is forced to disk: see [`Fsync`]. Default
    /// `batch`. Changes apply on reload.
    pub fsync: Fsync,
    /// Under `fsync = "batch"`, the group-commit window: one `fdatasync`
    /// covers every message accepted within it. Default 10ms; 1ms to 10s.
    /// Only valid with `fsync = "batch"` (under the other modes it stays at
    /// the default and is not used). Changes apply on reload.
    #[serde(serialize_with = "serialize_duration")]
    pub fsync_interval: Duration,
}

impl Default for Durability {
    fn default() -> Self {
        Self {
            max_age: None,
            fsync: Fsync::default(),
            fsync_interval: Self::DEFAULT_FSYNC_INTERVAL,
        }
    }
}

impl Durability {
    /// The default `fsync_interval`.
    pub const DEFAULT_FSYNC_INTERVAL: Duration = Duration::from_millis(10);
}

pub use super::policy::{Fsync, OnError, WhenFull};

/// Reads one route. `declared` lists every named entry in the file (even
/// broken ones), so references resolve without echoing other problems;
/// `largest_message` is the biggest message any input accepts;
/// `data_dir_written` is whether `[router]` sets `data_dir` (even to a bad
/// value, reported there), which durable queues need.
pub(crate) fn build(
    raw: &RawRoute,
    subject: &Subject,
    declared: &[Declared],
    largest_message: usize,
    data_dir_written: bool,
    c: &mut Checker<'_>,
) -> Route {
    let pattern = Pattern::parse(raw.pattern.get_ref()).unwrap_or_else(|e| {
        c.invalid(subject, "match", raw.pattern.span(), e.to_string());
        // Stands in for the broken pattern so the other fields are still
        // checked; a config with any problem is never used.
        Pattern::parse(">").expect("\">\" is a valid pattern")
    });

    let mut attributes = BTreeMap::new();
    if let Some(attrs) = &raw.attributes {
        for (key, value) in attrs.get_ref() {
            if key.is_empty() {
                c.invalid(
                    subject,
                    "attributes",
                    value.span(),
                    "an attribute name is empty",
                );
            }
            attributes.insert(key.clone(), value.get_ref().clone());
        }
    }

    let mut to: Vec<String> = Vec::new();
    if raw.to.get_ref().is_empty() {
        c.invalid(
            subject,
            "to",
            raw.to.span(),
            "lists no output; a route needs somewhere to send",
        );
    }
    for target in raw.to.get_ref() {
        let name = target.get_ref();
        if to.contains(name) {
            c.invalid(
                subject,
                "to",
                target.span(),
                format!("output {name:?} is listed twice"),
            );
            continue;
        }
        resolve(
            target,
            "output",
            "to",
            "a route sends to outputs",
            subject,
            declared,
            c,
        );
        to.push(name.clone());
    }

    let mut filters: Vec<String> = Vec::new();
    for filter in raw.filters.iter().flat_map(|f| f.get_ref()) {
        let name = filter.get_ref();
        if filters.contains(name) {
            c.invalid(
                subject,
                "filters",
                filter.span(),
                format!("plugin {name:?} is listed twice"),
            );
            continue;
        }
        resolve(
            filter,
            "plugin",
            "filters",
            "filters name [[plugin]] entries",
            subject,
            declared,
            c,
        );
        filters.push(name.clone());
    }

    let router = raw.router.as_ref().map(|r| {
        let name = r.get_ref();
        if filters.contains(name) {
            c.invalid(
                subject,
                "router",
                r.span(),
                format!(
                    "plugin {name:?} is also in filters; a plugin is either a filter or a router"
                ),
            );
        } else {
            resolve(
                r,
                "plugin",
                "router",
                "router names a [[plugin]]",
                subject,
                declared,
                c,
            );
        }
        name.clone()
    });

    let problems_before = c.problem_count();
    let on_error = c.choice(
        subject,
        "on_error",
        raw.on_error.as_ref(),
        OnError::default(),
        &[
            ("drop", OnError::Drop),
            ("dead_letter", OnError::DeadLetter),
        ],
    );
    let on_error_ok = c.problem_count() == problems_before;
    let dead_letter = raw.dead_letter.as_ref().map(|d| {
        resolve(
            d,
            "output",
            "dead_letter",
            "dead letters go to an output",
            subject,
            declared,
            c,
        );
        d.get_ref().clone()
    });
    if let Some(written) = &raw.on_error
        && on_error == OnError::DeadLetter
        && on_error_ok
        && dead_letter.is_none()
        && !data_dir_written
    {
        c.invalid(
            subject,
            "on_error",
            written.span(),
            "\"dead_letter\" needs `dead_letter = \"<output>\"`, the output that receives the messages, or `[router] data_dir`, which keeps them in the dead-letter store",
        );
    }

    let queue = match &raw.queue {
        Some(q) => build_queue(q.get_ref(), subject, largest_message, data_dir_written, c),
        None => QueueConfig::default(),
    };
    let ms = std::time::Duration::from_millis(1);
    let request_timeout = c.duration(
        subject,
        "request_timeout",
        raw.request_timeout.as_ref(),
        Route::DEFAULT_REQUEST_TIMEOUT,
        ms..=std::time::Duration::from_secs(3600),
    );
    Route {
        name: raw.name.get_ref().clone(),
        pattern,
        attributes,
        filters,
        router,
        on_error,
        dead_letter,
        to,
        queue,
        request_timeout,
    }
}

/// Checks that `target` names a declared entry of `section` (`output`,
/// `plugin`). An undefined name is reported with the closest name of that
/// section; a name of another section is reported with `why` (what
/// `field` takes).
fn resolve(
    target: &S<String>,
    section: &'static str,
    field: &str,
    why: &str,
    subject: &Subject,
    declared: &[Declared],
    c: &mut Checker<'_>,
) {
    let name = target.get_ref();
    match declared.iter().find(|d| &d.name == name) {
        Some(d) if d.section == section => {}
        Some(d) => {
            let article = if d.section.starts_with(['a', 'e', 'i', 'o', 'u']) {
                "an"
            } else {
                "a"
            };
            c.invalid(
                subject,
                field,
                target.span(),
                format!(
                    "{name:?} is {article} {} (line {}); {why}",
                    d.section, d.line
                ),
            );
        }
        None => c.report(
            target.span(),
            Error::Undefined {
                subject: subject.clone(),
                what: section,
                name: name.clone(),
                suggestion: Suggestion(closest(
                    name,
                    declared
                        .iter()
                        .filter(|d| d.section == section)
                        .map(|d| d.name.as_str()),
                )),
            },
        ),
    }
}

fn build_queue(
    raw: &RawQueue,
    subject: &Subject,
    largest_message: usize,
    data_dir_written: bool,
    c: &mut Checker<'_>,
) -> QueueConfig {
    const GIB: u64 = 1 << 30;
    let max_bytes_limit = usize::try_from(16 * GIB).unwrap_or(usize::MAX);
    let durable = raw.durable.as_ref().is_some_and(|v| *v.get_ref());
    let d = QueueConfig::default();
    let (default_capacity, default_max_bytes) = if durable {
        (
            QueueConfig::DEFAULT_DURABLE_CAPACITY,
            QueueConfig::DEFAULT_DURABLE_MAX_BYTES,
        )
    } else {
        (d.capacity, d.max_bytes)
    };
    let capacity = c.count(
        subject,
        "queue.capacity",
        raw.capacity.as_ref(),
        default_capacity,
        1..=10_000_000,
    );
    let max_bytes = c.size(
        subject,
        "queue.max_bytes",
        raw.max_bytes.as_ref(),
        default_max_bytes,
        1024..=max_bytes_limit,
    );
    if let Some(v) = &raw.max_bytes
        && max_bytes < largest_message
    {
        c.invalid(
            subject,
            "queue.max_bytes",
            v.span(),
            format!(
                "{} is smaller than the largest message an input accepts ({}), which could never be queued",
                format_size(max_bytes as u64),
                format_size(largest_message as u64)
            ),
        );
    }
    let problems_before = c.problem_count();
    // A durable queue is there not to lose messages: it pushes back by
    // default.
    let default_when_full = if durable {
        WhenFull::Block
    } else {
        d.when_full
    };
    let when_full = c.choice(
        subject,
        "queue.when_full",
        raw.when_full.as_ref(),
        default_when_full,
        &[
            ("block", WhenFull::Block),
            ("drop_newest", WhenFull::DropNewest),
            ("drop_oldest", WhenFull::DropOldest),
        ],
    );
    let when_full_ok = c.problem_count() == problems_before;
    let block_timeout = c.duration(
        subject,
        "queue.block_timeout",
        raw.block_timeout.as_ref(),
        d.block_timeout,
        Duration::ZERO..=Duration::from_secs(300),
    );
    if let Some(v) = &raw.block_timeout
        && when_full != WhenFull::Block
        && when_full_ok
    {
        let note = if raw.when_full.is_none() {
            " (the default is \"drop_oldest\")"
        } else {
            ""
        };
        c.invalid(
            subject,
            "queue.block_timeout",
            v.span(),
            format!("only applies with when_full = \"block\"{note}"),
        );
    }
    let durable = durable.then(|| build_durability(raw, subject, data_dir_written, c));
    if durable.is_none() {
        // The durable keys on a queue kept in memory: each is refused
        // where it is written.
        let note = match &raw.durable {
            Some(_) => " (this queue has durable = false)",
            None => " (queues are kept in memory by default)",
        };
        for (field, span) in [
            ("queue.max_age", raw.max_age.as_ref().map(S::span)),
            ("queue.fsync", raw.fsync.as_ref().map(S::span)),
            (
                "queue.fsync_interval",
                raw.fsync_interval.as_ref().map(S::span),
            ),
        ] {
            if let Some(span) = span {
                c.invalid(subject, field, span, format!("needs durable = true{note}"));
            }
        }
    }
    QueueConfig {
        capacity,
        max_bytes,
        when_full,
        block_timeout,
        durable,
    }
}

/// Reads the keys of a queue written `durable = true`.
fn build_durability(
    raw: &RawQueue,
    subject: &Subject,
    data_dir_written: bool,
    c: &mut Checker<'_>,
) -> Durability {
    if let Some(v) = &raw.durable
        && !data_dir_written
    {
        c.invalid(
            subject,
            "queue.durable",
            v.span(),
            "needs a directory to keep the queue in: set `[router] data_dir` (e.g. data_dir = \"var/switchyard\")",
        );
    }
    let d = Durability::default();
    let ms = Duration::from_millis(1);
    let max_age = c.duration_or_off(
        subject,
        "queue.max_age",
        raw.max_age.as_ref(),
        d.max_age,
        ms..=Duration::from_secs(3650 * 86_400),
        false,
    );
    let (fsync, fsync_interval) = sync_policy(
        c,
        subject,
        "queue.",
        raw.fsync.as_ref(),
        raw.fsync_interval.as_ref(),
        (d.fsync, d.fsync_interval),
    );
    Durability {
        max_age,
        fsync,
        fsync_interval,
    }
}

/// Reads `<prefix>fsync` and `<prefix>fsync_interval` (a durable queue's,
/// or the dead-letter store's): the interval only with `batch`.
pub(crate) fn sync_policy(
    c: &mut Checker<'_>,
    subject: &Subject,
    prefix: &str,
    fsync: Option<&S<String>>,
    interval: Option<&S<Quantity>>,
    (default, default_interval): (Fsync, Duration),
) -> (Fsync, Duration) {
    let problems_before = c.problem_count();
    let fsync = c.choice(
        subject,
        &format!("{prefix}fsync"),
        fsync,
        default,
        &[
            ("always", Fsync::Always),
            ("batch", Fsync::Batch),
            ("os", Fsync::Os),
        ],
    );
    let fsync_ok = c.problem_count() == problems_before;
    let field = format!("{prefix}fsync_interval");
    let fsync_interval = c.duration(
        subject,
        &field,
        interval,
        default_interval,
        Duration::from_millis(1)..=Duration::from_secs(10),
    );
    if let Some(v) = interval
        && fsync != Fsync::Batch
        && fsync_ok
    {
        c.invalid(
            subject,
            &field,
            v.span(),
            format!(
                "only applies with fsync = \"batch\" (group commit); with fsync = \"{fsync}\" there is no interval, remove it"
            ),
        );
    }
    (fsync, fsync_interval)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Durability, Fsync, OnError, QueueConfig, WhenFull};
    use crate::config::fixture::{assert_one, base, problems, valid};

    /// `base` with `route_extra` in the route, plus a second output and two
    /// plugins after it.
    fn with_plugins(route_extra: &str) -> String {
        format!(
            "{}{}",
            base("", "", route_extra),
            r#"
[[output]]
name = "errors"
kind = "zmq-push"
bind = "tcp://127.0.0.1:6557"

[[plugin]]
name = "drop-debug"
path = "attr_filter.wasm"

[[plugin]]
name = "by-content"
path = "router.wasm"
"#
        )
    }

    #[test]
    fn plugin_fields_read_into_the_route() {
        let config = valid(&with_plugins(
            "filters = [\"drop-debug\"]\nrouter = \"by-content\"\non_error = \"dead_letter\"\ndead_letter = \"errors\"",
        ));
        let r = &config.routes[0];
        assert_eq!(r.filters, ["drop-debug"]);
        assert_eq!(r.router.as_deref(), Some("by-content"));
        assert_eq!(r.on_error, OnError::DeadLetter);
        assert_eq!(r.dead_letter.as_deref(), Some("errors"));

        let config = valid(&with_plugins(""));
        let r = &config.routes[0];
        assert!(r.filters.is_empty());
        assert_eq!((r.router.as_deref(), r.on_error), (None, OnError::Drop));
        assert_eq!(r.dead_letter, None);
        let json = serde_json::to_value(&config).expect("serializable");
        assert_eq!(json["routes"][0]["on_error"], "drop");

        // A router's dead-letter verdicts need somewhere to go even when
        // failed batches are dropped.
        let config = valid(&with_plugins(
            "router = \"by-content\"\ndead_letter = \"errors\"",
        ));
        assert_eq!(config.routes[0].on_error, OnError::Drop);
    }

    #[test]
    fn filters_must_name_plugins_once() {
        let got = problems(&with_plugins(
            "filters = [\"drop-debgu\", \"out\", \"drop-debug\", \"drop-debug\", \"zzz\"]",
        ));
        assert_eq!(got.len(), 4, "{got:#?}");
        assert_eq!(
            got[0],
            "t.toml:17:12: route \"r\": plugin \"drop-debgu\" is not defined (did you mean \"drop-debug\"?)"
        );
        assert_eq!(
            got[1],
            "t.toml:17:26: route \"r\": filters: \"out\" is an output (line 8); filters name [[plugin]] entries"
        );
        assert_eq!(
            got[2],
            "t.toml:17:47: route \"r\": filters: plugin \"drop-debug\" is listed twice"
        );
        assert_eq!(
            got[3],
            "t.toml:17:61: route \"r\": plugin \"zzz\" is not defined"
        );
        let got = problems(&with_plugins("filters = [\"r\"]"));
        assert_one(
            &got,
            "filters: \"r\" is a route (line 14); filters name [[plugin]] entries",
        );
        let got = problems(&with_plugins("filters = \"drop-debug\""));
        assert_one(
            &got,
            "route \"r\": invalid type: string \"drop-debug\", expected a sequence",
        );
    }

    #[test]
    fn router_must_name_a_plugin_not_in_filters() {
        let got = problems(&with_plugins("router = \"by-contnet\""));
        assert_one(
            &got,
            "t.toml:17:10: route \"r\": plugin \"by-contnet\" is not defined (did you mean \"by-content\"?)",
        );
        let got = problems(&with_plugins("router = \"in\""));
        assert_one(
            &got,
            "router: \"in\" is an input (line 2); router names a [[plugin]]",
        );
        let got = problems(&with_plugins(
            "filters = [\"drop-debug\"]\nrouter = \"drop-debug\"",
        ));
        assert_one(
            &got,
            "t.toml:18:10: route \"r\": router: plugin \"drop-debug\" is also in filters",
        );
    }

    #[test]
    fn dead_letters_go_to_an_output() {
        let got = problems(&with_plugins("dead_letter = \"drop-debug\""));
        assert_one(
            &got,
            "t.toml:17:15: route \"r\": dead_letter: \"drop-debug\" is a plugin (line 25); dead letters go to an output",
        );
        let got = problems(&with_plugins("dead_letter = \"erors\""));
        assert_one(
            &got,
            "route \"r\": output \"erors\" is not defined (did you mean \"errors\"?)",
        );
        let got = problems(&with_plugins("on_error = \"dead_letter\""));
        assert_one(
            &got,
            "t.toml:17:12: route \"r\": on_error: \"dead_letter\" needs `dead_letter = \"<output>\"`",
        );
        let got = problems(&with_plugins("on_error = \"deadletter\""));
        assert_one(
            &got,
            "on_error: \"deadletter\" is not one of \"drop\", \"dead_letter\" (did you mean \"dead_letter\"?)",
        );
    }

    #[test]
    fn to_names_the_kind_of_a_wrong_target() {
        let got =
            problems(&with_plugins("").replace("to = [\"out\"]", "to = [\"r\", \"by-content\"]"));
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[0].contains("to: \"r\" is a route (line 14); a route sends to outputs"),
            "{got:#?}"
        );
        assert!(
            got[1].contains("to: \"by-content\" is a plugin (line 29); a route sends to outputs"),
            "{got:#?}"
        );
    }

    #[test]
    fn queue_mistakes() {
        let got = problems(&base(
            "",
            "",
            "queue = { capacity = 0, max_bytes = \"512B\", when_full = \"drop\" }",
        ));
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(
            got[0].contains("queue.capacity: must be from 1 to 10000000, got 0"),
            "{got:#?}"
        );
        assert!(
            got[1].contains("queue.max_bytes: must be from 1KiB to 16GiB, got 512B"),
            "{got:#?}"
        );
        assert!(got[2].contains("queue.when_full: \"drop\" is not one of \"block\", \"drop_newest\", \"drop_oldest\""), "{got:#?}");
        let got = problems(&base("", "", "queue = { block_timeout = \"1s\" }"));
        assert_one(
            &got,
            "queue.block_timeout: only applies with when_full = \"block\" (the default is \"drop_oldest\")",
        );
        let got = problems(&base(
            "max_message_size = \"4MiB\"\nmax_frame_size = \"4MiB\"",
            "",
            "queue = { max_bytes = \"2MiB\" }",
        ));
        assert_one(
            &got,
            "queue.max_bytes: 2MiB is smaller than the largest message an input accepts (4MiB)",
        );
    }

    /// `base` with `[router] data_dir` and `queue = { <queue> }` in the route.
    fn durable(queue: &str) -> String {
        format!(
            "[router]\ndata_dir = \"var/switchyard\"\n\n{}",
            base("", "", &format!("queue = {{ {queue} }}"))
        )
    }

    #[test]
    fn a_durable_queue_reads_every_key() {
        let config = valid(&durable(
            "durable = true, capacity = 1_000_000, max_bytes = \"2GiB\", when_full = \"drop_newest\", fsync = \"batch\", fsync_interval = \"25ms\"",
        ));
        assert_eq!(
            config.routes[0].queue,
            QueueConfig {
                capacity: 1_000_000,
                max_bytes: 2 << 30,
                when_full: WhenFull::DropNewest,
                block_timeout: QueueConfig::DEFAULT_BLOCK_TIMEOUT,
                durable: Some(Durability {
                    max_age: None,
                    fsync: Fsync::Batch,
                    fsync_interval: Duration::from_millis(25),
                }),
            }
        );
        for (written, fsync) in [("always", Fsync::Always), ("os", Fsync::Os)] {
            let config = valid(&durable(&format!("durable = true, fsync = \"{written}\"")));
            let d = config.routes[0].queue.durable.expect("durable");
            assert_eq!(d.fsync, fsync);
            assert_eq!(d.fsync_interval, Durability::DEFAULT_FSYNC_INTERVAL);
        }
        let config = valid(&durable("durable = true, fsync = \"os\""));
        let json = serde_json::to_value(&config).expect("serializable");
        assert_eq!(json["routes"][0]["queue"]["durable"]["fsync"], "os");
        assert_eq!(
            json["routes"][0]["queue"]["durable"]["max_age"],
            serde_json::Value::Null
        );
        assert_eq!(
            json["routes"][0]["queue"]["durable"]["fsync_interval"],
            "10ms"
        );
        let config = valid(&durable(
            "durable = true, max_age = \"36h\", when_full = \"drop_oldest\"",
        ));
        let q = &config.routes[0].queue;
        assert_eq!(q.when_full, WhenFull::DropOldest);
        assert_eq!(
            q.durable.expect("durable").max_age,
            Some(Duration::from_secs(36 * 3600))
        );
    }

    #[test]
    fn durable_and_memory_queues_have_their_own_defaults() {
        let config = valid(&durable("durable = true"));
        assert_eq!(
            config.routes[0].queue,
            QueueConfig {
                capacity: 10_000_000,
                max_bytes: 1 << 30,
                when_full: WhenFull::Block,
                durable: Some(Durability {
                    max_age: None,
                    fsync: Fsync::Batch,
                    fsync_interval: Duration::from_millis(10),
                }),
                ..QueueConfig::default()
            }
        );
        assert_eq!(
            Durability::default(),
            config.routes[0].queue.durable.expect("durable")
        );
        for memory in [
            durable("durable = false"),
            durable("capacity = 5"),
            base("", "", ""),
        ] {
            let q = &valid(&memory).routes[0].queue;
            assert_eq!(q.durable, None, "{memory}");
            assert_eq!(q.max_bytes, 64 << 20, "{memory}");
        }
        assert_eq!(
            valid(&durable("durable = false")).routes[0].queue.capacity,
            10_000
        );
        // The 16 GiB ceiling holds for durable queues too.
        valid(&durable("durable = true, max_bytes = \"16GiB\""));
        let got = problems(&durable("durable = true, max_bytes = \"17GiB\""));
        assert_one(
            &got,
            "queue.max_bytes: must be from 1KiB to 16GiB, got 17GiB",
        );
    }

    #[test]
    fn a_durable_queue_needs_a_data_dir() {
        let text = base("", "", "queue = { capacity = 5, durable = true }");
        let got = problems(&text);
        assert_one(
            &got,
            "t.toml:17:35: route \"r\": queue.durable: needs a directory to keep the queue in: set `[router] data_dir`",
        );
        // A [router] without it is no better.
        let got = problems(&format!("[router]\nname = \"x\"\n{text}"));
        assert_one(&got, "t.toml:19:35: route \"r\": queue.durable: needs");
        // A bad data_dir is reported once, at [router], not at each route.
        let got = problems(&format!("[router]\ndata_dir = \"\"\n{text}"));
        assert_one(&got, "t.toml:2:12: [router]: data_dir: is empty");
        // Every durable queue is named.
        let two = format!(
            "{text}\n[[route]]\nname = \"r2\"\nmatch = \"x\"\nto = [\"out\"]\nqueue = {{ durable = true }}\n"
        );
        let got = problems(&two);
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[1].starts_with("t.toml:23:21: route \"r2\": queue.durable:"),
            "{got:#?}"
        );
    }

    #[test]
    fn durable_keys_need_a_durable_queue() {
        let text = base(
            "",
            "",
            "queue = { max_age = \"7d\", fsync = \"always\", fsync_interval = \"5ms\" }",
        );
        let got = problems(&text);
        assert_eq!(
            got,
            [
                "t.toml:17:21: route \"r\": queue.max_age: needs durable = true (queues are kept in memory by default)",
                "t.toml:17:35: route \"r\": queue.fsync: needs durable = true (queues are kept in memory by default)",
                "t.toml:17:62: route \"r\": queue.fsync_interval: needs durable = true (queues are kept in memory by default)",
            ]
        );
        let got = problems(&durable("durable = false, fsync = \"os\""));
        assert_one(
            &got,
            "queue.fsync: needs durable = true (this queue has durable = false)",
        );
    }

    #[test]
    fn durable_queue_mistakes_are_all_reported() {
        let got = problems(&durable(
            "capacity = 0, durable = true, max_age = \"0s\", fsync = \"sometimes\", fsync_interval = \"1m\"",
        ));
        assert_eq!(got.len(), 4, "{got:#?}");
        assert!(
            got[0].contains("queue.capacity: must be from 1 to 10000000, got 0"),
            "{got:#?}"
        );
        assert!(
            got[1].contains("queue.max_age: must be from 1ms to 3650d, got 0s"),
            "{got:#?}"
        );
        assert!(
            got[2]
                .contains("queue.fsync: \"sometimes\" is not one of \"always\", \"batch\", \"os\""),
            "{got:#?}"
        );
        assert!(
            got[3].contains("queue.fsync_interval: must be from 1ms to 10s, got 1m"),
            "{got:#?}"
        );
        for mode in ["always", "os"] {
            let got = problems(&durable(&format!(
                "durable = true, fsync = \"{mode}\", fsync_interval = \"10ms\""
            )));
            assert_one(
                &got,
                &format!(
                    "queue.fsync_interval: only applies with fsync = \"batch\" (group commit); with fsync = \"{mode}\" there is no interval, remove it"
                ),
            );
        }
        let got = problems(&durable("durable = \"yes\""));
        assert_one(&got, "invalid type: string \"yes\", expected a boolean");
        let got = problems(&durable("durable = true, max_age = 7"));
        assert_one(&got, "queue.max_age: 7 has no unit");
        let got = problems(&durable("durable = true, fsync_intervall = \"5ms\""));
        assert_one(&got, "(did you mean \"fsync_interval\"?)");
    }
}
