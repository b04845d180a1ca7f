//! The admin listener, on its own address:
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | every metric family, Prometheus text format 0.0.4 |
//! | `GET /health` | `200 {"status":"ok"}` while the process serves |
//! | `GET /ready` | `200 {"ready":true}` once [`State::ready`], else `503 NOT_READY` |
//! | `GET /v1/status` | `{"version", "uptime_seconds", "config_generation", "ready", "routes": [RouteStats], "outputs": [OutputStats]}` |
//! | `GET /v1/routes` | `{"routes": [RouteInfo]}` |
//!
//! `HEAD` works wherever `GET` does. Other methods get `405
//! METHOD_NOT_ALLOWED`, other paths `404 NOT_FOUND`, both in the JSON error
//! shape of [`crate::http::Error`]. The data comes from the app through
//! [`State`].

mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use state::{OutputStats, RouteInfo, RouteStats, State};

use crate::http::{self, Body, Error, Handler, Peer, Stopped};
use crate::metrics::Registry;

/// The `Content-Type` of `/metrics`: the Prometheus text format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Settings of the admin listener.
#[derive(Debug, Clone)]
pub struct Config {
    /// The address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Connections served at once (default 64).
    pub max_connections: usize,
    /// How long a client may take to send request headers; also the
    /// keep-alive idle timeout (default 10 s).
    pub header_timeout: Duration,
    /// On shutdown, how long requests in flight may take (default 1 s).
    pub shutdown_grace: Duration,
}

impl Config {
    /// The admin listener on `listen` with default limits.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            max_connections: 64,
            header_timeout: http::Config::DEFAULT_HEADER_TIMEOUT,
            shutdown_grace: Duration::from_secs(1),
        }
    }
}

/// The `listener` label of the admin listener's metrics.
const LISTENER: &str = "admin";

/// A bound admin listener. [`AdminServer::run`] serves it until shutdown.
pub struct AdminServer {
    server: http::Server,
    admin: Arc<Admin>,
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer")
            .field("local_addr", &self.server.local_addr())
            .finish_non_exhaustive()
    }
}

impl AdminServer {
    /// Binds `config.listen`. `/metrics` encodes `registry`; the other
    /// endpoints ask `state`. Uptime counts from this call.
    ///
    /// # Errors
    /// [`Error::Bind`] when the address cannot be bound.
    pub async fn bind(
        config: Config,
        state: Arc<dyn State>,
        registry: Registry,
        metrics: &http::Metrics,
    ) -> Result<Self, Error> {
        let server_config = http::Config {
            name: LISTENER.to_owned(),
            listen: config.listen,
            max_connections: config.max_connections,
            header_timeout: config.header_timeout,
            shutdown_grace: config.shutdown_grace,
        };
        let server = http::Server::bind(server_config, metrics).await?;
        Ok(Self {
            server,
            admin: Arc::new(Admin {
                state,
                registry,
                started: Instant::now(),
            }),
        })
    }

    /// The address bound (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then lets requests in flight
    /// finish within the grace period.
    pub async fn run(self, shutdown: CancellationToken) -> Stopped {
        self.server.run(self.admin, shutdown).await
    }
}

/// The request handler.
struct Admin {
    state: Arc<dyn State>,
    registry: Registry,
    started: Instant,
}

#[derive(Clone, Copy)]
enum Endpoint {
    Metrics,
    Health,
    Ready,
    Status,
    Routes,
}

#[derive(Serialize)]
struct Status {
    version: &'static str,
    uptime_seconds: u64,
    config_generation: u64,
    ready: bool,
    routes: Vec<RouteStats>,
    outputs: Vec<OutputStats>,
}

#[derive(Serialize)]
struct Routes {
    routes: Vec<RouteInfo>,
}

impl Handler for Admin {
    async fn handle(
        &self,
        request: Request<Incoming>,
        _peer: &Peer,
    ) -> Result<Response<Body>, Error> {
        let endpoint = match request.uri().path() {
            "/metrics" => Endpoint::Metrics,
            "/health" => Endpoint::Health,
            "/ready" => Endpoint::Ready,
            "/v1/status" => Endpoint::Status,
            "/v1/routes" => Endpoint::Routes,
            path => {
                return Err(Error::NotFound {
                    path: path.to_owned(),
                });
            }
        };
        let method = request.method();
        if method != Method::GET && method != Method::HEAD {
            return Err(Error::MethodNotAllowed {
                method: method.clone(),
                allow: "GET, HEAD",
            });
        }
        Ok(match endpoint {
            Endpoint::Metrics => {
                let mut response = Response::new(Full::new(Bytes::from(self.registry.encode())));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(METRICS_CONTENT_TYPE),
                );
                response
            }
            Endpoint::Health => {
                http::json_response(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
            }
            Endpoint::Ready => {
                if !self.state.ready() {
                    return Err(Error::NotReady);
                }
                http::json_response(StatusCode::OK, &serde_json::json!({ "ready": true }))
            }
            Endpoint::Status => http::json_response(
                StatusCode::OK,
                &Status {
                    version: env!("CARGO_PKG_VERSION"),
                    uptime_seconds: self.started.elapsed().as_secs(),
                    config_generation: self.state.config_generation(),
                    ready: self.state.ready(),
                    routes: self.state.route_stats(),
                    outputs: self.state.output_stats(),
                },
            ),
            Endpoint::Routes => http::json_response(
                StatusCode::OK,
                &Routes {
                    routes: self.state.routes(),
                },
            ),
        })
    }
}
