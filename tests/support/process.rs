//! Child processes driven over the line protocol: spawned with piped stdio,
//! waited on with deadlines, killed when dropped.

use crate::protocol::{Command, Event};
use anyhow::{Context, Result, anyhow, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a process may take to print its ready line. Python with pyzmq
/// takes a few hundred milliseconds; a busy 2-core machine can be slower.
pub const READY_DEADLINE: Duration = Duration::from_secs(30);

/// Keeps the last bytes a child wrote on stderr, for failure messages.
const STDERR_TAIL: usize = 16 * 1024;

/// A running child process speaking the line protocol.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    ready: serde_json::Value,
}

impl Proc {
    /// Spawns `cmd` and waits for its ready line.
    ///
    /// # Errors
    /// When the process cannot start, exits, or prints no ready line in time.
    pub fn spawn(name: &str, mut cmd: std::process::Command) -> Result<Self> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {name}: {cmd:?}"))?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let stderr_pipe = child.stderr.take().context("piped stderr")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut pipe = stderr_pipe;
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
                if s.len() > 2 * STDERR_TAIL {
                    let cut = s.len() - STDERR_TAIL;
                    let cut = (cut..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(0);
                    s.drain(..cut);
                }
            }
        });
        let mut proc = Proc {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
            ready: serde_json::Value::Null,
        };
        let line = proc
            .next_line(READY_DEADLINE)
            .with_context(|| format!("{name} printed no ready line"))?;
        let ready: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{name}: ready line is not JSON: {line}"))?;
        if ready.get("ready") != Some(&serde_json::Value::Bool(true)) {
            bail!("{name}: first line is not a ready line: {line}");
        }
        proc.ready = ready;
        Ok(proc)
    }

    /// The name given at spawn, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operating system's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `endpoint` field of the ready line.
    pub fn endpoint(&self) -> String {
        self.ready_field("endpoint").unwrap_or_default()
    }

    /// A string field of the ready line.
    pub fn ready_field(&self, key: &str) -> Option<String> {
        self.ready.get(key)?.as_str().map(str::to_owned)
    }

    /// The last bytes the process wrote on stderr.
    pub fn stderr_tail(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn next_line(&mut self, deadline: Duration) -> Result<String> {
        match self.lines.recv_timeout(deadline) {
            Ok(line) => Ok(line),
            Err(RecvTimeoutError::Timeout) => Err(anyhow!(
                "{}: no output within {deadline:?}; stderr:\n{}",
                self.name,
                self.stderr_tail()
            )),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.try_wait().ok().flatten();
                Err(anyhow!(
                    "{}: stdout closed (exit status {status:?}); stderr:\n{}",
                    self.name,
                    self.stderr_tail()
                ))
            }
        }
    }

    /// Writes one command line.
    ///
    /// # Errors
    /// When the process's stdin is closed (it exited).
    pub fn send(&mut self, cmd: &Command) -> Result<()> {
        let line = serde_json::to_string(cmd)?;
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .with_context(|| {
                format!(
                    "{}: writing {line}; stderr:\n{}",
                    self.name,
                    self.stderr_tail()
                )
            })
    }

    /// Waits up to `deadline` for the next event line.
    ///
    /// # Errors
    /// On deadline, exit, or a line that is not an [`Event`].
    pub fn event(&mut self, deadline: Duration) -> Result<Event> {
        let line = self.next_line(deadline)?;
        serde_json::from_str(&line).with_context(|| format!("{}: not an event: {line}", self.name))
    }

    /// Sends `cmd` and waits up to `deadline` for its answer.
    ///
    /// # Errors
    /// As [`Proc::send`] and [`Proc::event`].
    pub fn call(&mut self, cmd: &Command, deadline: Duration) -> Result<Event> {
        self.send(cmd)?;
        self.event(deadline)
            .with_context(|| format!("{}: no answer to {cmd:?}", self.name))
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the process to quit, waiting up to `deadline`, then kills it.
    pub fn quit(&mut self, deadline: Duration) {
        let _ = self.send(&Command::Quit);
        self.stdin = None;
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if !self.is_alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
