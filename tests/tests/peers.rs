//! The test peers against each other (libzmq through pyzmq and the `zeromq`
//! crate), so a failure in a switchyard interop test is never a broken peer.

use anyhow::Result;
use switchyard_tests::peer::{PeerConfig, PeerKind};
use switchyard_tests::protocol::{Command, Event};
use switchyard_tests::wait::DEADLINE;

fn send(count: u64, frames: &[&str]) -> Command {
    Command::Send {
        count,
        frames: frames.iter().map(|s| s.to_string()).collect(),
        start: 0,
        rate: 0,
        size: 0,
    }
}

fn recv(count: u64, skip: Option<&str>) -> Command {
    Command::Recv {
        count,
        timeout_ms: 20_000,
        skip_prefix: skip.map(str::to_owned),
    }
}

#[test]
fn push_pull_between_implementations() -> Result<()> {
    let bins = switchyard_tests::bins!();
    for (a, b) in [
        (PeerKind::Libzmq, PeerKind::ZeromqCrate),
        (PeerKind::ZeromqCrate, PeerKind::Libzmq),
    ] {
        let mut pull = PeerConfig::new(a, "pull")
            .bind("tcp://127.0.0.1:0")
            .spawn(&bins)?;
        let mut push = PeerConfig::new(b, "push")
            .connect(&pull.endpoint())
            .spawn(&bins)?;
        assert_eq!(
            push.call(&send(100, &["k", "{seq}"]), DEADLINE)?,
            Event::Sent {
                count: 100,
                error: None
            }
        );
        let Event::Received {
            messages,
            timed_out,
        } = pull.call(&recv(100, None), DEADLINE * 2)?
        else {
            panic!("not received");
        };
        assert!(!timed_out, "{a} pull from {b} push timed out");
        let want: Vec<Vec<String>> = (0..100)
            .map(|i| vec!["k".to_string(), i.to_string()])
            .collect();
        assert_eq!(messages, want);
    }
    Ok(())
}

#[test]
fn pub_sub_and_req_rep_between_implementations() -> Result<()> {
    let bins = switchyard_tests::bins!();
    for (a, b) in [
        (PeerKind::Libzmq, PeerKind::ZeromqCrate),
        (PeerKind::ZeromqCrate, PeerKind::Libzmq),
    ] {
        let mut publ = PeerConfig::new(a, "pub")
            .bind("tcp://127.0.0.1:0")
            .spawn(&bins)?;
        let mut sub = PeerConfig::new(b, "sub")
            .connect(&publ.endpoint())
            .subscribe("a")
            .spawn(&bins)?;
        // Publish probes until one arrives: the subscription has reached the
        // publisher.
        switchyard_tests::wait::until("a probe to arrive", DEADLINE, || {
            publ.call(&send(1, &["a.probe"]), DEADLINE)?;
            let e = sub.call(
                &Command::Recv {
                    count: 1,
                    timeout_ms: 100,
                    skip_prefix: None,
                },
                DEADLINE,
            )?;
            Ok(matches!(
                e,
                Event::Received {
                    timed_out: false,
                    ..
                }
            )
            .then_some(()))
        })?;
        publ.call(&send(10, &["b", "{seq}"]), DEADLINE)?;
        publ.call(&send(10, &["a", "{seq}"]), DEADLINE)?;
        let Event::Received {
            messages,
            timed_out,
        } = sub.call(&recv(10, Some("a.probe")), DEADLINE * 2)?
        else {
            panic!("not received");
        };
        assert!(!timed_out);
        assert!(messages.iter().all(|m| m[0] == "a"), "{messages:?}");

        let rep = PeerConfig::new(a, "rep")
            .bind("tcp://127.0.0.1:0")
            .echo()
            .spawn(&bins)?;
        let mut req = PeerConfig::new(b, "req")
            .connect(&rep.endpoint())
            .spawn(&bins)?;
        let e = req.call(
            &Command::Request {
                count: 20,
                frames: vec!["q{seq}".into(), "x".into()],
                start: 0,
                rate: 0,
                timeout_ms: 10_000,
            },
            DEADLINE * 2,
        )?;
        assert_eq!(
            e,
            Event::Replies {
                count: 20,
                mismatches: 0,
                error: None
            },
            "{b} req to {a} rep"
        );
    }
    Ok(())
}
