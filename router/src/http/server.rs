//! The HTTP/1.1 listener: accept loop, per-connection tasks, timeouts,
//! request counting and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Error;
use crate::metrics::Registry;

/// The body of every response the router sends: small and in memory.
pub type Body = Full<Bytes>;

/// Settings of one listener.
#[derive(Debug, Clone)]
pub struct Config {
    /// The listener's name: the `listener` label of its metrics (the input
    /// name, or `admin`).
    pub name: String,
    /// The address to listen on; port 0 picks a free port (see
    /// [`Server::local_addr`]).
    pub listen: SocketAddr,
    /// Connections served at once; further clients wait in the kernel's
    /// accept backlog.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, counted from
    /// when the server starts waiting for them. It is also how long an idle
    /// keep-alive connection stays open.
    pub header_timeout: Duration,
    /// On shutdown, how long requests in flight may take to finish before
    /// their connections are closed.
    pub shutdown_grace: Duration,
    /// TLS on every connection; `None`: plain HTTP.
    pub tls: Option<Arc<super::tls::Tls>>,
}

impl Config {
    /// Default for [`Config::max_connections`].
    pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
    /// Default for [`Config::header_timeout`].
    pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default for [`Config::shutdown_grace`].
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

    /// A listener named `name` on `listen` with default limits.
    pub fn new(name: impl Into<String>, listen: SocketAddr) -> Self {
        Self {
            name: name.into(),
            listen,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            header_timeout: Self::DEFAULT_HEADER_TIMEOUT,
            shutdown_grace: Self::DEFAULT_SHUTDOWN_GRACE,
            tls: None,
        }
    }
}

/// Serves requests. Implemented by the HTTP input and the admin endpoints.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. An `Err` is rendered by
    /// [`Error::to_response`]; both outcomes are counted by the server.
    fn handle(
        &self,
        request: Request<Incoming>,
        peer: &Peer,
    ) -> impl Future<Output = Result<Response<Body>, Error>> + Send;
}

/// The client at the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its address.
    pub addr: SocketAddr,
    /// Its address as text, made once per connection for
    /// [`crate::message::Publisher::peer`].
    pub name: Arc<str>,
    /// The certificate it presented and the listener verified (TLS with
    /// `client_ca`), for mTLS principals.
    pub client_cert: Option<Arc<super::tls::ClientCert>>,
}

/// The HTTP metric families, shared by every listener of a registry.
/// Register once, clone into each [`Server`].
#[derive(Clone, Debug)]
pub struct Metrics {
    requests: IntCounterVec,
    connections: IntGaugeVec,
    connection_errors: IntCounterVec,
}

impl Metrics {
    /// Registers `switchyard_http_requests_total{listener,status}`,
    /// `switchyard_http_connections{listener}` and
    /// `switchyard_http_connection_errors_total{listener,reason}` (reason:
    /// `header_timeout`, `malformed`, `io`).
    pub fn register(registry: &Registry) -> Self {
        Self {
            requests: registry.counter_vec(
                "switchyard_http_requests_total",
                "HTTP requests answered, by listener and status code.",
                &["listener", "status"],
            ),
            connections: registry.gauge_vec(
                "switchyard_http_connections",
                "HTTP connections open now, by listener.",
                &["listener"],
            ),
            connection_errors: registry.counter_vec(
                "switchyard_http_connection_errors_total",
                "HTTP connections closed on an error before a response, by listener and reason.",
                &["listener", "reason"],
            ),
        }
    }
}

/// The statuses the router answers with; their counters are resolved once
/// per listener. Anything else is looked up when it happens.
const STATUSES: [StatusCode; 12] = [
    StatusCode::OK,
    StatusCode::ACCEPTED,
    StatusCode::BAD_REQUEST,
    StatusCode::NOT_FOUND,
    StatusCode::METHOD_NOT_ALLOWED,
    StatusCode::REQUEST_TIMEOUT,
    StatusCode::PAYLOAD_TOO_LARGE,
    StatusCode::UNSUPPORTED_MEDIA_TYPE,
    StatusCode::TOO_MANY_REQUESTS,
    StatusCode::INTERNAL_SERVER_ERROR,
    StatusCode::SERVICE_UNAVAILABLE,
    StatusCode::NO_CONTENT,
];

/// One listener's resolved counters.
#[derive(Debug)]
struct ListenerMetrics {
    name: String,
    requests: IntCounterVec,
    by_status: [IntCounter; STATUSES.len()],
    connections: IntGauge,
    header_timeouts: IntCounter,
    malformed: IntCounter,
    io_errors: IntCounter,
}

impl ListenerMetrics {
    fn new(metrics: &Metrics, name: &str) -> Self {
        let err = |reason| metrics.connection_errors.with_label_values(&[name, reason]);
        Self {
            name: name.to_owned(),
            requests: metrics.requests.clone(),
            by_status: STATUSES.map(|s| metrics.requests.with_label_values(&[name, s.as_str()])),
            connections: metrics.connections.with_label_values(&[name]),
            header_timeouts: err("header_timeout"),
            malformed: err("malformed"),
            io_errors: err("io"),
        }
    }

    fn count(&self, status: StatusCode) {
        match STATUSES.iter().position(|s| *s == status) {
            Some(i) => self.by_status[i].inc(),
            None => self
                .requests
                .with_label_values(&[self.name.as_str(), status.as_str()])
                .inc(),
        }
    }

    fn count_connection_error(&self, e: &hyper::Error) {
        if e.is_timeout() {
            self.header_timeouts.inc();
        } else if e.is_parse() || e.is_parse_too_large() {
            self.malformed.inc();
        } else {
            self.io_errors.inc();
        }
    }
}

/// What [`Server::run`] left behind when it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Connections still busy at the end of the grace period, closed
    /// mid-request.
    pub connections_cut: usize,
}

/// A bound HTTP/1.1 listener, ready to [`run`](Server::run).
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    config: Config,
    metrics: Arc<ListenerMetrics>,
    tasks: TaskTracker,
}

impl Server {
    /// Binds `config.listen`.
    ///
    /// # Errors
    /// [`Error::Bind`] when the address cannot be bound.
    pub async fn bind(config: Config, metrics: &Metrics) -> Result<Self, Error> {
        let bind_err = |source| Error::Bind {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen).await.map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        let metrics = Arc::new(ListenerMetrics::new(metrics, &config.name));
        Ok(Self {
            listener,
            local_addr,
            config,
            metrics,
            tasks: TaskTracker::new(),
        })
    }

    /// The address actually bound (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The tracker of this server's tasks. A handler spawns work here that
    /// must finish even if its client goes away; [`Server::run`] waits for
    /// it before returning.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Serves connections until `shutdown` is cancelled, then stops
    /// accepting, lets requests in flight finish for up to
    /// [`Config::shutdown_grace`] (idle keep-alive connections close at
    /// once), closes what is left, and waits for the handler's tracked tasks.
    ///
    /// # Cancel safety
    /// Cancel `shutdown` rather than dropping this future: dropping it drops
    /// the listener but leaves connection tasks running.
    pub async fn run<H: Handler>(self, handler: Arc<H>, shutdown: CancellationToken) -> Stopped {
        let Self {
            listener,
            local_addr,
            config,
            metrics,
            tasks,
        } = self;
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_timeout)
            // 64 KiB of headers is plenty; the default (~400 KiB) is memory
            // a hostile client could pin per connection.
            .max_buf_size(64 * 1024);
        let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
        let force = CancellationToken::new();
        let cut = Arc::new(AtomicUsize::new(0));
        tracing::info!(listener = %config.name, addr = %local_addr, "HTTP listener serving");

        let mut backoff = ACCEPT_BACKOFF_MIN;
        loop {
            let permit = tokio::select! {
                () = shutdown.cancelled() => break,
                permit = slots.clone().acquire_owned() => {
                    permit.expect("the connection semaphore is never closed")
                }
            };
            let (stream, addr) = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => {
                        backoff = ACCEPT_BACKOFF_MIN;
                        accepted
                    }
                    Err(e) => {
                        // Out of descriptors or memory: wait rather than spin;
                        // the kernel keeps queued clients in the backlog.
                        tracing::warn!(listener = %config.name, error = %e, ?backoff, "accept failed");
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                        continue;
                    }
                },
            };
            // Responses are written whole; don't let Nagle hold them back.
            let _ = stream.set_nodelay(true);
            let mut conn = Conn {
                peer: Arc::new(Peer {
                    addr,
                    name: Arc::from(addr.to_string()),
                    client_cert: None,
                }),
                handler: handler.clone(),
                metrics: metrics.clone(),
                shutdown: shutdown.clone(),
                force: force.clone(),
                cut: cut.clone(),
                _permit: permit,
            };
            match &config.tls {
                None => {
                    tasks.spawn(conn.serve(&builder, TokioIo::new(stream)));
                }
                Some(tls) => {
                    // The handshake runs in the connection's task, under
                    // its timeout, never in the accept loop.
                    let (tls, builder, shutdown) =
                        (Arc::clone(tls), builder.clone(), shutdown.clone());
                    tasks.spawn(async move {
                        let handshake = tokio::select! {
                            () = shutdown.cancelled() => return,
                            handshake = tls.accept(stream) => handshake,
                        };
                        match handshake {
                            Ok((stream, client_cert)) => {
                                conn.peer = Arc::new(Peer {
                                    client_cert,
                                    ..Peer::clone(&conn.peer)
                                });
                                conn.serve(&builder, TokioIo::new(stream)).await;
                            }
                            Err(e) => {
                                tracing::debug!(peer = %addr, error = %e, "TLS handshake failed");
                            }
                        }
                    });
                }
            }
        }
        drop(listener);
        tasks.close();
        tracing::info!(listener = %config.name, "HTTP listener stopped accepting; draining");
        if tokio::time::timeout(config.shutdown_grace, tasks.wait())
            .await
            .is_err()
        {
            force.cancel();
            tasks.wait().await;
        }
        let stopped = Stopped {
            connections_cut: cut.load(Ordering::Relaxed),
        };
        if stopped.connections_cut > 0 {
            tracing::warn!(
                listener = %config.name,
                connections = stopped.connections_cut,
                "closed connections still busy at the end of the grace period"
            );
        }
        stopped
    }
}

const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// One accepted connection and what its task needs.
struct Conn<H> {
    peer: Arc<Peer>,
    handler: Arc<H>,
    metrics: Arc<ListenerMetrics>,
    shutdown: CancellationToken,
    force: CancellationToken,
    cut: Arc<AtomicUsize>,
    /// Holds one of the listener's connection slots until the task ends.
    _permit: OwnedSemaphorePermit,
}

impl<H: Handler> Conn<H> {
    /// Builds the hyper connection now (the builder stays with the accept
    /// loop) and returns the future that drives it.
    fn serve<I>(self, builder: &http1::Builder, io: I) -> impl Future<Output = ()> + use<H, I>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let service = {
            let peer = self.peer.clone();
            let handler = self.handler.clone();
            let metrics = self.metrics.clone();
            service_fn(move |request| {
                let peer = peer.clone();
                let handler = handler.clone();
                let metrics = metrics.clone();
                async move {
                    let response = match handler.handle(request, &peer).await {
                        Ok(response) => response,
                        Err(e) => {
                            if e.status().is_server_error() {
                                tracing::debug!(peer = %peer.addr, error = %e, "request refused");
                            } else {
                                tracing::debug!(peer = %peer.addr, error = %e, "bad request");
                            }
                            e.to_response()
                        }
                    };
                    metrics.count(response.status());
                    Ok::<_, Infallible>(response)
                }
            })
        };
        let connection = builder.serve_connection(io, service);
        async move {
            // Move all of `self` in, so the connection slot (`_permit`) is
            // held until this task ends, not released when `serve` returns.
            let this = self;
            this.metrics.connections.inc();
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => Some(result),
                () = this.shutdown.cancelled() => {
                    // Finish the request in flight, if any, then close.
                    connection.as_mut().graceful_shutdown();
                    tokio::select! {
                        result = connection.as_mut() => Some(result),
                        () = this.force.cancelled() => None,
                    }
                }
            };
            match result {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    this.metrics.count_connection_error(&e);
                    tracing::debug!(peer = %this.peer.addr, error = %e, "HTTP connection failed");
                }
                None => {
                    this.cut.fetch_add(1, Ordering::Relaxed);
                }
            }
            this.metrics.connections.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::Notify;

    use super::*;
    use crate::http::json_response;
    use crate::http::testing::{DEADLINE, connect, metric, read_reply, request, send};

    /// Answers 200 with the peer's address; with `hang`, never answers.
    struct Test {
        hang: bool,
        started: Notify,
    }

    impl Handler for Test {
        async fn handle(
            &self,
            _request: Request<Incoming>,
            peer: &Peer,
        ) -> Result<Response<Body>, Error> {
            self.started.notify_one();
            if self.hang {
                std::future::pending::<()>().await;
            }
            Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({ "peer": &*peer.name }),
            ))
        }
    }

    struct Running {
        addr: SocketAddr,
        registry: Registry,
        handler: Arc<Test>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<Stopped>,
    }

    async fn start(hang: bool, tweak: impl FnOnce(&mut Config)) -> Running {
        let registry = Registry::new();
        let metrics = Metrics::register(&registry);
        let mut config = Config::new("test", "127.0.0.1:0".parse().expect("address"));
        tweak(&mut config);
        let server = Server::bind(config, &metrics).await.expect("bind");
        let addr = server.local_addr();
        let handler = Arc::new(Test {
            hang,
            started: Notify::new(),
        });
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(handler.clone(), shutdown.clone()));
        Running {
            addr,
            registry,
            handler,
            shutdown,
            task,
        }
    }

    async fn stopped(task: tokio::task::JoinHandle<Stopped>) -> Stopped {
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("server stops")
            .expect("server task")
    }

    #[tokio::test]
    async fn bind_reports_the_port_and_refuses_a_taken_address() {
        let running = start(false, |_| {}).await;
        assert_ne!(running.addr.port(), 0);
        let reply = send(running.addr, &request("GET", "/", &[], b"")).await;
        assert_eq!(reply.status, 200);
        assert!(
            reply.json()["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1:"))
        );
        let e = Server::bind(
            Config::new("again", running.addr),
            &Metrics::register(&Registry::new()),
        )
        .await
        .expect_err("address in use");
        assert!(matches!(e, Error::Bind { .. }), "{e}");
        running.shutdown.cancel();
        stopped(running.task).await;
    }

    #[tokio::test(start_paused = true)]
    async fn connections_over_the_limit_wait_for_a_slot() {
        let running = start(false, |c| {
            c.max_connections = 1;
            c.header_timeout = Duration::from_secs(3600);
        })
        .await;
        // A takes the only slot and keeps its connection open.
        let mut a = connect(running.addr).await;
        a.write_all(b"GET /a HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .expect("write a");
        assert_eq!(read_reply(&mut a).await.status, 200);
        // B is queued by the kernel but not served while A holds the slot.
        let mut b = connect(running.addr).await;
        b.write_all(&request("GET", "/b", &[], b""))
            .await
            .expect("write b");
        let mut byte = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_secs(5), b.read(&mut byte)).await;
        assert!(
            early.is_err(),
            "B was served beyond max_connections: {early:?} {byte:?}"
        );
        assert_eq!(
            metric(
                &running.registry.encode(),
                r#"switchyard_http_connections{listener="test"}"#
            ),
            Some(1.0)
        );
        // A leaves; B gets the slot.
        drop(a);
        assert_eq!(read_reply(&mut b).await.status, 200);
        running.shutdown.cancel();
        assert_eq!(stopped(running.task).await.connections_cut, 0);
    }

    #[tokio::test]
    async fn idle_keep_alive_connections_close_at_shutdown() {
        let running = start(false, |c| c.shutdown_grace = Duration::from_secs(3600)).await;
        let mut idle = connect(running.addr).await;
        idle.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .expect("write");
        assert_eq!(read_reply(&mut idle).await.status, 200);
        running.shutdown.cancel();
        // Not held for the hour of grace: the idle connection closes now.
        assert_eq!(stopped(running.task).await.connections_cut, 0);
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(DEADLINE, idle.read(&mut buf))
            .await
            .expect("closed");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        assert!(TcpStream::connect(running.addr).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn requests_still_busy_after_the_grace_period_are_cut() {
        let running = start(true, |c| c.shutdown_grace = Duration::from_secs(2)).await;
        let mut client = connect(running.addr).await;
        client
            .write_all(&request("GET", "/", &[], b""))
            .await
            .expect("write");
        tokio::time::timeout(DEADLINE, running.handler.started.notified())
            .await
            .expect("request reaches the handler");
        running.shutdown.cancel();
        assert_eq!(stopped(running.task).await.connections_cut, 1);
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(DEADLINE, client.read(&mut buf))
            .await
            .expect("closed");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
}
