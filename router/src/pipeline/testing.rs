//! Test support for the pipeline's unit tests: fake outputs, message and
//! spec builders, and waits on facts with deadlines.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use super::{
    DropReason, Pipeline, PipelineMetrics, PipelineSnapshot, QueueSpec, RouteSpec, WhenFull,
};
use crate::egress::{Delivery, Error, Output, Reject, SendFuture};
use crate::message::{Message, Pattern, Publisher, Topic};
use crate::metrics::Registry;

/// Generous deadline for facts that normally take milliseconds.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// What a [`FakeOutput`] does with each batch once open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Accepts every message.
    Accept,
    /// Refuses messages whose payload's first byte is odd.
    RejectOdd(Reject),
    /// Fails every batch.
    Fail,
    /// Reports itself closed.
    Closed,
}

/// An output that records what it takes and can stall until released.
pub(crate) struct FakeOutput {
    name: String,
    mode: Mutex<Mode>,
    open: watch::Sender<bool>,
    /// Messages handed to `send` (taken or still waiting at the gate).
    arrived: watch::Sender<usize>,
    /// Messages accepted, in order.
    taken: Mutex<Vec<Message>>,
}

impl FakeOutput {
    /// An open output that accepts everything.
    pub(crate) fn new(name: &str) -> Arc<Self> {
        Self::with(name, Mode::Accept, true)
    }

    /// An output that holds every batch until [`FakeOutput::release`].
    pub(crate) fn stalled(name: &str) -> Arc<Self> {
        Self::with(name, Mode::Accept, false)
    }

    pub(crate) fn with(name: &str, mode: Mode, open: bool) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            mode: Mutex::new(mode),
            open: watch::Sender::new(open),
            arrived: watch::Sender::new(0),
            taken: Mutex::new(Vec::new()),
        })
    }

    /// Changes what it does with the batches from now on.
    pub(crate) fn set_mode(&self, mode: Mode) {
        *self.mode.lock().expect("test lock") = mode;
    }

    /// Lets waiting and future batches through.
    pub(crate) fn release(&self) {
        self.open.send_replace(true);
    }

    /// Payload first bytes of every accepted message, in order.
    pub(crate) fn taken(&self) -> Vec<u8> {
        self.taken
            .lock()
            .expect("test lock")
            .iter()
            .map(|m| m.payload[0])
            .collect()
    }

    /// The accepted messages.
    pub(crate) fn messages(&self) -> Vec<Message> {
        self.taken.lock().expect("test lock").clone()
    }

    /// Waits until at least `n` messages have been handed to `send`.
    pub(crate) async fn wait_arrived(&self, n: usize) {
        let mut rx = self.arrived.subscribe();
        tokio::time::timeout(DEADLINE, rx.wait_for(|&a| a >= n))
            .await
            .expect("messages reach the output before the deadline")
            .expect("sender alive");
    }

    pub(crate) fn as_output(self: &Arc<Self>) -> Arc<dyn Output> {
        Arc::clone(self) as Arc<dyn Output>
    }
}

impl Output for FakeOutput {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, batch: &'a [Message]) -> SendFuture<'a> {
        Box::pin(async move {
            self.arrived.send_modify(|a| *a += batch.len());
            let mut open = self.open.subscribe();
            let _ = open.wait_for(|&o| o).await;
            let mode = *self.mode.lock().expect("test lock");
            match mode {
                Mode::Fail => {
                    return Err(Error::Failed {
                        output: self.name.clone(),
                        reason: "test failure".into(),
                    });
                }
                Mode::Closed => {
                    return Err(Error::Closed {
                        output: self.name.clone(),
                    });
                }
                Mode::Accept | Mode::RejectOdd(_) => {}
            }
            let mut delivery = Delivery::accepted();
            let mut taken = self.taken.lock().expect("test lock");
            for (i, m) in batch.iter().enumerate() {
                match mode {
                    Mode::RejectOdd(reason) if m.payload[0] % 2 == 1 => delivery.reject(i, reason),
                    _ => taken.push(m.clone()),
                }
            }
            Ok(delivery)
        })
    }
}

/// A message on `topic` whose payload is `[n; 8]`.
pub(crate) fn msg(topic: &str, n: u8) -> Message {
    Message::new(
        Topic::try_from(topic).expect("valid topic"),
        Bytes::from(vec![n; 8]),
        Publisher::new("test", ""),
    )
}

/// Messages on `topic` numbered `range`.
pub(crate) fn msgs(topic: &str, range: std::ops::Range<u8>) -> Vec<Message> {
    range.map(|n| msg(topic, n)).collect()
}

/// A route spec with a roomy byte bound and batches of `max_batch`.
pub(crate) fn spec(
    name: &str,
    pattern: &str,
    capacity: usize,
    when_full: WhenFull,
    outputs: &[&str],
) -> RouteSpec {
    RouteSpec {
        name: name.to_owned(),
        pattern: Pattern::parse(pattern).expect("valid pattern"),
        attributes: BTreeMap::new(),
        queue: QueueSpec::new(capacity, 1 << 20, when_full),
        outputs: outputs.iter().map(|s| (*s).to_owned()).collect(),
        stages: Default::default(),
        request_timeout: std::time::Duration::from_secs(5),
        retry: std::collections::BTreeMap::new(),
    }
}

/// A started pipeline with its own registry.
pub(crate) fn start(specs: Vec<RouteSpec>, outputs: &[&Arc<FakeOutput>]) -> (Pipeline, Registry) {
    let registry = Registry::new();
    let metrics = PipelineMetrics::new(&registry);
    let outputs: Vec<Arc<dyn Output>> = outputs.iter().map(|o| o.as_output()).collect();
    let pipeline = Pipeline::start(specs, &outputs, &metrics).expect("valid specs");
    (pipeline, registry)
}

/// Asserts `offered = delivered + dropped + depth` for every route, and that
/// the per-reason drops add up.
pub(crate) fn assert_conserved(snap: &PipelineSnapshot) {
    for r in &snap.routes {
        let d = &r.dropped;
        assert_eq!(
            d.total,
            DropReason::ALL.iter().map(|r| d.get(*r)).sum::<u64>(),
            "route {}: drops by reason add up",
            r.name
        );
        assert_eq!(
            r.offered,
            r.delivered
                + r.filtered
                + r.answered
                + r.dead_lettered
                + d.total
                + r.queue.depth as u64,
            "route {}: offered = delivered + filtered + answered + dead_lettered + dropped + depth ({r:?})",
            r.name
        );
    }
}

/// Waits until `cond` holds on the pipeline's snapshot, polling; panics at
/// the deadline.
pub(crate) async fn wait_snapshot(
    pipeline: &Pipeline,
    cond: impl Fn(&PipelineSnapshot) -> bool,
) -> PipelineSnapshot {
    let give_up = tokio::time::Instant::now() + DEADLINE;
    loop {
        let snap = pipeline.snapshot();
        if cond(&snap) {
            return snap;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "condition not met before the deadline: {snap:#?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits until every route is idle: nothing queued or in flight.
pub(crate) async fn wait_idle(pipeline: &Pipeline) -> PipelineSnapshot {
    wait_snapshot(pipeline, |s| s.routes.iter().all(|r| r.queue.depth == 0)).await
}
