//! Switchyard: a WebAssembly-extensible edge message router.
//!
//! Module map:
//! - [`zmtp`]: the ZeroMQ wire protocol (ZMTP 3.0/3.1): sans-IO codec and
//!   handshake, connections, and the peer roles the router needs.
//! - [`config`]: the TOML file read into a raw serde model, then validated into
//!   a typed [`config::Config`] that reports every problem with file and line.
//! - [`message`]: the shared vocabulary ([`message::Message`], topics,
//!   attributes, publishers, ids) and requests, the waiting side of a
//!   message whose sender expects one answer.
//! - [`pipeline`]: topic patterns, the route table and the bounded
//!   per-route queues with their `when_full` policies.
//! - [`ingress`]: one file per input kind; decodes wire data into messages.
//! - [`egress`]: one file per output kind; encodes messages onto the wire.
//! - [`envelope`]: how a message is laid out in ZeroMQ frames.
//! - [`nats`]: the NATS client connection the NATS inputs and outputs
//!   share (`async-nats`).
//! - [`http`]: the HTTP server plumbing and the one place errors become
//!   HTTP responses; [`admin`]: the admin endpoints (and `switchyard dlq`,
//!   their client).
//! - [`plugin`]: the Wasm plugin host (the only module that imports wasmtime):
//!   engine, loading and checks, instances, batched calls, limits.
//! - [`store`]: durable queues on disk: CRC-framed records in segmented
//!   logs, recovery that resynchronises past damage, group commit; and the
//!   dead-letter store ([`store::DeadLetters`]).
//! - [`auth`]: who is calling (JWT, static tokens, transport principals)
//!   and what they may do: the ACL every entry point enforces.
//! - [`metrics`]: every Prometheus family the router exports.
//! - [`reload`]: what triggers a hot reload: the watched config and plugin
//!   files (debounced), SIGHUP and the admin endpoint, all as one
//!   [`reload::Trigger`] channel.
//! - `fuzzing` (hidden): entry points for the cargo-fuzz targets in `fuzz/`
//!   into decoders that are otherwise crate-private.
//!
//! Data flows one way: ingress -> pipeline (route match, per-route queue) ->
//! route worker -> egress. Only [`app`] wires the modules together.

pub mod admin;
pub mod app;
pub mod auth;
pub mod config;
pub mod egress;
pub mod envelope;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod ingress;
pub mod message;
pub mod metrics;
pub mod nats;
pub mod pipeline;
pub mod plugin;
pub mod reload;
pub mod shutdown;
pub mod store;
pub mod zmtp;
