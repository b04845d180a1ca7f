//! The lifecycle half of an output, beside the data half ([`Output`]):
//! built from its config entry with the router's shared resources
//! ([`Context`]), attached (bound or connected), waited on until it reaches
//! its peers, read for `/v1/status` ([`OutputStats`]), and flushed and
//! closed with a linger. [`super::build`] is the one place that knows every
//! kind: adding a kind is its own file, its config entry and one line
//! there.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{Metrics, Output, dealer};
use crate::message::request::RequestMetrics;
use crate::zmtp::endpoint::EndpointError;

/// The futures of [`Lifecycle`].
pub type LifecycleFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An output as the app runs it: the data half route workers call, and
/// what the app does with it around that.
pub trait Lifecycle: Output {
    /// Binds or connects as its entry says; the bound address, if it binds.
    /// Until then it has no peers (what it is given is refused as
    /// `no_subscriber`). Outputs with no socket answer `Ok(None)`.
    ///
    /// # Errors
    /// [`AttachError`] when it cannot bind, or an endpoint is refused.
    fn attach(&self) -> LifecycleFuture<'_, Result<Option<SocketAddr>, AttachError>>;

    /// Waits up to `timeout` for the output to reach every endpoint it
    /// connects to, woken by each new peer rather than polling; resolves at
    /// once for an output that binds or has no endpoints. A reload waits
    /// here so a rebuilt output does not take over with fewer peers than
    /// the one it replaces.
    fn wait_connected(&self, timeout: Duration) -> LifecycleFuture<'_, ()>;

    /// Whether the router may report ready as far as this output goes:
    /// false while an uplink that must connect never has. Default true.
    fn ready(&self) -> bool {
        true
    }

    /// Whether it reaches its peers now (`output_connected`): by default,
    /// whether it has a peer at all.
    fn connected(&self) -> bool {
        self.stats().peers > 0
    }

    /// Its counts for `/v1/status`.
    fn stats(&self) -> OutputStats;

    /// Gives its peers up to `linger` to take what it queued for them,
    /// then closes; what they did not take is counted as dropped.
    fn flush_and_close(&self, linger: Duration) -> LifecycleFuture<'_, ()>;
}

/// A built output, shared by the app, the route workers and the admin API.
pub type Handle = Arc<dyn Lifecycle>;

/// Why an output could not attach.
#[derive(Debug, thiserror::Error)]
#[error("output {output:?}: {source}")]
pub struct AttachError {
    /// The output.
    pub output: String,
    /// What the socket layer said.
    #[source]
    pub source: EndpointError,
}

/// What every output is built with: the families it counts into.
#[derive(Clone, Debug)]
pub struct Context {
    /// `output_*{output}`, every kind.
    pub outputs: Metrics,
    /// The ZMTP layer's families.
    pub zmtp: crate::zmtp::metrics::Metrics,
    /// The `zmq-dealer` service families.
    pub dealers: dealer::DealerMetrics,
    /// The request families (answers, late replies).
    pub requests: RequestMetrics,
    /// The ACL in force, swapped by reloads: what each `zmq-pub`
    /// subscriber may receive.
    pub security: crate::auth::Live,
    /// The TLS families, and everything whose certificates a reload reads
    /// again (the webhook's client certificate).
    pub tls: (crate::http::tls::Metrics, crate::http::tls::Reloads),
}

impl Context {
    /// The ZMTP families for an output's sockets: their drops and peers
    /// are also counted as the output's (`output_dropped_total`,
    /// `output_peers`).
    pub fn wire(&self) -> crate::zmtp::metrics::Metrics {
        self.zmtp.mirrored(self.outputs.mirror())
    }
}

/// One output's counters, as `/v1/status` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutputStats {
    /// The output's name.
    pub name: String,
    /// The output kind, e.g. `zmq-pub`.
    pub kind: String,
    /// Messages sent.
    pub sent: u64,
    /// Messages the output dropped.
    pub dropped: u64,
    /// Subscribers or workers connected now.
    pub peers: u64,
    /// A `zmq-dealer` output's services and their health; empty (and not
    /// shown) for other kinds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<dealer::ServiceStatus>,
    /// An uplink's connection (`nats`); not shown for other kinds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uplink: Option<crate::nats::UplinkStatus>,
    /// A `webhook` output's URL and last answer; not shown for other
    /// kinds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<super::webhook::WebhookStatus>,
}
