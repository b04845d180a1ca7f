//! `zmtp-node`: one switchyard ZMTP socket role in its own process, for the
//! end-to-end tests.
//!
//! It binds or connects the role given on the command line with the limits
//! and queue bounds given there, prints one ready line
//! `{"ready":true,"endpoint":"tcp://127.0.0.1:PORT","metrics":"127.0.0.1:PORT"}`,
//! then serves the tests' line protocol on stdin/stdout (see
//! `switchyard_tests::protocol`) and its metrics registry over HTTP, so a
//! test can read counters by reason, read this process's memory from
//! `/proc/PID/status`, and check it is still alive after hostile input.
//!
//! Receiving roles (sub, pull, router) consume continuously and count into
//! `switchyard_test_node_received_total`; with `--keep N` they also hand up
//! to N messages to `recv`/`count` commands (waiting while N are held). The
//! router role echoes every request back to the peer that sent it.

#[path = "zmtp_node/cli.rs"]
mod cli;
#[path = "zmtp_node/http.rs"]
mod http;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Parser;
use cli::{Args, options};
use prometheus::IntCounter;
use std::time::Duration;
use switchyard::metrics::Registry;
use switchyard::zmtp;
use switchyard::zmtp::frame::Multipart;
use switchyard_tests::driver::{self, Commands};
use switchyard_tests::protocol::{self, Command, Event, Tally, emit};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout, timeout_at};

/// A receiving role, owned by its consumer task.
enum Inbound {
    Sub(zmtp::sub::SubSocket),
    Pull(zmtp::pull::PullSocket),
    Router(zmtp::router::RouterSocket),
}

/// A sending role, owned by the command loop.
enum Outbound {
    Pub(zmtp::publish::PubSocket),
    Push(zmtp::push::PushSocket),
    Dealer(zmtp::dealer::DealerSocket),
}

/// The hosted role, before it is split between tasks.
enum Role {
    In(Inbound),
    Out(Outbound),
}

/// Test counters, outside the switchyard families.
#[derive(Clone)]
struct Counters {
    received: IntCounter,
    sent: IntCounter,
    /// PUB: per published message, the subscribers it was queued to...
    fanout_queued: IntCounter,
    /// ...and the matching subscribers it was dropped for.
    fanout_dropped: IntCounter,
}

fn multipart(frames: Vec<Bytes>) -> Multipart {
    Multipart::from_vec(frames)
}

macro_rules! each {
    ($role:expr, $s:ident => $body:expr) => {
        match $role {
            Role::In(Inbound::Sub($s)) => $body,
            Role::In(Inbound::Pull($s)) => $body,
            Role::In(Inbound::Router($s)) => $body,
            Role::Out(Outbound::Pub($s)) => $body,
            Role::Out(Outbound::Push($s)) => $body,
            Role::Out(Outbound::Dealer($s)) => $body,
        }
    };
}

impl Role {
    fn new(a: &Args, metrics: &zmtp::metrics::Metrics) -> Result<Role> {
        let o = options(a)?;
        let n = a.name.as_str();
        Ok(match a.role.as_str() {
            "sub" => Role::In(Inbound::Sub(zmtp::sub::SubSocket::new(n, o, metrics))),
            "pull" => Role::In(Inbound::Pull(zmtp::pull::PullSocket::new(n, o, metrics))),
            "router" => Role::In(Inbound::Router(zmtp::router::RouterSocket::new(
                n, o, metrics,
            ))),
            "pub" => Role::Out(Outbound::Pub(zmtp::publish::PubSocket::new(n, o, metrics))),
            "push" => Role::Out(Outbound::Push(zmtp::push::PushSocket::new(n, o, metrics))),
            "dealer" => Role::Out(Outbound::Dealer(zmtp::dealer::DealerSocket::new(
                n, o, metrics,
            ))),
            other => bail!("unknown role {other}"),
        })
    }

    async fn bind(&self, ep: &str) -> Result<std::net::SocketAddr> {
        Ok(each!(self, s => s.bind(ep).await?))
    }

    fn connect(&self, ep: &str) -> Result<()> {
        each!(self, s => s.connect(ep)?);
        Ok(())
    }
}

impl Outbound {
    async fn close(&self) {
        match self {
            Outbound::Pub(s) => s.close().await,
            Outbound::Push(s) => s.close().await,
            Outbound::Dealer(s) => s.close().await,
        }
    }
}

/// Requests from the command loop to the consumer task.
enum Control {
    Subscribe(Bytes, oneshot::Sender<Event>),
    Unsubscribe(Bytes, oneshot::Sender<Event>),
    Close(oneshot::Sender<()>),
}

/// Owns a receiving role: counts every message, keeps them for `recv`
/// commands when asked to, echoes requests (router), and serves
/// subscription changes.
async fn consume(
    mut sock: Inbound,
    counters: Counters,
    keep: Option<mpsc::Sender<Multipart>>,
    mut control: mpsc::Receiver<Control>,
) {
    loop {
        let got = tokio::select! {
            c = control.recv() => {
                match c {
                    Some(Control::Subscribe(p, done)) => {
                        let e = match &mut sock {
                            Inbound::Sub(s) => {
                                s.subscribe(p);
                                Event::Ok
                            }
                            _ => Event::Error { message: "sub needs the sub role".into() },
                        };
                        let _ = done.send(e);
                    }
                    Some(Control::Unsubscribe(p, done)) => {
                        let e = match &mut sock {
                            Inbound::Sub(s) => {
                                // false = was not subscribed: fine, as in libzmq.
                                let _was = s.unsubscribe(&p);
                                Event::Ok
                            }
                            _ => Event::Error { message: "unsub needs the sub role".into() },
                        };
                        let _ = done.send(e);
                    }
                    Some(Control::Close(done)) => {
                        match &sock {
                            Inbound::Sub(s) => s.close().await,
                            Inbound::Pull(s) => s.close().await,
                            Inbound::Router(s) => s.close().await,
                        }
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                }
                continue;
            }
            r = async {
                match &mut sock {
                    Inbound::Sub(s) => s.recv().await,
                    Inbound::Pull(s) => s.recv().await,
                    Inbound::Router(s) => s.recv().await,
                }
            } => r,
        };
        let Some(r) = got else { return };
        counters.received.inc();
        if let Inbound::Router(s) = &sock {
            match s.send(r.peer, r.frames).await {
                Ok(()) => counters.sent.inc(),
                Err(e) => tracing::warn!("echo failed: {e}"),
            }
            continue;
        }
        if let Some(k) = &keep
            && k.send(r.frames).await.is_err()
        {
            return;
        }
    }
}

struct Node {
    out: Option<Outbound>,
    control: Option<mpsc::Sender<Control>>,
    counters: Counters,
    kept: Option<mpsc::Receiver<Multipart>>,
    cmds: Commands,
}

impl Node {
    async fn send(
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
            let m = multipart(protocol::render(frames, start + n, size));
            let r: Result<()> = match &self.out {
                Some(Outbound::Pub(s)) => {
                    let fanout = s.send(m);
                    self.counters.fanout_queued.inc_by(fanout.queued as u64);
                    self.counters.fanout_dropped.inc_by(fanout.dropped as u64);
                    Ok(())
                }
                Some(Outbound::Push(s)) => s.send(m).await.map_err(Into::into),
                _ => Err(anyhow::anyhow!(
                    "this role cannot send (dealer: use request)"
                )),
            };
            if let Err(e) = r {
                error = Some(e.to_string());
                break;
            }
            n += 1;
            self.counters.sent.inc();
        }
        Event::Sent { count: n, error }
    }

    async fn collect(
        &mut self,
        count: u64,
        timeout_ms: u64,
        skip: Option<&str>,
        mut on: impl FnMut(&Multipart),
    ) -> Result<bool> {
        let kept = self
            .kept
            .as_mut()
            .context("start the node with --keep to receive")?;
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let mut got = 0;
        while got < count {
            let m = match timeout_at(deadline, kept.recv()).await {
                Ok(Some(m)) => m,
                Ok(None) | Err(_) => return Ok(true),
            };
            if protocol::skipped(m.first().map(|f| f.as_ref()), skip) {
                continue;
            }
            on(&m);
            got += 1;
        }
        Ok(false)
    }

    async fn request(
        &mut self,
        count: u64,
        frames: &[String],
        start: u64,
        rate: u64,
        timeout_ms: u64,
    ) -> Event {
        if !matches!(self.out, Some(Outbound::Dealer(_))) {
            return Event::Error {
                message: "request needs the dealer role".into(),
            };
        }
        let t0 = Instant::now();
        let (mut ok, mut mismatches, mut n) = (0, 0, 0);
        let mut error = None;
        while count == 0 || n < count {
            if self.cmds.pace(t0, n, rate).await {
                break;
            }
            let req = multipart(protocol::render(frames, start + n, 0));
            n += 1;
            let Some(Outbound::Dealer(s)) = &self.out else {
                break;
            };
            let wait = Duration::from_millis(timeout_ms);
            // The socket's own deadline, and ours around it in case it hangs.
            match timeout(wait + Duration::from_secs(5), s.request(req.clone(), wait)).await {
                Ok(Ok(reply)) => {
                    self.counters.sent.inc();
                    self.counters.received.inc();
                    if reply == req {
                        ok += 1;
                    } else {
                        mismatches += 1;
                    }
                }
                Ok(Err(e)) => {
                    error = Some(e.to_string());
                    break;
                }
                Err(_) => {
                    error = Some("timeout".into());
                    break;
                }
            }
        }
        Event::Replies {
            count: ok,
            mismatches,
            error,
        }
    }

    async fn control(&mut self, make: impl FnOnce(oneshot::Sender<Event>) -> Control) -> Event {
        let Some(control) = &self.control else {
            return Event::Error {
                message: "not a receiving role".into(),
            };
        };
        let (done, answer) = oneshot::channel();
        if control.send(make(done)).await.is_err() {
            return Event::Error {
                message: "the consumer task ended".into(),
            };
        }
        answer.await.unwrap_or(Event::Error {
            message: "the consumer task ended".into(),
        })
    }

    async fn close(&mut self) {
        if let Some(out) = &self.out {
            out.close().await;
        }
        if let Some(control) = &self.control {
            let (done, closed) = oneshot::channel();
            if control.send(Control::Close(done)).await.is_ok() {
                let _ = closed.await;
            }
        }
    }

    async fn dispatch(&mut self, c: Command) -> Event {
        let fail = |e: anyhow::Error| Event::Error {
            message: format!("{e:#}"),
        };
        match c {
            Command::Send {
                count,
                frames,
                start,
                rate,
                size,
            } => self.send(count, &frames, start, rate, size).await,
            Command::Recv {
                count,
                timeout_ms,
                skip_prefix,
            } => {
                let mut messages = Vec::new();
                match self
                    .collect(count, timeout_ms, skip_prefix.as_deref(), |m| {
                        messages.push(protocol::frames_to_strings(m))
                    })
                    .await
                {
                    Ok(timed_out) => Event::Received {
                        messages,
                        timed_out,
                    },
                    Err(e) => fail(e),
                }
            }
            Command::Count {
                count,
                timeout_ms,
                skip_prefix,
            } => {
                let mut tally = Tally::default();
                match self
                    .collect(count, timeout_ms, skip_prefix.as_deref(), |m| {
                        tally.add(m.last().map(|f| f.as_ref()).unwrap_or(b""))
                    })
                    .await
                {
                    Ok(timed_out) => tally.event(timed_out),
                    Err(e) => fail(e),
                }
            }
            Command::Sub { prefix } => {
                self.control(|done| Control::Subscribe(Bytes::from(prefix), done))
                    .await
            }
            Command::Unsub { prefix } => {
                self.control(|done| Control::Unsubscribe(Bytes::from(prefix), done))
                    .await
            }
            Command::Request {
                count,
                frames,
                start,
                rate,
                timeout_ms,
            } => self.request(count, &frames, start, rate, timeout_ms).await,
            Command::Stats => Event::Stats {
                received: self.counters.received.get(),
                sent: self.counters.sent.get(),
            },
            Command::Stop => Event::Ok,
            Command::Quit => Event::Ok,
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let registry = Registry::new();
    let metrics = zmtp::metrics::Metrics::new(&registry);
    let fanout = registry.counter_vec(
        switchyard_tests::node::FANOUT,
        "PUB: subscribers each published message was queued to or dropped for.",
        &["result"],
    );
    let counters = Counters {
        received: registry.counter(
            switchyard_tests::node::RECEIVED,
            "Messages the node's role delivered to it.",
        ),
        sent: registry.counter(
            switchyard_tests::node::SENT,
            "Messages the node handed to its role.",
        ),
        fanout_queued: fanout.with_label_values(&["queued"]),
        fanout_dropped: fanout.with_label_values(&["dropped"]),
    };
    let role = Role::new(&args, &metrics)?;
    let mut endpoint = None;
    for ep in &args.bind {
        let addr = role
            .bind(ep)
            .await
            .with_context(|| format!("binding {ep}"))?;
        endpoint.get_or_insert_with(|| format!("tcp://{addr}"));
    }
    for ep in &args.connect {
        role.connect(ep)
            .with_context(|| format!("connecting {ep}"))?;
        endpoint.get_or_insert_with(|| ep.clone());
    }
    if let Role::In(Inbound::Sub(s)) = &role {
        for p in &args.subscribe {
            s.subscribe(Bytes::from(p.clone()));
        }
    }

    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let metrics_addr = metrics_listener.local_addr()?;
    tokio::spawn(http::serve_metrics(metrics_listener, registry.clone()));

    let (keep_tx, kept) = if args.keep > 0 {
        let (tx, rx) = mpsc::channel(args.keep);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let (out, control) = match role {
        Role::In(sock) => {
            let (control, rx) = mpsc::channel(8);
            tokio::spawn(consume(sock, counters.clone(), keep_tx, rx));
            (None, Some(control))
        }
        Role::Out(sock) => (Some(sock), None),
    };

    let cmds = Commands::from_stdin(Duration::from_secs_f64(args.life_s), false);

    emit(
        &serde_json::json!({"ready": true, "endpoint": endpoint, "metrics": metrics_addr.to_string()}),
    );

    let mut node = Node {
        out,
        control,
        counters,
        kept,
        cmds,
    };
    while let Some(c) = node.cmds.next().await {
        if c == Command::Quit {
            break;
        }
        let e = node.dispatch(c).await;
        emit(&e);
    }
    let _ = timeout(Duration::from_secs(5), node.close()).await;
    Ok(())
}

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    driver::main("zmtp-node", run(args));
}
