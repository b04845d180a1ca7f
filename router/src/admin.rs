//! The admin listener, on its own address:
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | every metric family, Prometheus text format 0.0.4 |
//! | `GET /health` | `200 {"status":"ok"}` while the process serves |
//! | `GET /ready` | `200 {"ready":true}` once [`State::ready`], else `503 NOT_READY` |
//! | `GET /v1/status` | `{"version", "uptime_seconds", "config_generation", "ready", "unrouted", "routes": [RouteSnapshot], "outputs": [OutputStats], "inputs": [InputStatus], "reload"}` |
//! | `GET /v1/routes` | `{"routes": [RouteSnapshot]}`: each route's pattern, conditions, plugins, outputs, policy, queue and counts |
//! | `GET /v1/plugins` | `{"plugins": [PluginStats]}`: each loaded plugin's kind, module hash, routes, limits, calls, traps by reason and breaker state |
//! | `GET /v1/dead-letters?route=&output=&reason=&since=&until=&limit=&cursor=` | `{"entries": [{id, message_id, topic, route, output, reason, attempts, first_error, last_error, first_failed, last_failed, publish_time, size}], "next_cursor": "..." or null}`; times in unix ms; `limit` 1 to 1000, default 100 |
//! | `GET /v1/dead-letters/{id}` | the entry plus `attributes`, `publisher`, `priority` and `payload` (base64); `404 DEAD_LETTER_NOT_FOUND` |
//! | `POST /v1/dead-letters/replay` | body `{"ids": [..]}` or `{"filter": {route, output, reason, since, until}}`, optional `"route"`: each entry back into its route (or that one) with the same message id and the attribute `replayed-from`; `{"replayed", "refused", "missing", "stopped"?}` |
//! | `DELETE /v1/dead-letters` | body `{"ids": [..]}` or `{"filter": {..}}`: `{"purged": n}` |
//!
//! Without a dead-letter store (no `[router] data_dir`) the
//! `/v1/dead-letters` endpoints answer `404 DEAD_LETTERS_DISABLED`; bad
//! input is a `400` naming what is wrong.
//!
//! With `[router] admin_auth` (required once the config has `[[auth]]`
//! or `[[acl]]`), every endpoint but `/health` and `/ready` authenticates
//! the caller (`Authorization: Bearer`, `401 UNAUTHORIZED` otherwise) and
//! needs its scope (`403 FORBIDDEN` otherwise): `metrics` for `/metrics`
//! (unless `[router] metrics_open = true`), `reload` for `/v1/reload`,
//! `dead-letters` for every `/v1/dead-letters` endpoint, `read` for the
//! rest. Every change (a reload, a replay, a purge) is written to the
//! audit log (target `switchyard::audit`): principal, endpoint, result.
//!
//! `HEAD` works wherever `GET` does. Other methods get `405
//! METHOD_NOT_ALLOWED`, other paths `404 NOT_FOUND`, both in the JSON error
//! shape of [`crate::http::Error`]. The data comes from the app through
//! [`State`].

pub mod cli;
mod dead_letters;
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

use crate::egress::OutputStats;
pub use dead_letters::REPLAYED_FROM;
pub use state::{InjectFuture, PluginStats, ReloadFuture, State};

use crate::pipeline::RouteSnapshot;

use crate::config::Scope;
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
    /// Who may call which endpoint. `None`: anyone, everything.
    pub security: Option<crate::auth::Live>,
    /// TLS on the listener; `None`: plain HTTP.
    pub tls: Option<Arc<http::tls::Tls>>,
}

impl Config {
    /// The admin listener on `listen` with default limits.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            max_connections: 64,
            header_timeout: http::Config::DEFAULT_HEADER_TIMEOUT,
            shutdown_grace: Duration::from_secs(1),
            security: None,
            tls: None,
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
            tls: config.tls,
        };
        let server = http::Server::bind(server_config, metrics).await?;
        Ok(Self {
            server,
            admin: Arc::new(Admin {
                state,
                registry,
                started: Instant::now(),
                security: config.security,
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
    security: Option<crate::auth::Live>,
}

/// The scope an admin path needs; `None` for the probes, open to all.
fn scope_of(path: &str) -> Option<Scope> {
    Some(match path {
        "/health" | "/ready" => return None,
        "/metrics" => Scope::Metrics,
        "/v1/reload" => Scope::Reload,
        p if p == "/v1/dead-letters" || p.starts_with("/v1/dead-letters/") => Scope::DeadLetters,
        _ => Scope::Read,
    })
}

#[derive(Clone, Copy)]
enum Endpoint {
    Metrics,
    Health,
    Ready,
    Status,
    Routes,
    Plugins,
}

#[derive(Serialize)]
struct Status {
    version: &'static str,
    uptime_seconds: u64,
    config_generation: u64,
    ready: bool,
    unrouted: u64,
    routes: Vec<RouteSnapshot>,
    outputs: Vec<OutputStats>,
    inputs: Vec<crate::ingress::InputStatus>,
    reload: serde_json::Value,
}

#[derive(Serialize)]
struct Routes {
    routes: Vec<RouteSnapshot>,
}

#[derive(Serialize)]
struct Plugins {
    plugins: Vec<PluginStats>,
}

/// The largest config text `POST /v1/reload` reads.
const MAX_RELOAD_BODY: usize = 1 << 20;

impl Admin {
    /// `POST /v1/reload[?dry_run=true][&force=true]`, with an optional config text as
    /// the body.
    async fn reload(&self, request: Request<Incoming>) -> Result<Response<Body>, Error> {
        if request.method() != Method::POST {
            return Err(Error::MethodNotAllowed {
                method: request.method().clone(),
                allow: "POST",
            });
        }
        let flag = |name: &str| {
            request.uri().query().is_some_and(|q| {
                q.split('&')
                    .any(|kv| kv == format!("{name}=true") || kv == format!("{name}=1"))
            })
        };
        let (dry_run, force) = (flag("dry_run"), flag("force"));
        let body = http::read_body(
            request.into_body(),
            &http::BodyLimits {
                max: MAX_RELOAD_BODY,
                timeout: Duration::from_secs(10),
            },
        )
        .await?;
        let text = if body.is_empty() {
            None
        } else {
            Some(
                String::from_utf8(body.to_vec())
                    .map_err(|_| Error::BadRequest("the config text is not UTF-8".into()))?,
            )
        };
        let report = self.state.reload(dry_run, force, text).await?;
        Ok(http::json_response(StatusCode::OK, &report))
    }
}

impl Handler for Admin {
    async fn handle(
        &self,
        request: Request<Incoming>,
        peer: &Peer,
    ) -> Result<Response<Body>, Error> {
        let Some(live) = &self.security else {
            return self.serve(request).await;
        };
        let security = live.load_full();
        if !security.secured() {
            return self.serve(request).await;
        }
        let path = request.uri().path().to_owned();
        let scope = match scope_of(&path) {
            None => return self.serve(request).await,
            Some(Scope::Metrics) if security.metrics_open() => return self.serve(request).await,
            Some(scope) => scope,
        };
        let caller = security
            .authenticate(
                LISTENER,
                request.headers(),
                request.uri().query(),
                peer.client_cert.as_deref(),
            )
            .map_err(|f| Error::Unauthorized(f.to_string()))?;
        if !security.allow_scope(LISTENER, &caller, scope) {
            return Err(Error::Forbidden(format!(
                "{:?} lacks the admin scope {:?} that {path} needs",
                caller.shown(),
                scope.name()
            )));
        }
        let method = request.method().clone();
        let changes = method != Method::GET && method != Method::HEAD;
        let result = self.serve(request).await;
        if changes {
            let status = match &result {
                Ok(r) => r.status(),
                Err(e) => e.status(),
            };
            tracing::info!(
                target: "switchyard::audit",
                principal = caller.shown(),
                method = %method,
                endpoint = %path,
                status = status.as_u16(),
                "admin change"
            );
        }
        result
    }
}

impl Admin {
    /// Answers a request that is allowed.
    async fn serve(&self, request: Request<Incoming>) -> Result<Response<Body>, Error> {
        let path = request.uri().path();
        if path == "/v1/dead-letters" {
            return match *request.method() {
                Method::GET | Method::HEAD => dead_letters::list(&*self.state, &request).await,
                Method::DELETE => dead_letters::purge(&*self.state, request).await,
                _ => Err(Error::MethodNotAllowed {
                    method: request.method().clone(),
                    allow: "GET, HEAD, DELETE",
                }),
            };
        }
        if path == "/v1/dead-letters/replay" {
            return dead_letters::replay(&*self.state, request).await;
        }
        if let Some(id) = path.strip_prefix("/v1/dead-letters/") {
            if request.method() != Method::GET && request.method() != Method::HEAD {
                return Err(Error::MethodNotAllowed {
                    method: request.method().clone(),
                    allow: "GET, HEAD",
                });
            }
            let id = id.to_owned();
            return dead_letters::show(&*self.state, &id).await;
        }
        let endpoint = match request.uri().path() {
            "/metrics" => Endpoint::Metrics,
            "/health" => Endpoint::Health,
            "/ready" => Endpoint::Ready,
            "/v1/status" => Endpoint::Status,
            "/v1/routes" => Endpoint::Routes,
            "/v1/plugins" => Endpoint::Plugins,
            "/v1/reload" => return self.reload(request).await,
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
                self.state.refresh_metrics();
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
            Endpoint::Status => {
                let pipeline = self.state.pipeline();
                http::json_response(
                    StatusCode::OK,
                    &Status {
                        version: env!("CARGO_PKG_VERSION"),
                        uptime_seconds: self.started.elapsed().as_secs(),
                        config_generation: self.state.config_generation(),
                        ready: self.state.ready(),
                        unrouted: pipeline.unrouted,
                        routes: pipeline.routes,
                        outputs: self.state.outputs(),
                        inputs: self.state.inputs(),
                        reload: self.state.reload_status(),
                    },
                )
            }
            Endpoint::Routes => http::json_response(
                StatusCode::OK,
                &Routes {
                    routes: self.state.pipeline().routes,
                },
            ),
            Endpoint::Plugins => http::json_response(
                StatusCode::OK,
                &Plugins {
                    plugins: self.state.plugins(),
                },
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use std::collections::BTreeMap;

    use super::*;
    use crate::http::testing::{DEADLINE, metric, request, send};
    use crate::message::Pattern;
    use crate::pipeline::{DroppedCounts, PipelineSnapshot, QueueSnapshot, WhenFull};

    struct FakeState {
        ready: AtomicBool,
    }

    impl State for FakeState {
        fn ready(&self) -> bool {
            self.ready.load(Ordering::SeqCst)
        }

        fn config_generation(&self) -> u64 {
            3
        }

        fn pipeline(&self) -> PipelineSnapshot {
            PipelineSnapshot {
                generation: 3,
                routes: vec![RouteSnapshot {
                    name: "telemetry".into(),
                    pattern: Pattern::parse("sensors.>").expect("pattern"),
                    attributes: BTreeMap::new(),
                    outputs: vec!["dashboard".into()],
                    filters: vec!["drop-debug".into()],
                    router: None,
                    on_error: crate::pipeline::OnError::Drop,
                    dead_letter: None,
                    when_full: WhenFull::DropOldest,
                    queue: QueueSnapshot {
                        depth: 2,
                        queued: 2,
                        in_flight: 0,
                        bytes: 20,
                        capacity: 100,
                        capacity_bytes: 1 << 20,
                    },
                    offered: 10,
                    delivered: 7,
                    filtered: 0,
                    answered: 0,
                    dead_lettered: 0,
                    dropped: DroppedCounts {
                        total: 1,
                        queue_full: 1,
                        ..DroppedCounts::default()
                    },
                    backpressure_events: 1,
                    blocked_seconds: 0.0,
                    draining: false,
                }],
                unrouted: 4,
                shutting_down: false,
            }
        }

        fn outputs(&self) -> Vec<OutputStats> {
            vec![OutputStats {
                name: "dashboard".into(),
                kind: "zmq-pub".into(),
                sent: 7,
                dropped: 0,
                peers: 2,
                ..OutputStats::default()
            }]
        }

        fn reload_status(&self) -> serde_json::Value {
            serde_json::json!({ "generation": 3, "last_result": "failure" })
        }

        fn reload(&self, dry_run: bool, _force: bool, text: Option<String>) -> ReloadFuture<'_> {
            Box::pin(async move {
                match text.as_deref() {
                    Some("bad") => Err(Error::InvalidConfig("t.toml:1:1: nope".into())),
                    _ => Ok(serde_json::json!({ "dry_run": dry_run })),
                }
            })
        }

        fn plugins(&self) -> Vec<PluginStats> {
            vec![PluginStats {
                name: "drop-debug".into(),
                kind: "filter".into(),
                routes: vec!["telemetry".into()],
                calls: 5,
                traps: [("timeout".to_owned(), 1)].into(),
                ..PluginStats::default()
            }]
        }
    }

    struct Running {
        addr: SocketAddr,
        registry: Registry,
        http_metrics: http::Metrics,
        state: Arc<FakeState>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<Stopped>,
    }

    impl Running {
        async fn get(&self, path: &str) -> crate::http::testing::Reply {
            send(self.addr, &request("GET", path, &[], b"")).await
        }

        async fn stop(self) {
            self.shutdown.cancel();
            let stopped = tokio::time::timeout(DEADLINE, self.task)
                .await
                .expect("admin stops")
                .expect("admin task");
            assert_eq!(stopped.connections_cut, 0);
        }
    }

    async fn start() -> Running {
        let registry = Registry::new();
        let http_metrics = http::Metrics::register(&registry);
        // A family of another module, to see it exported.
        let other = registry.counter_vec(
            "switchyard_route_messages_total",
            "Messages through a route, by outcome.",
            &["route", "outcome"],
        );
        other
            .with_label_values(&["telemetry", "delivered"])
            .inc_by(7);
        let state = Arc::new(FakeState {
            ready: AtomicBool::new(false),
        });
        let admin = AdminServer::bind(
            Config::new("127.0.0.1:0".parse().expect("address")),
            state.clone(),
            registry.clone(),
            &http_metrics,
        )
        .await
        .expect("bind");
        let addr = admin.local_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(admin.run(shutdown.clone()));
        Running {
            addr,
            registry,
            http_metrics,
            state,
            shutdown,
            task,
        }
    }

    #[tokio::test]
    async fn health_and_readiness() {
        let running = start().await;
        let reply = running.get("/health").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["status"], "ok");

        let reply = running.get("/ready").await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.json()["error"]["code"], "NOT_READY");
        running.state.ready.store(true, Ordering::SeqCst);
        let reply = running.get("/ready").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["ready"], true);
        running.stop().await;
    }

    #[tokio::test]
    async fn status_and_routes() {
        let running = start().await;
        let status = running.get("/v1/status").await;
        assert_eq!(status.status, 200);
        assert_eq!(status.header("content-type"), Some("application/json"));
        let status = status.json();
        assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
        assert!(status["uptime_seconds"].is_u64());
        assert_eq!(status["config_generation"], 3);
        assert_eq!(status["ready"], false);
        assert_eq!(status["routes"][0]["name"], "telemetry");
        assert_eq!(status["routes"][0]["delivered"], 7);
        assert_eq!(status["routes"][0]["queue"]["depth"], 2);
        assert_eq!(status["unrouted"], 4);
        assert_eq!(status["outputs"][0]["kind"], "zmq-pub");
        assert_eq!(status["outputs"][0]["peers"], 2);

        let plugins = running.get("/v1/plugins").await;
        assert_eq!(plugins.status, 200);
        let plugins = plugins.json();
        assert_eq!(plugins["plugins"][0]["name"], "drop-debug");
        assert_eq!(plugins["plugins"][0]["routes"][0], "telemetry");
        assert_eq!(plugins["plugins"][0]["traps"]["timeout"], 1);

        let routes = running.get("/v1/routes").await;
        assert_eq!(routes.status, 200);
        let routes = routes.json();
        assert_eq!(routes["routes"][0]["match"], "sensors.>");
        assert_eq!(routes["routes"][0]["filters"][0], "drop-debug");
        assert_eq!(
            routes["routes"][0]["outputs"],
            serde_json::json!(["dashboard"])
        );
        assert_eq!(routes["routes"][0]["when_full"], "drop_oldest");
        running.stop().await;
    }

    #[tokio::test]
    async fn unknown_paths_and_methods() {
        let running = start().await;
        let reply = running.get("/nope").await;
        assert_eq!(reply.status, 404);
        assert_eq!(reply.json()["error"]["code"], "NOT_FOUND");
        let reply = send(running.addr, &request("POST", "/metrics", &[], b"x")).await;
        assert_eq!(reply.status, 405);
        assert_eq!(reply.header("allow"), Some("GET, HEAD"));
        assert_eq!(reply.json()["error"]["code"], "METHOD_NOT_ALLOWED");
        let reply = send(running.addr, &request("HEAD", "/health", &[], b"")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            metric(
                &running.registry.encode(),
                r#"switchyard_http_requests_total{listener="admin",status="404"}"#
            ),
            Some(1.0)
        );
        running.stop().await;
    }

    #[tokio::test]
    async fn reload_is_a_post_with_an_optional_dry_run_and_body() {
        let running = start().await;
        let reply = send(running.addr, &request("POST", "/v1/reload", &[], b"")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["dry_run"], false);
        let reply = send(
            running.addr,
            &request("POST", "/v1/reload?dry_run=true", &[], b"x = 1"),
        )
        .await;
        assert_eq!(reply.json()["dry_run"], true);
        let reply = send(running.addr, &request("POST", "/v1/reload", &[], b"bad")).await;
        assert_eq!(reply.status, 400);
        assert_eq!(reply.json()["error"]["code"], "INVALID_CONFIG");
        let reply = running.get("/v1/reload").await;
        assert_eq!(reply.status, 405);
        assert_eq!(reply.header("allow"), Some("POST"));
        let status = running.get("/v1/status").await.json();
        assert_eq!(status["reload"]["last_result"], "failure");
        running.stop().await;
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text() {
        let running = start().await;
        // One request first, so the request counter has a sample.
        assert_eq!(running.get("/health").await.status, 200);
        let reply = running.get("/metrics").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some(METRICS_CONTENT_TYPE));
        let text = String::from_utf8(reply.body).expect("UTF-8");
        for family in [
            "# TYPE switchyard_http_requests_total counter",
            "# TYPE switchyard_http_connections gauge",
            "# TYPE switchyard_route_messages_total counter",
        ] {
            assert!(text.contains(family), "missing {family:?} in:\n{text}");
        }
        assert_eq!(
            metric(
                &text,
                r#"switchyard_route_messages_total{outcome="delivered",route="telemetry"}"#
            ),
            Some(7.0)
        );
        assert_eq!(
            metric(
                &text,
                r#"switchyard_http_requests_total{listener="admin",status="200"}"#
            ),
            Some(1.0)
        );
        running.stop().await;
    }

    /// A sink that admits everything, for an HTTP input beside the admin
    /// listener.
    struct Accept;

    impl crate::ingress::Sink for Accept {
        fn offer(
            &self,
            batch: Vec<crate::message::Message>,
            _wait: crate::ingress::Wait,
        ) -> std::pin::Pin<Box<dyn Future<Output = crate::ingress::Offered> + Send + '_>> {
            Box::pin(std::future::ready(crate::ingress::Offered {
                admitted: batch.len(),
                refusal: None,
            }))
        }
    }

    /// `promtool check metrics` (the Prometheus project's own linter) must
    /// accept `/metrics`, with an HTTP input's families in it too.
    #[tokio::test]
    async fn promtool_accepts_the_metrics() {
        use std::io::Write as _;
        use std::process::{Command, Stdio};

        use crate::ingress::http as input;

        let running = start().await;
        let metrics = input::Metrics::new(
            &crate::ingress::Metrics::register(&running.registry),
            &running.http_metrics,
            &crate::message::request::RequestMetrics::register(&running.registry),
        );
        let config = input::Config::new("api", "127.0.0.1:0".parse().expect("address"));
        let api = input::HttpInput::bind(config, Arc::new(Accept), &metrics)
            .await
            .expect("bind input");
        let api_addr = api.local_addr();
        let api_task = tokio::spawn(api.run(running.shutdown.clone()));
        let published = send(api_addr, &request("POST", "/v1/publish/a.b", &[], b"x")).await;
        assert_eq!(published.status, 202);
        let refused = send(api_addr, &request("POST", "/v1/publish", &[], b"{")).await;
        assert_eq!(refused.status, 400);
        assert_eq!(running.get("/health").await.status, 200);
        let reply = running.get("/metrics").await;
        assert_eq!(reply.status, 200);
        let text = String::from_utf8_lossy(&reply.body);
        assert!(
            text.contains(r#"switchyard_input_messages_total{input="api"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"switchyard_input_rejected_total{input="api",reason="bad_json"} 1"#),
            "{text}"
        );

        let promtool = std::env::var_os("PROMTOOL").unwrap_or_else(|| "promtool".into());
        let child = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) => panic!(
                "cannot run {promtool:?} ({e}): this test needs Prometheus' promtool \
                 (Debian/Ubuntu: `apt-get install prometheus`; or set PROMTOOL=/path/to/promtool)"
            ),
        };
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(&reply.body)
            .expect("write to promtool");
        let output = child.wait_with_output().expect("promtool runs");
        assert!(
            output.status.success(),
            "promtool rejected /metrics:\n{}{}\n--- metrics ---\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&reply.body)
        );
        running.stop().await;
        tokio::time::timeout(DEADLINE, api_task)
            .await
            .expect("input stops")
            .expect("input task");
    }
}
