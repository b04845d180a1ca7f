//! The PLAIN mechanism (RFC 24) against libzmq, both as server and client,
//! and its refusals: a wrong password, and a NULL peer.

use anyhow::{Result, ensure};
use switchyard_tests::cmd::{self, expected, messages, sent};
use switchyard_tests::node::{self, Node, NodeConfig, SOCKET};
use switchyard_tests::pair::ANY;
use switchyard_tests::peer::{PeerConfig, PeerKind};
use switchyard_tests::wait::DEADLINE;

/// Waits until `node` counted a handshake failure for `reason`, then checks
/// no peer got through.
fn refused(node: &Node, reason: &str) -> Result<()> {
    node.wait_metric(
        node::HANDSHAKE_FAILURES,
        &[("reason", reason)],
        DEADLINE,
        |v| *v >= 1.0,
    )?;
    ensure!(node.metric(node::PEERS, &[("socket", SOCKET)])? == 0.0);
    Ok(())
}

#[test]
fn libzmq_plain_client_to_node_plain_server() -> Result<()> {
    let bins = switchyard_tests::bins!();
    let mut node = NodeConfig::new("pull")
        .arg("--plain-server", "alice:secret")
        .keep(100)
        .bind(ANY)
        .spawn(&bins)?;
    let mut push = PeerConfig::new(PeerKind::Libzmq, "push")
        .arg("--plain-client", "alice:secret")
        .connect(&node.endpoint())
        .spawn(&bins)?;
    node.wait_peers(1)?;
    sent(push.call(&cmd::send(50, &["p", "{seq}"]), DEADLINE)?, 50)?;
    let got = messages(node.call(&cmd::recv(50, 20_000))?)?;
    ensure!(got == expected(0..50, &["p", "{seq}"]));
    Ok(())
}

/// libzmq 4.3 sends its greeting's as-server byte as 0 even as a PLAIN
/// server (it zeroes the 32 bytes after the mechanism name): a client must
/// take its role from its own configuration, not from that bit.
#[test]
fn node_plain_client_to_libzmq_plain_server() -> Result<()> {
    let bins = switchyard_tests::bins!();
    let mut pull = PeerConfig::new(PeerKind::Libzmq, "pull")
        .arg("--plain-server", "bob:pw")
        .bind(ANY)
        .spawn(&bins)?;
    let mut node = NodeConfig::new("push")
        .arg("--plain-client", "bob:pw")
        .connect(&pull.endpoint())
        .spawn(&bins)?;
    node.wait_peers(1)?;
    sent(node.call(&cmd::send(50, &["p", "{seq}"]))?, 50)?;
    let got = messages(pull.call(&cmd::recv(50, 20_000), DEADLINE)?)?;
    ensure!(got == expected(0..50, &["p", "{seq}"]));
    Ok(())
}

#[test]
fn wrong_password_is_refused_and_counted() -> Result<()> {
    let bins = switchyard_tests::bins!();
    let node = NodeConfig::new("pull")
        .arg("--plain-server", "alice:secret")
        .bind(ANY)
        .spawn(&bins)?;
    let _push = PeerConfig::new(PeerKind::Libzmq, "push")
        .arg("--plain-client", "alice:guess")
        .connect(&node.endpoint())
        .spawn(&bins)?;
    refused(&node, "auth")?;
    Ok(())
}

#[test]
fn null_peer_to_plain_server_is_refused() -> Result<()> {
    let bins = switchyard_tests::bins!();
    let node = NodeConfig::new("pull")
        .arg("--plain-server", "alice:secret")
        .bind(ANY)
        .spawn(&bins)?;
    let _push = PeerConfig::new(PeerKind::ZeromqCrate, "push")
        .connect(&node.endpoint())
        .spawn(&bins);
    refused(&node, "mechanism")?;
    Ok(())
}

/// The node as PLAIN client with a password the libzmq server refuses: the
/// handshake fails and is counted (libzmq answers with an ERROR).
#[test]
fn node_plain_client_refused_by_libzmq() -> Result<()> {
    let bins = switchyard_tests::bins!();
    let pull = PeerConfig::new(PeerKind::Libzmq, "pull")
        .arg("--plain-server", "bob:pw")
        .bind(ANY)
        .spawn(&bins)?;
    let node = NodeConfig::new("push")
        .arg("--plain-client", "bob:nope")
        .connect(&pull.endpoint())
        .spawn(&bins)?;
    refused(&node, "peer_error")?;
    Ok(())
}
