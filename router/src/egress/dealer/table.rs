//! The output's state, behind one lock: its services and their health, and
//! the requests in flight with their deadlines. No I/O and no waiting:
//! every operation returns the answers to give ([`Effects`]), which the
//! output delivers once the lock is released.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus::{IntCounter, IntGauge};
use tokio::time::Instant;

use super::balance::{self, Ring};
use super::service::{Conn, Failure, Health, Policy, Service};
use super::{Balance, Config, DealerMetrics, ServiceState, ServiceStatus};
use crate::message::request::{Answer, Request, RequestError};
use crate::zmtp::connection::{PeerId, PushError};
use crate::zmtp::dealer::{ServicePeer, request_id};
use crate::zmtp::frame::Multipart;

#[derive(Debug)]
struct InFlight {
    peer: PeerId,
    deadline: Instant,
    request: Option<Request>,
    /// A published message (no request): told `true` when its reply
    /// arrives; dropped unsent (a timeout, a lost service, a close) means
    /// it failed.
    ack: Option<Ack>,
    /// The message's hash, for a resend under `consistent_hash`.
    key: Option<u64>,
}

/// Tells the sender of a published message that a service replied.
pub(super) type Ack = tokio::sync::oneshot::Sender<()>;

/// What became of a request given to [`Table::dispatch`].
#[derive(Debug)]
pub(super) enum Dispatched {
    /// Queued to a service; `wake_timer` when its deadline is now the
    /// earliest.
    Sent { wake_timer: bool },
    /// Services could take it but have no room now (or the output is at
    /// `max_in_flight`): wait and try again.
    Busy(Multipart),
    /// No service can take it.
    NoService,
    /// The output is closing.
    Closed,
}

/// Answers to deliver once the lock is released.
#[derive(Debug, Default)]
pub(super) struct Effects {
    pub(super) answers: Vec<(Request, Answer)>,
    /// Replies to requests that had timed out.
    pub(super) late: u64,
}

/// Gauge children of `switchyard_output_services{output,state}`.
#[derive(Debug)]
struct Gauges {
    up: IntGauge,
    ejected: IntGauge,
    probing: IntGauge,
    disconnected: IntGauge,
}

/// The services and requests of one output.
#[derive(Debug)]
pub(super) struct Table {
    output: Arc<str>,
    balance: Balance,
    weights: Vec<u32>,
    policy: Policy,
    max_in_flight: usize,
    default_timeout: Duration,
    services: Vec<Service>,
    by_peer: HashMap<PeerId, usize>,
    in_flight: HashMap<u64, InFlight>,
    deadlines: BTreeSet<(Instant, u64)>,
    ring: Ring,
    cursor: usize,
    closed: bool,
    /// When the timer task wakes next (`None`: only when woken).
    timer_at: Option<Instant>,
    gauges: Gauges,
    /// What this table added to the gauges (by [`ServiceState`]): tables
    /// of an old and a new output of the same name overlap during a
    /// reload, so each adds and removes only its own share.
    published: [i64; 4],
    ejections: IntCounter,
}

impl Table {
    pub(super) fn new(output: &str, config: &Config, metrics: &DealerMetrics) -> Self {
        let gauge = |state| metrics.services.with_label_values(&[output, state]);
        let gauges = Gauges {
            up: gauge("up"),
            ejected: gauge("ejected"),
            probing: gauge("probing"),
            disconnected: gauge("disconnected"),
        };
        Self {
            output: Arc::from(output),
            balance: config.balance.clone(),
            weights: config.weights.clone(),
            policy: Policy {
                eject_after: config.eject_after.max(1),
                probe_interval: config.probe_interval,
                probe_interval_max: config.probe_interval_max.max(config.probe_interval),
            },
            max_in_flight: config.max_in_flight.max(1),
            default_timeout: config.default_timeout,
            services: Vec::new(),
            by_peer: HashMap::new(),
            in_flight: HashMap::new(),
            deadlines: BTreeSet::new(),
            ring: Ring::default(),
            cursor: 0,
            closed: false,
            timer_at: None,
            gauges,
            published: [0; 4],
            ejections: metrics.ejections.with_label_values(&[output]),
        }
    }

    /// The error of `request` timing out: its route's timeout, or the
    /// output's default for an untagged one.
    pub(super) fn timeout_error(&self, request: &Request) -> RequestError {
        request
            .timeout_error()
            .unwrap_or_else(|| RequestError::Timeout {
                route: Arc::clone(&self.output),
                timeout: self.default_timeout,
            })
    }

    /// The error of no service taking a request.
    pub(super) fn no_service(&self) -> RequestError {
        RequestError::NoService {
            output: Arc::clone(&self.output),
        }
    }

    fn service_failed(&self) -> RequestError {
        RequestError::ServiceFailed {
            output: Arc::clone(&self.output),
        }
    }

    /// Adds the service of connect slot `slot` (disconnected until it
    /// attaches); its weight is the slot's configured one.
    pub(super) fn add_endpoint(&mut self, slot: usize, endpoint: &str) {
        let weight = self.weights.get(slot).copied().unwrap_or(1);
        let key = Bytes::copy_from_slice(endpoint.as_bytes());
        let mut service = Service::new(weight, key, self.policy.probe_interval);
        service.endpoint = Some(endpoint.to_owned());
        service.slot = Some(slot);
        self.services.push(service);
        self.rebuild();
        self.publish();
    }

    /// Removes the service of connect slot `slot` (its connect failed).
    pub(super) fn remove_endpoint(&mut self, slot: usize) {
        if let Some(i) = self.services.iter().position(|s| s.slot == Some(slot)) {
            self.remove(i);
        }
    }

    /// Connect slots handed out so far.
    pub(super) fn next_slot(&self) -> usize {
        self.services
            .iter()
            .filter_map(|s| s.slot)
            .max()
            .map_or(0, |s| s + 1)
    }

    /// A service connected.
    pub(super) fn attached(&mut self, peer: ServicePeer) -> Result<(), &'static str> {
        if self.closed {
            return Err("closed");
        }
        let conn = Conn {
            peer: peer.id,
            queue: peer.queue,
        };
        let index = match peer.slot {
            Some(slot) => {
                let i = self
                    .services
                    .iter()
                    .position(|s| s.slot == Some(slot))
                    .ok_or("unknown_service")?;
                if let Some(old) = self.services[i].conn.replace(conn) {
                    self.by_peer.remove(&old.peer);
                }
                i
            }
            None => {
                let label = match (&peer.identity, peer.addr) {
                    (Some(id), _) => String::from_utf8_lossy(id).into_owned(),
                    (None, Some(addr)) => addr.to_string(),
                    (None, None) => peer.id.to_string(),
                };
                let key = peer
                    .identity
                    .clone()
                    .unwrap_or_else(|| Bytes::from(label.clone().into_bytes()));
                let mut service = Service::new(1, key, self.policy.probe_interval);
                service.peer = Some(label);
                service.conn = Some(conn);
                self.services.push(service);
                self.rebuild();
                self.services.len() - 1
            }
        };
        self.by_peer.insert(peer.id, index);
        self.publish();
        Ok(())
    }

    /// Queues request `id` (`msg`, its wire frames) to a service chosen by
    /// the balance mode.
    pub(super) fn dispatch(
        &mut self,
        id: u64,
        msg: Multipart,
        request: Option<&Request>,
        deadline: Instant,
        key: Option<u64>,
        now: Instant,
    ) -> Dispatched {
        if self.closed {
            return Dispatched::Closed;
        }
        if !self.services.iter().any(|s| s.eligible(now)) {
            return Dispatched::NoService;
        }
        if self.in_flight.len() >= self.max_in_flight {
            return Dispatched::Busy(msg);
        }
        let (chosen, msg) = match &self.balance {
            Balance::RoundRobin => self.round_robin(msg, now),
            Balance::Weighted => self.weighted(msg, now),
            Balance::ConsistentHash { .. } => self.hashed(msg, key.unwrap_or(0), now),
        };
        match chosen {
            Choice::Sent(i) => {
                let wake_timer = self.sent(i, id, request, deadline, key);
                Dispatched::Sent { wake_timer }
            }
            Choice::Full => Dispatched::Busy(msg),
            Choice::None => Dispatched::NoService,
        }
    }

    /// Pushes `msg` to service `i`'s queue.
    fn push(&self, i: usize, msg: Multipart) -> Result<(), PushError> {
        match &self.services[i].conn {
            Some(c) => c.queue.try_push(msg),
            None => Err(PushError::Closed(msg.into())),
        }
    }

    fn round_robin(&mut self, mut msg: Multipart, now: Instant) -> (Choice, Multipart) {
        let n = self.services.len();
        let mut full = false;
        for k in 0..n {
            let i = (self.cursor + k) % n;
            if !self.services[i].eligible(now) {
                continue;
            }
            match self.push(i, msg) {
                Ok(()) => {
                    self.cursor = i + 1;
                    return (Choice::Sent(i), Multipart::new());
                }
                Err(PushError::Full(m)) => {
                    full = true;
                    msg = m.msg;
                }
                Err(PushError::Closed(m)) => msg = m.msg,
            }
        }
        (Choice::unsent(full), msg)
    }

    fn weighted(&mut self, mut msg: Multipart, now: Instant) -> (Choice, Multipart) {
        let mut refused = smallvec::SmallVec::<[usize; 8]>::new();
        let mut full = false;
        loop {
            let candidates = self
                .services
                .iter()
                .enumerate()
                .filter(|(i, s)| s.eligible(now) && !refused.contains(i))
                .map(|(i, s)| (i, s.weight, s.current));
            let Some(i) = balance::weighted_pick(candidates) else {
                return (Choice::unsent(full), msg);
            };
            match self.push(i, msg) {
                Ok(()) => {
                    let candidates = self
                        .services
                        .iter_mut()
                        .enumerate()
                        .filter(|(_, s)| s.eligible(now))
                        .map(|(j, s)| (j, s.weight, &mut s.current));
                    balance::commit(i, candidates);
                    return (Choice::Sent(i), Multipart::new());
                }
                Err(PushError::Full(m)) => {
                    full = true;
                    msg = m.msg;
                }
                Err(PushError::Closed(m)) => msg = m.msg,
            }
            refused.push(i);
        }
    }

    fn hashed(&mut self, mut msg: Multipart, key: u64, now: Instant) -> (Choice, Multipart) {
        let mut closed = smallvec::SmallVec::<[usize; 4]>::new();
        for i in self.ring.walk(key) {
            if !self.services[i].eligible(now) || closed.contains(&i) {
                continue;
            }
            match self.push(i, msg) {
                Ok(()) => return (Choice::Sent(i), Multipart::new()),
                // The key's service is healthy but busy: wait for it
                // rather than move the key.
                Err(PushError::Full(m)) => return (Choice::Full, m.msg),
                Err(PushError::Closed(m)) => {
                    msg = m.msg;
                    closed.push(i);
                }
            }
        }
        (Choice::None, msg)
    }

    /// Waits for the reply to request `id` (just dispatched) with `ack`.
    pub(super) fn attach_ack(&mut self, id: u64, ack: Ack) {
        if let Some(entry) = self.in_flight.get_mut(&id) {
            entry.ack = Some(ack);
        }
    }

    /// Records request `id` as held by service `i`.
    fn sent(
        &mut self,
        i: usize,
        id: u64,
        request: Option<&Request>,
        deadline: Instant,
        key: Option<u64>,
    ) -> bool {
        let s = &mut self.services[i];
        let Some(conn) = &s.conn else {
            return false;
        };
        let peer = conn.peer;
        s.in_flight += 1;
        if let Health::Ejected { .. } = s.health {
            s.health = Health::Probing { id };
            self.publish();
        }
        self.in_flight.insert(
            id,
            InFlight {
                peer,
                deadline,
                request: request.cloned(),
                ack: None,
                key,
            },
        );
        self.deadlines.insert((deadline, id));
        // The timer wakes at `timer_at` anyway and then sleeps until the
        // earliest deadline: wake it only for an earlier one.
        let wake = self.timer_at.is_none_or(|at| deadline < at);
        if wake {
            self.timer_at = Some(deadline);
        }
        wake
    }

    /// Takes request `id` out of flight, releasing its service's count.
    fn take(&mut self, id: u64) -> Option<(InFlight, Option<usize>)> {
        let entry = self.in_flight.remove(&id)?;
        self.deadlines.remove(&(entry.deadline, id));
        let index = self.by_peer.get(&entry.peer).copied();
        if let Some(i) = index {
            let s = &mut self.services[i];
            s.in_flight = s.in_flight.saturating_sub(1);
        }
        Some((entry, index))
    }

    /// Replies from `peer`; returns how many matched nothing it held or
    /// recently held.
    pub(super) fn replies(
        &mut self,
        peer: PeerId,
        msgs: &mut Vec<Multipart>,
        effects: &mut Effects,
    ) -> u64 {
        let mut unmatched = 0;
        let Some(&i) = self.by_peer.get(&peer) else {
            return msgs.drain(..).count() as u64;
        };
        for mut m in msgs.drain(..) {
            let id = request_id(&m).filter(|_| m.len() >= 2 && m[1].is_empty());
            let Some(id) = id else {
                unmatched += 1;
                continue;
            };
            // Only the service that was given the request may answer it.
            if self.in_flight.get(&id).is_some_and(|e| e.peer == peer) {
                if let Some((entry, _)) = self.take(id) {
                    self.succeeded(i);
                    if let Some(ack) = entry.ack {
                        let _ = ack.send(());
                    }
                    if let Some(request) = entry.request {
                        m.drain(..2);
                        effects.answers.push((request, Answer::Reply(m)));
                    }
                }
                continue;
            }
            match self.services[i].take_expired(id) {
                Some(true) => effects.late += 1,
                Some(false) => {}
                None => unmatched += 1,
            }
        }
        unmatched
    }

    /// Fails the requests whose deadline passed; returns the next deadline,
    /// when the timer must wake.
    pub(super) fn expire(&mut self, now: Instant, effects: &mut Effects) -> Option<Instant> {
        self.timer_at = self.expire_due(now, effects);
        self.timer_at
    }

    fn expire_due(&mut self, now: Instant, effects: &mut Effects) -> Option<Instant> {
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                return Some(deadline);
            }
            let Some((entry, index)) = self.take(id) else {
                self.deadlines.pop_first();
                continue;
            };
            if let Some(i) = index {
                self.services[i].remember_expired(id, entry.request.is_some());
                self.failed(i, Some(id), now);
            }
            if let Some(request) = entry.request {
                let error = self.timeout_error(&request);
                effects.answers.push((request, Answer::Error(error)));
            }
        }
        None
    }

    /// A service answered in time.
    fn succeeded(&mut self, i: usize) {
        if self.services[i].succeeded(&self.policy) {
            self.publish();
        }
    }

    /// A service failed a request (`id`; `None`: its connection).
    fn failed(&mut self, i: usize, id: Option<u64>, now: Instant) {
        match self.services[i].failed(id, now, &self.policy) {
            Failure::Counted => return,
            Failure::Ejected => self.ejections.inc(),
            Failure::ProbeFailed => {}
        }
        self.publish();
    }

    /// `peer`'s connection ended: what it had not been written is sent to
    /// other services; what it held fails with `SERVICE_FAILED`.
    pub(super) fn detached(
        &mut self,
        peer: PeerId,
        unsent: Vec<Multipart>,
        now: Instant,
        effects: &mut Effects,
    ) -> bool {
        let Some(i) = self.by_peer.get(&peer).copied() else {
            return false;
        };
        let mut wake_timer = false;
        let mut lost = false;
        self.services[i].conn = None;
        for m in unsent {
            let Some(id) = request_id(&m) else { continue };
            if self.in_flight.get(&id).is_none_or(|e| e.peer != peer) {
                continue;
            }
            let Some((mut entry, _)) = self.take(id) else {
                continue;
            };
            let request = entry.request.as_ref();
            match self.dispatch(id, m, request, entry.deadline, entry.key, now) {
                Dispatched::Sent { wake_timer: w } => {
                    wake_timer |= w;
                    if let Some(ack) = entry.ack.take() {
                        self.attach_ack(id, ack);
                    }
                }
                Dispatched::NoService => {
                    if let Some(r) = entry.request {
                        let e = self.no_service();
                        effects.answers.push((r, Answer::Error(e)));
                    }
                }
                Dispatched::Busy(_) | Dispatched::Closed => {
                    if let Some(r) = entry.request {
                        let e = self.service_failed();
                        effects.answers.push((r, Answer::Error(e)));
                    }
                }
            }
        }
        let held: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, e)| e.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in held {
            if let Some((entry, _)) = self.take(id) {
                lost = true;
                if let Some(r) = entry.request {
                    let e = self.service_failed();
                    effects.answers.push((r, Answer::Error(e)));
                }
            }
        }
        self.by_peer.remove(&peer);
        let s = &mut self.services[i];
        s.in_flight = 0;
        if lost || matches!(s.health, Health::Probing { .. }) {
            self.failed(i, None, now);
        }
        if self.services[i].slot.is_none() {
            self.remove(i);
        }
        self.publish();
        wake_timer
    }

    /// Removes service `i` (a bound peer that left, or a connect slot that
    /// failed), re-indexing the others.
    fn remove(&mut self, i: usize) {
        self.services.remove(i);
        for index in self.by_peer.values_mut() {
            if *index > i {
                *index -= 1;
            }
        }
        if self.cursor > i {
            self.cursor -= 1;
        }
        self.rebuild();
        self.publish();
    }

    fn rebuild(&mut self) {
        self.ring = Ring::build(self.services.iter().map(|s| (&s.key[..], s.weight)));
    }

    /// Brings the state gauges up to date.
    fn publish(&mut self) {
        let mut counts = [0i64; 4];
        for s in &self.services {
            counts[s.state() as usize] += 1;
        }
        self.add_to_gauges(counts);
    }

    /// Takes this table's share out of the state gauges (the output
    /// closed).
    pub(super) fn retire(&mut self) {
        self.add_to_gauges([0; 4]);
    }

    fn add_to_gauges(&mut self, counts: [i64; 4]) {
        let g = &self.gauges;
        for (state, gauge) in [
            (ServiceState::Up, &g.up),
            (ServiceState::Ejected, &g.ejected),
            (ServiceState::Probing, &g.probing),
            (ServiceState::Disconnected, &g.disconnected),
        ] {
            let i = state as usize;
            gauge.add(counts[i] - self.published[i]);
        }
        self.published = counts;
    }

    /// Requests in flight.
    pub(super) fn pending(&self) -> usize {
        self.in_flight.len()
    }

    /// Refuses new requests from now on.
    pub(super) fn close(&mut self) {
        self.closed = true;
    }

    /// Fails every request in flight with `error`.
    pub(super) fn fail_all(&mut self, error: &RequestError, effects: &mut Effects) {
        self.deadlines.clear();
        for (_, entry) in self.in_flight.drain() {
            if let Some(r) = entry.request {
                effects.answers.push((r, Answer::Error(error.clone())));
            }
        }
        for s in &mut self.services {
            s.in_flight = 0;
        }
    }

    /// The services, for `/v1/status`.
    pub(super) fn status(&self) -> Vec<ServiceStatus> {
        self.services
            .iter()
            .map(|s| ServiceStatus {
                endpoint: s.endpoint.clone(),
                peer: s.peer.clone(),
                state: s.state(),
                weight: s.weight,
                in_flight: s.in_flight,
                failures: s.failures,
            })
            .collect()
    }
}

/// Where a balance mode put a request.
#[derive(Debug, Clone, Copy)]
enum Choice {
    Sent(usize),
    /// Every eligible service it tried was full.
    Full,
    /// No eligible service could take it.
    None,
}

impl Choice {
    fn unsent(full: bool) -> Self {
        if full { Self::Full } else { Self::None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::request::{OneshotReplier, RequestMetrics, RouteTag};
    use crate::metrics::Registry;
    use crate::zmtp::connection::{QueueRx, peer_queue};
    use crate::zmtp::dealer::encode_request_id;

    fn table(config: Config) -> Table {
        let registry = Registry::new();
        Table::new("svc", &config, &DealerMetrics::register(&registry))
    }

    /// Adds connect slot `slot` and attaches it as peer `slot + 1`.
    fn connect(t: &mut Table, slot: usize) -> QueueRx {
        t.add_endpoint(slot, &format!("tcp://127.0.0.1:{}", 1000 + slot));
        let (queue, rx) = peer_queue(100, 1 << 20);
        t.attached(ServicePeer {
            id: PeerId(slot as u64 + 1),
            slot: Some(slot),
            identity: None,
            addr: None,
            queue,
        })
        .expect("attached");
        rx
    }

    fn wire(id: u64) -> Multipart {
        let mut m: Multipart = encode_request_id(id).into_iter().collect();
        m.push(Bytes::from_static(b"body"));
        m
    }

    fn sent(d: Dispatched) -> bool {
        matches!(d, Dispatched::Sent { .. })
    }

    #[test]
    fn ejection_waits_for_the_probe_time_and_a_probe_is_alone() {
        let mut t = table(Config {
            eject_after: 2,
            probe_interval: Duration::from_secs(1),
            probe_interval_max: Duration::from_secs(3),
            ..Config::default()
        });
        let _rx = connect(&mut t, 0);
        let t0 = Instant::now();
        let timeout = t0 + Duration::from_millis(100);
        for id in 1..=2 {
            assert!(sent(t.dispatch(id, wire(id), None, timeout, None, t0)));
        }
        let mut fx = Effects::default();
        assert_eq!(t.expire(timeout, &mut fx), None);
        assert_eq!(t.status()[0].state, ServiceState::Ejected);
        assert_eq!(t.ejections.get(), 1);
        let later = t0 + Duration::from_secs(10);
        // Out of rotation until a second after the ejection.
        let before_probe = timeout + Duration::from_millis(999);
        assert!(matches!(
            t.dispatch(3, wire(3), None, later, None, before_probe),
            Dispatched::NoService
        ));
        let probe_time = timeout + Duration::from_secs(1);
        assert!(sent(t.dispatch(4, wire(4), None, later, None, probe_time)));
        assert_eq!(t.status()[0].state, ServiceState::Probing);
        assert!(matches!(
            t.dispatch(5, wire(5), None, later, None, probe_time),
            Dispatched::NoService
        ));
        // The probe fails: out for twice as long, then up to the cap.
        assert_eq!(t.expire(later, &mut fx), None);
        assert_eq!(t.status()[0].state, ServiceState::Ejected);
        assert!(matches!(
            t.dispatch(
                6,
                wire(6),
                None,
                later + Duration::from_secs(3),
                None,
                later + Duration::from_millis(1999)
            ),
            Dispatched::NoService
        ));
        let at = later + Duration::from_secs(2);
        assert!(sent(t.dispatch(
            7,
            wire(7),
            None,
            at + Duration::from_secs(1),
            None,
            at
        )));
        assert_eq!(t.expire(at + Duration::from_secs(1), &mut fx), None);
        let s = &t.services[0];
        assert_eq!(s.backoff, Duration::from_secs(3), "capped");
        assert_eq!(t.ejections.get(), 1, "re-ejections are not new ejections");
        // A probe answered puts it back.
        let at = at + Duration::from_secs(4);
        assert!(sent(t.dispatch(
            8,
            wire(8),
            None,
            at + Duration::from_secs(1),
            None,
            at
        )));
        let mut replies = vec![wire(8)];
        assert_eq!(t.replies(PeerId(1), &mut replies, &mut fx), 0);
        let s = &t.services[0];
        assert_eq!(
            (s.health, s.failures, s.backoff),
            (Health::Up, 0, Duration::from_secs(1))
        );
    }

    #[tokio::test]
    async fn late_replies_are_told_apart_from_unknown_ones() {
        let registry = Registry::new();
        let input = RequestMetrics::register(&registry).for_input("clients");
        let mut t = table(Config::default());
        let _rx = connect(&mut t, 0);
        let _other = connect(&mut t, 1);
        let (tx, answer) = tokio::sync::oneshot::channel();
        let mut request = input.start(Box::new(OneshotReplier(tx)));
        request.set_route(RouteTag {
            name: Arc::from("r"),
            timeout: Duration::from_millis(5),
        });
        let now = Instant::now();
        let deadline = request.deadline().expect("tagged");
        // Round-robin: id 1 goes to peer 1.
        assert!(sent(t.dispatch(
            1,
            wire(1),
            Some(&request),
            deadline,
            None,
            now
        )));
        assert!(sent(t.dispatch(2, wire(2), None, deadline, None, now)));
        let mut fx = Effects::default();
        t.expire(deadline, &mut fx);
        assert_eq!(fx.answers.len(), 1);
        let (r, a) = fx.answers.pop().expect("one");
        assert!(
            matches!(&a, Answer::Error(RequestError::Timeout { route, .. }) if &**route == "r")
        );
        r.fail(RequestError::Overloaded);
        drop(r);
        drop(request);
        assert!(answer.await.is_ok());
        // The other service cannot pass off its reply as peer 1's.
        let mut forged = vec![wire(1)];
        assert_eq!(t.replies(PeerId(2), &mut forged, &mut fx), 1);
        // The one-way message's reply is dropped quietly.
        let mut oneway = vec![wire(2)];
        assert_eq!(t.replies(PeerId(2), &mut oneway, &mut fx), 0);
        assert_eq!(fx.late, 0);
        let mut late = vec![wire(1), wire(1), wire(99)];
        assert_eq!(
            t.replies(PeerId(1), &mut late, &mut fx),
            2,
            "once late, then unknown"
        );
        assert_eq!(fx.late, 1);
    }

    #[test]
    fn unsent_requests_of_a_lost_service_go_to_another() {
        let mut t = table(Config::default());
        let mut rx0 = connect(&mut t, 0);
        let mut rx1 = connect(&mut t, 1);
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        for id in 1..=4 {
            assert!(sent(t.dispatch(id, wire(id), None, later, None, now)));
        }
        // Peer 1 wrote id 1, still had id 3 queued when it went.
        let written = rx0.rx.try_recv().expect("queued").msg;
        assert_eq!(request_id(&written), Some(1));
        let unsent = vec![rx0.rx.try_recv().expect("queued").msg];
        let mut fx = Effects::default();
        t.detached(PeerId(1), unsent, now, &mut fx);
        assert_eq!(t.pending(), 3, "id 1 lost; 3 moved to peer 2");
        let moved: Vec<u64> = std::iter::from_fn(|| rx1.rx.try_recv().ok())
            .filter_map(|m| request_id(&m.msg))
            .collect();
        assert_eq!(moved, [2, 4, 3]);
        let s = &t.services[0];
        assert_eq!((s.failures, s.in_flight), (1, 0));
        assert_eq!(t.services[1].in_flight, 3);
        assert_eq!(t.status()[0].state, ServiceState::Disconnected);
    }

    #[test]
    fn bound_peers_come_and_go_keyed_by_identity() {
        let mut t = table(Config::default());
        let (queue, _rx) = peer_queue(10, 1 << 20);
        t.attached(ServicePeer {
            id: PeerId(7),
            slot: None,
            identity: Some(Bytes::from_static(b"billing-1")),
            addr: "127.0.0.1:4000".parse().ok(),
            queue,
        })
        .expect("attached");
        let status = t.status();
        assert_eq!(status[0].peer.as_deref(), Some("billing-1"));
        assert_eq!(&t.services[0].key[..], b"billing-1");
        assert_eq!(t.published[ServiceState::Up as usize], 1);
        let mut fx = Effects::default();
        t.detached(PeerId(7), Vec::new(), Instant::now(), &mut fx);
        assert!(t.status().is_empty());
        assert_eq!(t.published, [0; 4]);
    }
}
