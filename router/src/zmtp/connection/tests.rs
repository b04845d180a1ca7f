//! Connection tests: hostile peers, limits, heartbeats, PLAIN.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::testing::{eventually, metric, metrics, msg, raw_client, within};
use super::*;
use crate::zmtp::frame::{Decoder, Inbound, encode_command, encode_message};
use crate::zmtp::pull::PullSocket;
use crate::zmtp::push::PushSocket;

/// A well-behaved PUSH peer keeps flowing into `pull`.
async fn good_peer_flows(pull: &mut PullSocket, push: &PushSocket, tag: &[u8]) -> Received {
    within("send", push.send(msg(&[tag]))).await.expect("send");
    let r = within("recv", pull.recv()).await.expect("open");
    assert_eq!(&r.frames[0][..], tag);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_header_closes_only_that_connection() {
    let (reg, m) = metrics();
    let mut pull = PullSocket::new("in", Options::default(), &m);
    let addr = pull.bind("tcp://127.0.0.1:0").await.expect("bind");
    let push = PushSocket::new("good", Options::default(), &m);
    push.connect(&format!("tcp://{addr}")).expect("connect");
    let anonymous = good_peer_flows(&mut pull, &push, b"before").await;
    assert_eq!(anonymous.user, None);
    for size in [1u64 << 40, u64::MAX] {
        let (mut s, _) = raw_client(addr, SocketType::Push).await;
        let mut header = vec![0x02u8];
        header.extend_from_slice(&size.to_be_bytes());
        s.write_all(&header).await.expect("write");
        let mut rest = Vec::new();
        // The server closes the connection: read reaches EOF (or reset).
        let _ = within("close", s.read_to_end(&mut rest)).await;
    }
    eventually("counted", || {
        metric(
            &reg,
            "switchyard_zmtp_protocol_errors_total",
            &[("reason", "frame_too_large")],
        ) == 2.0
    })
    .await;
    good_peer_flows(&mut pull, &push, b"after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_time_out_in_the_handshake() {
    let (reg, m) = metrics();
    let o = Options {
        handshake_timeout: Duration::from_millis(200),
        ..Options::default()
    };
    let mut pull = PullSocket::new("in", o, &m);
    let addr = pull.bind("tcp://127.0.0.1:0").await.expect("bind");
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(
            within("connect", tokio::net::TcpStream::connect(addr))
                .await
                .expect("connect"),
        );
    }
    eventually("all timed out", || {
        metric(
            &reg,
            "switchyard_zmtp_handshake_failures_total",
            &[("reason", "timeout")],
        ) == 300.0
    })
    .await;
    let push = PushSocket::new("good", Options::default(), &m);
    push.connect(&format!("tcp://{addr}")).expect("connect");
    good_peer_flows(&mut pull, &push, b"still-serving").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excess_connections_are_closed_and_counted() {
    let (reg, m) = metrics();
    let o = Options {
        max_connections: 2,
        ..Options::default()
    };
    let pull = PullSocket::new("in", o, &m);
    let addr = pull.bind("tcp://127.0.0.1:0").await.expect("bind");
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(
            within("connect", tokio::net::TcpStream::connect(addr))
                .await
                .expect("connect"),
        );
    }
    eventually("3 rejected", || {
        metric(
            &reg,
            "switchyard_zmtp_connections_rejected_total",
            &[("reason", "max_connections")],
        ) == 3.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_ping_and_drops_a_peer_that_never_answers() {
    let (reg, m) = metrics();
    let o = Options {
        heartbeat_interval: Duration::from_millis(20),
        heartbeat_timeout: Duration::from_millis(100),
        ..Options::default()
    };
    let pull = PullSocket::new("in", o, &m);
    let addr = pull.bind("tcp://127.0.0.1:0").await.expect("bind");
    let (mut s, mut input) = raw_client(addr, SocketType::Push).await;
    let mut out = BytesMut::new();
    encode_command(
        &Command::Ping {
            ttl_deciseconds: 0,
            context: bytes::Bytes::from_static(b"ctx"),
        },
        &mut out,
    );
    s.write_all(&out).await.expect("write");
    let mut dec = Decoder::new(Default::default());
    let (mut pong, mut pings) = (false, 0);
    // Read until the server drops us for never answering its PINGs.
    loop {
        match dec.decode(&mut input) {
            Ok(Some(Inbound::Command(Command::Pong { context }))) => {
                assert_eq!(&context[..], b"ctx");
                pong = true;
            }
            Ok(Some(Inbound::Command(Command::Ping { .. }))) => pings += 1,
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            Ok(None) => match within("server bytes", s.read_buf(&mut input)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            Err(e) => panic!("bad bytes from server: {e}"),
        }
    }
    assert!(pong, "our PING was answered");
    assert!(pings > 0, "the server pinged us");
    eventually("counted", || {
        metric(
            &reg,
            "switchyard_zmtp_disconnects_total",
            &[("reason", "heartbeat_timeout")],
        ) == 1.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_messages_in_one_write_are_all_decoded() {
    let (_reg, m) = metrics();
    let mut pull = PullSocket::new("in", Options::default(), &m);
    let addr = pull.bind("tcp://127.0.0.1:0").await.expect("bind");
    let (mut s, _) = raw_client(addr, SocketType::Push).await;
    let mut out = BytesMut::new();
    for i in 0u32..5000 {
        encode_message(&[bytes::Bytes::copy_from_slice(&i.to_be_bytes())], &mut out);
    }
    s.write_all(&out).await.expect("write");
    let mut buf = Vec::new();
    while buf.len() < 5000 {
        within("recv", pull.recv_many(&mut buf, 5000)).await;
    }
    assert!(
        buf.iter()
            .enumerate()
            .all(|(i, r)| r.frames[0][..] == (i as u32).to_be_bytes())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_credentials_are_checked() {
    use std::collections::HashMap;

    use crate::zmtp::handshake::Mechanism;

    let (reg, m) = metrics();
    let users: HashMap<String, String> = [("edge".to_owned(), "secret".to_owned())].into();
    let server = Options {
        mechanism: Mechanism::PlainServer {
            credentials: Arc::new(users),
        },
        ..Options::default()
    };
    let client = |password: &str| Options {
        mechanism: Mechanism::PlainClient {
            username: "edge".into(),
            password: password.into(),
        },
        ..Options::default()
    };
    let mut pull = PullSocket::new("in", server, &m);
    let addr = pull.bind("tcp://127.0.0.1:0").await.expect("bind");
    let intruder = PushSocket::new("bad", client("guess"), &m);
    intruder.connect(&format!("tcp://{addr}")).expect("connect");
    eventually("refused", || {
        metric(
            &reg,
            "switchyard_zmtp_handshake_failures_total",
            &[("reason", "auth")],
        ) >= 1.0
    })
    .await;
    assert_eq!(pull.peer_count(), 0);
    intruder.close().await;
    let push = PushSocket::new("good", client("secret"), &m);
    push.connect(&format!("tcp://{addr}")).expect("connect");
    let received = good_peer_flows(&mut pull, &push, b"authenticated").await;
    // Each message names the user its connection authenticated as.
    assert_eq!(received.user.as_deref(), Some("edge"));
}
