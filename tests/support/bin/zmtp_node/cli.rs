//! The node's command line: which role, where, and every option of
//! `zmtp::options::Options` it can set.

use anyhow::{Context, Result};
use clap::Parser;
use std::time::Duration;
use switchyard::zmtp;
use switchyard::zmtp::handshake::Mechanism;

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "One switchyard ZMTP socket role in a process, for tests")]
pub(crate) struct Args {
    /// sub, pull, router, pub, push or dealer.
    #[arg(long)]
    pub(crate) role: String,
    /// The `socket` label of its metrics.
    #[arg(long, default_value = "node")]
    pub(crate) name: String,
    /// Endpoints to bind (port 0 picks one; the ready line shows the first).
    #[arg(long)]
    pub(crate) bind: Vec<String>,
    /// Endpoints to connect to (reconnecting forever).
    #[arg(long)]
    pub(crate) connect: Vec<String>,
    /// Prefixes to subscribe to at start (sub).
    #[arg(long)]
    pub(crate) subscribe: Vec<String>,
    /// Received messages held for `recv`/`count` commands (0 = only count).
    #[arg(long, default_value_t = 0)]
    pub(crate) keep: usize,
    /// Limits::max_frame_size, bytes.
    #[arg(long)]
    pub(crate) max_frame_size: Option<usize>,
    /// Limits::max_message_size, bytes.
    #[arg(long)]
    pub(crate) max_message_size: Option<usize>,
    /// Limits::max_frames.
    #[arg(long)]
    pub(crate) max_frames: Option<usize>,
    /// Limits::max_command_size, bytes.
    #[arg(long)]
    pub(crate) max_command_size: Option<usize>,
    /// Options::handshake_timeout, ms.
    #[arg(long)]
    pub(crate) handshake_timeout_ms: Option<u64>,
    /// Options::heartbeat_interval, ms (0 = off).
    #[arg(long)]
    pub(crate) heartbeat_interval_ms: Option<u64>,
    /// Options::heartbeat_timeout, ms.
    #[arg(long)]
    pub(crate) heartbeat_timeout_ms: Option<u64>,
    /// Options::max_connections.
    #[arg(long)]
    pub(crate) max_connections: Option<usize>,
    /// Options::send_hwm, messages per peer queue.
    #[arg(long)]
    pub(crate) send_hwm: Option<usize>,
    /// Options::send_hwm_bytes, bytes per peer queue.
    #[arg(long)]
    pub(crate) send_hwm_bytes: Option<usize>,
    /// Options::recv_hwm, messages.
    #[arg(long)]
    pub(crate) recv_hwm: Option<usize>,
    /// Options::reconnect_interval, ms.
    #[arg(long)]
    pub(crate) reconnect_ms: Option<u64>,
    /// Options::reconnect_interval_max, ms.
    #[arg(long)]
    pub(crate) reconnect_max_ms: Option<u64>,
    /// Options::send_timeout, ms.
    #[arg(long)]
    pub(crate) send_timeout_ms: Option<u64>,
    /// Options::slow_subscriber_timeout, ms.
    #[arg(long)]
    pub(crate) slow_subscriber_timeout_ms: Option<u64>,
    /// Options::max_subscriptions (pub).
    #[arg(long)]
    pub(crate) max_subscriptions: Option<usize>,
    /// Options::max_subscription_bytes (pub).
    #[arg(long)]
    pub(crate) max_subscription_bytes: Option<usize>,
    /// PLAIN server: accept this `user:password` (repeatable).
    #[arg(long)]
    pub(crate) plain_server: Vec<String>,
    /// PLAIN client: authenticate as `user:password`.
    #[arg(long)]
    pub(crate) plain_client: Option<String>,
    /// CURVE: our long-term secret key (Z85); with `--curve-allow` we are
    /// the server, with `--curve-server-key` the client.
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) curve_secret: Option<String>,
    /// CURVE server: admit this `name=Z85 public key` (repeatable).
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) curve_allow: Vec<String>,
    /// CURVE client: the server's public key (Z85).
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) curve_server_key: Option<String>,
    /// Exit after this many seconds whatever happens.
    #[arg(long, default_value_t = 300.0)]
    pub(crate) life_s: f64,
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn credentials(s: &str) -> Result<(String, String)> {
    let (u, p) = s.split_once(':').context("credentials are user:password")?;
    Ok((u.to_owned(), p.to_owned()))
}

fn curve(a: &Args) -> Result<Option<Mechanism>> {
    use switchyard::zmtp::curve::{CurveKeypair, CurvePublicKey};
    let Some(secret) = &a.curve_secret else {
        return Ok(None);
    };
    let keys = std::sync::Arc::new(CurveKeypair::from_z85_secret(secret)?);
    if let Some(server) = &a.curve_server_key {
        return Ok(Some(Mechanism::CurveClient {
            keys,
            server_key: CurvePublicKey::from_z85(server)?,
        }));
    }
    let clients = a
        .curve_allow
        .iter()
        .map(|c| {
            let (name, key) = c.split_once('=').context("--curve-allow is name=key")?;
            Ok((CurvePublicKey::from_z85(key)?, name.to_owned()))
        })
        .collect::<Result<std::collections::HashMap<_, _>>>()?;
    Ok(Some(Mechanism::CurveServer {
        keys,
        clients: std::sync::Arc::new(clients),
    }))
}

pub(crate) fn options(a: &Args) -> Result<zmtp::options::Options> {
    let mut o = zmtp::options::Options::default();
    if let Some(m) = curve(a)? {
        o.mechanism = m;
    }
    if let Some(c) = &a.plain_client {
        let (username, password) = credentials(c)?;
        o.mechanism = Mechanism::PlainClient { username, password };
    } else if !a.plain_server.is_empty() {
        let users = a
            .plain_server
            .iter()
            .map(|c| credentials(c))
            .collect::<Result<std::collections::HashMap<_, _>>>()?;
        o.mechanism = Mechanism::PlainServer {
            credentials: std::sync::Arc::new(users),
        };
    }
    if let Some(v) = a.max_frame_size {
        o.limits.max_frame_size = v;
    }
    if let Some(v) = a.max_message_size {
        o.limits.max_message_size = v;
    }
    if let Some(v) = a.max_frames {
        o.limits.max_frames = v;
    }
    if let Some(v) = a.max_command_size {
        o.limits.max_command_size = v;
    }
    if let Some(v) = a.handshake_timeout_ms {
        o.handshake_timeout = ms(v);
    }
    if let Some(v) = a.heartbeat_interval_ms {
        o.heartbeat_interval = ms(v);
    }
    if let Some(v) = a.heartbeat_timeout_ms {
        o.heartbeat_timeout = ms(v);
    }
    if let Some(v) = a.max_connections {
        o.max_connections = v;
    }
    if let Some(v) = a.send_hwm {
        o.send_hwm = v;
    }
    if let Some(v) = a.send_hwm_bytes {
        o.send_hwm_bytes = v;
    }
    if let Some(v) = a.recv_hwm {
        o.recv_hwm = v;
    }
    if let Some(v) = a.reconnect_ms {
        o.reconnect_interval = ms(v);
    }
    if let Some(v) = a.reconnect_max_ms {
        o.reconnect_interval_max = ms(v);
    }
    if let Some(v) = a.send_timeout_ms {
        o.send_timeout = ms(v);
    }
    if let Some(v) = a.slow_subscriber_timeout_ms {
        o.slow_subscriber_timeout = Some(ms(v));
    }
    if let Some(v) = a.max_subscriptions {
        o.max_subscriptions = v;
    }
    if let Some(v) = a.max_subscription_bytes {
        o.max_subscription_bytes = v;
    }
    Ok(o)
}
