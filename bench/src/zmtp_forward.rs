//! `zmtp-forward`: the benchmark's forwarder built on switchyard's ZMTP layer.
//!
//! Does the same jobs as the libzmq reference `bench/bin/zfwd`, so that
//! `bench/run.py` can drive both with the same load programs:
//!
//! - `--mode pull-push`: a [`PullSocket`] (input) feeding a [`PushSocket`]
//!   (output); PUSH backpressure holds the input back, nothing is lost.
//! - `--mode sub-pub`: a [`SubSocket`] subscribed to everything feeding a
//!   [`PubSocket`]; a full subscriber queue drops (and counts) for that
//!   subscriber alone.
//!
//! Messages move in batches (`recv_many`), the way the router's inputs use
//! the layer. Endpoints use the load programs' syntax: `@tcp://host:port`
//! binds, `>tcp://host:port` connects. `--hwm` sets the per-peer send queue
//! and the inbound queue (messages), matching libzmq's SNDHWM/RCVHWM; the
//! byte bound is lifted so only the message count applies, as in libzmq.
//! Runs until SIGTERM or SIGINT, then prints its counters on stderr.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use switchyard::metrics::Registry;
use switchyard::zmtp::metrics::Metrics;
use switchyard::zmtp::options::Options;
use switchyard::zmtp::publish::PubSocket;
use switchyard::zmtp::pull::PullSocket;
use switchyard::zmtp::push::PushSocket;
use switchyard::zmtp::sub::SubSocket;

/// Messages taken from the input per `recv_many` call.
const DEFAULT_BATCH: usize = 256;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// PULL in, PUSH out.
    PullPush,
    /// SUB (everything) in, PUB out.
    SubPub,
}

/// Forwards ZeroMQ traffic through switchyard's ZMTP layer (benchmark tool).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// What to forward.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Input endpoint(s): `@tcp://127.0.0.1:5555` binds, `>tcp://...` connects; comma-separated.
    #[arg(long = "in")]
    input: String,
    /// Output endpoint(s), same syntax.
    #[arg(long = "out")]
    output: String,
    /// High-water mark in messages: per-peer send queue and inbound queue.
    #[arg(long, default_value_t = 1000)]
    hwm: usize,
    /// Kernel send buffer (bytes); -1 = OS default. The ZMTP layer has no such
    /// option yet, so only -1 is accepted (the harness default for every side).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    sndbuf: i64,
    /// Kernel receive buffer (bytes); -1 = OS default (see --sndbuf).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    rcvbuf: i64,
    /// Messages per `recv_many` batch.
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    batch: usize,
    /// Tokio worker threads; 0 runs everything on the current thread.
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.sndbuf != -1 || args.rcvbuf != -1 {
        bail!("--sndbuf/--rcvbuf: the ZMTP layer uses the OS defaults; pass -1");
    }
    let runtime = if args.threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .context("building the tokio runtime")?;
    runtime.block_on(run(args))
}

fn options(hwm: usize) -> Options {
    Options {
        send_hwm: hwm,
        recv_hwm: hwm,
        // libzmq bounds queues in messages only; lift the byte bound so the
        // two sides are matched on the message count alone.
        send_hwm_bytes: usize::MAX / 2,
        // The load programs do not heartbeat-test anything; keep the default
        // timers out of the measurement.
        heartbeat_interval: Duration::ZERO,
        ..Options::default()
    }
}

/// Splits `@tcp://..,>tcp://..` into (bind?, endpoint) pairs.
fn endpoints(spec: &str) -> Result<Vec<(bool, &str)>> {
    spec.split(',')
        .map(|ep| match ep.as_bytes().first() {
            Some(b'@') => Ok((true, &ep[1..])),
            Some(b'>') => Ok((false, &ep[1..])),
            _ => bail!("endpoint {ep:?} must start with '@' (bind) or '>' (connect)"),
        })
        .collect()
}

/// Binds or connects a role to every endpoint of `spec` (the same methods on every role).
macro_rules! attach {
    ($sock:expr, $spec:expr) => {{
        for (bind, ep) in endpoints($spec)? {
            if bind {
                let addr = $sock.bind(ep).await.with_context(|| format!("bind {ep}"))?;
                eprintln!("zmtp-forward: bound {addr}");
            } else {
                $sock.connect(ep).with_context(|| format!("connect {ep}"))?;
            }
        }
    }};
}

/// What one forwarder run did, printed on exit.
#[derive(Debug, Default)]
struct Stats {
    batches: u64,
    messages: u64,
    /// PUB only: per-subscriber drops reported by [`PubSocket::send`].
    dropped: u64,
}

async fn run(args: Args) -> Result<()> {
    let registry = Registry::new();
    let metrics = Metrics::new(&registry);
    let opts = options(args.hwm);
    let batch = args.batch.max(1);
    let mut stats = Stats::default();
    match args.mode {
        Mode::PullPush => {
            let mut input = PullSocket::new("in", opts.clone(), &metrics);
            let output = PushSocket::new("out", opts, &metrics);
            attach!(input, &args.input);
            attach!(output, &args.output);
            let result = tokio::select! {
                r = pull_push(&mut input, &output, batch, &mut stats) => r,
                () = shutdown_signal() => Ok(()),
            };
            input.close().await;
            output.close().await;
            result?;
        }
        Mode::SubPub => {
            let mut input = SubSocket::new("in", opts.clone(), &metrics);
            let output = PubSocket::new("out", opts, &metrics);
            input.subscribe(Bytes::new());
            attach!(input, &args.input);
            attach!(output, &args.output);
            tokio::select! {
                () = sub_pub(&mut input, &output, batch, &mut stats) => {}
                () = shutdown_signal() => {}
            }
            input.close().await;
            output.close().await;
        }
    }
    eprintln!("zmtp-forward: stopped: {stats:?}");
    eprint!("{}", registry.encode());
    Ok(())
}

/// PULL → PUSH until the input closes.
async fn pull_push(
    input: &mut PullSocket,
    output: &PushSocket,
    batch: usize,
    stats: &mut Stats,
) -> Result<()> {
    let mut buf = Vec::with_capacity(batch);
    loop {
        if input.recv_many(&mut buf, batch).await == 0 {
            return Ok(());
        }
        stats.batches += 1;
        for msg in buf.drain(..) {
            output.send(msg.frames).await.context("push send")?;
            stats.messages += 1;
        }
    }
}

/// SUB → PUB until the input closes.
async fn sub_pub(input: &mut SubSocket, output: &PubSocket, batch: usize, stats: &mut Stats) {
    let mut buf = Vec::with_capacity(batch);
    loop {
        if input.recv_many(&mut buf, batch).await == 0 {
            return;
        }
        stats.batches += 1;
        for msg in buf.drain(..) {
            let fanout = output.send(msg.frames);
            stats.messages += 1;
            stats.dropped += fanout.dropped as u64;
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
