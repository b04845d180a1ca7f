//! Routes: which messages (topic pattern, attribute conditions) go to which
//! outputs, through what bounded queue.

use crate::pipeline::Pattern;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::checker::{Checker, closest};
use super::error::{Error, Subject, Suggestion};
use super::raw::{RawQueue, RawRoute};
use super::units::{format_size, serialize_duration};
use super::validate::Declared;

/// One `[[route]]`. Reloads live (from issue 5 on): routes are the part of
/// the file operators edit while the router runs.
///
/// A message that matches several routes goes to each of them, once per
/// route, through each route's own queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    /// Unique among inputs, outputs and routes; a metric label. Reloads
    /// live.
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
    /// Names of the outputs that receive matching messages, each defined
    /// and listed once. Reloads live.
    pub to: Vec<String>,
    /// The route's bounded queue. Reloads live.
    pub queue: QueueConfig,
}

/// A route's bounded queue, written `queue = { capacity = 10000, ... }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueConfig {
    /// Bound in messages. Default 10000; 1 to 10000000.
    pub capacity: usize,
    /// Bound in bytes (topic + payload + attributes of queued messages).
    /// Default 64 MiB; 1 KiB to 16 GiB, and at least the largest message an
    /// input accepts.
    pub max_bytes: usize,
    /// What to do with a message when either bound is reached. Default
    /// `drop_oldest`.
    pub when_full: WhenFull,
    /// Under `block`, how long an HTTP publish waits for room before it is
    /// answered 503 with `Retry-After`. ZeroMQ inputs wait as long as it
    /// takes (they stop reading the peer). Default 1s; 0s to 5m. Only valid
    /// with `when_full = "block"`.
    #[serde(serialize_with = "serialize_duration")]
    pub block_timeout: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            max_bytes: 64 << 20,
            when_full: WhenFull::default(),
            block_timeout: Duration::from_secs(1),
        }
    }
}

/// What a full route queue does with a new message. Every message dropped
/// is counted in `switchyard_route_dropped_total{route, reason="queue_full"}`.
///
/// The default is `drop_oldest`: a stalled consumer then costs only its
/// own route the oldest messages, counted, while the inputs, and every other
/// route fed by them, keep flowing; at the edge the newest reading is
/// usually the one worth having. `block` is the choice when nothing may be
/// dropped (work queues): it pushes back to producers instead, but one
/// stalled route then holds back every message from the inputs that feed
/// it, and a ZeroMQ PUB publisher that is pushed back drops at its own
/// high-water mark, where the router cannot count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait for room: ZeroMQ inputs stop reading the peer; HTTP publish
    /// waits up to `block_timeout`, then answers 503.
    Block,
    /// Refuse the new message (counted).
    DropNewest,
    /// Evict the oldest queued message to make room (counted).
    #[default]
    DropOldest,
}

/// Reads one route. `declared` lists every named entry in the file (even
/// broken ones), so references resolve without echoing other problems;
/// `largest_message` is the biggest message any input accepts.
pub(crate) fn build(
    raw: &RawRoute,
    subject: &Subject,
    declared: &[Declared],
    largest_message: usize,
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
        match declared.iter().find(|d| &d.name == name) {
            Some(d) if d.section == "output" => {}
            Some(d) => c.invalid(
                subject,
                "to",
                target.span(),
                format!(
                    "{name:?} is an {} (line {}); a route sends to outputs",
                    d.section, d.line
                ),
            ),
            None => c.report(
                target.span(),
                Error::Undefined {
                    subject: subject.clone(),
                    what: "output",
                    name: name.clone(),
                    suggestion: Suggestion(closest(
                        name,
                        declared
                            .iter()
                            .filter(|d| d.section == "output")
                            .map(|d| d.name.as_str()),
                    )),
                },
            ),
        }
        to.push(name.clone());
    }

    let queue = match &raw.queue {
        Some(q) => build_queue(q.get_ref(), subject, largest_message, c),
        None => QueueConfig::default(),
    };
    Route {
        name: raw.name.get_ref().clone(),
        pattern,
        attributes,
        to,
        queue,
    }
}

fn build_queue(
    raw: &RawQueue,
    subject: &Subject,
    largest_message: usize,
    c: &mut Checker<'_>,
) -> QueueConfig {
    const GIB: u64 = 1 << 30;
    let max_bytes_limit = usize::try_from(16 * GIB).unwrap_or(usize::MAX);
    let d = QueueConfig::default();
    let capacity = c.count(
        subject,
        "queue.capacity",
        raw.capacity.as_ref(),
        d.capacity,
        1..=10_000_000,
    );
    let max_bytes = c.size(
        subject,
        "queue.max_bytes",
        raw.max_bytes.as_ref(),
        d.max_bytes,
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
    let when_full = c.choice(
        subject,
        "queue.when_full",
        raw.when_full.as_ref(),
        d.when_full,
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
    QueueConfig {
        capacity,
        max_bytes,
        when_full,
        block_timeout,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::fixture::{assert_one, base, problems};

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
}
