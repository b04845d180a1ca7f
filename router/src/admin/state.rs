//! What the admin endpoints ask the application, and the JSON they answer
//! with. The app implements [`State`]; admin sees the pipeline only through
//! its serializable snapshot.

use serde::Serialize;

use crate::pipeline::PipelineSnapshot;

/// The application's view, as the admin endpoints need it. Implemented by
/// the app; every method is cheap and synchronous (reads of atomics, metric
/// values or the live config snapshot), called once per admin request.
pub trait State: Send + Sync + 'static {
    /// True once the router serves: config loaded, inputs bound. `/ready`
    /// answers 200 when true, `503 NOT_READY` otherwise.
    fn ready(&self) -> bool;

    /// The generation of the live config: 1 for the config loaded at start,
    /// plus one per successful reload.
    fn config_generation(&self) -> u64;

    /// The live routes with their queues and counts, in config order, for
    /// `/v1/status` and `/v1/routes`.
    fn pipeline(&self) -> PipelineSnapshot;

    /// Per-output counts for `/v1/status`, in config order.
    fn outputs(&self) -> Vec<OutputStats>;
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
}
