//! Reading one entry of the file (`[router]`, an `[[input]]`, ...) on its
//! own: peek at its name and kind, report and drop every unknown key, then
//! let serde read the raw struct. An entry that fails here is skipped; the
//! others are still read.

use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::checker::{Checker, closest};
use super::error::{Error, Subject, Suggestion};
use super::names::check_name;
use super::raw::fields_of;

/// A shape problem (`Error::Shape`).
pub(crate) fn shape(subject: &Subject, reason: &str) -> Error {
    Error::Shape {
        subject: subject.clone(),
        reason: reason.to_owned(),
    }
}

/// Reports an unknown key, with a suggestion when a known key is close.
/// `prefix` names the enclosing table (`queue.`).
pub(crate) fn unknown_field(
    c: &mut Checker<'_>,
    subject: &Subject,
    prefix: &str,
    field: &str,
    span: std::ops::Range<usize>,
    known: &[&str],
) {
    let suggestion = closest(field, known.iter().copied());
    c.report(
        span,
        Error::UnknownField {
            subject: subject.clone(),
            field: format!("{prefix}{field}"),
            suggestion: Suggestion(suggestion),
        },
    );
}

/// A string field of a table entry, without deserializing the entry.
pub(crate) fn peek_str<'a>(item: &'a Spanned<DeValue<'_>>, key: &str) -> Option<Spanned<&'a str>> {
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
pub(crate) fn entry_subject(section: &str, item: &Spanned<DeValue<'_>>, index: usize) -> Subject {
    let name = peek_str(item, "name")
        .map(|n| *n.get_ref())
        .filter(|n| check_name(n).is_ok());
    Subject::entry(section, name, index)
}

/// Reads an entry's `kind` and maps it through `kinds`. Reports a missing
/// or unknown kind (noting kinds that belong to the other section).
pub(crate) fn peek_kind<T: Copy>(
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

/// The other kinds of an entry's family, for an entry being read: a field
/// one of them has is reported as having no effect on this entry's kind
/// rather than as unknown.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Family<'a> {
    /// This entry's kind, as the message names it (`a zmq-pull input`).
    pub(crate) kind: &'a str,
    /// Every field of any kind of the family.
    pub(crate) fields: &'a [&'a str],
}

/// Reads one entry into its raw struct: reports and removes every unknown
/// key (also inside the `nested` tables), then lets serde read the shape.
/// With a `family`, a key another kind of the family has is refused as
/// having no effect on this kind.
pub(crate) fn read<T: serde::de::DeserializeOwned>(
    mut item: Spanned<DeValue<'_>>,
    subject: &Subject,
    nested: &[(&str, &'static [&'static str])],
    family: Option<Family<'_>>,
    c: &mut Checker<'_>,
) -> Option<T> {
    let span = item.span();
    if let DeValue::Table(table) = item.get_mut() {
        drop_unknown(table, subject, "", fields_of::<T>(), family, c);
        for (key, fields) in nested {
            if let Some(value) = table.get_mut(*key)
                && let DeValue::Table(inner) = value.get_mut()
            {
                drop_unknown(inner, subject, &format!("{key}."), fields, None, c);
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
    family: Option<Family<'_>>,
    c: &mut Checker<'_>,
) {
    let mut unknown = Vec::new();
    for (key, _) in table.iter() {
        let k: &str = key.get_ref();
        if fields.contains(&k) {
            continue;
        }
        match family {
            Some(family) if family.fields.contains(&k) => c.invalid(
                subject,
                k,
                key.span(),
                format!("has no effect on {}", family.kind),
            ),
            // A near miss of another kind's field is still suggested: that
            // message then says the field does not apply here.
            Some(family) if closest(k, fields.iter().copied()).is_none() => {
                unknown_field(c, subject, prefix, k, key.span(), family.fields);
            }
            _ => unknown_field(c, subject, prefix, k, key.span(), fields),
        }
        unknown.push(k.to_owned());
    }
    for k in unknown {
        table.remove(k.as_str());
    }
}

#[cfg(test)]
mod tests {
    use crate::config::fixture::{assert_one, base, problems};

    #[test]
    fn every_unknown_key_of_an_entry_is_reported() {
        let got = problems(&base(
            "max_frame = \"1MiB\"\nsend_hwm_byte = 5",
            "",
            "queue = { capacity = 5, when_ful = \"block\" }\nfilter = [\"x\"]",
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
            got[3].contains("route \"r\": unknown field `filter` (did you mean \"filters\"?)"),
            "{got:#?}"
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
            "output \"out\": kind: \"zmq-pull\" is an input kind; here the kinds are \"zmq-pub\", \"zmq-push\", \"zmq-dealer\"",
        );
        let got = problems(&base("", "", "").replace("kind = \"zmq-pull\"\n", ""));
        assert!(
            got[0].contains(
                "input \"in\": missing field `kind` (one of \"zmq-sub\", \"zmq-pull\", \"zmq-router\", \"http\", \"nats\", \"nats-jetstream\")"
            ),
            "{got:#?}"
        );
    }
}
