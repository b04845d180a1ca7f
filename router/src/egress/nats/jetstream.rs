//! `nats-jetstream`: each message is published into a JetStream stream and
//! counts as sent only on its PubAck.
//!
//! Up to `max_ack_pending` PubAcks are outstanding at once; the output
//! answers a batch once every message of it is acknowledged or refused.
//! A message whose PubAck does not come (a timeout, the connection lost, an
//! error from the stream) is refused as `failed`, so the route sends it
//! again (its retry policy; always on a durable route) with the same
//! `Nats-Msg-Id`: the stream drops the second copy within its duplicate
//! window, and a durable route therefore survives a router kill and a
//! nats-server kill with no loss and no duplicate in the stream.
//!
//! The stream: with `subjects` in its config the output creates it, or
//! updates it to that config, before its first batch on each connection
//! that finds it missing; without, it checks that the stream exists. Until
//! that succeeds every batch fails (and is retried), with the server's
//! answer in `/v1/status` as the uplink's `last_error`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;

use tokio::sync::watch;

use super::Uplink;
use crate::config::{self, StreamStorage};
use crate::egress::{
    AttachError, Context, Delivery, Error, Handle, Lifecycle, LifecycleFuture, Output, OutputStats,
    Reject, SendFuture,
};
use crate::message::Message;
use crate::nats::State;

/// A `nats-jetstream` output.
#[derive(Debug)]
pub struct JetStreamOutput {
    uplink: Uplink,
    settings: config::JetStreamOutput,
    js: ArcSwapOption<jetstream::Context>,
    /// Whether the stream was found (or made) as configured; cleared when
    /// a publish finds it gone.
    stream_ready: AtomicBool,
}

impl JetStreamOutput {
    /// The output `name` as `settings` describe it, counting into `ctx`'s
    /// families; not connected yet.
    pub fn build(name: &str, settings: &config::JetStreamOutput, ctx: &Context) -> Handle {
        Arc::new(Self {
            uplink: Uplink::new(name, &settings.connection, ctx),
            settings: settings.clone(),
            js: ArcSwapOption::empty(),
            stream_ready: AtomicBool::new(false),
        })
    }

    /// Finds the stream, or creates or updates it as configured.
    async fn ensure_stream(&self, js: &jetstream::Context) -> Result<(), String> {
        if self.stream_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let spec = &self.settings.stream;
        let result = match &spec.managed {
            Some(m) => js
                .create_or_update_stream(stream::Config {
                    name: spec.name.clone(),
                    subjects: m.subjects.clone(),
                    storage: match m.storage {
                        StreamStorage::File => stream::StorageType::File,
                        StreamStorage::Memory => stream::StorageType::Memory,
                    },
                    max_age: m.max_age.unwrap_or_default(),
                    max_bytes: m
                        .max_bytes
                        .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
                    max_messages: m
                        .max_msgs
                        .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)),
                    num_replicas: m.replicas,
                    duplicate_window: m.duplicate_window,
                    ..Default::default()
                })
                .await
                .map(drop)
                .map_err(|e| format!("cannot create or update stream {:?}: {e}", spec.name)),
            None => js
                .get_stream(&spec.name)
                .await
                .map(drop)
                .map_err(|e| format!("stream {:?}: {e}", spec.name)),
        };
        match &result {
            Ok(()) => self.stream_ready.store(true, Ordering::Release),
            Err(e) => {
                tracing::warn!(output = %self.uplink.name(), error = %e, "the JetStream stream is not ready; the batch is retried");
                self.uplink.error(e.clone());
            }
        }
        result
    }

    /// Publishes `batch` with at most `max_ack_pending` PubAcks
    /// outstanding, and answers once each is in; see the module docs.
    async fn publish(&self, batch: &[Message]) -> Result<Delivery, Error> {
        if self.uplink.client().await?.is_none() {
            return Ok(Delivery::rejected_all(batch.len(), Reject::NoSubscriber));
        }
        let Some(js) = self.js.load_full() else {
            return Ok(Delivery::rejected_all(batch.len(), Reject::NoSubscriber));
        };
        let mut fates: smallvec::SmallVec<[Option<Reject>; 64]> =
            smallvec::smallvec![None; batch.len()];
        if self.ensure_stream(&js).await.is_err() {
            fates.fill(Some(Reject::Failed));
            return Ok(self.uplink.settle(&fates));
        }
        // A published message counts as failed until its PubAck says
        // otherwise. When the connection drops, the PubAcks still awaited
        // cannot come (the server that would send them is gone, or lost
        // the request): they stay failed at once, to be sent again with
        // the same Nats-Msg-Id, instead of waiting out `ack_timeout`.
        let mut lost = self.uplink.watch();
        let mut inflight = FuturesUnordered::new();
        let mut gone = false;
        for (i, message) in batch.iter().enumerate() {
            fates[i] = Some(Reject::Failed);
            if gone || !self.uplink.is_up() {
                gone = true;
                continue;
            }
            let Some(headers) = self.uplink.headers(message) else {
                fates[i] = Some(Reject::Unencodable);
                continue;
            };
            while inflight.len() >= self.settings.max_ack_pending && !gone {
                match next_ack(&mut inflight, &mut lost).await {
                    Some((j, fate)) => fates[j] = fate,
                    None => gone = true,
                }
            }
            if gone {
                continue;
            }
            let subject = Uplink::subject(&self.settings.subject, &message.topic);
            match js
                .publish_with_headers(subject, headers, message.payload.clone())
                .await
            {
                Ok(ack) => inflight.push(async move { (i, self.acked(ack.await)) }),
                Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    fates[i] = Some(Reject::TooLarge);
                }
                Err(e) => self.uplink.error(format!("publish: {e}")),
            }
        }
        while !gone && !inflight.is_empty() {
            match next_ack(&mut inflight, &mut lost).await {
                Some((j, fate)) => fates[j] = fate,
                None => gone = true,
            }
        }
        if gone {
            tracing::warn!(
                output = %self.uplink.name(),
                unacknowledged = fates.iter().filter(|f| **f == Some(Reject::Failed)).count(),
                "the connection to the NATS server was lost with PubAcks outstanding; those messages are sent again"
            );
        }
        Ok(self.uplink.settle(&fates))
    }

    /// The fate of a message from its PubAck.
    fn acked(
        &self,
        ack: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    ) -> Option<Reject> {
        match ack {
            Ok(_) => None,
            Err(e) => {
                if e.kind() == PublishErrorKind::StreamNotFound {
                    self.stream_ready.store(false, Ordering::Release);
                }
                self.uplink.error(format!("PubAck: {e}"));
                Some(Reject::Failed)
            }
        }
    }
}

/// The next PubAck of `inflight`, or `None` once the connection is lost
/// (or `inflight` is empty).
async fn next_ack<F>(
    inflight: &mut FuturesUnordered<F>,
    lost: &mut watch::Receiver<State>,
) -> Option<(usize, Option<Reject>)>
where
    F: std::future::Future<Output = (usize, Option<Reject>)>,
{
    tokio::select! {
        biased;
        next = inflight.next() => next,
        _ = lost.wait_for(|s| *s != State::Up) => None,
    }
}

impl Output for JetStreamOutput {
    fn name(&self) -> &str {
        self.uplink.name()
    }

    /// Answers once every message of the batch is acknowledged by the
    /// stream (or refused), so [`Output::send_written`] is this too.
    fn send<'a>(&'a self, batch: &'a [Message]) -> SendFuture<'a> {
        Box::pin(self.publish(batch))
    }
}

impl Lifecycle for JetStreamOutput {
    fn attach(&self) -> LifecycleFuture<'_, Result<Option<SocketAddr>, AttachError>> {
        Box::pin(async move {
            if let Some(client) = self.uplink.attach().await {
                // The window is ours (`publish`). async-nats keeps a permit
                // for each PubAck future until it completes, and for one
                // given up on a lost connection until its own ack timeout:
                // so that timeout is ours too, and its permits leave room
                // for a few windows given up in a row.
                let js = jetstream::ContextBuilder::new()
                    .api_prefix(self.settings.api_prefix.clone())
                    .timeout(self.settings.ack_timeout)
                    .ack_timeout(self.settings.ack_timeout)
                    .max_ack_inflight(self.settings.max_ack_pending.saturating_mul(4))
                    .backpressure_on_inflight(true)
                    .build((*client).clone());
                self.js.store(Some(Arc::new(js)));
            }
            Ok(None)
        })
    }

    fn wait_connected(&self, timeout: Duration) -> LifecycleFuture<'_, ()> {
        Box::pin(self.uplink.wait_connected(timeout))
    }

    fn ready(&self) -> bool {
        self.uplink.ready()
    }

    fn connected(&self) -> bool {
        self.uplink.is_up()
    }

    fn stats(&self) -> OutputStats {
        self.uplink.stats("nats-jetstream")
    }

    fn flush_and_close(&self, linger: Duration) -> LifecycleFuture<'_, ()> {
        Box::pin(async move {
            self.js.store(None);
            self.uplink.close(linger).await;
        })
    }
}
