//! The `zmq-dealer` output: each message becomes a request to one REP
//! service (or a ROUTER service that echoes the envelope), and the
//! service's reply answers the message's
//! [`Request`](crate::message::request::Request).
//!
//! - **Services.** With `connect`, each endpoint is one service (up, or
//!   disconnected while it reconnects), weighted by its entry in
//!   [`Config::weights`]. With `bind`, each connected peer is a service of
//!   weight 1, keyed by its ZMTP identity if it set one, else its address.
//! - **Choice** ([`Balance`]): round-robin over the services in rotation
//!   with room; smooth weighted round-robin (exact: with weights 3 and 1,
//!   every 4 requests go 3 and 1); or a hash ring over *every* configured
//!   service keyed by a message attribute (the topic when it is absent), so
//!   a key stays on its service while that one is healthy, and when it is
//!   not, only its keys move, to the next service on the ring.
//! - **Timeouts.** A request must be answered by its route's deadline
//!   ([`Request::deadline`](crate::message::request::Request::deadline), counted from acceptance), else by
//!   [`Config::default_timeout`]. One timer task per output fails expired
//!   requests with `REQUEST_TIMEOUT` at their deadline; a reply that comes
//!   later is discarded and counted
//!   (`switchyard_request_late_replies_total`), never delivered. A reply no
//!   request of that service ever had stays
//!   `switchyard_zmtp_dropped_total{reason="unmatched_reply"}`.
//! - **Health.** `eject_after` failures in a row (timeouts, a disconnect
//!   holding requests) take a service out of rotation
//!   (`switchyard_output_service_ejections_total`); after `probe_interval`
//!   (doubling per failed probe up to `probe_interval_max`) the next
//!   request chosen for it is a probe: a reply puts it back, a failure
//!   ejects it again.
//! - **Errors** answer the client at once: `NO_SERVICE` when no service can
//!   take the request (reported to the route as `no_subscriber`; never a
//!   wait for one to come), `SERVICE_FAILED` when the service holding it
//!   disconnects (a request only queued to it is sent to another service),
//!   `SHUTTING_DOWN` for what is left when the output closes.
//! - **Bounds.** At most `max_in_flight` requests are outstanding; `send`
//!   waits for room (backpressure on the route), never past the waiting
//!   request's own deadline. Messages without a request are sent the same
//!   way, and their replies discarded.

mod balance;
mod service;
mod table;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use self::table::{Dispatched, Effects, Table};
use super::{
    AttachError, Context, Delivery, Error, Handle, Lifecycle, LifecycleFuture, Output, OutputStats,
    Refusals, Reject, SendFuture,
};
use crate::config::{self, Attach};
use crate::envelope::Envelope;
use crate::message::Message;
use crate::message::request::{Answer, RequestError, RequestMetrics, Source};
use crate::metrics::Registry;
use crate::zmtp::connection::PeerId;
use crate::zmtp::dealer::{ServiceEvents, ServiceLinks, ServicePeer, encode_request_id};
use crate::zmtp::endpoint::EndpointError;
use crate::zmtp::frame::Multipart;
use crate::zmtp::metrics::SocketMetrics;
use crate::zmtp::options::Options;

pub use crate::config::Balance;

/// Settings of a `zmq-dealer` output (beyond its socket [`Options`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How services are chosen. Default round-robin.
    pub balance: Balance,
    /// Weight of each `connect` endpoint, in order (weighted round-robin,
    /// and the share of the hash ring); missing entries and 0 count as 1.
    /// Bound peers weigh 1. Default empty (all 1).
    pub weights: Vec<u32>,
    /// Consecutive failures (timeouts, disconnects holding requests) that
    /// take a service out of rotation; 0 counts as 1. Default 3.
    pub eject_after: u32,
    /// Time an ejected service stays out before its probe; doubles after
    /// each failed probe. Default 1 s.
    pub probe_interval: Duration,
    /// Cap of the doubled `probe_interval`. Default 30 s.
    pub probe_interval_max: Duration,
    /// Requests outstanding at once on the output; `send` waits for room
    /// beyond. 0 counts as 1. Default 1024.
    pub max_in_flight: usize,
    /// Deadline of a message whose route set none (no route tag, or not a
    /// request), counted from acceptance (requests) or from sending
    /// (one-way messages). Default 5 s.
    pub default_timeout: Duration,
}

impl From<&config::DealerOutput> for Config {
    fn from(entry: &config::DealerOutput) -> Self {
        Self {
            balance: entry.balance.clone(),
            weights: entry.weights.clone(),
            eject_after: entry.eject_after,
            probe_interval: entry.probe_interval,
            probe_interval_max: entry.probe_interval_max,
            max_in_flight: entry.max_in_flight,
            ..Self::default()
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            balance: Balance::RoundRobin,
            weights: Vec::new(),
            eject_after: 3,
            probe_interval: Duration::from_secs(1),
            probe_interval_max: Duration::from_secs(30),
            max_in_flight: 1024,
            default_timeout: Duration::from_secs(5),
        }
    }
}

/// The `zmq-dealer` metric families, registered once per registry.
#[derive(Clone, Debug)]
pub struct DealerMetrics {
    services: IntGaugeVec,
    ejections: IntCounterVec,
}

impl DealerMetrics {
    /// Registers the families.
    pub fn register(registry: &Registry) -> Self {
        Self {
            services: registry.gauge_vec(
                "switchyard_output_services",
                "Services of a zmq-dealer output, by state (up, ejected, probing, disconnected).",
                &["output", "state"],
            ),
            ejections: registry.counter_vec(
                "switchyard_output_service_ejections_total",
                "Services a zmq-dealer output took out of rotation after consecutive failures.",
                &["output"],
            ),
        }
    }
}

/// A service's state, as `/v1/status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// In rotation.
    Up = 0,
    /// Out of rotation after failures, waiting for its probe.
    Ejected = 1,
    /// Out of rotation while its probe request is out.
    Probing = 2,
    /// Not connected (a `connect` endpoint reconnecting).
    Disconnected = 3,
}

/// One service of a `zmq-dealer` output, for `/v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    /// The `connect` endpoint, as configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// A peer of a bound output: its identity, else its address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Its state.
    pub state: ServiceState,
    /// Its weight.
    pub weight: u32,
    /// Requests it holds now.
    pub in_flight: usize,
    /// Its consecutive failures.
    pub failures: u32,
}

/// What connections and the timer share with the output.
#[derive(Debug)]
struct Shared {
    name: Arc<str>,
    table: Mutex<Table>,
    /// Wakes the timer when a request's deadline is the earliest.
    timer: Notify,
    requests: RequestMetrics,
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delivers answers, outside the lock.
    fn apply(&self, effects: Effects) {
        for (request, answer) in effects.answers {
            match answer {
                Answer::Reply(frames) => {
                    if !request.answer(frames, Source::Service) {
                        self.requests.late_reply(&self.name);
                    }
                }
                Answer::Error(e) => {
                    // Already answered elsewhere: nothing to tell.
                    request.fail(e);
                }
            }
        }
        for _ in 0..effects.late {
            self.requests.late_reply(&self.name);
        }
    }
}

impl ServiceEvents for Shared {
    fn attached(&self, peer: ServicePeer) -> Result<(), &'static str> {
        self.table().attached(peer)
    }

    fn replies(&self, peer: PeerId, msgs: &mut Vec<Multipart>) -> u64 {
        let mut effects = Effects::default();
        let unmatched = self.table().replies(peer, msgs, &mut effects);
        self.apply(effects);
        unmatched
    }

    fn detached(&self, peer: PeerId, unsent: Vec<Multipart>) {
        let mut effects = Effects::default();
        let wake = self
            .table()
            .detached(peer, unsent, Instant::now(), &mut effects);
        if wake {
            self.timer.notify_one();
        }
        self.apply(effects);
    }
}

/// A `zmq-dealer` output.
#[derive(Debug)]
pub struct ZmqDealerOutput {
    name: String,
    shared: Arc<Shared>,
    links: ServiceLinks<Shared>,
    envelope: Envelope,
    /// The attribute `consistent_hash` keys by.
    hash_attribute: Option<String>,
    /// [`Config::default_timeout`], read on every send without the table.
    default_timeout: Duration,
    next_id: AtomicU64,
    timer_started: Once,
    sent: IntCounter,
    refused: Refusals,
    wire: SocketMetrics,
    /// Where it attaches ([`Lifecycle::attach`]).
    attach: Option<Attach>,
}

impl ZmqDealerOutput {
    /// An output named `name`, with no service until
    /// [`bind`](Self::bind) or [`connect`](Self::connect).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        config: Config,
        options: Options,
        envelope: Envelope,
        outputs: &super::Metrics,
        wire: &crate::zmtp::metrics::Metrics,
        metrics: &DealerMetrics,
        requests: &RequestMetrics,
    ) -> Self {
        let shared = Arc::new(Shared {
            name: Arc::from(name),
            table: Mutex::new(Table::new(name, &config, metrics)),
            timer: Notify::new(),
            requests: requests.clone(),
        });
        let links = ServiceLinks::new(name, options, wire, Arc::clone(&shared));
        let hash_attribute = match config.balance {
            Balance::ConsistentHash { attribute } => Some(attribute),
            _ => None,
        };
        Self {
            name: name.to_owned(),
            shared,
            links,
            envelope,
            hash_attribute,
            default_timeout: config.default_timeout,
            next_id: AtomicU64::new(1),
            timer_started: Once::new(),
            sent: outputs.messages(name),
            refused: outputs.refusals(name),
            wire: wire.socket(name),
            attach: None,
        }
    }

    /// The output `name` as its entry describes it, counting into `ctx`'s
    /// families; not attached yet.
    pub fn build(name: &str, entry: &config::DealerOutput, ctx: &Context) -> Handle {
        let mut output = Self::new(
            name,
            Config::from(entry),
            entry.socket.options.socket_options(),
            entry.socket.envelope,
            &ctx.outputs,
            &ctx.wire(),
            &ctx.dealers,
            &ctx.requests,
        );
        output.attach = Some(entry.socket.attach.clone());
        Arc::new(output)
    }

    /// Listens on `endpoint`; each peer that connects is a service.
    ///
    /// # Errors
    /// A malformed endpoint, a name that does not resolve, or a failed bind.
    pub async fn bind(&self, endpoint: &str) -> Result<std::net::SocketAddr, EndpointError> {
        self.links.bind(endpoint).await
    }

    /// Adds `endpoint` as a service (the next entry of
    /// [`Config::weights`]) and keeps a connection to it.
    ///
    /// # Errors
    /// A malformed endpoint, or a closed output.
    pub fn connect(&self, endpoint: &str) -> Result<(), EndpointError> {
        let slot = {
            let mut table = self.shared.table();
            let slot = table.next_slot();
            table.add_endpoint(slot, endpoint);
            slot
        };
        self.links.connect(endpoint, slot).inspect_err(|_| {
            self.shared.table().remove_endpoint(slot);
        })
    }

    /// The services and their state, for `/v1/status`.
    pub fn services(&self) -> Vec<ServiceStatus> {
        self.shared.table().status()
    }

    /// Requests sent and not answered yet.
    pub fn pending(&self) -> usize {
        self.shared.table().pending()
    }

    /// Counts for `/v1/status`.
    fn status(&self) -> OutputStats {
        OutputStats {
            name: self.name.clone(),
            kind: "zmq-dealer".into(),
            sent: self.sent.get(),
            dropped: self.wire.dropped_total(),
            peers: self.links.peer_count() as u64,
            services: self.services(),
            uplink: None,
            webhook: None,
        }
    }

    /// Refuses new requests, gives the services up to `linger` to answer
    /// the outstanding ones, fails the rest with `SHUTTING_DOWN`, and
    /// closes the connections.
    async fn close_after(&self, linger: Duration) {
        self.shared.table().close();
        let deadline = Instant::now() + linger;
        loop {
            let wait = self.links.room().wait();
            if self.shared.table().pending() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, wait.until_signalled())
                .await
                .is_err()
            {
                break;
            }
        }
        let mut effects = Effects::default();
        self.shared
            .table()
            .fail_all(&RequestError::ShuttingDown, &mut effects);
        if !effects.answers.is_empty() {
            tracing::warn!(output = %self.name, ?linger, requests = effects.answers.len(), "services did not answer every request before the output closed");
        }
        self.shared.apply(effects);
        self.links.close().await;
        self.shared.table().retire();
    }

    /// Starts the output's timer task (once, from async context).
    fn start_timer(&self) {
        self.timer_started.call_once(|| {
            let shared = Arc::clone(&self.shared);
            let signal = self.links.signal();
            self.links.tracker().spawn(async move {
                loop {
                    let woken = shared.timer.notified();
                    let mut effects = Effects::default();
                    let next = shared.table().expire(Instant::now(), &mut effects);
                    // Room for waiting senders, or a change of health
                    // that tells them there is no service any more.
                    signal.freed();
                    shared.apply(effects);
                    let sleep = async {
                        match next {
                            Some(at) => tokio::time::sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        () = signal.cancelled() => return,
                        () = woken => {}
                        () = sleep => {}
                    }
                }
            });
        });
    }

    /// Answers `request` (if any) with its timeout error.
    fn time_out(&self, request: Option<&crate::message::request::Request>) {
        if let Some(r) = request {
            let e = self.shared.table().timeout_error(r);
            r.fail(e);
        }
    }

    /// The hash key of `message` under `consistent_hash`.
    fn key(&self, message: &Message) -> Option<u64> {
        let attribute = self.hash_attribute.as_deref()?;
        let key = match message.attributes.get(attribute) {
            Some(v) => v.as_bytes(),
            None => &message.topic.as_bytes()[..],
        };
        Some(balance::hash(&[key]))
    }

    /// Sends one message; `Err` is its rejection, `Err(None)` when the
    /// output closed. A published message (no request) comes back with
    /// the receiver its reply is signalled on.
    async fn send_one(
        &self,
        message: &Message,
    ) -> Result<Option<tokio::sync::oneshot::Receiver<()>>, Option<Reject>> {
        let request = message.request.as_ref();
        let now = Instant::now();
        let deadline = match request {
            Some(r) => r
                .deadline()
                .unwrap_or_else(|| r.accepted() + self.default_timeout),
            None => now + self.default_timeout,
        };
        let fail = |e: RequestError| {
            if let Some(r) = request {
                r.fail(e);
            }
        };
        if deadline <= now {
            self.time_out(request);
            return Err(Some(Reject::Failed));
        }
        let key = self.key(message);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frames = self.envelope.encode(message);
        let mut msg = Multipart::with_capacity(frames.len() + 2);
        msg.extend(encode_request_id(id));
        msg.extend(frames);
        loop {
            // Fast path first, then register for room and check again, so
            // a wake-up in between is kept.
            let mut wait = None;
            for attempt in 0..2 {
                if attempt == 1 {
                    wait = Some(self.links.room().wait());
                }
                let (dispatched, replied) = {
                    let mut table = self.shared.table();
                    let dispatched =
                        table.dispatch(id, msg, request, deadline, key, Instant::now());
                    // The reply cannot arrive before the ack is attached:
                    // the table stays locked.
                    let replied = match (&dispatched, request) {
                        (Dispatched::Sent { .. }, None) => {
                            let (tx, rx) = tokio::sync::oneshot::channel();
                            table.attach_ack(id, tx);
                            Some(rx)
                        }
                        _ => None,
                    };
                    (dispatched, replied)
                };
                match dispatched {
                    Dispatched::Sent { wake_timer } => {
                        if wake_timer {
                            self.shared.timer.notify_one();
                        }
                        return Ok(replied);
                    }
                    Dispatched::NoService => {
                        let e = self.shared.table().no_service();
                        fail(e);
                        return Err(Some(Reject::NoSubscriber));
                    }
                    Dispatched::Closed => {
                        fail(RequestError::ShuttingDown);
                        return Err(None);
                    }
                    Dispatched::Busy(m) => msg = m,
                }
            }
            let Some(wait) = wait else { continue };
            tokio::select! {
                () = self.links.cancelled() => {
                    fail(RequestError::ShuttingDown);
                    return Err(None);
                }
                () = tokio::time::sleep_until(deadline) => {
                    self.time_out(request);
                    return Err(Some(Reject::Failed));
                }
                () = wait.until_signalled() => {}
            }
        }
    }
}

impl Lifecycle for ZmqDealerOutput {
    fn attach(&self) -> LifecycleFuture<'_, Result<Option<std::net::SocketAddr>, AttachError>> {
        Box::pin(async move {
            let Some(attach) = &self.attach else {
                return Ok(None);
            };
            attach.apply(self).await.map_err(|source| AttachError {
                output: self.name.clone(),
                source,
            })
        })
    }

    fn wait_connected(&self, timeout: Duration) -> LifecycleFuture<'_, ()> {
        Box::pin(async move {
            let want = self.attach.as_ref().map_or(0, Attach::endpoints);
            if want > 0 {
                self.links.wait_for_peers(want, timeout).await;
            }
        })
    }

    fn stats(&self) -> OutputStats {
        self.status()
    }

    /// Refuses new requests, gives the services up to `linger` to answer
    /// the outstanding ones, fails the rest with `SHUTTING_DOWN`, and
    /// closes the connections.
    fn flush_and_close(&self, linger: Duration) -> LifecycleFuture<'_, ()> {
        Box::pin(self.close_after(linger))
    }
}

impl crate::zmtp::endpoint::Attach for ZmqDealerOutput {
    async fn bind(&self, endpoint: &str) -> Result<std::net::SocketAddr, EndpointError> {
        ZmqDealerOutput::bind(self, endpoint).await
    }

    fn connect(&self, endpoint: &str) -> Result<(), EndpointError> {
        ZmqDealerOutput::connect(self, endpoint)
    }
}

impl Output for ZmqDealerOutput {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, batch: &'a [Message]) -> SendFuture<'a> {
        Box::pin(async move {
            if self.links.is_closed() {
                return Err(Error::Closed {
                    output: self.name.clone(),
                });
            }
            self.start_timer();
            let mut delivery = Delivery::accepted();
            // Published messages are taken when their reply arrives.
            let mut replies = Vec::new();
            for (i, message) in batch.iter().enumerate() {
                match self.send_one(message).await {
                    Ok(replied) => {
                        self.sent.inc();
                        if let Some(rx) = replied {
                            replies.push((i, rx));
                        }
                    }
                    Err(Some(reason)) => delivery.reject(i, reason),
                    Err(None) => {
                        for m in &batch[i + 1..] {
                            if let Some(r) = &m.request {
                                r.fail(RequestError::ShuttingDown);
                            }
                        }
                        if i == 0 {
                            return Err(Error::Closed {
                                output: self.name.clone(),
                            });
                        }
                        delivery.reject_range(i..batch.len(), Reject::Failed);
                        break;
                    }
                }
            }
            // Every receiver resolves: the reply, or the entry dropped at
            // its deadline, with its service, or at close.
            for (i, rx) in replies {
                if rx.await.is_err() {
                    delivery.reject(i, Reject::Failed);
                }
            }
            self.refused.count(&delivery, batch.len());
            Ok(delivery)
        })
    }
}

#[cfg(test)]
mod tests;
