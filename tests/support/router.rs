//! The real `switchyard` binary as a child process, for the `router_*`
//! end-to-end tests.
//!
//! [`Router::start`] writes a config into a fresh temp dir, runs
//! `switchyard --log-format json run --config FILE`, and waits (with a
//! deadline) for the JSON `ready` log line, which gives the bound addresses
//! (every listener in a test config is on `127.0.0.1:0`). The router is
//! killed when dropped; its log is printed then (the test harness shows
//! it only for a failing test).
//!
//! Sub-modules: [`http`] (a small blocking HTTP/1.1 client), [`metrics`]
//! (Prometheus text samples), [`peer`] (pyzmq peers from
//! `tests/peers/router/peer.py`), [`plugins`] (wasm plugin fixtures built
//! by the tests), [`cli`] (the binary run to its exit: `validate`, refused
//! configs), [`reload`] (saving config files as editors do, triggering
//! reloads and reading their outcome), [`stream`] (a numbered stream
//! published from a thread while a test changes the router).
//!
//! Every wait here has a deadline and polls a fact (a log line, a metric
//! value, a process state); none sleeps to synchronise.
//!
//! The binary is found beside the test executable (`target/<profile>/`);
//! `cargo test --workspace` builds it because `router/tests/cli.rs` uses it.
//! `SWITCHYARD_BIN` overrides the path.

pub mod cli;
pub mod http;
pub mod metrics;
pub mod peer;
pub mod plugin_cases;
pub mod plugins;
pub mod reload;
pub mod stream;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

pub use metrics::Scrape;

/// A generous deadline for facts that normally take milliseconds, so a
/// busy 2-core machine does not fail the test.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `fact` until it returns `Some`, or fails after `timeout` naming
/// `what`. The pause between polls grows from 5 ms to 100 ms.
///
/// # Errors
/// When the deadline passes first.
pub fn until<T>(what: &str, timeout: Duration, mut fact: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = fact() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The `switchyard` binary under test.
///
/// # Errors
/// When it does not exist, or is older than a source file of the router
/// (run `cargo build -p switchyard`, or `cargo test --workspace`).
pub fn binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("SWITCHYARD_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("current_exe")?;
    // target/<profile>/deps/<test binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("unexpected test executable path {}", exe.display()))?;
    let bin = profile_dir.join("switchyard");
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .with_context(|| {
            format!(
                "{} is missing: run `cargo build -p switchyard` or `cargo test --workspace`",
                bin.display()
            )
        })?;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../router/src");
    if let Some((newest, path)) = newest_file(&src)
        && newest > built
    {
        bail!(
            "{} is older than {}: run `cargo build -p switchyard` or `cargo test --workspace`",
            bin.display(),
            path.display()
        );
    }
    Ok(bin)
}

fn newest_file(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            newest_file(&path)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .map(|t| (t, path))
        };
        if let Some(c) = candidate
            && newest.as_ref().is_none_or(|n| c.0 > n.0)
        {
            newest = Some(c);
        }
    }
    newest
}

/// A directory under the system temp dir, removed when dropped.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A fresh, empty directory.
    ///
    /// # Errors
    /// When it cannot be created.
    pub fn new() -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "switchyard-e2e-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).with_context(|| format!("mkdir {}", path.display()))?;
        Ok(Self { path })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `text` to `name` inside it; returns the file's path.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.path.join(name);
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The router's stderr, one line per entry, shared with its reader thread.
#[derive(Debug, Default)]
struct Log {
    lines: Mutex<LogLines>,
    grew: Condvar,
}

#[derive(Debug, Default)]
struct LogLines {
    lines: Vec<String>,
    closed: bool,
}

impl Log {
    fn lock(&self) -> std::sync::MutexGuard<'_, LogLines> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How to start a router: its config text and extra environment.
#[derive(Debug, Clone)]
pub struct RouterBuilder {
    config: String,
    env: Vec<(String, String)>,
}

impl RouterBuilder {
    /// Sets an environment variable for the router process.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Starts the router and waits for its `ready` line.
    ///
    /// # Errors
    /// When the binary is missing, the process exits early, or no `ready`
    /// line arrives within [`DEADLINE`].
    pub fn start(self) -> Result<Router> {
        let dir = TempDir::new()?;
        let config = dir.write("switchyard.toml", &self.config)?;
        let mut cmd = Command::new(binary()?);
        cmd.args(["--log-format", "json", "--log", "info", "run", "--config"])
            .arg(&config)
            .current_dir(dir.path())
            .env_remove("SWITCHYARD_LOG")
            .env_remove("SWITCHYARD_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("spawn switchyard")?;
        let stderr = child.stderr.take().context("router stderr")?;
        let log = Arc::new(Log::default());
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.lock().lines.push(line);
                    log.grew.notify_all();
                }
                log.lock().closed = true;
                log.grew.notify_all();
            });
        }
        let mut router = Router {
            pid: child.id(),
            child,
            config,
            log,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            inputs: BTreeMap::new(),
            outputs: BTreeMap::new(),
            exited: None,
            _dir: dir,
        };
        let ready = router.wait_log("the router's ready line", DEADLINE, |v| {
            message(v) == Some("ready")
        })?;
        let fields = &ready["fields"];
        router.admin = field_str(fields, "admin")?
            .parse()
            .context("admin address")?;
        router.inputs = addresses(fields, "inputs")?;
        router.outputs = addresses(fields, "outputs")?;
        Ok(router)
    }
}

/// The `message` of a JSON log line.
pub fn message(line: &Value) -> Option<&str> {
    line["fields"]["message"].as_str()
}

fn field_str<'a>(fields: &'a Value, name: &str) -> Result<&'a str> {
    fields[name]
        .as_str()
        .ok_or_else(|| anyhow!("ready line has no string field {name}: {fields}"))
}

/// `inputs`/`outputs` of the ready line: a JSON map (possibly itself
/// encoded as a string) of name to address.
fn addresses(fields: &Value, name: &str) -> Result<BTreeMap<String, SocketAddr>> {
    let map = match &fields[name] {
        Value::String(s) => serde_json::from_str(s).context("ready line map")?,
        other => other.clone(),
    };
    let Value::Object(map) = map else {
        bail!("ready line field {name} is not a map: {fields}");
    };
    map.into_iter()
        .map(|(k, v)| {
            let addr = v
                .as_str()
                .ok_or_else(|| anyhow!("{name}.{k} is not a string"))?
                .parse()
                .with_context(|| format!("{name}.{k}"))?;
            Ok((k, addr))
        })
        .collect()
}

/// A running router process, killed when dropped.
#[derive(Debug)]
pub struct Router {
    child: Child,
    pid: u32,
    config: PathBuf,
    log: Arc<Log>,
    admin: SocketAddr,
    inputs: BTreeMap<String, SocketAddr>,
    outputs: BTreeMap<String, SocketAddr>,
    exited: Option<ExitStatus>,
    _dir: TempDir,
}

impl Router {
    /// A router to start with `config` (TOML text).
    pub fn builder(config: &str) -> RouterBuilder {
        RouterBuilder {
            config: config.to_owned(),
            env: Vec::new(),
        }
    }

    /// Starts a router on `config` with the test's environment.
    ///
    /// # Errors
    /// As [`RouterBuilder::start`].
    pub fn start(config: &str) -> Result<Self> {
        Self::builder(config).start()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The config file it runs on (`switchyard.toml` in its own temp dir),
    /// for tests that rewrite it.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The admin listener.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// Where input `name` listens.
    ///
    /// # Errors
    /// When the router reported no such bound input.
    pub fn input(&self, name: &str) -> Result<SocketAddr> {
        self.inputs
            .get(name)
            .copied()
            .ok_or_else(|| anyhow!("no bound input {name:?} in {:?}", self.inputs))
    }

    /// Where output `name` listens.
    ///
    /// # Errors
    /// When the router reported no such bound output.
    pub fn output(&self, name: &str) -> Result<SocketAddr> {
        self.outputs
            .get(name)
            .copied()
            .ok_or_else(|| anyhow!("no bound output {name:?} in {:?}", self.outputs))
    }

    /// `tcp://ADDR` of output `name`, for a ZeroMQ peer to connect to.
    ///
    /// # Errors
    /// As [`Router::output`].
    pub fn output_endpoint(&self, name: &str) -> Result<String> {
        Ok(format!("tcp://{}", self.output(name)?))
    }

    /// `tcp://ADDR` of input `name`.
    ///
    /// # Errors
    /// As [`Router::input`].
    pub fn input_endpoint(&self, name: &str) -> Result<String> {
        Ok(format!("tcp://{}", self.input(name)?))
    }

    /// A keep-alive HTTP client for input `name`.
    ///
    /// # Errors
    /// As [`Router::input`].
    pub fn http(&self, input: &str) -> Result<http::Client> {
        Ok(http::Client::new(self.input(input)?))
    }

    /// Publishes probes (`POST /v1/publish/{topic}` on HTTP input `input`)
    /// until each of `subs` has received one: from then on each is
    /// connected and every subscription it made before its probe prefix is
    /// in force. Returns how many probes were published (all admitted).
    /// Later probes may still arrive at a subscriber: tests skip `topic`.
    ///
    /// # Errors
    /// When a publish fails, a subscriber receives something else first,
    /// or the deadline ([`DEADLINE`]) passes.
    pub fn sync_subscribers(
        &self,
        input: &str,
        topic: &str,
        subs: &mut [&mut peer::Peer],
    ) -> Result<u64> {
        let mut client = self.http(input)?;
        let mut synced = vec![false; subs.len()];
        let mut probes = 0;
        let deadline = Instant::now() + DEADLINE;
        while synced.iter().any(|s| !s) {
            if Instant::now() >= deadline {
                bail!("subscribers {synced:?} got no probe on {topic:?} within {DEADLINE:?}");
            }
            let resp = client.post(&format!("/v1/publish/{topic}"), &[], b"probe")?;
            if resp.status != 202 {
                bail!("probe publish answered {}: {}", resp.status, resp.text());
            }
            probes += 1;
            for (sub, done) in subs.iter_mut().zip(synced.iter_mut()) {
                if *done {
                    continue;
                }
                if let Some(m) = sub.recv_timeout(Duration::from_millis(50)) {
                    if m.topic() != topic {
                        bail!("a subscriber got {m:?} before any probe");
                    }
                    *done = true;
                }
            }
        }
        Ok(probes)
    }

    /// Reads `/metrics` once.
    ///
    /// # Errors
    /// When the admin listener does not answer 200 with parsable text.
    pub fn scrape(&self) -> Result<Scrape> {
        Scrape::parse(&self.metrics_text()?)
    }

    /// The raw `/metrics` text.
    ///
    /// # Errors
    /// When the admin listener does not answer 200.
    pub fn metrics_text(&self) -> Result<String> {
        let resp = http::get(self.admin, "/metrics")?;
        if resp.status != 200 {
            bail!("/metrics answered {}: {}", resp.status, resp.text());
        }
        Ok(resp.text())
    }

    /// Polls `/metrics` until `fact` holds for a scrape; returns that
    /// scrape. Fails after `timeout`, showing the last scrape's samples
    /// whose names contain `focus`.
    ///
    /// # Errors
    /// When the deadline passes first or `/metrics` fails.
    pub fn wait_scrape(
        &self,
        what: &str,
        focus: &str,
        timeout: Duration,
        mut fact: impl FnMut(&Scrape) -> bool,
    ) -> Result<Scrape> {
        let mut last = None;
        let found = until(what, timeout, || {
            let scrape = self.scrape().ok()?;
            if fact(&scrape) {
                Some(scrape)
            } else {
                last = Some(scrape);
                None
            }
        });
        found.map_err(|e| {
            let shown = last.map(|s| s.show(focus)).unwrap_or_default();
            e.context(format!("last scrape:\n{shown}"))
        })
    }

    /// Polls until the sample `name{labels}` equals `value`.
    ///
    /// # Errors
    /// When the deadline ([`DEADLINE`]) passes first.
    pub fn wait_metric(&self, name: &str, labels: &[(&str, &str)], value: f64) -> Result<Scrape> {
        self.wait_scrape(
            &format!("{name}{labels:?} == {value}"),
            name,
            DEADLINE,
            |s| s.value(name, labels) == Some(value),
        )
    }

    /// The log lines so far, parsed (lines that are not JSON are skipped).
    pub fn log_json(&self) -> Vec<Value> {
        self.log
            .lock()
            .lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The raw log lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().lines.clone()
    }

    /// Waits for a JSON log line for which `fact` holds; returns it.
    ///
    /// # Errors
    /// When the deadline passes or stderr closes first.
    pub fn wait_log(
        &self,
        what: &str,
        timeout: Duration,
        mut fact: impl FnMut(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        let mut lines = self.log.lock();
        loop {
            while seen < lines.lines.len() {
                if let Ok(v) = serde_json::from_str::<Value>(&lines.lines[seen])
                    && fact(&v)
                {
                    return Ok(v);
                }
                seen += 1;
            }
            if lines.closed {
                bail!(
                    "router stderr closed before {what}; log:\n{}",
                    lines.lines.join("\n")
                );
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what}; log:\n{}",
                    lines.lines.join("\n")
                );
            }
            lines = self
                .log
                .grew
                .wait_timeout(lines, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Sends a signal (`TERM`, `INT`, ...) with the `kill` command.
    ///
    /// # Errors
    /// When `kill` fails (e.g. the process is gone).
    pub fn signal(&self, name: &str) -> Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid.to_string())
            .status()
            .context("run kill")?;
        if !status.success() {
            bail!("kill -{name} {} failed: {status}", self.pid);
        }
        Ok(())
    }

    /// Waits for the process to exit; returns its status.
    ///
    /// # Errors
    /// When it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        let child = &mut self.child;
        let status = until("the router to exit", timeout, || {
            child.try_wait().ok().flatten()
        })?;
        self.exited = Some(status);
        // Let the reader thread see the end of stderr.
        let log = Arc::clone(&self.log);
        let _ = until("the router's stderr to close", DEADLINE, || {
            log.lock().closed.then_some(())
        });
        Ok(status)
    }

    /// Resident memory, in KiB (`VmRSS` of `/proc/PID/status`).
    ///
    /// # Errors
    /// When the file cannot be read or has no `VmRSS` line.
    pub fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .context("read /proc/PID/status")?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("no VmRSS in /proc/{}/status", self.pid))
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // The test harness captures this and shows it only when the test
        // fails.
        let lines = self.log_lines();
        let tail = lines.len().saturating_sub(200);
        eprintln!(
            "---- router log (pid {}, last {} lines) ----\n{}",
            self.pid,
            lines.len() - tail,
            lines[tail..].join("\n")
        );
    }
}
