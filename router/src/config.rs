//! The router's TOML config: read into a raw serde model, then one validate
//! step builds the typed [`Config`], resolving every name and reporting
//! *every* problem with file, line, column and reason:
//!
//! ```text
//! config/switchyard.toml:14:9: route "telemetry": output "dashbord" is not defined (did you mean "dashboard"?)
//! ```
//!
//! Reading a file, in order ([`Config::load`]):
//! 1. `${ENV}` substitution on the text: `${NAME}`, `${NAME:-default}`
//!    (used when NAME is unset or empty), `$${` for a literal `${`;
//!    comments are left alone; a value may not hold a line break, so line
//!    numbers are preserved. An unset NAME without a default is an error.
//! 2. TOML parsing; a syntax error is reported with its line.
//! 3. Each entry read on its own: every unknown key reported (with a "did
//!    you mean"), then serde reads the shape, then values are parsed
//!    (durations, sizes, addresses, topic patterns) and checked against
//!    each other and across entries (unique names, routes' outputs and
//!    plugins exist, no two listeners on one address, at least one input,
//!    output, route). Plugin files are not opened here: the router reports
//!    a module it cannot load at its entry's line ([`Plugin::problem`]).
//!
//! # The file
//!
//! ```toml
//! [router]                         # optional
//! name = "site-42"                 # default "switchyard"
//! admin = "127.0.0.1:9464"         # /metrics, /health, /v1/...
//! shutdown_grace = "5s"
//! log_level = "info"               # optional; --log-level / RUST_LOG win
//! plugin_cache = "cache/plugins"   # optional; compiled plugins kept on disk
//! data_dir = "var/switchyard"      # optional; durable queues, dead letters
//!
//! [[input]]
//! name = "sensors"
//! kind = "zmq-sub"                 # or "zmq-pull", "http"
//! bind = "tcp://0.0.0.0:5555"      # or connect = ["tcp://plc-1:5555", ...]
//! envelope = "topic-payload"       # or "topic-attrs-payload", "single-frame"
//! max_message_size = "1MiB"        # and the other ZmqOptions fields
//!
//! [[input]]
//! name = "api"
//! kind = "http"
//! listen = "127.0.0.1:8080"
//! max_body = "1MiB"
//!
//! [[output]]
//! name = "dashboard"
//! kind = "zmq-pub"                 # or "zmq-push"
//! bind = "tcp://0.0.0.0:6555"
//!
//! [[plugin]]
//! name = "drop-debug"
//! path = "plugins/attr_filter.wasm"  # relative to this file's directory
//! config = { key = "level", deny = ["debug"] }   # any table, given as JSON
//! memory = "64MiB"                 # instance memory cap
//! deadline = "100ms"               # per batch call
//! max_batch = 256                  # messages per call
//! on_failure = { mode = "closed", trip_after = 5, backoff = "1s", max_backoff = "60s" }
//!
//! [[route]]
//! name = "telemetry"
//! match = "sensors.>"              # NATS-style: `*` one token, `>` the rest
//! attributes = { site = "42" }     # optional equality conditions
//! filters = ["drop-debug"]         # optional plugins, run in order
//! router = "by-content"            # optional plugin picking outputs
//! on_error = "dead_letter"         # or "drop" (default): a failed batch
//! dead_letter = "errors"           # an output; required by "dead_letter"
//! to = ["dashboard"]
//! queue = { capacity = 10000, max_bytes = "64MiB", when_full = "drop_oldest" }
//!
//! [dead_letters]                   # optional; needs [router] data_dir
//! max_entries = 1_000_000          # then the oldest are dropped
//! max_bytes = "1GiB"               # of the store's files
//! max_age = "7d"
//! fsync = "batch"                  # "always", "batch" or "os"
//! fsync_interval = "10ms"
//!
//! [[route]]
//! name = "uplink"
//! match = "sensors.>"
//! to = ["dashboard"]
//! # On disk under [router] data_dir; fsync "always", "batch" or "os".
//! queue = { durable = true, max_age = "7d", fsync = "batch", fsync_interval = "10ms" }
//! ```
//!
//! Durations are strings with a unit (`"250ms"`, `"5s"`, `"1m"`, `"1h"`,
//! `"7d"`);
//! sizes are integers of bytes or strings with a unit (`"64KiB"`, `"1MiB"`,
//! `"1GB"`). Each typed field's doc gives its unit, default, range and
//! whether it reloads live (everything does but the `[router]` keys other
//! than `name`: a changed input or output is rebuilt, the rest keep their
//! sockets; a changed `data_dir` refuses the whole reload).
//!
//! Files: `error` (problems), `source` (substitution, positions),
//! `units`, `raw` (serde model), `validate` (the one step), `entry` and
//! `checker` (its helpers), `listeners` (address clashes), one file per
//! typed part: `router`, `input`, `output`, `zmq`, `endpoint`, `plain`, `curve`,
//! `plugin`, `route`, `dead_letters`; and `diff`, what a reload from one config to another
//! would change ([`Config::diff`]).

use std::io::Read;
use std::path::Path;

use serde::Serialize;

mod acl;
mod auth;
mod checker;
mod curve;
mod dead_letters;
mod diff;
mod endpoint;
mod entry;
mod error;
#[cfg(test)]
mod examples;
#[cfg(test)]
mod fixture;
mod input;
mod listeners;
mod names;
mod nats;
mod output;
mod plain;
mod plugin;
mod policy;
mod raw;
mod route;
mod router;
mod secret;
mod source;
mod tls;
mod units;
mod validate;
mod webhook;
mod zmq;

pub use acl::{AclRule, RuleToken, Scope, TopicRule};
pub use auth::{
    ANONYMOUS, AuthKind, Authenticator, CertName, JwksKey, JwtAuth, JwtKeys, TokenAuth, jwks_keys,
    pem_key,
};
pub use curve::Curve;
pub use dead_letters::DeadLetters;
pub use diff::{Changed, Changes, Diff, Renamed};
pub use endpoint::{Attach, Endpoint};
pub use error::{ConfigErrors, Error, Location, Problem, Subject, Suggestion};
pub use input::{HttpInput, Input, InputKind, RouterInput};
pub use listeners::{Resource, overlaps};
pub use nats::{
    DeliverPolicy, JetStreamInput, JetStreamOutput, ManagedStream, NatsAuth, NatsConnection,
    NatsInput, NatsOutput, NatsTls, StreamSpec, StreamStorage, SubjectTemplate,
};
pub use output::{Balance, Blackhole, DealerOutput, Output, OutputKind, Retry};
pub use plain::Plain;
pub use plugin::{FailMode, OnFailure, Plugin};
pub use policy::{UnknownFsync, UnknownPolicy};
pub use route::{Durability, Fsync, OnError, QueueConfig, Route, WhenFull};
pub use router::Router;
pub use secret::Secret;
pub use tls::ListenerTls;
pub use webhook::{WebhookEncoding, WebhookOutput};
pub use zmq::{Envelope, OnForbidden, ZmqOptions, ZmqSocket};

/// A config file refuses to be read past this size: a config is a few
/// kilobytes, and a path pointed at a device must not exhaust memory.
const MAX_FILE_SIZE: u64 = 16 << 20;

/// A validated router config: every name resolved, every value parsed and
/// in range. Built only by [`Config::load`], [`Config::parse`] and
/// [`Config::parse_with_env`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// `[router]`: process-wide settings (defaults when the section is
    /// absent).
    pub router: Router,
    /// `[[input]]`s, in file order. At least one.
    pub inputs: Vec<Input>,
    /// `[[output]]`s, in file order. At least one.
    pub outputs: Vec<Output>,
    /// `[[plugin]]`s, in file order. Default none.
    pub plugins: Vec<Plugin>,
    /// `[[route]]`s, in file order. At least one; every `to` and
    /// `dead_letter` names an output in [`Config::outputs`], every `filters`
    /// entry and `router` a plugin in [`Config::plugins`].
    pub routes: Vec<Route>,
    /// `[dead_letters]`: the dead-letter store's retention and sync
    /// (defaults when the table is absent). The store exists when
    /// [`Router::data_dir`] is set.
    pub dead_letters: DeadLetters,
    /// `[[auth]]`s, in file order: the authenticators listeners name.
    /// Default none. Reload live.
    pub auth: Vec<Authenticator>,
    /// `[[acl]]` rules, in file order. Default none. Reload live.
    pub acl: Vec<AclRule>,
}

impl Config {
    /// Whether authentication and permissions are in force: once the file
    /// has any `[[auth]]` or `[[acl]]`, what no rule allows is denied.
    pub fn secured(&self) -> bool {
        !self.auth.is_empty() || !self.acl.is_empty()
    }

    /// What is valid but lets strangers in: a listener on an address other
    /// hosts can reach (not loopback) that accepts anonymous publishes or
    /// admin calls. `switchyard validate` prints these; `run` and every
    /// reload log them.
    pub fn security_warnings(&self) -> Vec<String> {
        let anonymous = |list: Option<&Vec<String>>| {
            !self.secured() || list.is_none_or(|l| l.iter().any(|n| n == ANONYMOUS))
        };
        let mut out = Vec::new();
        for input in &self.inputs {
            if let InputKind::Http(h) = &input.kind
                && !h.listen.ip().is_loopback()
                && anonymous(h.auth.as_ref())
            {
                out.push(format!(
                    "input {:?} listens on {}, reachable from other hosts, and accepts anonymous publishes; name its authenticators in `auth = [...]` (see \"Securing a site\" in the README)",
                    input.name, h.listen
                ));
            }
        }
        if !self.router.admin.ip().is_loopback() && anonymous(self.router.admin_auth.as_ref()) {
            out.push(format!(
                "the admin listener is on {}, reachable from other hosts, and accepts anonymous calls (reload, dead letters); bind it to 127.0.0.1 or set [router] admin_auth",
                self.router.admin
            ));
        }
        out
    }

    /// The key, token and certificate files the `[[auth]]` entries and
    /// the TLS listeners read, which the router watches to reload when one
    /// changes.
    pub fn auth_files(&self) -> Vec<std::path::PathBuf> {
        let mut files: Vec<std::path::PathBuf> =
            self.auth.iter().flat_map(Authenticator::files).collect();
        for input in &self.inputs {
            if let InputKind::Http(h) = &input.kind {
                files.extend(h.tls.iter().flat_map(ListenerTls::files));
            }
        }
        files.extend(self.router.admin_tls.iter().flat_map(ListenerTls::files));
        for output in &self.outputs {
            if let OutputKind::Webhook(w) = &output.kind {
                files.extend(w.ca_file.clone());
                if let Some((cert, key)) = &w.client_cert {
                    files.extend([cert.clone(), key.clone()]);
                }
            }
        }
        files.sort();
        files.dedup();
        files
    }
}

impl Config {
    /// Reads and validates the file at `path`, substituting `${ENV}` from
    /// the process environment. Problems name the file as `path` is
    /// written.
    ///
    /// # Errors
    /// Every problem found: an unreadable file, a TOML syntax error, or
    /// each invalid value and unresolved name.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigErrors> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let unreadable = |reason: String| {
            ConfigErrors::from_problems(vec![Problem {
                file: file.clone(),
                location: None,
                error: Error::Read { reason },
            }])
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE_SIZE + 1).read_to_end(&mut bytes))
            .map_err(|e| unreadable(e.to_string()))?;
        if bytes.len() as u64 > MAX_FILE_SIZE {
            return Err(unreadable(format!(
                "larger than {} MiB; is this a config file?",
                MAX_FILE_SIZE >> 20
            )));
        }
        let text =
            String::from_utf8(bytes).map_err(|e| unreadable(format!("not UTF-8 text: {e}")))?;
        Self::parse(&text, &file)
    }

    /// Validates `text`, substituting `${ENV}` from the process
    /// environment; `file` is only used in messages.
    ///
    /// # Errors
    /// Every problem found, as for [`Config::load`].
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        Self::parse_with_env(text, file, &|name| std::env::var(name).ok())
    }

    /// Validates `text`, looking `${ENV}` variables up with `env` (tests,
    /// and callers that substitute from somewhere other than the process
    /// environment); `file` is only used in messages.
    ///
    /// # Errors
    /// Every problem found, as for [`Config::load`]. When a substitution
    /// fails, only substitution problems are reported: the text that
    /// would be parsed is not the operator's.
    pub fn parse_with_env(
        text: &str,
        file: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let (source, substitution_problems) = source::Source::substitute(text, env);
        if !substitution_problems.is_empty() {
            let problems = substitution_problems
                .into_iter()
                .map(|(span, error)| Problem {
                    file: file.to_owned(),
                    location: Some(source.original_location(span.start)),
                    error,
                })
                .collect();
            return Err(ConfigErrors::from_problems(problems));
        }
        let mut checker = checker::Checker::new(&source, file);
        let config = validate::validate(&source.text, &mut checker);
        match config {
            Some(config) => Ok(config),
            None => Err(ConfigErrors::from_problems(checker.into_problems())),
        }
    }

    /// The input called `name`.
    pub fn input(&self, name: &str) -> Option<&Input> {
        self.inputs.iter().find(|i| i.name == name)
    }

    /// The output called `name`.
    pub fn output(&self, name: &str) -> Option<&Output> {
        self.outputs.iter().find(|o| o.name == name)
    }

    /// The plugin called `name`.
    pub fn plugin(&self, name: &str) -> Option<&Plugin> {
        self.plugins.iter().find(|p| p.name == name)
    }

    /// The route called `name`.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse_with_env(text, "test.toml", &no_env)
    }

    fn problems(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(_) => panic!("expected problems in:\n{text}"),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    /// The 1-based line holding `needle` (the first one).
    fn line_of(text: &str, needle: &str) -> usize {
        text.lines()
            .position(|l| l.contains(needle))
            .expect("needle in text")
            + 1
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    const MINIMAL: &str = r#"
[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"

[[output]]
name = "out"
kind = "zmq-pub"
bind = "tcp://127.0.0.1:0"

[[route]]
name = "all"
match = ">"
to = ["out"]
"#;

    #[test]
    fn five_mistakes_are_all_reported_with_their_lines() {
        let text = r#"[router]
name = "site-1"

[[input]]
name = "sensors"
kind = "zmq-sub"
bind = "tcp://127.0.0.1:5555"
hearbeat_interval = "10s"
handshake_timeout = "5 secs"

[[output]]
name = "dashboard"
kind = "zmq-pub"
bind = "tcp://127.0.0.1:5555"

[[route]]
name = "telemetry"
match = "sensors.>.temp"
to = ["dashbord"]
"#;
        let got = problems(text);
        let want = [
            format!(
                "test.toml:{}:1: input \"sensors\": unknown field `hearbeat_interval` (did you mean \"heartbeat_interval\"?)",
                line_of(text, "hearbeat_interval")
            ),
            format!(
                "test.toml:{}:21: input \"sensors\": handshake_timeout: unknown unit \"secs\" in \"5 secs\"; write a number and a unit: \"250ms\", \"5s\", \"1m\", \"1h\"",
                line_of(text, "5 secs")
            ),
            format!(
                "test.toml:{}:8: output \"dashboard\": bind: 127.0.0.1:5555 is already bound by input \"sensors\" (line 7)",
                line_of(text, "name = \"dashboard\"") + 2
            ),
            format!(
                "test.toml:{}:9: route \"telemetry\": match: pattern \"sensors.>.temp\": `>` may only be the last token, found at position 2",
                line_of(text, "sensors.>.temp")
            ),
            format!(
                "test.toml:{}:7: route \"telemetry\": output \"dashbord\" is not defined (did you mean \"dashboard\"?)",
                line_of(text, "dashbord")
            ),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn display_is_one_problem_per_line() {
        let text = "[[input]]\nname = \"a\"\nkind = \"nope\"\n\n[[output]]\nname = \"b\"\nkind = \"zmq-sub\"\n";
        let err = parse(text).unwrap_err();
        let shown = err.to_string();
        assert_eq!(shown.lines().count(), err.len(), "{shown}");
        assert!(
            shown.contains("test.toml:3:8: input \"a\": kind: \"nope\" is not one of"),
            "{shown}"
        );
        assert!(
            shown.contains("test.toml:7:8: output \"b\": kind: \"zmq-sub\" is an input kind"),
            "{shown}"
        );
        assert!(
            shown.contains("test.toml: no [[route]] is defined"),
            "{shown}"
        );
    }

    #[test]
    fn syntax_error_has_its_line() {
        let text = "[router]\nname = \"x\"\n\n[[input]]\nname = \"a\nkind = \"http\"\n";
        let got = problems(text);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("test.toml:5:"), "{got:?}");
        assert!(got[0].contains("TOML syntax error"), "{got:?}");
    }

    #[test]
    fn env_substitution_fills_values_and_keeps_lines() {
        let text = r#"[router]
name = "site-${SITE_ID}"
admin = "127.0.0.1:${ADMIN_PORT:-9464}"

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:${HTTP_PORT}"
max_batch = ${MAX_BATCH:-250}

[[output]]
name = "out"
kind = "zmq-pub"
bind = "tcp://127.0.0.1:6555"

[[route]]
name = "site"
match = "sensors.>"
attributes = { site = "${SITE_ID}" }
to = ["out"]
"#;
        let env = |name: &str| match name {
            "SITE_ID" => Some("42".to_owned()),
            "HTTP_PORT" => Some("18080".to_owned()),
            _ => None,
        };
        let config = Config::parse_with_env(text, "site.toml", &env).expect("valid");
        assert_eq!(config.router.name, "site-42");
        assert_eq!(config.router.admin, addr("127.0.0.1:9464"));
        let InputKind::Http(http) = &config.inputs[0].kind else {
            panic!("http input")
        };
        assert_eq!(http.listen, addr("127.0.0.1:18080"));
        assert_eq!(http.max_batch, 250);
        assert_eq!(
            config.routes[0].attributes.get("site").map(String::as_str),
            Some("42")
        );

        // Unset without a default: an error at the variable's line, and a
        // later problem still located on its own line.
        let env = |name: &str| (name == "SITE_ID").then(|| "a-much-longer-site-id".to_owned());
        let err = Config::parse_with_env(text, "site.toml", &env).unwrap_err();
        let got: Vec<String> = err.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "site.toml:8:21: environment variable `HTTP_PORT` is not set (set it, or write `${HTTP_PORT:-default}`)"
            ]
        );

        // Positions after a substitution map back to the file as written.
        let text = "[router]\nname = \"${SITE_ID}\" \nadmin = \"bad\"\n";
        let env = |_: &str| Some("x".repeat(40));
        let err = Config::parse_with_env(text, "t.toml", &env).unwrap_err();
        assert!(
            err.to_string().contains("t.toml:3:9: [router]: admin:"),
            "{err}"
        );
    }

    #[test]
    fn every_kind_parses_with_every_option() {
        let text = r#"
[router]
name = "edge-7"
admin = "[::1]:9464"
shutdown_grace = "1m30s"
log_level = "info,switchyard::zmtp=debug"

[[input]]
name = "sub-in"
kind = "zmq-sub"
connect = ["tcp://plc-1.local:5555", "tcp://10.0.0.7:5555"]
envelope = "topic-attrs-payload"
max_frame_size = "64KiB"
max_message_size = "256KiB"
max_frames = 3
handshake_timeout = "2s"
heartbeat_interval = "off"
recv_hwm = 500
reconnect_interval = "250ms"
reconnect_interval_max = "1m"
plain = { username = "edge", password = "s3cret" }
identity = "edge-7"

[[input]]
name = "pull-in"
kind = "zmq-pull"
bind = "tcp://*:5556"
envelope = "single-frame"
max_connections = 16
heartbeat_interval = "1s"
heartbeat_timeout = "3s"
plain = { users = { alice = "a", bob = "b" } }

[[input]]
name = "http-in"
kind = "http"
listen = "0.0.0.0:8080"
max_body = "2MB"
header_timeout = "5s"
body_timeout = "1m"
max_batch = 10

[[output]]
name = "pub-out"
kind = "zmq-pub"
bind = "tcp://127.0.0.1:6555"
send_hwm = 10
send_hwm_bytes = 65536
slow_subscriber_timeout = "30s"

[[output]]
name = "push-out"
kind = "zmq-push"
connect = "tcp://[::1]:7000"
send_timeout = "250ms"

[[route]]
name = "r1"
match = "sensors.*.temp"
attributes = { site = "42", line = "3" }
to = ["pub-out", "push-out"]
queue = { capacity = 5, max_bytes = "4MiB", when_full = "block", block_timeout = "0s" }

[[route]]
name = "r2"
match = "jobs.>"
to = ["push-out"]
queue = { when_full = "drop_newest" }
"#;
        let config = parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.router.name, "edge-7");
        assert_eq!(config.router.admin, addr("[::1]:9464"));
        assert_eq!(config.router.shutdown_grace, Duration::from_secs(90));
        assert_eq!(
            config.router.log_level.as_deref(),
            Some("info,switchyard::zmtp=debug")
        );

        let InputKind::ZmqSub(sub) = &config.inputs[0].kind else {
            panic!("zmq-sub")
        };
        let Attach::Connect(peers) = &sub.attach else {
            panic!("connect")
        };
        assert_eq!(
            peers.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["tcp://plc-1.local:5555", "tcp://10.0.0.7:5555"]
        );
        assert_eq!(sub.envelope, Envelope::TopicAttrsPayload);
        let o = &sub.options;
        assert_eq!(
            (o.max_frame_size, o.max_message_size, o.max_frames),
            (64 << 10, 256 << 10, 3)
        );
        assert_eq!(o.handshake_timeout, Duration::from_secs(2));
        assert_eq!(o.heartbeat_interval, None);
        assert_eq!(o.recv_hwm, 500);
        assert_eq!(o.reconnect_interval, Duration::from_millis(250));
        assert_eq!(o.reconnect_interval_max, Duration::from_secs(60));
        assert!(
            matches!(&o.plain, Some(Plain::Client { username, password }) if username == "edge" && password.expose() == "s3cret")
        );
        assert_eq!(o.identity.as_deref(), Some("edge-7"));

        let InputKind::ZmqPull(pull) = &config.inputs[1].kind else {
            panic!("zmq-pull")
        };
        assert_eq!(pull.attach, Attach::Bind(addr("0.0.0.0:5556")));
        assert_eq!(pull.envelope, Envelope::SingleFrame);
        assert_eq!(pull.options.max_connections, 16);
        assert_eq!(
            pull.options.heartbeat_interval,
            Some(Duration::from_secs(1))
        );
        let Some(Plain::Server { users }) = &pull.options.plain else {
            panic!("plain server")
        };
        assert_eq!(users.keys().collect::<Vec<_>>(), ["alice", "bob"]);

        let InputKind::Http(http) = &config.inputs[2].kind else {
            panic!("http")
        };
        assert_eq!(
            http,
            &HttpInput {
                listen: addr("0.0.0.0:8080"),
                max_body: 2_000_000,
                header_timeout: Duration::from_secs(5),
                body_timeout: Duration::from_secs(60),
                max_batch: 10,
                auth: None,
                tls: None,
            }
        );

        let OutputKind::ZmqPub(publ) = &config.outputs[0].kind else {
            panic!("zmq-pub")
        };
        assert_eq!(publ.options.send_hwm, 10);
        assert_eq!(publ.options.send_hwm_bytes, 65536);
        assert_eq!(
            publ.options.slow_subscriber_timeout,
            Some(Duration::from_secs(30))
        );
        let OutputKind::ZmqPush(push) = &config.outputs[1].kind else {
            panic!("zmq-push")
        };
        assert_eq!(
            push.attach,
            Attach::Connect(vec![Endpoint {
                host: "::1".into(),
                port: 7000
            }])
        );
        assert_eq!(push.options.send_timeout, Duration::from_millis(250));

        let r1 = config.route("r1").expect("r1");
        assert_eq!(r1.pattern.as_str(), "sensors.*.temp");
        assert_eq!(
            r1.attributes,
            BTreeMap::from([
                ("line".to_owned(), "3".to_owned()),
                ("site".to_owned(), "42".to_owned())
            ])
        );
        assert_eq!(r1.to, ["pub-out", "push-out"]);
        assert_eq!(
            r1.queue,
            QueueConfig {
                capacity: 5,
                max_bytes: 4 << 20,
                when_full: WhenFull::Block,
                block_timeout: Duration::ZERO,
                durable: None,
            }
        );
        let r2 = config.route("r2").expect("r2");
        assert_eq!(
            r2.queue,
            QueueConfig {
                when_full: WhenFull::DropNewest,
                ..QueueConfig::default()
            }
        );
    }

    #[test]
    fn omitted_fields_take_the_documented_defaults() {
        let config = parse(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.router,
            Router {
                name: "switchyard".into(),
                admin: addr("127.0.0.1:9464"),
                shutdown_grace: Duration::from_secs(5),
                log_level: None,
                plugin_cache: None,
                data_dir: None,
                admin_auth: None,
                metrics_open: false,
                admin_tls: None,
            }
        );
        let OutputKind::ZmqPub(publ) = &config.outputs[0].kind else {
            panic!("zmq-pub")
        };
        assert_eq!(publ.envelope, Envelope::TopicPayload);
        let o = &publ.options;
        assert_eq!(o, &ZmqOptions::default());
        assert_eq!(
            (o.max_frame_size, o.max_message_size, o.max_frames),
            (1 << 20, 1 << 20, 64)
        );
        assert_eq!(o.handshake_timeout, Duration::from_secs(5));
        assert_eq!(o.heartbeat_interval, Some(Duration::from_secs(10)));
        assert_eq!(o.heartbeat_timeout, Duration::from_secs(30));
        assert_eq!(o.max_connections, 1024);
        assert_eq!((o.send_hwm, o.send_hwm_bytes), (1000, 8 << 20));
        let InputKind::Http(http) = &config.inputs[0].kind else {
            panic!("http")
        };
        assert_eq!(http.max_body, 1 << 20);
        assert_eq!(
            config.routes[0].queue,
            QueueConfig {
                capacity: 10_000,
                max_bytes: 64 << 20,
                when_full: WhenFull::DropOldest,
                block_timeout: Duration::from_secs(1),
                durable: None,
            }
        );
    }

    #[test]
    fn serializes_for_display_without_secrets() {
        let text = MINIMAL.replace(
            "bind = \"tcp://127.0.0.1:0\"",
            "bind = \"tcp://127.0.0.1:0\"\nplain = { users = { u = \"hunter2\" } }",
        );
        let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        let json = serde_json::to_value(&config).expect("serializable");
        assert_eq!(json["inputs"][0]["kind"], "http");
        assert_eq!(json["inputs"][0]["header_timeout"], "10s");
        assert_eq!(json["outputs"][0]["kind"], "zmq-pub");
        assert_eq!(
            json["outputs"][0]["options"]["slow_subscriber_timeout"],
            "off"
        );
        assert_eq!(json["routes"][0]["match"], ">");
        assert_eq!(json["routes"][0]["queue"]["when_full"], "drop_oldest");
        let shown = json.to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn load_reports_unreadable_files() {
        let err = Config::load("no/such/dir/switchyard.toml").unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(matches!(err.problems()[0].error, Error::Read { .. }));
        assert!(
            err.to_string()
                .starts_with("no/such/dir/switchyard.toml: cannot read"),
            "{err}"
        );
    }

    proptest::proptest! {
        /// Hostile or mangled text never panics: it is either a config or
        /// a list of located problems.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
            if let Err(e) = parse(&text) {
                proptest::prop_assert!(!e.is_empty());
            }
        }

        /// Deleting any one line of a valid file never panics, and every
        /// problem it causes is located within the file or has no place.
        #[test]
        fn dropping_a_line_never_panics(line in 0usize..40) {
            let text: String = MINIMAL_WITH_OPTIONS
                .lines()
                .enumerate()
                .filter(|(n, _)| *n != line)
                .map(|(_, l)| format!("{l}\n"))
                .collect();
            if let Err(e) = parse(&text) {
                let lines = text.lines().count().max(1);
                for p in e.iter() {
                    proptest::prop_assert!(p.location.is_none_or(|l| l.line <= lines + 1), "{p}");
                }
            }
        }
    }

    const MINIMAL_WITH_OPTIONS: &str = r#"[router]
name = "r"
[[input]]
name = "in"
kind = "zmq-sub"
bind = "tcp://127.0.0.1:0"
envelope = "topic-attrs-payload"
max_frames = 3
heartbeat_interval = "1s"
heartbeat_timeout = "3s"
plain = { users = { a = "b" } }
[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"
max_body = "64KiB"
[[output]]
name = "out"
kind = "zmq-push"
connect = ["tcp://h:1"]
reconnect_interval = "1s"
send_timeout = "1s"
[[route]]
name = "r1"
match = "a.*.>"
attributes = { k = "v" }
to = ["out"]
queue = { capacity = 1, max_bytes = "1MiB", when_full = "block", block_timeout = "1s" }
"#;
}
