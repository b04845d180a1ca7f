//! PUSH tests: ordering, backpressure, round-robin, recovery, re-sending.

use std::time::Duration;

use super::*;
use crate::zmtp::connection::testing::{eventually, metric, metrics, msg, within};
use crate::zmtp::pull::PullSocket;

fn opts() -> Options {
    Options::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_connects_to_bound_pull_and_keeps_order() {
    let (_reg, m) = metrics();
    let mut pull = PullSocket::new("in", opts(), &m);
    let addr = pull.bind("tcp://127.0.0.1:0").await.expect("bind");
    let push = PushSocket::new("out", opts(), &m);
    push.connect(&format!("tcp://{addr}")).expect("connect");
    for i in 0u32..2000 {
        let body = i.to_be_bytes();
        within("send", push.send(msg(&[b"topic", &body])))
            .await
            .expect("send");
    }
    let mut got = Vec::new();
    while got.len() < 2000 {
        within("recv", pull.recv_many(&mut got, 500)).await;
    }
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.frames.len(), 2);
        assert_eq!(&r.frames[1][..], &(i as u32).to_be_bytes());
    }
    push.close().await;
    pull.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_connects_to_bound_push_with_large_frames() {
    let (_reg, m) = metrics();
    let o = Options {
        send_buffer_size: Some(64 * 1024),
        recv_buffer_size: Some(64 * 1024),
        ..opts()
    };
    let push = PushSocket::new("out", o.clone(), &m);
    let addr = push.bind("tcp://127.0.0.1:0").await.expect("bind");
    let mut pull = PullSocket::new("in", o, &m);
    pull.connect(&format!("tcp://{addr}")).expect("connect");
    let big = vec![7u8; 300_000];
    for _ in 0..20 {
        within("send", push.send(msg(&[b"a", &big, b"z"])))
            .await
            .expect("send");
    }
    for _ in 0..20 {
        let r = within("recv", pull.recv()).await.expect("open");
        assert_eq!(r.frames.len(), 3);
        assert_eq!(r.frames[1].len(), big.len());
        assert!(r.frames[1].iter().all(|b| *b == 7));
        assert_eq!(&r.frames[2][..], b"z");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_peer_waits_send_timeout_then_errors() {
    let (_reg, m) = metrics();
    let o = Options {
        send_timeout: Duration::from_millis(50),
        ..opts()
    };
    let push = PushSocket::new("out", o, &m);
    let r = within("send", push.send(msg(&[b"x"]))).await;
    assert!(matches!(r, Err(SendError::NoPeers(_))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_loses_nothing_with_tiny_queues() {
    let (_reg, m) = metrics();
    let o = Options {
        send_hwm: 2,
        recv_hwm: 2,
        ..opts()
    };
    let mut pull = PullSocket::new("in", o.clone(), &m);
    let addr = pull.bind("tcp://127.0.0.1:0").await.expect("bind");
    let push = Arc::new(PushSocket::new("out", o, &m));
    push.connect(&format!("tcp://{addr}")).expect("connect");
    const N: u32 = 20_000;
    let p = push.clone();
    let producer = tokio::spawn(async move {
        for i in 0..N {
            p.send(msg(&[&i.to_be_bytes()])).await.expect("send");
        }
    });
    let mut next = 0u32;
    while next < N {
        let r = within("recv", pull.recv()).await.expect("open");
        assert_eq!(&r.frames[0][..], &next.to_be_bytes());
        next += 1;
        if next.is_multiple_of(1000) {
            tokio::task::yield_now().await;
        }
    }
    within("producer", producer).await.expect("producer ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_then_close_loses_nothing() {
    let (reg, m) = metrics();
    let mut pull = PullSocket::new("in", opts(), &m);
    let addr = pull.bind("tcp://127.0.0.1:0").await.expect("bind");
    let push = PushSocket::new("out", opts(), &m);
    push.connect(&format!("tcp://{addr}")).expect("connect");
    for i in 0u32..500 {
        within("send", push.send(msg(&[&i.to_be_bytes()])))
            .await
            .expect("send");
    }
    assert!(push.flush(crate::zmtp::connection::testing::DEADLINE).await);
    push.close().await;
    for i in 0u32..500 {
        let r = within("recv", pull.recv()).await.expect("open");
        assert_eq!(&r.frames[0][..], &i.to_be_bytes());
    }
    assert_eq!(
        metric(&reg, "switchyard_zmtp_dropped_total", &[("socket", "out")]),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robins_over_workers() {
    let (_reg, m) = metrics();
    let push = PushSocket::new("out", opts(), &m);
    let addr = push.bind("tcp://127.0.0.1:0").await.expect("bind");
    let mut a = PullSocket::new("a", opts(), &m);
    let mut b = PullSocket::new("b", opts(), &m);
    a.connect(&format!("tcp://{addr}")).expect("connect");
    b.connect(&format!("tcp://{addr}")).expect("connect");
    eventually("two workers", || push.peer_count() == 2).await;
    for i in 0u32..100 {
        push.send(msg(&[&i.to_be_bytes()])).await.expect("send");
    }
    let (mut na, mut nb) = (0, 0);
    let (mut bufa, mut bufb) = (Vec::new(), Vec::new());
    while na + nb < 100 {
        tokio::select! {
            n = a.recv_many(&mut bufa, 100) => na += n,
            n = b.recv_many(&mut bufb, 100) => nb += n,
            () = tokio::time::sleep(crate::zmtp::connection::testing::DEADLINE) => panic!("timeout"),
        }
    }
    assert!(na > 0 && nb > 0, "both workers got work: {na} {nb}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_side_push_recovers_after_pull_restart() {
    let (reg, m) = metrics();
    let o = Options {
        reconnect_interval: Duration::from_millis(10),
        reconnect_interval_max: Duration::from_millis(50),
        send_timeout: Duration::from_secs(20),
        ..opts()
    };
    let mut pull = PullSocket::new("in", o.clone(), &m);
    let addr = pull.bind("tcp://127.0.0.1:0").await.expect("bind");
    let push = Arc::new(PushSocket::new("out", o.clone(), &m));
    push.connect(&format!("tcp://{addr}")).expect("connect");
    push.send(msg(&[b"before"])).await.expect("send");
    assert_eq!(
        &within("recv", pull.recv()).await.expect("open").frames[0][..],
        b"before"
    );
    pull.close().await;
    drop(pull);
    eventually("push saw the disconnect", || push.peer_count() == 0).await;
    let p = push.clone();
    let sends = tokio::spawn(async move {
        p.send(msg(&[b"during-1"])).await.expect("send 1");
        p.send(msg(&[b"during-2"])).await.expect("send 2");
    });
    let mut pull = PullSocket::new("in", o, &m);
    pull.bind(&format!("tcp://{addr}"))
        .await
        .expect("rebind same port");
    let a = within("recv 1", pull.recv()).await.expect("open");
    let b = within("recv 2", pull.recv()).await.expect("open");
    assert_eq!(&a.frames[0][..], b"during-1");
    assert_eq!(&b.frames[0][..], b"during-2");
    within("senders", sends).await.expect("sends ok");
    assert_eq!(
        metric(&reg, "switchyard_zmtp_dropped_total", &[("socket", "out")]),
        0.0
    );
}

/// A bound PUSH socket with `o` and one PULL worker connected that reads
/// one message and then nothing (its inbox holds one).
async fn with_a_stalled_worker(
    o: &Options,
    m: &Metrics,
) -> (PushSocket, std::net::SocketAddr, PullSocket) {
    let push = PushSocket::new("out", o.clone(), m);
    let addr = push.bind("tcp://127.0.0.1:0").await.expect("bind");
    let stalled = PullSocket::new(
        "stalled",
        Options {
            recv_hwm: 1,
            ..o.clone()
        },
        m,
    );
    stalled.connect(&format!("tcp://{addr}")).expect("connect");
    eventually("stalled worker", || push.peer_count() == 1).await;
    (push, addr, stalled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_move_to_another_worker_when_one_leaves() {
    let (reg, m) = metrics();
    // A worker that never reads: its queue fills; then it disconnects.
    let o = Options {
        send_hwm: 10_000,
        ..opts()
    };
    let (push, addr, stalled) = with_a_stalled_worker(&o, &m).await;
    // Fits in the stalled worker's queue (8 MiB) so no send waits.
    const N: u32 = 1500;
    let body = vec![1u8; 4096];
    for i in 0..N {
        within("send", push.send(msg(&[&i.to_be_bytes(), &body])))
            .await
            .expect("send");
    }
    let mut good = PullSocket::new("good", o, &m);
    good.connect(&format!("tcp://{addr}")).expect("connect");
    eventually("second worker", || push.peer_count() == 2).await;
    stalled.close().await;
    drop(stalled);
    // Every message was queued before `good` connected, so whatever it
    // gets was taken back from the stalled worker's queue. (What that
    // worker's kernel buffers held is lost with it, as with libzmq.)
    eventually("stalled worker gone", || push.peer_count() == 1).await;
    let r = within("a re-sent message", good.recv())
        .await
        .expect("open");
    let first = u32::from_be_bytes(r.frames[0][..].try_into().expect("4 bytes"));
    assert!(first < N);
    assert_eq!(
        metric(&reg, "switchyard_zmtp_dropped_total", &[("socket", "out")]),
        0.0
    );
}

/// A worker that freezes (stops reading; its TCP window closes) while
/// messages are queued for it is found dead by the heartbeat watchdog,
/// even though the writer is blocked; its queue moves to the live
/// worker, and the connection is closed gracefully, so what already sat
/// in the kernel reaches the frozen worker if it reads again: every
/// message arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_worker_is_dropped_and_nothing_is_lost() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::zmtp::command::Command;
    use crate::zmtp::connection::testing::raw_client_with;
    use crate::zmtp::frame::{Decoder, Inbound, encode_command};

    let (reg, m) = metrics();
    let o = Options {
        send_hwm: 100,
        heartbeat_interval: Duration::from_millis(50),
        heartbeat_timeout: Duration::from_millis(300),
        ..opts()
    };
    let push = PushSocket::new("out", o.clone(), &m);
    let addr = push.bind("tcp://127.0.0.1:0").await.expect("bind");
    let (mut frozen, mut input) =
        raw_client_with(addr, crate::zmtp::socket_type::SocketType::Pull, Some(4096)).await;
    let mut live = PullSocket::new("live", o, &m);
    live.connect(&format!("tcp://{addr}")).expect("connect");
    eventually("two workers", || push.peer_count() == 2).await;
    let (live_tx, mut live_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = Vec::new();
        while live.recv_many(&mut buf, 1000).await > 0 {
            for r in buf.drain(..) {
                if live_tx.send(r.frames[0].clone()).is_err() {
                    return;
                }
            }
        }
    });
    const N: u32 = 1000;
    let body = vec![b'.'; 16 * 1024];
    for i in 0..N {
        within("send", push.send(msg(&[&i.to_be_bytes(), &body])))
            .await
            .expect("send");
    }
    eventually("frozen worker dropped", || {
        metric(
            &reg,
            "switchyard_zmtp_disconnects_total",
            &[("reason", "heartbeat_timeout")],
        ) >= 1.0
    })
    .await;
    // The frozen worker wakes up: reads all it can, answering PINGs.
    let mut seen = std::collections::BTreeSet::new();
    let mut dec = Decoder::new(Default::default());
    loop {
        match dec.decode(&mut input).expect("valid bytes") {
            Some(Inbound::Message(m)) => {
                assert!(seen.insert(m[0].clone()));
            }
            Some(Inbound::Command(Command::Ping { context, .. })) => {
                let mut pong = bytes::BytesMut::new();
                encode_command(&Command::Pong { context }, &mut pong);
                let _ = frozen.write_all(&pong).await;
            }
            Some(Inbound::Command(_)) => {}
            None => match within("frozen reads", frozen.read_buf(&mut input)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
        }
    }
    let frozen_got = seen.len();
    for _ in frozen_got..N as usize {
        let f = within("the rest at the live worker", live_rx.recv())
            .await
            .expect("live worker running");
        assert!(seen.insert(f), "delivered twice");
    }
    assert_eq!(seen.len(), N as usize, "frozen worker got {frozen_got}");
    assert_eq!(
        metric(&reg, "switchyard_zmtp_dropped_total", &[("socket", "out")]),
        0.0
    );
}

/// A receipt settles once every tracked message was written to a worker's
/// socket: messages queued to a worker that stops reading settle only when
/// they move to another worker and are written there; a message no worker
/// takes is named lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_settles_once_its_messages_are_written_and_names_the_lost() {
    use crate::zmtp::connection::Receipt;

    let (_reg, m) = metrics();
    let o = Options {
        send_hwm: 10_000,
        send_timeout: Duration::from_millis(100),
        send_buffer_size: Some(64 * 1024),
        recv_buffer_size: Some(64 * 1024),
        ..opts()
    };
    let (push, addr, stalled) = with_a_stalled_worker(&o, &m).await;
    // 6 MiB: far more than the kernel buffers and the stalled worker's
    // read buffer hold, well within its queue.
    const N: usize = 1500;
    let body = vec![1u8; 4096];
    let receipt = Receipt::new();
    for i in 0..N {
        within(
            "send",
            push.send_tracked(msg(&[&(i as u32).to_be_bytes(), &body]), receipt.token(i)),
        )
        .await
        .expect("send");
    }
    let settled = tokio::spawn({
        let receipt = receipt.clone();
        async move { receipt.settled().await }
    });
    tokio::task::yield_now().await;
    assert!(
        !settled.is_finished(),
        "settled with most messages still queued"
    );
    let mut good = PullSocket::new("good", o, &m);
    good.connect(&format!("tcp://{addr}")).expect("connect");
    eventually("second worker", || push.peer_count() == 2).await;
    stalled.close().await;
    drop(stalled);
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        while good.recv_many(&mut buf, 1000).await > 0 {
            buf.clear();
        }
    });
    let lost = within("the receipt settles", settled).await.expect("task");
    assert!(lost.is_empty(), "lost {lost:?}");

    reader.abort();
    push.close().await;

    // No worker at all: the send fails and its message is named lost.
    let lonely = PushSocket::new(
        "lonely",
        Options {
            send_timeout: Duration::from_millis(50),
            ..opts()
        },
        &m,
    );
    let alone = Receipt::new();
    let r = within("send", lonely.send_tracked(msg(&[b"x"]), alone.token(7))).await;
    assert!(matches!(r, Err(SendError::NoPeers(_))), "{r:?}");
    assert_eq!(within("settled", alone.settled()).await, vec![7]);
}
