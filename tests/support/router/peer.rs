//! libzmq peers: `tests/peers/router/peer.py` (pyzmq) as child processes
//! speaking JSON lines. Received messages and other events arrive on two
//! channels fed by a reader thread; every wait has a deadline. A peer is
//! killed when dropped (and exits by itself when its stdin closes).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use serde_json::Value;

use super::{DEADLINE, Router};

/// One message a peer received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// The frames, each cut to its first 120 bytes.
    pub frames: Vec<String>,
    /// The full size of each frame.
    pub sizes: Vec<usize>,
}

impl Msg {
    /// The first frame.
    pub fn topic(&self) -> &str {
        self.frames.first().map_or("", String::as_str)
    }

    /// The last frame (the payload in every multi-frame envelope).
    pub fn payload(&self) -> &str {
        self.frames.last().map_or("", String::as_str)
    }

    /// The sequence number of a generated payload (`<n>....`).
    pub fn seq(&self) -> Option<u64> {
        self.payload().trim_end_matches('.').parse().ok()
    }
}

/// Options of a PULL worker.
#[derive(Debug, Clone, Copy, Default)]
pub struct PullOptions {
    /// Connect but read nothing until [`Peer::go`].
    pub hold: bool,
    /// `ZMQ_RCVHWM`.
    pub rcvhwm: Option<u32>,
    /// `ZMQ_RCVBUF` (the kernel receive buffer), bytes.
    pub rcvbuf: Option<u32>,
    /// Report `disconnected` once the connection ends, after every message
    /// it carried.
    pub monitor: bool,
}

impl PullOptions {
    /// A worker that connects and reads nothing until [`Peer::go`], with
    /// the smallest buffers libzmq and the kernel allow: it stalls a
    /// `zmq-push` output after a few messages.
    pub fn stalled() -> Self {
        Self {
            hold: true,
            rcvhwm: Some(1),
            rcvbuf: Some(4096),
            monitor: false,
        }
    }
}

/// Options of a PUSH producer.
#[derive(Debug, Clone, Copy, Default)]
pub struct PushOptions {
    /// `ZMQ_SNDHWM`.
    pub sndhwm: Option<u32>,
    /// `ZMQ_SNDBUF` (the kernel send buffer), bytes.
    pub sndbuf: Option<u32>,
}

/// A running pyzmq peer.
#[derive(Debug)]
pub struct Peer {
    role: String,
    child: Child,
    stdin: Option<ChildStdin>,
    msgs: Receiver<Msg>,
    events: Receiver<Value>,
    pending: VecDeque<Value>,
    stderr: Arc<Mutex<String>>,
    /// The endpoint the peer reported ready on (a binding `rep`'s real
    /// port), else empty.
    endpoint: String,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/router/peer.py")
}

impl Peer {
    /// Starts `peer.py` with `args` (role first); waits for its `ready`
    /// event.
    ///
    /// # Errors
    /// When python3 cannot start or the peer is not ready within
    /// [`DEADLINE`].
    pub fn spawn(args: &[String]) -> Result<Self> {
        let role = args.first().cloned().unwrap_or_default();
        let mut child = Command::new("python3")
            .arg("-u")
            .arg(script())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn python3 peer.py")?;
        let stdout = child.stdout.take().context("peer stdout")?;
        let mut err = child.stderr.take().context("peer stderr")?;
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let stderr = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = err.read_to_string(&mut text);
                stderr
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&text);
            });
        }
        let (msg_tx, msgs) = channel();
        let (event_tx, events) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    let _ = event_tx.send(serde_json::json!({"event": "garbage", "line": line}));
                    continue;
                };
                if v["event"] == "msg" {
                    let strings = |k: &str| -> Vec<String> {
                        v[k].as_array()
                            .map(|a| {
                                a.iter()
                                    .map(|f| f.as_str().unwrap_or_default().to_owned())
                                    .collect()
                            })
                            .unwrap_or_default()
                    };
                    let sizes = v["sizes"]
                        .as_array()
                        .map(|a| a.iter().map(|n| n.as_u64().unwrap_or(0) as usize).collect())
                        .unwrap_or_default();
                    let msg = Msg {
                        frames: strings("frames"),
                        sizes,
                    };
                    if msg_tx.send(msg).is_err() {
                        break;
                    }
                } else if event_tx.send(v).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut peer = Self {
            role,
            child,
            stdin,
            msgs,
            events,
            pending: VecDeque::new(),
            stderr,
            endpoint: String::new(),
        };
        let ready = peer.wait_event("ready", DEADLINE)?;
        peer.endpoint = ready["endpoint"].as_str().unwrap_or_default().to_owned();
        Ok(peer)
    }

    /// A REP service answering each request `[..., payload]` with
    /// `[name, payload]`: connected to `endpoint`, or bound there when
    /// `bind` (see [`Peer::endpoint`] for the real port).
    ///
    /// # Errors
    /// As [`Peer::spawn`].
    pub fn rep(endpoint: &str, name: &str, bind: bool) -> Result<Self> {
        let mut args = vec!["rep".into(), endpoint.into(), "--name".into(), name.into()];
        if bind {
            args.push("--bind".into());
        }
        Self::spawn(&args)
    }

    /// Changes a `rep` service's delay before each answer.
    ///
    /// # Errors
    /// When the peer does not confirm within [`DEADLINE`].
    pub fn set_delay(&mut self, delay: Duration) -> Result<()> {
        self.command(&serde_json::json!({"delay_ms": delay.as_millis() as u64}))?;
        self.wait_event("delay", DEADLINE).map(drop)
    }

    /// Request clients (REQ sockets) for `endpoint`; see
    /// [`Peer::run_requests`].
    ///
    /// # Errors
    /// As [`Peer::spawn`].
    pub fn req(endpoint: &str) -> Result<Self> {
        Self::spawn(&["req".into(), endpoint.into()])
    }

    /// Runs request clients as `run` says (see `tests/peers/router/peer.py`,
    /// role `req`) and returns their `done` summary.
    ///
    /// # Errors
    /// When the run does not finish within `timeout`.
    pub fn run_requests(&mut self, run: &Value, timeout: Duration) -> Result<Value> {
        self.command(&serde_json::json!({ "run": run }))?;
        self.wait_event("done", timeout)
    }

    /// The endpoint the peer reported when ready (a bound `rep` service's
    /// real address), or empty.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A SUB subscriber connected to `endpoint`, subscribed to `prefixes`
    /// in order, with an unlimited receive queue.
    ///
    /// # Errors
    /// As [`Peer::spawn`].
    pub fn sub(endpoint: &str, prefixes: &[&str]) -> Result<Self> {
        let mut args = vec!["sub".into(), endpoint.into(), "--rcvhwm".into(), "0".into()];
        for p in prefixes {
            args.push("--subscribe".into());
            args.push((*p).into());
        }
        Self::spawn(&args)
    }

    /// A PULL worker connected to `endpoint`.
    ///
    /// # Errors
    /// As [`Peer::spawn`].
    pub fn pull(endpoint: &str, options: PullOptions) -> Result<Self> {
        let mut args = vec!["pull".into(), endpoint.into()];
        if options.hold {
            args.push("--hold".into());
        }
        if options.monitor {
            args.push("--monitor".into());
        }
        if let Some(n) = options.rcvhwm {
            args.extend(["--rcvhwm".into(), n.to_string()]);
        }
        if let Some(n) = options.rcvbuf {
            args.extend(["--rcvbuf".into(), n.to_string()]);
        }
        Self::spawn(&args)
    }

    /// An XPUB publisher connected to `endpoint` (a `zmq-sub` input),
    /// ready once it has seen a subscription to each of `expect`: from then
    /// on nothing it publishes on those prefixes is lost to a slow join.
    ///
    /// # Errors
    /// As [`Peer::spawn`].
    pub fn xpub(endpoint: &str, expect: &[&str]) -> Result<Self> {
        let mut args = vec!["xpub".into(), endpoint.into()];
        for p in expect {
            args.push("--expect".into());
            args.push((*p).into());
        }
        Self::spawn(&args)
    }

    /// A PUSH producer connected to `endpoint` (a `zmq-pull` input).
    ///
    /// # Errors
    /// As [`Peer::spawn`].
    pub fn push(endpoint: &str, options: PushOptions) -> Result<Self> {
        let mut args = vec!["push".into(), endpoint.into()];
        if let Some(n) = options.sndhwm {
            args.extend(["--sndhwm".into(), n.to_string()]);
        }
        if let Some(n) = options.sndbuf {
            args.extend(["--sndbuf".into(), n.to_string()]);
        }
        Self::spawn(&args)
    }

    /// Writes one command line.
    ///
    /// # Errors
    /// When the peer's stdin is closed.
    pub fn command(&mut self, cmd: &Value) -> Result<()> {
        let stdin = self.stdin.as_mut().context("peer stdin closed")?;
        writeln!(stdin, "{cmd}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("{} peer: write command", self.role))
    }

    /// Tells a held PULL worker to start reading.
    ///
    /// # Errors
    /// As [`Peer::command`].
    pub fn go(&mut self) -> Result<()> {
        self.command(&serde_json::json!({"go": true}))
    }

    /// Publishes or pushes explicit messages (frames as text); waits until
    /// the peer has handed them all to libzmq.
    ///
    /// # Errors
    /// As [`Peer::command`], or no `sent` event within [`DEADLINE`].
    pub fn send(&mut self, messages: &[&[&str]]) -> Result<()> {
        self.command(&serde_json::json!({ "send": messages }))?;
        self.wait_event("sent", DEADLINE).map(drop)
    }

    /// Starts sending `count` generated messages `[topic][seq padded to
    /// size]` numbered from `start` (add `attrs` for a three-frame
    /// envelope); does not wait for them.
    ///
    /// # Errors
    /// As [`Peer::command`].
    pub fn generate(
        &mut self,
        topic: &str,
        start: u64,
        count: u64,
        size: usize,
        attrs: Option<&str>,
    ) -> Result<()> {
        let mut gen_cmd =
            serde_json::json!({"topic": topic, "start": start, "count": count, "size": size});
        if let Some(a) = attrs {
            gen_cmd["attrs"] = Value::from(a);
        }
        self.command(&serde_json::json!({ "gen": gen_cmd }))
    }

    /// Waits for the next event called `name` (events of other names that
    /// arrive first are kept for later waits).
    ///
    /// # Errors
    /// When the deadline passes or the peer exits first.
    pub fn wait_event(&mut self, name: &str, timeout: Duration) -> Result<Value> {
        if let Some(at) = self.pending.iter().position(|v| v["event"] == name) {
            return Ok(self.pending.remove(at).expect("position is in range"));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) if v["event"] == name => return Ok(v),
                Ok(v) => self.pending.push_back(v),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(self.failure(&format!("event {name:?} within {timeout:?}")));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.failure(&format!("event {name:?} (peer exited)")));
                }
            }
        }
    }

    /// Takes every event called `name` that has arrived so far (does not
    /// wait).
    pub fn take_events(&mut self, name: &str) -> Vec<Value> {
        while let Ok(v) = self.events.try_recv() {
            self.pending.push_back(v);
        }
        let (taken, kept): (Vec<Value>, Vec<Value>) =
            self.pending.drain(..).partition(|v| v["event"] == name);
        self.pending = kept.into();
        taken
    }

    /// Whether an event called `name` has arrived (does not wait).
    pub fn has_event(&mut self, name: &str) -> bool {
        while let Ok(v) = self.events.try_recv() {
            self.pending.push_back(v);
        }
        self.pending.iter().any(|v| v["event"] == name)
    }

    /// Receives exactly `n` messages, failing after `timeout` with what
    /// had arrived.
    ///
    /// # Errors
    /// When fewer than `n` arrive in time.
    pub fn recv_n(&mut self, n: usize, timeout: Duration) -> Result<Vec<Msg>> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.msgs.recv_timeout(left) {
                Ok(m) => got.push(m),
                Err(_) => {
                    let last: Vec<&Msg> = got.iter().rev().take(3).collect();
                    return Err(self.failure(&format!(
                        "{n} messages within {timeout:?}; got {} (last: {last:?})",
                        got.len()
                    )));
                }
            }
        }
        Ok(got)
    }

    /// Receives messages until `stop` holds for one (included), failing
    /// after `timeout`.
    ///
    /// # Errors
    /// When no such message arrives in time.
    pub fn recv_until(
        &mut self,
        timeout: Duration,
        mut stop: impl FnMut(&Msg) -> bool,
    ) -> Result<Vec<Msg>> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.msgs.recv_timeout(left) {
                Ok(m) => {
                    let done = stop(&m);
                    got.push(m);
                    if done {
                        return Ok(got);
                    }
                }
                Err(_) => {
                    return Err(self.failure(&format!(
                        "the awaited message within {timeout:?}; got {} before",
                        got.len()
                    )));
                }
            }
        }
    }

    /// Publishes an `end` marker to `topic` through `router`'s HTTP input
    /// `input` and receives messages up to it (included), within
    /// [`DEADLINE`]. Call once the routes feeding this peer are idle: its
    /// queue is FIFO, so the marker comes after everything before it.
    ///
    /// # Errors
    /// When the marker is refused or does not arrive in time.
    pub fn recv_through_marker(
        &mut self,
        router: &Router,
        input: &str,
        topic: &str,
    ) -> Result<Vec<Msg>> {
        let resp = router
            .http(input)?
            .post(&format!("/v1/publish/{topic}"), &[], b"end")?;
        ensure!(resp.status == 202, "end marker: {}", resp.text());
        self.recv_until(DEADLINE, |m| m.topic() == topic && m.payload() == "end")
    }

    /// The next message, if one arrives within `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<Msg> {
        self.msgs.recv_timeout(timeout).ok()
    }

    /// The messages that have arrived so far (does not wait).
    pub fn drain(&mut self) -> Vec<Msg> {
        self.msgs.try_iter().collect()
    }

    fn failure(&mut self, what: &str) -> anyhow::Error {
        let status = self.child.try_wait().ok().flatten();
        let stderr = self
            .stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        anyhow!(
            "{} peer: no {what}; exit status {status:?}; stderr:\n{stderr}",
            self.role
        )
    }

    /// Closes stdin and waits for the peer to exit.
    ///
    /// # Errors
    /// When it does not exit within [`DEADLINE`].
    pub fn close(mut self) -> Result<()> {
        self.stdin = None;
        let child = &mut self.child;
        super::until("the peer to exit", DEADLINE, || {
            child.try_wait().ok().flatten()
        })?;
        Ok(())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
