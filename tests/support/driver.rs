//! The command side of the [`protocol`](crate::protocol) shared by the peer
//! binaries (`zmtp-node`, `zeromq-peer`): stdin read into [`Commands`] in a
//! background task, commands that arrive during a send kept for later, send
//! pacing that wakes for a `stop`, and [`main`] (a two-worker runtime and the
//! exit code).

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::protocol::{Command, Event, emit};

/// The commands read from stdin, with those that arrived while a send or
/// request was running kept in order.
#[derive(Debug)]
pub struct Commands {
    rx: mpsc::Receiver<Command>,
    pending: VecDeque<Command>,
    life: Instant,
    cut_sends_at: Option<Instant>,
}

impl Commands {
    /// Starts reading one JSON command per stdin line in a spawned task (a
    /// line that does not parse is answered with [`Event::Error`]). The
    /// command loop ends `life` from now; with `cut_sends` a running send or
    /// request stops then too. Call inside the runtime.
    pub fn from_stdin(life: Duration, cut_sends: bool) -> Self {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Command>(&line) {
                    Ok(c) => {
                        if tx.send(c).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => emit(&Event::Error {
                        message: format!("bad command {line:?}: {e}"),
                    }),
                }
            }
        });
        let life = Instant::now() + life;
        Self {
            rx,
            pending: VecDeque::new(),
            life,
            cut_sends_at: cut_sends.then_some(life),
        }
    }

    /// The next command: a kept one first, else the next line; `None` once
    /// stdin closed or the lifetime ended.
    pub async fn next(&mut self) -> Option<Command> {
        if let Some(c) = self.pending.pop_front() {
            return Some(c);
        }
        timeout_at(self.life, self.rx.recv()).await.ok().flatten()
    }

    /// True when a `stop` arrived (other commands are kept for later), stdin
    /// closed, or (with `cut_sends`) the lifetime ended.
    pub fn stop_requested(&mut self) -> bool {
        if self.cut_sends_at.is_some_and(|at| Instant::now() >= at) {
            return true;
        }
        loop {
            match self.rx.try_recv() {
                Ok(Command::Stop) => return true,
                Ok(c) => self.pending.push_back(c),
                Err(mpsc::error::TryRecvError::Empty) => return false,
                Err(mpsc::error::TryRecvError::Disconnected) => return true,
            }
        }
    }

    /// Waits until message `n` of a send started at `t0` is due at `rate`
    /// per second (0 = no pacing: only checks for a `stop` every 256
    /// messages); true when told to stop.
    pub async fn pace(&mut self, t0: Instant, n: u64, rate: u64) -> bool {
        if rate == 0 {
            return n.is_multiple_of(256) && self.stop_requested();
        }
        let due = t0 + Duration::from_secs_f64(n as f64 / rate as f64);
        loop {
            if self.stop_requested() {
                return true;
            }
            if Instant::now() >= due {
                return false;
            }
            // Wake for a `stop` or the due time, whichever comes first.
            tokio::select! {
                c = self.rx.recv() => match c {
                    Some(Command::Stop) | None => return true,
                    Some(c) => self.pending.push_back(c),
                },
                () = sleep_until(due) => return false,
            }
        }
    }
}

/// Runs `run` on a two-worker runtime (the router's target is a 2-core edge
/// box) and exits: 0 when it succeeded, 1 when it failed, 2 when the runtime
/// could not start; errors are printed to stderr prefixed with `name`.
/// Exits without waiting for the blocking stdin reader.
pub fn main(name: &str, run: impl Future<Output = anyhow::Result<()>>) -> ! {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = match rt.block_on(run) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
