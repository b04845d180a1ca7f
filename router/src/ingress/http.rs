//! The HTTP publish input.
//!
//! - `POST /v1/publish/{topic}`: the raw body is the payload. Attributes come
//!   from `X-Attr-<name>` headers (names arrive lowercased; values must be
//!   UTF-8; a repeated name is an error); `X-Priority: 0`..`9` sets the
//!   priority. The topic is the rest of the path, percent-decoded.
//! - `POST /v1/publish`: a JSON body (`Content-Type: application/json` or
//!   `...+json`, or none) holding one message or a batch; see
//!   `ingress/http/json.rs` for the fields.
//!
//! - `POST /v1/request/{topic}`: the bridge to request/reply services. The
//!   body, headers and topic make a message as for a raw publish; it goes
//!   through the routes as a request, and the answer is the reply: `200`,
//!   the body is the reply's last frame and `X-Switchyard-Reply-Frames`
//!   says how many frames it had. No reply gets the request's error with
//!   its status (`504 REQUEST_TIMEOUT`, `503 NO_SERVICE`, `404
//!   ROUTE_NOT_FOUND`, `403 REJECTED`, ...; see
//!   [`crate::message::request`]).
//!
//! Publish answers:
//! - `202 Accepted`, `{"ids": ["<32 hex digits>", ...]}`: every message was
//!   admitted; the ids are in request order.
//! - `503 BACKPRESSURE` with `Retry-After` (as long as the publish waited):
//!   a route with `when_full = "block"` stayed full for that route's
//!   `block_timeout`. The error body's `ids` lists the messages admitted
//!   before the refusal (a prefix of the request); the rest were not
//!   accepted and may be retried. `503 SHUTTING_DOWN` has the same shape.
//! - `400`/`413`/`415`/`408` errors (see [`crate::http::Error`]): nothing of
//!   the request was accepted.
//!
//! An accepted message is always reported: the offer to the sink runs in a
//! tracked task that completes and counts even if the client hangs up.
//!
//! Metrics: `switchyard_input_messages_total{input}` (admitted messages) and
//! `switchyard_input_rejected_total{input,reason}`; a request refused before
//! its messages could be counted (bad JSON, too large, ...) counts once,
//! refusals by the sink count each refused message. Reasons: `too_large`,
//! `bad_json`, `bad_topic`, `bad_attribute`, `bad_priority`, `bad_payload`,
//! `bad_request`, `unsupported_media_type`, `timeout`, `backpressure`,
//! `disk_full` (a durable route's disk is full: answered as `503
//! BACKPRESSURE`), `shutting_down`.

// Crate-visible for `crate::fuzzing`, which feeds the parser bytes.
pub(crate) mod json;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use prometheus::{IntCounter, IntCounterVec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Refusal, Sink, Wait};
use crate::config;
use crate::http::{self, Body, BodyLimits, Error, Handler, Peer, Stopped};
use crate::message::request::{
    Answer, InputRequests, OneshotReplier, RequestError, RequestMetrics,
};
use crate::message::{Attributes, Message, MessageId, Publisher, Topic};

/// Settings of one HTTP input.
#[derive(Debug, Clone)]
pub struct Config {
    /// The input's name: [`Publisher::input`] of its messages and the
    /// `input`/`listener` label of its metrics.
    pub name: String,
    /// The address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The largest request body accepted, in bytes (default 1 MiB).
    pub max_body: usize,
    /// How long a client may take to send request headers; also the
    /// keep-alive idle timeout (default 10 s).
    pub header_timeout: Duration,
    /// How long a request body may take to arrive (default 30 s).
    pub body_timeout: Duration,
    /// The most messages one JSON batch may hold (default 1000).
    pub max_batch: usize,
    /// Connections served at once (default 1024).
    pub max_connections: usize,
    /// On shutdown, how long requests in flight may take (default 5 s).
    /// Keep it above the longest `block_timeout` of the routes it feeds, so
    /// a publish waiting out backpressure can still tell its client which
    /// messages were admitted.
    pub shutdown_grace: Duration,
    /// Who may publish: every request is authenticated and every topic
    /// checked against the caller's grants. `None`: anyone, anywhere.
    pub security: Option<crate::auth::Live>,
    /// TLS on the listener; `None`: plain HTTP.
    pub tls: Option<Arc<http::tls::Tls>>,
}

impl Config {
    /// Default for [`Config::max_body`].
    pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
    /// Default for [`Config::body_timeout`].
    pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default for [`Config::max_batch`].
    pub const DEFAULT_MAX_BATCH: usize = 1000;

    /// An input named `name` on `listen` with default limits.
    pub fn new(name: impl Into<String>, listen: SocketAddr) -> Self {
        Self {
            name: name.into(),
            listen,
            max_body: Self::DEFAULT_MAX_BODY,
            header_timeout: http::Config::DEFAULT_HEADER_TIMEOUT,
            body_timeout: Self::DEFAULT_BODY_TIMEOUT,
            max_batch: Self::DEFAULT_MAX_BATCH,
            max_connections: http::Config::DEFAULT_MAX_CONNECTIONS,
            shutdown_grace: http::Config::DEFAULT_SHUTDOWN_GRACE,
            security: None,
            tls: None,
        }
    }
}

/// The metric families an HTTP input counts into. Register once per
/// registry and share (clone) among HTTP inputs. The two `input` families
/// are the ones every input kind uses: if another module registers them
/// first, build this struct from its families (the fields are public)
/// instead of calling [`Metrics::register`].
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `switchyard_input_messages_total{input}`.
    pub messages: IntCounterVec,
    /// `switchyard_input_rejected_total{input,reason}`.
    pub rejected: IntCounterVec,
    /// The HTTP listener families.
    pub http: http::Metrics,
    /// The request families, for the bridge.
    pub requests: RequestMetrics,
}

impl Metrics {
    /// The input families shared by every input kind, plus the listener
    /// families registered once per registry with
    /// [`http::Metrics::register`] and shared with the admin listener.
    pub fn new(inputs: &super::Metrics, http: &http::Metrics, requests: &RequestMetrics) -> Self {
        Self {
            messages: inputs.messages.clone(),
            rejected: inputs.rejected.clone(),
            http: http.clone(),
            requests: requests.clone(),
        }
    }
}

/// Why a publish was refused: the `reason` label, a bounded set.
#[derive(Debug, Clone, Copy)]
enum Reason {
    TooLarge,
    BadJson,
    BadTopic,
    BadAttribute,
    BadPriority,
    BadPayload,
    BadRequest,
    UnsupportedMediaType,
    Timeout,
    Backpressure,
    DiskFull,
    ShuttingDown,
    Unauthorized,
    Forbidden,
}

impl Reason {
    const ALL: [Self; 14] = [
        Self::TooLarge,
        Self::BadJson,
        Self::BadTopic,
        Self::BadAttribute,
        Self::BadPriority,
        Self::BadPayload,
        Self::BadRequest,
        Self::UnsupportedMediaType,
        Self::Timeout,
        Self::Backpressure,
        Self::DiskFull,
        Self::ShuttingDown,
        Self::Unauthorized,
        Self::Forbidden,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::BadJson => "bad_json",
            Self::BadTopic => "bad_topic",
            Self::BadAttribute => "bad_attribute",
            Self::BadPriority => "bad_priority",
            Self::BadPayload => "bad_payload",
            Self::BadRequest => "bad_request",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Timeout => "timeout",
            Self::Backpressure => "backpressure",
            Self::DiskFull => "disk_full",
            Self::ShuttingDown => "shutting_down",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
        }
    }

    /// The reason a failed request counts under, once. `None` for requests
    /// that were not a publish (404, 405) and for sink refusals, which are
    /// counted per message where the offer ends.
    fn of(e: &Error) -> Option<Self> {
        Some(match e {
            Error::PayloadTooLarge { .. } | Error::BatchTooLarge { .. } => Self::TooLarge,
            Error::InvalidJson(_) => Self::BadJson,
            Error::InvalidTopic { .. } => Self::BadTopic,
            Error::InvalidAttribute { .. } => Self::BadAttribute,
            Error::InvalidPriority { .. } => Self::BadPriority,
            Error::InvalidPayload { .. } => Self::BadPayload,
            Error::BadRequest(_) | Error::BodyRead(_) => Self::BadRequest,
            Error::UnsupportedMediaType { .. } => Self::UnsupportedMediaType,
            Error::BodyTimeout { .. } => Self::Timeout,
            Error::Unauthorized(_) => Self::Unauthorized,
            Error::Forbidden(_) | Error::TopicForbidden { .. } => Self::Forbidden,
            Error::NotFound { .. }
            | Error::DeadLettersDisabled
            | Error::DeadLetterNotFound { .. }
            | Error::RouteNotFound { .. }
            | Error::MethodNotAllowed { .. }
            | Error::Backpressure { .. }
            | Error::ShuttingDown { .. }
            | Error::TooManyRequests { .. }
            | Error::InvalidConfig(_)
            | Error::Conflict(_)
            | Error::NotReady
            | Error::Internal(_)
            | Error::Bind { .. }
            | Error::Request(_) => return None,
        })
    }
}

/// One input's counters, resolved when it is bound.
#[derive(Debug)]
struct Counters {
    messages: IntCounter,
    rejected: [IntCounter; Reason::ALL.len()],
}

impl Counters {
    fn new(metrics: &Metrics, input: &str) -> Self {
        Self {
            messages: metrics.messages.with_label_values(&[input]),
            rejected: Reason::ALL.map(|r| metrics.rejected.with_label_values(&[input, r.label()])),
        }
    }

    fn rejected(&self, reason: Reason) -> &IntCounter {
        &self.rejected[reason as usize]
    }
}

/// A bound HTTP input. [`HttpInput::run`] serves it until shutdown.
pub struct HttpInput {
    server: http::Server,
    name: Arc<str>,
    sink: Arc<dyn Sink>,
    limits: BodyLimits,
    max_batch: usize,
    counters: Arc<Counters>,
    requests: InputRequests,
    security: Option<crate::auth::Live>,
}

impl std::fmt::Debug for HttpInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpInput")
            .field("name", &self.name)
            .field("local_addr", &self.server.local_addr())
            .finish_non_exhaustive()
    }
}

impl HttpInput {
    /// Binds `config.listen`; messages will be offered to `sink`.
    ///
    /// # Errors
    /// [`Error::Bind`] when the address cannot be bound.
    pub async fn bind(
        config: Config,
        sink: Arc<dyn Sink>,
        metrics: &Metrics,
    ) -> Result<Self, Error> {
        let server_config = http::Config {
            name: config.name.clone(),
            listen: config.listen,
            max_connections: config.max_connections,
            header_timeout: config.header_timeout,
            shutdown_grace: config.shutdown_grace,
            tls: config.tls,
        };
        let server = http::Server::bind(server_config, &metrics.http).await?;
        Ok(Self {
            server,
            counters: Arc::new(Counters::new(metrics, &config.name)),
            requests: metrics.requests.for_input(&config.name),
            name: Arc::from(config.name),
            sink,
            limits: BodyLimits {
                max: config.max_body,
                timeout: config.body_timeout,
            },
            max_batch: config.max_batch.max(1),
            security: config.security,
        })
    }

    /// Starts an `http` input as its entry says, serving on a task of
    /// `ctx.tracker`.
    ///
    /// # Errors
    /// [`StartError::Http`] when it cannot listen.
    pub async fn start(
        name: &str,
        entry: &config::HttpInput,
        ctx: &super::Context,
    ) -> Result<super::Running, super::StartError> {
        let mut cfg = Config::new(name, entry.listen);
        cfg.max_body = entry.max_body;
        cfg.header_timeout = entry.header_timeout;
        cfg.body_timeout = entry.body_timeout;
        cfg.max_batch = entry.max_batch;
        cfg.shutdown_grace = ctx.shutdown_grace.max(ctx.block_timeout);
        cfg.security = Some(Arc::clone(&ctx.security));
        if let Some(settings) = &entry.tls {
            let (metrics, reloads) = &ctx.tls;
            let tls = http::tls::Tls::new(name, settings.clone(), metrics).map_err(|reason| {
                super::StartError::Tls {
                    input: name.to_owned(),
                    reason,
                }
            })?;
            reloads.register(&tls);
            cfg.tls = Some(tls);
        }
        let metrics = Metrics::new(&ctx.inputs, &ctx.http, &ctx.requests);
        let server = Self::bind(cfg, Arc::clone(&ctx.sink), &metrics)
            .await
            .map_err(|source| super::StartError::Http {
                input: name.to_owned(),
                source,
            })?;
        let addr = server.local_addr();
        let stop = ctx.stop.child_token();
        let until = stop.clone();
        let task = ctx.tracker.spawn(async move {
            server.run(until).await;
        });
        Ok(super::Running::new(Some(addr), stop, task))
    }

    /// The address bound (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Serves publishes until `shutdown` is cancelled. From then on, no
    /// new message is offered (`503 SHUTTING_DOWN`); requests in flight
    /// finish within the shutdown grace; the returned future resolves when
    /// every offer has completed, so the pipeline can drain after it.
    pub async fn run(self, shutdown: CancellationToken) -> Stopped {
        let publish = Arc::new(Publish {
            name: self.name,
            sink: self.sink,
            limits: self.limits,
            max_batch: self.max_batch,
            counters: self.counters,
            requests: self.requests,
            shutdown: shutdown.clone(),
            tasks: self.server.tasks().clone(),
            security: self.security,
        });
        self.server.run(publish, shutdown).await
    }
}

/// The request handler of a running input.
struct Publish {
    name: Arc<str>,
    sink: Arc<dyn Sink>,
    limits: BodyLimits,
    max_batch: usize,
    counters: Arc<Counters>,
    requests: InputRequests,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    security: Option<crate::auth::Live>,
}

/// A request's authenticated caller, with the settings that admitted it.
struct Gate {
    security: Arc<crate::auth::Security>,
    caller: crate::auth::Caller,
}

/// Forbidden topics named in one `403 TOPIC_FORBIDDEN` message.
const FORBIDDEN_SHOWN: usize = 3;

const PUBLISH: &str = "/v1/publish";
const PUBLISH_TOPIC: &str = "/v1/publish/";
const REQUEST_TOPIC: &str = "/v1/request/";
/// The number of frames of a bridged reply (its body is the last one).
const REPLY_FRAMES: &str = "x-switchyard-reply-frames";
const X_PRIORITY: &str = "x-priority";
const X_ATTR: &str = "x-attr-";

impl Handler for Publish {
    async fn handle(
        &self,
        request: Request<Incoming>,
        peer: &Peer,
    ) -> Result<Response<Body>, Error> {
        let result = self.route(request, peer).await;
        if let Err(e) = &result
            && let Some(reason) = Reason::of(e)
        {
            self.counters.rejected(reason).inc();
        }
        result
    }
}

fn not_allowed(method: &Method) -> Error {
    Error::MethodNotAllowed {
        method: method.clone(),
        allow: "POST",
    }
}

impl Publish {
    /// Authenticates the request, then serves its path.
    async fn route(
        &self,
        request: Request<Incoming>,
        peer: &Peer,
    ) -> Result<Response<Body>, Error> {
        let gate = match &self.security {
            Some(live) => {
                let security = live.load_full();
                let caller = security
                    .authenticate(
                        &self.name,
                        request.headers(),
                        request.uri().query(),
                        peer.client_cert.as_deref(),
                    )
                    .map_err(|f| Error::Unauthorized(f.to_string()))?;
                Some(Gate { security, caller })
            }
            None => None,
        };
        let gate = gate.as_ref();
        let path = request.uri().path();
        if path == PUBLISH {
            if request.method() != Method::POST {
                return Err(not_allowed(request.method()));
            }
            self.publish_json(request, peer, gate).await
        } else if let Some(topic) = path.strip_prefix(PUBLISH_TOPIC) {
            if request.method() != Method::POST {
                return Err(not_allowed(request.method()));
            }
            let topic = percent_decode(topic);
            self.publish_raw(topic, request, peer, gate).await
        } else if let Some(topic) = path.strip_prefix(REQUEST_TOPIC) {
            if request.method() != Method::POST {
                return Err(not_allowed(request.method()));
            }
            let topic = percent_decode(topic);
            self.request(topic, request, peer, gate).await
        } else {
            Err(Error::NotFound {
                path: path.to_owned(),
            })
        }
    }

    /// Refuses the whole batch when the caller may not publish to one of
    /// its topics (each forbidden message counted), naming the first few.
    fn permit(
        &self,
        gate: Option<&Gate>,
        topics: impl Iterator<Item = (String, Topic)>,
    ) -> Result<(), Error> {
        let Some(gate) = gate else {
            return Ok(());
        };
        if gate.caller.grants().is_open() {
            return Ok(());
        }
        let mut forbidden: Vec<(String, Topic)> = Vec::new();
        let mut count = 0;
        for (field, topic) in topics {
            if !gate.caller.grants().may_publish(topic.as_str()) {
                gate.security
                    .count_denied(&self.name, crate::auth::Action::Publish);
                count += 1;
                if forbidden.len() < FORBIDDEN_SHOWN {
                    forbidden.push((field, topic));
                }
            }
        }
        if forbidden.is_empty() {
            return Ok(());
        }
        let shown: Vec<String> = forbidden
            .iter()
            .map(|(field, topic)| format!("{field} {:?}", topic.as_str()))
            .collect();
        Err(Error::TopicForbidden {
            topics: shown.join(", "),
            more: count - forbidden.len(),
            principal: gate.caller.shown().to_owned(),
        })
    }

    async fn publish_raw(
        &self,
        topic: Result<Bytes, Error>,
        request: Request<Incoming>,
        peer: &Peer,
        gate: Option<&Gate>,
    ) -> Result<Response<Body>, Error> {
        let message = self.raw_message(topic, request, peer, gate).await?;
        self.offer(vec![message]).await
    }

    /// The message of a raw publish or request: the topic from the path,
    /// attributes and priority from the headers (checked before the body
    /// is read), the body as the payload.
    async fn raw_message(
        &self,
        topic: Result<Bytes, Error>,
        request: Request<Incoming>,
        peer: &Peer,
        gate: Option<&Gate>,
    ) -> Result<Message, Error> {
        let topic = Topic::new(topic?).map_err(|source| Error::InvalidTopic {
            field: "path".into(),
            source,
        })?;
        // Before the body is read: a forbidden publish costs no upload.
        self.permit(gate, std::iter::once(("path".to_owned(), topic.clone())))?;
        let (attributes, priority) = header_fields(request.headers())?;
        let payload = http::read_body(request.into_body(), &self.limits).await?;
        let mut message = Message::new(topic, payload, self.publisher(peer, gate));
        message.attributes = attributes;
        message.priority = priority;
        Ok(message)
    }

    /// The bridge: sends the body as a request through the routes and
    /// answers with the reply (`200`, the body is the reply's last frame,
    /// `X-Switchyard-Reply-Frames` says how many it had) or the request's
    /// error.
    async fn request(
        &self,
        topic: Result<Bytes, Error>,
        request: Request<Incoming>,
        peer: &Peer,
        gate: Option<&Gate>,
    ) -> Result<Response<Body>, Error> {
        let mut message = self.raw_message(topic, request, peer, gate).await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let pending = self.requests.start(Box::new(OneshotReplier(tx)));
        message.request = Some(pending.clone());
        let id = message.id;
        if let Err(e) = self.admit(vec![message]).await {
            // Refused before any route took it: answer the request way.
            let error = match e {
                Error::ShuttingDown { .. } => RequestError::ShuttingDown,
                Error::Backpressure { .. } => RequestError::Overloaded,
                other => return Err(other),
            };
            pending.fail(error.clone());
            return Err(Error::Request(error));
        }
        drop(pending);
        // Every request is answered: by a reply, a timeout, or an error as
        // its last copy is dropped.
        match rx.await {
            Ok(Answer::Reply(frames)) => {
                let count = frames.len();
                let body = frames.into_iter().last().unwrap_or_default();
                let mut response = Response::new(http_body_util::Full::new(body));
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                headers.insert(REPLY_FRAMES, HeaderValue::from(count));
                if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
                    headers.insert("x-switchyard-id", v);
                }
                Ok(response)
            }
            Ok(Answer::Error(e)) => Err(Error::Request(e)),
            Err(_) => Err(Error::Internal("the request was lost unanswered".into())),
        }
    }

    async fn publish_json(
        &self,
        request: Request<Incoming>,
        peer: &Peer,
        gate: Option<&Gate>,
    ) -> Result<Response<Body>, Error> {
        if let Some(content_type) = request.headers().get(header::CONTENT_TYPE)
            && !is_json(content_type)
        {
            return Err(Error::UnsupportedMediaType {
                found: String::from_utf8_lossy(content_type.as_bytes()).into_owned(),
                expected: "application/json",
            });
        }
        let body = http::read_body(request.into_body(), &self.limits).await?;
        let batch = json::decode(&body, &self.publisher(peer, gate), self.max_batch)?;
        let single = batch.len() == 1;
        self.permit(
            gate,
            batch.iter().enumerate().map(|(i, m)| {
                let field = if single {
                    "topic".to_owned()
                } else {
                    format!("messages[{i}].topic")
                };
                (field, m.topic.clone())
            }),
        )?;
        self.offer(batch).await
    }

    /// Who published: this input, the client's address, and the
    /// authenticated principal.
    fn publisher(&self, peer: &Peer, gate: Option<&Gate>) -> Publisher {
        Publisher::new(self.name.clone(), peer.name.clone())
            .with_principal(gate.and_then(|g| g.caller.principal().cloned()))
    }

    /// Offers `batch` to the sink and answers with the ids admitted.
    async fn offer(&self, batch: Vec<Message>) -> Result<Response<Body>, Error> {
        let ids = self.admit(batch).await?;
        Ok(http::ids_response(StatusCode::ACCEPTED, &ids))
    }

    /// Offers `batch` to the sink, counted, in a task that completes even
    /// if the client hangs up: the ids when every message was admitted,
    /// else the refusal with the ids admitted before it.
    async fn admit(&self, batch: Vec<Message>) -> Result<Vec<MessageId>, Error> {
        let count = batch.len();
        if self.shutdown.is_cancelled() {
            self.counters
                .rejected(Reason::ShuttingDown)
                .inc_by(count as u64);
            return Err(Error::ShuttingDown {
                admitted: Vec::new(),
                refused: count,
            });
        }
        let mut ids: Vec<MessageId> = batch.iter().map(|m| m.id).collect();
        let sink = self.sink.clone();
        let counters = self.counters.clone();
        // The offer is not cancel safe and a client may hang up while it
        // waits: run it to completion in a tracked task, which also counts.
        let offered = self
            .tasks
            .spawn(async move {
                let offered = sink.offer(batch, Wait::Bounded).await;
                let admitted = offered.admitted.min(count);
                counters.messages.inc_by(admitted as u64);
                if admitted < count {
                    let reason = match offered.refusal {
                        Some(Refusal::ShuttingDown) => Reason::ShuttingDown,
                        Some(Refusal::Backpressure { .. }) | None => Reason::Backpressure,
                        Some(Refusal::DiskFull { .. }) => Reason::DiskFull,
                    };
                    counters.rejected(reason).inc_by((count - admitted) as u64);
                }
                offered
            })
            .await
            .map_err(|e| Error::Internal(format!("the offer to the router failed: {e}")))?;
        let admitted = offered.admitted.min(count);
        ids.truncate(admitted);
        if admitted == count {
            return Ok(ids);
        }
        let refused = count - admitted;
        Err(match offered.refusal {
            Some(Refusal::ShuttingDown) => Error::ShuttingDown {
                admitted: ids,
                refused,
            },
            // The route that refused held the publish for its own
            // block_timeout: as long a pause is worth suggesting.
            // A full disk is backpressure to the client: try again later.
            Some(Refusal::Backpressure { retry_after } | Refusal::DiskFull { retry_after }) => {
                Error::Backpressure {
                    retry_after,
                    admitted: ids,
                    refused,
                }
            }
            // A sink that stops short without saying why: the default pause.
            None => Error::Backpressure {
                retry_after: crate::config::QueueConfig::DEFAULT_BLOCK_TIMEOUT,
                admitted: ids,
                refused,
            },
        })
    }
}

/// `X-Attr-*` attributes and the `X-Priority` of a raw publish.
fn header_fields(headers: &HeaderMap) -> Result<(Attributes, u8), Error> {
    let mut attributes = Attributes::new();
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix(X_ATTR) else {
            continue;
        };
        let invalid = |reason| Error::InvalidAttribute {
            field: name.as_str().to_owned(),
            reason,
        };
        if key.is_empty() {
            return Err(invalid("attribute names must not be empty"));
        }
        let value =
            std::str::from_utf8(value.as_bytes()).map_err(|_| invalid("value is not UTF-8"))?;
        if attributes
            .insert(key.to_owned(), value.to_owned())
            .is_some()
        {
            return Err(invalid("attribute given more than once"));
        }
    }
    let mut priorities = headers.get_all(X_PRIORITY).iter();
    let priority = match (priorities.next(), priorities.next()) {
        (None, _) => Message::DEFAULT_PRIORITY,
        (Some(value), None) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u8>().ok())
            .filter(|p| *p <= Message::MAX_PRIORITY)
            .ok_or_else(|| Error::InvalidPriority {
                field: "X-Priority".into(),
            })?,
        (Some(_), Some(_)) => {
            return Err(Error::InvalidPriority {
                field: "X-Priority (given more than once)".into(),
            });
        }
    };
    Ok((attributes, priority))
}

/// Whether a `Content-Type` names JSON (`application/json`, `...+json`).
fn is_json(value: &HeaderValue) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    let media = text.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case("application/json")
        || media
            .get(media.len().saturating_sub(5)..)
            .is_some_and(|tail| media.len() > 5 && tail.eq_ignore_ascii_case("+json"))
}

/// Percent-decodes a path segment (the topic of a raw publish).
fn percent_decode(raw: &str) -> Result<Bytes, Error> {
    if !raw.contains('%') {
        return Ok(Bytes::copy_from_slice(raw.as_bytes()));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
            match (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                _ => {
                    return Err(Error::BadRequest(
                        "path: malformed percent-encoding in the topic".into(),
                    ));
                }
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests;
