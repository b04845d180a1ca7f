//! What the admin endpoints ask the application, and the JSON they answer
//! with. The app implements [`State`]; admin sees the pipeline only through
//! its serializable snapshot.

use std::sync::Arc;

use serde::Serialize;

use crate::egress::OutputStats;
use crate::message::Message;
use crate::pipeline::PipelineSnapshot;
use crate::store::DeadLetters;

/// The application's view, as the admin endpoints need it. Implemented by
/// the app; every method is cheap and synchronous (reads of atomics, metric
/// values or the live config snapshot), called once per admin request.
pub trait State: Send + Sync + 'static {
    /// True once the router serves: config loaded, inputs bound. `/ready`
    /// answers 200 when true, `503 NOT_READY` otherwise.
    fn ready(&self) -> bool;

    /// Brings the gauges that are read rather than counted up to date, just
    /// before `/metrics` encodes the registry (each output's
    /// `output_connected`). Default: nothing to do.
    fn refresh_metrics(&self) {}

    /// The generation of the live config: 1 for the config loaded at start,
    /// plus one per successful reload.
    fn config_generation(&self) -> u64;

    /// The live routes with their queues and counts, in config order, for
    /// `/v1/status` and `/v1/routes`.
    fn pipeline(&self) -> PipelineSnapshot;

    /// Per-output counts for `/v1/status`, in config order.
    fn outputs(&self) -> Vec<OutputStats>;

    /// The inputs with an uplink (NATS), for `/v1/status`. Default none.
    fn inputs(&self) -> Vec<crate::ingress::InputStatus> {
        Vec::new()
    }

    /// The loaded plugins for `/v1/plugins`, in config order.
    fn plugins(&self) -> Vec<PluginStats>;

    /// The outcome of the last config reload, for `/v1/status` (`null`
    /// when reloads are not available).
    fn reload_status(&self) -> serde_json::Value;

    /// `POST /v1/reload`: reloads the config file (or `text`, parsed as if
    /// it were the file); with `dry_run`, only reports what would change;
    /// with `force`, a durable route that still holds messages may be
    /// removed or turned into a memory one (its backlog stays on disk).
    /// Answers with the report as JSON.
    ///
    /// # Errors
    /// [`crate::http::Error::InvalidConfig`] or
    /// [`crate::http::Error::Conflict`]; the running config stays.
    fn reload(&self, dry_run: bool, force: bool, text: Option<String>) -> ReloadFuture<'_>;

    /// The dead-letter store, when the router has one (`[router]
    /// data_dir` is set); the `/v1/dead-letters` endpoints answer 404
    /// without it.
    fn dead_letters(&self) -> Option<Arc<DeadLetters>> {
        None
    }

    /// Replays `messages` into the route called `route`
    /// ([`crate::pipeline::Pipeline::inject`], waiting as an HTTP publish
    /// does).
    fn inject<'a>(&'a self, route: &'a str, messages: Vec<Message>) -> InjectFuture<'a> {
        drop(messages);
        Box::pin(async move {
            Err(crate::pipeline::Error::NoSuchRoute {
                route: route.to_owned(),
            })
        })
    }
}

/// What [`State::inject`] returns.
pub type InjectFuture<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<crate::ingress::Offered, crate::pipeline::Error>>
            + Send
            + 'a,
    >,
>;

/// What [`State::reload`] returns.
pub type ReloadFuture<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<serde_json::Value, crate::http::Error>> + Send + 'a,
    >,
>;

/// One loaded plugin, as `/v1/plugins` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PluginStats {
    /// The plugin's name (its `plugin` metric label).
    pub name: String,
    /// `filter` or `router`.
    pub kind: String,
    /// The module file it was loaded from.
    pub path: String,
    /// Hex SHA-256 of the module.
    pub sha256: String,
    /// True if its compiled code came from the disk cache.
    pub from_cache: bool,
    /// The routes that run it.
    pub routes: Vec<String>,
    /// Batches handed to it.
    pub calls: u64,
    /// Failed calls by reason (reasons with none left out).
    pub traps: std::collections::BTreeMap<String, u64>,
    /// True while its circuit breaker refuses calls.
    pub tripped: bool,
    /// Its memory cap in bytes.
    pub memory_bytes: u64,
    /// Its per-batch deadline in milliseconds.
    pub deadline_ms: u64,
    /// Most messages per guest call.
    pub max_batch: usize,
    /// `fail-open` or `fail-closed`: what happens while it is tripped.
    pub on_failure: String,
}
