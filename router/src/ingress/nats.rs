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
//! uncounted. A message over `max_message_size` is refused as
//! `too_large`, one whose subject is no valid topic as `bad_topic`; the
//! input goes on with the next. What the server sent while the router was
//! away is gone (at most once); use a JetStream input for more.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
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

/// A running `nats` input.
#[derive(Debug)]
pub struct NatsInput {
    connection: Connection,
    settings: config::NatsInput,
    counters: Counters,
    converter: Converter,
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
            connection: Connection::new(name, &settings.connection, None),
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
        let ready = {
            let input = Arc::clone(&input);
            Arc::new(move || input.connection.ready())
        };
        let status = {
            let input = Arc::clone(&input);
            Arc::new(move || super::InputStatus {
                name: input.connection.name().to_owned(),
                kind: "nats",
                uplink: input.connection.status(),
                window: None,
            })
        };
        let task = ctx.tracker.spawn(Arc::clone(&input).run(
            subscriptions,
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
        sink: Arc<dyn Sink>,
        stop: CancellationToken,
    ) {
        let (tx, rx) = mpsc::channel(self.settings.max_pending);
        let reader = self.read(subscriptions, tx, stop);
        let offerer = self.offer(rx, sink);
        tokio::join!(reader, offerer);
        self.connection
            .close(std::time::Duration::from_secs(1))
            .await;
        tracing::debug!(input = %self.connection.name(), "input stopped");
    }

    /// Receives from every subscription into `tx` until `stop`; refuses
    /// (counted) what `tx` has no room for.
    async fn read(
        &self,
        subscriptions: Vec<async_nats::Subscriber>,
        tx: mpsc::Sender<Message>,
        stop: CancellationToken,
    ) {
        let mut incoming = futures::stream::select_all(subscriptions);
        loop {
            let received = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                next = incoming.next() => match next {
                    Some(m) => m,
                    None => break,
                },
            };
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
