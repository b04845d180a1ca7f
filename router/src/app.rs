//! The application: builds every module from a validated [`Config`], wires
//! them together, and shuts them down in order. The only module that knows
//! all the others.
//!
//! Start: metrics, outputs (bound or connecting), the pipeline and its
//! route workers, inputs (the `zmq-sub` ones subscribed to the routes'
//! literal prefixes), the admin listener; then `/ready` turns true.
//!
//! Shutdown: inputs stop reading and hand over what they had buffered; the
//! pipeline stops intake and drains its queues into the outputs until the
//! grace period ends, counting what is left as dropped; the outputs flush
//! their peers' queues; the admin listener goes last, so `/metrics` can be
//! read until the end.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, PluginStats};
use crate::config::{self, Config};
use crate::egress::{Output, OutputStats};
use crate::ingress::{self, Sink};
use crate::message::Message;
use crate::message::request::RequestMetrics;
use crate::metrics::Registry;
use crate::pipeline::{
    self, Pipeline, PipelineMetrics, PipelineSnapshot, QueueSpec, RouteSpec, ShutdownReport,
};
use crate::store::{DeadLetters, dead};
use crate::zmtp;
use crate::{egress, http};

mod io;
mod plugins;
mod reload;

use io::{RunningInput, RunningOutput};
use plugins::Plugins;
pub use plugins::{Validated, check_plugins, validate};
use reload::Reloader;
pub use reload::{ReloadError, Report as ReloadReport, Status as ReloadStatus};

/// Why the application could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An output could not bind or connect.
    #[error(transparent)]
    Output(#[from] egress::AttachError),
    /// An input could not bind or connect.
    #[error(transparent)]
    Input(#[from] ingress::StartError),
    /// The admin listener could not bind.
    #[error("{component}: {source}")]
    Http {
        /// The input or the admin listener.
        component: String,
        /// The underlying error.
        source: http::Error,
    },
    /// The route table could not be built.
    #[error("routes: {0}")]
    Pipeline(#[from] pipeline::Error),
    /// A plugin could not be loaded, or a route uses one wrongly: config
    /// problems, one per line.
    #[error("{0}")]
    Plugins(config::ConfigErrors),
    /// The `[[auth]]` keys cannot be built (a key file changed since the
    /// config was read).
    #[error("{0}")]
    Auth(String),
    /// `[router] data_dir` cannot be created or is held by another router.
    #[error("data_dir {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Where the router listens, once bound (port 0 resolved).
#[derive(Debug, Clone, Serialize)]
pub struct Bound {
    /// The admin listener.
    pub admin: SocketAddr,
    /// Inputs that bind, by name.
    pub inputs: BTreeMap<String, SocketAddr>,
    /// Outputs that bind, by name.
    pub outputs: BTreeMap<String, SocketAddr>,
}

/// A running router.
pub struct App {
    state: Arc<State>,
    stop_intake: CancellationToken,
    intake: TaskTracker,
    stop_admin: CancellationToken,
    admin: tokio::task::JoinHandle<http::Stopped>,
    stop_reloads: CancellationToken,
    reloads: tokio::task::JoinHandle<()>,
    grace: Duration,
    bound: Bound,
    /// Holds `[router] data_dir` for this process while it runs.
    _data_dir: Option<crate::store::DirLock>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

/// What the admin endpoints read.
struct State {
    pipeline: Pipeline,
    /// The dead-letter store, when `[router] data_dir` is set.
    dead_letters: Option<Arc<DeadLetters>>,
    reloader: Arc<Reloader>,
    ready: AtomicBool,
    /// The output families (`output_connected` is refreshed per scrape).
    outputs: crate::egress::Metrics,
}

impl admin::State for State {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && self.reloader.outputs().iter().all(|o| o.handle.ready())
            && self.reloader.inputs_ready()
    }

    fn refresh_metrics(&self) {
        for output in self.reloader.outputs().iter() {
            self.outputs
                .connected(&output.config.name)
                .set(i64::from(output.handle.connected()));
        }
    }

    fn config_generation(&self) -> u64 {
        self.pipeline.generation()
    }

    fn pipeline(&self) -> PipelineSnapshot {
        self.pipeline.snapshot()
    }

    fn outputs(&self) -> Vec<OutputStats> {
        self.reloader
            .outputs()
            .iter()
            .map(|o| o.handle.stats())
            .collect()
    }

    fn inputs(&self) -> Vec<crate::ingress::InputStatus> {
        self.reloader.input_statuses()
    }

    fn plugins(&self) -> Vec<PluginStats> {
        self.reloader.plugins().stats()
    }

    fn reload_status(&self) -> serde_json::Value {
        serde_json::to_value(self.reloader.status()).unwrap_or_default()
    }

    fn dead_letters(&self) -> Option<Arc<DeadLetters>> {
        self.dead_letters.clone()
    }

    fn inject<'a>(&'a self, route: &'a str, messages: Vec<Message>) -> admin::InjectFuture<'a> {
        Box::pin(
            self.pipeline
                .inject(route, messages, ingress::Wait::Bounded),
        )
    }

    fn reload(&self, dry_run: bool, force: bool, text: Option<String>) -> admin::ReloadFuture<'_> {
        Box::pin(async move {
            match self.reloader.reload(dry_run, force, text).await {
                Ok(report) => Ok(serde_json::to_value(report).unwrap_or_default()),
                Err(ReloadError::Invalid(problems)) => {
                    Err(http::Error::InvalidConfig(problems.to_string()))
                }
                Err(ReloadError::Conflict(why)) => Err(http::Error::Conflict(why)),
            }
        })
    }
}

/// The families of every module, registered once.
pub(crate) struct Families {
    pub(crate) registry: Registry,
    /// What every output is built with.
    pub(crate) outputs: egress::Context,
    pub(crate) inputs: ingress::Metrics,
    pub(crate) http: http::Metrics,
    pub(crate) auth: crate::auth::Metrics,
    pub(crate) tls: http::tls::Metrics,
    pipeline: PipelineMetrics,
    dead_letters: dead::Metrics,
}

impl Families {
    fn new() -> Self {
        let registry = Registry::new();
        let build = registry.gauge_vec(
            "switchyard_build_info",
            "Always 1; the version label says which build runs.",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let auth = crate::auth::Metrics::register(&registry);
        let tls = http::tls::Metrics::register(&registry, auth.failures());
        let security = Arc::new(arc_swap::ArcSwap::from_pointee(
            crate::auth::Security::open(&auth),
        ));
        let zmtp = zmtp::metrics::Metrics::new(&registry).with_auth_failures(auth.failures());
        Self {
            auth,
            tls: tls.clone(),
            outputs: egress::Context {
                outputs: egress::Metrics::register(&registry),
                zmtp,
                dealers: egress::dealer::DealerMetrics::register(&registry),
                requests: RequestMetrics::register(&registry),
                security,
                tls: (tls.clone(), http::tls::Reloads::default()),
            },
            inputs: ingress::Metrics::register(&registry),
            http: http::Metrics::register(&registry),
            pipeline: PipelineMetrics::new(&registry),
            dead_letters: dead::Metrics::register(&registry),
            registry,
        }
    }
}

impl App {
    /// Builds and starts everything `config` describes. `path` is the file
    /// it came from, for logs.
    ///
    /// # Errors
    /// An [`Error`] when a port cannot be bound or the routes cannot be
    /// built; whatever had started is stopped again.
    pub async fn start(config: Config, path: PathBuf) -> Result<Self, Error> {
        // One router per data_dir: two writing one durable queue would
        // corrupt it.
        let data_dir = config
            .router
            .data_dir
            .as_ref()
            .map(|dir| {
                crate::store::lock_dir(dir).map_err(|source| Error::DataDir {
                    path: dir.display().to_string(),
                    source,
                })
            })
            .transpose()?;
        let families = Families::new();
        // One Live for every entry, swapped by reloads; in force before any
        // output or input starts.
        families.outputs.security.store(Arc::new(
            crate::auth::Security::build(&config, &families.auth).map_err(Error::Auth)?,
        ));
        let dead_letters = match &config.router.data_dir {
            Some(dir) => Some(open_dead_letters(dir, &config.dead_letters, &families).await?),
            None => None,
        };
        // Watch the files from now on, before anything else: a save made
        // while the router starts still triggers a reload once it runs.
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
        let mut plugin_paths: Vec<PathBuf> =
            config.plugins.iter().map(|p| p.path.clone()).collect();
        // Key and token files too: a rotated one reloads on its own.
        plugin_paths.extend(config.auth_files());
        let watcher = match crate::reload::Watcher::start(
            &path,
            &plugin_paths,
            crate::reload::Settings::default(),
            reload_tx.clone(),
        ) {
            Ok(watcher) => Some(Arc::new(watcher)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP or POST /v1/reload");
                None
            }
        };
        let plugins = {
            let config = config.clone();
            let file = path.display().to_string();
            let registry = families.registry.clone();
            tokio::task::spawn_blocking(move || Plugins::load(&config, &file, &registry))
                .await
                .expect("loading plugins does not panic")
                .map_err(Error::Plugins)?
        };
        let mut bound = Bound {
            admin: config.router.admin,
            inputs: BTreeMap::new(),
            outputs: BTreeMap::new(),
        };

        let families = Arc::new(families);
        let mut outputs = Vec::with_capacity(config.outputs.len());
        for output in &config.outputs {
            let mut running = RunningOutput::create(output, &families.outputs);
            if let Some(addr) = running.attach().await? {
                bound.outputs.insert(output.name.clone(), addr);
            }
            outputs.push(running);
        }

        let targets: Vec<Arc<dyn Output>> = outputs
            .iter()
            .map(|o| Arc::clone(&o.handle) as Arc<dyn Output>)
            .collect();
        let pipeline = Pipeline::start_with(
            route_specs(&config, &plugins),
            &targets,
            &families.pipeline,
            dead_letters.clone(),
        )?;
        let sink: Arc<dyn Sink> = Arc::new(pipeline.clone());
        let prefixes = pipeline.subscription_prefixes();
        let block_timeout = block_timeout(&config);

        let security = Arc::clone(&families.outputs.security);
        for warning in config.security_warnings() {
            tracing::warn!("{warning}");
        }
        let stop_intake = CancellationToken::new();
        let intake = TaskTracker::new();
        let tls_reloads = families.outputs.tls.1.clone();
        let context = ingress::Context {
            security: Arc::clone(&security),
            tls: families.outputs.tls.clone(),
            inputs: families.inputs.clone(),
            zmtp: families.outputs.zmtp.clone(),
            requests: families.outputs.requests.clone(),
            http: families.http.clone(),
            sink,
            tracker: intake.clone(),
            lingering: TaskTracker::new(),
            readiness: ingress::Readiness::default(),
            stop: stop_intake.clone(),
            block_timeout,
            shutdown_grace: config.router.shutdown_grace,
        };
        let mut inputs = Vec::with_capacity(config.inputs.len());
        for input in &config.inputs {
            let running = RunningInput::start(input, &prefixes, &context).await?;
            if let Some(addr) = running.addr() {
                bound.inputs.insert(input.name.clone(), addr);
            }
            inputs.push(running);
        }

        let plugin_count = plugins.len();
        let reloader = Arc::new(Reloader::new(
            path.clone(),
            config.clone(),
            plugins,
            Arc::clone(&families),
            pipeline.clone(),
            outputs,
            inputs,
            context,
        ));
        let state = Arc::new(State {
            pipeline,
            dead_letters,
            reloader,
            ready: AtomicBool::new(false),
            outputs: families.outputs.outputs.clone(),
        });
        let mut admin_config = admin::Config::new(config.router.admin);
        admin_config.security = Some(security);
        if let Some(settings) = &config.router.admin_tls {
            let tls = http::tls::Tls::new("admin", settings.clone(), &families.tls)
                .map_err(|e| Error::Auth(format!("[router] admin_tls: {e}")))?;
            tls_reloads.register(&tls);
            admin_config.tls = Some(tls);
        }
        let admin_server = admin::AdminServer::bind(
            admin_config,
            Arc::clone(&state) as Arc<dyn admin::State>,
            families.registry.clone(),
            &families.http,
        )
        .await
        .map_err(|source| Error::Http {
            component: "admin listener".into(),
            source,
        })?;
        bound.admin = admin_server.local_addr();
        let stop_admin = CancellationToken::new();
        let admin = tokio::spawn(admin_server.run(stop_admin.clone()));
        let stop_reloads = CancellationToken::new();
        let reloads = tokio::spawn(serve_reloads(
            Arc::clone(&state.reloader),
            watcher,
            (reload_tx, reload_rx),
            stop_reloads.clone(),
        ));

        state.ready.store(true, Ordering::Release);
        tracing::info!(
            config = %path.display(),
            router = %config.router.name,
            admin = %bound.admin,
            inputs = %serde_json::to_string(&bound.inputs).unwrap_or_default(),
            outputs = %serde_json::to_string(&bound.outputs).unwrap_or_default(),
            routes = config.routes.len(),
            plugins = plugin_count,
            "ready"
        );
        Ok(Self {
            state,
            stop_intake,
            intake,
            stop_admin,
            admin,
            stop_reloads,
            reloads,
            grace: config.router.shutdown_grace,
            bound,
            _data_dir: data_dir,
        })
    }

    /// Where the router listens.
    pub fn bound(&self) -> &Bound {
        &self.bound
    }

    /// Stops the router: intake first, then the pipeline drains into the
    /// outputs until the grace period ends, then outputs and admin close.
    /// Returns what each route delivered, dropped and left behind.
    ///
    /// # Errors
    /// None today; the `Result` leaves room for failures to report.
    pub async fn shutdown(self) -> Result<Report, Error> {
        let deadline = Instant::now() + self.grace;
        self.state.ready.store(false, Ordering::Release);
        // A reload in progress finishes first; none starts after.
        self.stop_reloads.cancel();
        let _ = self.reloads.await;
        self.stop_intake.cancel();
        self.intake.close();
        // Inputs hand over what they had read. One held back by a full
        // `block` route waits here while the route workers keep draining; if
        // the grace period runs out, the pipeline's shutdown refuses it.
        let inputs_done = tokio::time::timeout_at(deadline, self.intake.wait())
            .await
            .is_ok();
        let routes = self
            .state
            .pipeline
            .shutdown(deadline.saturating_duration_since(Instant::now()))
            .await;
        if !inputs_done {
            // Refused by the pipeline now, so this ends promptly.
            self.intake.wait().await;
        }
        // Messages the routes delivered may still sit in the outputs' peer
        // queues: give the peers what is left of the grace period, and at
        // least OUTPUT_LINGER, to take them.
        let linger = deadline
            .saturating_duration_since(Instant::now())
            .max(OUTPUT_LINGER);
        let mut closing = tokio::task::JoinSet::new();
        for output in self.state.reloader.outputs().iter() {
            let output = output.handle.clone();
            closing.spawn(async move { output.flush_and_close(linger).await });
        }
        while closing.join_next().await.is_some() {}
        self.state.reloader.wait_closing().await;
        let outputs = self
            .state
            .reloader
            .outputs()
            .iter()
            .map(|o| o.handle.stats())
            .collect();
        self.stop_admin.cancel();
        let _ = self.admin.await;
        // Last: the admin API could still replay into or purge it.
        if let Some(store) = self.state.dead_letters.clone() {
            let closed = tokio::task::spawn_blocking(move || store.close()).await;
            if let Ok(Err(e)) = closed {
                tracing::warn!(error = %e, "closing the dead-letter store failed; entries stored since the last sync may be lost");
            }
        }
        Ok(Report { routes, outputs })
    }
}

/// The least time outputs get to hand queued messages to their peers at
/// shutdown, even when the routes used up the grace period.
const OUTPUT_LINGER: Duration = Duration::from_secs(1);

/// What a shutdown achieved.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Per route: delivered, dropped and left behind.
    pub routes: ShutdownReport,
    /// Per output: sent and dropped.
    pub outputs: Vec<OutputStats>,
}

impl Report {
    /// Logs the report: one line per route, a warning where messages were
    /// dropped by the shutdown.
    pub fn log(&self) {
        for route in &self.routes.routes {
            if route.left > 0 {
                tracing::warn!(
                    route = %route.name,
                    offered = route.offered,
                    delivered = route.delivered,
                    dropped = route.dropped.total,
                    left = route.left,
                    "route had undelivered messages at shutdown (counted as dropped, reason shutdown)"
                );
            } else {
                tracing::info!(
                    route = %route.name,
                    offered = route.offered,
                    delivered = route.delivered,
                    dropped = route.dropped.total,
                    "route drained"
                );
            }
        }
        tracing::info!(drained = self.routes.drained, "shutdown complete");
    }
}

/// Where reload triggers are sent.
type ReloadSender = tokio::sync::mpsc::Sender<crate::reload::Trigger>;

/// Reloads on every trigger: the config file or a plugin module changing
/// (watched through their directories), or SIGHUP. `POST /v1/reload` calls
/// the reloader directly. Ends when `stop` is cancelled.
async fn serve_reloads(
    reloader: Arc<Reloader>,
    watcher: Option<Arc<crate::reload::Watcher>>,
    (tx, mut rx): (
        ReloadSender,
        tokio::sync::mpsc::Receiver<crate::reload::Trigger>,
    ),
    stop: CancellationToken,
) {
    if let Some(watcher) = &watcher {
        let watcher = Arc::clone(watcher);
        reloader.on_plugin_paths(move |paths| {
            if let Err(e) = watcher.set_others(&paths) {
                tracing::warn!(error = %e, "cannot watch a plugin module; reload with SIGHUP or POST /v1/reload after replacing it");
            }
        });
    }
    if let Err(e) = crate::reload::sighup(tx) {
        tracing::warn!(error = %e, "cannot handle SIGHUP; reload through the file or POST /v1/reload");
    }
    loop {
        let trigger = tokio::select! {
            () = stop.cancelled() => break,
            trigger = rx.recv() => trigger,
        };
        let Some(trigger) = trigger else { break };
        tracing::info!(trigger = ?trigger, "reloading the config");
        // Failures are logged and counted by the reloader.
        let _ = reloader.reload(false, false, None).await;
    }
    drop(watcher);
}

/// Opens the dead-letter store in `<data_dir>/dead-letters/` (the data
/// directory is locked already), on the blocking pool: opening reads every
/// segment.
async fn open_dead_letters(
    data_dir: &std::path::Path,
    config: &config::DeadLetters,
    families: &Families,
) -> Result<Arc<DeadLetters>, Error> {
    let dir = data_dir.join("dead-letters");
    let options = dead::Options {
        max_entries: config.max_entries,
        max_bytes: config.max_bytes,
        max_age: config.max_age,
        fsync: match config.fsync {
            config::Fsync::Always => crate::store::Fsync::Always,
            config::Fsync::Batch => crate::store::Fsync::Batch(config.fsync_interval),
            config::Fsync::Os => crate::store::Fsync::Os,
        },
    };
    let metrics = families.dead_letters.clone();
    let failed = |source: std::io::Error| Error::DataDir {
        path: dir.display().to_string(),
        source,
    };
    let opened = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            let storage = crate::store::Directory::create(&dir)?;
            DeadLetters::open(Arc::new(storage), options, metrics).map_err(|e| match e {
                crate::store::Error::Io(e) => e,
                other => std::io::Error::other(other.to_string()),
            })
        })
        .await
        .expect("opening the dead-letter store does not panic")
    };
    let (store, opened) = opened.map_err(failed)?;
    if !opened.recovery.damaged.is_empty()
        || !opened.recovery.torn.is_empty()
        || opened.unreadable > 0
    {
        tracing::warn!(
            dir = %dir.display(),
            damaged = opened.recovery.damaged.len(),
            torn = opened.recovery.torn.len(),
            unreadable = opened.unreadable,
            "dead-letter store: damage found and skipped; every intact entry is kept"
        );
    }
    tracing::info!(dir = %dir.display(), entries = opened.entries, "dead-letter store open");
    Ok(Arc::new(store))
}

/// The pipeline's view of the config's routes.
fn route_specs(config: &Config, plugins: &Plugins) -> Vec<RouteSpec> {
    config
        .routes
        .iter()
        .map(|route| RouteSpec {
            name: route.name.clone(),
            pattern: route.pattern.clone(),
            attributes: route.attributes.clone(),
            queue: QueueSpec::from_config(
                &route.queue,
                config
                    .router
                    .data_dir
                    .as_ref()
                    .map(|d| d.join("queues").join(&route.name)),
            ),
            outputs: route.to.clone(),
            retry: route
                .to
                .iter()
                .filter_map(|to| {
                    let output = config.outputs.iter().find(|o| &o.name == to)?;
                    Some((to.clone(), output.retry_on(route.queue.durable.is_some())?))
                })
                .collect(),
            stages: pipeline::Stages {
                dead_letter_store: config.router.data_dir.is_some(),
                ..plugins.stages(route)
            },
            request_timeout: route.request_timeout,
        })
        .collect()
}

/// The longest an HTTP publish may wait for room: the longest
/// `block_timeout` of any `block` route (each route holds a publish for its
/// own). An HTTP input's shutdown grace stays above it.
fn block_timeout(config: &Config) -> Duration {
    config
        .routes
        .iter()
        .filter(|r| r.queue.when_full == pipeline::WhenFull::Block)
        .map(|r| r.queue.block_timeout)
        .max()
        .unwrap_or(config::QueueConfig::DEFAULT_BLOCK_TIMEOUT)
}
