//! Requests: messages whose sender waits for exactly one answer.
//!
//! A request input (`zmq-router`, or the HTTP bridge `POST /v1/request`)
//! puts a [`Request`] on each message it accepts. The message then travels
//! like any other (route match, queue, plugins, outputs), and whoever ends
//! its journey answers it once:
//!
//! - a `zmq-dealer` output, with the service's reply, or with
//!   [`RequestError::Timeout`] when no reply came before the route's
//!   `request_timeout`, or [`RequestError::NoService`];
//! - a filter plugin, answering it itself or rejecting it
//!   ([`RequestError::Rejected`]);
//! - the pipeline, when it matches no route ([`RequestError::NoRoute`]) or
//!   is refused ([`RequestError::Overloaded`], [`RequestError::ShuttingDown`]).
//!
//! The first answer wins; later ones are discarded (the caller counts
//! them). A request dropped by every holder without an answer (a queue
//! drop, a plugin failure, an output that does not reply) answers itself
//! with [`RequestError::Dropped`] as its last copy goes, so a client never
//! waits for an answer nobody will give.
//!
//! Errors reach ZeroMQ clients as two frames, `switchyard.error` and a JSON
//! body ([`RequestError::frames`]), and HTTP clients as the router's usual
//! JSON error (`crate::http::Error::Request`) with the same code:
//!
//! ```json
//! {"error":{"code":"REQUEST_TIMEOUT","message":"no reply within 2s (route \"status\")"}}
//! ```

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec};
use tokio::time::Instant;

use crate::metrics::Registry;

/// The first frame of every error reply to a ZeroMQ client.
pub const ERROR_FRAME: &[u8] = b"switchyard.error";

/// The frames of a reply: the envelope module's frame list.
use super::Frames;

/// Why a request got an error instead of a reply. Each variant has a
/// stable [`code`](RequestError::code); `crate::http::Error::Request` gives
/// its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No reply came within the route's `request_timeout` (counting from
    /// when the router accepted the request). `REQUEST_TIMEOUT`, 504.
    #[error("no reply within {timeout:?} (route {route:?})")]
    Timeout {
        /// The route whose timeout ran out.
        route: Arc<str>,
        /// That timeout.
        timeout: Duration,
    },
    /// No service of the output could take the request: none connected, or
    /// every one out of rotation. `NO_SERVICE`, 503.
    #[error("no service available on output {output:?}")]
    NoService {
        /// The output.
        output: Arc<str>,
    },
    /// The service holding the request went away before replying; it may or
    /// may not have acted on it. `SERVICE_FAILED`, 502.
    #[error("the service on output {output:?} went away before replying")]
    ServiceFailed {
        /// The output.
        output: Arc<str>,
    },
    /// No route matches the request's topic (and attributes).
    /// `ROUTE_NOT_FOUND`, 404.
    #[error("no route matches topic {topic:?}")]
    NoRoute {
        /// The request's topic.
        topic: String,
    },
    /// A filter plugin refused the request. `REJECTED`, 403.
    #[error("rejected by plugin {plugin:?}: {reason}")]
    Rejected {
        /// The plugin.
        plugin: Arc<str>,
        /// Its reason (its own text, or `filtered`).
        reason: String,
    },
    /// A `block` route stayed full until the input's deadline.
    /// `BACKPRESSURE`, 503.
    #[error("the router is overloaded: a route stayed full")]
    Overloaded,
    /// The router is shutting down. `SHUTTING_DOWN`, 503.
    #[error("the router is shutting down")]
    ShuttingDown,
    /// The request's principal may not publish to its topic (the ACL).
    /// `TOPIC_FORBIDDEN`, 403.
    #[error("{principal:?} may not publish to {topic:?}")]
    Forbidden {
        /// The request's topic.
        topic: String,
        /// Its principal (`anonymous` without one).
        principal: String,
    },
    /// The request could not be decoded (its frames do not fit the input's
    /// envelope, or its topic or attributes are invalid). `BAD_REQUEST`,
    /// 400.
    #[error("{reason}")]
    BadRequest {
        /// What is wrong with it.
        reason: String,
    },
    /// The router dropped the request without an answer: `reason` is the
    /// route's drop reason (`queue_full`, `plugin_error`, ...) or
    /// `no_reply` when no reason was recorded (it went only to outputs that
    /// do not reply, or a plugin or output failed on it).
    /// `DROPPED`, 503.
    #[error("the request was dropped ({reason})")]
    Dropped {
        /// Why.
        reason: &'static str,
    },
}

impl RequestError {
    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "REQUEST_TIMEOUT",
            Self::NoService { .. } => "NO_SERVICE",
            Self::ServiceFailed { .. } => "SERVICE_FAILED",
            Self::NoRoute { .. } => "ROUTE_NOT_FOUND",
            Self::Rejected { .. } => "REJECTED",
            Self::Overloaded => "BACKPRESSURE",
            Self::ShuttingDown => "SHUTTING_DOWN",
            Self::Dropped { .. } => "DROPPED",
            Self::BadRequest { .. } => "BAD_REQUEST",
            Self::Forbidden { .. } => "TOPIC_FORBIDDEN",
        }
    }

    /// The `outcome` label of `switchyard_request_outcomes_total`.
    fn outcome(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "timeout",
            Self::NoService { .. } => "no_service",
            Self::ServiceFailed { .. } => "service_failed",
            Self::NoRoute { .. } => "no_route",
            Self::Rejected { .. } => "rejected",
            Self::Overloaded => "overloaded",
            Self::ShuttingDown => "shutting_down",
            Self::Dropped { .. } => "dropped",
            Self::BadRequest { .. } => "bad_request",
            Self::Forbidden { .. } => "forbidden",
        }
    }

    /// The JSON body: `{"error":{"code":...,"message":...}}`.
    pub fn json(&self) -> String {
        super::ErrorBody::new(self.code(), &self.to_string()).to_json()
    }

    /// The error as a ZeroMQ reply: [`ERROR_FRAME`], then the JSON body.
    pub fn frames(&self) -> Frames {
        smallvec::smallvec![Bytes::from_static(ERROR_FRAME), Bytes::from(self.json())]
    }
}

/// A request's one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The reply frames, as the service (or plugin) gave them.
    Reply(Frames),
    /// Why there is no reply.
    Error(RequestError),
}

impl Answer {
    /// The answer as ZeroMQ frames: a reply as it is, an error as
    /// [`RequestError::frames`].
    pub fn into_frames(self) -> Frames {
        match self {
            Self::Reply(frames) => frames,
            Self::Error(e) => e.frames(),
        }
    }
}

/// Who answered, for `switchyard_request_outcomes_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A service, through an output.
    Service,
    /// A plugin, itself.
    Plugin,
}

/// Where a request's answer goes: set by the input that accepted it.
pub trait Replier: Send + 'static {
    /// Delivers the answer to the waiting client. Must not block.
    fn reply(self: Box<Self>, answer: Answer);
}

/// The request metrics, shared by every input, route and output.
#[derive(Clone, Debug)]
pub struct RequestMetrics {
    requests: IntCounterVec,
    timeouts: IntCounterVec,
    late: IntCounterVec,
    pending: IntGaugeVec,
    duration: HistogramVec,
}

impl RequestMetrics {
    /// Registers the request families.
    pub fn register(registry: &Registry) -> Self {
        Self {
            requests: registry.counter_vec(
                "switchyard_request_outcomes_total",
                "Requests answered, by input and outcome (replied, answered_by_plugin, timeout, no_service, service_failed, no_route, rejected, overloaded, shutting_down, dropped).",
                &["input", "outcome"],
            ),
            timeouts: registry.counter_vec(
                "switchyard_request_timeouts_total",
                "Requests answered REQUEST_TIMEOUT, by route.",
                &["route"],
            ),
            late: registry.counter_vec(
                "switchyard_request_late_replies_total",
                "Replies discarded because their request was already answered (timed out, or answered by another route), by output.",
                &["output"],
            ),
            pending: registry.gauge_vec(
                "switchyard_request_pending",
                "Requests accepted and not answered yet, by input.",
                &["input"],
            ),
            duration: registry.histogram_vec(
                "switchyard_request_duration_seconds",
                "Time from accepting a request to answering it, by input.",
                &["input"],
                crate::metrics::latency_buckets(),
            ),
        }
    }

    /// Counts a reply that came after its request was answered.
    pub fn late_reply(&self, output: &str) {
        self.late.with_label_values(&[output]).inc();
    }

    /// The handle an input creates its requests with.
    pub fn for_input(&self, input: &str) -> InputRequests {
        InputRequests(Arc::new(InputShared {
            input: Arc::from(input),
            metrics: self.clone(),
            pending: self.pending.with_label_values(&[input]),
            replied: self.requests.with_label_values(&[input, "replied"]),
            answered_by_plugin: self
                .requests
                .with_label_values(&[input, "answered_by_plugin"]),
            duration: self.duration.with_label_values(&[input]),
        }))
    }
}

#[derive(Debug)]
struct InputShared {
    input: Arc<str>,
    metrics: RequestMetrics,
    pending: prometheus::IntGauge,
    /// The outcomes of nearly every request, resolved once.
    replied: prometheus::IntCounter,
    answered_by_plugin: prometheus::IntCounter,
    duration: prometheus::Histogram,
}

/// Creates [`Request`]s for one input. Cheap to clone.
#[derive(Clone, Debug)]
pub struct InputRequests(Arc<InputShared>);

impl InputRequests {
    /// A request accepted now, answered through `replier`.
    pub fn start(&self, replier: Box<dyn Replier>) -> Request {
        self.0.pending.inc();
        Request {
            shared: Arc::new(Shared {
                replier: Mutex::new(Some(replier)),
                dropped: OnceLock::new(),
                accepted: Instant::now(),
                input: Arc::clone(&self.0),
            }),
            route: None,
        }
    }

    /// Requests of this input not answered yet.
    pub fn pending(&self) -> i64 {
        self.0.pending.get()
    }
}

struct Shared {
    /// Taken by the first answer.
    replier: Mutex<Option<Box<dyn Replier>>>,
    /// Why a copy was dropped, for the answer once every copy is gone.
    dropped: OnceLock<&'static str>,
    accepted: Instant,
    input: Arc<InputShared>,
}

impl Shared {
    /// Answers if nobody has; false when somebody already had.
    fn finish(&self, answer: Answer, source: Source, route: Option<&RouteTag>) -> bool {
        let replier = self
            .replier
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(replier) = replier else {
            return false;
        };
        let input = &self.input;
        let m = &input.metrics;
        match (&answer, source) {
            (Answer::Reply(_), Source::Service) => input.replied.inc(),
            (Answer::Reply(_), Source::Plugin) => input.answered_by_plugin.inc(),
            (Answer::Error(e), _) => {
                m.requests
                    .with_label_values(&[&*input.input, e.outcome()])
                    .inc();
                if let (RequestError::Timeout { .. }, Some(tag)) = (e, route) {
                    m.timeouts.with_label_values(&[&*tag.name]).inc();
                }
            }
        }
        input
            .duration
            .observe(self.accepted.elapsed().as_secs_f64());
        input.pending.dec();
        replier.reply(answer);
        true
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Every holder let go without answering.
        let reason = self.dropped.get().copied().unwrap_or("no_reply");
        let error = RequestError::Dropped { reason };
        self.finish(Answer::Error(error), Source::Service, None);
    }
}

/// The route a copy of a request travels, and its timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteTag {
    /// The route's name.
    pub name: Arc<str>,
    /// Its `request_timeout`.
    pub timeout: Duration,
}

/// The waiting side of a message: answer it once with
/// [`Request::answer`] or [`Request::fail`]. Cloned with the message (one
/// copy per matching route); every copy answers the same client, and the
/// first answer wins.
#[derive(Clone)]
pub struct Request {
    shared: Arc<Shared>,
    /// Set by the route worker that carries this copy.
    route: Option<RouteTag>,
}

impl Request {
    /// Answers with `frames` from `source`. False when the request was
    /// already answered (the caller counts that reply as late).
    pub fn answer(&self, frames: Frames, source: Source) -> bool {
        self.shared
            .finish(Answer::Reply(frames), source, self.route.as_ref())
    }

    /// Answers with `error`. False when the request was already answered.
    pub fn fail(&self, error: RequestError) -> bool {
        self.shared
            .finish(Answer::Error(error), Source::Service, self.route.as_ref())
    }

    /// True once somebody answered.
    pub fn is_answered(&self) -> bool {
        self.shared
            .replier
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// Records why this copy is being dropped (a route's drop reason, e.g.
    /// `queue_full`): if no other copy answers, the client's
    /// [`RequestError::Dropped`] names the first reason recorded.
    pub fn note_drop(&self, reason: &'static str) {
        let _ = self.shared.dropped.set(reason);
    }

    /// Marks this copy as travelling `route`, whose timeout then applies.
    pub fn set_route(&mut self, route: RouteTag) {
        self.route = Some(route);
    }

    /// When the router accepted the request.
    pub fn accepted(&self) -> Instant {
        self.shared.accepted
    }

    /// When this copy's route timeout runs out; `None` before a route took
    /// it.
    pub fn deadline(&self) -> Option<Instant> {
        self.route
            .as_ref()
            .map(|r| self.shared.accepted + r.timeout)
    }

    /// The [`RequestError::Timeout`] of this copy's route; `None` before a
    /// route took it.
    pub fn timeout_error(&self) -> Option<RequestError> {
        self.route.as_ref().map(|r| RequestError::Timeout {
            route: Arc::clone(&r.name),
            timeout: r.timeout,
        })
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("input", &self.shared.input.input)
            .field("route", &self.route)
            .field("answered", &self.is_answered())
            .finish()
    }
}

impl PartialEq for Request {
    /// Two copies of one request are equal.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl Eq for Request {}

/// A [`Replier`] for tests and the HTTP bridge: the answer arrives on a
/// oneshot channel.
#[derive(Debug)]
pub struct OneshotReplier(pub tokio::sync::oneshot::Sender<Answer>);

impl Replier for OneshotReplier {
    fn reply(self: Box<Self>, answer: Answer) {
        // The client may have gone; then nobody waits.
        let _ = self.0.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Registry, InputRequests) {
        let registry = Registry::new();
        let m = RequestMetrics::register(&registry);
        let input = m.for_input("clients");
        (registry, input)
    }

    fn start(input: &InputRequests) -> (Request, tokio::sync::oneshot::Receiver<Answer>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (input.start(Box::new(OneshotReplier(tx))), rx)
    }

    #[tokio::test]
    async fn the_first_answer_wins() {
        let (registry, input) = setup();
        let (req, rx) = start(&input);
        let copy = req.clone();
        assert_eq!(input.pending(), 1);
        assert!(req.answer(
            smallvec::smallvec![Bytes::from_static(b"ok")],
            Source::Service
        ));
        assert!(!copy.fail(RequestError::Overloaded), "already answered");
        assert!(copy.is_answered());
        drop((req, copy));
        let got = rx.await.expect("answered");
        assert_eq!(
            got,
            Answer::Reply(smallvec::smallvec![Bytes::from_static(b"ok")])
        );
        assert_eq!(input.pending(), 0);
        let text = registry.encode();
        assert!(
            text.contains(
                r#"switchyard_request_outcomes_total{input="clients",outcome="replied"} 1"#
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_request_nobody_answers_answers_itself() {
        let (_registry, input) = setup();
        let (req, rx) = start(&input);
        let copies = vec![req.clone(), req.clone()];
        drop(req);
        drop(copies);
        let got = rx.await.expect("answered");
        assert_eq!(
            got,
            Answer::Error(RequestError::Dropped { reason: "no_reply" })
        );
        assert_eq!(input.pending(), 0);
    }

    #[tokio::test]
    async fn timeouts_are_counted_by_route() {
        let (registry, input) = setup();
        let (mut req, rx) = start(&input);
        req.set_route(RouteTag {
            name: Arc::from("status"),
            timeout: Duration::from_secs(2),
        });
        assert!(req.deadline().is_some_and(|d| d > req.accepted()));
        req.fail(req.timeout_error().expect("tagged"));
        let Answer::Error(e) = rx.await.expect("answered") else {
            panic!("an error")
        };
        assert_eq!(e.code(), "REQUEST_TIMEOUT");
        let frames = e.frames();
        assert_eq!(&frames[0][..], ERROR_FRAME);
        let body: serde_json::Value = serde_json::from_slice(&frames[1]).expect("json");
        assert_eq!(body["error"]["code"], "REQUEST_TIMEOUT");
        let text = registry.encode();
        assert!(
            text.contains(r#"switchyard_request_timeouts_total{route="status"} 1"#),
            "{text}"
        );
    }
}
