//! `nats`: core NATS, at most once.
//!
//! A client's writes are buffered: a reconnect discards what the old
//! connection had not written, and a flush issued before the reconnect is
//! answered by the new connection. So a batch counts as sent only when the
//! client flushed it *and* did not reconnect meanwhile (its connect count
//! is the same after the flush as before the first publish). Otherwise the
//! messages it published are refused as `failed`: retried under the
//! output's `retry` policy (always on a durable route), else dropped,
//! counted. A resent message keeps its `Nats-Msg-Id`, so a JetStream stream
//! on the subject stores it once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::client::PublishErrorKind;

use super::Uplink;
use crate::config;
use crate::egress::{
    AttachError, Context, Delivery, Error, Handle, Lifecycle, LifecycleFuture, Output, OutputStats,
    Reject, SendFuture,
};
use crate::message::Message;

/// A `nats` output.
#[derive(Debug)]
pub struct NatsOutput {
    uplink: Uplink,
    subject: config::SubjectTemplate,
}

impl NatsOutput {
    /// The output `name` as `settings` describe it, counting into `ctx`'s
    /// families; not connected yet.
    pub fn build(name: &str, settings: &config::NatsOutput, ctx: &Context) -> Handle {
        Arc::new(Self {
            uplink: Uplink::new(name, &settings.connection, ctx),
            subject: settings.subject.clone(),
        })
    }

    /// Publishes `batch` and confirms it; see the module docs.
    async fn publish(&self, batch: &[Message]) -> Result<Delivery, Error> {
        let Some(client) = self.uplink.client().await? else {
            return Ok(Delivery::rejected_all(batch.len(), Reject::NoSubscriber));
        };
        let stats = client.statistics();
        let connects = stats.connects.load(Ordering::Acquire);
        let mut fates: smallvec::SmallVec<[Option<Reject>; 64]> =
            smallvec::smallvec![None; batch.len()];
        let mut published = 0usize;
        for (fate, message) in fates.iter_mut().zip(batch) {
            let Some(headers) = self.uplink.headers(message) else {
                *fate = Some(Reject::Unencodable);
                continue;
            };
            let subject = Uplink::subject(&self.subject, &message.topic);
            match client
                .publish_with_headers(subject, headers, message.payload.clone())
                .await
            {
                Ok(()) => published += 1,
                Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    *fate = Some(Reject::TooLarge);
                }
                Err(e) => {
                    self.uplink.error(e.to_string());
                    *fate = Some(Reject::Failed);
                }
            }
        }
        if published > 0 {
            let flushed = client.flush().await;
            let reconnected = stats.connects.load(Ordering::Acquire) != connects;
            if let Err(e) = &flushed {
                self.uplink.error(format!("flush: {e}"));
            }
            if flushed.is_err() || reconnected {
                tracing::warn!(
                    output = %self.uplink.name(),
                    messages = published,
                    "the connection to the NATS server was lost before these messages were confirmed written; counted as failed"
                );
                for fate in fates.iter_mut().filter(|f| f.is_none()) {
                    *fate = Some(Reject::Failed);
                }
            }
        }
        Ok(self.uplink.settle(&fates))
    }
}

impl Output for NatsOutput {
    fn name(&self) -> &str {
        self.uplink.name()
    }

    /// Answers once the batch was written to the server's socket with no
    /// reconnect in between, so [`Output::send_written`] is this too.
    fn send<'a>(&'a self, batch: &'a [Message]) -> SendFuture<'a> {
        Box::pin(self.publish(batch))
    }
}

impl Lifecycle for NatsOutput {
    fn attach(&self) -> LifecycleFuture<'_, Result<Option<SocketAddr>, AttachError>> {
        Box::pin(async move {
            self.uplink.attach().await;
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
        self.uplink.stats("nats")
    }

    fn flush_and_close(&self, linger: Duration) -> LifecycleFuture<'_, ()> {
        Box::pin(self.uplink.close(linger))
    }
}
