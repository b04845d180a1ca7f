//! The one validate step: from the parsed TOML document to a typed
//! [`Config`], resolving every name and collecting every problem.
//!
//! Each entry (`[router]`, each `[[input]]`, `[[output]]`, `[[plugin]]`,
//! `[[route]]`) is read on its own, so a broken entry does not hide
//! problems in the others. Within an entry, every unknown key is reported,
//! then serde reads the shape (types, required fields), then each value is
//! parsed and checked. Names are gathered from the document itself, so a
//! route that names a broken output is not blamed for it.
//!
//! A new section is one more arm in [`validate`] with its raw struct (in
//! `raw.rs`), a build function in its own file, and, when routes refer to
//! it, its label in [`SECTIONS`] so its names join the declared list (as
//! `[[plugin]]` did).

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::Config;
use super::acl;
use super::auth::{self, Authenticator};
use super::checker::Checker;
use super::dead_letters::{self, DeadLetters};
use super::entry::{Family, entry_subject, peek_kind, peek_str, read, shape, unknown_field};
use super::error::{Error, Subject};
use super::input::{self, Input};
use super::listeners::check_binds;
use super::names::{Declared, check_name};
use super::output;
use super::plugin;
use super::raw::{
    RawAcl, RawAuth, RawBlackhole, RawCurve, RawDeadLetters, RawHttp, RawJetStreamInput,
    RawListenerTls, RawNats, RawNatsAuth, RawNatsInput, RawNatsTls, RawOnFailure, RawPlain,
    RawPlugin, RawQueue, RawRoute, RawRouter, RawStream, RawWebhook, RawZmqDealer, RawZmqPub,
    RawZmqPush, RawZmqReader, RawZmqRouter, fields_of, zmq_fields,
};
use super::route;
use super::router::{self, Router};
use super::zmq::ZmqRole;

/// The `[[...]]` sections, whose entries are named.
const SECTIONS: [&str; 4] = ["input", "output", "plugin", "route"];

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
    let mut dead_letters_table = None;
    let mut sections: [Vec<Spanned<DeValue<'_>>>; 4] = Default::default();
    let mut present = [false; 4];
    // `[[auth]]` and `[[acl]]`: not named in routes, so not in SECTIONS.
    let mut auth_items: Vec<Spanned<DeValue<'_>>> = Vec::new();
    let mut acl_items: Vec<Spanned<DeValue<'_>>> = Vec::new();
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
            "dead_letters" => match value.get_ref() {
                DeValue::Table(_) => dead_letters_table = Some(value.clone()),
                _ => c.report(
                    value.span(),
                    shape(
                        &Subject::top(),
                        "`dead_letters` must be a table: write `[dead_letters]`",
                    ),
                ),
            },
            "auth" | "acl" => match value.get_ref() {
                DeValue::Array(items) => {
                    let into = if key_name == "auth" {
                        &mut auth_items
                    } else {
                        &mut acl_items
                    };
                    into.extend(items.iter().cloned());
                }
                _ => c.report(
                    value.span(),
                    shape(
                        &Subject::top(),
                        &format!("write `[[{key_name}]]` (two brackets): there can be several"),
                    ),
                ),
            },
            "input" | "output" | "plugin" | "route" => {
                let idx = SECTIONS.iter().position(|s| *s == key_name).unwrap_or(0);
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
            other => {
                let known = [
                    "router",
                    "input",
                    "output",
                    "plugin",
                    "route",
                    "dead_letters",
                    "auth",
                    "acl",
                ];
                unknown_field(c, &Subject::top(), "", other, key.span(), &known);
            }
        }
    }

    // Gather every name first, so references resolve even to broken entries.
    let mut declared: Vec<Declared> = Vec::new();
    for (idx, items) in sections.iter().enumerate() {
        for (i, item) in items.iter().enumerate() {
            let Some(name) = peek_str(item, "name") else {
                continue;
            };
            // A bad name is reported here, once, and still declared, so
            // references to it are not reported as undefined too.
            if let Err(reason) = check_name(name.get_ref()) {
                let subject = Subject::entry(SECTIONS[idx], None, i);
                c.invalid(&subject, "name", name.span(), reason);
            }
            let line = c.line(name.span());
            if let Some(first) = declared.iter().find(|d| d.name == *name.get_ref()) {
                c.report(
                    name.span(),
                    Error::DuplicateName {
                        subject: Subject::entry(SECTIONS[idx], Some(name.get_ref()), i),
                        name: (*name.get_ref()).to_owned(),
                        other: format!("{} {:?}", first.section, first.name),
                        other_line: first.line,
                    },
                );
                continue;
            }
            declared.push(Declared {
                name: (*name.get_ref()).to_owned(),
                section: SECTIONS[idx],
                line,
            });
        }
    }

    let (auth, auth_names) = build_auth(auth_items, c);
    let mut acl = Vec::new();
    for (i, item) in acl_items.into_iter().enumerate() {
        let subject = Subject::entry("acl", None, i);
        let span = item.span();
        let built = read::<RawAcl>(item, &subject, &[], None, c)
            .and_then(|raw| acl::build(&raw, span, &subject, c));
        acl.extend(built);
    }

    let router = match &router_table {
        Some(t) => read::<RawRouter>(
            t.clone(),
            &Subject::table("router"),
            &[("admin_tls", fields_of::<RawListenerTls>())],
            None,
            c,
        )
        .map(|raw| router::build(&raw, &auth_names, c)),
        None => Some(Router::default()),
    };

    let [input_items, output_items, plugin_items, route_items] = sections;
    let plain = [
        ("plain", fields_of::<RawPlain>()),
        ("curve", fields_of::<RawCurve>()),
    ];
    let zmq_fields = zmq_fields();
    let zmq_family = |role: ZmqRole| {
        Some(Family {
            kind: role.describe(),
            fields: &zmq_fields,
        })
    };
    let mut inputs = Vec::new();
    for (i, item) in input_items.into_iter().enumerate() {
        let subject = entry_subject("input", &item, i);
        #[derive(Clone, Copy)]
        enum Kind {
            Zmq(ZmqRole),
            Http,
            Nats,
            JetStream,
        }
        let kinds = [
            ("zmq-sub", Kind::Zmq(ZmqRole::Sub)),
            ("zmq-pull", Kind::Zmq(ZmqRole::Pull)),
            ("zmq-router", Kind::Zmq(ZmqRole::Router)),
            ("http", Kind::Http),
            ("nats", Kind::Nats),
            ("nats-jetstream", Kind::JetStream),
        ];
        let Some(kind) = peek_kind(
            &item,
            &subject,
            &kinds,
            &["zmq-pub", "zmq-push", "zmq-dealer", "blackhole", "webhook"],
            "an output",
            c,
        ) else {
            continue;
        };
        let built = match kind {
            Kind::Zmq(ZmqRole::Router) => {
                read::<RawZmqRouter>(item, &subject, &plain, zmq_family(ZmqRole::Router), c)
                    .map(|raw| input::build_router(&raw, &subject, c))
            }
            Kind::Zmq(role) => read::<RawZmqReader>(item, &subject, &plain, zmq_family(role), c)
                .map(|raw| input::build_reader(&raw, role, &subject, c)),
            Kind::Http => read::<RawHttp>(
                item,
                &subject,
                &[("tls", fields_of::<RawListenerTls>())],
                None,
                c,
            )
            .map(|raw| input::build_http(&raw, &auth_names, &subject, c)),
            Kind::Nats => {
                let nested = [
                    ("auth", fields_of::<RawNatsAuth>()),
                    ("tls", fields_of::<RawNatsTls>()),
                ];
                read::<RawNatsInput>(item, &subject, &nested, None, c)
                    .map(|raw| input::build_nats(&raw, &subject, c))
            }
            Kind::JetStream => {
                let nested = [
                    ("auth", fields_of::<RawNatsAuth>()),
                    ("tls", fields_of::<RawNatsTls>()),
                ];
                read::<RawJetStreamInput>(item, &subject, &nested, None, c)
                    .map(|raw| input::build_jetstream(&raw, &subject, c))
            }
        };
        inputs.extend(built);
    }

    let mut outputs = Vec::new();
    for (i, item) in output_items.into_iter().enumerate() {
        let subject = entry_subject("output", &item, i);
        #[derive(Clone, Copy)]
        enum Kind {
            Zmq(ZmqRole),
            Blackhole,
            Nats { jetstream: bool },
            Webhook,
        }
        let kinds = [
            ("zmq-pub", Kind::Zmq(ZmqRole::Pub)),
            ("zmq-push", Kind::Zmq(ZmqRole::Push)),
            ("zmq-dealer", Kind::Zmq(ZmqRole::Dealer)),
            ("blackhole", Kind::Blackhole),
            ("nats", Kind::Nats { jetstream: false }),
            ("nats-jetstream", Kind::Nats { jetstream: true }),
            ("webhook", Kind::Webhook),
        ];
        let inputs_kinds = ["zmq-sub", "zmq-pull", "zmq-router", "http"];
        let Some(kind) = peek_kind(&item, &subject, &kinds, &inputs_kinds, "an input", c) else {
            continue;
        };
        let built = match kind {
            Kind::Zmq(ZmqRole::Dealer) => {
                read::<RawZmqDealer>(item, &subject, &plain, zmq_family(ZmqRole::Dealer), c)
                    .map(|raw| output::build_dealer(&raw, &subject, c))
            }
            Kind::Zmq(ZmqRole::Push) => {
                read::<RawZmqPush>(item, &subject, &plain, zmq_family(ZmqRole::Push), c)
                    .map(|raw| output::build_push(&raw, &subject, c))
            }
            Kind::Zmq(role) => read::<RawZmqPub>(item, &subject, &plain, zmq_family(role), c)
                .map(|raw| output::build_pub(&raw, &subject, c)),
            Kind::Nats { jetstream } => {
                let nested = [
                    ("auth", fields_of::<RawNatsAuth>()),
                    ("tls", fields_of::<RawNatsTls>()),
                    ("stream", fields_of::<RawStream>()),
                ];
                read::<RawNats>(item, &subject, &nested, None, c)
                    .map(|raw| output::build_nats(&raw, jetstream, &subject, c))
            }
            Kind::Blackhole => read::<RawBlackhole>(item, &subject, &[], None, c)
                .map(|raw| output::build_blackhole(&raw, &subject, c)),
            Kind::Webhook => read::<RawWebhook>(item, &subject, &[], None, c)
                .map(|raw| output::build_webhook(&raw, &subject, c)),
        };
        outputs.extend(built);
    }

    let mut plugins = Vec::new();
    for (i, item) in plugin_items.into_iter().enumerate() {
        let subject = entry_subject("plugin", &item, i);
        let nested = [("on_failure", fields_of::<RawOnFailure>())];
        let built = read::<RawPlugin>(item, &subject, &nested, None, c)
            .map(|raw| plugin::build(&raw, &subject, c));
        plugins.extend(built);
    }

    let largest_message = inputs
        .iter()
        .map(Input::max_message_size)
        .max()
        .unwrap_or(0);
    // Whether `[router]` writes `data_dir` at all: a bad value is reported
    // there, not again at every durable queue.
    let data_dir_written = router_table
        .as_ref()
        .is_some_and(|t| matches!(t.get_ref(), DeValue::Table(t) if t.get("data_dir").is_some()));
    let mut routes = Vec::new();
    for (i, item) in route_items.into_iter().enumerate() {
        let subject = entry_subject("route", &item, i);
        let nested = [("queue", fields_of::<RawQueue>())];
        let built = read::<RawRoute>(item, &subject, &nested, None, c).map(|raw| {
            route::build(
                &raw,
                &subject,
                &declared,
                largest_message,
                data_dir_written,
                c,
            )
        });
        routes.extend(built);
    }

    let dead_letters = match &dead_letters_table {
        Some(t) => read::<RawDeadLetters>(t.clone(), &Subject::table("dead_letters"), &[], None, c)
            .map(|raw| dead_letters::build(&raw, t.span(), data_dir_written, c)),
        None => Some(DeadLetters::default()),
    };

    let router = router?;
    let dead_letters = dead_letters?;
    check_binds(&router, &inputs, &outputs, &doc, c);
    if !auth.is_empty() || !acl.is_empty() {
        check_listeners_name_auth(&router, &inputs, &auth, c);
        check_zmq_peers_are_named(&inputs, &outputs, c);
    }
    for (idx, what, why) in [
        (0, "[[input]]", "to receive messages"),
        (1, "[[output]]", "to send messages to"),
        (3, "[[route]]", "to connect inputs to outputs"),
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
        plugins,
        routes,
        dead_letters,
        auth,
        acl,
    })
}

/// Reads the `[[auth]]` entries, and their names (those of broken entries
/// too, so a listener naming one is not also blamed).
fn build_auth(
    items: Vec<Spanned<DeValue<'_>>>,
    c: &mut Checker<'_>,
) -> (Vec<Authenticator>, Vec<String>) {
    let mut names: Vec<String> = Vec::new();
    let mut built = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let subject = entry_subject("auth", &item, i);
        if let Some(name) = peek_str(&item, "name") {
            if let Err(reason) = check_name(name.get_ref()) {
                c.invalid(&subject, "name", name.span(), reason);
            }
            if names.iter().any(|n| n == name.get_ref()) {
                c.invalid(
                    &subject,
                    "name",
                    name.span(),
                    format!(
                        "{:?} is already the name of another [[auth]]",
                        name.get_ref()
                    ),
                );
            }
            names.push((*name.get_ref()).to_owned());
        }
        built.extend(
            read::<RawAuth>(item, &subject, &[], None, c)
                .and_then(|raw| auth::build(&raw, &subject, c)),
        );
    }
    (built, names)
}

/// Once the file secures the router, a ZeroMQ input or `zmq-pub` output
/// whose peers do not authenticate (no PLAIN or CURVE server) must say
/// that they are anonymous.
fn check_zmq_peers_are_named(
    inputs: &[input::Input],
    outputs: &[super::Output],
    c: &mut Checker<'_>,
) {
    let entries = inputs
        .iter()
        .filter_map(|i| match &i.kind {
            input::InputKind::ZmqSub(s) | input::InputKind::ZmqPull(s) => {
                Some(("input", &i.name, s))
            }
            input::InputKind::ZmqRouter(r) => Some(("input", &i.name, &r.socket)),
            _ => None,
        })
        .chain(outputs.iter().filter_map(|o| match &o.kind {
            super::OutputKind::ZmqPub(s) => Some(("output", &o.name, s)),
            _ => None,
        }));
    for (section, name, socket) in entries {
        if !socket.options.authenticates_peers() && !socket.options.anonymous {
            c.report_unplaced(Error::Missing {
                reason: format!(
                    "{section} {name:?}: its peers do not authenticate (no `plain` or `curve` users), and the file has [[auth]] or [[acl]]: write auth = [\"anonymous\"] to take them under the anonymous rules, or give it `plain` / `curve` users"
                ),
            });
        }
    }
}

/// Once the file secures the router, every HTTP listener must say whom it
/// accepts: an open one is a choice written down, never a default.
fn check_listeners_name_auth(
    router: &Router,
    inputs: &[input::Input],
    auth: &[Authenticator],
    c: &mut Checker<'_>,
) {
    let mtls = |names: Option<&Vec<String>>| -> Option<String> {
        names
            .into_iter()
            .flatten()
            .find(|n| {
                auth.iter()
                    .any(|a| &a.name == *n && matches!(a.kind, super::AuthKind::Mtls(_)))
            })
            .cloned()
    };
    let verifies = |tls: Option<&super::ListenerTls>| tls.is_some_and(|t| t.client_ca.is_some());
    if let Some(name) = mtls(router.admin_auth.as_ref())
        && !verifies(router.admin_tls.as_ref())
    {
        c.report_unplaced(Error::Missing {
            reason: format!("[router] admin_auth names the mtls authenticator {name:?}: the admin listener needs `admin_tls` with `client_ca` to verify client certificates"),
        });
    }
    for i in inputs {
        if let input::InputKind::Http(h) = &i.kind
            && let Some(name) = mtls(h.auth.as_ref())
            && !verifies(h.tls.as_ref())
        {
            c.report_unplaced(Error::Missing {
                reason: format!("input {:?}: `auth` names the mtls authenticator {name:?}: the input needs `tls` with `client_ca` to verify client certificates", i.name),
            });
        }
    }
    if router.admin_auth.is_none() {
        c.report_unplaced(Error::Missing {
            reason: "[router] admin_auth is required once the file has [[auth]] or [[acl]]: name the authenticators the admin listener accepts, or [\"anonymous\"]".into(),
        });
    }
    for i in inputs {
        if let input::InputKind::Http(h) = &i.kind
            && h.auth.is_none()
        {
            c.report_unplaced(Error::Missing {
                reason: format!(
                    "input {:?}: `auth` is required once the file has [[auth]] or [[acl]]: name the authenticators it accepts, or [\"anonymous\"]",
                    i.name
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::fixture::{assert_one, base, problems, valid};

    #[test]
    fn base_is_valid() {
        valid(&base("", "", ""));
    }

    #[test]
    fn unknown_sections() {
        let text = format!(
            "{}\n[[plugins]]\nname = \"p\"\n\n[[inputs]]\nname = \"x\"\n",
            base("", "", "")
        );
        let got = problems(&text);
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[0].contains("unknown field `plugins` (did you mean \"plugin\"?)"),
            "{got:#?}"
        );
        assert!(
            got[1].contains("unknown field `inputs` (did you mean \"input\"?)"),
            "{got:#?}"
        );
        let got = problems(&format!("{}\n[plugin]\nname = \"p\"\n", base("", "", "")));
        assert_one(&got, "write `[[plugin]]` (two brackets)");
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
}
