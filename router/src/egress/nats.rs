//! NATS outputs, both `async-nats` clients: `nats` (core NATS, at most
//! once; `core.rs`) and `nats-jetstream` (into a stream, sent on each
//! PubAck; `jetstream.rs`). What they share is here: the connection
//! ([`Uplink`]: connect, reconnect, readiness, `/v1/status`, close) and the
//! message's NATS form (subject from the template, `Nats-Msg-Id` and one
//! header per attribute).
//!
//! While the client is not connected an output takes no batch: the route
//! waits, its queue fills and its `when_full` policy applies. The client
//! reconnects by itself, with a pause doubling from 10ms up to the
//! output's `reconnect_max`. A message over the server's `max_payload` is
//! refused as `too_large`; one whose attribute cannot be a NATS header (a
//! name with a space, a control character or `:`, a value with a line
//! break) as `unencodable`, with the attribute named in the log. Both are
//! refusals for good: not retried, and kept in the dead-letter store when
//! the router has one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_nats::{Client, ConnectOptions, Event, HeaderMap, HeaderName, HeaderValue};
use prometheus::{IntCounter, IntGauge};
use tokio::sync::watch;

use super::{Context, Delivery, Error, OutputStats, Refusals, Reject, UplinkStatus};
use crate::config::{NatsAuth, NatsConnection};
use crate::message::Message;

mod core;
mod jetstream;

pub use self::core::NatsOutput;
pub use self::jetstream::JetStreamOutput;

/// Where the client's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Connecting, or reconnecting: batches wait.
    Down,
    /// Connected: batches are published.
    Up,
    /// Closed by [`Uplink::close`]: batches are refused.
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

/// One output's NATS connection.
pub(crate) struct Uplink {
    name: String,
    settings: NatsConnection,
    client: ArcSwapOption<Client>,
    link: Arc<Link>,
    sent: IntCounter,
    refused: Refusals,
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uplink")
            .field("name", &self.name)
            .field("servers", &self.settings.servers)
            .finish_non_exhaustive()
    }
}

impl Uplink {
    /// The connection of output `name`; not connecting yet.
    fn new(name: &str, settings: &NatsConnection, ctx: &Context) -> Self {
        ctx.outputs.declare_peers(name);
        Self {
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
        }
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

    /// Starts the client. With `retry_on_initial_connect` it connects in
    /// the background: an unreachable server is not an error here,
    /// `/ready` waits for it. Returns the client.
    async fn attach(&self) -> Option<Arc<Client>> {
        let servers: Vec<async_nats::ServerAddr> = self
            .settings
            .servers
            .iter()
            .map(|s| s.parse().expect("the config checked the servers"))
            .collect();
        match async_nats::connect_with_options(servers, self.options()).await {
            Ok(client) => {
                let client = Arc::new(client);
                self.client.store(Some(Arc::clone(&client)));
                Some(client)
            }
            Err(e) => {
                self.link.error(e.to_string());
                tracing::error!(output = %self.name, error = %e, "cannot start the NATS client");
                None
            }
        }
    }

    /// The client once connected: waits while it is (re)connecting.
    /// `Ok(None)` before [`Uplink::attach`].
    ///
    /// # Errors
    /// [`Error::Closed`] once closed.
    async fn connected(&self) -> Result<Option<Arc<Client>>, Error> {
        let Some(client) = self.client.load_full() else {
            return Ok(None);
        };
        let mut state = self.link.state.subscribe();
        match state.wait_for(|s| *s != State::Down).await.map(|s| *s) {
            Ok(State::Up) => Ok(Some(client)),
            _ => Err(Error::Closed {
                output: self.name.clone(),
            }),
        }
    }

    /// Waits up to `timeout` for the first connection.
    async fn wait_connected(&self, timeout: Duration) {
        let mut state = self.link.state.subscribe();
        let _ = tokio::time::timeout(timeout, state.wait_for(|s| *s != State::Down)).await;
    }

    fn ready(&self) -> bool {
        !self.settings.required || self.link.ever.load(Ordering::Acquire)
    }

    fn is_up(&self) -> bool {
        *self.link.state.borrow() == State::Up
    }

    /// Records `error` for `/v1/status`.
    fn error(&self, error: String) {
        self.link.error(error);
    }

    /// Counts a batch whose messages met `fates` (`None`: sent) and
    /// reports it.
    fn settle(&self, fates: &[Option<Reject>]) -> Delivery {
        let (delivery, accepted) = Delivery::from_fates(fates);
        self.sent.inc_by(accepted);
        self.refused.count(&delivery, fates.len());
        delivery
    }

    /// The output's counts and connection for `/v1/status`.
    fn stats(&self, kind: &str) -> OutputStats {
        let uplink = self.status();
        OutputStats {
            name: self.name.clone(),
            kind: kind.into(),
            sent: self.sent.get(),
            dropped: self.refused.total(),
            peers: u64::from(uplink.connected),
            uplink: Some(uplink),
            ..OutputStats::default()
        }
    }

    fn status(&self) -> UplinkStatus {
        let connected = self.is_up();
        let server = self.client.load().as_ref().filter(|_| connected).map(|c| {
            let info = c.server_info();
            format!("{}:{}", info.host, info.port)
        });
        UplinkStatus {
            connected,
            server,
            last_error: self
                .link
                .last_error
                .lock()
                .expect("last error lock")
                .clone(),
        }
    }

    /// Gives the client up to `linger` to write what it holds, then closes
    /// it; batches are refused from then on.
    async fn close(&self, linger: Duration) {
        let Some(client) = self.client.swap(None) else {
            return;
        };
        if tokio::time::timeout(linger, client.flush()).await.is_err() {
            tracing::warn!(output = %self.name, "the NATS client did not flush within the linger");
        }
        let _ = client.drain().await;
        self.link.set(State::Closed);
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
