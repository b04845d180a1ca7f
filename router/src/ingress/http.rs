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
//! Answers:
//! - `202 Accepted`, `{"ids": ["<32 hex digits>", ...]}`: every message was
//!   admitted; the ids are in request order.
//! - `503 BACKPRESSURE` with `Retry-After`: a route with `when_full =
//!   "block"` stayed full for the block timeout. The error body's `ids`
//!   lists the messages admitted before the refusal (a prefix of the
//!   request); the rest were not accepted and may be retried. `503
//!   SHUTTING_DOWN` has the same shape.
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
//! `shutting_down`.

mod json;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use prometheus::{IntCounter, IntCounterVec};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Refusal, Sink};
use crate::http::{self, Body, BodyLimits, Error, Handler, Peer, Stopped};
use crate::metrics::Registry;
use crate::pipeline::{Attributes, Message, MessageId, Publisher, Topic};

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
    /// How long a publish waits for room in a full `block` route before
    /// answering 503 (default 1 s). Also the `Retry-After` it suggests.
    pub block_timeout: Duration,
    /// Connections served at once (default 1024).
    pub max_connections: usize,
    /// On shutdown, how long requests in flight may take (default 5 s).
    pub shutdown_grace: Duration,
}

impl Config {
    /// Default for [`Config::max_body`].
    pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
    /// Default for [`Config::body_timeout`].
    pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default for [`Config::max_batch`].
    pub const DEFAULT_MAX_BATCH: usize = 1000;
    /// Default for [`Config::block_timeout`].
    pub const DEFAULT_BLOCK_TIMEOUT: Duration = Duration::from_secs(1);

    /// An input named `name` on `listen` with default limits.
    pub fn new(name: impl Into<String>, listen: SocketAddr) -> Self {
        Self {
            name: name.into(),
            listen,
            max_body: Self::DEFAULT_MAX_BODY,
            header_timeout: http::Config::DEFAULT_HEADER_TIMEOUT,
            body_timeout: Self::DEFAULT_BODY_TIMEOUT,
            max_batch: Self::DEFAULT_MAX_BATCH,
            block_timeout: Self::DEFAULT_BLOCK_TIMEOUT,
            max_connections: http::Config::DEFAULT_MAX_CONNECTIONS,
            shutdown_grace: http::Config::DEFAULT_SHUTDOWN_GRACE,
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
}

impl Metrics {
    /// Registers the two input families; `http` are the listener families
    /// registered once per registry with [`http::Metrics::register`] and
    /// shared with the admin listener.
    pub fn register(registry: &Registry, http: &http::Metrics) -> Self {
        Self {
            messages: registry.counter_vec(
                "switchyard_input_messages_total",
                "Messages accepted from the wire, by input.",
                &["input"],
            ),
            rejected: registry.counter_vec(
                "switchyard_input_rejected_total",
                "Messages or requests an input refused, by input and reason.",
                &["input", "reason"],
            ),
            http: http.clone(),
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
    ShuttingDown,
}

impl Reason {
    const ALL: [Self; 11] = [
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
        Self::ShuttingDown,
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
            Self::ShuttingDown => "shutting_down",
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
            Error::NotFound { .. }
            | Error::MethodNotAllowed { .. }
            | Error::Backpressure { .. }
            | Error::ShuttingDown { .. }
            | Error::TooManyRequests { .. }
            | Error::NotReady
            | Error::Internal(_)
            | Error::Bind { .. } => return None,
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
    block_timeout: Duration,
    counters: Arc<Counters>,
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
        };
        let server = http::Server::bind(server_config, &metrics.http).await?;
        Ok(Self {
            server,
            counters: Arc::new(Counters::new(metrics, &config.name)),
            name: Arc::from(config.name),
            sink,
            limits: BodyLimits {
                max: config.max_body,
                timeout: config.body_timeout,
            },
            max_batch: config.max_batch.max(1),
            block_timeout: config.block_timeout,
        })
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
            block_timeout: self.block_timeout,
            counters: self.counters,
            shutdown: shutdown.clone(),
            tasks: self.server.tasks().clone(),
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
    block_timeout: Duration,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

const PUBLISH: &str = "/v1/publish";
const PUBLISH_TOPIC: &str = "/v1/publish/";
const X_PRIORITY: &str = "x-priority";
const X_ATTR: &str = "x-attr-";

impl Handler for Publish {
    async fn handle(
        &self,
        request: Request<Incoming>,
        peer: &Peer,
    ) -> Result<Response<Body>, Error> {
        let path = request.uri().path();
        let result = if path == PUBLISH {
            if request.method() != Method::POST {
                return Err(not_allowed(request.method()));
            }
            self.publish_json(request, peer).await
        } else if let Some(topic) = path.strip_prefix(PUBLISH_TOPIC) {
            if request.method() != Method::POST {
                return Err(not_allowed(request.method()));
            }
            let topic = percent_decode(topic);
            self.publish_raw(topic, request, peer).await
        } else {
            return Err(Error::NotFound {
                path: path.to_owned(),
            });
        };
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
    async fn publish_raw(
        &self,
        topic: Result<Bytes, Error>,
        request: Request<Incoming>,
        peer: &Peer,
    ) -> Result<Response<Body>, Error> {
        // Everything the headers decide is checked before the body is read.
        let topic = Topic::new(topic?).map_err(|source| Error::InvalidTopic {
            field: "path".into(),
            source,
        })?;
        let (attributes, priority) = header_fields(request.headers())?;
        let payload = http::read_body(request.into_body(), &self.limits).await?;
        let mut message = Message::new(topic, payload, self.publisher(peer));
        message.attributes = attributes;
        message.priority = priority;
        self.offer(vec![message]).await
    }

    async fn publish_json(
        &self,
        request: Request<Incoming>,
        peer: &Peer,
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
        let batch = json::decode(&body, &self.publisher(peer), self.max_batch)?;
        self.offer(batch).await
    }

    fn publisher(&self, peer: &Peer) -> Publisher {
        Publisher {
            input: self.name.clone(),
            peer: peer.name.clone(),
        }
    }

    /// Offers `batch` to the sink and answers with the ids admitted.
    async fn offer(&self, batch: Vec<Message>) -> Result<Response<Body>, Error> {
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
        let deadline = Instant::now() + self.block_timeout;
        let sink = self.sink.clone();
        let counters = self.counters.clone();
        // The offer is not cancel safe and a client may hang up while it
        // waits: run it to completion in a tracked task, which also counts.
        let offered = self
            .tasks
            .spawn(async move {
                let offered = sink.offer(batch, Some(deadline)).await;
                let admitted = offered.admitted.min(count);
                counters.messages.inc_by(admitted as u64);
                if admitted < count {
                    let reason = match offered.refusal {
                        Some(Refusal::ShuttingDown) => Reason::ShuttingDown,
                        Some(Refusal::Backpressure) | None => Reason::Backpressure,
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
            return Ok(http::ids_json(StatusCode::ACCEPTED, &ids));
        }
        let refused = count - admitted;
        Err(match offered.refusal {
            Some(Refusal::ShuttingDown) => Error::ShuttingDown {
                admitted: ids,
                refused,
            },
            Some(Refusal::Backpressure) | None => Error::Backpressure {
                retry_after: self.block_timeout,
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
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::{Notify, Semaphore};

    use super::*;
    use crate::http::testing::{DEADLINE, connect, metric, read_reply, request, send};
    use crate::ingress::Offered;

    /// A sink that admits up to `room` messages, then refuses with
    /// `refusal` (waiting for the deadline first, as a full `block` route
    /// does). With a `gate`, each offer first waits for a permit.
    struct FakeSink {
        received: Mutex<Vec<Message>>,
        room: AtomicUsize,
        refusal: Refusal,
        started: Notify,
        gate: Option<Semaphore>,
    }

    impl FakeSink {
        fn new(room: usize, refusal: Refusal) -> Arc<Self> {
            Arc::new(Self {
                received: Mutex::new(Vec::new()),
                room: AtomicUsize::new(room),
                refusal,
                started: Notify::new(),
                gate: None,
            })
        }

        fn open() -> Arc<Self> {
            Self::new(usize::MAX, Refusal::Backpressure)
        }

        fn received(&self) -> Vec<Message> {
            self.received.lock().expect("sink lock").clone()
        }
    }

    impl Sink for FakeSink {
        fn offer(
            &self,
            batch: Vec<Message>,
            deadline: Option<Instant>,
        ) -> Pin<Box<dyn Future<Output = Offered> + Send + '_>> {
            Box::pin(async move {
                self.started.notify_one();
                if let Some(gate) = &self.gate {
                    gate.acquire().await.expect("gate open").forget();
                }
                let mut admitted = 0;
                for message in batch {
                    let took = self
                        .room
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(1));
                    if took.is_err() {
                        if self.refusal == Refusal::Backpressure
                            && let Some(deadline) = deadline
                        {
                            tokio::time::sleep_until(deadline).await;
                        }
                        return Offered {
                            admitted,
                            refusal: Some(self.refusal),
                        };
                    }
                    self.received.lock().expect("sink lock").push(message);
                    admitted += 1;
                }
                Offered {
                    admitted,
                    refusal: None,
                }
            })
        }
    }

    struct Running {
        addr: SocketAddr,
        registry: Registry,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<Stopped>,
    }

    impl Running {
        fn metric(&self, series: &str) -> f64 {
            metric(&self.registry.encode(), series).unwrap_or(0.0)
        }

        async fn stop(self) -> Stopped {
            self.shutdown.cancel();
            tokio::time::timeout(DEADLINE, self.task)
                .await
                .expect("input stops")
                .expect("input task")
        }
    }

    async fn start(sink: Arc<FakeSink>, tweak: impl FnOnce(&mut Config)) -> Running {
        let registry = Registry::new();
        let metrics = Metrics::register(&registry, &http::Metrics::register(&registry));
        let mut config = Config::new("api", "127.0.0.1:0".parse().expect("address"));
        tweak(&mut config);
        let input = HttpInput::bind(config, sink, &metrics).await.expect("bind");
        let addr = input.local_addr();
        assert_ne!(addr.port(), 0);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(input.run(shutdown.clone()));
        Running {
            addr,
            registry,
            shutdown,
            task,
        }
    }

    fn ids(reply: &serde_json::Value) -> Vec<String> {
        reply["ids"]
            .as_array()
            .expect("ids array")
            .iter()
            .map(|id| id.as_str().expect("id string").to_owned())
            .collect()
    }

    #[tokio::test]
    async fn raw_publish_takes_body_attributes_and_priority() {
        let sink = FakeSink::open();
        let running = start(sink.clone(), |_| {}).await;
        let reply = send(
            running.addr,
            &request(
                "POST",
                "/v1/publish/sensors.line%31.temp",
                &[
                    ("X-Attr-Site", "42"),
                    ("x-attr-Unit", "°C"),
                    ("X-Priority", "7"),
                ],
                b"21.5",
            ),
        )
        .await;
        assert_eq!(reply.status, 202, "{:?}", reply);
        let got = sink.received();
        assert_eq!(got.len(), 1);
        let m = &got[0];
        assert_eq!(ids(&reply.json()), vec![m.id.to_string()]);
        assert_eq!(m.topic.as_str(), "sensors.line1.temp");
        assert_eq!(&m.payload[..], b"21.5");
        assert_eq!(m.priority, 7);
        assert_eq!(m.attributes.len(), 2);
        assert_eq!(m.attributes["site"], "42");
        assert_eq!(m.attributes["unit"], "°C");
        assert_eq!(&*m.publisher.input, "api");
        assert!(m.publisher.peer.starts_with("127.0.0.1:"));
        assert_eq!(
            running.metric(r#"switchyard_input_messages_total{input="api"}"#),
            1.0
        );
        assert_eq!(
            running.metric(r#"switchyard_http_requests_total{listener="api",status="202"}"#),
            1.0
        );
        assert_eq!(running.stop().await.connections_cut, 0);
    }

    #[tokio::test]
    async fn json_publish_single_and_batch() {
        let sink = FakeSink::open();
        let running = start(sink.clone(), |_| {}).await;
        let json = [("Content-Type", "application/json; charset=utf-8")];
        let reply = send(
            running.addr,
            &request(
                "POST",
                "/v1/publish",
                &json,
                br#"{"topic":"a.b","payload":{"v":1},"attributes":{"k":"v"},"priority":2}"#,
            ),
        )
        .await;
        assert_eq!(reply.status, 202, "{:?}", reply);
        let single = ids(&reply.json());

        let reply = send(
            running.addr,
            &request(
                "POST",
                "/v1/publish",
                &[],
                br#"{"messages":[{"topic":"x","payload":"one"},{"topic":"y","payload_base64":"dHdv"},{"topic":"z"}]}"#,
            ),
        )
        .await;
        assert_eq!(reply.status, 202, "{:?}", reply);
        let batch = ids(&reply.json());

        let got = sink.received();
        let got_ids: Vec<String> = got.iter().map(|m| m.id.to_string()).collect();
        assert_eq!(got_ids, [single, batch].concat());
        assert_eq!(&got[0].payload[..], br#"{"v":1}"#);
        assert_eq!(got[0].priority, 2);
        assert_eq!(got[0].attributes["k"], "v");
        let topics: Vec<&str> = got.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(topics, ["a.b", "x", "y", "z"]);
        assert_eq!(&got[1].payload[..], b"one");
        assert_eq!(&got[2].payload[..], b"two");
        assert!(got[3].payload.is_empty());
        assert_eq!(
            running.metric(r#"switchyard_input_messages_total{input="api"}"#),
            4.0
        );
        running.stop().await;
    }

    #[tokio::test]
    async fn bad_requests_get_json_errors_and_are_counted() {
        let sink = FakeSink::open();
        let running = start(sink.clone(), |c| c.max_batch = 2).await;
        let json = [("Content-Type", "application/json")];
        let cases: Vec<(Vec<u8>, u16, &str)> = vec![
            (
                request("POST", "/v1/publish", &json, b"{\"topic\":"),
                400,
                "INVALID_JSON",
            ),
            (
                request("POST", "/v1/publish", &json, br#"{"topic":"a..b"}"#),
                400,
                "INVALID_TOPIC",
            ),
            (
                request("POST", "/v1/publish/a.*", &[], b"x"),
                400,
                "INVALID_TOPIC",
            ),
            (
                request("POST", "/v1/publish/a%zz", &[], b"x"),
                400,
                "BAD_REQUEST",
            ),
            (
                request("POST", "/v1/publish/a", &[("X-Priority", "10")], b"x"),
                400,
                "INVALID_PRIORITY",
            ),
            (
                request("POST", "/v1/publish/a", &[("X-Attr-", "x")], b"x"),
                400,
                "INVALID_ATTRIBUTE",
            ),
            (
                request(
                    "POST",
                    "/v1/publish",
                    &json,
                    br#"{"topic":"a","attributes":{"n":1}}"#,
                ),
                400,
                "INVALID_ATTRIBUTE",
            ),
            (
                request(
                    "POST",
                    "/v1/publish",
                    &json,
                    br#"{"messages":[{"topic":"a"},{"topic":"a"},{"topic":"a"}]}"#,
                ),
                413,
                "BATCH_TOO_LARGE",
            ),
            (
                request(
                    "POST",
                    "/v1/publish",
                    &[("Content-Type", "text/plain")],
                    b"{}",
                ),
                415,
                "UNSUPPORTED_MEDIA_TYPE",
            ),
            (
                request("GET", "/v1/publish", &[], b""),
                405,
                "METHOD_NOT_ALLOWED",
            ),
            (request("POST", "/v2/elsewhere", &[], b""), 404, "NOT_FOUND"),
        ];
        for (raw, status, code) in cases {
            let reply = send(running.addr, &raw).await;
            let what = String::from_utf8_lossy(&raw[..raw.len().min(60)]).into_owned();
            assert_eq!(reply.status, status, "{what}: {reply:?}");
            assert_eq!(
                reply.header("content-type"),
                Some("application/json"),
                "{what}"
            );
            let body = reply.json();
            assert_eq!(body["error"]["code"], code, "{what}: {body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
            if status == 405 {
                assert_eq!(reply.header("allow"), Some("POST"));
            }
        }
        assert!(sink.received().is_empty());
        let rejected = |reason: &str| {
            running.metric(&format!(
                r#"switchyard_input_rejected_total{{input="api",reason="{reason}"}}"#
            ))
        };
        assert_eq!(rejected("bad_json"), 1.0);
        assert_eq!(rejected("bad_topic"), 2.0);
        assert_eq!(rejected("bad_request"), 1.0);
        assert_eq!(rejected("bad_priority"), 1.0);
        assert_eq!(rejected("bad_attribute"), 2.0);
        assert_eq!(rejected("too_large"), 1.0);
        assert_eq!(rejected("unsupported_media_type"), 1.0);
        assert_eq!(
            running.metric(r#"switchyard_http_requests_total{listener="api",status="400"}"#),
            7.0
        );
        assert_eq!(
            running.metric(r#"switchyard_input_messages_total{input="api"}"#),
            0.0
        );
        running.stop().await;
    }

    #[tokio::test]
    async fn huge_content_length_is_refused_without_reading_the_body() {
        let sink = FakeSink::open();
        let running = start(sink.clone(), |c| c.max_body = 1024).await;
        let stream = connect(running.addr).await;
        let (mut reader, mut writer) = stream.into_split();
        // Claim 10 GiB, then keep sending (up to 256 MiB) while reading the
        // answer: the server must answer without waiting for the body.
        const PUMP: usize = 256 << 20;
        let pump = tokio::spawn(async move {
            let head = "POST /v1/publish/big HTTP/1.1\r\nHost: test\r\nContent-Length: 10737418240\r\n\r\n";
            writer.write_all(head.as_bytes()).await.expect("head");
            let chunk = vec![0u8; 64 * 1024];
            let mut sent = 0;
            while sent < PUMP {
                match writer.write_all(&chunk).await {
                    Ok(()) => sent += chunk.len(),
                    Err(_) => break,
                }
            }
            sent
        });
        let reply = read_reply(&mut reader).await;
        assert_eq!(reply.status, 413, "{reply:?}");
        assert_eq!(reply.json()["error"]["code"], "PAYLOAD_TOO_LARGE");
        assert_eq!(reply.header("connection"), Some("close"));
        drop(reader);
        let sent = tokio::time::timeout(DEADLINE, pump)
            .await
            .expect("the server closed the connection, ending the pump")
            .expect("pump task");
        assert!(sent < PUMP, "the server kept reading the body");
        assert!(sink.received().is_empty());
        assert_eq!(
            running.metric(r#"switchyard_input_rejected_total{input="api",reason="too_large"}"#),
            1.0
        );
        running.stop().await;
    }

    #[tokio::test]
    async fn expect_continue_with_a_huge_body_gets_413_not_100() {
        let sink = FakeSink::open();
        let running = start(sink.clone(), |c| c.max_body = 1024).await;
        let reply = send(
            running.addr,
            b"POST /v1/publish/big HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: 10737418240\r\n\r\n",
        )
        .await;
        assert_eq!(reply.status, 413, "{reply:?}");
        running.stop().await;
    }

    #[tokio::test]
    async fn chunked_body_over_the_limit_is_refused_while_streaming() {
        let sink = FakeSink::open();
        let running = start(sink.clone(), |c| c.max_body = 1024).await;
        // No Content-Length: the limit can only be enforced as chunks arrive.
        let mut raw =
            b"POST /v1/publish/big HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        for _ in 0..3 {
            raw.extend_from_slice(b"200\r\n");
            raw.extend_from_slice(&[b'x'; 0x200]);
            raw.extend_from_slice(b"\r\n");
        }
        let reply = send(running.addr, &raw).await;
        assert_eq!(reply.status, 413, "{reply:?}");
        assert_eq!(reply.json()["error"]["code"], "PAYLOAD_TOO_LARGE");
        assert!(sink.received().is_empty());

        // A chunked body within the limit is accepted whole.
        let mut raw = b"POST /v1/publish/ok HTTP/1.1\r\nHost: test\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
        for part in [&b"hello "[..], b"chunked ", b"world"] {
            raw.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            raw.extend_from_slice(part);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"0\r\n\r\n");
        let reply = send(running.addr, &raw).await;
        assert_eq!(reply.status, 202, "{reply:?}");
        assert_eq!(&sink.received()[0].payload[..], b"hello chunked world");
        running.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn slow_headers_are_cut_at_the_header_timeout() {
        let sink = FakeSink::open();
        let running = start(sink.clone(), |c| c.header_timeout = Duration::from_secs(2)).await;
        let stream = connect(running.addr).await;
        let (mut reader, mut writer) = stream.into_split();
        // A slowloris client: one header byte every 100 ms, never done.
        let mut head = b"POST /v1/publish/a HTTP/1.1\r\nHost: test\r\n".to_vec();
        head.extend_from_slice(b"X-Attr-Padding: ");
        head.extend_from_slice(&[b'p'; 400]);
        let total = head.len();
        let trickle = tokio::spawn(async move {
            let mut sent = 0;
            for byte in head {
                if writer.write_all(&[byte]).await.is_err() {
                    break;
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            sent
        });
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(DEADLINE, reader.read(&mut buf))
            .await
            .expect("the server closes the connection");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "expected the connection closed without a response, got {read:?}"
        );
        drop(reader);
        let sent = tokio::time::timeout(DEADLINE, trickle)
            .await
            .expect("trickle ends")
            .expect("trickle task");
        assert!(sent < total, "the whole head was sent ({sent} bytes)");
        assert_eq!(
            running.metric(
                r#"switchyard_http_connection_errors_total{listener="api",reason="header_timeout"}"#
            ),
            1.0
        );
        assert!(sink.received().is_empty());
        running.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn slow_body_gets_408() {
        let sink = FakeSink::open();
        let running = start(sink.clone(), |c| c.body_timeout = Duration::from_secs(3)).await;
        let mut stream = connect(running.addr).await;
        stream
            .write_all(
                b"POST /v1/publish/a HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\nhalf",
            )
            .await
            .expect("write");
        let reply = read_reply(&mut stream).await;
        assert_eq!(reply.status, 408, "{reply:?}");
        assert_eq!(reply.json()["error"]["code"], "REQUEST_TIMEOUT");
        assert!(sink.received().is_empty());
        assert_eq!(
            running.metric(r#"switchyard_input_rejected_total{input="api",reason="timeout"}"#),
            1.0
        );
        running.stop().await;
    }

    #[tokio::test]
    async fn backpressure_answers_503_with_retry_after_and_the_admitted_ids() {
        // Room for one message; the sink then holds out until the deadline.
        let sink = FakeSink::new(1, Refusal::Backpressure);
        let running = start(sink.clone(), |c| {
            c.block_timeout = Duration::from_millis(50)
        })
        .await;
        let reply = send(
            running.addr,
            &request(
                "POST",
                "/v1/publish",
                &[],
                br#"{"messages":[{"topic":"a"},{"topic":"b"},{"topic":"c"}]}"#,
            ),
        )
        .await;
        assert_eq!(reply.status, 503, "{reply:?}");
        assert_eq!(reply.header("retry-after"), Some("1"));
        let body = reply.json();
        assert_eq!(body["error"]["code"], "BACKPRESSURE");
        let got = sink.received();
        assert_eq!(got.len(), 1);
        assert_eq!(ids(&body["error"]), vec![got[0].id.to_string()]);
        assert_eq!(
            running.metric(r#"switchyard_input_messages_total{input="api"}"#),
            1.0
        );
        assert_eq!(
            running.metric(r#"switchyard_input_rejected_total{input="api",reason="backpressure"}"#),
            2.0
        );

        // A raw publish that gets nothing in: 503 with an empty id list.
        let reply = send(running.addr, &request("POST", "/v1/publish/d", &[], b"x")).await;
        assert_eq!(reply.status, 503, "{reply:?}");
        assert_eq!(reply.json()["error"]["ids"], serde_json::json!([]));
        assert_eq!(
            running.metric(r#"switchyard_http_requests_total{listener="api",status="503"}"#),
            2.0
        );
        running.stop().await;
    }

    #[tokio::test]
    async fn a_sink_shutting_down_answers_503_shutting_down() {
        let sink = FakeSink::new(0, Refusal::ShuttingDown);
        let running = start(sink.clone(), |_| {}).await;
        let reply = send(running.addr, &request("POST", "/v1/publish/a", &[], b"x")).await;
        assert_eq!(reply.status, 503, "{reply:?}");
        assert_eq!(reply.header("retry-after"), None);
        assert_eq!(reply.json()["error"]["code"], "SHUTTING_DOWN");
        assert_eq!(
            running
                .metric(r#"switchyard_input_rejected_total{input="api",reason="shutting_down"}"#),
            1.0
        );
        running.stop().await;
    }

    #[tokio::test]
    async fn shutdown_lets_the_request_in_flight_finish_then_stops_accepting() {
        let mut sink = FakeSink::new(usize::MAX, Refusal::Backpressure);
        Arc::get_mut(&mut sink).expect("sole owner").gate = Some(Semaphore::new(0));
        let running = start(sink.clone(), |_| {}).await;
        let addr = running.addr;
        let in_flight = tokio::spawn(async move {
            send(addr, &request("POST", "/v1/publish/a", &[], b"last")).await
        });
        // Once the offer is under way, shut down, then let the offer finish.
        tokio::time::timeout(DEADLINE, sink.started.notified())
            .await
            .expect("offer starts");
        running.shutdown.cancel();
        sink.gate.as_ref().expect("gate").add_permits(1);
        let reply = tokio::time::timeout(DEADLINE, in_flight)
            .await
            .expect("reply in time")
            .expect("client task");
        assert_eq!(reply.status, 202, "{reply:?}");
        assert_eq!(sink.received().len(), 1);
        let stopped = tokio::time::timeout(DEADLINE, running.task)
            .await
            .expect("input stops")
            .expect("input task");
        assert_eq!(stopped.connections_cut, 0);
        // The listener is gone.
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[test]
    fn content_types() {
        for (value, json) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/cloudevents+json", true),
            ("+json", false),
            ("text/plain", false),
            ("application/jsonx", false),
        ] {
            assert_eq!(is_json(&HeaderValue::from_static(value)), json, "{value}");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a.b").expect("plain"), "a.b");
        assert_eq!(percent_decode("a%2Eb%20").expect("escaped"), "a.b ");
        assert!(percent_decode("a%2").is_err());
        assert!(percent_decode("a%g0").is_err());
    }
}
