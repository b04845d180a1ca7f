//! The NATS uplink settings: `kind = "nats"` outputs (core NATS).

use std::time::Duration;

use serde::Serialize;

use super::checker::Checker;
use super::error::Subject;
use super::raw::{RawNats, RawNatsAuth, S};
use super::secret::{self, Secret};
use super::units::serialize_duration;
use crate::message::Topic;

/// A `nats` output: a core NATS client publishing each message to a
/// subject. Core NATS is at most once: a message counts as sent once the
/// client wrote it to the server's socket with no reconnect in between.
/// Every field reloads live (the output is rebuilt and reconnects).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NatsOutput {
    /// The servers to connect to, as written (`nats://host:port`,
    /// `tls://host:port` or `host:port`); one is picked at random, the
    /// others are where it reconnects. Required, at least one.
    pub servers: Vec<String>,
    /// The subject each message is published to. Default `{topic}`.
    pub subject: SubjectTemplate,
    /// How the client logs in. Default none.
    pub auth: NatsAuth,
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
pub(crate) fn build(raw: &RawNats, subject: &Subject, c: &mut Checker<'_>) -> NatsOutput {
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
    let template = match &raw.subject {
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
    };
    let auth = raw
        .auth
        .as_ref()
        .map(|a| auth(a, subject, c))
        .unwrap_or_default();
    let minute = Duration::from_secs(60);
    NatsOutput {
        servers,
        subject: template,
        auth,
        connect_timeout: c.duration(
            subject,
            "connect_timeout",
            raw.connect_timeout.as_ref(),
            Duration::from_secs(2),
            Duration::from_millis(100)..=minute,
        ),
        reconnect_max: c.duration(
            subject,
            "reconnect_max",
            raw.reconnect_max.as_ref(),
            Duration::from_millis(250),
            Duration::from_millis(10)..=minute,
        ),
        required: raw.required.as_ref().is_none_or(|r| *r.get_ref()),
    }
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
        assert_eq!(n.servers.len(), 2);
        assert!(n.subject.is_topic());
        assert_eq!(n.auth, NatsAuth::None);
        assert_eq!(n.connect_timeout, Duration::from_secs(2));
        assert_eq!(n.reconnect_max, Duration::from_millis(250));
        assert!(n.required);
        let n = settings(
            "servers = [\"nats://h:1\"]\nsubject = \"site42.{topic}\"\nauth = { user = \"edge\", password = \"pw\" }\nreconnect_max = \"1s\"\nrequired = false",
        );
        assert_eq!(n.subject.as_str(), "site42.{topic}");
        assert_eq!(
            n.auth,
            NatsAuth::UserPassword {
                user: "edge".into(),
                password: Secret::new("pw".into())
            }
        );
        assert!(!n.required);
        let shown = serde_json::to_string(&n).expect("serializes");
        assert!(!shown.contains("\"pw\""), "{shown}");
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
        assert_eq!(n.auth, NatsAuth::Token(Secret::new("s3cret".into())));
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
