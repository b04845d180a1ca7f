//! The HTTP error enum and its rendering: the only place a failure becomes a
//! status code and a JSON body.
//!
//! Every error body has one shape ([`crate::message::ErrorBody`], shared
//! with the error replies ZeroMQ clients get):
//!
//! ```json
//! {"error": {"code": "INVALID_TOPIC", "message": "path: topic has an empty token"}}
//! ```
//!
//! `code` is stable and meant for machines; `message` is for people and may
//! change. Publish refusals (`BACKPRESSURE`, `SHUTTING_DOWN`) also carry
//! `"ids"`: the ids of the messages of the request that *were* admitted
//! before the refusal (possibly none), so a client never loses track of an
//! accepted message and can retry exactly the rest.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};
use serde::Serialize;

use super::Body;
use crate::message::request::RequestError;
use crate::message::{ErrorBody, Ids, MessageId, TopicError};

/// Everything an HTTP handler can fail with. [`Error::status`] and
/// [`Error::code`] give the status and the stable machine code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A malformed request that no more specific variant describes.
    /// `400 BAD_REQUEST`.
    #[error("{0}")]
    BadRequest(String),
    /// The body is not the JSON the endpoint expects. `400 INVALID_JSON`.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// A topic (in the path or in the body, at `field`) is not valid.
    /// `400 INVALID_TOPIC`.
    #[error("{field}: {source}")]
    InvalidTopic {
        /// Where the topic came from, e.g. `path` or `messages[2].topic`.
        field: String,
        /// Which topic rule it breaks.
        source: TopicError,
    },
    /// An attribute (from an `X-Attr-*` header or a JSON `attributes`
    /// object) is not valid. `400 INVALID_ATTRIBUTE`.
    #[error("{field}: {reason}")]
    InvalidAttribute {
        /// The header or JSON field at fault.
        field: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A priority is not an integer from 0 to 9. `400 INVALID_PRIORITY`.
    #[error("{field}: priority must be an integer from 0 to 9")]
    InvalidPriority {
        /// The header or JSON field at fault.
        field: String,
    },
    /// A payload could not be decoded (bad base64, or both `payload` and
    /// `payload_base64` given). `400 INVALID_PAYLOAD`.
    #[error("{field}: {reason}")]
    InvalidPayload {
        /// The JSON field at fault.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request body could not be read: the client broke off or sent
    /// malformed chunked framing. `400 BODY_READ_FAILED`.
    #[error("reading the request body failed: {0}")]
    BodyRead(#[source] hyper::Error),
    /// No resource at this path. `404 NOT_FOUND`.
    #[error("no resource at {path}")]
    NotFound {
        /// The request path.
        path: String,
    },
    /// The resource exists but not for this method.
    /// `405 METHOD_NOT_ALLOWED`, with an `Allow` header.
    #[error("method {method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed {
        /// The method the client used.
        method: Method,
        /// The methods the resource supports, as an `Allow` header value.
        allow: &'static str,
    },
    /// The body did not arrive in full within the body read timeout.
    /// `408 REQUEST_TIMEOUT`.
    #[error("the request body did not arrive within {timeout:?}")]
    BodyTimeout {
        /// The configured body read timeout.
        timeout: Duration,
    },
    /// The body is larger than the endpoint accepts (by `Content-Length`
    /// or while streaming). `413 PAYLOAD_TOO_LARGE`.
    #[error("the request body is over the {limit} byte limit")]
    PayloadTooLarge {
        /// The configured body limit, in bytes.
        limit: usize,
    },
    /// A batch holds more messages than allowed. `413 BATCH_TOO_LARGE`.
    #[error("the batch holds {count} messages, over the limit of {max}")]
    BatchTooLarge {
        /// Messages in the batch.
        count: usize,
        /// The configured batch limit.
        max: usize,
    },
    /// The body's `Content-Type` is not one the endpoint reads.
    /// `415 UNSUPPORTED_MEDIA_TYPE`.
    #[error("content type {found:?} is not supported; send {expected}")]
    UnsupportedMediaType {
        /// The `Content-Type` the client sent.
        found: String,
        /// The media type the endpoint expects.
        expected: &'static str,
    },
    /// The request carries no credentials, or ones that do not
    /// authenticate: `401 UNAUTHORIZED`, with `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthorized(String),
    /// The authenticated principal may not do this (publish to this topic,
    /// use this admin endpoint). `403 FORBIDDEN`.
    #[error("{0}")]
    Forbidden(String),
    /// The authenticated principal may not publish to a topic of the
    /// request; nothing of it was accepted. `403 TOPIC_FORBIDDEN`.
    #[error("{principal:?} may not publish to {topics}{}; nothing was accepted", if *more > 0 { format!(" (and {more} more)") } else { String::new() })]
    TopicForbidden {
        /// The first forbidden topics, each with where it was written.
        topics: String,
        /// How many more were forbidden.
        more: usize,
        /// The principal (`anonymous` without credentials).
        principal: String,
    },
    /// The client is over a rate limit. `429 TOO_MANY_REQUESTS`, with
    /// `Retry-After`.
    #[error("too many requests; retry after {retry_after:?}")]
    TooManyRequests {
        /// When the client may try again.
        retry_after: Duration,
    },
    /// A route with `when_full = "block"` stayed full until the block
    /// timeout. `503 BACKPRESSURE`, with `Retry-After` and the ids of the
    /// messages admitted before the refusal.
    #[error(
        "{refused} message(s) refused: a route stayed full for the block timeout; \
         {} admitted (see ids); retry the rest after {retry_after:?}",
        admitted.len()
    )]
    Backpressure {
        /// When the client should retry the refused messages.
        retry_after: Duration,
        /// Ids of the messages admitted before the refusal, in order.
        admitted: Vec<MessageId>,
        /// How many messages (the tail of the request) were refused.
        refused: usize,
    },
    /// The router is shutting down and takes no more messages.
    /// `503 SHUTTING_DOWN`, with the ids of messages admitted before it.
    #[error(
        "{refused} message(s) refused: the router is shutting down; {} admitted (see ids)",
        admitted.len()
    )]
    ShuttingDown {
        /// Ids of the messages admitted before the refusal, in order.
        admitted: Vec<MessageId>,
        /// How many messages were refused.
        refused: usize,
    },
    /// The router is not ready to serve (inputs not bound, config not
    /// loaded). `503 NOT_READY`.
    #[error("the router is not ready")]
    NotReady,
    /// A config sent or named for a reload has problems. `400
    /// INVALID_CONFIG`; the message lists each with file, line and reason.
    #[error("{0}")]
    InvalidConfig(String),
    /// A request that conflicts with the router's state, e.g. a reload the
    /// running router cannot apply. `409 CONFLICT`.
    #[error("{0}")]
    Conflict(String),
    /// A request through the bridge (`POST /v1/request/{topic}`) got no
    /// reply: `504 REQUEST_TIMEOUT`, `503 NO_SERVICE`, `502
    /// SERVICE_FAILED`, `404 ROUTE_NOT_FOUND`, `403 REJECTED`, `503
    /// BACKPRESSURE`, `503 SHUTTING_DOWN`, `503 DROPPED` or `400
    /// BAD_REQUEST`, with the same codes ZeroMQ clients get.
    #[error("{0}")]
    Request(RequestError),
    /// A bug or an unexpected failure inside the router. `500 INTERNAL`.
    #[error("internal error: {0}")]
    Internal(String),
    /// A dead-letter endpoint on a router without a dead-letter store.
    #[error(
        "this router has no dead-letter store: it needs `[router] data_dir`, where it keeps its entries"
    )]
    DeadLettersDisabled,
    /// No dead letter has this id (it was never stored, or is gone).
    #[error("no dead letter has id {id}")]
    DeadLetterNotFound {
        /// The id asked for.
        id: String,
    },
    /// A request named a route that does not exist.
    #[error("no route is called {route:?}")]
    RouteNotFound {
        /// The name given.
        route: String,
    },
    /// A listener could not bind its address. Returned at startup, never
    /// sent to a client (it would be `500 INTERNAL`).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why the bind failed.
        source: std::io::Error,
    },
}

impl Error {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_)
            | Self::InvalidJson(_)
            | Self::InvalidTopic { .. }
            | Self::InvalidAttribute { .. }
            | Self::InvalidPriority { .. }
            | Self::InvalidPayload { .. }
            | Self::BodyRead(_)
            | Self::InvalidConfig(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::TopicForbidden { .. } => StatusCode::FORBIDDEN,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::NotFound { .. }
            | Self::DeadLettersDisabled
            | Self::DeadLetterNotFound { .. }
            | Self::RouteNotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge { .. } | Self::BatchTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Backpressure { .. } | Self::ShuttingDown { .. } | Self::NotReady => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) | Self::Bind { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Request(e) => match e {
                RequestError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                RequestError::ServiceFailed { .. } => StatusCode::BAD_GATEWAY,
                RequestError::NoRoute { .. } => StatusCode::NOT_FOUND,
                RequestError::Rejected { .. } => StatusCode::FORBIDDEN,
                RequestError::BadRequest { .. } => StatusCode::BAD_REQUEST,
                RequestError::Forbidden { .. } => StatusCode::FORBIDDEN,
                RequestError::NoService { .. }
                | RequestError::Overloaded
                | RequestError::ShuttingDown
                | RequestError::Dropped { .. } => StatusCode::SERVICE_UNAVAILABLE,
            },
        }
    }

    /// The stable machine code clients match on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "BAD_REQUEST",
            Self::InvalidJson(_) => "INVALID_JSON",
            Self::InvalidTopic { .. } => "INVALID_TOPIC",
            Self::InvalidAttribute { .. } => "INVALID_ATTRIBUTE",
            Self::InvalidPriority { .. } => "INVALID_PRIORITY",
            Self::InvalidPayload { .. } => "INVALID_PAYLOAD",
            Self::BodyRead(_) => "BODY_READ_FAILED",
            Self::InvalidConfig(_) => "INVALID_CONFIG",
            Self::Unauthorized(_) => "UNAUTHORIZED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::TopicForbidden { .. } => "TOPIC_FORBIDDEN",
            Self::Conflict(_) => "CONFLICT",
            Self::NotFound { .. } => "NOT_FOUND",
            Self::DeadLettersDisabled => "DEAD_LETTERS_DISABLED",
            Self::DeadLetterNotFound { .. } => "DEAD_LETTER_NOT_FOUND",
            Self::RouteNotFound { .. } => "ROUTE_NOT_FOUND",
            Self::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            Self::BodyTimeout { .. } => "REQUEST_TIMEOUT",
            Self::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            Self::BatchTooLarge { .. } => "BATCH_TOO_LARGE",
            Self::UnsupportedMediaType { .. } => "UNSUPPORTED_MEDIA_TYPE",
            Self::TooManyRequests { .. } => "TOO_MANY_REQUESTS",
            Self::Backpressure { .. } => "BACKPRESSURE",
            Self::ShuttingDown { .. } => "SHUTTING_DOWN",
            Self::NotReady => "NOT_READY",
            Self::Internal(_) | Self::Bind { .. } => "INTERNAL",
            Self::Request(e) => e.code(),
        }
    }

    /// The error as a response: the JSON error body, its status, and the
    /// headers the status calls for (`Retry-After`, `Allow`, and
    /// `Connection: close` when the request body was left unread).
    pub fn to_response(&self) -> Response<Body> {
        let message = self.to_string();
        let body = ErrorBody::new(self.code(), &message);
        let body = match self {
            Self::Backpressure { admitted, .. } | Self::ShuttingDown { admitted, .. } => {
                body.with_ids(admitted)
            }
            _ => body,
        };
        let mut response = json_response(self.status(), &body);
        let headers = response.headers_mut();
        match self {
            Self::TooManyRequests { retry_after } | Self::Backpressure { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, retry_after_value(*retry_after));
            }
            Self::MethodNotAllowed { allow, .. } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            Self::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            // The body may be partly unread: tell the client the connection
            // ends here rather than let it send more on it.
            Self::PayloadTooLarge { .. } | Self::BodyTimeout { .. } | Self::BodyRead(_) => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
fn retry_after_value(after: Duration) -> HeaderValue {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

/// The success body of a publish: `{"ids": ["<32 hex digits>", ...]}`, in
/// the order the messages were given.
pub fn ids_response(status: StatusCode, ids: &[MessageId]) -> Response<Body> {
    #[derive(Serialize)]
    struct Published<'a> {
        ids: Ids<'a>,
    }
    json_response(status, &Published { ids: Ids(ids) })
}

/// A response with `value` serialised as its JSON body.
pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(json) => {
            let mut response = Response::new(Full::new(Bytes::from(json)));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        // Only a `Serialize` impl that reports an error can get here; the
        // bodies above are plain data. Answer with a fixed body rather than
        // recurse.
        Err(e) => {
            tracing::error!(error = %e, "serialising a JSON response failed");
            let mut response = Response::new(Full::new(Bytes::from_static(
                br#"{"error":{"code":"INTERNAL","message":"response serialisation failed"}}"#,
            )));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(response: Response<Body>) -> serde_json::Value {
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("Full never fails")
            .to_bytes();
        serde_json::from_slice(&bytes).expect("error bodies are JSON")
    }

    #[tokio::test]
    async fn unauthorized_and_forbidden_answer_401_and_403() {
        let r = Error::Unauthorized("no bearer token".into()).to_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let v = body_json(r).await;
        assert_eq!(v["error"]["code"], "UNAUTHORIZED");
        assert_eq!(v["error"]["message"], "no bearer token");
        let r = Error::Forbidden("may not publish to sensors.a".into()).to_response();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(body_json(r).await["error"]["code"], "FORBIDDEN");
    }

    #[tokio::test]
    async fn a_request_error_has_the_body_zeromq_clients_get() {
        let e = RequestError::Overloaded;
        let over_http = body_json(Error::Request(e.clone()).to_response()).await;
        let over_zmq: serde_json::Value = serde_json::from_str(&e.json()).expect("json");
        assert_eq!(over_http, over_zmq);
    }

    #[tokio::test]
    async fn error_shape_and_headers() {
        let e = Error::NotFound {
            path: "/nope".into(),
        };
        let r = e.to_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let v = body_json(r).await;
        assert_eq!(v["error"]["code"], "NOT_FOUND");
        assert_eq!(v["error"]["message"], "no resource at /nope");
        assert!(v["error"].get("ids").is_none());

        let e = Error::Backpressure {
            retry_after: Duration::from_millis(1500),
            admitted: vec![MessageId(1), MessageId(2)],
            refused: 3,
        };
        let r = e.to_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        let v = body_json(r).await;
        assert_eq!(v["error"]["code"], "BACKPRESSURE");
        assert_eq!(
            v["error"]["ids"],
            serde_json::json!([format!("{:032x}", 1), format!("{:032x}", 2)])
        );

        let e = Error::MethodNotAllowed {
            method: Method::PUT,
            allow: "POST",
        };
        let r = e.to_response();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::ALLOW], "POST");

        let r = Error::PayloadTooLarge { limit: 10 }.to_response();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(r.headers()[header::CONNECTION], "close");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_value(Duration::ZERO), "1");
        assert_eq!(retry_after_value(Duration::from_millis(1)), "1");
        assert_eq!(retry_after_value(Duration::from_secs(2)), "2");
        assert_eq!(retry_after_value(Duration::from_millis(2001)), "3");
    }
}
