//! The app's inputs and outputs as running things, each with the config
//! entry it was built from: built at start and by reloads, and stopped or
//! closed again. Nothing here knows a kind: [`crate::egress::build`] and
//! [`crate::ingress::start`] do, and the reload's plan (`reload/plan.rs`)
//! reads each entry's declared [`resources`](config::Output::resources) to
//! know which entries must give way before others can start.

use std::net::SocketAddr;
use std::time::Duration;

use super::Error;
use crate::config;
use crate::egress;
use crate::ingress;

/// An output and the config entry it was built from.
#[derive(Clone)]
pub(crate) struct RunningOutput {
    pub(crate) config: config::Output,
    pub(crate) handle: egress::Handle,
    /// Where it listens, once bound.
    pub(crate) addr: Option<SocketAddr>,
}

impl RunningOutput {
    /// Builds the output without attaching it: until
    /// [`RunningOutput::attach`], it has no peers (what it is given is
    /// refused as `no_subscriber`).
    pub(crate) fn create(entry: &config::Output, ctx: &egress::Context) -> Self {
        Self {
            config: entry.clone(),
            handle: egress::build(entry, ctx),
            addr: None,
        }
    }

    /// Binds or connects the output as its entry says, and records where
    /// it listens.
    ///
    /// # Errors
    /// [`Error::Output`] when it cannot bind (or an endpoint is bad).
    pub(crate) async fn attach(&mut self) -> Result<Option<SocketAddr>, Error> {
        self.addr = self.handle.attach().await?;
        Ok(self.addr)
    }

    /// Waits up to `grace` for the output to reach every endpoint it
    /// connects to, so one a reload rebuilds does not take over with fewer
    /// peers than the one it replaces had.
    pub(crate) async fn wait_connected(&self, grace: Duration) {
        self.handle.wait_connected(grace).await;
    }
}

/// A running input and the config entry it was started from.
#[derive(Debug)]
pub(crate) struct RunningInput {
    pub(crate) config: config::Input,
    pub(crate) running: ingress::Running,
}

impl RunningInput {
    /// Starts `entry` (binds or connects it and reads); a `zmq-sub` input
    /// is subscribed to `prefixes` first.
    ///
    /// # Errors
    /// [`Error::Input`] when it cannot bind.
    pub(crate) async fn start(
        entry: &config::Input,
        prefixes: &[String],
        ctx: &ingress::Context,
    ) -> Result<Self, Error> {
        Ok(Self {
            config: entry.clone(),
            running: ingress::start(entry, prefixes, ctx).await?,
        })
    }

    /// Where it listens, if it binds.
    pub(crate) fn addr(&self) -> Option<SocketAddr> {
        self.running.addr
    }

    /// Stops reading (what was read is handed over first), closes the
    /// listener, and waits for it.
    pub(crate) async fn stop(self) {
        self.running.stop().await;
    }
}
