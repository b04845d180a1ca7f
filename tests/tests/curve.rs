//! The CURVE mechanism (RFC 25/26) against libzmq, the node as server and
//! as client, data flowing both ways (PUSH/PULL, PUB/SUB, heartbeats), and
//! its refusals: an unknown client key (while a good client keeps
//! working), a client with the wrong server key, and a NULL peer.

use anyhow::{Context, Result, bail, ensure};
use switchyard_tests::cmd::{self, expected, messages, sent};
use switchyard_tests::node::{self, Node, NodeConfig, SOCKET};
use switchyard_tests::pair::ANY;
use switchyard_tests::peer::{PeerConfig, PeerKind};
use switchyard_tests::process::Proc;
use switchyard_tests::protocol::Event;
use switchyard_tests::wait::{self, DEADLINE};

/// Test keys made by libzmq (`zmq.curve_keypair()`); examples only.
const SERVER_PUBLIC: &str = "D8Q]ikoHoSLP<cQWjHgfp{sAHNaC+pd7n0(4!YSy";
const SERVER_SECRET: &str = "ppC-VbeFE:4Xe:T(083>{{[H]3pM<WGH1Ek@<IUi";
const CLIENT_PUBLIC: &str = "x$dUn!/vJa4J@f1p3]Vz0rdJ@B@W5=3SUIn1&Uyr";
const CLIENT_SECRET: &str = "S}z?9D5HM}xGQuZZI?0rNNLOvPv/b*3ulu^z71ff";
/// A key pair the node's server does not list.
const STRANGER_SECRET: &str = ">NhrQpB3e(L]iXzLMC/Ut?qs/t#H79>Gqh6g]{jK";
/// Another server's public key.
const OTHER_SERVER_PUBLIC: &str = "Z<If0S-F&BfA3oH=tA6w75ZfyH!!c8MbAHNuJ9ir";

const ARRIVE_MS: u64 = 20_000;
const PROBE_MS: u64 = 200;

/// Fails with a pointer to `./dev setup` when pyzmq or its CURVE is missing.
fn require_curve() -> Result<()> {
    let ok = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zmq; sys.exit(0 if zmq.has('curve') else 1)",
        ])
        .status()
        .context("python3 is not installed: run `./dev setup`")?
        .success();
    ensure!(
        ok,
        "pyzmq with CURVE is missing (`python3 -c \"import zmq; print(zmq.has('curve'))\"`): run `./dev setup`"
    );
    Ok(())
}

fn node_server(role: &str) -> NodeConfig {
    NodeConfig::new(role)
        .arg("--curve-secret", SERVER_SECRET)
        .arg("--curve-allow", format!("edge-7={CLIENT_PUBLIC}"))
}

fn node_client(role: &str) -> NodeConfig {
    NodeConfig::new(role)
        .arg("--curve-secret", CLIENT_SECRET)
        .arg("--curve-server-key", SERVER_PUBLIC)
}

fn libzmq_client(role: &str, secret: &str, server_key: &str) -> PeerConfig {
    PeerConfig::new(PeerKind::Libzmq, role)
        .arg("--curve-secret", secret)
        .arg("--curve-server-key", server_key)
}

fn libzmq_server(role: &str) -> PeerConfig {
    PeerConfig::new(PeerKind::Libzmq, role)
        .arg("--curve-secret", SERVER_SECRET)
        .flag("--curve-server")
}

/// Waits until `node` counted a handshake failure for `reason`.
fn counted(node: &Node, reason: &str) -> Result<()> {
    node.wait_metric(
        node::HANDSHAKE_FAILURES,
        &[("reason", reason)],
        DEADLINE,
        |v| *v >= 1.0,
    )?;
    Ok(())
}

/// Pushes 50 multipart messages (one of them 70 kB, a long frame) from
/// `from` and checks `to` gets them all, in order.
fn fifty(from: &mut Proc, to: &mut Proc) -> Result<()> {
    sent(from.call(&cmd::send(50, &["p", "{seq}"]), DEADLINE)?, 50)?;
    sent(
        from.call(&cmd::send_with(1, &["big"], 0, 0, 70_000), DEADLINE)?,
        1,
    )?;
    let got = messages(to.call(&cmd::recv(51, ARRIVE_MS), DEADLINE)?)?;
    ensure!(got.len() == 51, "got {} messages", got.len());
    ensure!(
        got[..50] == expected(0..50, &["p", "{seq}"])[..],
        "got {got:?}"
    );
    ensure!(
        got[50].len() == 1 && got[50][0].len() == 70_000 && got[50][0].starts_with("big."),
        "the last message is not the 70 kB one"
    );
    Ok(())
}

#[test]
fn libzmq_client_pushes_to_node_server() -> Result<()> {
    require_curve()?;
    let bins = switchyard_tests::bins!();
    let mut node = node_server("pull").keep(100).bind(ANY).spawn(&bins)?;
    let mut push = libzmq_client("push", CLIENT_SECRET, SERVER_PUBLIC)
        .connect(&node.endpoint())
        .spawn(&bins)?;
    node.wait_peers(1)?;
    fifty(&mut push, node.proc())
}

#[test]
fn node_server_pushes_to_libzmq_client() -> Result<()> {
    require_curve()?;
    let bins = switchyard_tests::bins!();
    let mut node = node_server("push").bind(ANY).spawn(&bins)?;
    let mut pull = libzmq_client("pull", CLIENT_SECRET, SERVER_PUBLIC)
        .connect(&node.endpoint())
        .spawn(&bins)?;
    node.wait_peers(1)?;
    fifty(node.proc(), &mut pull)
}

#[test]
fn node_client_pushes_to_libzmq_server() -> Result<()> {
    require_curve()?;
    let bins = switchyard_tests::bins!();
    let mut pull = libzmq_server("pull").bind(ANY).spawn(&bins)?;
    let mut node = node_client("push").connect(&pull.endpoint()).spawn(&bins)?;
    node.wait_peers(1)?;
    fifty(node.proc(), &mut pull)
}

#[test]
fn libzmq_server_pushes_to_node_client() -> Result<()> {
    require_curve()?;
    let bins = switchyard_tests::bins!();
    let mut push = libzmq_server("push").bind(ANY).spawn(&bins)?;
    let mut node = node_client("pull")
        .keep(100)
        .connect(&push.endpoint())
        .spawn(&bins)?;
    node.wait_peers(1)?;
    fifty(&mut push, node.proc())
}

/// Publishes probes until one arrives: the (encrypted) subscription has
/// reached the publisher.
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

/// Only the subscribed prefix arrives, whole and in order.
fn filtered(publisher: &mut Proc, subscriber: &mut Proc) -> Result<()> {
    until_subscribed(publisher, subscriber, "a")?;
    sent(
        publisher.call(&cmd::send(50, &["b", "{seq}"]), DEADLINE)?,
        50,
    )?;
    sent(
        publisher.call(&cmd::send(50, &["a.x", "{seq}"]), DEADLINE)?,
        50,
    )?;
    let got = messages(subscriber.call(&cmd::recv_skipping(50, ARRIVE_MS, "a.probe"), DEADLINE)?)?;
    ensure!(got == expected(0..50, &["a.x", "{seq}"]), "got {got:?}");
    Ok(())
}

#[test]
fn node_pub_server_to_libzmq_sub_client() -> Result<()> {
    require_curve()?;
    let bins = switchyard_tests::bins!();
    let mut node = node_server("pub").bind(ANY).spawn(&bins)?;
    let mut sub = libzmq_client("sub", CLIENT_SECRET, SERVER_PUBLIC)
        .subscribe("a")
        .connect(&node.endpoint())
        .spawn(&bins)?;
    node.wait_peers(1)?;
    filtered(node.proc(), &mut sub)
}

#[test]
fn libzmq_pub_server_to_node_sub_client() -> Result<()> {
    require_curve()?;
    let bins = switchyard_tests::bins!();
    let mut publisher = libzmq_server("pub").bind(ANY).spawn(&bins)?;
    let mut node = node_client("sub")
        .subscribe("a")
        .keep(200)
        .connect(&publisher.endpoint())
        .spawn(&bins)?;
    node.wait_peers(1)?;
    filtered(&mut publisher, node.proc())
}

/// PINGs from libzmq (every 100 ms, dropping a peer silent for 300 ms) are
/// answered with sealed PONGs, and the node's own PINGs are understood: the
/// connection outlives many heartbeat timeouts, then still carries data.
#[test]
fn heartbeats_travel_sealed() -> Result<()> {
    require_curve()?;
    let bins = switchyard_tests::bins!();
    let mut node = node_server("pull")
        .keep(100)
        .arg("--heartbeat-interval-ms", 100)
        .arg("--heartbeat-timeout-ms", 400)
        .bind(ANY)
        .spawn(&bins)?;
    let mut push = libzmq_client("push", CLIENT_SECRET, SERVER_PUBLIC)
        .arg("--heartbeat-ms", 100)
        .connect(&node.endpoint())
        .spawn(&bins)?;
    node.wait_peers(1)?;
    sent(push.call(&cmd::send(1, &["first"]), DEADLINE)?, 1)?;
    ensure!(messages(node.call(&cmd::recv(1, ARRIVE_MS))?)? == [["first"]]);
    // Idle for 1.5 s (a receive that times out): a dozen heartbeat rounds.
    match node.call(&cmd::recv(1, 1_500))? {
        Event::Received {
            timed_out: true, ..
        } => {}
        other => bail!("nothing was sent, yet {other:?}"),
    }
    sent(push.call(&cmd::send(1, &["second"]), DEADLINE)?, 1)?;
    ensure!(messages(node.call(&cmd::recv(1, ARRIVE_MS))?)? == [["second"]]);
    ensure!(
        node.metric(
            node::DISCONNECTS,
            &[("socket", SOCKET), ("reason", "heartbeat_timeout")]
        )? == 0.0
    );
    ensure!(node.metric(node::PEERS, &[("socket", SOCKET)])? == 1.0);
    Ok(())
}

#[test]
fn unknown_client_key_is_refused_while_a_good_client_keeps_working() -> Result<()> {
    require_curve()?;
    let bins = switchyard_tests::bins!();
    let mut node = node_server("pull").keep(100).bind(ANY).spawn(&bins)?;
    let mut good = libzmq_client("push", CLIENT_SECRET, SERVER_PUBLIC)
        .connect(&node.endpoint())
        .spawn(&bins)?;
    node.wait_peers(1)?;
    let mut stranger = libzmq_client("push", STRANGER_SECRET, SERVER_PUBLIC)
        .arg("--sndtimeo-ms", 200)
        .connect(&node.endpoint())
        .spawn(&bins)?;
    counted(&node, "curve_unknown_client")?;
    sent(good.call(&cmd::send(20, &["g", "{seq}"]), DEADLINE)?, 20)?;
    let got = messages(node.call(&cmd::recv(20, ARRIVE_MS))?)?;
    ensure!(got == expected(0..20, &["g", "{seq}"]), "got {got:?}");
    // The stranger's messages never got through.
    let _ = stranger.call(&cmd::send(1, &["s"]), DEADLINE)?;
    ensure!(node.metric(node::PEERS, &[("socket", SOCKET)])? == 1.0);
    match node.call(&cmd::recv(1, 300))? {
        Event::Received {
            timed_out: true, ..
        } => {}
        other => bail!("the stranger got through: {other:?}"),
    }
    Ok(())
}

#[test]
fn client_with_the_wrong_server_key_is_refused() -> Result<()> {
    require_curve()?;
    let bins = switchyard_tests::bins!();
    let node = node_server("pull").bind(ANY).spawn(&bins)?;
    let _push = libzmq_client("push", CLIENT_SECRET, OTHER_SERVER_PUBLIC)
        .connect(&node.endpoint())
        .spawn(&bins)?;
    counted(&node, "curve_wrong_server_key")?;
    ensure!(node.metric(node::PEERS, &[("socket", SOCKET)])? == 0.0);
    Ok(())
}

#[test]
fn null_peer_to_curve_server_is_refused() -> Result<()> {
    require_curve()?;
    let bins = switchyard_tests::bins!();
    let node = node_server("pull").bind(ANY).spawn(&bins)?;
    // The zeromq crate sends its whole greeting at once (libzmq hangs up on
    // seeing ours, before its mechanism field is sent).
    let _push = PeerConfig::new(PeerKind::ZeromqCrate, "push")
        .connect(&node.endpoint())
        .spawn(&bins);
    counted(&node, "mechanism")?;
    ensure!(node.metric(node::PEERS, &[("socket", SOCKET)])? == 0.0);
    Ok(())
}

/// The node as a client of a libzmq server with another key: the WELCOME
/// does not open, and the node counts it.
#[test]
fn node_client_refuses_a_server_with_another_key() -> Result<()> {
    require_curve()?;
    let bins = switchyard_tests::bins!();
    let pull = libzmq_server("pull").bind(ANY).spawn(&bins)?;
    let node = NodeConfig::new("push")
        .arg("--curve-secret", CLIENT_SECRET)
        .arg("--curve-server-key", OTHER_SERVER_PUBLIC)
        .connect(&pull.endpoint())
        .spawn(&bins)?;
    // libzmq cannot open our HELLO and closes; we count the lost handshake.
    node.wait_metric(
        node::HANDSHAKE_FAILURES,
        &[("reason", "io")],
        DEADLINE,
        |v| *v >= 1.0,
    )?;
    ensure!(node.metric(node::PEERS, &[("socket", SOCKET)])? == 0.0);
    Ok(())
}
