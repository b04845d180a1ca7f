//! Hostile peers: raw TCP clients that break ZMTP on purpose, each against a
//! fresh node while a well-behaved libzmq peer keeps sending through the same
//! endpoint. After every attack: the node is alive, its peak resident memory
//! grew by no more than the configured limits plus a fixed slack, the metric
//! names the reason, and the good peer's messages kept arriving throughout
//! and all arrived.

use anyhow::{Context, Result, bail, ensure};
use std::time::{Duration, Instant};
use switchyard_tests::cmd;
use switchyard_tests::memory::{MIB, Memory};
use switchyard_tests::node::{self, Node, NodeConfig, SOCKET};
use switchyard_tests::pair::ANY;
use switchyard_tests::peer::{PeerConfig, PeerKind};
use switchyard_tests::process::Proc;
use switchyard_tests::protocol::{Command, Event};
use switchyard_tests::raw::{self, RawPeer};
use switchyard_tests::wait::DEADLINE;

/// Limits the node runs with in these tests.
const MAX_FRAME: usize = 64 * 1024;
const MAX_MESSAGE: usize = 256 * 1024;
const MAX_FRAMES: usize = 64;
/// The memory bound asserted after each attack: one connection may hold up
/// to `MAX_MESSAGE` of a peer's data; on top of that a fixed slack for the
/// allocator, buffers and the good peer's traffic.
const SLACK: u64 = 16 * MIB;
/// Subscription limits of the PUB node: prefixes and their bytes per
/// subscriber.
const MAX_SUBSCRIPTIONS: usize = 100;
const MAX_SUBSCRIPTION_BYTES: usize = 64 * 1024;
/// Per silent connection (task, socket, greeting buffers) in the 1,000
/// connection attack, on top of `SLACK`.
const PER_CONNECTION: u64 = 32 * 1024;

/// The good peer's pace, messages (or requests) per second.
const GOOD_RATE: u64 = 1000;

/// A node under attack and its well-behaved peer.
struct Scene {
    node: Node,
    good: Proc,
    role: &'static str,
    baseline: Memory,
    /// The node's received count at the last check that the good peer flows.
    seen: f64,
}

impl Scene {
    /// A PULL node (or a ROUTER node with `role = "router"`) with the test
    /// limits and a 1 s handshake timeout, plus a libzmq PUSH (or REQ) peer
    /// sending steadily.
    fn start(role: &'static str) -> Result<Scene> {
        let bins = switchyard_tests::bins!();
        let mut node = NodeConfig::new(role)
            .bind(ANY)
            .arg("--max-frame-size", MAX_FRAME)
            .arg("--max-message-size", MAX_MESSAGE)
            .arg("--max-frames", MAX_FRAMES)
            .arg("--handshake-timeout-ms", 1000)
            .arg("--max-connections", 1100)
            .arg("--max-subscriptions", MAX_SUBSCRIPTIONS)
            .arg("--max-subscription-bytes", MAX_SUBSCRIPTION_BYTES)
            .spawn(&bins)?;
        let good_role = match role {
            "pull" => "push",
            "router" => "req",
            "pub" => "sub",
            other => bail!("no good peer for {other}"),
        };
        let mut cfg = PeerConfig::new(PeerKind::Libzmq, good_role).connect(&node.endpoint());
        if role == "pub" {
            // Reads everything it is sent, however slowly the test asks.
            cfg = cfg.subscribe("good").arg("--rcvhwm", 0);
        }
        let mut good = cfg.spawn(&bins)?;
        match role {
            "pull" => good.send(&cmd::send_with(0, &["good", "{seq}"], 0, GOOD_RATE, 0))?,
            "router" => good.send(&Command::Request {
                count: 0,
                frames: vec!["good".into(), "{seq}".into()],
                start: 0,
                rate: GOOD_RATE,
                timeout_ms: 20_000,
            })?,
            _ => {
                // The subscription is in effect once a probe arrives; then
                // the node publishes steadily.
                switchyard_tests::wait::until("the good subscriber's probe", DEADLINE, || {
                    cmd::sent(node.call(&cmd::send(1, &["good.probe"]))?, 1)?;
                    let e = good.call(&cmd::recv(1, 200), DEADLINE)?;
                    Ok(matches!(
                        e,
                        Event::Received {
                            timed_out: false,
                            ..
                        }
                    )
                    .then_some(()))
                })?;
                node.proc()
                    .send(&cmd::send_with(0, &["good", "{seq}"], 0, GOOD_RATE, 0))?;
            }
        }
        let mut scene = Scene {
            node,
            good,
            role,
            baseline: Memory { rss: 0, peak: 0 },
            seen: 0.0,
        };
        // Warm up: the good peer flows before any attack.
        scene.flowing()?;
        scene.baseline = scene.node.memory()?;
        scene.node.reset_peak_memory()?;
        Ok(scene)
    }

    /// Waits until the good peer's messages keep arriving: the node's
    /// received count passes the last seen value by a few messages.
    /// For the PUB node: messages it wrote (the attacker subscribes to
    /// nothing the node publishes, so they all went to the good peer).
    fn flowing(&mut self) -> Result<()> {
        let after = self.seen + 20.0;
        let (family, labels): (&str, &[(&str, &str)]) = match self.role {
            "pub" => (node::MESSAGES, &[("socket", SOCKET), ("direction", "out")]),
            _ => (node::RECEIVED, &[]),
        };
        self.seen = self
            .node
            .wait_metric(family, labels, DEADLINE, |v| *v >= after)
            .context("the good peer's messages stopped arriving")?;
        Ok(())
    }

    /// Waits until `family{socket?, reason}` reaches `n`.
    fn reason(&self, family: &str, reason: &str, n: u64) -> Result<()> {
        let mut labels = vec![("reason", reason)];
        if family != node::HANDSHAKE_FAILURES {
            labels.push(("socket", SOCKET));
        }
        self.node
            .wait_metric(family, &labels, DEADLINE, |v| *v >= n as f64)
            .with_context(|| format!("{family}{{reason={reason:?}}} did not reach {n}"))?;
        Ok(())
    }

    /// The checks after an attack: alive, memory within `limit + SLACK`, the
    /// good peer still flowing, then every good message accounted for.
    fn finish(mut self, limit: u64) -> Result<()> {
        ensure!(
            self.node.is_alive(),
            "the node died; stderr:\n{}",
            self.node.proc().stderr_tail()
        );
        self.flowing()?;
        let m = self.node.memory()?;
        let grew = m.peak.saturating_sub(self.baseline.rss);
        println!(
            "memory: baseline {:.1} MiB, peak {:.1} MiB, grew {:.1} MiB, bound {:.1} MiB",
            self.baseline.rss as f64 / MIB as f64,
            m.peak as f64 / MIB as f64,
            grew as f64 / MIB as f64,
            (limit + SLACK) as f64 / MIB as f64
        );
        ensure!(
            grew <= limit + SLACK,
            "peak RSS grew by {grew} bytes, bound {}",
            limit + SLACK
        );
        if self.role == "pub" {
            let Event::Sent { count, error: None } = self.node.call(&Command::Stop)? else {
                bail!("the node's publishing stopped early");
            };
            // The good subscriber gets every message published after its
            // probe: nothing was dropped for it.
            let e = self
                .good
                .call(&cmd::count(count, 30_000, Some("good.probe")), DEADLINE * 2)?;
            ensure!(
                matches!(e, Event::Counted { count: c, seq_errors: 0, .. } if c == count),
                "published {count}, the good subscriber reports {e:?}"
            );
            ensure!(self.node.is_alive());
            return Ok(());
        }
        match self.good.call(&Command::Stop, DEADLINE)? {
            Event::Sent { count, error: None } => {
                // PUSH -> PULL is lossless: every good message arrives.
                self.node
                    .wait_metric(node::RECEIVED, &[], DEADLINE, |v| *v == count as f64)
                    .context("good messages lost")?;
            }
            Event::Replies {
                count,
                mismatches: 0,
                error: None,
            } if count > 0 => {}
            other => bail!("the good {} peer reported {other:?}", self.role),
        }
        ensure!(self.node.is_alive());
        Ok(())
    }

    fn attacker(&self) -> Result<RawPeer> {
        RawPeer::connect(&self.node.addr())
    }

    /// A raw peer past a valid NULL handshake as `socket_type`.
    fn handshaken(&self, socket_type: &str) -> Result<RawPeer> {
        let mut p = self.attacker()?;
        p.handshake(socket_type, DEADLINE)?;
        Ok(p)
    }
}

/// Sends `bytes`, then waits for the node to close the connection.
fn refused(mut p: RawPeer, bytes: &[u8]) -> Result<()> {
    // The node may close before reading everything; a failed write is fine.
    let _ = p.send(bytes);
    p.wait_closed(DEADLINE)?;
    Ok(())
}

#[test]
fn bad_greeting() -> Result<()> {
    let s = Scene::start("pull")?;
    let mut junk = b"GET / HTTP/1.1\r\nHost: switchyard\r\n\r\n".to_vec();
    junk.resize(64, b' ');
    refused(s.attacker()?, &junk)?;
    s.reason(node::HANDSHAKE_FAILURES, "bad_greeting", 1)?;
    s.finish(0)
}

#[test]
fn wrong_version() -> Result<()> {
    let s = Scene::start("pull")?;
    // A ZMTP 2.x peer: valid signature, major version 2.
    refused(s.attacker()?, &raw::greeting(2, 0, "NULL", false))?;
    s.reason(node::HANDSHAKE_FAILURES, "version", 1)?;
    s.finish(0)
}

#[test]
fn wrong_mechanism() -> Result<()> {
    let s = Scene::start("pull")?;
    let mut out = raw::greeting(3, 1, "CURVE", false).to_vec();
    out.extend(raw::ready("PUSH"));
    refused(s.attacker()?, &out)?;
    s.reason(node::HANDSHAKE_FAILURES, "mechanism", 1)?;
    s.finish(0)
}

#[test]
fn malformed_ready() -> Result<()> {
    let s = Scene::start("pull")?;
    let mut out = raw::greeting(3, 1, "NULL", false).to_vec();
    // A property whose value length runs past the end of the command.
    let mut props = raw::properties(&[("Socket-Type", b"PUSH")]);
    props.extend_from_slice(b"\x08Identity\x00\x00\x10\x00ab");
    out.extend(raw::command("READY", &props));
    refused(s.attacker()?, &out)?;
    s.reason(node::HANDSHAKE_FAILURES, "malformed_ready", 1)?;
    s.finish(0)
}

#[test]
fn frame_length_2_pow_40() -> Result<()> {
    let s = Scene::start("pull")?;
    refused(s.handshaken("PUSH")?, &raw::long_header(0, 1 << 40))?;
    s.reason(node::PROTOCOL_ERRORS, "frame_too_large", 1)?;
    s.finish(MAX_MESSAGE as u64)
}

#[test]
fn frame_length_u64_max() -> Result<()> {
    let s = Scene::start("pull")?;
    refused(
        s.handshaken("PUSH")?,
        &raw::long_header(raw::MORE, u64::MAX),
    )?;
    s.reason(node::PROTOCOL_ERRORS, "frame_too_large", 1)?;
    s.finish(MAX_MESSAGE as u64)
}

/// A frame declared at the frame limit, cut after half its body by FIN:
/// the connection ends without a message and without growing memory.
#[test]
fn frame_truncated_by_fin() -> Result<()> {
    let s = Scene::start("pull")?;
    let mut p = s.handshaken("PUSH")?;
    let mut bytes = raw::header(0, MAX_FRAME as u64);
    bytes.extend(vec![b'x'; MAX_FRAME / 2]);
    p.send(&bytes)?;
    p.finish()?;
    p.wait_closed(DEADLINE)?;
    s.reason(node::DISCONNECTS, "peer_closed", 1)?;
    s.finish(MAX_MESSAGE as u64)
}

/// The same cut by RST (SO_LINGER 0).
#[test]
fn frame_truncated_by_rst() -> Result<()> {
    let s = Scene::start("pull")?;
    let mut p = s.handshaken("PUSH")?;
    let mut bytes = raw::header(raw::MORE, 10);
    bytes.extend_from_slice(b"0123456789");
    bytes.extend(raw::header(0, MAX_FRAME as u64));
    bytes.extend(vec![b'x'; MAX_FRAME / 2]);
    p.send(&bytes)?;
    p.reset()?;
    s.reason(node::DISCONNECTS, "io_error", 1)?;
    s.finish(MAX_MESSAGE as u64)
}

/// 5 million empty frames with MORE (10 MB on the wire), streamed in 64 KiB
/// chunks: the node stops at the frame limit and closes.
#[test]
fn five_million_empty_more_frames() -> Result<()> {
    let mut s = Scene::start("pull")?;
    let mut p = s.handshaken("PUSH")?;
    let chunk: Vec<u8> = [raw::MORE, 0].repeat(32 * 1024);
    let total = 5_000_000usize;
    let mut written = 0;
    while written < total {
        if p.send(&chunk).is_err() {
            break; // the node closed the connection
        }
        written += chunk.len() / 2;
    }
    println!(
        "empty MORE frames written before the node closed: {}",
        written.min(total)
    );
    p.wait_closed(DEADLINE)?;
    s.reason(node::PROTOCOL_ERRORS, "too_many_frames", 1)?;
    s.flowing()?;
    s.finish(MAX_MESSAGE as u64)
}

/// 1,000 connections that send nothing: each is closed at the handshake
/// timeout (1 s) and counted; the good peer flows meanwhile.
#[test]
fn thousand_silent_connections() -> Result<()> {
    let mut s = Scene::start("pull")?;
    let n = 1000;
    let started = Instant::now();
    let mut silent: Vec<RawPeer> = Vec::with_capacity(n);
    // In batches below the listen backlog (128), each batch accepted (the
    // node's greeting arrives) before the next: no SYN is dropped, so no
    // connection waits on a retransmit.
    for batch in 0..n / 100 {
        let first = silent.len();
        for i in 0..100 {
            silent.push(
                s.attacker()
                    .with_context(|| format!("silent connection {}", batch * 100 + i))?,
            );
        }
        let end = Instant::now() + DEADLINE;
        for p in &mut silent[first..] {
            p.read_exact(10, end).context("the node's greeting")?;
        }
    }
    println!("{n} silent connections open after {:?}", started.elapsed());
    s.flowing()?;
    let peak_open = s.node.memory()?;
    for (i, p) in silent.iter_mut().enumerate() {
        p.wait_closed(Duration::from_secs(30))
            .with_context(|| format!("silent connection {i} was never closed"))?;
    }
    println!(
        "all closed after {:?}; node RSS with {n} open: {:.1} MiB",
        started.elapsed(),
        peak_open.rss as f64 / MIB as f64
    );
    s.reason(node::HANDSHAKE_FAILURES, "timeout", n as u64)?;
    s.finish(n as u64 * PER_CONNECTION)
}

/// A REQ peer that sends a command in the middle of a multipart message.
#[test]
fn req_peer_sends_command_mid_message() -> Result<()> {
    let s = Scene::start("router")?;
    let mut bytes = raw::frame(true, b"");
    bytes.extend(raw::frame(true, b"half a request"));
    bytes.extend(raw::command("PING", b"\x00\x0a"));
    refused(s.handshaken("REQ")?, &bytes)?;
    s.reason(node::PROTOCOL_ERRORS, "command_inside_message", 1)?;
    s.finish(MAX_MESSAGE as u64)
}

/// A REQ peer whose requests lack the empty delimiter frame.
#[test]
fn req_peer_without_delimiter() -> Result<()> {
    let s = Scene::start("router")?;
    refused(
        s.handshaken("REQ")?,
        &raw::message(&[b"no delimiter", b"body"]),
    )?;
    s.reason(node::PROTOCOL_ERRORS, "req_envelope", 1)?;
    s.finish(MAX_MESSAGE as u64)
}

/// A subscriber that sends 10,000 distinct 100-byte SUBSCRIBE commands: the
/// node closes it at its subscription limit, and its memory stays bounded by
/// the subscription bytes allowed.
#[test]
fn subscription_flood() -> Result<()> {
    let s = Scene::start("pub")?;
    let mut p = s.handshaken("SUB")?;
    let mut written = 0;
    for i in 0..10_000u32 {
        let mut prefix = format!("zz{i:08}").into_bytes();
        prefix.resize(100, b'.');
        if p.send(&raw::command("SUBSCRIBE", &prefix)).is_err() {
            break;
        }
        written += 1;
    }
    println!("SUBSCRIBE commands written before the node closed: {written}");
    p.wait_closed(DEADLINE)?;
    s.reason(node::PROTOCOL_ERRORS, "too_many_subscriptions", 1)?;
    s.finish(MAX_SUBSCRIPTION_BYTES as u64)
}

/// A subscriber whose SUBSCRIBE command is larger than the command limit.
#[test]
fn oversized_subscribe() -> Result<()> {
    let s = Scene::start("pub")?;
    let mut bytes = raw::long_header(raw::COMMAND, 1 << 30).to_vec();
    bytes.extend_from_slice(b"\x09SUBSCRIBEzz");
    refused(s.handshaken("SUB")?, &bytes)?;
    s.reason(node::PROTOCOL_ERRORS, "command_too_large", 1)?;
    s.finish(MAX_MESSAGE as u64)
}

/// A REQ peer whose request is the delimiter alone, without a body.
#[test]
fn req_peer_with_delimiter_only() -> Result<()> {
    let s = Scene::start("router")?;
    refused(s.handshaken("REQ")?, &raw::message(&[b""]))?;
    s.reason(node::PROTOCOL_ERRORS, "req_envelope", 1)?;
    s.finish(MAX_MESSAGE as u64)
}

/// Peers announcing a socket type that cannot talk to PULL (PUB), or one
/// that does not exist.
#[test]
fn incompatible_and_unknown_socket_types() -> Result<()> {
    let s = Scene::start("pull")?;
    for (i, socket_type) in ["PUB", "WIDGET"].into_iter().enumerate() {
        let mut out = raw::greeting(3, 1, "NULL", false).to_vec();
        out.extend(raw::ready(socket_type));
        refused(s.attacker()?, &out)?;
        s.reason(node::HANDSHAKE_FAILURES, "socket_type", i as u64 + 1)?;
    }
    s.finish(0)
}
