//! The raw serde model: the file's shape, nothing more. Every struct denies
//! unknown fields. Values that need parsing (durations, sizes, addresses,
//! patterns) stay as written, with their spans, so the validate step can
//! report each bad one at its own line instead of stopping at the first.
//!
//! Adding a section or a field starts here: a field in the struct, then its
//! reading in the typed module (`input.rs`, `route.rs`, ...).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{self, Visitor};
use toml::Spanned;

use super::units::Quantity;

/// A value as written, with its byte span in the substituted text.
pub(crate) type S<T> = Spanned<T>;

/// `[router]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouter {
    pub(crate) name: Option<S<String>>,
    pub(crate) admin: Option<S<String>>,
    pub(crate) shutdown_grace: Option<S<Quantity>>,
    pub(crate) log_level: Option<S<String>>,
    pub(crate) plugin_cache: Option<S<String>>,
    pub(crate) data_dir: Option<S<String>>,
    pub(crate) admin_auth: Option<S<Vec<S<String>>>>,
    pub(crate) metrics_open: Option<S<bool>>,
    pub(crate) admin_tls: Option<S<RawListenerTls>>,
}

/// `[dead_letters]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDeadLetters {
    pub(crate) max_entries: Option<S<i64>>,
    pub(crate) max_bytes: Option<S<Quantity>>,
    pub(crate) max_age: Option<S<Quantity>>,
    pub(crate) fsync: Option<S<String>>,
    pub(crate) fsync_interval: Option<S<Quantity>>,
}

/// Declares the raw struct of each ZeroMQ kind: the fields every kind has
/// (given once, in `common`), then the kind's own. Each struct denies
/// unknown fields, so a field of another kind is refused where it is
/// written; each also lends out its common part as a [`RawZmq`].
///
/// A struct per kind rather than one `#[serde(flatten)]`ed common struct:
/// serde's flatten and `deny_unknown_fields` do not work together, and
/// flatten would hide the field list [`fields_of`] reads.
macro_rules! zmq_kinds {
    (
        common $common:tt
        $( $(#[$meta:meta])* $kind:ident $own:tt )*
    ) => {
        zmq_common!($common);
        $( zmq_kind!($common $(#[$meta])* $kind $own); )*
    };
}

/// The borrowed view of the common fields (see `zmq_kinds`).
macro_rules! zmq_common {
    ({ $( $(#[$cmeta:meta])* $cfield:ident : $ctype:ty, )* }) => {
        /// The fields every ZeroMQ kind has, borrowed from one entry's raw
        /// struct: what [`super::zmq::build`] reads.
        #[derive(Debug, Clone, Copy)]
        pub(crate) struct RawZmq<'a> {
            // The fields' attributes are serde's, for the kinds' structs.
            $( pub(crate) $cfield: &'a $ctype, )*
        }
    };
}

/// One kind's raw struct (see `zmq_kinds`).
macro_rules! zmq_kind {
    (
        { $( $(#[$cmeta:meta])* $cfield:ident : $ctype:ty, )* }
        $(#[$meta:meta])* $kind:ident
        { $( $(#[$ometa:meta])* $ofield:ident : $otype:ty, )* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct $kind {
            $( $(#[$cmeta])* pub(crate) $cfield: $ctype, )*
            $( $(#[$ometa])* pub(crate) $ofield: $otype, )*
        }

        impl $kind {
            /// The fields every ZeroMQ kind has.
            pub(crate) fn zmq(&self) -> RawZmq<'_> {
                RawZmq { $( $cfield: &self.$cfield, )* }
            }
        }
    };
}

zmq_kinds! {
    common {
        name: S<String>,
        /// Read (and mapped to a role) before the struct is deserialized.
        #[serde(rename = "kind")]
        _kind: S<String>,
        bind: Option<S<String>>,
        connect: Option<S<OneOrMany>>,
        envelope: Option<S<String>>,
        max_frame_size: Option<S<Quantity>>,
        max_message_size: Option<S<Quantity>>,
        max_frames: Option<S<i64>>,
        handshake_timeout: Option<S<Quantity>>,
        heartbeat_interval: Option<S<Quantity>>,
        heartbeat_timeout: Option<S<Quantity>>,
        max_connections: Option<S<i64>>,
        reconnect_interval: Option<S<Quantity>>,
        reconnect_interval_max: Option<S<Quantity>>,
        plain: Option<S<RawPlain>>,
        auth: Option<S<Vec<S<String>>>>,
        curve: Option<S<RawCurve>>,
        identity: Option<S<String>>,
    }

    /// One `[[input]]` of kind `zmq-sub` or `zmq-pull`.
    RawZmqReader {
        recv_hwm: Option<S<i64>>,
        on_forbidden: Option<S<String>>,
    }

    /// One `[[input]]` of kind `zmq-router`.
    RawZmqRouter {
        recv_hwm: Option<S<i64>>,
        max_pending: Option<S<i64>>,
        on_forbidden: Option<S<String>>,
    }

    /// One `[[output]]` of kind `zmq-pub`.
    RawZmqPub {
        retry: Option<S<RawRetry>>,
        send_hwm: Option<S<i64>>,
        send_hwm_bytes: Option<S<Quantity>>,
        slow_subscriber_timeout: Option<S<Quantity>>,
    }

    /// One `[[output]]` of kind `zmq-push`.
    RawZmqPush {
        retry: Option<S<RawRetry>>,
        send_hwm: Option<S<i64>>,
        send_hwm_bytes: Option<S<Quantity>>,
        send_timeout: Option<S<Quantity>>,
    }

    /// One `[[output]]` of kind `zmq-dealer`.
    RawZmqDealer {
        retry: Option<S<RawRetry>>,
        send_hwm: Option<S<i64>>,
        send_hwm_bytes: Option<S<Quantity>>,
        balance: Option<S<String>>,
        hash_attribute: Option<S<String>>,
        weights: Option<S<Vec<S<i64>>>>,
        eject_after: Option<S<i64>>,
        probe_interval: Option<S<Quantity>>,
        probe_interval_max: Option<S<Quantity>>,
        max_in_flight: Option<S<i64>>,
    }
}

/// The queue and timer settings only some ZeroMQ kinds have, borrowed from
/// one entry: `None` where the entry does not set it or its kind has no
/// such field (the default applies).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RawZmqQueues<'a> {
    pub(crate) recv_hwm: Option<&'a S<i64>>,
    pub(crate) send_hwm: Option<&'a S<i64>>,
    pub(crate) send_hwm_bytes: Option<&'a S<Quantity>>,
    pub(crate) send_timeout: Option<&'a S<Quantity>>,
    pub(crate) slow_subscriber_timeout: Option<&'a S<Quantity>>,
    pub(crate) on_forbidden: Option<&'a S<String>>,
}

impl RawZmqReader {
    /// Its queue settings.
    pub(crate) fn queues(&self) -> RawZmqQueues<'_> {
        RawZmqQueues {
            recv_hwm: self.recv_hwm.as_ref(),
            on_forbidden: self.on_forbidden.as_ref(),
            ..RawZmqQueues::default()
        }
    }
}

impl RawZmqRouter {
    /// Its queue settings.
    pub(crate) fn queues(&self) -> RawZmqQueues<'_> {
        RawZmqQueues {
            recv_hwm: self.recv_hwm.as_ref(),
            on_forbidden: self.on_forbidden.as_ref(),
            ..RawZmqQueues::default()
        }
    }
}

impl RawZmqPub {
    /// Its queue settings.
    pub(crate) fn queues(&self) -> RawZmqQueues<'_> {
        RawZmqQueues {
            send_hwm: self.send_hwm.as_ref(),
            send_hwm_bytes: self.send_hwm_bytes.as_ref(),
            slow_subscriber_timeout: self.slow_subscriber_timeout.as_ref(),
            ..RawZmqQueues::default()
        }
    }
}

impl RawZmqPush {
    /// Its queue settings.
    pub(crate) fn queues(&self) -> RawZmqQueues<'_> {
        RawZmqQueues {
            send_hwm: self.send_hwm.as_ref(),
            send_hwm_bytes: self.send_hwm_bytes.as_ref(),
            send_timeout: self.send_timeout.as_ref(),
            ..RawZmqQueues::default()
        }
    }
}

impl RawZmqDealer {
    /// Its queue settings.
    pub(crate) fn queues(&self) -> RawZmqQueues<'_> {
        RawZmqQueues {
            send_hwm: self.send_hwm.as_ref(),
            send_hwm_bytes: self.send_hwm_bytes.as_ref(),
            ..RawZmqQueues::default()
        }
    }
}

/// Every field some ZeroMQ kind has: a field of this list on an entry whose
/// kind lacks it is reported as having no effect there, not as unknown.
pub(crate) fn zmq_fields() -> Vec<&'static str> {
    let mut all: Vec<&'static str> = [
        fields_of::<RawZmqReader>(),
        fields_of::<RawZmqRouter>(),
        fields_of::<RawZmqPub>(),
        fields_of::<RawZmqPush>(),
        fields_of::<RawZmqDealer>(),
    ]
    .concat();
    all.sort_unstable();
    all.dedup();
    all
}

/// `plain = { users = { name = "password" } }` (server) or
/// `plain = { username = "...", password = "..." }` (client).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlain {
    pub(crate) users: Option<S<BTreeMap<String, S<String>>>>,
    pub(crate) username: Option<S<String>>,
    pub(crate) password: Option<S<String>>,
}

/// One `[[auth]]`: an authenticator. One struct for every kind; the
/// fields of another kind are refused when the entry is built.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuth {
    pub(crate) name: S<String>,
    pub(crate) kind: S<String>,
    pub(crate) jwks_file: Option<S<String>>,
    pub(crate) secret: Option<S<String>>,
    pub(crate) secret_file: Option<S<String>>,
    pub(crate) public_key_file: Option<S<String>>,
    pub(crate) algorithms: Option<S<Vec<S<String>>>>,
    pub(crate) issuer: Option<S<String>>,
    pub(crate) audience: Option<S<OneOrMany>>,
    pub(crate) principal: Option<S<String>>,
    pub(crate) leeway: Option<S<Quantity>>,
    pub(crate) max_token_size: Option<S<Quantity>>,
    pub(crate) tokens_file: Option<S<String>>,
}

/// `tls = { cert = "...", key = "...", ... }` on an HTTP listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListenerTls {
    pub(crate) cert: S<String>,
    pub(crate) key: S<String>,
    pub(crate) client_ca: Option<S<String>>,
    pub(crate) client_auth: Option<S<String>>,
    pub(crate) handshake_timeout: Option<S<Quantity>>,
}

/// One `[[acl]]` rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAcl {
    pub(crate) principals: Option<S<Vec<S<String>>>>,
    pub(crate) when: Option<S<BTreeMap<String, S<String>>>>,
    pub(crate) publish: Option<S<Vec<S<String>>>>,
    pub(crate) subscribe: Option<S<Vec<S<String>>>>,
    pub(crate) deny_publish: Option<S<Vec<S<String>>>>,
    pub(crate) deny_subscribe: Option<S<Vec<S<String>>>>,
    pub(crate) admin: Option<S<Vec<S<String>>>>,
}

/// `curve = { secret_key_file = "...", clients_file = "..." }` (server) or
/// `curve = { server_key = "...", secret_key_file = "..." }` (client);
/// `secret_key = "${ENV}"` instead of the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCurve {
    pub(crate) secret_key: Option<S<String>>,
    pub(crate) secret_key_file: Option<S<String>>,
    pub(crate) clients_file: Option<S<String>>,
    pub(crate) server_key: Option<S<String>>,
}

/// One `[[input]]` of kind `http`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    pub(crate) name: S<String>,
    /// Read before this struct is deserialized.
    #[serde(rename = "kind")]
    pub(crate) _kind: S<String>,
    pub(crate) listen: S<String>,
    pub(crate) max_body: Option<S<Quantity>>,
    pub(crate) header_timeout: Option<S<Quantity>>,
    pub(crate) body_timeout: Option<S<Quantity>>,
    pub(crate) max_batch: Option<S<i64>>,
    pub(crate) auth: Option<S<Vec<S<String>>>>,
    pub(crate) tls: Option<S<RawListenerTls>>,
}

/// One `[[output]]` of kind `blackhole`: nothing but its name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBlackhole {
    pub(crate) name: S<String>,
    /// Read before this struct is deserialized.
    #[serde(rename = "kind")]
    pub(crate) _kind: S<String>,
    pub(crate) retry: Option<S<RawRetry>>,
}

/// One `[[output]]` of kind `nats` or `nats-jetstream`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNats {
    pub(crate) name: S<String>,
    /// Read before this struct is deserialized.
    #[serde(rename = "kind")]
    pub(crate) _kind: S<String>,
    pub(crate) servers: S<Vec<S<String>>>,
    pub(crate) subject: Option<S<String>>,
    pub(crate) auth: Option<S<RawNatsAuth>>,
    pub(crate) tls: Option<S<RawNatsTls>>,
    pub(crate) connect_timeout: Option<S<Quantity>>,
    pub(crate) reconnect_max: Option<S<Quantity>>,
    pub(crate) required: Option<S<bool>>,
    pub(crate) retry: Option<S<RawRetry>>,
    pub(crate) max_ack_pending: Option<S<i64>>,
    pub(crate) ack_timeout: Option<S<Quantity>>,
    pub(crate) stream: Option<S<RawStream>>,
    pub(crate) domain: Option<S<String>>,
    pub(crate) api_prefix: Option<S<String>>,
}

impl RawNats {
    /// The fields only `nats-jetstream` has, with where each is written.
    pub(crate) fn jetstream_fields(&self) -> [(&'static str, Option<std::ops::Range<usize>>); 5] {
        [
            (
                "max_ack_pending",
                self.max_ack_pending.as_ref().map(S::span),
            ),
            ("ack_timeout", self.ack_timeout.as_ref().map(S::span)),
            ("stream", self.stream.as_ref().map(S::span)),
            ("domain", self.domain.as_ref().map(S::span)),
            ("api_prefix", self.api_prefix.as_ref().map(S::span)),
        ]
    }
}

/// One `[[output]]` of kind `webhook`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    pub(crate) name: S<String>,
    /// Read before this struct is deserialized.
    #[serde(rename = "kind")]
    pub(crate) _kind: S<String>,
    pub(crate) url: S<String>,
    pub(crate) encoding: Option<S<String>>,
    pub(crate) max_messages: Option<S<i64>>,
    pub(crate) max_bytes: Option<S<Quantity>>,
    pub(crate) max_wait: Option<S<Quantity>>,
    pub(crate) headers: Option<S<BTreeMap<String, S<String>>>>,
    pub(crate) bearer_token: Option<S<String>>,
    pub(crate) bearer_token_file: Option<S<String>>,
    pub(crate) hmac_secret: Option<S<String>>,
    pub(crate) hmac_secret_file: Option<S<String>>,
    pub(crate) connect_timeout: Option<S<Quantity>>,
    pub(crate) request_timeout: Option<S<Quantity>>,
    pub(crate) concurrency: Option<S<i64>>,
    pub(crate) ca_file: Option<S<String>>,
    pub(crate) client_cert: Option<S<String>>,
    pub(crate) client_key: Option<S<String>>,
    pub(crate) retry: Option<S<RawRetry>>,
}

/// A JetStream output's `stream = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStream {
    pub(crate) name: S<String>,
    pub(crate) subjects: Option<S<Vec<S<String>>>>,
    pub(crate) storage: Option<S<String>>,
    pub(crate) max_age: Option<S<Quantity>>,
    pub(crate) max_bytes: Option<S<Quantity>>,
    pub(crate) max_msgs: Option<S<i64>>,
    pub(crate) replicas: Option<S<i64>>,
    pub(crate) duplicate_window: Option<S<Quantity>>,
}

/// One `[[input]]` of kind `nats`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNatsInput {
    pub(crate) name: S<String>,
    /// Read before this struct is deserialized.
    #[serde(rename = "kind")]
    pub(crate) _kind: S<String>,
    pub(crate) servers: S<Vec<S<String>>>,
    pub(crate) auth: Option<S<RawNatsAuth>>,
    pub(crate) tls: Option<S<RawNatsTls>>,
    pub(crate) connect_timeout: Option<S<Quantity>>,
    pub(crate) reconnect_max: Option<S<Quantity>>,
    pub(crate) required: Option<S<bool>>,
    pub(crate) subjects: S<Vec<S<String>>>,
    pub(crate) queue_group: Option<S<String>>,
    pub(crate) max_message_size: Option<S<Quantity>>,
    pub(crate) max_pending: Option<S<i64>>,
}

/// One `[[input]]` of kind `nats-jetstream`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJetStreamInput {
    pub(crate) name: S<String>,
    /// Read before this struct is deserialized.
    #[serde(rename = "kind")]
    pub(crate) _kind: S<String>,
    pub(crate) servers: S<Vec<S<String>>>,
    pub(crate) auth: Option<S<RawNatsAuth>>,
    pub(crate) tls: Option<S<RawNatsTls>>,
    pub(crate) connect_timeout: Option<S<Quantity>>,
    pub(crate) reconnect_max: Option<S<Quantity>>,
    pub(crate) required: Option<S<bool>>,
    pub(crate) stream: Option<S<String>>,
    pub(crate) consumer: Option<S<String>>,
    pub(crate) create: Option<S<bool>>,
    pub(crate) filter_subject: Option<S<String>>,
    pub(crate) deliver_policy: Option<S<String>>,
    pub(crate) max_ack_pending: Option<S<i64>>,
    pub(crate) ack_wait: Option<S<Quantity>>,
    pub(crate) max_deliver: Option<S<i64>>,
    pub(crate) nak_delay: Option<S<Quantity>>,
    pub(crate) max_message_size: Option<S<Quantity>>,
    pub(crate) domain: Option<S<String>>,
    pub(crate) api_prefix: Option<S<String>>,
}

/// How a NATS input or output connects, as written.
pub(crate) struct RawNatsConnection<'a> {
    pub(crate) servers: &'a S<Vec<S<String>>>,
    pub(crate) auth: Option<&'a S<RawNatsAuth>>,
    pub(crate) tls: Option<&'a S<RawNatsTls>>,
    pub(crate) connect_timeout: Option<&'a S<Quantity>>,
    pub(crate) reconnect_max: Option<&'a S<Quantity>>,
    pub(crate) required: Option<&'a S<bool>>,
}

/// The connection fields of a NATS entry, which inputs and outputs write
/// alike.
macro_rules! nats_connection {
    ($($raw:ty),*) => {$(
        impl $raw {
            pub(crate) fn connection(&self) -> RawNatsConnection<'_> {
                RawNatsConnection {
                    servers: &self.servers,
                    auth: self.auth.as_ref(),
                    tls: self.tls.as_ref(),
                    connect_timeout: self.connect_timeout.as_ref(),
                    reconnect_max: self.reconnect_max.as_ref(),
                    required: self.required.as_ref(),
                }
            }
        }
    )*};
}

nats_connection!(RawNats, RawNatsInput, RawJetStreamInput);

/// A NATS client's `tls = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNatsTls {
    pub(crate) ca_file: Option<S<String>>,
    pub(crate) cert_file: Option<S<String>>,
    pub(crate) key_file: Option<S<String>>,
}

/// A NATS client's `auth = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNatsAuth {
    pub(crate) token: Option<S<String>>,
    pub(crate) token_file: Option<S<String>>,
    pub(crate) user: Option<S<String>>,
    pub(crate) password: Option<S<String>>,
    pub(crate) password_file: Option<S<String>>,
    pub(crate) nkey_file: Option<S<String>>,
    pub(crate) creds_file: Option<S<String>>,
}

/// An output's `retry = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetry {
    pub(crate) initial: Option<S<Quantity>>,
    pub(crate) max: Option<S<Quantity>>,
    pub(crate) max_attempts: Option<S<i64>>,
    pub(crate) max_elapsed: Option<S<Quantity>>,
}

/// One `[[plugin]]`. `config` is the plugin's own settings, any table: it
/// is not checked for unknown keys (the plugin checks it when it starts),
/// only converted to JSON. Each top-level key keeps its span, so a value
/// JSON cannot hold is reported near where it is written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlugin {
    pub(crate) name: S<String>,
    pub(crate) path: S<String>,
    pub(crate) config: Option<S<BTreeMap<String, S<toml::Value>>>>,
    pub(crate) memory: Option<S<Quantity>>,
    pub(crate) deadline: Option<S<Quantity>>,
    pub(crate) max_batch: Option<S<i64>>,
    pub(crate) on_failure: Option<S<RawOnFailure>>,
}

/// A plugin's `on_failure = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOnFailure {
    pub(crate) mode: Option<S<String>>,
    pub(crate) trip_after: Option<S<i64>>,
    pub(crate) backoff: Option<S<Quantity>>,
    pub(crate) max_backoff: Option<S<Quantity>>,
}

/// One `[[route]]`. `filters` and `router` name `[[plugin]]` entries and
/// `dead_letter` an output; all are resolved against the declared names the
/// way `to` is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub(crate) name: S<String>,
    #[serde(rename = "match")]
    pub(crate) pattern: S<String>,
    pub(crate) attributes: Option<S<BTreeMap<String, S<String>>>>,
    pub(crate) filters: Option<S<Vec<S<String>>>>,
    pub(crate) router: Option<S<String>>,
    pub(crate) on_error: Option<S<String>>,
    pub(crate) dead_letter: Option<S<String>>,
    pub(crate) to: S<Vec<S<String>>>,
    pub(crate) queue: Option<S<RawQueue>>,
    pub(crate) request_timeout: Option<S<Quantity>>,
}

/// A route's `queue = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQueue {
    pub(crate) capacity: Option<S<i64>>,
    pub(crate) max_bytes: Option<S<Quantity>>,
    pub(crate) when_full: Option<S<String>>,
    pub(crate) block_timeout: Option<S<Quantity>>,
    pub(crate) durable: Option<S<bool>>,
    pub(crate) max_age: Option<S<Quantity>>,
    pub(crate) fsync: Option<S<String>>,
    pub(crate) fsync_interval: Option<S<Quantity>>,
}

/// A string or a list of strings (`connect = "tcp://a:1"` or
/// `connect = ["tcp://a:1", "tcp://b:1"]`).
#[derive(Debug)]
pub(crate) enum OneOrMany {
    /// A single string; its span is the enclosing `Spanned`'s.
    One(String),
    /// A list, each element with its own span.
    Many(Vec<S<String>>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an endpoint string or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_owned()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(OneOrMany::Many(items))
            }
        }
        d.deserialize_any(V)
    }
}

/// The field names serde's derive gives `T`, read by asking `T` to
/// deserialize itself from a deserializer that only records the list. Used
/// to report every unknown key of an entry (serde stops at the first) with
/// a "did you mean" suggestion.
pub(crate) fn fields_of<T: de::DeserializeOwned>() -> &'static [&'static str] {
    struct Recorder<'a>(&'a mut &'static [&'static str]);

    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("field list recorded")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }

    impl<'de> de::Deserializer<'de> for Recorder<'_> {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            *self.0 = fields;
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Recorder(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_lists_come_from_the_derive() {
        assert_eq!(
            fields_of::<RawQueue>(),
            &[
                "capacity",
                "max_bytes",
                "when_full",
                "block_timeout",
                "durable",
                "max_age",
                "fsync",
                "fsync_interval"
            ]
        );
        assert!(fields_of::<RawRoute>().contains(&"match"));
        assert!(fields_of::<RawRoute>().contains(&"dead_letter"));
        assert_eq!(
            fields_of::<RawOnFailure>(),
            &["mode", "trip_after", "backoff", "max_backoff"]
        );
        assert!(fields_of::<RawZmqPub>().contains(&"slow_subscriber_timeout"));
        assert!(!fields_of::<RawZmqPush>().contains(&"slow_subscriber_timeout"));
        assert!(fields_of::<RawZmqReader>().contains(&"identity"));
        assert!(zmq_fields().contains(&"max_pending"));
        assert!(zmq_fields().contains(&"max_in_flight"));
    }
}
