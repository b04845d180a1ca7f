//! `nats-jetstream`: a durable pull consumer of a JetStream stream, acked
//! only once the router is done with each message.
//!
//! Each message fetched becomes a [`Message`] (its subject as topic, its
//! headers as attributes, as the core `nats` input makes them) carrying a
//! [`Receipt`]. The input offers them with [`Wait::Durable`]: a full
//! `block` route holds the offer, so nothing more is fetched meanwhile,
//! and a durable route answers only once they are on disk. The receipt
//! settles when the last copy of the message is gone (every memory route
//! delivered it, or ended it for good) and the input answers the server:
//!
//! - done: `+ACK`;
//! - failed (a full queue, an output that failed or had nobody, refused by
//!   the offer): `-NAK` with `nak_delay`, so the server sends it again;
//!   at its `max_deliver`-th delivery, `+TERM` instead, counted
//!   (`input_rejected_total{reason="max_deliver"}`);
//! - too large or not a topic: `+TERM` at once, counted.
//!
//! What the router holds longer than a quarter of `ack_wait` (in a full
//! route) it tells the server it is still working on (`+WPI`), so the
//! server does not send it a second time meanwhile.
//! At most `max_ack_pending` messages are out at once: the server holds
//! as many (the consumer's own limit), and the input takes no more from
//! the client until some settle. A message that was sent before
//! (`delivered > 1`) counts in `input_redelivered_total`: a router killed
//! or stopped while its messages were in flight gets them again, at least
//! once. What settles after the input stopped (a shutdown's drain) is not
//! acknowledged and comes again after the restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;
use prometheus::IntCounter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::nats::{Converter, LastTopic, probes};
use super::zmq::Counters;
use super::{Context, Running, Sink, StartError, Wait};
use crate::config::{self, DeliverPolicy};
use crate::message::Message;
use crate::message::receipt::{Receipt, Settlement};
use crate::nats::Connection;

/// Most messages offered as one batch.
const BATCH: usize = 256;

/// The longest pause between attempts to set the consumer up.
const SETUP_PAUSE_MAX: Duration = Duration::from_secs(2);

/// A message the router is done with, to answer the server for.
struct Settled {
    acker: Acker,
    /// Its delivery's consumer sequence: its key among the outstanding.
    delivery: u64,
    delivered: i64,
    /// `None`: the input could not make it a message (too large, not a
    /// topic), so it is terminated.
    settlement: Option<Settlement>,
    /// Its room among the `max_ack_pending`, given back once answered.
    _permit: OwnedSemaphorePermit,
}

/// A running `nats-jetstream` input.
#[derive(Debug)]
pub struct JetStreamInput {
    connection: Connection,
    settings: config::JetStreamInput,
    counters: Counters,
    converter: Converter,
    max_deliver: IntCounter,
    redelivered: IntCounter,
    /// The deliveries not answered yet: where to say "still working" (the
    /// reply subject), and since when it was last said.
    outstanding: Mutex<HashMap<u64, (async_nats::Subject, Instant)>>,
    /// The window: a permit per message taken and not yet answered for.
    room: Arc<Semaphore>,
}

impl JetStreamInput {
    /// Starts input `name`: its client connects in the background (a
    /// server not there yet is not an error), and a task of `ctx.tracker`
    /// sets the consumer up, fetches, offers and acknowledges.
    ///
    /// # Errors
    /// None today; the signature is every input's.
    pub async fn start(
        name: &str,
        settings: &config::JetStreamInput,
        ctx: &Context,
    ) -> Result<Running, StartError> {
        let input = Arc::new(Self {
            connection: Connection::new(name, &settings.connection, None),
            settings: settings.clone(),
            counters: Counters::new(&ctx.inputs, name),
            converter: Converter::new(name, settings.max_message_size, &ctx.inputs),
            max_deliver: ctx
                .inputs
                .rejected
                .with_label_values(&[name, "max_deliver"]),
            redelivered: ctx.inputs.redelivered.with_label_values(&[name]),
            outstanding: Mutex::new(HashMap::new()),
            room: Arc::new(Semaphore::new(settings.max_ack_pending)),
        });
        let client = input.connection.attach().await;
        let stop = ctx.stop.child_token();
        let (ready, status) = probes(
            &input,
            "nats-jetstream",
            |i| &i.connection,
            |i| {
                Some(super::Window {
                    in_use: i
                        .settings
                        .max_ack_pending
                        .saturating_sub(i.room.available_permits()),
                    max: i.settings.max_ack_pending,
                })
            },
        );
        let task =
            ctx.tracker
                .spawn(Arc::clone(&input).run(client, Arc::clone(&ctx.sink), stop.clone()));
        Ok(Running::new(None, stop, task).with_ready(&ctx.readiness, ready, status))
    }

    /// Fetches and acknowledges until `stop`, then closes the client.
    async fn run(
        self: Arc<Self>,
        client: Option<Arc<async_nats::Client>>,
        sink: Arc<dyn Sink>,
        stop: CancellationToken,
    ) {
        if let Some(client) = client {
            let (tx, rx) = mpsc::unbounded_channel();
            let fetcher = self.fetch(&client, &sink, tx, &stop);
            let answerer = self.answer(&client, rx, &stop);
            tokio::join!(fetcher, answerer);
        }
        self.connection.close(Duration::from_secs(1)).await;
        tracing::debug!(input = %self.connection.name(), "input stopped");
    }

    /// The consumer, created (or updated) or bound as configured; `None`
    /// once `stop` is cancelled. Retries with a capped pause meanwhile,
    /// each failure shown in `/v1/status`.
    async fn consumer(
        &self,
        client: &async_nats::Client,
        stop: &CancellationToken,
    ) -> Option<consumer::PullConsumer> {
        let s = &self.settings;
        let js = jetstream::ContextBuilder::new()
            .api_prefix(s.api_prefix.clone())
            .build(client.clone());
        let mut pause = Duration::from_millis(50);
        loop {
            let attempt = async {
                let stream = js
                    .get_stream(&s.stream)
                    .await
                    .map_err(|e| format!("stream {:?}: {e}", s.stream))?;
                let named = |e: &dyn std::fmt::Display| format!("consumer {:?}: {e}", s.consumer);
                if s.create {
                    stream
                        .create_consumer(self.consumer_config())
                        .await
                        .map_err(|e| named(&e))
                } else {
                    stream
                        .get_consumer(&s.consumer)
                        .await
                        .map_err(|e| named(&e))
                }
            };
            let failed = tokio::select! {
                () = stop.cancelled() => return None,
                () = self.up() => match attempt.await {
                    Ok(c) => return Some(c),
                    Err(e) => e,
                },
            };
            tracing::warn!(input = %self.connection.name(), error = %failed, "cannot set the JetStream consumer up; trying again");
            self.connection.error(failed);
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(SETUP_PAUSE_MAX);
        }
    }

    /// Waits until the client is connected.
    async fn up(&self) {
        let mut state = self.connection.watch();
        let _ = state.wait_for(|s| *s == crate::nats::State::Up).await;
    }

    /// The durable consumer the input creates or updates.
    fn consumer_config(&self) -> consumer::pull::Config {
        let s = &self.settings;
        consumer::pull::Config {
            durable_name: Some(s.consumer.clone()),
            deliver_policy: match s.deliver_policy {
                DeliverPolicy::All => consumer::DeliverPolicy::All,
                DeliverPolicy::New => consumer::DeliverPolicy::New,
                DeliverPolicy::Last => consumer::DeliverPolicy::Last,
            },
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: s.ack_wait,
            // The router decides when to stop (it terminates the last
            // failed delivery, counted); the server's limit is a backstop.
            max_deliver: i64::try_from(s.max_deliver).unwrap_or(i64::MAX),
            max_ack_pending: i64::try_from(s.max_ack_pending).unwrap_or(i64::MAX),
            filter_subject: s.filter_subject.clone().unwrap_or_default(),
            ..Default::default()
        }
    }

    /// Sets the consumer up, then takes what the server sends until
    /// `stop`, each message holding a permit of `max_ack_pending` until its
    /// answer is sent; a second half offers what was taken, in batches.
    /// Taking does not wait for the offers, so every message the server
    /// sent is the input's at once (and told "still working" in time),
    /// never left in the client's buffer behind a full route.
    async fn fetch(
        &self,
        client: &async_nats::Client,
        sink: &Arc<dyn Sink>,
        settled: mpsc::UnboundedSender<Settled>,
        stop: &CancellationToken,
    ) {
        // Never full: a message holds a permit while it waits here.
        let (tx, rx) = mpsc::channel(self.settings.max_ack_pending);
        tokio::join!(
            self.take_all(client, &settled, tx, stop),
            self.offer_all(sink, rx)
        );
    }

    /// Takes messages from the consumer into `taken` until `stop`.
    async fn take_all(
        &self,
        client: &async_nats::Client,
        settled: &mpsc::UnboundedSender<Settled>,
        taken: mpsc::Sender<(Message, Receipt)>,
        stop: &CancellationToken,
    ) {
        let per_pull = self.settings.max_ack_pending.min(BATCH);
        let mut last = LastTopic::default();
        'setup: while let Some(consumer) = self.consumer(client, stop).await {
            let messages = consumer
                .stream()
                .max_messages_per_batch(per_pull)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await;
            let mut messages = match messages {
                Ok(m) => m,
                Err(e) => {
                    self.connection.error(format!("pull: {e}"));
                    continue;
                }
            };
            loop {
                let permit = tokio::select! {
                    biased;
                    () = stop.cancelled() => break 'setup,
                    p = Arc::clone(&self.room).acquire_owned() => p.expect("the semaphore is never closed"),
                };
                let next = tokio::select! {
                    biased;
                    () = stop.cancelled() => break 'setup,
                    n = messages.next() => n,
                };
                match next {
                    None => continue 'setup,
                    Some(Err(e)) => {
                        let terminal = !matches!(
                            e.kind(),
                            consumer::pull::MessagesErrorKind::MissingHeartbeat
                        );
                        tracing::warn!(input = %self.connection.name(), error = %e, "JetStream pull");
                        self.connection.error(format!("pull: {e}"));
                        if terminal {
                            continue 'setup;
                        }
                    }
                    Some(Ok(m)) => {
                        if let Some(message) = self.take(m, permit, settled, &mut last)
                            && taken.send(message).await.is_err()
                        {
                            break 'setup;
                        }
                    }
                }
            }
        }
    }

    /// Offers what `taken` holds, a batch at a time, until it closes.
    async fn offer_all(&self, sink: &Arc<dyn Sink>, mut taken: mpsc::Receiver<(Message, Receipt)>) {
        let mut pairs = Vec::with_capacity(BATCH);
        let mut receipts = Vec::with_capacity(BATCH);
        while taken.recv_many(&mut pairs, BATCH).await > 0 {
            let batch: Vec<Message> = pairs
                .drain(..)
                .map(|(m, r)| {
                    receipts.push(r);
                    m
                })
                .collect();
            self.offer(sink, batch, &mut receipts).await;
        }
    }

    /// Turns `m` into a message with a receipt (and a copy of the
    /// receipt, the input's until the offer answered), or terminates it
    /// (counted) when it cannot be one.
    fn take(
        &self,
        m: jetstream::Message,
        permit: OwnedSemaphorePermit,
        settled: &mpsc::UnboundedSender<Settled>,
        last: &mut LastTopic,
    ) -> Option<(Message, Receipt)> {
        let (delivered, delivery) = m
            .info()
            .map_or((1, 0), |i| (i.delivered, i.consumer_sequence));
        if delivered > 1 {
            self.redelivered.inc();
        }
        if let Some(reply) = &m.reply {
            self.lock_outstanding()
                .insert(delivery, (reply.clone(), Instant::now()));
        }
        let (m, acker) = m.split();
        let Some(mut message) = self.converter.convert(m, &self.counters, last) else {
            let _ = settled.send(Settled {
                acker,
                delivery,
                delivered,
                settlement: None,
                _permit: permit,
            });
            return None;
        };
        let tx = settled.clone();
        let receipt = Receipt::new(move |settlement| {
            let _ = tx.send(Settled {
                acker,
                delivery,
                delivered,
                settlement: Some(settlement),
                _permit: permit,
            });
        });
        message.receipt = Some(receipt.clone());
        Some((message, receipt))
    }

    /// Offers `batch`; marks the receipts of what the offer refused as
    /// failed, then lets them go (the messages settle as the routes finish
    /// with them).
    async fn offer(&self, sink: &Arc<dyn Sink>, batch: Vec<Message>, receipts: &mut Vec<Receipt>) {
        let len = batch.len();
        let offered = sink.offer(batch, Wait::Durable).await;
        self.counters.offered(len, offered);
        for receipt in receipts.drain(..).skip(offered.admitted) {
            receipt.fail("refused");
        }
    }

    fn lock_outstanding(&self) -> MutexGuard<'_, HashMap<u64, (async_nats::Subject, Instant)>> {
        self.outstanding
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers the server for each settled message until `stop`, then for
    /// what has settled by then. Every quarter `ack_wait` it tells the
    /// server it is still working on those it has held that long (`+WPI`),
    /// so each hears it before half its `ack_wait` is gone and a message
    /// waiting in a full route is not sent a second time.
    async fn answer(
        &self,
        client: &async_nats::Client,
        mut settled: mpsc::UnboundedReceiver<Settled>,
        stop: &CancellationToken,
    ) {
        let quarter = self.settings.ack_wait / 4;
        let mut tick = tokio::time::interval(quarter);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = tokio::select! {
                biased;
                s = settled.recv() => s,
                _ = tick.tick() => {
                    self.still_working(client, quarter).await;
                    continue;
                }
                () = stop.cancelled() => break,
            };
            match next {
                Some(s) => self.respond(s).await,
                None => return,
            }
        }
        while let Ok(s) = settled.try_recv() {
            self.respond(s).await;
        }
    }

    /// Says `+WPI` for each delivery held `since` or longer since it was
    /// fetched or last said so.
    async fn still_working(&self, client: &async_nats::Client, held: Duration) {
        let now = Instant::now();
        let due: Vec<async_nats::Subject> = self
            .lock_outstanding()
            .values_mut()
            .filter(|(_, since)| now.duration_since(*since) >= held)
            .map(|(reply, since)| {
                *since = now;
                reply.clone()
            })
            .collect();
        for reply in due {
            if let Err(e) = client
                .publish(reply, bytes::Bytes::from_static(b"+WPI"))
                .await
            {
                tracing::debug!(input = %self.connection.name(), error = %e, "cannot tell the server a message is still being worked on");
            }
        }
    }

    /// Acks, naks or terminates one message.
    async fn respond(&self, s: Settled) {
        self.lock_outstanding().remove(&s.delivery);
        let kind = match s.settlement {
            Some(Settlement::Done) => AckKind::Ack,
            None => AckKind::Term,
            Some(Settlement::Failed(reason))
                if s.delivered >= i64::try_from(self.settings.max_deliver).unwrap_or(i64::MAX) =>
            {
                self.max_deliver.inc();
                tracing::warn!(
                    input = %self.connection.name(),
                    deliveries = s.delivered,
                    last_reason = reason,
                    "a message failed on each of its max_deliver deliveries; terminated"
                );
                AckKind::Term
            }
            Some(Settlement::Failed(reason)) => {
                tracing::debug!(input = %self.connection.name(), reason, "a message failed; the server sends it again");
                AckKind::Nak(Some(self.settings.nak_delay))
            }
        };
        if let Err(e) = s.acker.ack_with(kind).await {
            // The server sends it again after `ack_wait`.
            tracing::debug!(input = %self.connection.name(), error = %e, "cannot answer the server for a message");
        }
    }
}
