//! The `zeromq` crate (0.7) playing one ZeroMQ peer role for the end-to-end
//! tests: the same command line and line protocol as `tests/peers/zpeer.py`
//! (see `switchyard_tests::protocol`), so every interop test runs against
//! libzmq and against this second independent implementation.
//!
//! The crate has no high-water marks or buffer sizes; asking for one is an
//! error rather than a silently different test.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Parser;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use switchyard_tests::driver::{self, Commands};
use switchyard_tests::protocol::{self, Command, Event, Tally, emit};
use tokio::time::{Instant, sleep_until, timeout_at};
use zeromq::prelude::*;
use zeromq::{ZmqMessage, ZmqResult};

/// Command line, as `zpeer.py`.
#[derive(Parser, Debug)]
struct Args {
    /// pub, sub, push, pull, req, rep, dealer or router.
    #[arg(long)]
    role: String,
    /// Endpoint to bind (port 0 picks one; the ready line shows it).
    #[arg(long)]
    bind: Option<String>,
    /// Endpoints to connect to.
    #[arg(long)]
    connect: Vec<String>,
    /// Prefixes to subscribe to at start (sub).
    #[arg(long)]
    subscribe: Vec<String>,
    /// Echo every request back (rep, router).
    #[arg(long)]
    echo: bool,
    /// Routing identity sent in READY.
    #[arg(long)]
    identity: Option<String>,
    /// Deadline for one send.
    #[arg(long, default_value_t = 10_000)]
    sndtimeo_ms: u64,
    /// Exit after this many seconds whatever happens.
    #[arg(long, default_value_t = 300.0)]
    life_s: f64,
    /// Not supported by the crate.
    #[arg(long)]
    sndhwm: Option<u64>,
    /// Not supported by the crate.
    #[arg(long)]
    rcvhwm: Option<u64>,
    /// Not supported by the crate.
    #[arg(long)]
    rcvbuf: Option<u64>,
    /// Not supported by the crate.
    #[arg(long)]
    sndbuf: Option<u64>,
}

enum Sock {
    Pub(zeromq::PubSocket),
    Sub(zeromq::SubSocket),
    Push(zeromq::PushSocket),
    Pull(zeromq::PullSocket),
    Req(zeromq::ReqSocket),
    Rep(zeromq::RepSocket),
    Dealer(zeromq::DealerSocket),
    Router(zeromq::RouterSocket),
}

macro_rules! each {
    ($sock:expr, $s:ident => $body:expr) => {
        match $sock {
            Sock::Pub($s) => $body,
            Sock::Sub($s) => $body,
            Sock::Push($s) => $body,
            Sock::Pull($s) => $body,
            Sock::Req($s) => $body,
            Sock::Rep($s) => $body,
            Sock::Dealer($s) => $body,
            Sock::Router($s) => $body,
        }
    };
}

impl Sock {
    fn new(role: &str, options: zeromq::SocketOptions) -> Result<Self> {
        Ok(match role {
            "pub" => Sock::Pub(zeromq::PubSocket::with_options(options)),
            "sub" => Sock::Sub(zeromq::SubSocket::with_options(options)),
            "push" => Sock::Push(zeromq::PushSocket::with_options(options)),
            "pull" => Sock::Pull(zeromq::PullSocket::with_options(options)),
            "req" => Sock::Req(zeromq::ReqSocket::with_options(options)),
            "rep" => Sock::Rep(zeromq::RepSocket::with_options(options)),
            "dealer" => Sock::Dealer(zeromq::DealerSocket::with_options(options)),
            "router" => Sock::Router(zeromq::RouterSocket::with_options(options)),
            other => bail!("unknown role {other}"),
        })
    }

    async fn bind(&mut self, ep: &str) -> ZmqResult<String> {
        each!(self, s => s.bind(ep).await.map(|e| e.to_string()))
    }

    async fn connect(&mut self, ep: &str) -> ZmqResult<()> {
        each!(self, s => s.connect(ep).await)
    }

    async fn send(&mut self, m: ZmqMessage) -> Result<()> {
        match self {
            Sock::Pub(s) => s.send(m).await?,
            Sock::Push(s) => s.send(m).await?,
            Sock::Req(s) => s.send(m).await?,
            Sock::Rep(s) => s.send(m).await?,
            Sock::Dealer(s) => s.send(m).await?,
            Sock::Router(s) => s.send(m).await?,
            Sock::Sub(_) | Sock::Pull(_) => bail!("this role cannot send"),
        }
        Ok(())
    }

    async fn recv(&mut self) -> Result<ZmqMessage> {
        Ok(match self {
            Sock::Sub(s) => s.recv().await?,
            Sock::Pull(s) => s.recv().await?,
            Sock::Req(s) => s.recv().await?,
            Sock::Rep(s) => s.recv().await?,
            Sock::Dealer(s) => s.recv().await?,
            Sock::Router(s) => s.recv().await?,
            Sock::Pub(_) | Sock::Push(_) => bail!("this role cannot receive"),
        })
    }
}

fn message(frames: Vec<Bytes>) -> Result<ZmqMessage> {
    ZmqMessage::try_from(frames).map_err(|_| anyhow::anyhow!("empty message"))
}

struct Peer {
    sock: Sock,
    cmds: Commands,
    send_timeout: Duration,
    received: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
}

impl Peer {
    async fn send_cmd(
        &mut self,
        count: u64,
        frames: &[String],
        start: u64,
        rate: u64,
        size: usize,
    ) -> Event {
        let t0 = Instant::now();
        let mut n = 0;
        let mut error = None;
        while count == 0 || n < count {
            if self.cmds.pace(t0, n, rate).await {
                break;
            }
            let m = match message(protocol::render(frames, start + n, size)) {
                Ok(m) => m,
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            };
            match tokio::time::timeout(self.send_timeout, self.sock.send(m)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    error = Some(e.to_string());
                    break;
                }
                Err(_) => {
                    error = Some("timeout".into());
                    break;
                }
            }
            n += 1;
            self.sent.fetch_add(1, Ordering::Relaxed);
        }
        Event::Sent { count: n, error }
    }

    async fn recv_until(&mut self, deadline: Instant) -> Option<Vec<Bytes>> {
        match timeout_at(deadline, self.sock.recv()).await {
            Ok(Ok(m)) => {
                self.received.fetch_add(1, Ordering::Relaxed);
                Some(m.into_vec())
            }
            Ok(Err(e)) => {
                eprintln!("zeromq-peer: recv: {e}");
                // A closed socket will not recover; wait out the deadline
                // rather than spin.
                sleep_until(deadline).await;
                None
            }
            Err(_) => None,
        }
    }

    async fn collect(
        &mut self,
        count: u64,
        timeout_ms: u64,
        skip: Option<&str>,
        mut on: impl FnMut(Vec<Bytes>),
    ) -> bool {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let mut got = 0;
        while got < count {
            let Some(m) = self.recv_until(deadline).await else {
                return true;
            };
            if protocol::skipped(m.first().map(|f| f.as_ref()), skip) {
                continue;
            }
            on(m);
            got += 1;
        }
        false
    }

    async fn request_cmd(
        &mut self,
        count: u64,
        frames: &[String],
        start: u64,
        rate: u64,
        timeout_ms: u64,
    ) -> Event {
        let t0 = Instant::now();
        let (mut ok, mut mismatches, mut n) = (0, 0, 0);
        let mut error = None;
        while count == 0 || n < count {
            if self.cmds.pace(t0, n, rate).await {
                break;
            }
            let req = protocol::render(frames, start + n, 0);
            n += 1;
            let m = match message(req.clone()) {
                Ok(m) => m,
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            };
            if let Err(e) = self.sock.send(m).await {
                error = Some(format!("send: {e}"));
                break;
            }
            let deadline = Instant::now() + Duration::from_millis(timeout_ms);
            let Some(reply) = self.recv_until(deadline).await else {
                error = Some("timeout".into());
                break;
            };
            if reply == req {
                ok += 1;
            } else {
                mismatches += 1;
            }
        }
        Event::Replies {
            count: ok,
            mismatches,
            error,
        }
    }

    async fn dispatch(&mut self, c: Command) -> Event {
        match c {
            Command::Send {
                count,
                frames,
                start,
                rate,
                size,
            } => self.send_cmd(count, &frames, start, rate, size).await,
            Command::Recv {
                count,
                timeout_ms,
                skip_prefix,
            } => {
                let mut messages = Vec::new();
                let timed_out = self
                    .collect(count, timeout_ms, skip_prefix.as_deref(), |m| {
                        messages.push(protocol::frames_to_strings(&m));
                    })
                    .await;
                Event::Received {
                    messages,
                    timed_out,
                }
            }
            Command::Count {
                count,
                timeout_ms,
                skip_prefix,
            } => {
                let mut tally = Tally::default();
                let timed_out = self
                    .collect(count, timeout_ms, skip_prefix.as_deref(), |m| {
                        tally.add(m.last().map(|f| f.as_ref()).unwrap_or(b""));
                    })
                    .await;
                tally.event(timed_out)
            }
            Command::Sub { prefix } => match &mut self.sock {
                Sock::Sub(s) => match s.subscribe(&prefix).await {
                    Ok(()) => Event::Ok,
                    Err(e) => Event::Error {
                        message: e.to_string(),
                    },
                },
                _ => Event::Error {
                    message: "not a sub socket".into(),
                },
            },
            Command::Unsub { prefix } => match &mut self.sock {
                Sock::Sub(s) => match s.unsubscribe(&prefix).await {
                    Ok(()) => Event::Ok,
                    Err(e) => Event::Error {
                        message: e.to_string(),
                    },
                },
                _ => Event::Error {
                    message: "not a sub socket".into(),
                },
            },
            Command::Request {
                count,
                frames,
                start,
                rate,
                timeout_ms,
            } => {
                self.request_cmd(count, &frames, start, rate, timeout_ms)
                    .await
            }
            Command::Stats => Event::Stats {
                received: self.received.load(Ordering::Relaxed),
                sent: self.sent.load(Ordering::Relaxed),
            },
            Command::Stop => Event::Ok,
            Command::Quit => unreachable!("handled by the caller"),
        }
    }
}

/// Echoes every request until the socket fails (rep and router with --echo).
async fn echo(mut sock: Sock, received: Arc<AtomicU64>, sent: Arc<AtomicU64>) {
    loop {
        let m = match sock.recv().await {
            Ok(m) => m,
            Err(e) => {
                eprintln!("zeromq-peer: echo recv: {e}");
                return;
            }
        };
        received.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = sock.send(m).await {
            eprintln!("zeromq-peer: echo send: {e}");
            continue;
        }
        sent.fetch_add(1, Ordering::Relaxed);
    }
}

async fn run(args: Args) -> Result<()> {
    for (name, v) in [
        ("sndhwm", args.sndhwm),
        ("rcvhwm", args.rcvhwm),
        ("rcvbuf", args.rcvbuf),
        ("sndbuf", args.sndbuf),
    ] {
        if v.is_some() {
            bail!("the zeromq crate has no {name} option");
        }
    }
    let mut options = zeromq::SocketOptions::default();
    if let Some(id) = &args.identity {
        options.peer_identity(id.parse::<zeromq::util::PeerIdentity>()?);
    }
    let mut sock = Sock::new(&args.role, options)?;
    let mut endpoint = None;
    if let Some(ep) = &args.bind {
        endpoint = Some(
            sock.bind(ep)
                .await
                .with_context(|| format!("binding {ep}"))?,
        );
    }
    for ep in &args.connect {
        sock.connect(ep)
            .await
            .with_context(|| format!("connecting {ep}"))?;
        endpoint.get_or_insert_with(|| ep.clone());
    }
    if let Sock::Sub(s) = &mut sock {
        for p in &args.subscribe {
            s.subscribe(p).await?;
        }
    }

    let mut cmds = Commands::from_stdin(Duration::from_secs_f64(args.life_s), true);
    let received = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    emit(&serde_json::json!({"ready": true, "endpoint": endpoint}));

    let mut peer = if args.echo {
        tokio::spawn(echo(sock, Arc::clone(&received), Arc::clone(&sent)));
        loop {
            match cmds.next().await {
                Some(Command::Stats) => emit(&Event::Stats {
                    received: received.load(Ordering::Relaxed),
                    sent: sent.load(Ordering::Relaxed),
                }),
                Some(Command::Quit) | None => return Ok(()),
                Some(Command::Stop) => {}
                Some(other) => emit(&Event::Error {
                    message: format!("echo mode: {other:?}"),
                }),
            }
        }
    } else {
        Peer {
            sock,
            cmds,
            send_timeout: Duration::from_millis(args.sndtimeo_ms),
            received,
            sent,
        }
    };
    while let Some(c) = peer.cmds.next().await {
        if c == Command::Quit {
            return Ok(());
        }
        let e = peer.dispatch(c).await;
        emit(&e);
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    driver::main("zeromq-peer", run(args));
}
