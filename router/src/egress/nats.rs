//! `nats`: a core NATS client (`async-nats`) publishing each message to a
//! subject rendered from the output's template, with the message id as
//! `Nats-Msg-Id` and each attribute as a header.
//!
//! Core NATS is at most once, and a client's writes are buffered: a
//! reconnect discards what the old connection had not written, and a
//! flush issued before the reconnect is answered by the new connection.
//! So a batch counts as sent only when the client flushed it *and* did
//! not reconnect meanwhile (its connect count is the same after the flush
//! as before the first publish). Otherwise the messages it published are
//! refused as `failed`: retried under the output's `retry` policy (always
//! on a durable route), else dropped, counted. A resent message keeps its
//! `Nats-Msg-Id`, so a JetStream stream on the subject stores it once.
//!
//! While the client is not connected the output takes no batch: the route
//! waits, its queue fills and its `when_full` policy applies. The client
//! reconnects by itself, with a pause doubling from 10ms up to the
//! output's `reconnect_max`. A message over the server's `max_payload` is
//! refused as `too_large`; one whose attribute cannot be a NATS header (a
//! name with a space, a control character or `:`, a value with a line
//! break) as `unencodable`, with the attribute named in the log. Both are
//! refusals for good: not retried, and kept in the dead-letter store when
//! the router has one.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_nats::client::PublishErrorKind;
use async_nats::{Client, ConnectOptions, Event, HeaderMap, HeaderName, HeaderValue};
use prometheus::{IntCounter, IntGauge};
use tokio::sync::watch;

use super::{
    AttachError, Context, Delivery, Error, Handle, Lifecycle, LifecycleFuture, Output, OutputStats,
    Refusals, Reject, SendFuture,
};
use crate::config::{self, NatsAuth};
use crate::message::Message;

/// Where the client's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Connecting, or reconnecting: batches wait.
    Down,
    /// Connected: batches are published.
    Up,
    /// Closed by [`Lifecycle::flush_and_close`]: batches are refused.
    Closed,
}

/// The connection's state as the client's events report it.
#[derive(Debug)]
struct Link {
    state: watch::Sender<State>,
    /// Whether it ever connected (`/ready` waits for that when required).
    ever: AtomicBool,
    /// The server's last error, or the client's, for `/v1/status`.
    last_error: Mutex<Option<String>>,
    peers: IntGauge,
}

impl Link {
    fn on(&self, event: Event) {
        match event {
            Event::Connected => {
                self.ever.store(true, Ordering::Release);
                self.set(State::Up);
            }
            Event::Disconnected => self.set(State::Down),
            Event::Closed => self.set(State::Closed),
            Event::ServerError(e) => self.error(e.to_string()),
            Event::ClientError(e) => self.error(e.to_string()),
            Event::LameDuckMode | Event::Draining | Event::SlowConsumer(_) => {}
        }
    }

    /// Moves to `state`, unless closed already.
    fn set(&self, state: State) {
        self.state.send_if_modified(|now| {
            let changed = *now != State::Closed && *now != state;
            if changed {
                *now = state;
            }
            changed
        });
        self.peers.set(i64::from(*self.state.borrow() == State::Up));
    }

    fn error(&self, error: String) {
        *self.last_error.lock().expect("last error lock") = Some(error);
    }
}

/// A `nats` output.
pub struct NatsOutput {
    name: String,
    settings: config::NatsOutput,
    client: ArcSwapOption<Client>,
    link: Arc<Link>,
    sent: IntCounter,
    refused: Refusals,
}

impl std::fmt::Debug for NatsOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsOutput")
            .field("name", &self.name)
            .field("servers", &self.settings.servers)
            .finish_non_exhaustive()
    }
}

impl NatsOutput {
    /// The output `name` as `settings` describe it, counting into `ctx`'s
    /// families; not connected yet.
    pub fn build(name: &str, settings: &config::NatsOutput, ctx: &Context) -> Handle {
        ctx.outputs.declare_peers(name);
        Arc::new(Self {
            name: name.to_owned(),
            settings: settings.clone(),
            client: ArcSwapOption::empty(),
            link: Arc::new(Link {
                state: watch::Sender::new(State::Down),
                ever: AtomicBool::new(false),
                last_error: Mutex::new(None),
                peers: ctx.outputs.peers(name),
            }),
            sent: ctx.outputs.messages(name),
            refused: ctx.outputs.refusals(name),
        })
    }

    fn options(&self) -> ConnectOptions {
        let link = Arc::clone(&self.link);
        let cap = self.settings.reconnect_max;
        let options = ConnectOptions::new()
            .name(format!("switchyard/{}", self.name))
            .connection_timeout(self.settings.connect_timeout)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(move |attempts| reconnect_pause(attempts, cap))
            .event_callback(move |event| {
                link.on(event);
                std::future::ready(())
            });
        match &self.settings.auth {
            NatsAuth::None => options,
            NatsAuth::Token(token) => options.token(token.expose().to_owned()),
            NatsAuth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.expose().to_owned())
            }
            NatsAuth::Nkey(seed) => options.nkey(seed.expose().to_owned()),
            NatsAuth::Creds(creds) => options
                .credentials(creds.expose())
                .expect("the config checked the credentials"),
        }
    }

    /// Publishes `batch` and confirms it; see the module docs.
    async fn publish(&self, batch: &[Message]) -> Result<Delivery, Error> {
        let Some(client) = self.client.load_full() else {
            return Ok(Delivery::rejected_all(batch.len(), Reject::NoSubscriber));
        };
        let mut state = self.link.state.subscribe();
        match state.wait_for(|s| *s != State::Down).await.map(|s| *s) {
            Ok(State::Up) => {}
            _ => return Err(self.closed()),
        }
        let stats = client.statistics();
        let connects = stats.connects.load(Ordering::Acquire);
        let mut fates: smallvec::SmallVec<[Option<Reject>; 64]> =
            smallvec::smallvec![None; batch.len()];
        let mut published = 0usize;
        for (fate, message) in fates.iter_mut().zip(batch) {
            let Some(headers) = self.headers(message) else {
                *fate = Some(Reject::Unencodable);
                continue;
            };
            let subject = self.settings.subject.render(&message.topic);
            match client
                .publish_with_headers(subject, headers, message.payload.clone())
                .await
            {
                Ok(()) => published += 1,
                Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    *fate = Some(Reject::TooLarge);
                }
                Err(e) => {
                    self.link.error(e.to_string());
                    *fate = Some(Reject::Failed);
                }
            }
        }
        if published > 0 {
            let flushed = client.flush().await;
            let reconnected = stats.connects.load(Ordering::Acquire) != connects;
            if let Err(e) = &flushed {
                self.link.error(format!("flush: {e}"));
            }
            if flushed.is_err() || reconnected {
                tracing::warn!(
                    output = %self.name,
                    messages = published,
                    "the connection to the NATS server was lost before these messages were confirmed written; counted as failed"
                );
                for fate in fates.iter_mut().filter(|f| f.is_none()) {
                    *fate = Some(Reject::Failed);
                }
            }
        }
        let mut delivery = Delivery::accepted();
        let mut accepted = 0u64;
        for (i, fate) in fates.iter().enumerate() {
            match fate {
                Some(reason) => delivery.reject(i, *reason),
                None => accepted += 1,
            }
        }
        self.sent.inc_by(accepted);
        self.refused.count(&delivery, batch.len());
        Ok(delivery)
    }

    /// The message's headers: `Nats-Msg-Id` and one per attribute; `None`
    /// (logged) when an attribute cannot be a header.
    fn headers(&self, message: &Message) -> Option<HeaderMap> {
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            message.id.to_string().as_str(),
        );
        for (key, value) in message.attributes.iter() {
            match (
                key.parse::<HeaderName>(),
                value.as_str().parse::<HeaderValue>(),
            ) {
                (Ok(k), Ok(v)) => headers.insert(k, v),
                _ => {
                    tracing::warn!(
                        output = %self.name,
                        id = %message.id,
                        attribute = %key.escape_debug(),
                        "an attribute cannot be a NATS header (a name with a space, a control character or ':', or a value with a line break); the message is refused as unencodable"
                    );
                    return None;
                }
            }
        }
        Some(headers)
    }

    fn closed(&self) -> Error {
        Error::Closed {
            output: self.name.clone(),
        }
    }
}

/// The pause before reconnect attempt `attempts`: 10ms doubling up to
/// `cap`, with up to a quarter of it added at random so a fleet of routers
/// does not reconnect in step.
fn reconnect_pause(attempts: usize, cap: Duration) -> Duration {
    let base = Duration::from_millis(10)
        .saturating_mul(1u32 << attempts.min(16))
        .min(cap);
    base + base.mul_f64(fastrand::f64() / 4.0)
}

impl Output for NatsOutput {
    fn name(&self) -> &str {
        &self.name
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
            let servers: Vec<async_nats::ServerAddr> = self
                .settings
                .servers
                .iter()
                .map(|s| s.parse().expect("the config checked the servers"))
                .collect();
            // With `retry_on_initial_connect` this returns at once and the
            // client connects in the background: an unreachable server is
            // not an error here, `/ready` waits for it.
            match async_nats::connect_with_options(servers, self.options()).await {
                Ok(client) => self.client.store(Some(Arc::new(client))),
                Err(e) => {
                    self.link.error(e.to_string());
                    tracing::error!(output = %self.name, error = %e, "cannot start the NATS client");
                }
            }
            Ok(None)
        })
    }

    fn wait_connected(&self, timeout: Duration) -> LifecycleFuture<'_, ()> {
        Box::pin(async move {
            let mut state = self.link.state.subscribe();
            let _ = tokio::time::timeout(timeout, state.wait_for(|s| *s != State::Down)).await;
        })
    }

    fn ready(&self) -> bool {
        !self.settings.required || self.link.ever.load(Ordering::Acquire)
    }

    fn stats(&self) -> OutputStats {
        let connected = *self.link.state.borrow() == State::Up;
        let server = self.client.load().as_ref().filter(|_| connected).map(|c| {
            let info = c.server_info();
            format!("{}:{}", info.host, info.port)
        });
        OutputStats {
            name: self.name.clone(),
            kind: "nats".into(),
            sent: self.sent.get(),
            dropped: self.refused.total(),
            peers: u64::from(connected),
            uplink: Some(super::UplinkStatus {
                connected,
                server,
                last_error: self
                    .link
                    .last_error
                    .lock()
                    .expect("last error lock")
                    .clone(),
            }),
            ..OutputStats::default()
        }
    }

    fn flush_and_close(&self, linger: Duration) -> LifecycleFuture<'_, ()> {
        Box::pin(async move {
            let Some(client) = self.client.swap(None) else {
                return;
            };
            if tokio::time::timeout(linger, client.flush()).await.is_err() {
                tracing::warn!(output = %self.name, "the NATS client did not flush within the linger");
            }
            let _ = client.drain().await;
            self.link.set(State::Closed);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_pauses_double_up_to_the_cap() {
        let cap = Duration::from_millis(250);
        for attempts in 0..40 {
            let pause = reconnect_pause(attempts, cap);
            let base = Duration::from_millis(10 << attempts.min(5)).min(cap);
            assert!(
                pause >= base && pause <= base + base / 4,
                "{attempts}: {pause:?}"
            );
        }
    }
}
