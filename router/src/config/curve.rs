//! ZMTP CURVE settings (RFC 25/26): a server's keypair and the clients it
//! admits, or a client's keypair and the server's public key. Secret keys
//! never show in `Debug` or `Serialize`; public keys do (as Z85).
//!
//! ```toml
//! curve = { secret_key_file = "keys/server.key", clients_file = "keys/clients.toml" }
//! curve = { server_key = "Z85 public key", secret_key_file = "keys/edge.key" }
//! ```
//!
//! A secret key file holds the 40-character Z85 secret key alone, or the
//! `public = "..."` / `secret = "..."` lines `switchyard curve-keypair`
//! prints (czmq's `public-key` / `secret-key` lines too; `#` comment
//! lines are skipped). `secret_key =
//! "${ENV_VAR}"` reads it from the environment instead. A clients file is
//! TOML mapping names to Z85 public keys (`edge-7 = "..."`); the name is
//! what the connection authenticates as (the message's principal). Both
//! files are read when the config is loaded and again by every reload.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use serde::{Serialize, Serializer};

use super::checker::Checker;
use super::error::Subject;
use super::raw::RawCurve;
use super::secret;
use crate::zmtp::curve::{CurveKeypair, CurvePublicKey, parse_z85_key};
use crate::zmtp::handshake::Mechanism;

/// ZMTP CURVE authentication and encryption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Curve {
    /// Accept the clients whose public key is listed, under its name.
    Server {
        /// Our long-term keypair; shown as its public key.
        #[serde(rename = "public_key", serialize_with = "public_of")]
        keys: Arc<CurveKeypair>,
        /// Client name to its public key, from `clients_file`.
        #[serde(serialize_with = "key_map")]
        clients: BTreeMap<String, CurvePublicKey>,
    },
    /// Connect to the CURVE server whose public key is `server_key`.
    Client {
        /// Our long-term keypair; shown as its public key.
        #[serde(rename = "public_key", serialize_with = "public_of")]
        keys: Arc<CurveKeypair>,
        /// The server's long-term public key.
        #[serde(serialize_with = "key_text")]
        server_key: CurvePublicKey,
    },
}

fn public_of<Ser: Serializer>(keys: &Arc<CurveKeypair>, s: Ser) -> Result<Ser::Ok, Ser::Error> {
    s.serialize_str(&keys.public().to_z85())
}

fn key_text<Ser: Serializer>(key: &CurvePublicKey, s: Ser) -> Result<Ser::Ok, Ser::Error> {
    s.serialize_str(&key.to_z85())
}

fn key_map<Ser: Serializer>(
    clients: &BTreeMap<String, CurvePublicKey>,
    s: Ser,
) -> Result<Ser::Ok, Ser::Error> {
    s.collect_map(clients.iter().map(|(n, k)| (n, k.to_z85())))
}

impl Curve {
    /// The ZMTP handshake's mechanism for these settings.
    pub fn mechanism(&self) -> Mechanism {
        match self {
            Curve::Server { keys, clients } => Mechanism::CurveServer {
                keys: Arc::clone(keys),
                clients: Arc::new(
                    clients
                        .iter()
                        .map(|(name, key)| (*key, name.clone()))
                        .collect::<HashMap<_, _>>(),
                ),
            },
            Curve::Client { keys, server_key } => Mechanism::CurveClient {
                keys: Arc::clone(keys),
                server_key: *server_key,
            },
        }
    }
}

const SHAPE: &str = "write `{ secret_key_file = \"...\", clients_file = \"...\" }` to check peers (server), or `{ server_key = \"...\", secret_key_file = \"...\" }` to connect to a CURVE server (client)";

/// Reads `curve = { ... }`: a server's keys and clients, or a client's keys
/// and its server's key.
pub(crate) fn build(
    raw: &RawCurve,
    span: Range<usize>,
    subject: &Subject,
    c: &mut Checker<'_>,
) -> Option<Curve> {
    let server = match (&raw.clients_file, &raw.server_key) {
        (Some(_), None) => true,
        (None, Some(_)) => false,
        _ => {
            c.invalid(subject, "curve", span, SHAPE);
            return None;
        }
    };
    let key_span = raw
        .secret_key_file
        .as_ref()
        .or(raw.secret_key.as_ref())
        .map_or(span.clone(), |s| s.span());
    let keys = match secret::read(
        "curve.secret_key",
        raw.secret_key.as_ref(),
        raw.secret_key_file.as_ref(),
        subject,
        c,
    ) {
        Some(text) => match secret_from_text(text.expose()) {
            Ok(keys) => Some(Arc::new(keys)),
            Err(reason) => {
                c.invalid(subject, secret_field(raw), key_span.clone(), reason);
                None
            }
        },
        None if raw.secret_key.is_none() && raw.secret_key_file.is_none() => {
            c.invalid(
                subject,
                "curve",
                span,
                "needs `secret_key_file = \"...\"` (or `secret_key = \"${ENV_VAR}\"`): our own long-term secret key",
            );
            None
        }
        // Unreadable or empty: reported by `secret::read`.
        None => None,
    };

    if server {
        let clients = raw
            .clients_file
            .as_ref()
            .and_then(|file| read_clients(file, subject, c))?;
        let keys = keys?;
        // A secret key that is one of the listed public keys was almost
        // certainly pasted from the wrong file.
        if let Some((name, _)) = clients
            .iter()
            .find(|(_, k)| k.as_bytes() == keys.secret_bytes())
        {
            c.invalid(
                subject,
                secret_field(raw),
                key_span,
                format!("is client {name:?}'s public key, not a secret key"),
            );
            return None;
        }
        Some(Curve::Server { keys, clients })
    } else {
        let written = raw.server_key.as_ref()?;
        let server_key = match CurvePublicKey::from_z85(written.get_ref()) {
            Ok(k) => k,
            Err(e) => {
                c.invalid(
                    subject,
                    "curve.server_key",
                    written.span(),
                    format!("not a Z85 public key: {e}"),
                );
                return None;
            }
        };
        let keys = keys?;
        if server_key.as_bytes() == keys.secret_bytes() {
            c.invalid(
                subject,
                secret_field(raw),
                key_span,
                "is the server's public key (server_key), not our secret key",
            );
            return None;
        }
        if server_key == keys.public() {
            c.invalid(
                subject,
                "curve.server_key",
                written.span(),
                "is our own public key; write the server's",
            );
            return None;
        }
        Some(Curve::Client { keys, server_key })
    }
}

fn secret_field(raw: &RawCurve) -> &'static str {
    if raw.secret_key_file.is_some() {
        "curve.secret_key_file"
    } else {
        "curve.secret_key"
    }
}

/// A secret key from its text: the Z85 key alone, or `secret = "..."`
/// (`secret-key = "..."`) among `public = "..."` lines.
pub(crate) fn secret_from_text(text: &str) -> Result<CurveKeypair, String> {
    let text = text.trim();
    // Z85 has `=` in its alphabet: a bare key is one line without quotes.
    if !text.contains(['\n', '"']) {
        return CurveKeypair::from_z85_secret(text)
            .map_err(|e| format!("not a Z85 secret key: {e}"));
    }
    let (mut secret, mut public) = (None, None);
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        match name.trim() {
            "secret" | "secret-key" => secret = Some(value),
            "public" | "public-key" => public = Some(value),
            _ => {}
        }
    }
    match (secret, public) {
        (Some(s), public) => {
            let keys = CurveKeypair::from_z85_secret(s)
                .map_err(|e| format!("the secret key is not Z85: {e}"))?;
            if let Some(p) = public {
                let written = parse_z85_key(p)
                    .map_err(|e| format!("the public key beside the secret is not Z85: {e}"))?;
                if *written != *keys.public().as_bytes() {
                    return Err(
                        "the public key written beside the secret is not this secret key's".into(),
                    );
                }
            }
            Ok(keys)
        }
        (None, Some(_)) => Err(
            "holds a public key and no secret key: point it at the file with `secret = \"...\"`"
                .into(),
        ),
        (None, None) => {
            Err("holds no Z85 secret key (40 characters, or a `secret = \"...\"` line)".into())
        }
    }
}

/// Reads `clients_file`: names to Z85 public keys. Problems are reported at
/// `clients_file`, naming the line of the clients file.
fn read_clients(
    file: &super::raw::S<String>,
    subject: &Subject,
    c: &mut Checker<'_>,
) -> Option<BTreeMap<String, CurvePublicKey>> {
    let path = secret::path(file, c);
    let field = "curve.clients_file";
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            c.invalid(
                subject,
                field,
                file.span(),
                format!("cannot read {}: {e}", path.display()),
            );
            return None;
        }
    };
    let shown = path.display();
    let table: BTreeMap<String, toml::Spanned<String>> = match toml::from_str(&text) {
        Ok(t) => t,
        Err(e) => {
            let line = e
                .span()
                .map_or(String::new(), |s| format!(":{}", line_of(&text, s.start)));
            c.invalid(
                subject,
                field,
                file.span(),
                format!(
                    "{shown}{line}: {} (write one `name = \"Z85 public key\"` per line)",
                    e.message().trim()
                ),
            );
            return None;
        }
    };
    if table.is_empty() {
        c.invalid(
            subject,
            field,
            file.span(),
            format!("{shown} lists no client; a CURVE server with no clients admits nobody"),
        );
        return None;
    }
    let mut out = BTreeMap::new();
    let mut seen: HashMap<CurvePublicKey, &str> = HashMap::new();
    let mut ok = true;
    for (name, key) in &table {
        let line = line_of(&text, key.span().start);
        match CurvePublicKey::from_z85(key.get_ref()) {
            Ok(k) => {
                if let Some(first) = seen.insert(k, name) {
                    c.invalid(
                        subject,
                        field,
                        file.span(),
                        format!("{shown}:{line}: client {name:?} has the same key as {first:?}"),
                    );
                    ok = false;
                }
                out.insert(name.clone(), k);
            }
            Err(e) => {
                c.invalid(
                    subject,
                    field,
                    file.span(),
                    format!("{shown}:{line}: client {name:?}: not a Z85 public key: {e}"),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixture::base;
    use crate::config::{Config, ConfigErrors};

    /// Test keys made by libzmq; examples only.
    const SERVER_PUBLIC: &str = "D8Q]ikoHoSLP<cQWjHgfp{sAHNaC+pd7n0(4!YSy";
    const SERVER_SECRET: &str = "ppC-VbeFE:4Xe:T(083>{{[H]3pM<WGH1Ek@<IUi";
    const CLIENT_PUBLIC: &str = "x$dUn!/vJa4J@f1p3]Vz0rdJ@B@W5=3SUIn1&Uyr";
    const CLIENT_SECRET: &str = "S}z?9D5HM}xGQuZZI?0rNNLOvPv/b*3ulu^z71ff";

    /// A temp dir holding `files`, and the config path inside it.
    fn dir(files: &[(&str, &str)]) -> (tempdir::Dir, String) {
        let d = tempdir::Dir::new();
        for (name, text) in files {
            std::fs::write(d.path.join(name), text).expect("write");
        }
        let file = d.path.join("t.toml").display().to_string();
        (d, file)
    }

    mod tempdir {
        /// A directory removed on drop.
        pub(super) struct Dir {
            pub(super) path: std::path::PathBuf,
        }

        impl Dir {
            pub(super) fn new() -> Self {
                let n: u64 = fastrand::u64(..);
                let path = std::env::temp_dir().join(format!("switchyard-curve-{n:x}"));
                std::fs::create_dir_all(&path).expect("temp dir");
                Dir { path }
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }

    fn parse_at(file: &str, text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::parse_with_env(text, file, &|k| env.get(k).cloned())
    }

    fn problems_at(file: &str, text: &str) -> Vec<String> {
        match parse_at(file, text, &[]) {
            Ok(_) => panic!("expected problems in:\n{text}"),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    const SERVER: &str =
        "curve = { secret_key_file = \"server.key\", clients_file = \"clients.toml\" }";

    #[test]
    fn a_server_and_a_client_parse_and_become_mechanisms() {
        let (_d, file) = dir(&[
            ("server.key", &format!("{SERVER_SECRET}\n")),
            (
                "clients.toml",
                &format!("# who may connect\nedge-7 = \"{CLIENT_PUBLIC}\"\n"),
            ),
        ]);
        let client = format!(
            "curve = {{ server_key = \"{SERVER_PUBLIC}\", secret_key = \"${{EDGE_KEY}}\" }}"
        );
        let text = base(SERVER, &client, "");
        let config = parse_at(&file, &text, &[("EDGE_KEY", CLIENT_SECRET)])
            .unwrap_or_else(|e| panic!("{e}"));
        let crate::config::InputKind::ZmqPull(pull) = &config.inputs[0].kind else {
            panic!("pull")
        };
        let Some(Curve::Server { keys, clients }) = &pull.options.curve else {
            panic!("server")
        };
        assert_eq!(keys.public().to_z85(), SERVER_PUBLIC);
        assert_eq!(clients["edge-7"].to_z85(), CLIENT_PUBLIC);
        match pull.options.socket_options().mechanism {
            Mechanism::CurveServer { clients, .. } => {
                assert_eq!(clients.values().collect::<Vec<_>>(), ["edge-7"]);
            }
            other => panic!("{other:?}"),
        }
        let crate::config::OutputKind::ZmqPush(push) = &config.outputs[0].kind else {
            panic!("push")
        };
        assert!(matches!(
            push.options.socket_options().mechanism,
            Mechanism::CurveClient { server_key, .. } if server_key.to_z85() == SERVER_PUBLIC
        ));
        // Shown: public keys; never the secrets.
        let shown = format!(
            "{} {:?}",
            serde_json::to_string(&pull.options.curve).expect("json"),
            push.options.curve
        );
        assert!(
            shown.contains(SERVER_PUBLIC) && shown.contains(CLIENT_PUBLIC),
            "{shown}"
        );
        assert!(
            !shown.contains(SERVER_SECRET) && !shown.contains(CLIENT_SECRET),
            "{shown}"
        );
    }

    #[test]
    fn a_reload_rereads_the_key_files_and_the_diff_names_curve() {
        let (d, file) = dir(&[
            ("server.key", SERVER_SECRET),
            ("clients.toml", &format!("edge-7 = \"{CLIENT_PUBLIC}\"\n")),
        ]);
        let text = base(SERVER, "", "");
        let old = parse_at(&file, &text, &[]).unwrap_or_else(|e| panic!("{e}"));
        let same = parse_at(&file, &text, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert!(old.diff(&same).inputs.changed.is_empty());
        // A client added to the file (the config text unchanged).
        std::fs::write(
            d.path.join("clients.toml"),
            format!("edge-7 = \"{CLIENT_PUBLIC}\"\nedge-8 = \"{SERVER_PUBLIC}\"\n"),
        )
        .expect("write");
        let added = parse_at(&file, &text, &[]).unwrap_or_else(|e| panic!("{e}"));
        let changes = old.diff(&added).inputs.changed;
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].fields, ["curve"]);
        // A rotated server key, too.
        let fresh = CurveKeypair::generate().expect("rng");
        std::fs::write(d.path.join("server.key"), fresh.secret_z85().as_str()).expect("write");
        let rotated = parse_at(&file, &text, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(added.diff(&rotated).inputs.changed[0].fields, ["curve"]);
        // A broken edit of the file is refused with its line.
        std::fs::write(d.path.join("clients.toml"), "edge-7 = \"x\"\n").expect("write");
        let got = problems_at(&file, &text);
        assert!(
            got[0].contains("clients.toml:1: client \"edge-7\""),
            "{got:#?}"
        );
    }

    #[test]
    fn key_files_may_hold_the_keypair_lines() {
        let pair = CurveKeypair::generate().expect("rng");
        let text = format!(
            "public = \"{}\"\nsecret = \"{}\"\n",
            pair.public().to_z85(),
            pair.secret_z85().as_str()
        );
        assert_eq!(secret_from_text(&text).expect("ours"), pair);
        let zcert = format!(
            "curve\n    public-key = \"{}\"\n    secret-key = \"{}\"\n",
            pair.public().to_z85(),
            pair.secret_z85().as_str()
        );
        assert_eq!(secret_from_text(&zcert).expect("czmq"), pair);
        let public_only = format!("public = \"{}\"\n", pair.public().to_z85());
        assert!(
            secret_from_text(&public_only)
                .unwrap_err()
                .contains("holds a public key")
        );
        let mismatched = format!("public = \"{CLIENT_PUBLIC}\"\nsecret = \"{SERVER_SECRET}\"\n");
        assert!(
            secret_from_text(&mismatched)
                .unwrap_err()
                .contains("is not this secret key's")
        );
    }

    #[test]
    fn curve_mistakes_are_located() {
        let (_d, file) = dir(&[
            ("server.key", SERVER_SECRET),
            ("short.key", "abc"),
            ("public.key", &format!("public = \"{SERVER_PUBLIC}\"\n")),
            ("clients.toml", &format!("edge-7 = \"{CLIENT_PUBLIC}\"\n")),
            (
                "bad-clients.toml",
                &format!("edge-7 = \"{CLIENT_PUBLIC}\"\nedge-8 = \"nope\"\n"),
            ),
            (
                "dup-clients.toml",
                &format!("a = \"{CLIENT_PUBLIC}\"\nb = \"{CLIENT_PUBLIC}\"\n"),
            ),
            ("empty.toml", "# nobody\n"),
            ("broken.toml", "edge-7 = \n"),
            ("me.toml", &format!("me = \"{SERVER_SECRET}\"\n")),
        ]);
        let cases: Vec<(String, &str)> = vec![
            (
                "curve = { secret_key_file = \"server.key\" }".into(),
                "curve: write `{ secret_key_file",
            ),
            (
                "curve = { secret_key_file = \"server.key\", clients_file = \"clients.toml\", server_key = \"x\" }".into(),
                "curve: write `{ secret_key_file",
            ),
            (
                "curve = { clients_file = \"clients.toml\" }".into(),
                "curve: needs `secret_key_file",
            ),
            (
                "curve = { secret_key_file = \"missing.key\", clients_file = \"clients.toml\" }".into(),
                "curve.secret_key_file: cannot read",
            ),
            (
                "curve = { secret_key_file = \"short.key\", clients_file = \"clients.toml\" }".into(),
                "curve.secret_key_file: not a Z85 secret key: a Z85 CURVE key is 40 characters, this one has 3",
            ),
            (
                "curve = { secret_key_file = \"public.key\", clients_file = \"clients.toml\" }".into(),
                "curve.secret_key_file: holds a public key and no secret key",
            ),
            (
                "curve = { secret_key_file = \"server.key\", clients_file = \"missing.toml\" }".into(),
                "curve.clients_file: cannot read",
            ),
            (
                "curve = { secret_key_file = \"server.key\", clients_file = \"bad-clients.toml\" }".into(),
                "bad-clients.toml:2: client \"edge-8\": not a Z85 public key: a Z85 CURVE key is 40 characters, this one has 4",
            ),
            (
                "curve = { secret_key_file = \"server.key\", clients_file = \"dup-clients.toml\" }".into(),
                "dup-clients.toml:2: client \"b\" has the same key as \"a\"",
            ),
            (
                "curve = { secret_key_file = \"server.key\", clients_file = \"empty.toml\" }".into(),
                "empty.toml lists no client",
            ),
            (
                "curve = { secret_key_file = \"server.key\", clients_file = \"broken.toml\" }".into(),
                "broken.toml:1:",
            ),
            (
                "curve = { secret_key_file = \"server.key\", clients_file = \"me.toml\" }".into(),
                "curve.secret_key_file: is client \"me\"'s public key, not a secret key",
            ),
            (
                "curve = { server_key = \"short\", secret_key_file = \"server.key\" }".into(),
                "curve.server_key: not a Z85 public key",
            ),
            (
                format!("curve = {{ server_key = \"{SERVER_SECRET}\", secret_key_file = \"server.key\" }}"),
                "curve.secret_key_file: is the server's public key (server_key), not our secret key",
            ),
            (
                format!("curve = {{ server_key = \"{SERVER_PUBLIC}\", secret_key_file = \"server.key\" }}"),
                "curve.server_key: is our own public key",
            ),
            (
                format!("curve = {{ server_key = \"{SERVER_PUBLIC}\", secret_key = \"\" }}"),
                "curve.secret_key: is empty",
            ),
            (
                format!("plain = {{ username = \"u\", password = \"p\" }}\ncurve = {{ server_key = \"{SERVER_PUBLIC}\", secret_key_file = \"server.key\" }}"),
                "curve: set either `plain` or `curve`, not both",
            ),
            (
                "curve = { secret_key_file = \"server.key\", client_file = \"clients.toml\" }".into(),
                "unknown field `curve.client_file` (did you mean \"clients_file\"?)",
            ),
        ];
        for (extra, needle) in cases {
            let got = problems_at(&file, &base(&extra, "", ""));
            assert!(
                got.iter().any(|g| g.contains(needle))
                    && got.iter().all(|g| g.contains("input \"in\"")),
                "{extra}: expected a problem containing {needle:?}, got {got:#?}"
            );
            assert!(
                got.iter()
                    .all(|g| g.contains("t.toml:5:") || g.contains("t.toml:6:")),
                "{extra}: located in the entry: {got:#?}"
            );
        }
    }
}
