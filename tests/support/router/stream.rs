//! A steady, numbered stream through a running router, for tests that
//! change the router under load (reloads): a [`Producer`] thread
//! publishing numbered messages on a few lanes over HTTP, and a
//! [`Collector`] keeping everything a worker receives.
//!
//! Each lane has a topic and its own sequence (`0, 1, 2, ...`, the
//! payload); every batch carries the next `per_batch` numbers of each
//! lane. A number counts as sent once the router admitted its batch
//! (`202` with one id per message). The producer pauses between batches
//! to pace the stream (it never synchronises on time); it stops at the
//! first refused publish and reports it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::{Value, json};

use super::Router;
use super::peer::{Msg, Peer};

/// One numbered lane of a [`Producer`].
#[derive(Debug, Clone)]
pub struct Lane {
    /// The topic of every message of the lane.
    pub topic: String,
    /// Messages of this lane in each batch.
    pub per_batch: u64,
}

impl Lane {
    /// A lane of `per_batch` messages per batch on `topic`.
    pub fn new(topic: &str, per_batch: u64) -> Self {
        Self {
            topic: topic.to_owned(),
            per_batch,
        }
    }
}

/// Publishes numbered batches on HTTP input `input` from its own thread
/// until stopped.
#[derive(Debug)]
pub struct Producer {
    lanes: Vec<Lane>,
    sent: Arc<Vec<AtomicU64>>,
    batches: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Producer {
    /// Starts publishing `lanes` on HTTP input `input` of `router`, one
    /// batch, then a pause of `pace`, and again.
    ///
    /// # Errors
    /// When the input is unknown.
    pub fn start(router: &Router, input: &str, lanes: Vec<Lane>, pace: Duration) -> Result<Self> {
        let mut client = router.http(input)?;
        let sent: Arc<Vec<AtomicU64>> = Arc::new(lanes.iter().map(|_| AtomicU64::new(0)).collect());
        let batches = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread =
            {
                let (lanes, sent, batches, stop) = (
                    lanes.clone(),
                    Arc::clone(&sent),
                    Arc::clone(&batches),
                    Arc::clone(&stop),
                );
                std::thread::spawn(move || -> Result<()> {
                    while !stop.load(Ordering::Acquire) {
                        let mut messages = Vec::new();
                        for (lane, next) in lanes.iter().zip(sent.iter()) {
                            let start = next.load(Ordering::Acquire);
                            messages.extend((start..start + lane.per_batch).map(
                                |seq| json!({"topic": lane.topic, "payload": seq.to_string()}),
                            ));
                        }
                        let n = messages.len();
                        let resp = client
                            .post_json("/v1/publish", &json!({ "messages": messages }))
                            .context("publish a batch")?;
                        ensure!(
                            resp.status == 202 && resp.ids()?.len() == n,
                            "batch {} refused: {} {}",
                            batches.load(Ordering::Acquire),
                            resp.status,
                            resp.text()
                        );
                        for (lane, next) in lanes.iter().zip(sent.iter()) {
                            next.fetch_add(lane.per_batch, Ordering::AcqRel);
                        }
                        batches.fetch_add(1, Ordering::AcqRel);
                        std::thread::sleep(pace);
                    }
                    Ok(())
                })
            };
        Ok(Self {
            lanes,
            sent,
            batches,
            stop,
            thread: Some(thread),
        })
    }

    fn lane(&self, topic: &str) -> Result<usize> {
        self.lanes
            .iter()
            .position(|l| l.topic == topic)
            .ok_or_else(|| anyhow!("no lane {topic:?}"))
    }

    /// Messages of lane `topic` admitted so far (numbers `0..sent`).
    ///
    /// # Errors
    /// When there is no such lane.
    pub fn sent(&self, topic: &str) -> Result<u64> {
        Ok(self.sent[self.lane(topic)?].load(Ordering::Acquire))
    }

    /// Batches admitted so far.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Acquire)
    }

    /// The first number of lane `topic` surely published after this call:
    /// a batch may be on its way now, so the one after it.
    ///
    /// # Errors
    /// When there is no such lane.
    pub fn mark(&self, topic: &str) -> Result<u64> {
        let lane = self.lane(topic)?;
        Ok(self.sent[lane].load(Ordering::Acquire) + self.lanes[lane].per_batch)
    }

    /// Fails if the producer thread has stopped (a refused publish).
    ///
    /// # Errors
    /// The producer's error, when it stopped.
    pub fn check(&mut self) -> Result<()> {
        if self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
            let thread = self.thread.take().expect("checked above");
            return match thread.join() {
                Ok(Ok(())) => bail!("the producer stopped unasked"),
                Ok(Err(e)) => Err(e.context("the producer stopped")),
                Err(_) => bail!("the producer panicked"),
            };
        }
        ensure!(self.thread.is_some(), "the producer already stopped");
        Ok(())
    }

    /// Stops after the batch in progress; returns how many messages of
    /// each lane were admitted, in lane order.
    ///
    /// # Errors
    /// The producer's error, if it stopped on one.
    pub fn stop(mut self) -> Result<Vec<u64>> {
        self.stop.store(true, Ordering::Release);
        let thread = self.thread.take().context("the producer already stopped")?;
        thread
            .join()
            .map_err(|_| anyhow!("the producer panicked"))??;
        Ok(self
            .sent
            .iter()
            .map(|s| s.load(Ordering::Acquire))
            .collect())
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Everything one worker (or subscriber) received, in arrival order.
#[derive(Debug)]
pub struct Collector {
    peer: Peer,
    /// The messages so far.
    pub got: Vec<Msg>,
}

impl Collector {
    /// Collects what `peer` receives.
    pub fn new(peer: Peer) -> Self {
        Self {
            peer,
            got: Vec::new(),
        }
    }

    /// Takes what has arrived (does not wait).
    pub fn pump(&mut self) {
        self.got.extend(self.peer.drain());
    }

    /// Waits for a message whose number is at least `min` (or one already
    /// kept); returns its index in [`Collector::got`].
    ///
    /// # Errors
    /// When none arrives within `timeout`.
    pub fn await_seq(&mut self, min: u64, timeout: Duration) -> Result<usize> {
        self.pump();
        if let Some(i) = self.got.iter().position(|m| m.seq() >= Some(min)) {
            return Ok(i);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.peer.recv_timeout(left) {
                Some(m) => {
                    let hit = m.seq() >= Some(min);
                    self.got.push(m);
                    if hit {
                        return Ok(self.got.len() - 1);
                    }
                }
                None => bail!(
                    "no message numbered {min} or more within {timeout:?}; {} received, last {:?}",
                    self.got.len(),
                    self.got.last()
                ),
            }
        }
    }

    /// Waits until `n` messages in all have been received.
    ///
    /// # Errors
    /// When fewer arrive within `timeout`.
    pub fn await_count(&mut self, n: usize, timeout: Duration) -> Result<()> {
        self.pump();
        if self.got.len() < n {
            let more = self.peer.recv_n(n - self.got.len(), timeout)?;
            self.got.extend(more);
        }
        Ok(())
    }
}

/// The attributes frame (the middle one) of a `topic-attrs-payload`
/// message, as a JSON object.
///
/// # Errors
/// When the message has no such frame or it is not a JSON object.
pub fn attributes(m: &Msg) -> Result<serde_json::Map<String, Value>> {
    ensure!(m.frames.len() == 3, "not a three-frame message: {m:?}");
    match serde_json::from_str(&m.frames[1]).with_context(|| format!("attributes of {m:?}"))? {
        Value::Object(map) => Ok(map),
        other => bail!("attributes of {m:?} are not an object: {other}"),
    }
}
