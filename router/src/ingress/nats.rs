//! `nats`: a core NATS client subscribed to the input's subjects (in its
//! queue group, if it has one). Each message received becomes a
//! [`Message`] on its subject as topic, its headers as attributes (a
//! header given several values keeps its last), and is offered to the
//! pipeline in batches without a deadline ([`Wait::Unbounded`]).
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
use tokio::sync::mpsc;
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
        let (tx, rx) = mpsc::channel(self.settings.max_pending);
        let reader = self.read(subscriptions, stats, tx, stop);
        let offerer = self.offer(rx, sink);
        tokio::join!(reader, offerer);
        self.connection
            .close(std::time::Duration::from_secs(1))
            .await;
        tracing::debug!(input = %self.connection.name(), "input stopped");
    }

    /// Receives from every subscription into `tx` until `stop`; refuses
    /// (counted) what `tx` has no room for. Every [`LOOK_FOR_LOST`] the
    /// subscriptions are found empty, it counts what the client read from
    /// the server and never handed over (its buffer was full) as
    /// `slow_consumer`.
    async fn read(
        &self,
        subscriptions: Vec<async_nats::Subscriber>,
        stats: Option<Arc<async_nats::Statistics>>,
        tx: mpsc::Sender<Message>,
        stop: CancellationToken,
    ) {
        let mut incoming = futures::stream::select_all(subscriptions);
        let mut lost = Lost::default();
        let mut look = tokio::time::interval(LOOK_FOR_LOST);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let received = tokio::select! {
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
            lost.taken += 1;
            let Some(message) = self.converter.convert(received, &self.counters) else {
                continue;
            };
            if tx.try_send(message).is_err() {
                self.counters.backpressure.inc();
            }
        }
        for mut sub in incoming.into_iter() {
            let _ = sub.unsubscribe().await;
        }
    }

    /// Offers what `rx` holds, a batch at a time, until it closes.
    async fn offer(&self, mut rx: mpsc::Receiver<Message>, sink: Arc<dyn Sink>) {
        let mut batch = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut batch, BATCH).await > 0 {
            let len = batch.len();
            let offered = sink
                .offer(std::mem::take(&mut batch), Wait::Unbounded)
                .await;
            self.counters.offered(len, offered);
        }
    }
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
    /// `counters.bad_topic`) when it is refused.
    pub(super) fn convert(&self, m: async_nats::Message, counters: &Counters) -> Option<Message> {
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
        let topic = match Topic::new(Bytes::copy_from_slice(m.subject.as_bytes())) {
            Ok(t) => t,
            Err(e) => {
                counters.bad_topic.inc();
                tracing::debug!(input = %input, subject = %m.subject, error = %e, "subject refused as a topic");
                return None;
            }
        };
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
