//! The lifecycle of an input: [`super::start`] builds one from its config entry
//! with the router's shared resources ([`Context`]), binds or connects it
//! and spawns its reader; the [`Running`] input it returns is stopped
//! again by a reload or the shutdown. [`super::start`] is the one place that
//! knows every kind: adding a kind is its own file, its config entry and
//! one line there.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Metrics, Sink};
use crate::message::request::RequestMetrics;
use crate::zmtp::endpoint::EndpointError;
use crate::zmtp::sub::Subscriptions;

/// What starting an input needs from the router.
#[derive(Clone)]
pub struct Context {
    /// The authentication and permission settings in force, swapped by
    /// every reload.
    pub security: crate::auth::Live,
    /// The TLS families, and the listeners whose certificates a reload
    /// reads again.
    pub tls: (crate::http::tls::Metrics, crate::http::tls::Reloads),
    /// `input_*{input}`, every kind.
    pub inputs: Metrics,
    /// The ZMTP layer's families.
    pub zmtp: crate::zmtp::metrics::Metrics,
    /// The request families (the `zmq-router` input, the HTTP bridge).
    pub requests: RequestMetrics,
    /// The HTTP server families.
    pub http: crate::http::Metrics,
    /// Where inputs offer what they accept (the pipeline).
    pub sink: Arc<dyn Sink>,
    /// Input tasks are tracked here, so a shutdown waits for them.
    pub tracker: TaskTracker,
    /// Stopped request inputs that still answer their pending requests;
    /// a shutdown waits for them after closing the outputs.
    pub lingering: TaskTracker,
    /// Cancelled when the router stops intake; each input's own stop
    /// token is a child of it.
    pub stop: CancellationToken,
    /// The longest `block_timeout` of the routes (each route holds a
    /// publish for its own): an HTTP input's shutdown grace stays above
    /// it, so a publish waiting on a route is answered before it closes.
    pub block_timeout: Duration,
    /// How long an HTTP input drains its requests at shutdown.
    pub shutdown_grace: Duration,
    /// What `/ready` asks of the inputs: uplinks that must have connected.
    pub readiness: Readiness,
}

/// A probe `/ready` asks: true once the input may count as ready.
pub type Probe = Arc<dyn Fn() -> bool + Send + Sync>;

/// What `/v1/status` shows of an input that connects to a server (the
/// NATS inputs), read when asked.
pub type StatusProbe = Arc<dyn Fn() -> InputStatus + Send + Sync>;

/// An input with an uplink, as `/v1/status` shows it under `inputs`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InputStatus {
    /// The input's name.
    pub name: String,
    /// Its kind (`nats`, `nats-jetstream`).
    pub kind: &'static str,
    /// Its connection: connected, to which server, the last error.
    pub uplink: crate::nats::UplinkStatus,
    /// Messages taken from the server and not yet answered for, and the
    /// most it takes (a JetStream input's `max_ack_pending`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
}

/// A window of messages in flight: how much of it is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Window {
    /// In use now.
    pub in_use: usize,
    /// Its size.
    pub max: usize,
}

/// The probes of the running inputs that connect to a server: whether
/// they are ready (a NATS input is not until it has connected once), and
/// their state for `/v1/status`. Cheap to clone; shared.
#[derive(Clone, Default)]
pub struct Readiness(Arc<Mutex<Probes>>);

/// The last registration's id, and each registered input's probes by id.
type Probes = (u64, BTreeMap<u64, (Probe, StatusProbe)>);

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Readiness")
    }
}

impl Readiness {
    /// Adds `probe` and `status` until the returned registration is
    /// dropped.
    pub fn register(&self, probe: Probe, status: StatusProbe) -> Registration {
        let mut inner = self.0.lock().expect("readiness lock");
        inner.0 += 1;
        let id = inner.0;
        inner.1.insert(id, (probe, status));
        Registration {
            readiness: self.clone(),
            id,
        }
    }

    /// True when every probe is.
    pub fn ready(&self) -> bool {
        let probes: Vec<Probe> = self
            .0
            .lock()
            .expect("readiness lock")
            .1
            .values()
            .map(|(p, _)| Arc::clone(p))
            .collect();
        probes.iter().all(|p| p())
    }

    /// Each registered input's state, in the order they started.
    pub fn statuses(&self) -> Vec<InputStatus> {
        let probes: Vec<StatusProbe> = self
            .0
            .lock()
            .expect("readiness lock")
            .1
            .values()
            .map(|(_, s)| Arc::clone(s))
            .collect();
        probes.iter().map(|s| s()).collect()
    }
}

/// A probe in a [`Readiness`], removed when dropped.
#[derive(Debug)]
pub struct Registration {
    readiness: Readiness,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.readiness
            .0
            .lock()
            .expect("readiness lock")
            .1
            .remove(&self.id);
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("block_timeout", &self.block_timeout)
            .field("shutdown_grace", &self.shutdown_grace)
            .finish_non_exhaustive()
    }
}

/// Why an input could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A ZeroMQ input could not bind, or an endpoint was refused.
    #[error("input {input:?}: {source}")]
    Endpoint {
        /// The input.
        input: String,
        /// What the socket layer said.
        #[source]
        source: EndpointError,
    },
    /// An HTTP input could not listen.
    #[error("input {input:?}: {source}")]
    Http {
        /// The input.
        input: String,
        /// What the HTTP layer said.
        #[source]
        source: crate::http::Error,
    },
    /// An HTTP input's certificate or key did not load (the files changed
    /// since the config was read).
    #[error("input {input:?}: tls: {reason}")]
    Tls {
        /// The input.
        input: String,
        /// What is wrong with the files.
        reason: String,
    },
}

/// A started input.
#[derive(Debug)]
pub struct Running {
    /// Where it listens, once bound (port 0 resolved).
    pub addr: Option<SocketAddr>,
    /// A `zmq-sub` input's subscriptions (the literal prefixes of the
    /// route patterns), changed by reloads.
    pub subscriptions: Option<Subscriptions>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// Its readiness probe, if it has one; removed when it is dropped.
    ready: Option<Registration>,
}

impl Running {
    /// An input listening on `addr` whose reader is `task`, stopped by
    /// cancelling `stop`.
    pub(super) fn new(
        addr: Option<SocketAddr>,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    ) -> Self {
        Self {
            addr,
            subscriptions: None,
            stop,
            task,
            ready: None,
        }
    }

    /// The same input, with its readiness and status probes registered in
    /// `readiness`.
    pub(super) fn with_ready(
        mut self,
        readiness: &Readiness,
        probe: Probe,
        status: StatusProbe,
    ) -> Self {
        self.ready = Some(readiness.register(probe, status));
        self
    }

    /// Stops reading (what was read is handed over first), closes the
    /// listener, and waits for it.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Binds or connects the socket of ZeroMQ input `input` as `settings`
/// say; the bound address.
///
/// # Errors
/// [`StartError::Endpoint`] when it cannot bind, or an endpoint is refused.
pub(super) async fn attach<S: crate::zmtp::endpoint::Attach>(
    input: &str,
    settings: &crate::config::ZmqSocket,
    socket: &S,
) -> Result<Option<SocketAddr>, StartError> {
    settings
        .attach
        .apply(socket)
        .await
        .map_err(|source| StartError::Endpoint {
            input: input.to_owned(),
            source,
        })
}
