//! Dead and frozen peers: heartbeats (PING/PONG, ZMTP 3.1) find peers that
//! stopped answering, and what was queued to them is not lost.

use anyhow::{Context, Result, ensure};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use switchyard_tests::cmd::{self, sent};
use switchyard_tests::node::{self, NodeConfig, SOCKET};
use switchyard_tests::pair::ANY;
use switchyard_tests::peer::{PeerConfig, PeerKind};
use switchyard_tests::protocol::Event;
use switchyard_tests::raw::RawPeer;
use switchyard_tests::wait::DEADLINE;

/// Heartbeats every 200 ms; a peer silent for 1 s is dead.
fn heartbeats(cfg: NodeConfig) -> NodeConfig {
    cfg.arg("--heartbeat-interval-ms", 200)
        .arg("--heartbeat-timeout-ms", 1000)
}

fn heartbeat_deaths(node: &switchyard_tests::node::Node, n: f64) -> Result<()> {
    node.wait_metric(
        node::DISCONNECTS,
        &[("socket", SOCKET), ("reason", "heartbeat_timeout")],
        DEADLINE,
        |v| *v >= n,
    )
    .context("no heartbeat_timeout disconnect")?;
    Ok(())
}

/// A 3.1 peer that completes the handshake and then says nothing, not even
/// PONG, is disconnected for `heartbeat_timeout`; a libzmq peer that answers
/// PINGs stays.
#[test]
fn silent_peer_after_handshake_is_dropped() -> Result<()> {
    let bins = switchyard_tests::bins!();
    let mut node = heartbeats(NodeConfig::new("pull").keep(10))
        .bind(ANY)
        .spawn(&bins)?;
    let mut good = PeerConfig::new(PeerKind::Libzmq, "push")
        .connect(&node.endpoint())
        .spawn(&bins)?;
    let mut silent = RawPeer::connect(&node.addr())?;
    silent.handshake("PUSH", DEADLINE)?;
    node.wait_peers(2)?;
    silent.wait_closed(DEADLINE)?;
    heartbeat_deaths(&node, 1.0)?;
    node.wait_peers(1)?;
    sent(good.call(&cmd::send(1, &["still", "here"]), DEADLINE)?, 1)?;
    let got = cmd::messages(node.call(&cmd::recv(1, 20_000))?)?;
    ensure!(got == vec![vec!["still".to_string(), "here".to_string()]]);
    Ok(())
}

/// A ZMTP 3.0 subscriber (the `zeromq` crate greets as 3.0) cannot answer
/// PING, so it is never timed out for silence: it stays connected while a
/// silent 3.1 peer that connected after it is dropped.
#[test]
fn quiet_zmtp_3_0_subscriber_is_kept() -> Result<()> {
    let bins = switchyard_tests::bins!();
    let mut node = heartbeats(NodeConfig::new("pub")).bind(ANY).spawn(&bins)?;
    let mut quiet = PeerConfig::new(PeerKind::ZeromqCrate, "sub")
        .connect(&node.endpoint())
        .subscribe("a")
        .spawn(&bins)?;
    node.wait_peers(1)?;
    let mut silent = RawPeer::connect(&node.addr())?;
    silent.handshake("SUB", DEADLINE)?;
    // The 3.1 peer was silent for the timeout, so the 3.0 one (connected
    // earlier, silent since) was too.
    silent.wait_closed(DEADLINE)?;
    heartbeat_deaths(&node, 1.0)?;
    node.wait_peers(1)?;
    switchyard_tests::wait::until("a message at the quiet subscriber", DEADLINE, || {
        sent(node.call(&cmd::send(1, &["a"]))?, 1)?;
        let e = quiet.call(&cmd::recv(1, 200), DEADLINE)?;
        Ok(matches!(
            e,
            Event::Received {
                timed_out: false,
                ..
            }
        )
        .then_some(()))
    })?;
    ensure!(
        node.metric(
            node::DISCONNECTS,
            &[("socket", SOCKET), ("reason", "heartbeat_timeout")]
        )? == 1.0
    );
    Ok(())
}

/// A PULL worker that freezes (stops reading and answering PING, its TCP
/// window closed) while the PUSH side has messages queued for it: the
/// heartbeat declares it dead, and every message is delivered exactly once,
/// either to it before it froze or to the live worker.
#[test]
fn frozen_pull_worker_is_dropped_and_its_messages_move() -> Result<()> {
    const N: u64 = 2000;
    let bins = switchyard_tests::bins!();
    let mut node = heartbeats(NodeConfig::new("push"))
        .arg("--send-hwm", 100)
        .bind(ANY)
        .spawn(&bins)?;
    let mut frozen = RawPeer::connect_with(&node.addr(), Some(4096))?;
    frozen.handshake("PULL", DEADLINE)?;
    let mut live = PeerConfig::new(PeerKind::Libzmq, "pull")
        .connect(&node.endpoint())
        .arg("--rcvhwm", 0)
        .spawn(&bins)?;
    node.wait_peers(2)?;
    sent(
        node.call(&cmd::send_with(N, &["k", "{seq}"], 0, 0, 16 * 1024))?,
        N,
    )?;
    heartbeat_deaths(&node, 1.0)?;
    // What the frozen worker got before it was cut off (it reads now).
    let mut seqs = BTreeSet::new();
    let end = Instant::now() + Duration::from_secs(30);
    while let Ok(m) = frozen.read_message(end) {
        seqs.insert(seq(&m[1])?);
    }
    let frozen_got = seqs.len() as u64;
    let e = live.call(&cmd::recv(N - frozen_got, 30_000), DEADLINE * 2)?;
    let live_msgs = match e {
        Event::Received { messages, .. } => messages,
        other => anyhow::bail!("live worker: {other:?}"),
    };
    for m in &live_msgs {
        ensure!(
            seqs.insert(seq(m[1].as_bytes())?),
            "message {} delivered twice",
            m[1]
        );
    }
    println!(
        "frozen worker got {frozen_got}, live worker {}",
        live_msgs.len()
    );
    ensure!(seqs.len() as u64 == N && seqs.last() == Some(&(N - 1)));
    Ok(())
}

fn seq(frame: &[u8]) -> Result<u64> {
    std::str::from_utf8(frame)?
        .trim_end_matches('.')
        .parse()
        .with_context(|| {
            format!(
                "not a sequence number: {:?}",
                String::from_utf8_lossy(frame)
            )
        })
}

/// A REP service whose process freezes (SIGSTOP: it neither reads nor
/// answers PING) is found dead by the heartbeat; requests then all go to the
/// live service.
#[test]
fn frozen_rep_service_is_dropped() -> Result<()> {
    let bins = switchyard_tests::bins!();
    let mut node = heartbeats(NodeConfig::new("dealer"))
        .bind(ANY)
        .spawn(&bins)?;
    let frozen = PeerConfig::new(PeerKind::Libzmq, "rep")
        .echo()
        .connect(&node.endpoint())
        .spawn(&bins)?;
    let _live = PeerConfig::new(PeerKind::Libzmq, "rep")
        .echo()
        .connect(&node.endpoint())
        .spawn(&bins)?;
    node.wait_peers(2)?;
    let e = node.call(&cmd::request(10, &["q{seq}"], 0, 20_000))?;
    cmd::replied(e, 10)?;
    let _frozen = Frozen::stop(frozen.pid())?;
    heartbeat_deaths(&node, 1.0)?;
    node.wait_peers(1)?;
    let e = node.call(&cmd::request(50, &["q{seq}"], 0, 20_000))?;
    cmd::replied(e, 50)?;
    Ok(())
}

/// A process stopped with SIGSTOP, continued when dropped.
struct Frozen(u32);

impl Frozen {
    fn stop(pid: u32) -> Result<Frozen> {
        signal("-STOP", pid)?;
        Ok(Frozen(pid))
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = signal("-CONT", self.0);
    }
}

fn signal(sig: &str, pid: u32) -> Result<()> {
    let status = std::process::Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()?;
    ensure!(status.success(), "kill {sig} {pid}: {status}");
    Ok(())
}

/// The node answers libzmq's PINGs with PONG. The node sends no heartbeats
/// of its own here, so only PONGs keep the libzmq peer (PING every 100 ms,
/// gives up after 300 ms without traffic) connected; a connection that
/// never greets is timed out by the node after 1 s, a fact that proves
/// enough time passed.
#[test]
fn node_answers_libzmq_pings() -> Result<()> {
    let bins = switchyard_tests::bins!();
    let node = NodeConfig::new("pull")
        .arg("--heartbeat-interval-ms", 0)
        .arg("--handshake-timeout-ms", 1000)
        .bind(ANY)
        .spawn(&bins)?;
    let _pinger = PeerConfig::new(PeerKind::Libzmq, "push")
        .arg("--heartbeat-ms", 100)
        .connect(&node.endpoint())
        .spawn(&bins)?;
    node.wait_peers(1)?;
    let mut silent = RawPeer::connect(&node.addr())?;
    silent.wait_closed(DEADLINE)?;
    node.wait_metric(
        node::HANDSHAKE_FAILURES,
        &[("reason", "timeout")],
        DEADLINE,
        |v| *v == 1.0,
    )?;
    let s = node.scrape()?;
    ensure!(
        s.sum(node::DISCONNECTS, &[("socket", SOCKET)]) == 0.0
            && s.sum(node::PEERS, &[("socket", SOCKET)]) == 1.0,
        "the libzmq peer lost its connection:\n{}",
        s.dump("switchyard_zmtp_")
    );
    Ok(())
}
