//! Listeners that would clash: two entries binding the same address (or a
//! wildcard and an address on the same port) are reported, at the later one,
//! before anything is bound.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::checker::Checker;
use super::entry::peek_str;
use super::error::{Error, Subject};
use super::input::Input;
use super::output::Output;
use super::router::Router;

/// What a running input or output holds that no other entry may hold at
/// the same time. Declared by each entry ([`Input::resources`],
/// [`Output::resources`]): the clash checks and the order a reload
/// rebuilds entries in follow from it, whatever the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// A TCP address it listens on; `field` is the key that names it
    /// (`bind`, `listen`).
    Listen {
        /// The config key.
        field: &'static str,
        /// The address (port 0: any free port, which never clashes).
        addr: SocketAddr,
    },
}

impl Resource {
    /// True when `self` and `other` cannot be held at once.
    pub fn clashes(&self, other: &Resource) -> bool {
        match (self, other) {
            (Self::Listen { addr: a, .. }, Self::Listen { addr: b, .. }) => binds_clash(*a, *b),
        }
    }
}

/// True when an entry holding `held` must let go before an entry wanting
/// `wanted` can start.
pub fn overlaps(held: &[Resource], wanted: &[Resource]) -> bool {
    held.iter().any(|h| wanted.iter().any(|w| h.clashes(w)))
}

/// Reports listeners that would bind the same address. Located at each
/// later entry's `bind`/`listen`/`admin` value.
pub(crate) fn check_binds(
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
        span: Range<usize>,
    }
    let span_in = |section: &str, name: &str, field: &str| -> Range<usize> {
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
    let entries = inputs
        .iter()
        .map(|i| ("input", &i.name, i.resources()))
        .chain(outputs.iter().map(|o| ("output", &o.name, o.resources())));
    for (section, name, resources) in entries {
        for resource in resources {
            let Resource::Listen { field, addr } = resource;
            listeners.push(Listener {
                who: format!("{section} {name:?}"),
                field,
                addr,
                span: span_in(section, name, field),
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

/// True when binding `a` and `b` at once would fail: the same port and the
/// same address, or either one the wildcard of a family that overlaps. Port
/// 0 never clashes (the system picks distinct ports).
pub(crate) fn binds_clash(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let (ia, ib) = (a.ip(), b.ip());
    if ia == ib {
        return true;
    }
    // Linux IPv6 wildcard sockets are dual-stack by default, so `[::]`
    // clashes with IPv4 addresses too.
    match (ia, ib) {
        (IpAddr::V6(v), _) | (_, IpAddr::V6(v)) if v.is_unspecified() => true,
        (IpAddr::V4(x), IpAddr::V4(y)) => x.is_unspecified() || y.is_unspecified(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixture::{assert_one, base, problems, valid};

    #[test]
    fn clashes() {
        let a = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert!(binds_clash(a("127.0.0.1:1"), a("127.0.0.1:1")));
        assert!(binds_clash(a("0.0.0.0:1"), a("127.0.0.1:1")));
        assert!(binds_clash(a("[::]:1"), a("127.0.0.1:1")));
        assert!(!binds_clash(a("127.0.0.1:1"), a("127.0.0.2:1")));
        assert!(!binds_clash(a("127.0.0.1:1"), a("127.0.0.1:2")));
        assert!(!binds_clash(a("0.0.0.0:0"), a("0.0.0.0:0")));
        assert!(!binds_clash(a("[::1]:1"), a("127.0.0.1:1")));
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
        valid(&text);
    }
}
