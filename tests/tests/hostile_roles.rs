//! Hostile peers of the request-reply and publish-subscribe roles, beyond
//! malformed bytes: a REP service forging replies for requests another
//! service holds, a publisher ignoring our subscriptions, a client stealing
//! another's routing identity.

use anyhow::{Context, Result, bail, ensure};
use std::time::{Duration, Instant};
use switchyard_tests::cmd;
use switchyard_tests::node::{self, NodeConfig, SOCKET};
use switchyard_tests::pair::ANY;
use switchyard_tests::peer::{PeerConfig, PeerKind};
use switchyard_tests::protocol::Command;
use switchyard_tests::raw::{self, RawPeer};
use switchyard_tests::wait::DEADLINE;

/// A REP service that forges a reply for a request another service holds
/// (it can guess the request's envelope) must not answer it: the caller
/// gets the real reply from the service it asked.
#[test]
fn rep_service_cannot_answer_for_another() -> Result<()> {
    let bins = switchyard_tests::bins!();
    let mut node = NodeConfig::new("dealer").bind(ANY).spawn(&bins)?;
    let mut services = [
        RawPeer::connect(&node.addr())?,
        RawPeer::connect(&node.addr())?,
    ];
    for s in &mut services {
        s.handshake("REP", DEADLINE)?;
    }
    node.wait_peers(2)?;
    // Requests go round-robin; find the service holding the next one, and
    // let the other (the forger) answer its own meanwhile.
    let mut holder = None;
    for n in 0..4 {
        let frames = [format!("q{n}")];
        node.proc().send(&Command::Request {
            count: 1,
            frames: frames.to_vec(),
            start: 0,
            rate: 0,
            timeout_ms: 20_000,
        })?;
        let (i, req) = first_request(&mut services)?;
        if n < 3 {
            // Echo: envelope and body back.
            services[i].send(&raw::message(
                &req.iter().map(Vec::as_slice).collect::<Vec<_>>(),
            ))?;
            let e = node.proc().event(DEADLINE)?;
            cmd::replied(e, 1)?;
            continue;
        }
        holder = Some((i, req));
    }
    let (honest, req) = holder.context("no request held")?;
    let forger = 1 - honest;
    // The forger answers the request the honest service holds.
    let mut forged: Vec<&[u8]> = req.iter().map(Vec::as_slice).collect();
    let body = b"forged".to_vec();
    *forged.last_mut().context("empty request")? = &body;
    services[forger].send(&raw::message(&forged))?;
    // Wait until the node has dealt with the forgery: either it dropped it
    // (counted as an unmatched reply) or it answered the caller with it.
    let early =
        switchyard_tests::wait::until("the node to handle the forged reply", DEADLINE, || {
            if node.metric(
                node::DROPPED,
                &[("socket", SOCKET), ("reason", "unmatched_reply")],
            )? >= 1.0
            {
                return Ok(Some(None));
            }
            Ok(node.proc().event(Duration::from_millis(10)).ok().map(Some))
        })?;
    ensure!(
        early.is_none(),
        "the caller got the forged reply: {early:?}"
    );
    // The honest service answers after the forgery was dropped.
    services[honest].send(&raw::message(
        &req.iter().map(Vec::as_slice).collect::<Vec<_>>(),
    ))?;
    let e = node.proc().event(DEADLINE)?;
    cmd::replied(e, 1)?;
    ensure!(node.is_alive());
    Ok(())
}

/// Waits for the first of `services` to receive a request; returns its index
/// and the request's frames.
fn first_request(services: &mut [RawPeer]) -> Result<(usize, Vec<Vec<u8>>)> {
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        for (i, s) in services.iter_mut().enumerate() {
            if let Ok(m) = s.read_message(Instant::now() + Duration::from_millis(20)) {
                return Ok((i, m));
            }
        }
    }
    bail!("no service received the request")
}

/// A publisher that ignores our subscriptions: what matches none of them is
/// dropped and counted, what matches is delivered.
#[test]
fn publisher_ignoring_subscriptions() -> Result<()> {
    let bins = switchyard_tests::bins!();
    let mut node = NodeConfig::new("sub")
        .subscribe("a")
        .keep(10)
        .bind(ANY)
        .spawn(&bins)?;
    let mut publisher = RawPeer::connect(&node.addr())?;
    publisher.handshake("PUB", DEADLINE)?;
    // Our subscription reaches it first (ZMTP 3.1: a SUBSCRIBE command).
    let f = publisher.read_frame(Instant::now() + DEADLINE)?;
    ensure!(
        f.command_name() == b"SUBSCRIBE" && f.body.ends_with(b"a"),
        "{f:?}"
    );
    let mut bytes = raw::message(&[b"b", b"1"]);
    bytes.extend(raw::message(&[b"a", b"2"]));
    publisher.send(&bytes)?;
    let got = cmd::messages(node.call(&cmd::recv(1, 20_000))?)?;
    ensure!(
        got == vec![vec!["a".to_string(), "2".to_string()]],
        "{got:?}"
    );
    node.wait_metric(
        node::DROPPED,
        &[("socket", SOCKET), ("reason", "unsubscribed")],
        DEADLINE,
        |v| *v == 1.0,
    )?;
    Ok(())
}

/// A client that claims the identity of a connected one is refused; the
/// first keeps getting its replies.
#[test]
fn router_refuses_a_stolen_identity() -> Result<()> {
    let bins = switchyard_tests::bins!();
    let node = NodeConfig::new("router").bind(ANY).spawn(&bins)?;
    let mut owner = PeerConfig::new(PeerKind::Libzmq, "dealer")
        .arg("--identity", "svc")
        .connect(&node.endpoint())
        .spawn(&bins)?;
    node.wait_peers(1)?;
    let e = owner.call(&cmd::request(10, &["mine", "{seq}"], 0, 20_000), DEADLINE)?;
    cmd::replied(e, 10)?;
    let mut thief = RawPeer::connect(&node.addr())?;
    // The node may refuse before or after its own READY.
    let _ = thief.handshake_with(
        &[("Socket-Type", b"DEALER"), ("Identity", b"svc")],
        DEADLINE,
    );
    thief.wait_closed(DEADLINE)?;
    node.wait_metric(
        node::REJECTED,
        &[("socket", SOCKET), ("reason", "duplicate_identity")],
        DEADLINE,
        |v| *v == 1.0,
    )?;
    let e = owner.call(&cmd::request(10, &["mine", "{seq}"], 0, 20_000), DEADLINE)?;
    cmd::replied(e, 10)?;
    Ok(())
}
