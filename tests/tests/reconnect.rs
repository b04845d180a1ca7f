//! Reconnection: the node connects to a peer that is killed (SIGKILL) and
//! restarted on the same port; the node's connecting side notices, reconnects
//! and keeps working (subscribers re-send their subscriptions). Against
//! libzmq and the `zeromq` crate.

use anyhow::{Context, Result, ensure};
use switchyard_tests::cmd::{self, expected, messages, sent};
use switchyard_tests::node::{Node, NodeConfig};
use switchyard_tests::pair::ANY;
use switchyard_tests::peer::{PeerConfig, PeerKind};
use switchyard_tests::process::Proc;
use switchyard_tests::protocol::Event;
use switchyard_tests::wait::{self, DEADLINE};

macro_rules! both {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use switchyard_tests::peer::PeerKind;

            #[test]
            fn libzmq() -> anyhow::Result<()> {
                super::$scenario(PeerKind::Libzmq)
            }
            #[test]
            fn zeromq_crate() -> anyhow::Result<()> {
                super::$scenario(PeerKind::ZeromqCrate)
            }
        }
    )*};
}

both!(
    sub_side_after_publisher_restarts,
    pull_side_after_pusher_restarts,
    pub_side_after_subscriber_restarts,
    push_side_after_puller_restarts,
    dealer_side_after_rep_restarts,
    router_side_after_req_restarts,
);

const ARRIVE_MS: u64 = 20_000;

/// The node connecting to a bound peer, with a short reconnect interval so
/// the test does not wait on backoff.
fn start(
    kind: PeerKind,
    node: NodeConfig,
    peer: PeerConfig,
) -> Result<(Node, Proc, String, PeerConfig)> {
    let bins = switchyard_tests::bins!();
    let p = peer.clone().bind(ANY).spawn(&bins)?;
    let endpoint = p.endpoint();
    let n = node
        .arg("--reconnect-ms", 50)
        .arg("--reconnect-max-ms", 500)
        .connect(&endpoint)
        .spawn(&bins)?;
    n.wait_peers(1)?;
    let _ = kind;
    Ok((n, p, endpoint, peer))
}

/// Kills the peer, waits for the node to notice, restarts it on the same
/// endpoint and waits for the node to reconnect.
fn restart(node: &Node, peer: &mut Proc, cfg: &PeerConfig, endpoint: &str) -> Result<Proc> {
    peer.kill();
    node.wait_peers(0)?;
    let bins = switchyard_tests::bins!();
    // The port was just released; binding it again can race the kernel
    // only through TIME_WAIT, which SO_REUSEADDR (set by both peers) allows.
    let p = wait::until("the peer to bind its old port again", DEADLINE, || {
        Ok(cfg.clone().bind(endpoint).spawn(&bins).ok())
    })?;
    node.wait_peers(1)?;
    Ok(p)
}

fn until_subscribed(publisher: &mut Proc, subscriber: &mut Proc) -> Result<()> {
    until_subscribed_to(publisher, subscriber, "a.probe")
}

fn until_subscribed_to(publisher: &mut Proc, subscriber: &mut Proc, probe: &str) -> Result<()> {
    wait::until("a probe to arrive", DEADLINE, || {
        sent(publisher.call(&cmd::send(1, &[probe]), DEADLINE)?, 1)?;
        let e = subscriber.call(&cmd::recv(1, 200), DEADLINE)?;
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

fn sub_side_after_publisher_restarts(kind: PeerKind) -> Result<()> {
    let node = NodeConfig::new("sub").subscribe("a").keep(1000);
    let (mut node, mut peer, ep, cfg) = start(kind, node, PeerConfig::new(kind, "pub"))?;
    until_subscribed(&mut peer, node.proc())?;
    sent(peer.call(&cmd::send(50, &["a", "{seq}"]), DEADLINE)?, 50)?;
    let got = messages(node.call(&cmd::recv_skipping(50, ARRIVE_MS, "a.probe"))?)?;
    ensure!(
        got == expected(0..50, &["a", "{seq}"]),
        "{kind} before restart: {got:?}"
    );

    // Change the subscriptions at run time, then restart the publisher: the
    // new one must get the current set (c), not the one from the start (a).
    ensure!(node.call(&cmd::sub("c"))? == Event::Ok);
    ensure!(node.call(&cmd::unsub("a"))? == Event::Ok);
    let mut peer = restart(&node, &mut peer, &cfg, &ep)?;
    until_subscribed_to(&mut peer, node.proc(), "c.probe")?;
    sent(peer.call(&cmd::send(50, &["a", "{seq}"]), DEADLINE)?, 50)?;
    sent(peer.call(&cmd::send(50, &["c", "{seq}"]), DEADLINE)?, 50)?;
    let got = messages(node.call(&cmd::recv_skipping(50, ARRIVE_MS, "c.probe"))?)?;
    ensure!(
        got == expected(0..50, &["c", "{seq}"]),
        "{kind} after restart: {got:?}"
    );
    // The publisher filtered "a" itself: it was never told about it, so the
    // node had nothing to drop.
    let dropped = node.metric(
        switchyard_tests::node::DROPPED,
        &[
            ("socket", switchyard_tests::node::SOCKET),
            ("reason", "unsubscribed"),
        ],
    )?;
    ensure!(
        dropped == 0.0,
        "{kind}: the restarted publisher sent {dropped} messages on a cancelled subscription"
    );
    Ok(())
}

fn pull_side_after_pusher_restarts(kind: PeerKind) -> Result<()> {
    let node = NodeConfig::new("pull").keep(1000);
    let (mut node, mut peer, ep, cfg) = start(kind, node, PeerConfig::new(kind, "push"))?;
    for round in 0..2 {
        if round == 1 {
            peer = restart(&node, &mut peer, &cfg, &ep)?;
        }
        sent(peer.call(&cmd::send(100, &["k", "{seq}"]), DEADLINE)?, 100)?;
        let got = messages(node.call(&cmd::recv(100, ARRIVE_MS))?)?;
        ensure!(
            got == expected(0..100, &["k", "{seq}"]),
            "{kind} round {round}: {got:?}"
        );
    }
    Ok(())
}

fn pub_side_after_subscriber_restarts(kind: PeerKind) -> Result<()> {
    let peer = PeerConfig::new(kind, "sub").subscribe("a");
    let (mut node, mut peer, ep, cfg) = start(kind, NodeConfig::new("pub"), peer)?;
    for round in 0..2 {
        if round == 1 {
            peer = restart(&node, &mut peer, &cfg, &ep)?;
        }
        until_subscribed(node.proc(), &mut peer)?;
        sent(node.call(&cmd::send(50, &["a", "{seq}"]))?, 50)?;
        let got = messages(peer.call(&cmd::recv_skipping(50, ARRIVE_MS, "a.probe"), DEADLINE)?)?;
        ensure!(
            got == expected(0..50, &["a", "{seq}"]),
            "{kind} round {round}: {got:?}"
        );
    }
    Ok(())
}

/// Messages pushed while the only PULL peer is down wait for it (the send
/// blocks up to the send timeout) and arrive after it restarts: none is lost.
fn push_side_after_puller_restarts(kind: PeerKind) -> Result<()> {
    let node = NodeConfig::new("push").arg("--send-timeout-ms", 60_000);
    let (mut node, mut peer, ep, cfg) = start(kind, node, PeerConfig::new(kind, "pull"))?;
    sent(node.call(&cmd::send(100, &["k", "{seq}"]))?, 100)?;
    let got = messages(peer.call(&cmd::recv(100, ARRIVE_MS), DEADLINE)?)?;
    ensure!(
        got == expected(0..100, &["k", "{seq}"]),
        "{kind} before restart: {got:?}"
    );

    peer.kill();
    node.wait_peers(0)?;
    // Sent with no peer: the node holds them until one connects.
    node.proc()
        .send(&cmd::send_with(20, &["k", "{seq}"], 100, 0, 0))?;
    let bins = switchyard_tests::bins!();
    let mut peer = wait::until("the peer to bind its old port again", DEADLINE, || {
        Ok(cfg.clone().bind(&ep).spawn(&bins).ok())
    })?;
    sent(node.proc().event(DEADLINE * 3)?, 20)?;
    let got = messages(peer.call(&cmd::recv(20, ARRIVE_MS), DEADLINE)?)?;
    ensure!(
        got == expected(100..120, &["k", "{seq}"]),
        "{kind} after restart: {got:?}"
    );
    Ok(())
}

fn dealer_side_after_rep_restarts(kind: PeerKind) -> Result<()> {
    let (mut node, mut peer, ep, cfg) = start(
        kind,
        NodeConfig::new("dealer"),
        PeerConfig::new(kind, "rep").echo(),
    )?;
    for round in 0..2 {
        if round == 1 {
            peer = restart(&node, &mut peer, &cfg, &ep)?;
        }
        let e = node.call(&cmd::request(50, &["q{seq}"], 0, ARRIVE_MS))?;
        cmd::replied(e, 50).with_context(|| format!("{kind} round {round}"))?;
    }
    Ok(())
}

fn router_side_after_req_restarts(kind: PeerKind) -> Result<()> {
    let (node, mut peer, ep, cfg) = start(
        kind,
        NodeConfig::new("router"),
        PeerConfig::new(kind, "req"),
    )?;
    for round in 0..2 {
        if round == 1 {
            peer = restart(&node, &mut peer, &cfg, &ep)?;
        }
        let e = peer.call(&cmd::request(50, &["q{seq}"], 0, ARRIVE_MS), DEADLINE * 2)?;
        cmd::replied(e, 50).with_context(|| format!("{kind} round {round}"))?;
    }
    Ok(())
}
