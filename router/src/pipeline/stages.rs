//! A route's plugin stages: its filter chain and routing plugin, and the
//! synchronous runner a route worker hands each popped batch to.
//!
//! The runner owns one [`PluginInstance`] per plugin of the route, so the
//! route's worker is the only caller of its instances. Guest calls block for
//! up to a plugin's deadline. A route whose plugins have only ever answered
//! quickly (every batch under [`INLINE_BUDGET`], no failure) runs them on
//! its worker task: handing a batch to another thread and back costs more
//! CPU and latency than a short plugin call. From the first slow batch or
//! failure on, the route's batches go to tokio's blocking pool for good, so
//! a runaway plugin holds a runtime thread at most once, for at most its
//! deadline.
//!
//! Each message of a batch ends in exactly one of:
//! - **on** to its outputs ([`Staged::messages`], with per-message targets
//!   when a routing plugin chose them);
//! - **filtered**: a filter dropped or rejected it, or the routing plugin
//!   chose no output;
//! - **answered**: a filter answered its request itself (a reply verdict;
//!   on a message that is not a request, a reply counts as filtered);
//! - **dead letter**: the routing plugin dead-lettered it, or a plugin
//!   failed on its batch under `on_error = "dead_letter"`
//!   ([`Staged::dead`], sent to the route's `dead_letter` output);
//! - **dropped** with a reason: `plugin_error` (a plugin failed on its batch
//!   under `on_error = "drop"`, its circuit is open and fails closed, or its
//!   verdict named an output the route does not send to) or
//!   `no_dead_letter` (dead-lettered on a route without a `dead_letter`
//!   output).
//!
//! A request ([`Message::request`]) that a filter drops or rejects, or for
//! which the routing plugin chooses no output, is answered
//! [`RequestError::Rejected`] with the plugin's name and its reason
//! (`filtered` for a plain drop); one a filter replies to is answered with
//! the reply, as one frame.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::metrics::DropReason;
use crate::message::Message;
use crate::message::request::{RequestError, Source};
use crate::plugin::{
    FailMode, FilterVerdict, Kind, Plugin, PluginError, PluginInstance, RouteVerdict,
};

/// The longest a batch through a route's plugins may take for the route to
/// keep running them on its worker task.
pub const INLINE_BUDGET: Duration = Duration::from_micros(500);

/// The attribute a dead-lettered message carries naming its route.
pub const DEAD_LETTER_ROUTE: &str = "switchyard.dead_letter.route";
/// The attribute a dead-lettered message carries naming why:
/// `dead_lettered` (a routing plugin's verdict), `unknown_output`, or the
/// plugin failure's reason (`timeout`, `memory`, `panic`, `circuit_open`, ...).
pub const DEAD_LETTER_REASON: &str = "switchyard.dead_letter.reason";

pub use crate::config::OnError;

/// A route's plugins, as the pipeline needs them.
#[derive(Clone, Default)]
pub struct Stages {
    /// Filter plugins, run in order; each sees what the previous kept.
    pub filters: Vec<Plugin>,
    /// The routing plugin that picks each message's outputs among the
    /// route's targets; `None` sends every message to all of them.
    pub router: Option<Plugin>,
    /// What happens to a batch a plugin failed on.
    pub on_error: OnError,
    /// The output receiving dead-lettered messages, if any.
    pub dead_letter: Option<String>,
    /// The router has a dead-letter store: without a `dead_letter` output,
    /// dead-lettered messages go there instead of being dropped
    /// (`no_dead_letter`).
    pub dead_letter_store: bool,
}

impl Stages {
    /// True when the route runs no plugin and has no dead-letter output.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty() && self.router.is_none()
    }

    /// The names of the route's plugins, filters first.
    pub fn plugin_names(&self) -> impl Iterator<Item = &str> {
        self.filters.iter().chain(&self.router).map(Plugin::name)
    }

    /// The first plugin used in the wrong place: a filter that is not a
    /// filter, or a router that is not a router.
    pub(crate) fn misplaced(&self) -> Option<(&Plugin, Kind)> {
        let filters = self.filters.iter().map(|p| (p, Kind::Filter));
        let router = self.router.iter().map(|p| (p, Kind::Router));
        filters.chain(router).find(|(p, kind)| p.kind() != *kind)
    }
}

impl PartialEq for Stages {
    fn eq(&self, other: &Self) -> bool {
        let same = |a: &Plugin, b: &Plugin| a.name() == b.name() && a.sha256() == b.sha256();
        self.filters.len() == other.filters.len()
            && self
                .filters
                .iter()
                .zip(&other.filters)
                .all(|(a, b)| same(a, b))
            && match (&self.router, &other.router) {
                (Some(a), Some(b)) => same(a, b),
                (None, None) => true,
                _ => false,
            }
            && self.on_error == other.on_error
            && self.dead_letter == other.dead_letter
            && self.dead_letter_store == other.dead_letter_store
    }
}

impl Eq for Stages {}

impl std::fmt::Debug for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stages")
            .field(
                "filters",
                &self.filters.iter().map(Plugin::name).collect::<Vec<_>>(),
            )
            .field("router", &self.router.as_ref().map(Plugin::name))
            .field("on_error", &self.on_error)
            .field("dead_letter", &self.dead_letter)
            .field("dead_letter_store", &self.dead_letter_store)
            .finish()
    }
}

/// The result of one batch through a route's plugins. Reused from batch to
/// batch.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    /// Messages going on to the route's outputs.
    pub(crate) messages: Vec<Message>,
    /// True when a routing plugin chose each message's outputs (see
    /// `routed`); false when every message goes to every output.
    pub(crate) by_output: bool,
    /// When `by_output`: for each output of the route (in `to` order), the
    /// positions in `messages` it receives. Every message is in at least
    /// one list. Kept allocated from batch to batch.
    pub(crate) routed: Vec<Vec<u32>>,
    /// Messages for the route's dead-letter output.
    pub(crate) dead: Vec<Message>,
    /// Messages filtered out (dropped or rejected by a filter, sent nowhere
    /// by the routing plugin).
    pub(crate) filtered: usize,
    /// Requests a filter answered itself.
    pub(crate) answered: usize,
    /// Messages dropped, by reason (`plugin_error`, `no_dead_letter`).
    pub(crate) dropped: Vec<(DropReason, usize)>,
}

impl Staged {
    fn clear(&mut self) {
        self.messages.clear();
        self.by_output = false;
        self.routed.iter_mut().for_each(Vec::clear);
        self.dead.clear();
        self.filtered = 0;
        self.answered = 0;
        self.dropped.clear();
    }

    fn drop_all(&mut self, reason: DropReason, n: usize) {
        if n > 0 {
            self.dropped.push((reason, n));
        }
    }
}

/// Runs batches through one route's plugins. Owned by the route's worker.
pub(crate) struct StageRunner {
    route: Arc<str>,
    filters: Vec<PluginInstance>,
    /// The filters' configured names, for the requests they reject.
    filter_names: Vec<Arc<str>>,
    router: Option<PluginInstance>,
    /// The routing plugin's configured name.
    router_name: Arc<str>,
    on_error: OnError,
    has_dead_letter: bool,
    /// The route's target output names, in `to` order.
    outputs: Vec<Arc<str>>,
    filter_verdicts: Vec<FilterVerdict>,
    route_verdicts: Vec<RouteVerdict>,
    spare: Vec<Message>,
    /// When a plugin failure was last logged.
    last_warning: Option<Instant>,
    /// Set by the first batch over [`INLINE_BUDGET`] or the first failure:
    /// batches then run on the blocking pool.
    heavy: bool,
}

impl std::fmt::Debug for StageRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageRunner")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

/// Why a message or batch is dead-lettered, as the attribute value.
fn failure_reason(e: &PluginError) -> &'static str {
    match e {
        PluginError::CircuitOpen { .. } => "circuit_open",
        other => other.reason().map_or("plugin_error", |r| r.as_str()),
    }
}

/// Counts a message a filter stopped (drop, reply or reject) and answers
/// its request, if it is one.
fn stopped(msg: &Message, verdict: FilterVerdict, plugin: &Arc<str>, out: &mut Staged) {
    match (verdict, &msg.request) {
        (FilterVerdict::Reply(payload), Some(request)) => {
            // False when another route's copy was answered first; this
            // copy still ended here.
            request.answer(smallvec::smallvec![payload], Source::Plugin);
            out.answered += 1;
        }
        (FilterVerdict::Reject(reason), _) => {
            reject(msg, plugin, reason);
            out.filtered += 1;
        }
        _ => {
            reject(msg, plugin, "filtered");
            out.filtered += 1;
        }
    }
}

/// Answers `msg`'s request, if it is one, `REJECTED` by `plugin`.
fn reject(msg: &Message, plugin: &Arc<str>, reason: impl Into<String>) {
    if let Some(request) = &msg.request {
        request.fail(RequestError::Rejected {
            plugin: Arc::clone(plugin),
            reason: reason.into(),
        });
    }
}

impl StageRunner {
    pub(crate) fn new(route: &str, stages: &Stages, outputs: &[String]) -> Self {
        Self {
            route: Arc::from(route),
            filters: stages.filters.iter().map(Plugin::instance).collect(),
            filter_names: stages.filters.iter().map(|p| Arc::from(p.name())).collect(),
            router: stages.router.as_ref().map(Plugin::instance),
            router_name: Arc::from(stages.router.as_ref().map_or("", Plugin::name)),
            on_error: stages.on_error,
            has_dead_letter: stages.dead_letter.is_some() || stages.dead_letter_store,
            outputs: outputs.iter().map(|s| Arc::from(s.as_str())).collect(),
            filter_verdicts: Vec::new(),
            route_verdicts: Vec::new(),
            spare: Vec::new(),
            last_warning: None,
            heavy: false,
        }
    }

    /// Starts every instance now, so the first batch does not pay for it.
    /// A failure is logged; the first call tries again.
    pub(crate) fn warm_up(&mut self) {
        for instance in self.filters.iter_mut().chain(&mut self.router) {
            if let Err(e) = instance.start() {
                self.heavy = true;
                tracing::warn!(route = &*self.route, error = %e, "plugin instance failed to start");
            }
        }
    }

    /// True while every batch so far was quick and no plugin failed: the
    /// worker may call [`StageRunner::run`] on its own task.
    pub(crate) fn runs_inline(&self) -> bool {
        !self.heavy
    }

    /// Runs `batch` through the filters, then the router, into `out`.
    pub(crate) fn run(&mut self, batch: &mut Vec<Message>, out: &mut Staged) {
        let started = std::time::Instant::now();
        self.stages(batch, out);
        if !self.heavy && started.elapsed() > INLINE_BUDGET {
            self.heavy = true;
            tracing::debug!(
                route = &*self.route,
                "plugin batches now run on the blocking pool"
            );
        }
    }

    fn stages(&mut self, batch: &mut Vec<Message>, out: &mut Staged) {
        out.clear();
        let mut msgs = std::mem::take(batch);
        let mut i = 0;
        while i < self.filters.len() && !msgs.is_empty() {
            let result = self.filters[i].run_filter(&msgs, &mut self.filter_verdicts);
            match result {
                Ok(()) => {
                    let mut next = std::mem::take(&mut self.spare);
                    next.clear();
                    let name = &self.filter_names[i];
                    next.extend(
                        msgs.drain(..)
                            .zip(self.filter_verdicts.drain(..))
                            .filter_map(|(m, v)| match v {
                                FilterVerdict::Keep | FilterVerdict::Rewrite { .. } => v.apply(m),
                                stop => {
                                    stopped(&m, stop, name, out);
                                    None
                                }
                            }),
                    );
                    self.spare = std::mem::replace(&mut msgs, next);
                }
                Err(PluginError::CircuitOpen {
                    mode: FailMode::Open,
                    ..
                }) => {}
                Err(e) => {
                    self.failed(&e, &mut msgs, out);
                }
            }
            i += 1;
        }
        if msgs.is_empty() {
            *batch = msgs;
            return;
        }
        match self.router.as_mut() {
            None => out.messages.append(&mut msgs),
            Some(router) => match router.run_router(&msgs, &mut self.route_verdicts) {
                Ok(()) => self.route(&mut msgs, out),
                Err(PluginError::CircuitOpen {
                    mode: FailMode::Open,
                    ..
                }) => out.messages.append(&mut msgs),
                Err(e) => self.failed(&e, &mut msgs, out),
            },
        }
        *batch = msgs;
    }

    /// True at most once a second: failures are logged that often per
    /// route; the counters have every one.
    fn should_warn(&mut self) -> bool {
        let now = Instant::now();
        let due = self
            .last_warning
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if due {
            self.last_warning = Some(now);
        }
        due
    }

    /// Applies a plugin failure on `msgs` (which it empties): the route's
    /// `on_error`, or a fail-closed circuit's drop.
    fn failed(&mut self, e: &PluginError, msgs: &mut Vec<Message>, out: &mut Staged) {
        self.heavy = true;
        if self.should_warn() {
            tracing::warn!(route = &*self.route, error = %e, messages = msgs.len(), on_error = ?self.on_error, "plugin failed on a batch");
        }
        let n = msgs.len();
        // A tripped fail-closed plugin drops; only a failed call follows the
        // route's `on_error`.
        let tripped = matches!(e, PluginError::CircuitOpen { .. });
        if !tripped && self.on_error == OnError::DeadLetter {
            self.dead_letter(msgs.drain(..), failure_reason(e), out);
        } else {
            msgs.clear();
            out.drop_all(DropReason::PluginError, n);
        }
    }

    /// Moves `msgs` to the dead-letter list, marked with `reason`, or drops
    /// them (`no_dead_letter`) when the route has no dead-letter output.
    fn dead_letter(
        &self,
        msgs: impl ExactSizeIterator<Item = Message>,
        reason: &'static str,
        out: &mut Staged,
    ) {
        if !self.has_dead_letter {
            out.drop_all(DropReason::NoDeadLetter, msgs.len());
            return;
        }
        out.dead.extend(msgs.map(|mut m| {
            let attrs = m.attributes.make_mut();
            attrs.insert(DEAD_LETTER_ROUTE.to_owned(), self.route.to_string());
            attrs.insert(DEAD_LETTER_REASON.to_owned(), reason.to_owned());
            m
        }));
    }

    /// Applies router verdicts to `msgs` (which it empties).
    fn route(&mut self, msgs: &mut Vec<Message>, out: &mut Staged) {
        out.by_output = true;
        out.routed.resize_with(self.outputs.len(), Vec::new);
        let mut unknown = 0;
        let verdicts = std::mem::take(&mut self.route_verdicts);
        let mut dead: Vec<Message> = Vec::new();
        for (msg, verdict) in msgs.drain(..).zip(verdicts.iter()) {
            match verdict {
                RouteVerdict::Default => {
                    let pos = out.messages.len() as u32;
                    out.routed.iter_mut().for_each(|list| list.push(pos));
                    out.messages.push(msg);
                }
                RouteVerdict::DeadLetter => dead.push(msg),
                RouteVerdict::Outputs(names) => {
                    let pos = out.messages.len() as u32;
                    let mut chosen = false;
                    let mut bad = false;
                    for name in names {
                        match self.outputs.iter().position(|o| o == name) {
                            Some(idx) => {
                                let list = &mut out.routed[idx];
                                if list.last() != Some(&pos) {
                                    list.push(pos);
                                }
                                chosen = true;
                            }
                            None => bad = true,
                        }
                    }
                    if bad {
                        // A verdict naming an output the route does not
                        // send to is a broken verdict for this message.
                        for list in &mut out.routed {
                            if list.last() == Some(&pos) {
                                list.pop();
                            }
                        }
                        unknown += 1;
                        if self.has_dead_letter && self.on_error == OnError::DeadLetter {
                            self.dead_letter(std::iter::once(msg), "unknown_output", out);
                        } else {
                            out.drop_all(DropReason::PluginError, 1);
                        }
                    } else if chosen {
                        out.messages.push(msg);
                    } else {
                        // Not reachable through ABI 1, whose decoder
                        // refuses an empty output list; kept so the
                        // count and the request stay right if it ever is.
                        reject(&msg, &self.router_name, "filtered");
                        out.filtered += 1;
                    }
                }
            }
        }
        self.route_verdicts = verdicts;
        self.route_verdicts.clear();
        if unknown > 0 && self.should_warn() {
            tracing::warn!(route = &*self.route, messages = unknown, outputs = ?self.outputs, "routing plugin chose outputs the route does not send to");
        }
        if !dead.is_empty() {
            self.dead_letter(dead.into_iter(), "dead_lettered", out);
        }
    }
}

#[cfg(test)]
mod tests;
