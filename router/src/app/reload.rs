//! The reload transaction: read and validate the whole new config, load
//! changed plugins off the hot path, then swap the new route set in
//! atomically ([`crate::pipeline::Pipeline::reconfigure`]); any failure
//! before the swap leaves the running generation untouched.
//!
//! Every trigger (the file watcher, SIGHUP, `POST /v1/reload`) ends here,
//! one reload at a time. What reloads live: routes (match, attributes,
//! filters, router, on_error, dead_letter, to, queue bounds and policy),
//! plugins (entries and new module builds), inputs and outputs (added,
//! removed, or rebuilt when their entry changed; the others keep their
//! sockets and peers) and `[router] name`. The other `[router]` keys need a
//! restart: a reload that changes them applies the rest and reports them
//! under `restart_required`, but for `data_dir`, held locked with the
//! durable queues in it: a reload that changes it is refused as a whole
//! ([`Config::reload_conflict`]).
//!
//! Inputs and outputs: new ones, and changed ones that move to another
//! address, are bound before the swap, so a port that cannot be bound
//! fails the reload with nothing changed. A changed one that keeps its
//! fixed address must give the address up first: it is closed after the
//! swap and its successor bound at once (its peers reconnect); if that
//! bind fails, the reload reports it under `warnings` and the entry is
//! down until the next reload. Removed outputs get a second to hand their
//! peers what they queued, then close.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use prometheus::{IntCounter, IntGauge};
use tokio_util::task::TaskTracker;

mod io;
mod plan;
mod report;

use report::ms;
use report::{Listeners, Timings};
pub use report::{Report, Status};

use super::Families;
use super::io::{RunningInput, RunningOutput};
use super::plugins::Plugins;
use crate::config::{Config, ConfigErrors};
use crate::egress::Output;
use crate::ingress;
use crate::message::subscription_prefixes;
use crate::pipeline::{self, Pipeline};
use crate::zmtp::sub::Subscriptions;

/// Why a reload was refused; the running generation carries on.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new config has problems (each with file, line and reason), or
    /// a plugin it names cannot be loaded.
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// The new config is valid but cannot be applied while running.
    #[error("{0}")]
    Conflict(String),
}

/// The reload metric children.
struct Metrics {
    success: IntCounter,
    failure: IntCounter,
    last_success: IntGauge,
    generation: IntGauge,
}

/// The running config a reload starts from, and what runs from it.
struct Live {
    config: Config,
    /// The literal prefixes the `zmq-sub` inputs are subscribed to.
    prefixes: Vec<String>,
    inputs: Vec<RunningInput>,
}

/// How long a changed output that keeps its address gives its peers to take
/// what it queued before it closes and its successor binds.
const REBIND_LINGER: Duration = Duration::from_millis(500);

/// How long a reload waits for a rebuilt connecting output to reach its
/// endpoints before it takes over.
const CONNECT_GRACE: Duration = Duration::from_millis(500);

/// How long a removed output gives its peers, in the background.
const RETIRE_LINGER: Duration = Duration::from_secs(1);

/// Told the plugin module paths after each applied reload.
type PathsHook = Box<dyn Fn(Vec<PathBuf>) + Send + Sync>;

/// Performs reloads for one running app.
pub(crate) struct Reloader {
    path: PathBuf,
    families: Arc<Families>,
    pipeline: Pipeline,
    /// The outputs in force (read by the admin API and the shutdown).
    outputs: ArcSwap<Vec<RunningOutput>>,
    /// Outputs a reload removed or replaced, closing in the background, and
    /// stopped inputs still answering their pending requests.
    closing: TaskTracker,
    inputs_context: ingress::Context,
    /// How long a removed route may drain.
    drain: Duration,
    live: tokio::sync::Mutex<Live>,
    plugins: ArcSwap<Plugins>,
    status: Mutex<Status>,
    metrics: Metrics,
    /// Told the module files to watch after each applied reload.
    on_plugin_paths: Mutex<Option<PathsHook>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The prefixes the routes of `config` want from `zmq-sub` publishers.
fn prefixes_of(config: &Config) -> Vec<String> {
    subscription_prefixes(config.routes.iter().map(|r| &r.pattern))
}

impl Reloader {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        path: PathBuf,
        config: Config,
        plugins: Plugins,
        families: Arc<Families>,
        pipeline: Pipeline,
        outputs: Vec<RunningOutput>,
        inputs: Vec<RunningInput>,
        inputs_context: ingress::Context,
    ) -> Self {
        let registry = families.registry.clone();
        let reloads = registry.counter_vec(
            "switchyard_config_reloads_total",
            "Config reloads tried, by result (success, failure).",
            &["result"],
        );
        let metrics = Metrics {
            success: reloads.with_label_values(&["success"]),
            failure: reloads.with_label_values(&["failure"]),
            last_success: registry.gauge(
                "switchyard_config_last_reload_success_timestamp_seconds",
                "Unix time of the last reload applied (0: none since start).",
            ),
            generation: registry.gauge(
                "switchyard_config_generation",
                "The generation of the config in force: 1 at start, plus one per applied reload.",
            ),
        };
        metrics
            .generation
            .set(i64::try_from(pipeline.generation()).unwrap_or(i64::MAX));
        let status = Status {
            generation: pipeline.generation(),
            ..Status::default()
        };
        Self {
            path,
            families,
            drain: config.router.shutdown_grace.max(Duration::from_secs(1)),
            live: tokio::sync::Mutex::new(Live {
                prefixes: prefixes_of(&config),
                config,
                inputs,
            }),
            plugins: ArcSwap::from_pointee(plugins),
            pipeline,
            outputs: ArcSwap::from_pointee(outputs),
            closing: inputs_context.lingering.clone(),
            inputs_context,
            status: Mutex::new(status),
            metrics,
            on_plugin_paths: Mutex::new(None),
        }
    }

    /// Whether every input in force that must connect has.
    pub(crate) fn inputs_ready(&self) -> bool {
        self.inputs_context.readiness.ready()
    }

    /// The state of each input in force that connects to a server.
    pub(crate) fn input_statuses(&self) -> Vec<crate::ingress::InputStatus> {
        self.inputs_context.readiness.statuses()
    }

    /// The outputs in force.
    pub(crate) fn outputs(&self) -> Arc<Vec<RunningOutput>> {
        self.outputs.load_full()
    }

    /// Waits for outputs a reload removed to finish closing, and for
    /// stopped inputs to answer their pending requests.
    pub(crate) async fn wait_closing(&self) {
        self.closing.close();
        self.closing.wait().await;
    }

    /// The plugins in force.
    pub(crate) fn plugins(&self) -> Arc<Plugins> {
        self.plugins.load_full()
    }

    /// The module files the plugins in force were loaded from.
    pub(crate) fn plugin_paths(&self) -> Vec<PathBuf> {
        self.plugins.load().paths()
    }

    /// Calls `f` with the plugin module paths after every applied reload.
    pub(crate) fn on_plugin_paths(&self, f: impl Fn(Vec<PathBuf>) + Send + Sync + 'static) {
        *self
            .on_plugin_paths
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Box::new(f));
    }

    fn tell_paths(&self, paths: Vec<PathBuf>) {
        if let Some(f) = &*self
            .on_plugin_paths
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            f(paths);
        }
    }

    /// The outcome of the last reload.
    pub(crate) fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reloads from the config file, or from `text` (parsed as if it were
    /// the file), or with `dry_run` only reports what would change. One at
    /// a time; a failure changes nothing but the status and the counters.
    ///
    /// # Errors
    /// [`ReloadError`]: the new config is invalid or cannot be applied.
    pub(crate) async fn reload(
        &self,
        dry_run: bool,
        force: bool,
        text: Option<String>,
    ) -> Result<Report, ReloadError> {
        let mut live = self.live.lock().await;
        let result = self.attempt(&mut live, dry_run, force, text).await;
        if dry_run {
            return result;
        }
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        status.last_attempt = Some(unix_now());
        match &result {
            Ok(report) => {
                // The generation and time, then the count. The two are
                // not set at one instant: a scrape (which reads the gauge
                // first, by name) in between may see the count without
                // the generation; the one after sees both.
                let now = unix_now();
                self.metrics
                    .last_success
                    .set(i64::try_from(now).unwrap_or(i64::MAX));
                self.metrics
                    .generation
                    .set(i64::try_from(report.generation).unwrap_or(i64::MAX));
                self.metrics.success.inc();
                status.generation = report.generation;
                status.last_result = Some("success");
                status.last_success = Some(now);
                status.last_error = None;
                status.restart_required = report.diff.restart_required.clone();
                status.last_timings = Some(report.timings);
                tracing::info!(generation = report.generation, took_ms = report.timings.total_ms, changes = %report.diff, "config reloaded");
                for field in &report.diff.restart_required {
                    tracing::warn!(field = %field, "changed in the config file, but needs a restart to take effect");
                }
            }
            Err(e) => {
                self.metrics.failure.inc();
                status.last_result = Some("failure");
                status.last_error = Some(e.to_string());
                tracing::error!(
                    generation = status.generation,
                    "config reload failed; the running config stays in force:\n{e}"
                );
            }
        }
        result
    }

    /// Where the inputs and outputs in force listen.
    fn bound(&self, live: &Live) -> Listeners {
        Listeners {
            inputs: live
                .inputs
                .iter()
                .filter_map(|i| i.addr().map(|a| (i.config.name.clone(), a)))
                .collect(),
            outputs: self
                .outputs
                .load()
                .iter()
                .filter_map(|o| o.addr.map(|a| (o.config.name.clone(), a)))
                .collect(),
        }
    }

    async fn attempt(
        &self,
        live: &mut Live,
        dry_run: bool,
        force: bool,
        text: Option<String>,
    ) -> Result<Report, ReloadError> {
        let started = Instant::now();
        let mut timings = Timings::default();
        let file = self.path.display().to_string();
        let previous = self.plugins.load_full();
        let loaded = {
            let path = self.path.clone();
            let registry = self.families.registry.clone();
            let file = file.clone();
            tokio::task::spawn_blocking(move || {
                let t0 = Instant::now();
                let config = match text {
                    Some(text) => Config::parse(&text, &file),
                    None => Config::load(&path),
                }?;
                let t1 = Instant::now();
                let plugins = Plugins::load_next(Some(&previous), &config, &file, &registry);
                let phases = (t1 - t0, t1.elapsed());
                Ok::<_, ConfigErrors>((config, plugins, phases))
            })
            .await
            .map_err(|e| ReloadError::Conflict(format!("the reload task failed: {e}")))?
        };
        let (config, plugins, (config_took, plugins_took)) =
            loaded.map_err(ReloadError::Invalid)?;
        let (plugins, rebuilt) = match plugins {
            Ok(loaded) => loaded,
            Err(problems) => {
                if !dry_run {
                    // Watch what the rejected config names too, so a module
                    // that appears (or is fixed) later triggers a retry.
                    let mut paths = self.plugin_paths();
                    paths.extend(live.config.auth_files());
                    paths.extend(config.plugins.iter().map(|p| p.path.clone()));
                    paths.extend(config.auth_files());
                    paths.sort();
                    paths.dedup();
                    self.tell_paths(paths);
                }
                return Err(ReloadError::Invalid(problems));
            }
        };
        timings.config_ms = ms(config_took);
        timings.plugins_ms = ms(plugins_took);
        if let Some(why) = live.config.reload_conflict(&config) {
            // Dry runs too: a dry run must not promise what the reload refuses.
            return Err(ReloadError::Conflict(format!("{file}: {why}")));
        }
        // New keys and rules, built before anything changes: a key file
        // replaced since the config was read fails the reload here.
        let security = crate::auth::Security::build(&config, &self.families.auth)
            .map_err(|e| ReloadError::Conflict(format!("{file}: {e}")))?;
        let swap_started = Instant::now();
        let mut diff = live.config.diff(&config);
        for name in &rebuilt {
            diff.plugin_module_changed(name);
        }
        if dry_run {
            // The validated config already names only outputs it defines,
            // and those reload live: nothing more to check without binding.
            timings.total_ms = ms(started.elapsed());
            return Ok(Report {
                dry_run: true,
                generation: self.pipeline.generation(),
                diff,
                applied: None,
                bound: self.bound(live),
                warnings: Vec::new(),
                timings,
            });
        }
        let specs = super::route_specs(&config, &plugins);
        let prefixes = prefixes_of(&config);
        // Everything that can fail is done before the swap.
        let io = self.prepare_io(live, &config, &prefixes).await?;
        // Subscribe to what the new routes want before they are in force,
        // and let go of what only the old ones wanted after.
        let added: Vec<&String> = prefixes
            .iter()
            .filter(|p| !live.prefixes.contains(p))
            .collect();
        let kept_subscriptions: Vec<Subscriptions> = live
            .inputs
            .iter()
            .filter(|i| !io.leaving_inputs.contains(&i.config.name))
            .filter_map(|i| i.running.subscriptions.clone())
            .collect();
        for s in &kept_subscriptions {
            for p in &added {
                s.subscribe(bytes::Bytes::copy_from_slice(p.as_bytes()));
            }
        }
        let targets: Vec<Arc<dyn Output>> = io
            .outputs
            .iter()
            .map(|o| Arc::clone(&o.handle) as Arc<dyn Output>)
            .collect();
        let applied = match self
            .pipeline
            .reconfigure_forced(specs, &targets, self.drain, force)
        {
            Ok(applied) => applied,
            Err(e) => {
                for s in &kept_subscriptions {
                    for p in &added {
                        s.unsubscribe(p.as_bytes());
                    }
                }
                io.undo().await;
                return Err(conflict(&file, &e));
            }
        };
        for s in &kept_subscriptions {
            for p in live.prefixes.iter().filter(|p| !prefixes.contains(p)) {
                s.unsubscribe(p.as_bytes());
            }
        }
        // The next request or message on every listener meets the new
        // keys and rules.
        self.inputs_context.security.store(Arc::new(security));
        // Certificates: every TLS listener reads its files again (a pair
        // that does not load keeps the one in force, counted and logged).
        self.inputs_context.tls.1.reload_all();
        for warning in config.security_warnings() {
            tracing::warn!("{warning}");
        }
        let warnings = self.finish_io(live, io, &config, &prefixes).await;
        live.prefixes = prefixes;
        let mut paths = plugins.paths();
        paths.extend(config.auth_files());
        self.plugins.store(Arc::new(plugins));
        live.config = config;
        self.tell_paths(paths);
        timings.swap_ms = ms(swap_started.elapsed());
        timings.total_ms = ms(started.elapsed());
        Ok(Report {
            dry_run: false,
            generation: applied.generation,
            diff,
            applied: Some(applied),
            bound: self.bound(live),
            warnings,
            timings,
        })
    }
}

/// A valid config (`file`) the running router cannot take as it is.
fn conflict(file: &str, e: &pipeline::Error) -> ReloadError {
    ReloadError::Conflict(match e {
        pipeline::Error::UnknownOutput { route, output } => format!(
            "{file}: route {route:?} sends to output {output:?}, which is not running: adding an output needs a restart"
        ),
        other => format!("{file}: {other}"),
    })
}
