//! The one validate step: from the parsed TOML document to a typed
//! [`Config`], resolving every name and collecting every problem.
//!
//! Each entry (`[router]`, each `[[input]]`, `[[output]]`, `[[route]]`) is
//! read on its own, so a broken entry does not hide problems in the others.
//! Within an entry, every unknown key is reported, then serde reads the
//! shape (types, required fields), then each value is parsed and checked.
//! Names are gathered from the document itself, so a route that names a
//! broken output is not blamed for it.
//!
//! A new section (`[[plugin]]`, in a later release) is one more arm in
//! [`validate`] with its raw struct, a build function, and its names added
//! to the declared list so routes can refer to them.

use std::net::SocketAddr;

use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::Config;
use super::checker::{Checker, closest};
use super::endpoint::{Attach, binds_clash};
use super::error::{Error, Subject, Suggestion};
use super::input::{self, Input, InputKind};
use super::output::{self, Output};
use super::raw::{RawHttp, RawPlain, RawQueue, RawRoute, RawRouter, RawZmq, fields_of};
use super::route;
use super::router::{self, Router};
use super::zmq::ZmqRole;

/// A named entry of the file, gathered before entries are read.
#[derive(Debug, Clone)]
pub(crate) struct Declared {
    /// The name as written.
    pub(crate) name: String,
    /// `input`, `output` or `route`.
    pub(crate) section: &'static str,
    /// The line of its `name = ...`.
    pub(crate) line: usize,
}

/// Sections the file may have.
const SECTIONS: [&str; 4] = ["router", "input", "output", "route"];

/// Keys recognised as features of a later release, with what to tell an
/// operator who uses one now.
const NOT_YET: [(&str, &str); 2] = [
    ("plugin", "Wasm plugins are not supported by this version"),
    (
        "filters",
        "Wasm filter plugins are not supported by this version",
    ),
];

/// Checks an input, output, route or router name: 1 to 64 characters from
/// letters, digits, `_`, `-` and `.` (names are metric label values).
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name: use 1 to 64 letters, digits, `_`, `-` or `.`"
        ))
    }
}

/// Parses and validates the substituted text. Problems are collected in
/// `c`; a `Config` is returned only when there are none.
pub(crate) fn validate(text: &str, c: &mut Checker<'_>) -> Option<Config> {
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            c.report(
                e.span().unwrap_or(0..0),
                Error::Syntax {
                    reason: e.message().trim().to_owned(),
                },
            );
            return None;
        }
    };
    let doc = doc.into_inner();

    let mut router_table = None;
    let mut sections: [Vec<Spanned<DeValue<'_>>>; 3] = Default::default();
    let mut present = [false; 3];
    for (key, value) in &doc {
        let key_name: &str = key.get_ref();
        match key_name {
            "router" => match value.get_ref() {
                DeValue::Table(_) => router_table = Some(value.clone()),
                _ => c.report(
                    value.span(),
                    shape(
                        &Subject::top(),
                        "`router` must be a table: write `[router]`",
                    ),
                ),
            },
            "input" | "output" | "route" => {
                let idx = ["input", "output", "route"]
                    .iter()
                    .position(|s| *s == key_name)
                    .unwrap_or(0);
                present[idx] = true;
                match value.get_ref() {
                    DeValue::Array(items) => sections[idx].extend(items.iter().cloned()),
                    _ => c.report(
                        value.span(),
                        shape(
                            &Subject::top(),
                            &format!("write `[[{key_name}]]` (two brackets): there can be several"),
                        ),
                    ),
                }
            }
            other => unknown_field(c, &Subject::top(), "", other, key.span(), &SECTIONS),
        }
    }

    // Gather every name first, so references resolve even to broken entries.
    let labels = ["input", "output", "route"];
    let mut declared: Vec<Declared> = Vec::new();
    for (idx, items) in sections.iter().enumerate() {
        for (i, item) in items.iter().enumerate() {
            let Some(name) = peek_str(item, "name") else {
                continue;
            };
            let subject = Subject::entry(labels[idx], None, i);
            if let Err(reason) = check_name(name.get_ref()) {
                c.invalid(&subject, "name", name.span(), reason);
                continue;
            }
            let line = c.line(name.span());
            if let Some(first) = declared.iter().find(|d| d.name == *name.get_ref()) {
                c.report(
                    name.span(),
                    Error::DuplicateName {
                        subject: Subject::entry(labels[idx], Some(name.get_ref()), i),
                        name: (*name.get_ref()).to_owned(),
                        other: format!("{} {:?}", first.section, first.name),
                        other_line: first.line,
                    },
                );
                continue;
            }
            declared.push(Declared {
                name: (*name.get_ref()).to_owned(),
                section: labels[idx],
                line,
            });
        }
    }

    let router = match &router_table {
        Some(t) => read::<RawRouter>(t.clone(), &Subject::table("router"), &[], c)
            .map(|raw| router::build(&raw, c)),
        None => Some(Router::default()),
    };

    let [input_items, output_items, route_items] = sections;
    let mut inputs = Vec::new();
    for (i, item) in input_items.into_iter().enumerate() {
        let subject = entry_subject("input", &item, i);
        let kinds = [
            ("zmq-sub", Some(ZmqRole::Sub)),
            ("zmq-pull", Some(ZmqRole::Pull)),
            ("http", None),
        ];
        let Some(kind) = peek_kind(
            &item,
            &subject,
            &kinds,
            &["zmq-pub", "zmq-push"],
            "an output",
            c,
        ) else {
            continue;
        };
        let built = match kind {
            Some(role) => read::<RawZmq>(item, &subject, &[("plain", fields_of::<RawPlain>())], c)
                .map(|raw| input::build_zmq(&raw, role, &subject, c)),
            None => read::<RawHttp>(item, &subject, &[], c)
                .map(|raw| input::build_http(&raw, &subject, c)),
        };
        inputs.extend(built);
    }

    let mut outputs = Vec::new();
    for (i, item) in output_items.into_iter().enumerate() {
        let subject = entry_subject("output", &item, i);
        let kinds = [("zmq-pub", ZmqRole::Pub), ("zmq-push", ZmqRole::Push)];
        let inputs_kinds = ["zmq-sub", "zmq-pull", "http"];
        let Some(role) = peek_kind(&item, &subject, &kinds, &inputs_kinds, "an input", c) else {
            continue;
        };
        let built = read::<RawZmq>(item, &subject, &[("plain", fields_of::<RawPlain>())], c)
            .map(|raw| output::build_zmq(&raw, role, &subject, c));
        outputs.extend(built);
    }

    let largest_message = inputs
        .iter()
        .map(Input::max_message_size)
        .max()
        .unwrap_or(0);
    let mut routes = Vec::new();
    for (i, item) in route_items.into_iter().enumerate() {
        let subject = entry_subject("route", &item, i);
        let built = read::<RawRoute>(item, &subject, &[("queue", fields_of::<RawQueue>())], c)
            .map(|raw| route::build(&raw, &subject, &declared, largest_message, c));
        routes.extend(built);
    }

    let router = router?;
    check_binds(&router, &inputs, &outputs, &doc, c);
    for (idx, what, why) in [
        (0, "[[input]]", "to receive messages"),
        (1, "[[output]]", "to send messages to"),
        (2, "[[route]]", "to connect inputs to outputs"),
    ] {
        if !present[idx] {
            c.report_unplaced(Error::Missing {
                reason: format!("no {what} is defined: the router needs at least one {why}"),
            });
        }
    }
    (c.problem_count() == 0).then_some(Config {
        router,
        inputs,
        outputs,
        routes,
    })
}

fn shape(subject: &Subject, reason: &str) -> Error {
    Error::Shape {
        subject: subject.clone(),
        reason: reason.to_owned(),
    }
}

/// Reports an unknown key, with a suggestion or a note for features of a
/// later release. `prefix` names the enclosing table (`queue.`).
fn unknown_field(
    c: &mut Checker<'_>,
    subject: &Subject,
    prefix: &str,
    field: &str,
    span: std::ops::Range<usize>,
    known: &[&str],
) {
    let note = NOT_YET
        .iter()
        .find(|(k, _)| *k == field && prefix.is_empty())
        .map(|(_, note)| format!(": {note}"))
        .unwrap_or_default();
    let suggestion = if note.is_empty() {
        closest(field, known.iter().copied())
    } else {
        None
    };
    c.report(
        span,
        Error::UnknownField {
            subject: subject.clone(),
            field: format!("{prefix}{field}"),
            suggestion: Suggestion(suggestion),
            note,
        },
    );
}

/// A string field of a table entry, without deserializing the entry.
fn peek_str<'a>(item: &'a Spanned<DeValue<'_>>, key: &str) -> Option<Spanned<&'a str>> {
    let DeValue::Table(table) = item.get_ref() else {
        return None;
    };
    let value = table.get(key)?;
    match value.get_ref() {
        DeValue::String(s) => Some(Spanned::new(value.span(), s.as_ref())),
        _ => None,
    }
}

/// `input "api"`, or `input #2` when the entry has no usable name.
fn entry_subject(section: &str, item: &Spanned<DeValue<'_>>, index: usize) -> Subject {
    let name = peek_str(item, "name")
        .map(|n| *n.get_ref())
        .filter(|n| check_name(n).is_ok());
    Subject::entry(section, name, index)
}

/// Reads an entry's `kind` and maps it through `kinds`. Reports a missing
/// or unknown kind (noting kinds that belong to the other section).
fn peek_kind<T: Copy>(
    item: &Spanned<DeValue<'_>>,
    subject: &Subject,
    kinds: &[(&str, T)],
    other_kinds: &[&str],
    other_section: &str,
    c: &mut Checker<'_>,
) -> Option<T> {
    let names: Vec<&str> = kinds.iter().map(|(k, _)| *k).collect();
    let list = names
        .iter()
        .map(|k| format!("{k:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let DeValue::Table(table) = item.get_ref() else {
        c.report(item.span(), shape(subject, "must be a table"));
        return None;
    };
    let Some(kind) = table.get("kind") else {
        c.report(
            item.span(),
            shape(subject, &format!("missing field `kind` (one of {list})")),
        );
        return None;
    };
    let DeValue::String(written) = kind.get_ref() else {
        c.invalid(
            subject,
            "kind",
            kind.span(),
            format!("must be a string, one of {list}"),
        );
        return None;
    };
    let written: &str = written.as_ref();
    if let Some((_, v)) = kinds.iter().find(|(k, _)| *k == written) {
        return Some(*v);
    }
    let reason = if other_kinds.contains(&written) {
        format!("{written:?} is {other_section} kind; here the kinds are {list}")
    } else {
        let suggestion = Suggestion(closest(written, names.iter().copied()));
        format!("{written:?} is not one of {list}{suggestion}")
    };
    c.invalid(subject, "kind", kind.span(), reason);
    None
}

/// Reads one entry into its raw struct: reports and removes every unknown
/// key (also inside the `nested` tables), then lets serde read the shape.
fn read<T: serde::de::DeserializeOwned>(
    mut item: Spanned<DeValue<'_>>,
    subject: &Subject,
    nested: &[(&str, &'static [&'static str])],
    c: &mut Checker<'_>,
) -> Option<T> {
    let span = item.span();
    if let DeValue::Table(table) = item.get_mut() {
        drop_unknown(table, subject, "", fields_of::<T>(), c);
        for (key, fields) in nested {
            if let Some(value) = table.get_mut(*key)
                && let DeValue::Table(inner) = value.get_mut()
            {
                drop_unknown(inner, subject, &format!("{key}."), fields, c);
            }
        }
    }
    match T::deserialize(ValueDeserializer::from(item)) {
        Ok(raw) => Some(raw),
        Err(e) => {
            c.report(e.span().unwrap_or(span), shape(subject, e.message().trim()));
            None
        }
    }
}

fn drop_unknown(
    table: &mut DeTable<'_>,
    subject: &Subject,
    prefix: &str,
    fields: &[&str],
    c: &mut Checker<'_>,
) {
    let mut unknown = Vec::new();
    for (key, _) in table.iter() {
        let k: &str = key.get_ref();
        if !fields.contains(&k) {
            unknown_field(c, subject, prefix, k, key.span(), fields);
            unknown.push(k.to_owned());
        }
    }
    for k in unknown {
        table.remove(k.as_str());
    }
}

/// Reports listeners that would bind the same address. Located at each
/// later entry's `bind`/`listen`/`admin` value.
fn check_binds(
    router: &Router,
    inputs: &[Input],
    outputs: &[Output],
    doc: &DeTable<'_>,
    c: &mut Checker<'_>,
) {
    struct Listener {
        who: String,
        field: &'static str,
        addr: SocketAddr,
        span: std::ops::Range<usize>,
    }
    let span_in = |section: &str, name: &str, field: &str| -> std::ops::Range<usize> {
        let Some(items) = doc.get(section) else {
            return 0..0;
        };
        let found = match items.get_ref() {
            DeValue::Table(t) => t.get(field).map(|v| v.span()),
            DeValue::Array(a) => a
                .iter()
                .find(|item| peek_str(item, "name").is_some_and(|n| *n.get_ref() == name))
                .and_then(|item| match item.get_ref() {
                    DeValue::Table(t) => t.get(field).map(|v| v.span()),
                    _ => None,
                }),
            _ => None,
        };
        found.unwrap_or(items.span())
    };
    let mut listeners = vec![Listener {
        who: "the admin listener ([router] admin)".into(),
        field: "admin",
        addr: router.admin,
        span: span_in("router", "", "admin"),
    }];
    for input in inputs {
        let (field, addr) = match &input.kind {
            InputKind::Http(h) => ("listen", Some(h.listen)),
            InputKind::ZmqSub(z) | InputKind::ZmqPull(z) => match z.attach {
                Attach::Bind(a) => ("bind", Some(a)),
                Attach::Connect(_) => ("bind", None),
            },
        };
        if let Some(addr) = addr {
            listeners.push(Listener {
                who: format!("input {:?}", input.name),
                field,
                addr,
                span: span_in("input", &input.name, field),
            });
        }
    }
    for output in outputs {
        if let Attach::Bind(addr) = output.zmq().attach {
            listeners.push(Listener {
                who: format!("output {:?}", output.name),
                field: "bind",
                addr,
                span: span_in("output", &output.name, "bind"),
            });
        }
    }
    // The admin listener is declared first in spirit but may sit anywhere in
    // the file; report each clash at the later of the two.
    listeners.sort_by_key(|l| l.span.start);
    for (i, later) in listeners.iter().enumerate() {
        if let Some(first) = listeners[..i]
            .iter()
            .find(|l| binds_clash(l.addr, later.addr))
        {
            let subject = Subject(later.who.clone());
            let subject = if later.field == "admin" {
                Subject::table("router")
            } else {
                subject
            };
            c.report(
                later.span.clone(),
                Error::AddressInUse {
                    subject,
                    field: later.field,
                    addr: later.addr.to_string(),
                    other: first.who.clone(),
                    other_line: c.line(first.span.clone()),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigErrors};

    fn problems(text: &str) -> Vec<String> {
        let result: Result<Config, ConfigErrors> =
            Config::parse_with_env(text, "t.toml", &|_| None);
        match result {
            Ok(_) => panic!("expected problems in:\n{text}"),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    /// A valid file with one input, one output, one route; tests splice
    /// mistakes into it.
    fn base(input_extra: &str, output_extra: &str, route_extra: &str) -> String {
        format!(
            r#"[[input]]
name = "in"
kind = "zmq-pull"
bind = "tcp://127.0.0.1:5556"
{input_extra}

[[output]]
name = "out"
kind = "zmq-push"
bind = "tcp://127.0.0.1:6556"
{output_extra}

[[route]]
name = "r"
match = "jobs.>"
to = ["out"]
{route_extra}
"#
        )
    }

    fn assert_one(got: &[String], needle: &str) {
        assert!(
            got.len() == 1 && got[0].contains(needle),
            "expected one problem containing {needle:?}, got {got:#?}"
        );
    }

    #[test]
    fn base_is_valid() {
        Config::parse_with_env(&base("", "", ""), "t.toml", &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn every_unknown_key_of_an_entry_is_reported() {
        let got = problems(&base(
            "max_frame = \"1MiB\"\nsend_hwm_byte = 5",
            "",
            "queue = { capacity = 5, when_ful = \"block\" }\nfilters = [\"x\"]",
        ));
        assert_eq!(got.len(), 4, "{got:#?}");
        assert!(
            got[0].contains(
                "t.toml:5:1: input \"in\": unknown field `max_frame` (did you mean \"max_frames\"?)"
            ),
            "{got:#?}"
        );
        assert!(
            got[1].contains("unknown field `send_hwm_byte` (did you mean \"send_hwm_bytes\"?)"),
            "{got:#?}"
        );
        assert!(
            got[2].contains(
                "route \"r\": unknown field `queue.when_ful` (did you mean \"when_full\"?)"
            ),
            "{got:#?}"
        );
        assert!(
            got[3].contains("unknown field `filters`: Wasm filter plugins are not supported"),
            "{got:#?}"
        );
    }

    #[test]
    fn unknown_sections_and_plugins() {
        let text = format!(
            "{}\n[[plugin]]\nname = \"p\"\n\n[[inputs]]\nname = \"x\"\n",
            base("", "", "")
        );
        let got = problems(&text);
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[0].contains("unknown field `plugin`: Wasm plugins are not supported"),
            "{got:#?}"
        );
        assert!(
            got[1].contains("unknown field `inputs` (did you mean \"input\"?)"),
            "{got:#?}"
        );
    }

    #[test]
    fn single_bracket_sections_are_explained() {
        let text = "[input]\nname = \"x\"\nkind = \"http\"\n";
        let got = problems(text);
        assert!(
            got[0].contains("t.toml:1:1: write `[[input]]` (two brackets)"),
            "{got:#?}"
        );
    }

    #[test]
    fn missing_sections_are_each_reported() {
        let got = problems("[router]\nname = \"x\"\n");
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(
            got.iter().all(|p| p.starts_with("t.toml: no [[")),
            "{got:#?}"
        );
    }

    #[test]
    fn duplicate_names_across_sections() {
        let text = base("", "", "").replace("name = \"r\"", "name = \"in\"");
        let got = problems(&text);
        assert_one(
            &got,
            "t.toml:14:8: route \"in\": name \"in\" is already used by input \"in\" (line 2)",
        );
    }

    #[test]
    fn bad_names() {
        let text = base("", "", "").replace("name = \"out\"", "name = \"bad name\"");
        let got = problems(&text);
        // The name is reported once, and the route's reference to "out" is undefined.
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[0].contains("output #1: name: \"bad name\" is not a valid name"),
            "{got:#?}"
        );
        assert!(got[1].contains("output \"out\" is not defined"), "{got:#?}");
    }

    #[test]
    fn a_broken_output_is_not_also_undefined() {
        let got = problems(&base("", "send_hwm = \"lots\"", ""));
        assert_one(
            &got,
            "t.toml:11:12: output \"out\": invalid type: string \"lots\", expected i64",
        );
        let got = problems(&base("", "mystery = 1", ""));
        assert_one(&got, "unknown field `mystery`");
    }

    #[test]
    fn routes_send_to_outputs_only() {
        let got = problems(
            &base("", "", "").replace("to = [\"out\"]", "to = [\"in\", \"out\", \"out\"]"),
        );
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[0].contains("to: \"in\" is an input (line 2); a route sends to outputs"),
            "{got:#?}"
        );
        assert!(
            got[1].contains("output \"out\" is listed twice"),
            "{got:#?}"
        );
        let got = problems(&base("", "", "").replace("to = [\"out\"]", "to = []"));
        assert_one(&got, "to: lists no output");
    }

    #[test]
    fn bind_clashes_including_admin_and_wildcards() {
        let text = format!("[router]\nadmin = \"0.0.0.0:6556\"\n\n{}", base("", "", ""));
        let got = problems(&text);
        assert_one(
            &got,
            "output \"out\": bind: 127.0.0.1:6556 is already bound by the admin listener ([router] admin) (line 2)",
        );
        let text = format!(
            "{}\n[[input]]\nname = \"api\"\nkind = \"http\"\nlisten = \"127.0.0.1:9464\"\n",
            base("", "", "")
        );
        let got = problems(&text);
        assert_one(
            &got,
            "input \"api\": listen: 127.0.0.1:9464 is already bound by the admin listener",
        );
        // Port 0 never clashes.
        let text = base("", "", "").replace("5556", "0").replace("6556", "0");
        Config::parse_with_env(&text, "t.toml", &|_| None).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn options_that_do_not_apply_are_refused() {
        let got = problems(&base(
            "send_hwm = 5\nslow_subscriber_timeout = \"1s\"",
            "recv_hwm = 5\nreconnect_interval = \"1s\"",
            "",
        ));
        assert_eq!(got.len(), 4, "{got:#?}");
        assert!(
            got[0].contains("input \"in\": send_hwm: has no effect on a zmq-pull input"),
            "{got:#?}"
        );
        assert!(
            got[1].contains("slow_subscriber_timeout: has no effect on a zmq-pull input"),
            "{got:#?}"
        );
        assert!(
            got[2].contains("output \"out\": recv_hwm: has no effect on a zmq-push output"),
            "{got:#?}"
        );
        assert!(
            got[3].contains("reconnect_interval: only applies with `connect`"),
            "{got:#?}"
        );
        let text = base("", "", "").replace(
            "bind = \"tcp://127.0.0.1:6556\"",
            "connect = \"tcp://127.0.0.1:6556\"\nmax_connections = 5",
        );
        assert_one(
            &problems(&text),
            "max_connections: only applies with `bind`",
        );
    }

    #[test]
    fn limits_must_fit_together() {
        let got = problems(&base(
            "max_frame_size = \"2MiB\"\nmax_message_size = \"1MiB\"",
            "",
            "",
        ));
        assert_one(
            &got,
            "max_frame_size: (2097152 bytes) is larger than max_message_size (1048576 bytes)",
        );
        let got = problems(&base(
            "envelope = \"topic-attrs-payload\"\nmax_frames = 2",
            "",
            "",
        ));
        assert_one(
            &got,
            "max_frames: is 2, but the \"topic-attrs-payload\" envelope needs 3 frames",
        );
        let got = problems(&base("heartbeat_interval = \"30s\"", "", ""));
        assert_one(
            &got,
            "heartbeat_timeout: must be longer than heartbeat_interval",
        );
        let got = problems(&base(
            "heartbeat_interval = \"off\"\nheartbeat_timeout = \"5s\"",
            "",
            "",
        ));
        assert_one(
            &got,
            "heartbeat_timeout: has no effect while heartbeat_interval is \"off\"",
        );
        let text = base("", "", "").replace(
            "bind = \"tcp://127.0.0.1:6556\"",
            "connect = \"tcp://h:1\"\nreconnect_interval = \"5s\"\nreconnect_interval_max = \"1s\"",
        );
        assert_one(
            &problems(&text),
            "reconnect_interval_max: must be at least reconnect_interval",
        );
        let got = problems(&base(
            "max_frames = 0\nmax_message_size = \"10GiB\"",
            "",
            "",
        ));
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[0]
                .contains("t.toml:5:14: input \"in\": max_frames: must be from 1 to 65536, got 0"),
            "{got:#?}"
        );
        assert!(
            got[1].contains("max_message_size: must be from 64B to 256MiB, got 10GiB"),
            "{got:#?}"
        );
    }

    #[test]
    fn attach_and_envelope_mistakes() {
        let text = base("", "", "").replace("bind = \"tcp://127.0.0.1:5556\"", "");
        assert_one(
            &problems(&text),
            "input \"in\": bind: needs `bind = \"tcp://IP:port\"` or `connect",
        );
        let got = problems(&base("connect = \"tcp://h:1\"", "", ""));
        assert_one(&got, "set either `bind` or `connect`, not both");
        let text = base("envelope = \"topic_payload\"", "", "");
        assert_one(
            &problems(&text),
            "envelope: \"topic_payload\" is not one of \"topic-payload\", \"topic-attrs-payload\", \"single-frame\" (did you mean \"topic-payload\"?)",
        );
        let text = base("", "", "").replace(
            "bind = \"tcp://127.0.0.1:6556\"",
            "connect = [\"tcp://a:1\", \"tcp://*:2\", \"ipc:///x\"]",
        );
        let got = problems(&text);
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[0].contains("t.toml:10:25: output \"out\": connect: \"tcp://*:2\""),
            "{got:#?}"
        );
        assert!(
            got[1].contains("only tcp:// endpoints are supported"),
            "{got:#?}"
        );
    }

    #[test]
    fn plain_and_identity_mistakes() {
        let got = problems(&base("plain = { users = {} }", "", ""));
        assert_one(&got, "plain.users: lists no user");
        let got = problems(&base(
            "plain = { users = { a = \"b\" }, username = \"u\", password = \"p\" }",
            "",
            "",
        ));
        assert_one(&got, "plain: write `{ users = { name = \"password\" } }`");
        let got = problems(&base("plain = { username = \"u\" }", "", ""));
        assert_one(&got, "plain: write");
        let got = problems(&base("identity = \"\"", "", ""));
        assert_one(&got, "identity: must be 1 to 255 bytes");
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

    #[test]
    fn type_errors_are_located_at_the_value() {
        let got = problems(&base("max_frames = \"many\"", "", ""));
        assert_one(
            &got,
            "t.toml:5:14: input \"in\": invalid type: string \"many\", expected i64",
        );
        let got = problems(&base("", "", "").replace("match = \"jobs.>\"\n", ""));
        assert_one(&got, "t.toml:13:1: route \"r\": missing field `match`");
        let got = problems(&base("handshake_timeout = 5", "", ""));
        assert_one(&got, "handshake_timeout: 5 has no unit");
    }

    #[test]
    fn kinds_are_checked_per_section() {
        let got = problems(&base("", "", "").replace("kind = \"zmq-push\"", "kind = \"zmq-pull\""));
        assert_one(
            &got,
            "output \"out\": kind: \"zmq-pull\" is an input kind; here the kinds are \"zmq-pub\", \"zmq-push\"",
        );
        let got = problems(&base("", "", "").replace("kind = \"zmq-pull\"\n", ""));
        assert!(
            got[0].contains(
                "input \"in\": missing field `kind` (one of \"zmq-sub\", \"zmq-pull\", \"http\")"
            ),
            "{got:#?}"
        );
    }

    #[test]
    fn router_section_mistakes() {
        let text = format!(
            "[router]\nname = \"\"\nadmin = \"localhost:9464\"\nshutdown_grace = \"1h\"\nlog_level = \"inof\"\n\n{}",
            base("", "", "")
        );
        let got = problems(&text);
        assert_eq!(got.len(), 4, "{got:#?}");
        assert!(
            got[0].starts_with("t.toml:2:8: [router]: name:"),
            "{got:#?}"
        );
        assert!(
            got[1].starts_with("t.toml:3:9: [router]: admin:"),
            "{got:#?}"
        );
        assert!(
            got[2].contains("shutdown_grace: must be from 0s to 10m, got 1h"),
            "{got:#?}"
        );
        assert!(
            got[3].starts_with("t.toml:5:13: [router]: log_level:"),
            "{got:#?}"
        );
    }
}
