//! What a reload reports: to the caller of `POST /v1/reload` ([`Report`])
//! and, for the last one, to `/v1/status` ([`Status`]).

use std::time::Duration;

use serde::Serialize;

use crate::config::Diff;
use crate::pipeline::Applied;

/// What a reload did (or, for a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True for a dry run: nothing was applied.
    pub dry_run: bool,
    /// The generation in force after the reload.
    pub generation: u64,
    /// The differences between the running config and the new one.
    pub diff: Diff,
    /// What the route set did, when applied.
    pub applied: Option<Applied>,
    /// Where the inputs and outputs in force listen (port 0 resolved).
    pub bound: Listeners,
    /// What went wrong after the swap (a changed input or output that
    /// could not bind its address again); the rest is in force.
    pub warnings: Vec<String>,
    /// Where the time went, in milliseconds.
    pub timings: Timings,
}

/// The phases of one reload, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Timings {
    /// Reading and validating the config file.
    pub config_ms: f64,
    /// Loading the plugins whose entry or module changed (compiling, or
    /// deserializing from the compile cache, and starting a first
    /// instance); unchanged plugins cost only reading and hashing their
    /// module.
    pub plugins_ms: f64,
    /// Building and swapping in the new route set.
    pub swap_ms: f64,
    /// The whole reload.
    pub total_ms: f64,
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Where the inputs and outputs that bind listen, by name.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Listeners {
    /// Inputs.
    pub inputs: std::collections::BTreeMap<String, std::net::SocketAddr>,
    /// Outputs.
    pub outputs: std::collections::BTreeMap<String, std::net::SocketAddr>,
}

/// The outcome of the last reload, for `/v1/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Status {
    /// The generation in force.
    pub generation: u64,
    /// `success` or `failure`, once a reload was tried.
    pub last_result: Option<&'static str>,
    /// Unix seconds of the last reload tried.
    pub last_attempt: Option<u64>,
    /// Unix seconds of the last reload applied.
    pub last_success: Option<u64>,
    /// The last failed reload's problems, one per line; cleared by a
    /// success.
    pub last_error: Option<String>,
    /// Changes the running router has not applied: they need a restart.
    pub restart_required: Vec<String>,
    /// Where the time of the last applied reload went.
    pub last_timings: Option<Timings>,
}
