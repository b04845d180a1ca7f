//! The app's inputs and outputs as running things, built from their config
//! entries at start and by reloads, and stopped or closed again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Error, Families, attach};
use crate::admin::OutputStats;
use crate::config::{self, InputKind, OutputKind};
use crate::egress::Output;
use crate::egress::dealer::ZmqDealerOutput;
use crate::egress::zmq::{ZmqPubOutput, ZmqPushOutput};
use crate::ingress::zmq::{Socket as InputSocket, ZmqInput};
use crate::ingress::zmq_router::ZmqRouterInput;
use crate::ingress::{self, Sink};
use crate::zmtp;
use crate::zmtp::sub::Subscriptions;

/// One output, by kind, kept for statistics, reloads and shutdown.
#[derive(Clone)]
pub(crate) enum OutputHandle {
    Pub(Arc<ZmqPubOutput>),
    Push(Arc<ZmqPushOutput>),
    Dealer(Arc<ZmqDealerOutput>),
}

impl OutputHandle {
    pub(crate) fn as_output(&self) -> Arc<dyn Output> {
        match self {
            Self::Pub(o) => Arc::clone(o) as Arc<dyn Output>,
            Self::Push(o) => Arc::clone(o) as Arc<dyn Output>,
            Self::Dealer(o) => Arc::clone(o) as Arc<dyn Output>,
        }
    }

    pub(crate) fn stats(&self) -> OutputStats {
        match self {
            Self::Pub(o) => o.stats(),
            Self::Push(o) => o.stats(),
            Self::Dealer(o) => o.stats(),
        }
    }

    pub(crate) async fn flush_and_close(&self, linger: Duration) {
        match self {
            Self::Pub(o) => o.flush_and_close(linger).await,
            Self::Push(o) => o.flush_and_close(linger).await,
            Self::Dealer(o) => o.flush_and_close(linger).await,
        }
    }
}

/// An output and the config entry it was built from.
#[derive(Clone)]
pub(crate) struct RunningOutput {
    pub(crate) config: config::Output,
    pub(crate) handle: OutputHandle,
    /// Where it listens, once bound.
    pub(crate) addr: Option<SocketAddr>,
}

impl RunningOutput {
    /// Builds the output's socket without binding or connecting it: until
    /// [`RunningOutput::attach`], it has no peers (what it is given is
    /// refused as `no_subscriber`).
    pub(crate) fn create(output: &config::Output, families: &Families) -> Self {
        let zmq = output.zmq();
        let options = zmq.options.socket_options();
        let handle = match &output.kind {
            OutputKind::ZmqPub(_) => {
                let socket = zmtp::publish::PubSocket::new(&output.name, options, &families.zmtp);
                OutputHandle::Pub(Arc::new(ZmqPubOutput::new(
                    &output.name,
                    socket,
                    zmq.envelope,
                    &families.outputs,
                    &families.zmtp,
                )))
            }
            OutputKind::ZmqDealer(d) => OutputHandle::Dealer(Arc::new(ZmqDealerOutput::new(
                &output.name,
                d.dealer_config(),
                options,
                zmq.envelope,
                &families.outputs,
                &families.zmtp,
                &families.dealers,
                &families.requests,
            ))),
            OutputKind::ZmqPush(_) => {
                let socket = zmtp::push::PushSocket::new(&output.name, options, &families.zmtp);
                OutputHandle::Push(Arc::new(ZmqPushOutput::new(
                    &output.name,
                    socket,
                    zmq.envelope,
                    &families.outputs,
                    &families.zmtp,
                )))
            }
        };
        Self {
            config: output.clone(),
            handle,
            addr: None,
        }
    }

    /// Binds or connects the output as its entry says; the bound address.
    ///
    /// # Errors
    /// [`Error::Endpoint`] when it cannot bind (or an endpoint is bad).
    pub(crate) async fn attach(&self) -> Result<Option<SocketAddr>, Error> {
        let component = format!("output {:?}", self.config.name);
        let zmq = self.config.zmq();
        match &self.handle {
            OutputHandle::Pub(o) => attach(o.socket(), &zmq.attach, &component).await,
            OutputHandle::Push(o) => attach(o.socket(), &zmq.attach, &component).await,
            OutputHandle::Dealer(o) => attach(o.as_ref(), &zmq.attach, &component).await,
        }
    }

    /// Waits up to `grace` for a connecting output to reach each of its
    /// endpoints, so an output a reload rebuilds does not take over with
    /// fewer peers than the one it replaces had (a `zmq-dealer` output would
    /// answer `NO_SERVICE` meanwhile). Endpoints that are down cost the
    /// whole grace; a bound output does not wait.
    pub(crate) async fn wait_connected(&self, grace: Duration) {
        let config::Attach::Connect(endpoints) = &self.config.zmq().attach else {
            return;
        };
        let want = endpoints.len() as u64;
        let deadline = tokio::time::Instant::now() + grace;
        while self.handle.stats().peers < want && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// True when `other` binds the same fixed address as this output, so
    /// this one must close before the other can bind.
    pub(crate) fn same_bind(&self, other: &config::Output) -> bool {
        match (&self.config.zmq().attach, &other.zmq().attach) {
            (config::Attach::Bind(a), config::Attach::Bind(b)) => a == b && a.port() != 0,
            _ => false,
        }
    }
}

/// What starting an input needs from the app.
#[derive(Clone)]
pub(crate) struct InputContext {
    pub(crate) families: Arc<Families>,
    pub(crate) sink: Arc<dyn Sink>,
    /// Input tasks are tracked here, so a shutdown waits for them.
    pub(crate) tracker: TaskTracker,
    /// Stopped request inputs that still answer their pending requests;
    /// a shutdown waits for them after closing the outputs.
    pub(crate) lingering: TaskTracker,
    /// Cancelled when the app stops intake; each input's own stop token is
    /// a child of it.
    pub(crate) stop: CancellationToken,
    /// The longest an HTTP publish waits for room under `block` routes
    /// (the longest route `block_timeout`): an HTTP input's shutdown grace
    /// stays above it.
    pub(crate) block_timeout: Duration,
    /// How long an HTTP input drains its requests at shutdown.
    pub(crate) shutdown_grace: Duration,
}

/// A running input.
pub(crate) struct RunningInput {
    pub(crate) config: config::Input,
    /// The address it listens on, if it binds.
    pub(crate) addr: Option<SocketAddr>,
    /// A `zmq-sub` input's subscriptions, changed by reloads.
    pub(crate) subscriptions: Option<Subscriptions>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningInput {
    /// Binds (or connects) `input` and starts reading; a `zmq-sub` input is
    /// subscribed to `prefixes` first.
    ///
    /// # Errors
    /// [`Error::Endpoint`] or [`Error::Http`] when it cannot bind.
    pub(crate) async fn start(
        input: &config::Input,
        prefixes: &[String],
        ctx: &InputContext,
    ) -> Result<Self, Error> {
        let component = format!("input {:?}", input.name);
        let families = &ctx.families;
        let stop = ctx.stop.child_token();
        let mut subscriptions = None;
        let (addr, task) = match &input.kind {
            InputKind::ZmqSub(zmq) => {
                let socket = zmtp::sub::SubSocket::new(
                    &input.name,
                    zmq.options.socket_options(),
                    &families.zmtp,
                );
                for prefix in prefixes {
                    socket.subscribe(Bytes::copy_from_slice(prefix.as_bytes()));
                }
                subscriptions = Some(socket.subscriptions());
                let addr = attach(&socket, &zmq.attach, &component).await?;
                let reader = ZmqInput::new(
                    &input.name,
                    InputSocket::Sub(socket),
                    zmq.envelope,
                    Arc::clone(&ctx.sink),
                    &families.inputs,
                );
                (addr, ctx.tracker.spawn(reader.run(stop.clone())))
            }
            InputKind::ZmqPull(zmq) => {
                let socket = zmtp::pull::PullSocket::new(
                    &input.name,
                    zmq.options.socket_options(),
                    &families.zmtp,
                );
                let addr = attach(&socket, &zmq.attach, &component).await?;
                let reader = ZmqInput::new(
                    &input.name,
                    InputSocket::Pull(socket),
                    zmq.envelope,
                    Arc::clone(&ctx.sink),
                    &families.inputs,
                );
                (addr, ctx.tracker.spawn(reader.run(stop.clone())))
            }
            InputKind::ZmqRouter(router) => {
                let zmq = &router.socket;
                let socket = zmtp::router::RouterSocket::new(
                    &input.name,
                    zmq.options.socket_options(),
                    &families.zmtp,
                );
                let addr = attach(&socket, &zmq.attach, &component).await?;
                let reader = ZmqRouterInput::new(
                    &input.name,
                    socket,
                    zmq.envelope,
                    Arc::clone(&ctx.sink),
                    &families.inputs,
                    families.requests.for_input(&input.name),
                    router.max_pending,
                );
                // The intake is done with the input once it handed over what
                // it read; its connections stay for the answers.
                let handed_over = CancellationToken::new();
                ctx.lingering
                    .spawn(reader.run(stop.clone(), handed_over.clone()));
                let task = ctx
                    .tracker
                    .spawn(async move { handed_over.cancelled().await });
                (addr, task)
            }
            InputKind::Http(http_config) => {
                let mut cfg = ingress::http::Config::new(&input.name, http_config.listen);
                cfg.max_body = http_config.max_body;
                cfg.header_timeout = http_config.header_timeout;
                cfg.body_timeout = http_config.body_timeout;
                cfg.max_batch = http_config.max_batch;
                cfg.shutdown_grace = ctx.shutdown_grace.max(ctx.block_timeout);
                let metrics = ingress::http::Metrics::new(
                    &families.inputs,
                    &families.http,
                    &families.requests,
                );
                let server = ingress::http::HttpInput::bind(cfg, Arc::clone(&ctx.sink), &metrics)
                    .await
                    .map_err(|source| Error::Http { component, source })?;
                let addr = server.local_addr();
                let until = stop.clone();
                let task = ctx.tracker.spawn(async move {
                    server.run(until).await;
                });
                (Some(addr), task)
            }
        };
        Ok(Self {
            config: input.clone(),
            addr,
            subscriptions,
            stop,
            task,
        })
    }

    /// Stops reading (what was read is handed over first), closes the
    /// listener, and waits for it.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// True when `other` listens on the same fixed address as this input,
    /// so this one must stop before the other can bind.
    pub(crate) fn same_listener(&self, other: &config::Input) -> bool {
        let fixed = |a: Option<SocketAddr>| a.filter(|a| a.port() != 0);
        match (fixed(listen_addr(&self.config)), fixed(listen_addr(other))) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }
}

/// The address an input entry binds or listens on, if any.
fn listen_addr(input: &config::Input) -> Option<SocketAddr> {
    match (&input.kind, input.zmq()) {
        (InputKind::Http(h), _) => Some(h.listen),
        (_, Some(z)) => match &z.attach {
            config::Attach::Bind(a) => Some(*a),
            config::Attach::Connect(_) => None,
        },
        (_, None) => None,
    }
}
