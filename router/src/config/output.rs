//! Outputs: where routed messages leave the router. One `[[output]]` per
//! listener or set of connections; `kind` picks the protocol.

use std::time::Duration;

use serde::Serialize;

use super::checker::Checker;
use super::endpoint::Attach;
use super::error::Subject;
use super::nats::{self, JetStreamOutput, NatsOutput};
use super::raw::{
    RawBlackhole, RawNats, RawRetry, RawWebhook, RawZmqDealer, RawZmqPub, RawZmqPush, S,
};
use super::units::serialize_duration;
use super::webhook::{self, WebhookOutput};
use super::zmq::{self, ZmqRole, ZmqSocket};

/// One `[[output]]`. Reloads live: a changed output is rebuilt (closed,
/// then built from its new entry); the others keep their listeners and
/// peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// Unique among inputs, outputs, plugins and routes; what routes name
    /// in `to` and `dead_letter`, and a metric label
    /// (`switchyard_output_messages_total{output}`).
    pub name: String,
    /// The protocol and its settings.
    #[serde(flatten)]
    pub kind: OutputKind,
    /// How a send this output failed is tried again. Default none: one
    /// attempt (a durable route: [`Retry::DURABLE_DEFAULT`]; a webhook:
    /// [`Retry::WEBHOOK_DEFAULT`]). Reloads live (the output is rebuilt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

impl Output {
    /// How a route retries this output: its `retry` table; without one, a
    /// webhook on a memory route (`durable` false) gets
    /// [`Retry::WEBHOOK_DEFAULT`], and `None` leaves it to the route (one
    /// attempt in memory, [`Retry::DURABLE_DEFAULT`] on disk).
    pub fn retry_on(&self, durable: bool) -> Option<Retry> {
        match (&self.retry, &self.kind) {
            (Some(r), _) => Some(*r),
            (None, OutputKind::Webhook(_)) if !durable => Some(Retry::WEBHOOK_DEFAULT),
            (None, _) => None,
        }
    }
}

/// An output's `retry = { initial, max, max_attempts, max_elapsed }`: a
/// message the output failed to take (an error, no peer to take it, a
/// peer's error reply) is sent to it again after a pause drawn at random up
/// to `min(max, initial * 2^(attempt - 1))` (exponential backoff, full
/// jitter), and at least as long as the peer asked for (a webhook's
/// `Retry-After`, itself capped by `max`). A message it refuses for good
/// (too large, unencodable, refused) is not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Retry {
    /// The first pause's cap. Default 100ms; 1ms to 1h.
    #[serde(serialize_with = "serialize_duration")]
    pub initial: Duration,
    /// The cap of the doubling. Default 30s; at least `initial`, at most
    /// 1h.
    #[serde(serialize_with = "serialize_duration")]
    pub max: Duration,
    /// Attempts in all, the first send included, before the message goes
    /// to the dead-letter store (or, without one, is dropped, counted).
    /// Default none: retried until it is taken (the route's queue holds it
    /// and backs up meanwhile); 1 to 1000000.
    pub max_attempts: Option<u32>,
    /// How long after the first failed send no new attempt starts: the
    /// last pause is cut short to end at this mark, and what that attempt
    /// still fails goes to the dead-letter store (reason
    /// `retries_exhausted`) like attempts run out. Default none (no time
    /// limit); 1ms to 7 days.
    #[serde(
        serialize_with = "super::units::serialize_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_elapsed: Option<Duration>,
}

impl Retry {
    /// The default first pause.
    pub const DEFAULT_INITIAL: Duration = Duration::from_millis(100);
    /// The default cap.
    pub const DEFAULT_MAX: Duration = Duration::from_secs(30);
    /// How a durable route retries a target output that has no `retry`:
    /// with the default pauses, until the output takes the message.
    pub const DURABLE_DEFAULT: Self = Self {
        initial: Self::DEFAULT_INITIAL,
        max: Self::DEFAULT_MAX,
        max_attempts: None,
        max_elapsed: None,
    };
    /// How a `webhook` output without a `retry` table is retried on a
    /// memory route: the default pauses, for at most 5 minutes after the
    /// first failure, then into the dead-letter store. Webhook senders are
    /// expected to retry; a receiver briefly down or answering 503 must
    /// not lose messages on a memory route. A durable route retries it as
    /// any output, until taken ([`Retry::DURABLE_DEFAULT`]): its disk holds
    /// the backlog (store-and-forward).
    pub const WEBHOOK_DEFAULT: Self = Self {
        initial: Self::DEFAULT_INITIAL,
        max: Self::DEFAULT_MAX,
        max_attempts: None,
        max_elapsed: Some(Duration::from_secs(300)),
    };

    /// Whether a message sent `attempts` times may be sent again.
    pub fn allows(&self, attempts: u32) -> bool {
        self.max_attempts.is_none_or(|max| attempts < max)
    }
}

/// An output's protocol, written `kind = "zmq-pub"` and so on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum OutputKind {
    /// `zmq-pub`: the PUB side facing SUB subscribers. Each subscriber's
    /// prefix subscriptions are honoured; each has its own bounded queue
    /// (`send_hwm`, `send_hwm_bytes`), and a full queue drops for that
    /// subscriber alone, counted.
    ZmqPub(ZmqSocket),
    /// `zmq-push`: the PUSH side facing PULL workers, round-robin over the
    /// workers with room; when none has room the route waits (up to
    /// `send_timeout`), so nothing is lost on the way out.
    ZmqPush(ZmqSocket),
    /// `zmq-dealer`: the DEALER side facing REP services. Each message is
    /// a request to one service, chosen by `balance`; the reply goes back
    /// to the client that asked.
    ZmqDealer(DealerOutput),
    /// `blackhole`: takes every message and discards it, counted
    /// (`switchyard_output_messages_total`). For benchmarks, and for routes
    /// whose only job is to be measured.
    Blackhole(Blackhole),
    /// `nats`: a core NATS client publishing each message to a subject
    /// (at most once; see [`NatsOutput`]).
    Nats(NatsOutput),
    /// `nats-jetstream`: publishes each message into a JetStream stream,
    /// sent only on its PubAck (see [`JetStreamOutput`]).
    NatsJetstream(JetStreamOutput),
    /// `webhook`: HTTP(S) POSTs to a URL, accepted on a 2xx answer (see
    /// [`WebhookOutput`]).
    Webhook(WebhookOutput),
}

/// A `blackhole` output: no settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Blackhole {}

impl Output {
    /// The ZeroMQ settings of a ZeroMQ output.
    pub fn zmq(&self) -> Option<&ZmqSocket> {
        match &self.kind {
            OutputKind::ZmqPub(z) | OutputKind::ZmqPush(z) => Some(z),
            OutputKind::ZmqDealer(d) => Some(&d.socket),
            OutputKind::Blackhole(_)
            | OutputKind::Nats(_)
            | OutputKind::NatsJetstream(_)
            | OutputKind::Webhook(_) => None,
        }
    }

    /// The resources it holds while it runs: what two entries may not
    /// share, and what a rebuilt entry must give up before its successor
    /// can take it.
    pub fn resources(&self) -> Vec<super::Resource> {
        self.zmq()
            .and_then(|z| z.attach.bound())
            .map(|addr| super::Resource::Listen {
                field: "bind",
                addr,
            })
            .into_iter()
            .collect()
    }
}

/// A `zmq-dealer` output: its socket, and how it picks and watches its
/// services. Every field reloads live (the output is rebuilt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DealerOutput {
    /// Where it attaches: with `connect`, each endpoint is one service;
    /// with `bind`, each connected REP peer is one.
    #[serde(flatten)]
    pub socket: ZmqSocket,
    /// How a service is chosen for each request. Default `round-robin`.
    pub balance: Balance,
    /// With `balance = "weighted"`: one weight per `connect` endpoint, in
    /// order, each 1 to 1000. Required there, refused elsewhere.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<u32>,
    /// Consecutive failures (timeouts, or disconnects holding a request)
    /// that take a service out of rotation. Default 3; 1 to 1000.
    pub eject_after: u32,
    /// How long an ejected service stays out before one request probes it;
    /// doubles per failed probe. Default 1s; 10ms to 1h.
    #[serde(serialize_with = "serialize_duration")]
    pub probe_interval: Duration,
    /// Cap of that doubling. Default 30s; at least `probe_interval`, at
    /// most 1h.
    #[serde(serialize_with = "serialize_duration")]
    pub probe_interval_max: Duration,
    /// Most requests waiting for replies at once; more make the route wait
    /// (its queue fills and `when_full` applies). Default 1024; 1 to
    /// 1000000.
    pub max_in_flight: usize,
}

/// How a `zmq-dealer` output chooses the service of each request; written
/// `balance = "round-robin" | "weighted" | "consistent-hash"` in the config.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// In turn over the services in rotation with room. The default.
    #[default]
    RoundRobin,
    /// Smooth weighted round-robin by `weights`.
    Weighted,
    /// A hash ring keyed by the message attribute `attribute` (its topic
    /// when it lacks the attribute): the same key reaches the same service
    /// while that service is in rotation.
    ConsistentHash {
        /// The attribute whose value is the key.
        attribute: String,
    },
}

/// Reads a `zmq-dealer` output's service settings.
fn dealer_settings(
    raw: &RawZmqDealer,
    socket: ZmqSocket,
    subject: &Subject,
    c: &mut Checker<'_>,
) -> DealerOutput {
    #[derive(Clone, Copy)]
    enum Written {
        RoundRobin,
        Weighted,
        Hash,
    }
    let written = c.choice(
        subject,
        "balance",
        raw.balance.as_ref(),
        Written::RoundRobin,
        &[
            ("round-robin", Written::RoundRobin),
            ("weighted", Written::Weighted),
            ("consistent-hash", Written::Hash),
        ],
    );
    let at = |field: &Option<super::raw::S<String>>| {
        field.as_ref().map_or_else(|| raw.name.span(), |f| f.span())
    };
    if let (Written::RoundRobin | Written::Weighted, Some(attr)) = (written, &raw.hash_attribute) {
        c.invalid(
            subject,
            "hash_attribute",
            attr.span(),
            "only applies with balance = \"consistent-hash\"",
        );
    }
    let balance = match written {
        Written::RoundRobin => Balance::RoundRobin,
        Written::Weighted => Balance::Weighted,
        Written::Hash => match raw
            .hash_attribute
            .as_ref()
            .filter(|a| !a.get_ref().is_empty())
        {
            Some(attr) => Balance::ConsistentHash {
                attribute: attr.get_ref().clone(),
            },
            None => {
                c.invalid(
                    subject,
                    "hash_attribute",
                    at(&raw.balance),
                    "balance = \"consistent-hash\" needs `hash_attribute = \"<attribute>\"`, the attribute whose value picks the service",
                );
                Balance::RoundRobin
            }
        },
    };
    let mut weights = Vec::new();
    let endpoints = match &socket.attach {
        Attach::Connect(list) => Some(list.len()),
        Attach::Bind(_) => None,
    };
    match (&balance, &raw.weights) {
        (Balance::Weighted, Some(list)) => {
            for w in list.get_ref() {
                match u32::try_from(*w.get_ref()) {
                    Ok(v @ 1..=1000) => weights.push(v),
                    _ => c.invalid(
                        subject,
                        "weights",
                        w.span(),
                        format!("each weight must be from 1 to 1000, got {}", w.get_ref()),
                    ),
                }
            }
            match endpoints {
                Some(n) if n != list.get_ref().len() => c.invalid(
                    subject,
                    "weights",
                    list.span(),
                    format!(
                        "lists {} weights for {n} `connect` endpoints; give one per endpoint, in order",
                        list.get_ref().len()
                    ),
                ),
                None => c.invalid(
                    subject,
                    "weights",
                    list.span(),
                    "needs `connect` endpoints to weigh; with `bind`, services are whoever connects",
                ),
                _ => {}
            }
        }
        (Balance::Weighted, None) => c.invalid(
            subject,
            "weights",
            at(&raw.balance),
            "balance = \"weighted\" needs `weights = [...]`, one per `connect` endpoint",
        ),
        (_, Some(list)) => c.invalid(
            subject,
            "weights",
            list.span(),
            "only applies with balance = \"weighted\"",
        ),
        (_, None) => {}
    }
    let ms = Duration::from_millis(1);
    let hour = Duration::from_secs(3600);
    let eject_after = c.count(
        subject,
        "eject_after",
        raw.eject_after.as_ref(),
        3,
        1..=1000,
    );
    let probe_interval = c.duration(
        subject,
        "probe_interval",
        raw.probe_interval.as_ref(),
        Duration::from_secs(1),
        10 * ms..=hour,
    );
    let probe_interval_max = c.duration(
        subject,
        "probe_interval_max",
        raw.probe_interval_max.as_ref(),
        Duration::from_secs(30),
        10 * ms..=hour,
    );
    if probe_interval_max < probe_interval {
        let span = zmq::first_span(raw.zmq(), &[&raw.probe_interval_max, &raw.probe_interval]);
        c.invalid(
            subject,
            "probe_interval_max",
            span,
            "must be at least probe_interval",
        );
    }
    let max_in_flight = c.count(
        subject,
        "max_in_flight",
        raw.max_in_flight.as_ref(),
        1024,
        1..=1_000_000,
    );
    DealerOutput {
        socket,
        balance,
        weights,
        eject_after: eject_after as u32,
        probe_interval,
        probe_interval_max,
        max_in_flight,
    }
}

/// Reads an output's `retry` table.
fn build_retry(raw: Option<&S<RawRetry>>, subject: &Subject, c: &mut Checker<'_>) -> Option<Retry> {
    let raw = raw?.get_ref();
    let hour = Duration::from_secs(3600);
    let initial = c.duration(
        subject,
        "retry.initial",
        raw.initial.as_ref(),
        Retry::DEFAULT_INITIAL,
        Duration::from_millis(1)..=hour,
    );
    let max = c.duration(
        subject,
        "retry.max",
        raw.max.as_ref(),
        Retry::DEFAULT_MAX.max(initial),
        Duration::from_millis(1)..=hour,
    );
    if max < initial
        && let Some(at) = raw.max.as_ref()
    {
        c.invalid(
            subject,
            "retry.max",
            at.span(),
            "must be at least retry.initial",
        );
    }
    let max_attempts = raw
        .max_attempts
        .as_ref()
        .map(|n| c.count(subject, "retry.max_attempts", Some(n), 1, 1..=1_000_000) as u32);
    let max_elapsed = raw.max_elapsed.as_ref().map(|d| {
        c.duration(
            subject,
            "retry.max_elapsed",
            Some(d),
            Duration::from_secs(300),
            Duration::from_millis(1)..=Duration::from_secs(7 * 24 * 3600),
        )
    });
    Some(Retry {
        initial,
        max: max.max(initial),
        max_attempts,
        max_elapsed,
    })
}

/// Reads a `blackhole` output.
pub(crate) fn build_blackhole(
    raw: &RawBlackhole,
    subject: &Subject,
    c: &mut Checker<'_>,
) -> Output {
    Output {
        name: raw.name.get_ref().clone(),
        kind: OutputKind::Blackhole(Blackhole {}),
        retry: build_retry(raw.retry.as_ref(), subject, c),
    }
}

/// Reads a `nats` output (`jetstream`: a `nats-jetstream` one).
pub(crate) fn build_nats(
    raw: &RawNats,
    jetstream: bool,
    subject: &Subject,
    c: &mut Checker<'_>,
) -> Output {
    let kind = if jetstream {
        OutputKind::NatsJetstream(nats::build_jetstream(raw, subject, c))
    } else {
        OutputKind::Nats(nats::build_core(raw, subject, c))
    };
    Output {
        name: raw.name.get_ref().clone(),
        kind,
        retry: build_retry(raw.retry.as_ref(), subject, c),
    }
}

/// Reads a `webhook` output. Without a `retry` table it is retried with
/// [`Retry::WEBHOOK_DEFAULT`] on a memory route ([`Output::retry_on`]).
pub(crate) fn build_webhook(raw: &RawWebhook, subject: &Subject, c: &mut Checker<'_>) -> Output {
    Output {
        name: raw.name.get_ref().clone(),
        kind: OutputKind::Webhook(webhook::build(raw, subject, c)),
        retry: build_retry(raw.retry.as_ref(), subject, c),
    }
}

/// Reads a `zmq-pub` output.
pub(crate) fn build_pub(raw: &RawZmqPub, subject: &Subject, c: &mut Checker<'_>) -> Output {
    let socket = zmq::build(raw.zmq(), raw.queues(), ZmqRole::Pub, subject, c);
    Output {
        name: raw.name.get_ref().clone(),
        kind: OutputKind::ZmqPub(socket),
        retry: build_retry(raw.retry.as_ref(), subject, c),
    }
}

/// Reads a `zmq-push` output.
pub(crate) fn build_push(raw: &RawZmqPush, subject: &Subject, c: &mut Checker<'_>) -> Output {
    let socket = zmq::build(raw.zmq(), raw.queues(), ZmqRole::Push, subject, c);
    Output {
        name: raw.name.get_ref().clone(),
        kind: OutputKind::ZmqPush(socket),
        retry: build_retry(raw.retry.as_ref(), subject, c),
    }
}

/// Reads a `zmq-dealer` output.
pub(crate) fn build_dealer(raw: &RawZmqDealer, subject: &Subject, c: &mut Checker<'_>) -> Output {
    let socket = zmq::build(raw.zmq(), raw.queues(), ZmqRole::Dealer, subject, c);
    Output {
        name: raw.name.get_ref().clone(),
        kind: OutputKind::ZmqDealer(dealer_settings(raw, socket, subject, c)),
        retry: build_retry(raw.retry.as_ref(), subject, c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixture::{assert_one, base, problems, valid};

    /// The base file with its output turned into a `zmq-dealer` with
    /// `lines`, and its input into a `zmq-router`.
    fn dealer(attach: &str, lines: &str) -> String {
        base("", "", "request_timeout = \"250ms\"")
            .replace("kind = \"zmq-pull\"", "kind = \"zmq-router\"")
            .replace(
                "kind = \"zmq-push\"\nbind = \"tcp://127.0.0.1:6556\"",
                &format!("kind = \"zmq-dealer\"\n{attach}\n{lines}"),
            )
    }

    const TWO: &str = "connect = [\"tcp://127.0.0.1:7001\", \"tcp://127.0.0.1:7002\"]";

    #[test]
    fn dealer_outputs_read_their_balance_and_health() {
        let config = valid(&dealer(
            TWO,
            "balance = \"weighted\"\nweights = [3, 1]\neject_after = 2\nprobe_interval = \"200ms\"\nmax_in_flight = 64",
        ));
        let OutputKind::ZmqDealer(d) = &config.outputs[0].kind else {
            panic!("zmq-dealer")
        };
        assert_eq!(d.balance, Balance::Weighted);
        assert_eq!(d.weights, [3, 1]);
        assert_eq!(d.eject_after, 2);
        assert_eq!(d.probe_interval, Duration::from_millis(200));
        assert_eq!(d.probe_interval_max, Duration::from_secs(30));
        assert_eq!(d.max_in_flight, 64);
        assert_eq!(config.routes[0].request_timeout, Duration::from_millis(250));
        let config = valid(&dealer(
            "bind = \"tcp://127.0.0.1:0\"",
            "balance = \"consistent-hash\"\nhash_attribute = \"user\"",
        ));
        let OutputKind::ZmqDealer(d) = &config.outputs[0].kind else {
            panic!("zmq-dealer")
        };
        assert_eq!(
            d.balance,
            Balance::ConsistentHash {
                attribute: "user".into()
            }
        );
        let crate::config::InputKind::ZmqRouter(r) = &config.inputs[0].kind else {
            panic!("zmq-router")
        };
        assert_eq!(
            r.max_pending,
            crate::config::RouterInput::DEFAULT_MAX_PENDING
        );
    }

    #[test]
    fn dealer_settings_that_do_not_fit_are_refused() {
        assert_one(
            &problems(&dealer(TWO, "balance = \"weighted\"\nweights = [3]")),
            "weights: lists 1 weights for 2 `connect` endpoints",
        );
        assert_one(
            &problems(&dealer(TWO, "balance = \"weighted\"")),
            "balance = \"weighted\" needs `weights = [...]`",
        );
        assert_one(
            &problems(&dealer(TWO, "balance = \"consistent-hash\"")),
            "needs `hash_attribute",
        );
        assert_one(
            &problems(&dealer(TWO, "hash_attribute = \"user\"")),
            "hash_attribute: only applies with balance = \"consistent-hash\"",
        );
        assert_one(
            &problems(&dealer(
                "bind = \"tcp://127.0.0.1:0\"",
                "balance = \"weighted\"\nweights = [1]",
            )),
            "weights: needs `connect` endpoints",
        );
        assert_one(
            &problems(&dealer(TWO, "balance = \"weighted\"\nweights = [0, 1]")),
            "each weight must be from 1 to 1000, got 0",
        );
        assert_one(&problems(&dealer(TWO, "balance = \"random\"")), "balance");
        assert_one(
            &problems(&dealer(
                TWO,
                "probe_interval = \"2s\"\nprobe_interval_max = \"1s\"",
            )),
            "probe_interval_max: must be at least probe_interval",
        );
        assert_one(
            &problems(&base("", "max_in_flight = 5", "")),
            "max_in_flight: has no effect on a zmq-push output",
        );
        assert_one(
            &problems(&base("max_pending = 5", "", "")),
            "max_pending: has no effect on a zmq-pull input",
        );
        assert_one(
            &problems(&dealer(TWO, "send_timeout = \"1s\"")),
            "send_timeout: has no effect on a zmq-dealer output",
        );
    }

    #[test]
    fn outputs_read_their_retry_policy() {
        let config = valid(&base(
            "",
            "retry = { initial = \"50ms\", max = \"2s\", max_attempts = 5 }",
            "",
        ));
        assert_eq!(
            config.outputs[0].retry,
            Some(Retry {
                initial: Duration::from_millis(50),
                max: Duration::from_secs(2),
                max_attempts: Some(5),
                max_elapsed: None,
            })
        );
        let config = valid(&base("", "retry = { max_elapsed = \"90s\" }", ""));
        assert_eq!(
            config.outputs[0].retry.and_then(|r| r.max_elapsed),
            Some(Duration::from_secs(90))
        );
        let config = valid(&base("", "retry = {}", ""));
        assert_eq!(
            config.outputs[0].retry,
            Some(Retry {
                initial: Retry::DEFAULT_INITIAL,
                max: Retry::DEFAULT_MAX,
                max_attempts: None,
                max_elapsed: None,
            })
        );
        assert_eq!(valid(&base("", "", "")).outputs[0].retry, None);
        assert!(Retry::DURABLE_DEFAULT.allows(1_000_000));
        assert!(
            !Retry {
                max_attempts: Some(2),
                ..Retry::DURABLE_DEFAULT
            }
            .allows(2)
        );
    }

    #[test]
    fn bad_retry_policies_are_refused() {
        assert_one(
            &problems(&base("", "retry = { initial = \"2s\", max = \"1s\" }", "")),
            "retry.max: must be at least retry.initial",
        );
        assert_one(
            &problems(&base("", "retry = { max_attempts = 0 }", "")),
            "retry.max_attempts",
        );
        assert_one(
            &problems(&base("", "retry = { attempts = 3 }", "")),
            "attempts",
        );
        assert_one(
            &problems(&base("", "retry = { max_elapsed = \"0s\" }", "")),
            "retry.max_elapsed: must be from",
        );
        assert_one(
            &problems(&base("", "retry = { max_elapsed = \"8d\" }", "")),
            "retry.max_elapsed",
        );
    }
}
