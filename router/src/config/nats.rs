//! The NATS uplink settings: `kind = "nats"` (core NATS) and `kind =
//! "nats-jetstream"` outputs, which share how they connect
//! ([`NatsConnection`]) and the subject they publish to.

use std::time::Duration;

use serde::Serialize;

use super::checker::Checker;
use super::error::Subject;
use super::raw::{RawNats, RawNatsAuth, RawNatsConnection, RawNatsInput, RawNatsTls, RawStream, S};

mod consumer;

use super::secret::{self, Secret};
use super::units::serialize_duration;
use crate::message::{Pattern, Topic};
pub(crate) use consumer::build_jetstream_input;
pub use consumer::{DeliverPolicy, JetStreamInput};

/// How a NATS output connects: servers, login, timeouts. Every field
/// reloads live (the output is rebuilt and reconnects).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NatsConnection {
    /// The servers to connect to, as written (`nats://host:port`,
    /// `tls://host:port` or `host:port`); one is picked at random, the
    /// others are where it reconnects. Required, at least one.
    pub servers: Vec<String>,
    /// How the client logs in. Default none.
    pub auth: NatsAuth,
    /// TLS, required when written (also when a server is `tls://`).
    /// Default: as the server offers.
    pub tls: Option<NatsTls>,
    /// How long one connection attempt may take. Default 2s; 100ms to 1m.
    #[serde(serialize_with = "serialize_duration")]
    pub connect_timeout: Duration,
    /// The cap of the pause between reconnect attempts (which starts at
    /// 10ms and doubles). Default 250ms; 10ms to 1m.
    #[serde(serialize_with = "serialize_duration")]
    pub reconnect_max: Duration,
    /// Whether `/ready` waits until this output has connected once.
    /// Default true.
    pub required: bool,
}

/// A `nats` output: a core NATS client publishing each message to a
/// subject. Core NATS is at most once: a message counts as sent once the
/// client wrote it to the server's socket with no reconnect in between.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NatsOutput {
    /// How it connects.
    #[serde(flatten)]
    pub connection: NatsConnection,
    /// The subject each message is published to. Default `{topic}`.
    pub subject: SubjectTemplate,
}

/// A `nats` input: a core NATS client subscribed to subjects, each message
/// it receives offered to the routes with its subject as topic and its
/// headers as attributes. Core NATS is at most once: what the server sent
/// while the router was away is not sent again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NatsInput {
    /// How it connects.
    #[serde(flatten)]
    pub connection: NatsConnection,
    /// The subjects it subscribes to (`*` and `>` wildcards). Required, at
    /// least one.
    pub subjects: Vec<String>,
    /// With a queue group, the server gives each message to one member of
    /// the group (routers sharing the load). Default none: every message.
    pub queue_group: Option<String>,
    /// The largest message taken (payload and headers); larger ones are
    /// refused, counted (`too_large`). Default 1MiB; 1 byte to 64MiB.
    pub max_message_size: usize,
    /// Messages received and held while the routes cannot take them (a
    /// full `block` route); past it, a message received is refused,
    /// counted (`backpressure`), since core NATS cannot hold the server
    /// back. Default 10000; 1 to 1000000.
    pub max_pending: usize,
}

/// A `nats-jetstream` output: publishes each message to a subject a
/// JetStream stream captures, and counts it sent only on its PubAck.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JetStreamOutput {
    /// How it connects.
    #[serde(flatten)]
    pub connection: NatsConnection,
    /// The subject each message is published to. Default `{topic}`.
    pub subject: SubjectTemplate,
    /// Most PubAcks outstanding at once. Default 256; 1 to 65536.
    pub max_ack_pending: usize,
    /// How long a PubAck may take before the message counts as failed
    /// (and is sent again, with the same `Nats-Msg-Id`). Default 5s; 10ms
    /// to 5m.
    #[serde(serialize_with = "serialize_duration")]
    pub ack_timeout: Duration,
    /// The stream the subject goes to.
    pub stream: StreamSpec,
    /// The JetStream API prefix: `$JS.API` unless `domain` (as
    /// `$JS.<domain>.API`, for a leaf node's domain) or `api_prefix` says
    /// otherwise.
    pub api_prefix: String,
}

/// `stream = { name = "...", ... }`: the stream a JetStream output
/// publishes into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamSpec {
    /// The stream's name.
    pub name: String,
    /// With `subjects`, the router creates the stream, or updates it to
    /// this, when it connects; without, the stream must exist (until it
    /// does, every batch fails and is retried).
    #[serde(flatten)]
    pub managed: Option<ManagedStream>,
}

/// The settings of a stream the router creates or updates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManagedStream {
    /// The subjects it captures (`*` and `>` wildcards).
    pub subjects: Vec<String>,
    /// `file` (the default) or `memory`.
    pub storage: StreamStorage,
    /// Messages older than this are removed. Default none.
    #[serde(serialize_with = "super::units::serialize_opt_duration")]
    pub max_age: Option<Duration>,
    /// The most bytes it keeps (the oldest go). Default none.
    pub max_bytes: Option<u64>,
    /// The most messages it keeps (the oldest go). Default none.
    pub max_msgs: Option<u64>,
    /// Copies in a cluster. Default 1; 1 to 5.
    pub replicas: usize,
    /// How long the stream remembers a `Nats-Msg-Id` to drop a message sent
    /// twice. Default 2m; 1s to 1d, at most `max_age`.
    #[serde(serialize_with = "serialize_duration")]
    pub duplicate_window: Duration,
}

/// Where a managed stream keeps its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamStorage {
    /// On disk, in the server's store.
    File,
    /// In the server's memory: lost when it stops.
    Memory,
}

/// `tls = { ca_file, cert_file, key_file }`: the connection must be TLS;
/// the server's certificate is checked against `ca_file` (default: the
/// system's roots), and `cert_file` with `key_file` is the client's
/// certificate for a server that asks for one (mutual TLS). Paths are
/// relative to the config file; the files are read at each connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NatsTls {
    /// PEM CA certificates the server's certificate must chain to.
    pub ca_file: Option<std::path::PathBuf>,
    /// The client's PEM certificate (chain).
    pub cert_file: Option<std::path::PathBuf>,
    /// The client certificate's PEM private key.
    pub key_file: Option<std::path::PathBuf>,
}

/// How a NATS client logs in. Secrets come from `${ENV}` or a file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NatsAuth {
    /// No credentials.
    #[default]
    None,
    /// `auth = { token = "${NATS_TOKEN}" }` or `token_file`.
    Token(Secret),
    /// `auth = { user = "edge", password = "${NATS_PASSWORD}" }` or
    /// `password_file`.
    UserPassword {
        /// The user name.
        user: String,
        /// Its password.
        password: Secret,
    },
    /// `auth = { nkey_file = "edge.nk" }`: a file holding an nkey seed
    /// (`SU...`).
    Nkey(Secret),
    /// `auth = { creds_file = "edge.creds" }`: a `.creds` file (a user JWT
    /// and its nkey seed), as `nsc` writes them.
    Creds(Secret),
}

/// A subject written with `{topic}` in it, e.g. `site42.{topic}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTemplate {
    written: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Topic,
}

impl SubjectTemplate {
    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.written
    }

    /// Whether the subject is the message's topic itself.
    pub fn is_topic(&self) -> bool {
        self.parts == [Part::Topic]
    }

    /// The subject of a message on `topic`. Always a valid NATS subject:
    /// the template was checked with a topic in every `{topic}`, and a
    /// topic has no empty token, space or wildcard.
    pub fn render(&self, topic: &Topic) -> String {
        let mut out = String::with_capacity(self.written.len() + topic.len());
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Topic => out.push_str(topic.as_str()),
            }
        }
        out
    }

    /// Parses `written`.
    fn parse(written: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = written;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                Some(0) if rest.starts_with("{topic}") => {
                    parts.push(Part::Topic);
                    rest = &rest["{topic}".len()..];
                }
                Some(0) if rest.starts_with('}') => {
                    return Err("has a `}` with no `{` before it".into());
                }
                Some(0) => {
                    let Some((field, _)) = rest.split_once('}') else {
                        return Err("has a `{` with no `}` after it".into());
                    };
                    return Err(format!(
                        "names {field}}}, which is not a field: a subject may hold `{{topic}}` (the message's topic)"
                    ));
                }
                Some(i) => {
                    parts.push(Part::Text(rest[..i].to_owned()));
                    rest = &rest[i..];
                }
                None => {
                    parts.push(Part::Text(rest.to_owned()));
                    rest = "";
                }
            }
        }
        let template = Self {
            written: written.to_owned(),
            parts,
        };
        let sample = Topic::try_from("t").expect("a valid topic");
        Topic::try_from(template.render(&sample).as_str())
            .map_err(|e| format!("is not a valid subject: {e}"))?;
        Ok(template)
    }
}

impl Serialize for SubjectTemplate {
    fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        s.serialize_str(&self.written)
    }
}

/// Reads a `nats` output's own settings.
pub(crate) fn build_core(raw: &RawNats, subject: &Subject, c: &mut Checker<'_>) -> NatsOutput {
    for (field, span) in raw.jetstream_fields() {
        if let Some(span) = span {
            c.invalid(
                subject,
                field,
                span,
                "has no effect on a nats output (core NATS); it is for kind = \"nats-jetstream\"",
            );
        }
    }
    NatsOutput {
        connection: connection(&raw.connection(), subject, c),
        subject: template(raw, subject, c),
    }
}

/// Reads a `nats` input's own settings.
pub(crate) fn build_input(raw: &RawNatsInput, subject: &Subject, c: &mut Checker<'_>) -> NatsInput {
    if raw.subjects.get_ref().is_empty() {
        c.invalid(
            subject,
            "subjects",
            raw.subjects.span(),
            "lists no subject; write at least one, e.g. `subjects = [\"commands.>\"]`",
        );
    }
    for s in raw.subjects.get_ref() {
        if let Err(e) = Pattern::parse(s.get_ref()) {
            c.invalid(
                subject,
                "subjects",
                s.span(),
                format!("{:?} is not a subject pattern: {e}", s.get_ref()),
            );
        }
    }
    if let Some(group) = &raw.queue_group {
        let g = group.get_ref();
        if g.is_empty() || g.contains(|ch: char| ch.is_whitespace() || ch.is_control()) {
            c.invalid(
                subject,
                "queue_group",
                group.span(),
                format!("{g:?} is not a queue group name: no spaces, not empty"),
            );
        }
    }
    NatsInput {
        connection: connection(&raw.connection(), subject, c),
        subjects: raw
            .subjects
            .get_ref()
            .iter()
            .map(|s| s.get_ref().clone())
            .collect(),
        queue_group: raw.queue_group.as_ref().map(|g| g.get_ref().clone()),
        max_message_size: c.size(
            subject,
            "max_message_size",
            raw.max_message_size.as_ref(),
            1 << 20,
            1..=64 << 20,
        ),
        max_pending: c.count(
            subject,
            "max_pending",
            raw.max_pending.as_ref(),
            10_000,
            1..=1_000_000,
        ),
    }
}

/// Reads a `nats-jetstream` output's own settings.
pub(crate) fn build_jetstream(
    raw: &RawNats,
    subject: &Subject,
    c: &mut Checker<'_>,
) -> JetStreamOutput {
    let api_prefix = api_prefix(raw.domain.as_ref(), raw.api_prefix.as_ref(), subject, c);
    let stream = match &raw.stream {
        Some(s) => stream(s, subject, c),
        None => {
            c.invalid(
                subject,
                "stream",
                raw.name.span(),
                "a nats-jetstream output needs `stream = { name = \"...\" }` (add `subjects = [...]` to have the router create it)",
            );
            StreamSpec {
                name: String::new(),
                managed: None,
            }
        }
    };
    let minute = Duration::from_secs(60);
    JetStreamOutput {
        connection: connection(&raw.connection(), subject, c),
        subject: template(raw, subject, c),
        max_ack_pending: c.count(
            subject,
            "max_ack_pending",
            raw.max_ack_pending.as_ref(),
            256,
            1..=65_536,
        ),
        ack_timeout: c.duration(
            subject,
            "ack_timeout",
            raw.ack_timeout.as_ref(),
            Duration::from_secs(5),
            Duration::from_millis(10)..=5 * minute,
        ),
        stream,
        api_prefix,
    }
}

/// The JetStream API prefix `domain` or `api_prefix` (at most one)
/// give; `$JS.API` without either.
fn api_prefix(
    domain: Option<&S<String>>,
    prefix: Option<&S<String>>,
    subject: &Subject,
    c: &mut Checker<'_>,
) -> String {
    match (domain, prefix) {
        (Some(_), Some(prefix)) => {
            c.invalid(
                subject,
                "api_prefix",
                prefix.span(),
                "write `domain` or `api_prefix`, not both",
            );
            "$JS.API".to_owned()
        }
        (Some(domain), None) => {
            let d = domain.get_ref();
            if d.is_empty()
                || d.contains(|ch: char| ch == '.' || ch == '*' || ch == '>' || ch.is_whitespace())
            {
                c.invalid(
                    subject,
                    "domain",
                    domain.span(),
                    format!(
                        "{d:?} is not a JetStream domain: one token, no `.`, wildcard or space"
                    ),
                );
            }
            format!("$JS.{d}.API")
        }
        (None, Some(prefix)) => {
            if Topic::try_from(prefix.get_ref().as_str()).is_err() {
                c.invalid(
                    subject,
                    "api_prefix",
                    prefix.span(),
                    format!("{:?} is not a subject prefix", prefix.get_ref()),
                );
            }
            prefix.get_ref().clone()
        }
        (None, None) => "$JS.API".to_owned(),
    }
}

/// Checks `name` is a JetStream stream or consumer name (`what`): 1 to
/// 255 characters, none of `.`, `*`, `>`, `/`, `\\`, spaces or controls.
fn check_name(name: &S<String>, field: &str, what: &str, subject: &Subject, c: &mut Checker<'_>) {
    let n = name.get_ref();
    if n.is_empty()
        || n.len() > 255
        || n.contains(|ch: char| {
            matches!(ch, '.' | '*' | '>' | '/' | '\\') || ch.is_whitespace() || ch.is_control()
        })
    {
        c.invalid(
            subject,
            field,
            name.span(),
            format!("{n:?} is not {what} name: 1 to 255 characters, no `.`, `*`, `>`, `/`, `\\` or space"),
        );
    }
}

/// Reads `stream = { ... }`.
fn stream(raw: &S<RawStream>, subject: &Subject, c: &mut Checker<'_>) -> StreamSpec {
    let r = raw.get_ref();
    let name = r.name.get_ref();
    check_name(&r.name, "stream.name", "a stream", subject, c);
    let managed_fields = [
        r.storage.as_ref().map(S::span),
        r.max_age.as_ref().map(S::span),
        r.max_bytes.as_ref().map(S::span),
        r.max_msgs.as_ref().map(S::span),
        r.replicas.as_ref().map(S::span),
        r.duplicate_window.as_ref().map(S::span),
    ];
    let Some(subjects) = &r.subjects else {
        if let Some(span) = managed_fields.into_iter().flatten().next() {
            c.invalid(
                subject,
                "stream",
                span,
                "stream settings need `subjects = [...]`: with them the router creates or updates the stream; without, it uses the stream as it is",
            );
        }
        return StreamSpec {
            name: name.clone(),
            managed: None,
        };
    };
    if subjects.get_ref().is_empty() {
        c.invalid(
            subject,
            "stream.subjects",
            subjects.span(),
            "lists no subject; the stream would capture nothing",
        );
    }
    for s in subjects.get_ref() {
        if let Err(e) = Pattern::parse(s.get_ref()) {
            c.invalid(
                subject,
                "stream.subjects",
                s.span(),
                format!("{:?} is not a subject pattern: {e}", s.get_ref()),
            );
        }
    }
    let storage = c.choice(
        subject,
        "stream.storage",
        r.storage.as_ref(),
        StreamStorage::File,
        &[
            ("file", StreamStorage::File),
            ("memory", StreamStorage::Memory),
        ],
    );
    let day = Duration::from_secs(86_400);
    let max_age = r.max_age.as_ref().map(|v| {
        c.duration(
            subject,
            "stream.max_age",
            Some(v),
            day,
            Duration::from_secs(1)..=3650 * day,
        )
    });
    let max_bytes = r
        .max_bytes
        .as_ref()
        .map(|v| c.size(subject, "stream.max_bytes", Some(v), 0, 1..=usize::MAX) as u64);
    let max_msgs = r.max_msgs.as_ref().map(|v| {
        c.count(
            subject,
            "stream.max_msgs",
            Some(v),
            1,
            1..=i64::MAX as usize,
        ) as u64
    });
    let replicas = c.count(subject, "stream.replicas", r.replicas.as_ref(), 1, 1..=5);
    let duplicate_window = c.duration(
        subject,
        "stream.duplicate_window",
        r.duplicate_window.as_ref(),
        Duration::from_secs(120),
        Duration::from_secs(1)..=day,
    );
    let duplicate_window = match max_age {
        Some(age) if duplicate_window > age => {
            if let Some(w) = &r.duplicate_window {
                c.invalid(
                    subject,
                    "stream.duplicate_window",
                    w.span(),
                    "must be at most stream.max_age",
                );
            }
            age
        }
        _ => duplicate_window,
    };
    StreamSpec {
        name: name.clone(),
        managed: Some(ManagedStream {
            subjects: subjects
                .get_ref()
                .iter()
                .map(|s| s.get_ref().clone())
                .collect(),
            storage,
            max_age,
            max_bytes,
            max_msgs,
            replicas,
            duplicate_window,
        }),
    }
}

/// Reads the subject template.
fn template(raw: &RawNats, subject: &Subject, c: &mut Checker<'_>) -> SubjectTemplate {
    match &raw.subject {
        Some(written) => SubjectTemplate::parse(written.get_ref()).unwrap_or_else(|why| {
            c.invalid(
                subject,
                "subject",
                written.span(),
                format!("{:?} {why}", written.get_ref()),
            );
            SubjectTemplate::parse("{topic}").expect("the default template")
        }),
        None => SubjectTemplate::parse("{topic}").expect("the default template"),
    }
}

/// Reads how the output connects.
fn connection(
    raw: &RawNatsConnection<'_>,
    subject: &Subject,
    c: &mut Checker<'_>,
) -> NatsConnection {
    let mut servers = Vec::new();
    if raw.servers.get_ref().is_empty() {
        c.invalid(
            subject,
            "servers",
            raw.servers.span(),
            "lists no server; write at least one, e.g. `servers = [\"nats://127.0.0.1:4222\"]`",
        );
    }
    for server in raw.servers.get_ref() {
        match server.get_ref().parse::<async_nats::ServerAddr>() {
            Ok(_) => servers.push(server.get_ref().clone()),
            Err(e) => c.invalid(
                subject,
                "servers",
                server.span(),
                format!("{:?} is not a NATS server address: {e}", server.get_ref()),
            ),
        }
    }
    let auth = raw.auth.map(|a| auth(a, subject, c)).unwrap_or_default();
    let tls = raw.tls.map(|t| tls(t, subject, c));
    let minute = Duration::from_secs(60);
    NatsConnection {
        servers,
        auth,
        tls,
        connect_timeout: c.duration(
            subject,
            "connect_timeout",
            raw.connect_timeout,
            Duration::from_secs(2),
            Duration::from_millis(100)..=minute,
        ),
        reconnect_max: c.duration(
            subject,
            "reconnect_max",
            raw.reconnect_max,
            Duration::from_millis(250),
            Duration::from_millis(10)..=minute,
        ),
        required: raw.required.is_none_or(|r| *r.get_ref()),
    }
}

/// Reads `tls = { ... }`, checking each file holds PEM.
fn tls(raw: &S<RawNatsTls>, subject: &Subject, c: &mut Checker<'_>) -> NatsTls {
    let t = raw.get_ref();
    let pem = |field: &str, written: &Option<S<String>>, c: &mut Checker<'_>| {
        let written = written.as_ref()?;
        let path = secret::path(written, c);
        match std::fs::read_to_string(&path) {
            Ok(text) if text.contains("-----BEGIN ") => Some(path),
            Ok(_) => {
                c.invalid(
                    subject,
                    field,
                    written.span(),
                    format!("{} holds no PEM block", path.display()),
                );
                None
            }
            Err(e) => {
                c.invalid(
                    subject,
                    field,
                    written.span(),
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        }
    };
    let tls = NatsTls {
        ca_file: pem("tls.ca_file", &t.ca_file, c),
        cert_file: pem("tls.cert_file", &t.cert_file, c),
        key_file: pem("tls.key_file", &t.key_file, c),
    };
    if t.cert_file.is_some() != t.key_file.is_some() {
        c.invalid(
            subject,
            "tls",
            raw.span(),
            "a client certificate needs both `cert_file` and `key_file`",
        );
    }
    tls
}

/// Reads `auth = { ... }`: one way to log in.
fn auth(raw: &S<RawNatsAuth>, subject: &Subject, c: &mut Checker<'_>) -> NatsAuth {
    let a = raw.get_ref();
    let token = a.token.is_some() || a.token_file.is_some();
    let password = a.user.is_some() || a.password.is_some() || a.password_file.is_some();
    let nkey = a.nkey_file.is_some();
    let creds = a.creds_file.is_some();
    if [token, password, nkey, creds]
        .iter()
        .filter(|&&w| w)
        .count()
        != 1
    {
        c.invalid(
            subject,
            "auth",
            raw.span(),
            "write one way to log in: `{ token = \"${ENV}\" }` (or `token_file`), `{ user = \"...\", password = \"${ENV}\" }` (or `password_file`), `{ nkey_file = \"...\" }` or `{ creds_file = \"...\" }`",
        );
        return NatsAuth::None;
    }
    let read =
        |field, inline, file, c: &mut Checker<'_>| secret::read(field, inline, file, subject, c);
    if token {
        return read("auth.token", a.token.as_ref(), a.token_file.as_ref(), c)
            .map_or(NatsAuth::None, NatsAuth::Token);
    }
    if password {
        let Some(user) = &a.user else {
            c.invalid(subject, "auth", raw.span(), "a password needs its `user`");
            return NatsAuth::None;
        };
        let Some(password) = read(
            "auth.password",
            a.password.as_ref(),
            a.password_file.as_ref(),
            c,
        ) else {
            if a.password.is_none() && a.password_file.is_none() {
                c.invalid(
                    subject,
                    "auth",
                    raw.span(),
                    "a `user` needs `password = \"${ENV}\"` or `password_file`",
                );
            }
            return NatsAuth::None;
        };
        return NatsAuth::UserPassword {
            user: user.get_ref().clone(),
            password,
        };
    }
    if let Some(file) = &a.nkey_file {
        let Some(seed) = read("auth.nkey", None, Some(file), c) else {
            return NatsAuth::None;
        };
        if let Err(e) = nkeys::KeyPair::from_seed(seed.expose()) {
            c.invalid(
                subject,
                "auth.nkey_file",
                file.span(),
                format!("does not hold an nkey seed: {e}"),
            );
            return NatsAuth::None;
        }
        return NatsAuth::Nkey(seed);
    }
    let file = a.creds_file.as_ref().expect("one way was written");
    let Some(creds) = read("auth.creds", None, Some(file), c) else {
        return NatsAuth::None;
    };
    if let Err(e) = async_nats::ConnectOptions::new().credentials(creds.expose()) {
        c.invalid(
            subject,
            "auth.creds_file",
            file.span(),
            format!("is not a NATS credentials file: {e}"),
        );
        return NatsAuth::None;
    }
    NatsAuth::Creds(creds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OutputKind;
    use crate::config::fixture::{assert_one, base, problems, valid};

    /// The base file with its output turned into a `nats` one with `lines`.
    fn nats(lines: &str) -> String {
        base("", "", "").replace(
            "kind = \"zmq-push\"\nbind = \"tcp://127.0.0.1:6556\"",
            &format!("kind = \"nats\"\n{lines}"),
        )
    }

    fn settings(lines: &str) -> NatsOutput {
        match valid(&nats(lines)).outputs.remove(0).kind {
            OutputKind::Nats(n) => n,
            other => panic!("not nats: {other:?}"),
        }
    }

    #[test]
    fn nats_outputs_read_their_settings() {
        let n = settings("servers = [\"nats://127.0.0.1:4222\", \"localhost:4223\"]");
        assert!(n.subject.is_topic());
        let n = n.connection;
        assert_eq!(n.servers.len(), 2);
        assert_eq!(n.auth, NatsAuth::None);
        assert_eq!(n.connect_timeout, Duration::from_secs(2));
        assert_eq!(n.reconnect_max, Duration::from_millis(250));
        assert!(n.required);
        let n = settings(
            "servers = [\"nats://h:1\"]\nsubject = \"site42.{topic}\"\nauth = { user = \"edge\", password = \"pw\" }\nreconnect_max = \"1s\"\nrequired = false",
        );
        assert_eq!(n.subject.as_str(), "site42.{topic}");
        let shown = serde_json::to_string(&n).expect("serializes");
        assert!(!shown.contains("\"pw\""), "{shown}");
        let n = n.connection;
        assert_eq!(
            n.auth,
            NatsAuth::UserPassword {
                user: "edge".into(),
                password: Secret::new("pw".into())
            }
        );
        assert!(!n.required);
    }

    fn jetstream(lines: &str) -> String {
        nats(lines).replace("kind = \"nats\"", "kind = \"nats-jetstream\"")
    }

    #[test]
    fn jetstream_outputs_read_their_stream() {
        let config = valid(&jetstream(
            "servers = [\"nats://h:1\"]\nsubject = \"up.{topic}\"\nmax_ack_pending = 64\ndomain = \"hub\"\nstream = { name = \"UP\", subjects = [\"up.>\"], storage = \"memory\", max_age = \"7d\", max_bytes = \"1GiB\", duplicate_window = \"5m\" }",
        ));
        let OutputKind::NatsJetstream(j) = &config.outputs[0].kind else {
            panic!("nats-jetstream")
        };
        assert_eq!(j.max_ack_pending, 64);
        assert_eq!(j.ack_timeout, Duration::from_secs(5));
        assert_eq!(j.api_prefix, "$JS.hub.API");
        assert_eq!(j.stream.name, "UP");
        let m = j.stream.managed.as_ref().expect("managed");
        assert_eq!(m.subjects, ["up.>"]);
        assert_eq!(m.storage, StreamStorage::Memory);
        assert_eq!(m.max_age, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(m.max_bytes, Some(1 << 30));
        assert_eq!(m.duplicate_window, Duration::from_secs(300));
        assert_eq!(m.replicas, 1);
        let config = valid(&jetstream(
            "servers = [\"nats://h:1\"]\nstream = { name = \"UP\" }\napi_prefix = \"$JS.leaf.API\"",
        ));
        let OutputKind::NatsJetstream(j) = &config.outputs[0].kind else {
            panic!("nats-jetstream")
        };
        assert_eq!(j.stream.managed, None);
        assert_eq!(j.api_prefix, "$JS.leaf.API");
    }

    #[test]
    fn jetstream_mistakes_are_reported_where_written() {
        let s = "servers = [\"nats://h:1\"]\n";
        assert_one(
            &problems(&jetstream(s)),
            "needs `stream = { name = \"...\" }`",
        );
        assert_one(
            &problems(&jetstream(&format!("{s}stream = {{ name = \"a.b\" }}"))),
            "stream.name: \"a.b\" is not a stream name",
        );
        assert_one(
            &problems(&jetstream(&format!(
                "{s}stream = {{ name = \"UP\", storage = \"file\" }}"
            ))),
            "stream settings need `subjects",
        );
        assert_one(
            &problems(&jetstream(&format!(
                "{s}stream = {{ name = \"UP\", subjects = [\"a.>.b\"] }}"
            ))),
            "stream.subjects: \"a.>.b\" is not a subject pattern",
        );
        assert_one(
            &problems(&jetstream(&format!(
                "{s}stream = {{ name = \"UP\", subjects = [\"a\"], max_age = \"1m\", duplicate_window = \"2m\" }}"
            ))),
            "stream.duplicate_window: must be at most stream.max_age",
        );
        assert_one(
            &problems(&jetstream(&format!(
                "{s}stream = {{ name = \"UP\" }}\ndomain = \"a\"\napi_prefix = \"b\""
            ))),
            "write `domain` or `api_prefix`, not both",
        );
        assert_one(
            &problems(&jetstream(&format!(
                "{s}stream = {{ name = \"UP\" }}\nmax_ack_pending = 0"
            ))),
            "max_ack_pending",
        );
        assert_one(
            &problems(&nats(&format!("{s}stream = {{ name = \"UP\" }}"))),
            "stream: has no effect on a nats output (core NATS)",
        );
    }

    /// The base file with its input turned into a `nats` one with `lines`.
    fn nats_input(lines: &str) -> String {
        base("", "", "").replace(
            "kind = \"zmq-pull\"\nbind = \"tcp://127.0.0.1:5556\"",
            &format!("kind = \"nats\"\nservers = [\"nats://h:1\"]\n{lines}"),
        )
    }

    #[test]
    fn nats_inputs_read_their_subjects() {
        let config = valid(&nats_input(
            "subjects = [\"cmd.>\", \"jobs.*.new\"]\nqueue_group = \"routers\"\nmax_pending = 50",
        ));
        let crate::config::InputKind::Nats(n) = &config.inputs[0].kind else {
            panic!("nats input")
        };
        assert_eq!(n.subjects, ["cmd.>", "jobs.*.new"]);
        assert_eq!(n.queue_group.as_deref(), Some("routers"));
        assert_eq!(n.max_message_size, 1 << 20);
        assert_eq!(n.max_pending, 50);
        assert_eq!(config.inputs[0].max_message_size(), 1 << 20);
        assert_one(
            &problems(&nats_input("subjects = []")),
            "subjects: lists no subject",
        );
        assert_one(
            &problems(&nats_input("subjects = [\"a..b\"]")),
            "subjects: \"a..b\" is not a subject pattern",
        );
        assert_one(
            &problems(&nats_input("subjects = [\"a\"]\nqueue_group = \"a b\"")),
            "queue_group: \"a b\" is not a queue group name",
        );
        assert_one(
            &problems(&nats_input("subjects = [\"a\"]\nsubject = \"x\"")),
            "subject",
        );
    }

    #[test]
    fn secrets_come_from_files_next_to_the_config() {
        let dir = std::env::temp_dir().join(format!("switchyard-nats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("token"), "s3cret\n").expect("write");
        let file = dir.join("r.toml");
        let text = nats("servers = [\"nats://h:1\"]\nauth = { token_file = \"token\" }");
        let config =
            crate::config::Config::parse_with_env(&text, &file.display().to_string(), &|_| None)
                .expect("valid");
        let OutputKind::Nats(n) = &config.outputs[0].kind else {
            panic!("nats")
        };
        assert_eq!(
            n.connection.auth,
            NatsAuth::Token(Secret::new("s3cret".into()))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn nats_mistakes_are_reported_where_written() {
        assert_one(&problems(&nats("servers = []")), "servers: lists no server");
        assert_one(
            &problems(&nats("servers = [\"http://h:1\"]")),
            "is not a NATS server address",
        );
        assert_one(
            &problems(&nats("servers = [\"nats://h:1\"]\nsubject = \"x.{id}\"")),
            "subject: \"x.{id}\" names {id}",
        );
        assert_one(
            &problems(&nats(
                "servers = [\"nats://h:1\"]\nauth = { token = \"a\", user = \"u\" }",
            )),
            "auth: write one way to log in",
        );
        assert_one(
            &problems(&nats("servers = [\"nats://h:1\"]\nauth = { user = \"u\" }")),
            "a `user` needs `password",
        );
        assert_one(
            &problems(&nats(
                "servers = [\"nats://h:1\"]\nauth = { token_file = \"/nonexistent/t\" }",
            )),
            "auth.token_file: cannot read /nonexistent/t",
        );
        assert_one(
            &problems(&nats(
                "servers = [\"nats://h:1\"]\ntls = { ca_file = \"/nonexistent/ca.pem\" }",
            )),
            "tls.ca_file: cannot read /nonexistent/ca.pem",
        );
        let got = problems(&nats(
            "servers = [\"nats://h:1\"]\ntls = { cert_file = \"/nonexistent/c.pem\" }",
        ));
        assert!(
            got.iter()
                .any(|p| p.contains("needs both `cert_file` and `key_file`")),
            "{got:#?}"
        );
        let got = problems(&nats("servers = [\"nats://h:1\"]\nauth = { tokn = \"x\" }"));
        assert!(
            got.iter()
                .any(|p| p.contains("unknown field `auth.tokn` (did you mean \"token\"?)")),
            "{got:#?}"
        );
        assert_one(
            &problems(&nats(
                "bind = \"tcp://127.0.0.1:1\"\nservers = [\"nats://h:1\"]",
            )),
            "bind",
        );
    }

    #[test]
    fn subjects_hold_the_topic_where_written() {
        let topic = Topic::try_from("sensors.t1").expect("topic");
        let t = SubjectTemplate::parse("{topic}").expect("default");
        assert!(t.is_topic());
        assert_eq!(t.render(&topic), "sensors.t1");
        let t = SubjectTemplate::parse("site42.{topic}").expect("prefix");
        assert_eq!(t.render(&topic), "site42.sensors.t1");
        let t = SubjectTemplate::parse("a.{topic}.b").expect("both sides");
        assert_eq!(t.render(&topic), "a.sensors.t1.b");
        assert_eq!(
            SubjectTemplate::parse("fixed.subject")
                .expect("no field")
                .render(&topic),
            "fixed.subject"
        );
    }

    #[test]
    fn templates_that_cannot_make_a_subject_are_refused() {
        for (bad, why) in [
            ("site.{sub}", "names {sub}"),
            ("{topic", "no `}`"),
            ("a}", "no `{`"),
            ("site42..{topic}", "empty token"),
            ("{topic}.", "empty token"),
            ("a b.{topic}", "' '"),
            ("a.*.{topic}", "'*'"),
            ("", "empty"),
        ] {
            let got = SubjectTemplate::parse(bad).expect_err(bad);
            assert!(got.contains(why), "{bad}: {got}");
        }
    }
}
