//! The NATS client plumbing the NATS inputs and outputs share (both are
//! `async-nats` clients): one [`Connection`] per input or output, which
//! connects in the background, reconnects by itself with a pause doubling
//! from 10ms up to the entry's `reconnect_max`, follows the client's
//! events (connected or not, ever connected, the last error) for batches,
//! `/ready` and `/v1/status`, and closes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_nats::{Client, ConnectOptions, Event};
use prometheus::IntGauge;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::{NatsAuth, NatsConnection};

/// Where the client's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Connecting, or reconnecting.
    Down,
    /// Connected.
    Up,
    /// Closed by [`Connection::close`].
    Closed,
}

/// A NATS connection as `/v1/status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UplinkStatus {
    /// Connected to a server now.
    pub connected: bool,
    /// The server it is connected to (`host:port`, as the server names
    /// itself), while connected.
    pub server: Option<String>,
    /// The last error the server or the client reported, if any.
    pub last_error: Option<String>,
}

/// The connection's state as the client's events report it.
#[derive(Debug)]
struct Link {
    state: watch::Sender<State>,
    /// Whether it ever connected (`/ready` waits for that when required).
    ever: AtomicBool,
    /// The server's last error, or the client's, for `/v1/status`.
    last_error: Mutex<Option<String>>,
    /// 1 while connected (`output_peers` of an output).
    peers: Option<IntGauge>,
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
            // The input counts what its subscriptions lost itself.
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
        if let Some(peers) = &self.peers {
            peers.set(i64::from(*self.state.borrow() == State::Up));
        }
    }

    fn error(&self, error: String) {
        *self.last_error.lock().expect("last error lock") = Some(error);
    }
}

/// One input's or output's NATS connection.
pub(crate) struct Connection {
    name: String,
    settings: NatsConnection,
    client: ArcSwapOption<Client>,
    link: Arc<Link>,
    /// Messages the client holds per subscription; its default without.
    subscription_capacity: Option<usize>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.name)
            .field("servers", &self.settings.servers)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The connection of entry `name`, not connecting yet; `peers` is set
    /// to 1 while it is connected.
    pub(crate) fn new(name: &str, settings: &NatsConnection, peers: Option<IntGauge>) -> Self {
        Self {
            name: name.to_owned(),
            settings: settings.clone(),
            client: ArcSwapOption::empty(),
            link: Arc::new(Link {
                state: watch::Sender::new(State::Down),
                ever: AtomicBool::new(false),
                last_error: Mutex::new(None),
                peers,
            }),
            subscription_capacity: None,
        }
    }

    /// The same connection, each of whose subscriptions holds up to
    /// `capacity` messages not read yet (an input's).
    pub(crate) fn with_subscription_capacity(mut self, capacity: usize) -> Self {
        self.subscription_capacity = Some(capacity);
        self
    }

    /// The entry's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
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
        let options = match self.subscription_capacity {
            Some(capacity) => options.subscription_capacity(capacity),
            None => options,
        };
        let options = match &self.settings.tls {
            None => options,
            Some(tls) => {
                let mut options = options.require_tls(true);
                if let Some(ca) = &tls.ca_file {
                    options = options.add_root_certificates(ca.clone());
                }
                if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
                    options = options.add_client_certificate(cert.clone(), key.clone());
                }
                options
            }
        };
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
    pub(crate) async fn attach(&self) -> Option<Arc<Client>> {
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
                tracing::error!(entry = %self.name, error = %e, "cannot start the NATS client");
                None
            }
        }
    }

    /// The client once connected: waits while it is (re)connecting.
    /// `Ok(None)` before [`Connection::attach`]; `Err(())` once closed.
    pub(crate) async fn connected(&self) -> Result<Option<Arc<Client>>, ()> {
        let Some(client) = self.client.load_full() else {
            return Ok(None);
        };
        let mut state = self.link.state.subscribe();
        match state.wait_for(|s| *s != State::Down).await.map(|s| *s) {
            Ok(State::Up) => Ok(Some(client)),
            _ => Err(()),
        }
    }

    /// Its state, to watch for changes.
    pub(crate) fn watch(&self) -> watch::Receiver<State> {
        self.link.state.subscribe()
    }

    /// Waits up to `timeout` for the first connection.
    pub(crate) async fn wait_connected(&self, timeout: Duration) {
        let mut state = self.link.state.subscribe();
        let _ = tokio::time::timeout(timeout, state.wait_for(|s| *s != State::Down)).await;
    }

    /// False while a `required` connection has never connected.
    pub(crate) fn ready(&self) -> bool {
        !self.settings.required || self.link.ever.load(Ordering::Acquire)
    }

    /// Whether it is connected now.
    pub(crate) fn is_up(&self) -> bool {
        *self.link.state.borrow() == State::Up
    }

    /// Records `error` for `/v1/status`.
    pub(crate) fn error(&self, error: String) {
        self.link.error(error);
    }

    /// Its state for `/v1/status`.
    pub(crate) fn status(&self) -> UplinkStatus {
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
    /// it.
    pub(crate) async fn close(&self, linger: Duration) {
        let Some(client) = self.client.swap(None) else {
            return;
        };
        if tokio::time::timeout(linger, client.flush()).await.is_err() {
            tracing::warn!(entry = %self.name, "the NATS client did not flush within the linger");
        }
        let _ = client.drain().await;
        self.link.set(State::Closed);
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
