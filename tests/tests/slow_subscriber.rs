//! A subscriber that stops reading, next to one that reads at full speed, on
//! the switchyard PUB side.
//!
//! The slow one is a raw ZMTP client with a 4 KiB receive buffer that stops
//! reading once subscribed; the fast one is libzmq (RCVHWM 0, so its I/O
//! thread reads as fast as the node writes). Asserted: the node's memory
//! stays within the per-subscriber queue bounds, the fast subscriber gets
//! every message, and every message meant for the slow one is either
//! received by it or counted as dropped, exactly. The fast subscriber's
//! longest gap between messages and longest publish-to-receive latency are
//! printed, not asserted (tests never assert wall-clock timings).
//!
//! Exact accounting, over the publishing phase only (the pipelines to both
//! subscribers are empty before it: each has read a fence):
//! - `fanout` = deliveries `PubSocket::send` reported (queued + dropped),
//!   summed over the phase = N for the fast one + A for the slow one, where
//!   A = N unless the slow one was disconnected during the phase;
//! - the fast one received N, so every fan-out drop was the slow one's;
//! - slow received + dropped(queue full) + dropped(peer disconnected) = A
//!   (a message fanned out to a subscriber already disconnecting counts as
//!   a fan-out drop and as `peer_disconnected`, as do messages still queued
//!   when it is cut off).

use anyhow::{Context, Result, bail, ensure};
use std::time::{Duration, Instant};
use switchyard_tests::cmd::{self, sent};
use switchyard_tests::memory::MIB;
use switchyard_tests::node::{self, Node, NodeConfig, SOCKET};
use switchyard_tests::pair::ANY;
use switchyard_tests::peer::{PeerConfig, PeerKind};
use switchyard_tests::process::Proc;
use switchyard_tests::protocol::Event;
use switchyard_tests::raw::RawPeer;
use switchyard_tests::wait::{self, DEADLINE};

/// Messages published while the slow subscriber does not read.
const N: u64 = 20_000;
/// Their pace, per second (2 s of publishing).
const RATE: u64 = 10_000;
/// Size of each message's payload frame.
const SIZE: usize = 1024;
/// The per-subscriber queue bound in bytes (the binding one: about 4,000
/// messages of `SIZE`, 400 ms at `RATE`: room for a busy machine to
/// deschedule the fast subscriber); the message bound is set far above it.
const HWM_BYTES: u64 = 4 * MIB;
const HWM_MESSAGES: u64 = 100_000;
/// Fixed slack for the allocator, socket buffers and the command loop.
const SLACK: u64 = 16 * MIB;

/// Every control message (probes, fences) starts with this; data messages'
/// first frame is exactly "t".
const CONTROL: &str = "t.";

struct Scene {
    node: Node,
    fast: Proc,
    slow: RawPeer,
}

/// Counters sampled around the publishing phase.
#[derive(Clone, Copy, Debug)]
struct Counts {
    queued: u64,
    dropped: u64,
    full: u64,
    disconnected: u64,
}

impl Counts {
    fn read(node: &Node) -> Result<Counts> {
        let s = node.scrape()?;
        let dropped =
            |reason| s.sum(node::DROPPED, &[("socket", SOCKET), ("reason", reason)]) as u64;
        Ok(Counts {
            queued: s.sum(node::FANOUT, &[("result", "queued")]) as u64,
            dropped: s.sum(node::FANOUT, &[("result", "dropped")]) as u64,
            full: dropped("subscriber_queue_full"),
            disconnected: dropped("peer_disconnected"),
        })
    }

    fn since(self, before: Counts) -> Counts {
        Counts {
            queued: self.queued - before.queued,
            dropped: self.dropped - before.dropped,
            full: self.full - before.full,
            disconnected: self.disconnected - before.disconnected,
        }
    }
}

/// Publishes probes until one reaches the fast subscriber: its
/// subscription is then in effect.
fn probe_fast(node: &mut Node, fast: &mut Proc) -> Result<()> {
    wait::until("a probe at the fast subscriber", DEADLINE, || {
        sent(node.call(&cmd::send(1, &["t.probe"]))?, 1)?;
        let e = fast.call(&cmd::recv(1, 200), DEADLINE)?;
        Ok(matches!(
            e,
            Event::Received {
                timed_out: false,
                ..
            }
        )
        .then_some(()))
    })
}

fn start(extra: &[(&str, u64)]) -> Result<Scene> {
    let bins = switchyard_tests::bins!();
    let mut cfg = NodeConfig::new("pub")
        .bind(ANY)
        .arg("--send-hwm", HWM_MESSAGES)
        .arg("--send-hwm-bytes", HWM_BYTES);
    for (k, v) in extra {
        cfg = cfg.arg(k, v);
    }
    let mut node = cfg.spawn(&bins)?;
    let mut fast = PeerConfig::new(PeerKind::Libzmq, "sub")
        .connect(&node.endpoint())
        .subscribe("t")
        .arg("--rcvhwm", 0)
        .spawn(&bins)?;
    let mut slow = RawPeer::connect_with(&node.addr(), Some(4096))?;
    slow.handshake("SUB", DEADLINE)?;
    slow.subscribe(b"t")?;
    node.wait_peers(2)?;

    // Both subscriptions are in effect once a probe reaches each...
    probe_fast(&mut node, &mut fast)?;
    wait::until("a probe at the slow subscriber", DEADLINE, || {
        sent(node.call(&cmd::send(1, &["t.probe"]))?, 1)?;
        Ok(slow
            .read_message(Instant::now() + Duration::from_millis(200))
            .ok())
    })?;
    // ...and both pipelines are empty once each has read a fence sent after
    // every probe.
    sent(node.call(&cmd::send(1, &["t.fence"]))?, 1)?;
    let end = Instant::now() + DEADLINE;
    while slow.read_message(end)?[0] != b"t.fence" {}
    let e = cmd::messages(fast.call(&cmd::recv_skipping(1, 20_000, "t.probe"), DEADLINE)?)?;
    ensure!(e == vec![vec!["t.fence".to_string()]], "fast: {e:?}");
    Ok(Scene { node, fast, slow })
}

/// Publishes `N` messages while the slow subscriber does not read; checks the
/// fast subscriber got them all and the memory bound; returns the counters'
/// change over the phase.
fn publish(s: &mut Scene) -> Result<Counts> {
    let before = Counts::read(&s.node)?;
    let baseline = s.node.memory()?;
    s.node.reset_peak_memory()?;
    s.fast.send(&cmd::count(N, 60_000, Some(CONTROL)))?;
    let e = s
        .node
        .call(&cmd::send_with(N, &["t", "{seq} {ts} "], 0, RATE, SIZE))?;
    sent(e, N)?;
    let (count, seq_errors, gap, latency) = match s.fast.event(Duration::from_secs(90))? {
        Event::Counted {
            count,
            seq_errors,
            max_gap_ms,
            max_latency_ms,
            ..
        } => (count, seq_errors, max_gap_ms, max_latency_ms),
        other => bail!("fast subscriber: {other:?}"),
    };
    let m = s.node.memory()?;
    let phase = Counts::read(&s.node)?.since(before);
    let grew = m.peak.saturating_sub(baseline.rss);
    let bound = 2 * HWM_BYTES + SLACK;
    println!(
        "published {N} x {SIZE} B at {RATE}/s: fast got {count}, max gap {gap:.1} ms, \
         max latency {latency:.1} ms; node RSS baseline {:.1} MiB, peak {:.1} MiB \
         (grew {:.1} MiB, bound {:.1} MiB); phase counters {phase:?}",
        baseline.rss as f64 / MIB as f64,
        m.peak as f64 / MIB as f64,
        grew as f64 / MIB as f64,
        bound as f64 / MIB as f64,
    );
    ensure!(
        count == N && seq_errors == 0,
        "the fast subscriber got {count} of {N}, {seq_errors} out of order; phase counters {phase:?}"
    );
    ensure!(
        grew <= bound,
        "node peak RSS grew {grew} bytes, bound {bound}"
    );
    Ok(phase)
}

/// Reads the slow subscriber's data messages until `want` arrived or, with
/// `want = None`, until the node closes the connection; checks their order.
fn drain(slow: &mut RawPeer, want: Option<u64>) -> Result<u64> {
    let end = Instant::now() + Duration::from_secs(60);
    let (mut got, mut last) = (0u64, None);
    while want.is_none_or(|w| got < w) {
        let m = match slow.read_message(end) {
            Ok(m) => m,
            Err(e) if want.is_none() && e.to_string().contains("closed") => break,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("slow subscriber drained {got} of {want:?}"));
            }
        };
        if m[0] != b"t" {
            continue;
        }
        let seq: u64 = std::str::from_utf8(&m[1])?
            .split(' ')
            .next()
            .and_then(|w| w.parse().ok())
            .context("no sequence number")?;
        ensure!(
            last.is_none_or(|l| seq > l),
            "slow subscriber: {seq} after {last:?}"
        );
        last = Some(seq);
        got += 1;
    }
    Ok(got)
}

#[test]
fn slow_subscriber_drops_are_counted_and_bounded() -> Result<()> {
    let mut s = start(&[])?;
    let phase = publish(&mut s)?;
    // Never disconnected: every message was meant for the slow one too.
    ensure!(phase.queued + phase.dropped == 2 * N, "{phase:?}");
    ensure!(
        phase.full > 0,
        "nothing was dropped for a subscriber that did not read"
    );
    ensure!(
        phase.dropped == phase.full,
        "fan-out drops != dropped_total{{subscriber_queue_full}}: {phase:?}"
    );
    // The slow subscriber now reads everything queued for it...
    let got = drain(&mut s.slow, Some(N - phase.full))?;
    // ...and nothing more: the next message after a fence is the fence.
    sent(s.node.call(&cmd::send(1, &["t.end"]))?, 1)?;
    let next = s.slow.read_message(Instant::now() + DEADLINE)?;
    ensure!(
        next[0] == b"t.end",
        "the slow subscriber got more than {got}: {:?}",
        String::from_utf8_lossy(&next[0])
    );
    println!(
        "slow subscriber: received {got}, dropped {}, published {N}",
        phase.full
    );
    ensure!(got + phase.full == N && phase.disconnected == 0);
    ensure!(s.node.is_alive());
    Ok(())
}

#[test]
fn slow_subscriber_is_disconnected_after_timeout() -> Result<()> {
    let mut s = start(&[("--slow-subscriber-timeout-ms", 500)])?;
    let phase = publish(&mut s)?;
    s.node.wait_metric(
        node::DISCONNECTS,
        &[("socket", SOCKET), ("reason", "slow_subscriber")],
        DEADLINE,
        |v| *v == 1.0,
    )?;
    s.node.wait_peers(1)?;
    // Read what reached the slow subscriber before it was cut off.
    let got = drain(&mut s.slow, None)?;
    let after = Counts::read(&s.node)?;
    let meant = phase.queued + phase.dropped - N;
    println!(
        "disconnected slow subscriber: meant {meant}, received {got}, counters {phase:?}, after {after:?}"
    );
    ensure!(
        meant < N,
        "the slow subscriber was not cut off while publishing"
    );
    ensure!(
        got + phase.full + phase.disconnected == meant,
        "received {got} + dropped {} (full) + {} (disconnected) != {meant} meant for it",
        phase.full,
        phase.disconnected
    );
    // The fast subscriber is unaffected and still subscribed.
    sent(s.node.call(&cmd::send(1, &["t.after"]))?, 1)?;
    let after = cmd::messages(s.fast.call(&cmd::recv(1, 20_000), DEADLINE)?)?;
    ensure!(after == vec![vec!["t.after".to_string()]], "{after:?}");
    Ok(())
}

/// Eight subscribers that stop reading, next to a fast one: each costs at
/// most its queue bound (`send_hwm_bytes`), so the node's growth stays under
/// nine queue bounds plus the fixed slack. Messages are 2,000 bytes, below
/// the size the writer sends from its own buffer, so a writer that copies
/// a whole batch while its subscriber is stuck shows here.
#[test]
fn many_slow_subscribers_stay_within_their_bounds() -> Result<()> {
    const SLOW: usize = 8;
    const N: u64 = 10_000;
    const SIZE: usize = 2000;
    /// 2,000 messages: 400 ms of headroom for the fast one at `RATE / 2`.
    const HWM_BYTES: u64 = 4 * MIB;
    const RATE: u64 = 5000;
    let bins = switchyard_tests::bins!();
    let mut node = NodeConfig::new("pub")
        .bind(ANY)
        .arg("--send-hwm", HWM_MESSAGES)
        .arg("--send-hwm-bytes", HWM_BYTES)
        .spawn(&bins)?;
    let mut fast = PeerConfig::new(PeerKind::Libzmq, "sub")
        .connect(&node.endpoint())
        .subscribe("t")
        .arg("--rcvhwm", 0)
        .spawn(&bins)?;
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let mut s = RawPeer::connect_with(&node.addr(), Some(4096))?;
        s.handshake("SUB", DEADLINE)?;
        s.subscribe(b"t")?;
        slow.push((s, false));
    }
    node.wait_peers(SLOW as u64 + 1)?;
    probe_fast(&mut node, &mut fast)?;
    wait::until("a probe at every slow subscriber", DEADLINE, || {
        sent(node.call(&cmd::send(1, &["t.probe"]))?, 1)?;
        for (s, synced) in slow.iter_mut().filter(|(_, synced)| !*synced) {
            *synced = s
                .read_message(Instant::now() + Duration::from_millis(50))
                .is_ok();
        }
        Ok(slow.iter().all(|(_, synced)| *synced).then_some(()))
    })?;

    let before = Counts::read(&node)?;
    let baseline = node.memory()?;
    node.reset_peak_memory()?;
    fast.send(&cmd::count(N, 60_000, Some(CONTROL)))?;
    sent(
        node.call(&cmd::send_with(N, &["t", "{seq} {ts} "], 0, RATE, SIZE))?,
        N,
    )?;
    let e = fast.event(Duration::from_secs(90))?;
    let phase = Counts::read(&node)?.since(before);
    let m = node.memory()?;
    let grew = m.peak.saturating_sub(baseline.rss);
    let bound = (SLOW as u64 + 1) * HWM_BYTES + SLACK;
    println!(
        "{SLOW} slow + 1 fast subscribers, {N} x {SIZE} B: fast {e:?}; node RSS grew {:.1} MiB \
         (bound {:.1} MiB); phase counters {phase:?}",
        grew as f64 / MIB as f64,
        bound as f64 / MIB as f64
    );
    ensure!(
        matches!(e, Event::Counted { count, seq_errors: 0, .. } if count == N),
        "fast subscriber: {e:?}"
    );
    ensure!(
        phase.queued + phase.dropped == (SLOW as u64 + 1) * N,
        "{phase:?}"
    );
    ensure!(phase.dropped == phase.full && phase.full > 0, "{phase:?}");
    ensure!(
        grew <= bound,
        "node peak RSS grew {grew} bytes, bound {bound}"
    );
    Ok(())
}
