//! `nats`: a core NATS client subscribed to the input's subjects (in its
//! queue group, if it has one). Each message received becomes a
//! [`Message`] on its subject as topic, its headers as attributes (a
//! header given several values keeps its last), and is offered to the
//! pipeline in batches without a deadline ([`Wait::Unbounded`]): the
//! reader takes at once what the client's subscriptions already hold (up
//! to [`BATCH`]) and hands the offerer that batch whole, one hop per batch
//! rather than per message.
//!
//! Core NATS cannot hold a server back: it keeps sending while a `block`
//! route is full. So the input reads on, holding up to `max_pending`
//! messages for the routes, and refuses (counts, `backpressure`) what
//! arrives past that, rather than letting the client's buffer drop it
//! uncounted. A burst the input cannot even read as fast as the client
//! receives it overflows the client's own buffer: what the client read
//! and could not hand over counts as `slow_consumer`. A message over `max_message_size` is refused as
//! `too_large`, one whose subject is no valid topic as `bad_topic`; the
//! input goes on with the next. What the server sent while the router was
//! away is gone (at most once); use a JetStream input for more.

use std::sync::Arc;

use bytes::Bytes;
use std::sync::atomic::Ordering;

use futures::{FutureExt as _, StreamExt as _};
use prometheus::IntCounter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::zmq::Counters;
use super::{Context, Running, Sink, StartError, Wait};
use crate::config;
use crate::message::{Message, Publisher, Topic};
use crate::nats::Connection;

/// Most messages offered as one batch.
const BATCH: usize = 256;

/// How often an idle input looks for what the client lost.
const LOOK_FOR_LOST: std::time::Duration = std::time::Duration::from_millis(100);

/// The least each subscription's client-side buffer holds (async-nats'
/// own default).
const SUBSCRIPTION_CAPACITY: usize = 65_536;

/// A running `nats` input.
#[derive(Debug)]
pub struct NatsInput {
    connection: Connection,
    settings: config::NatsInput,
    counters: Counters,
    converter: Converter,
    slow_consumer: IntCounter,
}

/// What the client read from the server and the input never got, found
/// by comparing the client's count of messages read with the input's of
/// messages taken, while the subscriptions are empty. A message the
/// client is handing over at that very moment looks lost; so what counts
/// is the lesser of two such looks in a row.
#[derive(Debug, Default)]
struct Lost {
    /// Messages taken from the subscriptions.
    taken: u64,
    /// The last look's gap.
    last: u64,
    /// The gap counted so far.
    counted: u64,
}

impl Lost {
    /// Counts in `counter` what the client's `read` says is newly lost.
    fn reconcile(&mut self, read: u64, counter: &IntCounter) {
        let gap = read.saturating_sub(self.taken);
        let sure = gap.min(self.last);
        self.last = gap;
        if sure > self.counted {
            counter.inc_by(sure - self.counted);
            self.counted = sure;
        }
    }
}

impl NatsInput {
    /// Starts input `name`: its client connects (in the background: a
    /// server that is not there yet is not an error), subscribes, and a
    /// task of `ctx.tracker` reads and offers.
    ///
    /// # Errors
    /// None today; the signature is every input's.
    pub async fn start(
        name: &str,
        settings: &config::NatsInput,
        ctx: &Context,
    ) -> Result<Running, StartError> {
        let input = Arc::new(Self {
            connection: Connection::new(name, &settings.connection, None)
                .with_subscription_capacity(settings.max_pending.max(SUBSCRIPTION_CAPACITY)),
            slow_consumer: ctx
                .inputs
                .rejected
                .with_label_values(&[name, "slow_consumer"]),
            settings: settings.clone(),
            counters: Counters::new(&ctx.inputs, name),
            converter: Converter::new(name, settings.max_message_size, &ctx.inputs),
        });
        let client = input.connection.attach().await;
        let mut subscriptions = Vec::new();
        if let Some(client) = &client {
            for subject in &settings.subjects {
                let subscribed = match &settings.queue_group {
                    Some(group) => client.queue_subscribe(subject.clone(), group.clone()).await,
                    None => client.subscribe(subject.clone()).await,
                };
                match subscribed {
                    Ok(s) => subscriptions.push(s),
                    Err(e) => {
                        input.connection.error(format!("subscribe {subject}: {e}"));
                        tracing::error!(input = %name, subject = %subject, error = %e, "cannot subscribe");
                    }
                }
            }
        }
        let stop = ctx.stop.child_token();
        let (ready, status) = probes(&input, "nats", |i| &i.connection, |_| None);
        let stats = client.as_ref().map(|c| c.statistics());
        let task = ctx.tracker.spawn(Arc::clone(&input).run(
            subscriptions,
            stats,
            Arc::clone(&ctx.sink),
            stop.clone(),
        ));
        Ok(Running::new(None, stop, task).with_ready(&ctx.readiness, ready, status))
    }

    /// Reads until `stop`, then offers what it holds and closes the
    /// client.
    async fn run(
        self: Arc<Self>,
        subscriptions: Vec<async_nats::Subscriber>,
        stats: Option<Arc<async_nats::Statistics>>,
        sink: Arc<dyn Sink>,
        stop: CancellationToken,
    ) {
        let room = Arc::new(Semaphore::new(self.settings.max_pending));
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = self.read(subscriptions, stats, tx, room, stop);
        let offerer = self.offer(rx, sink);
        tokio::join!(reader, offerer);
        self.connection
            .close(std::time::Duration::from_secs(1))
            .await;
        tracing::debug!(input = %self.connection.name(), "input stopped");
    }

    /// Receives from every subscription until `stop`, taking at once
    /// what the client already holds (up to [`BATCH`]), and hands each
    /// such batch to `tx` with one of `room`'s `max_pending` permits per
    /// message; refuses (counted) what finds no permit. Every
    /// [`LOOK_FOR_LOST`] the subscriptions are found empty, it counts
    /// what the client read from the server and never handed over (its
    /// buffer was full) as `slow_consumer`.
    async fn read(
        &self,
        subscriptions: Vec<async_nats::Subscriber>,
        stats: Option<Arc<async_nats::Statistics>>,
        tx: mpsc::UnboundedSender<Held>,
        room: Arc<Semaphore>,
        stop: CancellationToken,
    ) {
        let mut incoming = futures::stream::select_all(subscriptions);
        let mut lost = Lost::default();
        let mut last = LastTopic::default();
        let mut look = tokio::time::interval(LOOK_FOR_LOST);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut ended = false;
        while !ended {
            let first = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                next = incoming.next() => match next {
                    Some(m) => m,
                    None => break,
                },
                _ = look.tick() => {
                    // Unconstrained: out of its cooperative budget, the
                    // task would see a subscription holding messages as
                    // empty.
                    match tokio::task::unconstrained(incoming.next()).now_or_never() {
                        Some(Some(m)) => m,
                        Some(None) => break,
                        None => {
                            if let Some(stats) = &stats {
                                lost.reconcile(
                                    stats.in_messages.load(Ordering::Relaxed),
                                    &self.slow_consumer,
                                );
                            }
                            continue;
                        }
                    }
                }
            };
            let mut batch = Vec::with_capacity(BATCH);
            let mut next = Some(first);
            let mut took = 0;
            while let Some(received) = next.take() {
                lost.taken += 1;
                took += 1;
                if let Some(message) = self.converter.convert(received, &self.counters, &mut last) {
                    batch.push(message);
                }
                if took == BATCH {
                    break;
                }
                match incoming.next().now_or_never() {
                    Some(Some(m)) => next = Some(m),
                    Some(None) => ended = true,
                    None => {}
                }
            }
            // Only this task takes permits, so what is free now stays free.
            let held = batch.len().min(room.available_permits());
            if held < batch.len() {
                self.counters
                    .backpressure
                    .inc_by((batch.len() - held) as u64);
                batch.truncate(held);
            }
            if held > 0 {
                let permit = Arc::clone(&room)
                    .try_acquire_many_owned(u32::try_from(held).expect("a batch fits a u32"))
                    .expect("the permits were free");
                let _ = tx.send(Held { batch, permit });
            }
        }
        for mut sub in incoming.into_iter() {
            let _ = sub.unsubscribe().await;
        }
    }

    /// Offers what `rx` holds, joining the batches waiting into one of up
    /// to [`BATCH`], until it closes.
    async fn offer(&self, mut rx: mpsc::UnboundedReceiver<Held>, sink: Arc<dyn Sink>) {
        while let Some(Held {
            mut batch,
            mut permit,
        }) = rx.recv().await
        {
            while batch.len() < BATCH {
                let Ok(more) = rx.try_recv() else { break };
                batch.extend(more.batch);
                permit.merge(more.permit);
            }
            let len = batch.len();
            let offered = sink.offer(batch, Wait::Unbounded).await;
            self.counters.offered(len, offered);
            drop(permit);
        }
    }
}

/// Messages the input read and holds for the routes, with their share of
/// `max_pending`.
#[derive(Debug)]
struct Held {
    batch: Vec<Message>,
    permit: OwnedSemaphorePermit,
}

/// The readiness and status probes of NATS input `input` of `kind`, whose
/// connection `connection` gives, with the window `window` reports.
pub(super) fn probes<T: Send + Sync + 'static>(
    input: &Arc<T>,
    kind: &'static str,
    connection: fn(&T) -> &Connection,
    window: fn(&T) -> Option<super::Window>,
) -> (super::Probe, super::StatusProbe) {
    let ready = {
        let input = Arc::clone(input);
        Arc::new(move || connection(&input).ready())
    };
    let status = {
        let input = Arc::clone(input);
        Arc::new(move || {
            let c = connection(&input);
            super::InputStatus {
                name: c.name().to_owned(),
                kind,
                uplink: c.status(),
                window: window(&input),
            }
        })
    };
    (ready, status)
}

/// Turns what a NATS client received into the router's messages: the
/// subject as topic, the headers as attributes (a header given several
/// values keeps its last). Shared by the `nats` and `nats-jetstream`
/// inputs.
#[derive(Debug)]
pub(super) struct Converter {
    input: Arc<str>,
    max_message_size: usize,
    too_large: IntCounter,
}

/// The last subject's topic, kept by the task converting an input's
/// messages: a subject that repeats (most do) is neither copied nor
/// checked again.
#[derive(Debug, Default)]
pub(super) struct LastTopic(Option<Topic>);

impl Converter {
    /// The converter of input `name`, refusing (counted in `metrics`)
    /// what is over `max_message_size`.
    pub(super) fn new(name: &str, max_message_size: usize, metrics: &super::Metrics) -> Self {
        Self {
            input: Arc::from(name),
            max_message_size,
            too_large: metrics.rejected.with_label_values(&[name, "too_large"]),
        }
    }

    /// The router's message for `m`, or `None` (counted: `too_large`, or
    /// `counters.bad_topic`) when it is refused; `last` is the converting
    /// task's.
    pub(super) fn convert(
        &self,
        m: async_nats::Message,
        counters: &Counters,
        last: &mut LastTopic,
    ) -> Option<Message> {
        let input = &self.input;
        // The client's `length` also counts the subject and reply subject;
        // the limit is on what the message holds: headers and payload.
        let size = m
            .length
            .saturating_sub(m.subject.len() + m.reply.as_ref().map_or(0, |r| r.len()));
        if size > self.max_message_size {
            self.too_large.inc();
            tracing::debug!(input = %input, subject = %m.subject, size, "message over max_message_size refused");
            return None;
        }
        let topic = self.topic(m.subject.as_str(), counters, last)?;
        let mut message = Message::new(topic, m.payload, Publisher::new(Arc::clone(input), ""));
        if let Some(headers) = &m.headers {
            for (name, values) in headers.iter() {
                if let Some(value) = values.last() {
                    message
                        .attributes
                        .insert(name.to_string(), value.as_str().to_owned());
                }
            }
        }
        Some(message)
    }

    /// The topic of `subject`, or `None` (counted: `counters.bad_topic`)
    /// when it is no valid topic.
    fn topic(&self, subject: &str, counters: &Counters, last: &mut LastTopic) -> Option<Topic> {
        if let Some(t) = &last.0
            && t.as_str() == subject
        {
            return Some(t.clone());
        }
        match Topic::new(Bytes::copy_from_slice(subject.as_bytes())) {
            Ok(t) => Some(last.0.insert(t).clone()),
            Err(e) => {
                counters.bad_topic.inc();
                tracing::debug!(input = %self.input, subject = %subject, error = %e, "subject refused as a topic");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(subject: &str) -> async_nats::Message {
        async_nats::Message {
            subject: subject.into(),
            reply: None,
            payload: Bytes::from_static(b"p"),
            headers: None,
            status: None,
            description: None,
            length: subject.len() + 1,
        }
    }

    #[test]
    fn a_repeated_subject_keeps_its_topic_and_a_bad_one_is_counted_each_time() {
        let metrics = super::super::Metrics::register(&crate::metrics::Registry::new());
        let counters = Counters::new(&metrics, "in");
        let converter = Converter::new("in", 1024, &metrics);
        let mut last = LastTopic::default();
        let topics: Vec<Option<String>> = ["a.b", "a.b", "a..b", "c", "a..b", "a.b"]
            .into_iter()
            .map(|s| {
                converter
                    .convert(received(s), &counters, &mut last)
                    .map(|m| m.topic.as_str().to_owned())
            })
            .collect();
        assert_eq!(
            topics,
            [Some("a.b"), Some("a.b"), None, Some("c"), None, Some("a.b")]
                .map(|t| t.map(str::to_owned))
        );
        assert_eq!(counters.bad_topic.get(), 2);
    }

    #[test]
    fn a_gap_counts_once_two_looks_in_a_row_agree_and_never_twice() {
        let c = IntCounter::new("c", "c").expect("counter");
        let mut lost = Lost {
            taken: 10,
            ..Lost::default()
        };
        // A message being handed over looks lost for one look.
        lost.reconcile(11, &c);
        lost.taken = 11;
        lost.reconcile(11, &c);
        assert_eq!(c.get(), 0, "a message in hand is not lost");
        // Three the client dropped: counted once both looks see them.
        lost.reconcile(14, &c);
        assert_eq!(c.get(), 0);
        lost.reconcile(14, &c);
        assert_eq!(c.get(), 3);
        lost.reconcile(14, &c);
        assert_eq!(c.get(), 3, "counted once");
    }
}
