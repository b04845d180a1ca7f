//! The `switchyard` binary run to its exit (`validate`, or a `run` that
//! is expected to refuse its config), with its output captured and a
//! deadline: a process still running then is killed and the wait fails.

use std::ffi::OsStr;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

use super::{binary, until};

/// How a finished `switchyard` process ended.
#[derive(Debug)]
pub struct Exited {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl Exited {
    /// The exit code (`None` when a signal ended it).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Runs `switchyard ARGS...` (logs as text at `warn`, stdin closed) and
/// waits up to `timeout` for it to exit.
///
/// # Errors
/// When the binary is missing or stale, cannot start, or is still running
/// after `timeout` (it is killed then).
pub fn run<I, S>(args: I, timeout: Duration) -> Result<Exited>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut child = Command::new(binary()?)
        .args(["--log", "warn"])
        .args(args)
        .env_remove("SWITCHYARD_LOG")
        .env_remove("SWITCHYARD_LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn switchyard")?;
    // Read both pipes on threads so a chatty process never blocks on a full
    // pipe while we wait for it.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = until("switchyard to exit", timeout, || {
        child.try_wait().ok().flatten()
    });
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err.join().unwrap_or_default();
            return Err(e.context(format!("stderr so far:\n{stderr}")));
        }
    };
    let join = |h: std::thread::JoinHandle<String>, what: &str| {
        h.join()
            .map_err(|_| anyhow!("the {what} reader thread panicked"))
    };
    Ok(Exited {
        status,
        stdout: join(out, "stdout")?,
        stderr: join(err, "stderr")?,
    })
}
