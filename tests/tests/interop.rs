//! Interop: every switchyard ZMTP role against libzmq (pyzmq) and against the
//! `zeromq` crate, with the node bound and with the node connected.
//!
//! Each scenario is one function of (peer implementation, side); the
//! `matrix!` macro turns it into four tests named
//! `<scenario>::<libzmq|zeromq_crate>_node_<binds|connects>`.

use anyhow::{Context, Result, ensure};
use switchyard_tests::cmd::{self, expected, expected_padded, messages, sent};
use switchyard_tests::node::{Node, NodeConfig};
use switchyard_tests::pair::{self, ANY, Side};
use switchyard_tests::peer::{PeerConfig, PeerKind};
use switchyard_tests::process::Proc;
use switchyard_tests::protocol::Event;
use switchyard_tests::wait::{self, DEADLINE};

macro_rules! matrix {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use switchyard_tests::pair::Side;
            use switchyard_tests::peer::PeerKind;

            #[test]
            fn libzmq_node_binds() -> anyhow::Result<()> {
                super::$scenario(PeerKind::Libzmq, Side::NodeBinds)
            }
            #[test]
            fn libzmq_node_connects() -> anyhow::Result<()> {
                super::$scenario(PeerKind::Libzmq, Side::NodeConnects)
            }
            #[test]
            fn zeromq_crate_node_binds() -> anyhow::Result<()> {
                super::$scenario(PeerKind::ZeromqCrate, Side::NodeBinds)
            }
            #[test]
            fn zeromq_crate_node_connects() -> anyhow::Result<()> {
                super::$scenario(PeerKind::ZeromqCrate, Side::NodeConnects)
            }
        }
    )*};
}

matrix!(
    pub_to_sub_side,
    pub_side_to_sub,
    push_to_pull_side,
    push_side_to_pull,
    req_to_router_side,
    dealer_clients_to_router_side,
    dealer_side_to_rep,
    large_and_empty_frames_to_pull_side,
    large_and_empty_frames_from_push_side,
    push_side_backpressure_is_lossless,
    pull_side_backpressure_is_lossless,
);

/// Short waits inside retry loops (a probe that may not arrive yet).
const PROBE_MS: u64 = 200;
/// Waits for messages that must arrive.
const ARRIVE_MS: u64 = 20_000;

/// Publishes a probe from `publisher` until `subscriber` receives one: the
/// subscription has reached the publisher. Probes have topic `<topic>.probe`.
fn until_subscribed(publisher: &mut Proc, subscriber: &mut Proc, topic: &str) -> Result<()> {
    let probe = format!("{topic}.probe");
    wait::until(&format!("a {probe} to arrive"), DEADLINE, || {
        sent(publisher.call(&cmd::send(1, &[&probe]), DEADLINE)?, 1)?;
        let e = subscriber.call(&cmd::recv(1, PROBE_MS), DEADLINE)?;
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

/// The same for a node publishing or subscribing: both speak the protocol.
fn node_proc(n: &mut Node) -> &mut Proc {
    n.proc()
}

/// PUB (peer) -> the switchyard subscriber side: prefix filtering happens
/// at the publisher, so only subscribed topics arrive, in order, multipart.
fn pub_to_sub_side(kind: PeerKind, side: Side) -> Result<()> {
    let bins = switchyard_tests::bins!();
    let node = NodeConfig::new("sub").subscribe("a").keep(1000);
    let (mut node, mut peer) = pair::start(&bins, node, PeerConfig::new(kind, "pub"), side)?;
    until_subscribed(&mut peer, node_proc(&mut node), "a")?;
    sent(peer.call(&cmd::send(100, &["b", "{seq}"]), DEADLINE)?, 100)?;
    sent(
        peer.call(&cmd::send(100, &["a.x", "{seq}", "tail"]), DEADLINE)?,
        100,
    )?;
    sent(peer.call(&cmd::send(1, &["a.fence"]), DEADLINE)?, 1)?;
    let got = messages(node.call(&cmd::recv_skipping(101, ARRIVE_MS, "a.probe"))?)?;
    let mut want = expected(0..100, &["a.x", "{seq}", "tail"]);
    want.push(vec!["a.fence".into()]);
    ensure!(got == want, "{kind}, {side}: got {got:?}");

    // A subscription added at run time is sent to the publisher too.
    sub_then_receive(node_proc(&mut node), &mut peer, "c")?;
    Ok(())
}

fn sub_then_receive(subscriber: &mut Proc, publisher: &mut Proc, topic: &str) -> Result<()> {
    ensure!(subscriber.call(&cmd::sub(topic), DEADLINE)? == Event::Ok);
    until_subscribed(publisher, subscriber, topic)?;
    sent(
        publisher.call(&cmd::send(10, &[topic, "{seq}"]), DEADLINE)?,
        10,
    )?;
    let got = messages(subscriber.call(
        &cmd::recv_skipping(10, ARRIVE_MS, &format!("{topic}.probe")),
        DEADLINE,
    )?)?;
    ensure!(got == expected(0..10, &[topic, "{seq}"]), "got {got:?}");
    Ok(())
}

/// The switchyard PUB side -> SUB (peer): prefix filtering at the node, then
/// an unsubscribe stops a topic while another keeps flowing.
fn pub_side_to_sub(kind: PeerKind, side: Side) -> Result<()> {
    let bins = switchyard_tests::bins!();
    let peer = PeerConfig::new(kind, "sub").subscribe("a");
    let (mut node, mut peer) = pair::start(&bins, NodeConfig::new("pub"), peer, side)?;
    node.wait_peers(1)?;
    until_subscribed(node.proc(), &mut peer, "a")?;
    sent(node.call(&cmd::send(100, &["b", "{seq}"]))?, 100)?;
    sent(node.call(&cmd::send(100, &["a.x", "{seq}", "tail"]))?, 100)?;
    sent(node.call(&cmd::send(1, &["a.fence"]))?, 1)?;
    let got = messages(peer.call(&cmd::recv_skipping(101, ARRIVE_MS, "a.probe"), DEADLINE)?)?;
    let mut want = expected(0..100, &["a.x", "{seq}", "tail"]);
    want.push(vec!["a.fence".into()]);
    ensure!(got == want, "{kind}, {side}: got {got:?}");

    // Subscribe to b, cancel a. Synchronise on the fact that the cancel took
    // effect: in round k the node publishes ("a.u", k) then ("b.sync", k) on
    // the same connection; once b.sync k arrives without a.u k before it,
    // every later "a" message is filtered.
    ensure!(peer.call(&cmd::sub("b"), DEADLINE)? == Event::Ok);
    ensure!(peer.call(&cmd::unsub("a"), DEADLINE)? == Event::Ok);
    let mut k = 0u64;
    wait::until("the unsubscribe to take effect", DEADLINE, || {
        k += 1;
        let a = format!("{k}");
        sent(node.call(&cmd::send_with(1, &["a.u", &a], 0, 0, 0))?, 1)?;
        sent(node.call(&cmd::send_with(1, &["b.sync", &a], 0, 0, 0))?, 1)?;
        let got = match peer.call(&cmd::recv(2, PROBE_MS * 2), DEADLINE)? {
            Event::Received { messages, .. } => messages,
            other => anyhow::bail!("unexpected {other:?}"),
        };
        let sync = vec!["b.sync".to_string(), a.clone()];
        let cancelled = vec!["a.u".to_string(), a];
        Ok((got.contains(&sync) && !got.contains(&cancelled)).then_some(()))
    })?;
    sent(node.call(&cmd::send(50, &["a", "{seq}"]))?, 50)?;
    sent(node.call(&cmd::send(50, &["b", "{seq}"]))?, 50)?;
    sent(node.call(&cmd::send(1, &["b.fence"]))?, 1)?;
    let got = messages(peer.call(&cmd::recv_skipping(51, ARRIVE_MS, "b.sync"), DEADLINE)?)?;
    let mut want = expected(0..50, &["b", "{seq}"]);
    want.push(vec!["b.fence".into()]);
    ensure!(got == want, "{kind}, {side}: after unsubscribe got {got:?}");
    Ok(())
}

/// PUSH (peer) -> the switchyard PULL side: every message, in order.
fn push_to_pull_side(kind: PeerKind, side: Side) -> Result<()> {
    let bins = switchyard_tests::bins!();
    let node = NodeConfig::new("pull").keep(1000);
    let (mut node, mut peer) = pair::start(&bins, node, PeerConfig::new(kind, "push"), side)?;
    node.wait_peers(1)?;
    sent(
        peer.call(&cmd::send(1000, &["k", "{seq}", "x"]), DEADLINE)?,
        1000,
    )?;
    let got = messages(node.call(&cmd::recv(1000, ARRIVE_MS))?)?;
    ensure!(
        got == expected(0..1000, &["k", "{seq}", "x"]),
        "{kind}, {side}: got {} messages, first differing: {:?}",
        got.len(),
        first_diff(&got, &expected(0..1000, &["k", "{seq}", "x"]))
    );
    Ok(())
}

/// The first index where `got` and `want` differ, with both sides, for
/// failure messages.
fn first_diff(got: &[Vec<String>], want: &[Vec<String>]) -> String {
    (0..got.len().max(want.len()))
        .find(|&i| got.get(i) != want.get(i))
        .map(|i| format!("at {i}: got {:?}, want {:?}", got.get(i), want.get(i)))
        .unwrap_or_default()
}

/// The switchyard PUSH side -> PULL (peer): every message, in order.
fn push_side_to_pull(kind: PeerKind, side: Side) -> Result<()> {
    let bins = switchyard_tests::bins!();
    let (mut node, mut peer) = pair::start(
        &bins,
        NodeConfig::new("push"),
        PeerConfig::new(kind, "pull"),
        side,
    )?;
    node.wait_peers(1)?;
    sent(node.call(&cmd::send(1000, &["k", "{seq}", "x"]))?, 1000)?;
    let got = messages(peer.call(&cmd::recv(1000, ARRIVE_MS), DEADLINE)?)?;
    let want = expected(0..1000, &["k", "{seq}", "x"]);
    ensure!(
        got == want,
        "{kind}, {side}: first difference {:?}",
        first_diff(&got, &want)
    );
    Ok(())
}

/// REQ (peer) -> the switchyard ROUTER side, which echoes each request with
/// its envelope: every reply reaches the REQ intact.
fn req_to_router_side(kind: PeerKind, side: Side) -> Result<()> {
    let bins = switchyard_tests::bins!();
    let (node, mut peer) = pair::start(
        &bins,
        NodeConfig::new("router"),
        PeerConfig::new(kind, "req"),
        side,
    )?;
    node.wait_peers(1)?;
    let e = peer.call(
        &cmd::request(200, &["r{seq}", "body"], 0, ARRIVE_MS),
        DEADLINE * 2,
    )?;
    cmd::replied(e, 200).with_context(|| format!("{kind}, {side}"))?;
    Ok(())
}

/// Two DEALER clients (peers) -> the switchyard ROUTER side at once: each
/// reply goes back to the client that asked (a crossed reply would be a
/// mismatch, as each client's requests are distinct).
fn dealer_clients_to_router_side(kind: PeerKind, side: Side) -> Result<()> {
    let bins = switchyard_tests::bins!();
    let (node, mut one, mut two) = match side {
        Side::NodeBinds => {
            let node = NodeConfig::new("router").bind(ANY).spawn(&bins)?;
            let one = PeerConfig::new(kind, "dealer")
                .connect(&node.endpoint())
                .spawn(&bins)?;
            let two = PeerConfig::new(kind, "dealer")
                .connect(&node.endpoint())
                .spawn(&bins)?;
            (node, one, two)
        }
        Side::NodeConnects => {
            let one = PeerConfig::new(kind, "dealer").bind(ANY).spawn(&bins)?;
            let two = PeerConfig::new(kind, "dealer").bind(ANY).spawn(&bins)?;
            let node = NodeConfig::new("router")
                .connect(&one.endpoint())
                .connect(&two.endpoint())
                .spawn(&bins)?;
            (node, one, two)
        }
    };
    node.wait_peers(2)?;
    one.send(&cmd::request(300, &["one", "{seq}"], 0, ARRIVE_MS))?;
    two.send(&cmd::request(300, &["two", "{seq}"], 0, ARRIVE_MS))?;
    for (name, p) in [("one", &mut one), ("two", &mut two)] {
        let e = p
            .event(DEADLINE * 2)
            .with_context(|| format!("dealer {name}"))?;
        cmd::replied(e, 300).with_context(|| format!("{kind}, {side}, dealer {name}"))?;
    }
    Ok(())
}

/// The switchyard DEALER side -> REP (peer, echoing): each reply matches its
/// request.
fn dealer_side_to_rep(kind: PeerKind, side: Side) -> Result<()> {
    let bins = switchyard_tests::bins!();
    let (mut node, _peer) = pair::start(
        &bins,
        NodeConfig::new("dealer"),
        PeerConfig::new(kind, "rep").echo(),
        side,
    )?;
    node.wait_peers(1)?;
    let e = node.call(&cmd::request(200, &["q{seq}", "body"], 0, ARRIVE_MS))?;
    cmd::replied(e, 200).with_context(|| format!("{kind}, {side}"))?;
    Ok(())
}

/// The DEALER side spreads requests over every REP service connected.
#[test]
fn dealer_side_round_robins_over_reps() -> Result<()> {
    let bins = switchyard_tests::bins!();
    let node_cfg = NodeConfig::new("dealer").bind(ANY);
    let mut node = node_cfg.spawn(&bins)?;
    let mut reps = Vec::new();
    for kind in [PeerKind::Libzmq, PeerKind::ZeromqCrate] {
        reps.push(
            PeerConfig::new(kind, "rep")
                .echo()
                .connect(&node.endpoint())
                .spawn(&bins)?,
        );
    }
    node.wait_peers(2)?;
    let e = node.call(&cmd::request(100, &["q{seq}"], 0, ARRIVE_MS))?;
    cmd::replied(e, 100)?;
    let mut served = Vec::new();
    for r in &mut reps {
        match r.call(&switchyard_tests::protocol::Command::Stats, DEADLINE)? {
            Event::Stats { received, .. } => served.push(received),
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    ensure!(
        served.iter().sum::<u64>() == 100 && served.iter().all(|&n| n > 0),
        "served per REP: {served:?}"
    );
    Ok(())
}

/// Frame bodies of every size class: empty frames, short (< 256 bytes, one
/// size byte) and long (8 size bytes) up to 300 KiB, in one message.
const BIG: usize = 300 * 1024;

/// Sends 20 messages of four frames (empty, short, empty, 300 KiB) from
/// `from` and checks `to` receives them intact.
fn big_messages(from: &mut Proc, to: &mut Proc) -> Result<()> {
    let frames = ["", "k{seq}", "", "{seq} "];
    sent(
        from.call(&cmd::send_with(20, &frames, 0, 0, BIG), DEADLINE)?,
        20,
    )?;
    let got = messages(to.call(&cmd::recv(20, ARRIVE_MS), DEADLINE)?)?;
    let want = expected_padded(0..20, &frames, BIG);
    ensure!(
        got == want,
        "first difference {}",
        first_diff(&got, &want)
            .chars()
            .take(300)
            .collect::<String>()
    );
    Ok(())
}

fn large_and_empty_frames_to_pull_side(kind: PeerKind, side: Side) -> Result<()> {
    let bins = switchyard_tests::bins!();
    let (mut node, mut peer) = pair::start(
        &bins,
        NodeConfig::new("pull").keep(100),
        PeerConfig::new(kind, "push"),
        side,
    )?;
    node.wait_peers(1)?;
    big_messages(&mut peer, node.proc())
}

fn large_and_empty_frames_from_push_side(kind: PeerKind, side: Side) -> Result<()> {
    let bins = switchyard_tests::bins!();
    let (mut node, mut peer) = pair::start(
        &bins,
        NodeConfig::new("push"),
        PeerConfig::new(kind, "pull"),
        side,
    )?;
    node.wait_peers(1)?;
    big_messages(node.proc(), &mut peer)
}

/// Several subscribers with different and overlapping prefixes (libzmq and
/// the `zeromq` crate at once): each gets exactly the messages matching one
/// of its prefixes, once, in order.
#[test]
fn pub_side_filters_per_subscriber() -> Result<()> {
    let bins = switchyard_tests::bins!();
    let mut node = NodeConfig::new("pub").bind(ANY).spawn(&bins)?;
    let ep = node.endpoint();
    let mut subs = [
        (
            "a",
            PeerConfig::new(PeerKind::Libzmq, "sub")
                .connect(&ep)
                .subscribe("a")
                .spawn(&bins)?,
        ),
        (
            "ab+abc",
            PeerConfig::new(PeerKind::ZeromqCrate, "sub")
                .connect(&ep)
                .subscribe("ab")
                .subscribe("abc")
                .spawn(&bins)?,
        ),
        (
            "all",
            PeerConfig::new(PeerKind::Libzmq, "sub")
                .connect(&ep)
                .subscribe("")
                .spawn(&bins)?,
        ),
        (
            "none",
            PeerConfig::new(PeerKind::ZeromqCrate, "sub")
                .connect(&ep)
                .spawn(&bins)?,
        ),
    ];
    node.wait_peers(4)?;
    // Every subscriber that subscribed at all matches "abc.probe".
    for (name, sub) in subs.iter_mut().filter(|(n, _)| *n != "none") {
        until_subscribed_topic(node.proc(), sub, "abc.probe")
            .with_context(|| format!("subscriber {name}"))?;
    }
    for topic in ["a1", "ab1", "abc1", "b1", "", "abd1"] {
        sent(node.call(&cmd::send(1, &[topic, "x"]))?, 1)?;
    }
    sent(node.call(&cmd::send(1, &["abc.fence"]))?, 1)?;
    let want = |topics: &[&str]| -> Vec<Vec<String>> {
        topics
            .iter()
            .map(|t| vec![t.to_string(), "x".to_string()])
            .collect()
    };
    let cases = [
        ("a", want(&["a1", "ab1", "abc1", "abd1"])),
        ("ab+abc", want(&["ab1", "abc1", "abd1"])),
        ("all", want(&["a1", "ab1", "abc1", "b1", "", "abd1"])),
    ];
    for (name, mut expect) in cases {
        expect.push(vec!["abc.fence".to_string()]);
        let sub = &mut subs
            .iter_mut()
            .find(|(n, _)| *n == name)
            .context("subscriber")?
            .1;
        let got = messages(sub.call(
            &cmd::recv_skipping(expect.len() as u64, ARRIVE_MS, "abc.probe"),
            DEADLINE,
        )?)?;
        ensure!(got == expect, "subscriber {name}: got {got:?}");
    }
    // The one without subscriptions got nothing (its first message would be
    // any of the above).
    let none = &mut subs
        .iter_mut()
        .find(|(n, _)| *n == "none")
        .context("subscriber")?
        .1;
    let e = none.call(&cmd::recv(1, 200), DEADLINE)?;
    ensure!(
        matches!(&e, Event::Received { messages, .. } if messages.is_empty()),
        "{e:?}"
    );
    Ok(())
}

fn until_subscribed_topic(publisher: &mut Proc, subscriber: &mut Proc, probe: &str) -> Result<()> {
    wait::until(&format!("a {probe} to arrive"), DEADLINE, || {
        sent(publisher.call(&cmd::send(1, &[probe]), DEADLINE)?, 1)?;
        let e = subscriber.call(&cmd::recv(1, PROBE_MS), DEADLINE)?;
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

/// Messages pushed through a queue of 10 while the other side reads: the
/// queue is full most of the time, the sender waits, and nothing is lost or
/// reordered.
const MANY: u64 = 20_000;

fn counted_all(e: Event) -> Result<()> {
    ensure!(
        matches!(
            e,
            Event::Counted {
                count: MANY,
                seq_errors: 0,
                timed_out: false,
                ..
            }
        ),
        "{e:?}"
    );
    Ok(())
}

fn push_side_backpressure_is_lossless(kind: PeerKind, side: Side) -> Result<()> {
    let bins = switchyard_tests::bins!();
    let node = NodeConfig::new("push").arg("--send-hwm", 10);
    let (mut node, mut peer) = pair::start(&bins, node, PeerConfig::new(kind, "pull"), side)?;
    node.wait_peers(1)?;
    peer.send(&cmd::count(MANY, 60_000, None))?;
    sent(
        node.call(&cmd::send_with(MANY, &["k", "{seq} "], 0, 0, 100))?,
        MANY,
    )?;
    counted_all(peer.event(DEADLINE * 4)?)
}

fn pull_side_backpressure_is_lossless(kind: PeerKind, side: Side) -> Result<()> {
    let bins = switchyard_tests::bins!();
    let node = NodeConfig::new("pull").arg("--recv-hwm", 10).keep(10);
    let (mut node, mut peer) = pair::start(&bins, node, PeerConfig::new(kind, "push"), side)?;
    node.wait_peers(1)?;
    node.proc().send(&cmd::count(MANY, 60_000, None))?;
    sent(
        peer.call(
            &cmd::send_with(MANY, &["k", "{seq} "], 0, 0, 100),
            DEADLINE * 4,
        )?,
        MANY,
    )?;
    counted_all(node.proc().event(DEADLINE * 4)?)
}
