//! ZMTP PLAIN authentication settings (RFC 24): a server's users, or a
//! client's credentials. Passwords never show in `Debug` or `Serialize`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use serde::Serialize;

use super::checker::Checker;
use super::error::Subject;
use super::raw::RawPlain;
use super::secret::Secret;
use crate::zmtp::handshake::Mechanism;

/// ZMTP PLAIN authentication (RFC 24). Credentials cross the wire in clear
/// text: use it on trusted networks only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Plain {
    /// Accept peers that present one of these user names and passwords.
    /// Written `plain = { users = { alice = "secret" } }`.
    Server {
        /// User name to password.
        users: BTreeMap<String, Secret>,
    },
    /// Present these credentials to the peer. Written
    /// `plain = { username = "edge", password = "secret" }`.
    Client {
        /// The user name, up to 255 bytes.
        username: String,
        /// The password, up to 255 bytes.
        password: Secret,
    },
}

impl Plain {
    /// The ZMTP handshake's mechanism for these settings.
    pub fn mechanism(&self) -> Mechanism {
        match self {
            Plain::Client { username, password } => Mechanism::PlainClient {
                username: username.clone(),
                password: password.expose().to_owned(),
            },
            Plain::Server { users } => Mechanism::PlainServer {
                credentials: Arc::new(
                    users
                        .iter()
                        .map(|(user, secret)| (user.clone(), secret.expose().to_owned()))
                        .collect(),
                ),
            },
        }
    }
}

/// Reads `plain = { ... }`: a server's users, or a client's credentials.
pub(crate) fn build(
    raw: &RawPlain,
    span: Range<usize>,
    subject: &Subject,
    c: &mut Checker<'_>,
) -> Option<Plain> {
    let too_long = |s: &str| s.len() > 255;
    match (&raw.users, &raw.username, &raw.password) {
        (Some(users), None, None) => {
            if users.get_ref().is_empty() {
                c.invalid(
                    subject,
                    "plain.users",
                    users.span(),
                    "lists no user; a PLAIN server with no users admits nobody",
                );
            }
            let mut out = BTreeMap::new();
            for (name, password) in users.get_ref() {
                if name.is_empty() || too_long(name) || too_long(password.get_ref()) {
                    c.invalid(
                        subject,
                        "plain.users",
                        password.span(),
                        format!("user {name:?}: names and passwords are 1 to 255 bytes"),
                    );
                }
                out.insert(name.clone(), Secret::new(password.get_ref().clone()));
            }
            Some(Plain::Server { users: out })
        }
        (None, Some(username), Some(password)) => {
            if too_long(username.get_ref()) || too_long(password.get_ref()) {
                c.invalid(
                    subject,
                    "plain",
                    username.span(),
                    "username and password are at most 255 bytes each",
                );
            }
            Some(Plain::Client {
                username: username.get_ref().clone(),
                password: Secret::new(password.get_ref().clone()),
            })
        }
        _ => {
            c.invalid(subject, "plain", span, "write `{ users = { name = \"password\" } }` to check peers (server), or `{ username = \"...\", password = \"...\" }` to log in to a peer (client)");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::fixture::{assert_one, base, problems};

    #[test]
    fn plain_mistakes() {
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
    }
}
