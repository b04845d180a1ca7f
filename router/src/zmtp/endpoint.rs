//! `tcp://` endpoints: parsing, `bind` with its accept loop, and `connect`
//! with its reconnect loop. Shared by every role.
//!
//! - **bind** resolves the host (`*` = every IPv4 interface), listens, and
//!   returns the bound address (port 0 picks a free port). Its accept loop
//!   keeps at most `max_connections` connections (handshaking, established
//!   or closing); an excess connection is closed at once and counted in
//!   `connections_rejected_total{reason="max_connections"}`. Accept errors
//!   such as running out of file descriptors are counted
//!   (`reason="accept_error"`) and back off from 10 ms doubling to 1 s
//!   instead of spinning.
//! - **connect** returns at once and keeps one connection to the endpoint
//!   alive forever: host names are resolved on every attempt, a failed
//!   attempt waits `reconnect_interval` doubling up to
//!   `reconnect_interval_max`, and the delay resets once a connection got
//!   through its handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::timeout;

use super::connection::{self, Linger, Outcome, Role, SocketCore};
use super::options::Options;

/// Errors of parsing, binding or connecting an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// Not of the form `tcp://host:port`.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    Invalid {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The host name did not resolve to any address.
    #[error("cannot resolve {endpoint:?}: {source}")]
    Resolve {
        /// The endpoint as given.
        endpoint: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// Listening failed (address in use, permission, ...).
    #[error("cannot bind {endpoint:?}: {source}")]
    Bind {
        /// The endpoint as given.
        endpoint: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The socket was closed.
    #[error("the socket is closed")]
    Closed,
}

/// A parsed `tcp://host:port` endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name, IP literal (IPv6 without brackets) or `*`.
    pub host: String,
    /// TCP port (0 = any, for bind).
    pub port: u16,
}

impl Endpoint {
    /// Parses `tcp://host:port`, `tcp://[v6]:port` or `tcp://*:port`.
    ///
    /// # Errors
    /// [`EndpointError::Invalid`] for another transport or a malformed
    /// address.
    pub fn parse(endpoint: &str) -> Result<Self, EndpointError> {
        let invalid = |reason| EndpointError::Invalid {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let rest = endpoint
            .strip_prefix("tcp://")
            .ok_or_else(|| invalid("only tcp:// is supported"))?;
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| invalid("missing :port"))?;
        let port: u16 = port.parse().map_err(|_| invalid("bad port"))?;
        let host = match host.strip_prefix('[') {
            Some(h) => h
                .strip_suffix(']')
                .ok_or_else(|| invalid("unclosed ["))?
                .to_owned(),
            None if host.contains(':') => return Err(invalid("IPv6 hosts need [brackets]")),
            None => host.to_owned(),
        };
        if host.is_empty() {
            return Err(invalid("empty host"));
        }
        Ok(Self { host, port })
    }

    async fn resolve(&self, deadline: Duration) -> std::io::Result<Vec<SocketAddr>> {
        let host = if self.host == "*" {
            "0.0.0.0"
        } else {
            &self.host
        };
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let addrs: Vec<SocketAddr> = timeout(deadline, tokio::net::lookup_host((host, self.port)))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??
            .collect();
        if addrs.is_empty() {
            return Err(std::io::ErrorKind::NotFound.into());
        }
        Ok(addrs)
    }
}

/// Most time one name lookup may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Accept-error backoff bounds.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Binds `endpoint` and spawns its accept loop; returns the bound address.
pub(crate) async fn bind<R: Role>(
    core: &Arc<SocketCore>,
    role: &Arc<R>,
    endpoint: &str,
) -> Result<SocketAddr, EndpointError> {
    if core.cancel.is_cancelled() {
        return Err(EndpointError::Closed);
    }
    let ep = Endpoint::parse(endpoint)?;
    let addrs = ep
        .resolve(RESOLVE_TIMEOUT)
        .await
        .map_err(|source| EndpointError::Resolve {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    let mut last = std::io::Error::from(std::io::ErrorKind::AddrNotAvailable);
    for addr in addrs {
        match listen(addr, &core.options) {
            Ok(listener) => {
                let local = listener
                    .local_addr()
                    .map_err(|source| EndpointError::Bind {
                        endpoint: endpoint.to_owned(),
                        source,
                    })?;
                core.tracker
                    .spawn(accept_loop(listener, core.clone(), role.clone()));
                return Ok(local);
            }
            Err(e) => last = e,
        }
    }
    Err(EndpointError::Bind {
        endpoint: endpoint.to_owned(),
        source: last,
    })
}

/// Backlog of a listening socket.
const BACKLOG: u32 = 1024;

/// A TCP socket for `addr` with the configured kernel buffer sizes.
fn tcp_socket(addr: SocketAddr, options: &Options) -> std::io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(n) = options.send_buffer_size {
        socket.set_send_buffer_size(n)?;
    }
    if let Some(n) = options.recv_buffer_size {
        socket.set_recv_buffer_size(n)?;
    }
    Ok(socket)
}

/// Listens on `addr`; accepted connections inherit the buffer sizes.
fn listen(addr: SocketAddr, options: &Options) -> std::io::Result<TcpListener> {
    let socket = tcp_socket(addr, options)?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Decrements the endpoint's connection count when a connection task ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_loop<R: Role>(listener: TcpListener, core: Arc<SocketCore>, role: Arc<R>) {
    let active = Arc::new(AtomicUsize::new(0));
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            _ = core.cancel.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                if active.load(Ordering::Relaxed) >= core.options.max_connections {
                    core.metrics.rejected_max_connections.inc();
                    drop(stream);
                    continue;
                }
                active.fetch_add(1, Ordering::Relaxed);
                let slot = Slot(active.clone());
                let (core2, role2) = (core.clone(), role.clone());
                core.tracker.spawn(async move {
                    let _slot = slot;
                    connection::run(stream, core2, role2, Linger::Inline).await;
                });
            }
            Err(e) if is_transient(&e) => {}
            Err(e) => {
                tracing::warn!(socket = core.metrics.name(), error = %e, ?backoff, "zmtp accept error; backing off");
                core.metrics.rejected_accept_error.inc();
                tokio::select! {
                    _ = core.cancel.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

/// Errors about one half-open connection, not about the listener.
fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted
    )
}

/// Validates `endpoint` and spawns a loop that keeps a connection to it.
pub(crate) fn connect<R: Role>(
    core: &Arc<SocketCore>,
    role: &Arc<R>,
    endpoint: &str,
) -> Result<(), EndpointError> {
    if core.cancel.is_cancelled() {
        return Err(EndpointError::Closed);
    }
    let ep = Endpoint::parse(endpoint)?;
    core.tracker
        .spawn(connect_loop(ep, core.clone(), role.clone()));
    Ok(())
}

async fn connect_loop<R: Role>(ep: Endpoint, core: Arc<SocketCore>, role: Arc<R>) {
    let first = core.options.reconnect_interval;
    let mut delay = first;
    loop {
        let stream = tokio::select! {
            _ = core.cancel.cancelled() => return,
            s = attempt(&ep, &core.options) => s,
        };
        if let Some(stream) = stream
            && connection::run(stream, core.clone(), role.clone(), Linger::Detached).await
                == Outcome::Established
        {
            delay = first;
        }
        tokio::select! {
            _ = core.cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(core.options.reconnect_interval_max);
    }
}

async fn attempt(ep: &Endpoint, options: &Options) -> Option<TcpStream> {
    let addrs = match ep.resolve(RESOLVE_TIMEOUT).await {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(host = %ep.host, error = %e, "zmtp connect: resolve failed");
            return None;
        }
    };
    for addr in addrs {
        let socket = match tcp_socket(addr, options) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%addr, error = %e, "zmtp connect: socket setup failed");
                continue;
            }
        };
        match timeout(options.handshake_timeout, socket.connect(addr)).await {
            Ok(Ok(s)) => return Some(s),
            Ok(Err(e)) => tracing::debug!(%addr, error = %e, "zmtp connect failed"),
            Err(_) => tracing::debug!(%addr, "zmtp connect timed out"),
        }
    }
    None
}

/// Bind and connect, the same on every role, so a caller can attach any
/// socket from its config without knowing the role. Implemented for each
/// role's socket by `handle::socket_methods!`.
pub trait Attach {
    /// Listens on `endpoint`; returns the bound address (port 0 resolved).
    ///
    /// # Errors
    /// A malformed endpoint, a name that does not resolve, or a failed bind.
    fn bind(
        &self,
        endpoint: &str,
    ) -> impl std::future::Future<Output = Result<SocketAddr, EndpointError>> + Send;

    /// Connects to `endpoint` in the background, reconnecting forever.
    ///
    /// # Errors
    /// A malformed endpoint, or a closed socket.
    fn connect(&self, endpoint: &str) -> Result<(), EndpointError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_endpoints() {
        let ep = |s| Endpoint::parse(s).map(|e| (e.host, e.port));
        assert_eq!(
            ep("tcp://127.0.0.1:5555").ok(),
            Some(("127.0.0.1".into(), 5555))
        );
        assert_eq!(ep("tcp://*:0").ok(), Some(("*".into(), 0)));
        assert_eq!(ep("tcp://[::1]:7").ok(), Some(("::1".into(), 7)));
        assert_eq!(ep("tcp://localhost:9").ok(), Some(("localhost".into(), 9)));
        for bad in [
            "ipc:///tmp/x",
            "tcp://host",
            "tcp://:5",
            "tcp://h:70000",
            "tcp://::1:5",
            "tcp://[::1:5",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn resolves_localhost() {
        let ep = Endpoint::parse("tcp://localhost:1").expect("valid");
        let addrs = ep.resolve(Duration::from_secs(10)).await.expect("resolves");
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
