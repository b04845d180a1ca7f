//! The `zmtp-node` test binary seen from a test: one switchyard ZMTP socket
//! role in its own process, driven over the line protocol, with its metrics
//! scraped over HTTP and its memory read from `/proc`.

use crate::Bins;
use crate::memory::{self, Memory};
use crate::process::Proc;
use crate::protocol::{Command, Event};
use crate::scrape::{self, Sample};
use crate::wait;
use anyhow::{Context, Result};
use std::time::Duration;

/// The `socket` label value the node registers its socket under.
pub const SOCKET: &str = "node";

/// Families the node exports besides the switchyard ZMTP ones: messages its
/// role delivered to the node's code, and messages the node's code handed to
/// its role (published, pushed, requested or echoed).
pub const RECEIVED: &str = "switchyard_test_node_received_total";
/// See [`RECEIVED`].
pub const SENT: &str = "switchyard_test_node_sent_total";

/// PUB nodes: for each published message, the subscribers it was queued
/// to (`result="queued"`) or dropped for (`result="dropped"`), as
/// `PubSocket::send` reports them.
pub const FANOUT: &str = "switchyard_test_node_fanout_total";

/// Switchyard's gauge of connected peers per socket.
pub const PEERS: &str = "switchyard_zmtp_peers";
/// Switchyard's handshake failures by reason.
pub const HANDSHAKE_FAILURES: &str = "switchyard_zmtp_handshake_failures_total";
/// Switchyard's traffic-phase protocol errors by socket and reason.
pub const PROTOCOL_ERRORS: &str = "switchyard_zmtp_protocol_errors_total";
/// Switchyard's refused connections by socket and reason.
pub const REJECTED: &str = "switchyard_zmtp_connections_rejected_total";
/// Switchyard's drops by socket and reason.
pub const DROPPED: &str = "switchyard_zmtp_dropped_total";
/// Switchyard's ends of established connections by socket and reason.
pub const DISCONNECTS: &str = "switchyard_zmtp_disconnects_total";
/// Switchyard's messages by socket and direction.
pub const MESSAGES: &str = "switchyard_zmtp_messages_total";

/// How to start a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    args: Vec<String>,
}

impl NodeConfig {
    /// A node hosting `role` (sub, pull, router, pub, push, dealer).
    pub fn new(role: &str) -> Self {
        NodeConfig {
            args: vec!["--role".into(), role.into(), "--name".into(), SOCKET.into()],
        }
    }

    /// Binds `endpoint` (port 0 picks a free port).
    pub fn bind(self, endpoint: &str) -> Self {
        self.arg("--bind", endpoint)
    }

    /// Connects to `endpoint` (reconnecting forever).
    pub fn connect(self, endpoint: &str) -> Self {
        self.arg("--connect", endpoint)
    }

    /// Subscribes to `prefix` at start (sub).
    pub fn subscribe(self, prefix: &str) -> Self {
        self.arg("--subscribe", prefix)
    }

    /// Keeps up to `n` received messages for `recv` commands instead of only
    /// counting them (the receive loop waits while `n` are kept).
    pub fn keep(self, n: usize) -> Self {
        self.arg("--keep", n)
    }

    /// Any option of the node (`--max-frames`, `--send-hwm`,
    /// `--handshake-timeout-ms`, ...; see `zmtp-node --help`).
    pub fn arg(mut self, name: &str, value: impl ToString) -> Self {
        self.args.push(name.into());
        self.args.push(value.to_string());
        self
    }

    /// Starts the node and waits until it is bound (or connecting).
    ///
    /// # Errors
    /// When it does not start or get ready in time.
    pub fn spawn(&self, bins: &Bins) -> Result<Node> {
        let mut cmd = std::process::Command::new(bins.node);
        cmd.args(&self.args);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let proc = Proc::spawn(&format!("zmtp-node {}", self.args.join(" ")), cmd)?;
        let metrics = proc
            .ready_field("metrics")
            .context("the node's ready line has no metrics address")?;
        Ok(Node { proc, metrics })
    }
}

/// A running `zmtp-node`.
#[derive(Debug)]
pub struct Node {
    proc: Proc,
    metrics: String,
}

impl Node {
    /// The endpoint it bound (or the first it connects to).
    pub fn endpoint(&self) -> String {
        self.proc.endpoint()
    }

    /// The `host:port` of its bound endpoint, for raw TCP peers.
    pub fn addr(&self) -> String {
        self.endpoint().trim_start_matches("tcp://").to_owned()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The underlying process, to send commands.
    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// Sends `cmd` and waits for its answer (deadline [`wait::DEADLINE`]
    /// plus what the command itself may take).
    ///
    /// # Errors
    /// When the node does not answer in time.
    pub fn call(&mut self, cmd: &Command) -> Result<Event> {
        let own = match cmd {
            Command::Recv { timeout_ms, .. }
            | Command::Count { timeout_ms, .. }
            | Command::Request { timeout_ms, .. } => Duration::from_millis(*timeout_ms),
            _ => Duration::ZERO,
        };
        self.proc.call(cmd, wait::DEADLINE + own)
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        self.proc.is_alive()
    }

    /// One scrape of its metrics.
    ///
    /// # Errors
    /// When the metrics endpoint does not answer.
    pub fn scrape(&self) -> Result<Sample> {
        scrape::scrape(&self.metrics)
    }

    /// The sum of the samples of `name` that carry all of `labels`.
    ///
    /// # Errors
    /// When the metrics endpoint does not answer.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        Ok(self.scrape()?.sum(name, labels))
    }

    /// Waits until metric `name{labels}` satisfies `accept`.
    ///
    /// # Errors
    /// On deadline, with the last value and the node's ZMTP metrics.
    pub fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        deadline: Duration,
        accept: impl FnMut(&f64) -> bool,
    ) -> Result<f64> {
        let what = format!("{name}{labels:?}");
        wait::value(&what, deadline, || self.metric(name, labels), accept).with_context(|| {
            let dump = self
                .scrape()
                .map(|s| s.dump("switchyard_"))
                .unwrap_or_default();
            format!(
                "node metrics:\n{dump}\nnode stderr:\n{}",
                self.proc.stderr_tail()
            )
        })
    }

    /// Waits until the node has exactly `n` connected peers.
    ///
    /// # Errors
    /// On deadline.
    pub fn wait_peers(&self, n: u64) -> Result<()> {
        self.wait_metric(PEERS, &[("socket", SOCKET)], wait::DEADLINE, |v| {
            *v == n as f64
        })?;
        Ok(())
    }

    /// Its resident memory now and its peak.
    ///
    /// # Errors
    /// When the process is gone.
    pub fn memory(&self) -> Result<Memory> {
        memory::read(self.pid())
    }

    /// Resets its peak resident memory to the current value.
    ///
    /// # Errors
    /// When the kernel refuses.
    pub fn reset_peak_memory(&self) -> Result<()> {
        memory::reset_peak(self.pid())
    }
}
