//! Unit and property tests for the handshake state machine: NULL and PLAIN
//! pairs, every split of the peer's bytes, and hostile peers.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::zmtp::frame::{Decoder, FLAG_COMMAND, FLAG_LONG, Inbound, encode_message};

fn cfg(socket_type: SocketType, mechanism: Mechanism) -> HandshakeConfig {
    HandshakeConfig {
        socket_type,
        identity: Bytes::new(),
        mechanism,
        limits: Limits::default(),
    }
}

fn null(socket_type: SocketType) -> HandshakeConfig {
    cfg(socket_type, Mechanism::Null)
}

fn plain_client(user: &str, password: &str) -> Mechanism {
    Mechanism::PlainClient {
        username: user.into(),
        password: password.into(),
    }
}

fn plain_server() -> Mechanism {
    let mut users = HashMap::new();
    users.insert("admin".to_string(), "secret".to_string());
    users.insert("other".to_string(), "pw2".to_string());
    Mechanism::PlainServer {
        credentials: Arc::new(users),
    }
}

type Outcome = Result<PeerInfo, HandshakeError>;

/// Runs two handshakes against each other, moving at most `chunk` bytes per
/// step in each direction. Returns each side's outcome (a side that never
/// finished because the other failed reports `Finished`).
fn run_pair(a: HandshakeConfig, b: HandshakeConfig, chunk: usize) -> (Outcome, Outcome) {
    let (mut a_out, mut b_out) = (BytesMut::new(), BytesMut::new());
    let mut ha = Handshake::start(a, &mut a_out);
    let mut hb = Handshake::start(b, &mut b_out);
    let (mut a_in, mut b_in) = (BytesMut::new(), BytesMut::new());
    let (mut ra, mut rb) = (None, None);
    for _ in 0..100_000 {
        let n = chunk.min(a_out.len());
        b_in.extend_from_slice(&a_out.split_to(n));
        let n = chunk.min(b_out.len());
        a_in.extend_from_slice(&b_out.split_to(n));
        if ra.is_none() {
            match ha.advance(&mut a_in, &mut a_out) {
                Ok(None) => {}
                Ok(Some(p)) => ra = Some(Ok(p)),
                Err(e) => ra = Some(Err(e)),
            }
        }
        if rb.is_none() {
            match hb.advance(&mut b_in, &mut b_out) {
                Ok(None) => {}
                Ok(Some(p)) => rb = Some(Ok(p)),
                Err(e) => rb = Some(Err(e)),
            }
        }
        let a_failed = matches!(ra, Some(Err(_)));
        let b_failed = matches!(rb, Some(Err(_)));
        if (ra.is_some() && rb.is_some())
            || ((a_failed || b_failed) && a_out.is_empty() && b_out.is_empty())
        {
            break;
        }
    }
    (
        ra.unwrap_or(Err(HandshakeError::Finished)),
        rb.unwrap_or(Err(HandshakeError::Finished)),
    )
}

/// What a hand-written NULL peer sends: greeting and READY.
fn raw_null_peer(major: u8, minor: u8, props: &[(&str, &[u8])]) -> BytesMut {
    let mut out = BytesMut::new();
    let mut g = Greeting::ours(MechanismName::NULL, false);
    g.major = major;
    g.minor = minor;
    g.encode(&mut out);
    let mut p = Properties::new();
    for (n, v) in props {
        p.push(
            Bytes::copy_from_slice(n.as_bytes()),
            Bytes::copy_from_slice(v),
        );
    }
    encode_command(&Command::Ready(p), &mut out);
    out
}

fn greeting_only(mechanism: MechanismName, as_server: bool) -> BytesMut {
    let mut out = BytesMut::new();
    Greeting::ours(mechanism, as_server).encode(&mut out);
    out
}

/// Feeds `input` to a fresh handshake in one go.
fn against(cfg: HandshakeConfig, input: &[u8]) -> (Outcome, BytesMut, BytesMut) {
    let mut out = BytesMut::new();
    let mut h = Handshake::start(cfg, &mut out);
    out.clear();
    let mut buf = BytesMut::from(input);
    let r = match h.advance(&mut buf, &mut out) {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(HandshakeError::Finished),
        Err(e) => Err(e),
    };
    (r, buf, out)
}

/// The commands a handshake wrote (after our greeting was cleared).
fn sent_commands(out: &mut BytesMut) -> Vec<Command> {
    let mut cmds = Vec::new();
    while let Ok(Some(c)) = decode_command(out, 1 << 20) {
        cmds.push(c);
    }
    cmds
}

fn error_reason(out: &mut BytesMut) -> Option<Bytes> {
    sent_commands(out).into_iter().find_map(|c| match c {
        Command::Error { reason } => Some(reason),
        _ => None,
    })
}

#[test]
fn null_dealer_and_router() {
    let mut dealer = null(SocketType::Dealer);
    dealer.identity = Bytes::from_static(b"worker-1");
    let (d, r) = run_pair(dealer, null(SocketType::Router), usize::MAX);
    let (d, r) = (d.unwrap(), r.unwrap());
    assert_eq!(r.socket_type, SocketType::Dealer);
    assert_eq!(r.identity.as_deref(), Some(&b"worker-1"[..]));
    assert_eq!(r.minor_version, 1);
    assert_eq!(r.user, None);
    assert_eq!(d.socket_type, SocketType::Router);
    assert_eq!(d.identity, None, "empty Identity is reported as None");
    assert_eq!(d.properties.socket_type(), Some(SocketType::Router));
}

#[test]
fn every_compatible_pair_connects_and_others_are_refused() {
    for a in SocketType::ALL {
        for b in SocketType::ALL {
            let (ra, rb) = run_pair(null(a), null(b), 64);
            if a.is_compatible_with(b) {
                assert_eq!(ra.unwrap().socket_type, b);
                assert_eq!(rb.unwrap().socket_type, a);
            } else {
                let e = ra.unwrap_err();
                assert_eq!(
                    e,
                    HandshakeError::IncompatibleSocketType { ours: a, theirs: b }
                );
                assert_eq!(e.reason(), "socket_type");
            }
        }
    }
}

#[test]
fn pairs_work_with_any_chunk_size() {
    for chunk in 1..=80 {
        let (a, b) = run_pair(null(SocketType::Push), null(SocketType::Pull), chunk);
        assert!(a.is_ok() && b.is_ok(), "chunk {chunk}");
        let (c, s) = run_pair(
            cfg(SocketType::Dealer, plain_client("admin", "secret")),
            cfg(SocketType::Router, plain_server()),
            chunk,
        );
        assert_eq!(s.unwrap().user.as_deref(), Some("admin"), "chunk {chunk}");
        assert_eq!(c.unwrap().user, None);
    }
}

#[test]
fn peer_bytes_split_at_every_offset_and_leftover_is_traffic() {
    let mut wire = raw_null_peer(3, 1, &[("Socket-Type", b"PUB")]);
    let handshake_len = wire.len();
    encode_message(
        &[Bytes::from_static(b"topic"), Bytes::from_static(b"data")],
        &mut wire,
    );
    for split in 0..=wire.len() {
        let mut out = BytesMut::new();
        let mut h = Handshake::start(null(SocketType::Sub), &mut out);
        let mut input = BytesMut::from(&wire[..split]);
        let first = h.advance(&mut input, &mut out).unwrap();
        let peer = match first {
            Some(p) => {
                assert!(split >= handshake_len);
                input.extend_from_slice(&wire[split..]);
                p
            }
            None => {
                assert!(split < handshake_len, "split {split}");
                input.extend_from_slice(&wire[split..]);
                h.advance(&mut input, &mut out).unwrap().expect("done")
            }
        };
        assert_eq!(peer.socket_type, SocketType::Pub);
        let mut d = Decoder::new(Limits::default());
        let Some(Inbound::Message(m)) = d.decode(&mut input).unwrap() else {
            panic!("traffic lost at split {split}");
        };
        assert_eq!(&m[..], [&b"topic"[..], &b"data"[..]]);
    }
}

#[test]
fn libzmq_style_ten_bytes_then_the_rest() {
    let wire = raw_null_peer(3, 1, &[("Socket-Type", b"PUSH")]);
    let mut out = BytesMut::new();
    let mut h = Handshake::start(null(SocketType::Pull), &mut out);
    assert_eq!(
        out.len(),
        GREETING_LEN,
        "our greeting is sent in full at once"
    );
    out.clear();
    let mut input = BytesMut::from(&wire[..10]);
    assert_eq!(h.advance(&mut input, &mut out), Ok(None));
    assert!(
        out.is_empty(),
        "nothing sent before the peer's greeting is known"
    );
    input.extend_from_slice(&wire[10..]);
    let peer = h.advance(&mut input, &mut out).unwrap().unwrap();
    assert_eq!(peer.socket_type, SocketType::Push);
    assert!(
        matches!(&sent_commands(&mut out)[..], [Command::Ready(p)] if p.socket_type() == Some(SocketType::Pull))
    );
}

#[test]
fn version_negotiation() {
    let (r, ..) = against(
        null(SocketType::Sub),
        &raw_null_peer(3, 0, &[("Socket-Type", b"PUB")]),
    );
    assert_eq!(r.unwrap().minor_version, 0);
    let (r, ..) = against(
        null(SocketType::Sub),
        &raw_null_peer(4, 2, &[("Socket-Type", b"XPUB")]),
    );
    assert_eq!(r.unwrap().minor_version, 1);
    let (r, ..) = against(
        null(SocketType::Sub),
        &raw_null_peer(3, 7, &[("Socket-Type", b"PUB")]),
    );
    assert_eq!(r.unwrap().minor_version, 7);
}

#[test]
fn old_version_is_refused_from_eleven_bytes() {
    let wire = raw_null_peer(2, 0, &[]);
    let (r, _, out) = against(null(SocketType::Sub), &wire[..11]);
    let e = r.unwrap_err();
    assert_eq!(e, HandshakeError::UnsupportedVersion { major: 2, minor: 0 });
    assert_eq!(e.reason(), "version");
    assert!(
        out.is_empty(),
        "no ERROR to a peer that does not speak ZMTP 3"
    );
    let (r, ..) = against(null(SocketType::Sub), &raw_null_peer(1, 0, &[]));
    assert_eq!(r.unwrap_err().reason(), "version");
}

#[test]
fn bad_signature() {
    for wire in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0x00],
    ] {
        let (r, _, out) = against(null(SocketType::Sub), wire);
        let e = r.unwrap_err();
        assert_eq!(e, HandshakeError::BadSignature);
        assert_eq!(e.reason(), "bad_greeting");
        assert!(out.is_empty());
    }
}

#[test]
fn wrong_mechanism() {
    for (mech, as_server) in [(MechanismName::PLAIN, true), (MechanismName::CURVE, false)] {
        let (r, _, mut out) = against(null(SocketType::Sub), &greeting_only(mech, as_server));
        let e = r.unwrap_err();
        assert_eq!(
            e,
            HandshakeError::MechanismMismatch {
                ours: MechanismName::NULL,
                theirs: mech
            }
        );
        assert_eq!(e.reason(), "mechanism");
        assert!(error_reason(&mut out).is_some(), "ERROR queued");
    }
    let mut weird = [0u8; 20];
    weird[..4].copy_from_slice(b"NULL");
    weird[19] = b'x';
    let wire = greeting_only(MechanismName::from_raw(weird), false);
    let (r, ..) = against(null(SocketType::Sub), &wire);
    assert_eq!(r.unwrap_err().reason(), "mechanism");
    // NULL vs PLAIN the other way round.
    let (r, ..) = against(
        cfg(SocketType::Dealer, plain_client("a", "b")),
        &greeting_only(MechanismName::NULL, false),
    );
    assert_eq!(r.unwrap_err().reason(), "mechanism");
}

#[test]
fn malformed_ready() {
    let sub = || null(SocketType::Sub);
    let cases: Vec<(BytesMut, &str)> = vec![
        (raw_null_peer(3, 1, &[]), "malformed_ready"),
        (
            raw_null_peer(3, 1, &[("Identity", b"x")]),
            "malformed_ready",
        ),
        (
            raw_null_peer(3, 1, &[("Socket-Type", b"STREAM")]),
            "socket_type",
        ),
        (
            raw_null_peer(3, 1, &[("Socket-Type", b"pub")]),
            "socket_type",
        ),
        (
            raw_null_peer(3, 1, &[("Socket-Type", b"PUB"), ("Identity", &[1u8; 256])]),
            "malformed_ready",
        ),
    ];
    for (wire, reason) in cases {
        let (r, _, mut out) = against(sub(), &wire);
        assert_eq!(r.unwrap_err().reason(), reason);
        assert!(error_reason(&mut out).is_some());
    }
    // READY bodies that do not parse at all.
    for body in [
        &b"\x05READY\x0bSocket-Type\x00\x00\x00\x09PUB"[..],
        b"\x05READY\x0bSocket-Type\xff\xff\xff\xffPUB",
        b"\x05READY\x00",
        b"\x05READY\x03abc\x00\x00",
    ] {
        let mut wire = greeting_only(MechanismName::NULL, false);
        wire.put_u8(FLAG_COMMAND);
        wire.put_u8(u8::try_from(body.len()).unwrap());
        wire.put_slice(body);
        let (r, _, mut out) = against(sub(), &wire);
        let e = r.unwrap_err();
        assert!(
            matches!(
                e,
                HandshakeError::MalformedReady {
                    command: "READY",
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.reason(), "malformed_ready");
        assert!(error_reason(&mut out).is_some());
    }
}

#[test]
fn identity_may_be_up_to_255_bytes_and_reported_raw() {
    let id = [0u8, 1, 2];
    let (r, ..) = against(
        null(SocketType::Router),
        &raw_null_peer(3, 1, &[("socket-type", b"REQ"), ("identity", &id)]),
    );
    assert_eq!(r.unwrap().identity.as_deref(), Some(&id[..]));
    let (r, ..) = against(
        null(SocketType::Router),
        &raw_null_peer(3, 1, &[("Socket-Type", b"REQ"), ("Identity", &[7u8; 255])]),
    );
    assert_eq!(r.unwrap().identity.map(|i| i.len()), Some(255));
}

#[test]
fn message_frame_during_handshake() {
    let mut wire = greeting_only(MechanismName::NULL, false);
    encode_message(&[Bytes::from_static(b"early")], &mut wire);
    let (r, ..) = against(null(SocketType::Sub), &wire);
    let e = r.unwrap_err();
    assert_eq!(e, HandshakeError::Protocol(ProtocolError::ExpectedCommand));
    assert_eq!(e.reason(), "expected_command");
}

#[test]
fn huge_command_during_handshake_is_refused_from_its_header() {
    for size in [1u64 << 40, u64::MAX] {
        let mut wire = greeting_only(MechanismName::NULL, false);
        wire.put_u8(FLAG_COMMAND | FLAG_LONG);
        wire.put_u64(size);
        let (r, rest, _) = against(null(SocketType::Sub), &wire);
        let e = r.unwrap_err();
        assert_eq!(
            e,
            HandshakeError::Protocol(ProtocolError::CommandTooLarge {
                size,
                max: Limits::DEFAULT_MAX_COMMAND_SIZE
            })
        );
        assert_eq!(e.reason(), "command_too_large");
        assert_eq!(rest.len(), 9, "header left unconsumed, nothing buffered");
    }
}

#[test]
fn unexpected_and_unknown_commands_during_handshake() {
    let mut wire = greeting_only(MechanismName::NULL, false);
    encode_command(
        &Command::Unknown {
            name: Bytes::from_static(b"JOIN"),
        },
        &mut wire,
    );
    let (r, ..) = against(null(SocketType::Sub), &wire);
    assert_eq!(
        r.unwrap_err(),
        HandshakeError::UnexpectedCommand {
            got: "UNKNOWN",
            expected: "READY"
        }
    );
    let mut wire = greeting_only(MechanismName::PLAIN, false);
    encode_command(&Command::Ready(Properties::new()), &mut wire);
    let (r, ..) = against(cfg(SocketType::Router, plain_server()), &wire);
    let e = r.unwrap_err();
    assert_eq!(
        e,
        HandshakeError::UnexpectedCommand {
            got: "READY",
            expected: "HELLO"
        }
    );
    assert_eq!(e.reason(), "unexpected_command");
}

#[test]
fn peer_error_is_reported_escaped() {
    let mut wire = greeting_only(MechanismName::NULL, false);
    encode_command(
        &Command::Error {
            reason: Bytes::from_static(b"go away\n"),
        },
        &mut wire,
    );
    let (r, ..) = against(null(SocketType::Sub), &wire);
    let e = r.unwrap_err();
    assert_eq!(
        e,
        HandshakeError::PeerError {
            reason: "go away\\n".into()
        }
    );
    assert_eq!(e.reason(), "peer_error");
}

#[test]
fn plain_wrong_password_unknown_user_and_bad_utf8() {
    for (user, pw) in [
        ("admin", "wrong"),
        ("nobody", "secret"),
        ("admin", ""),
        ("other", "secret"),
    ] {
        let (c, s) = run_pair(
            cfg(SocketType::Dealer, plain_client(user, pw)),
            cfg(SocketType::Router, plain_server()),
            7,
        );
        let e = s.unwrap_err();
        assert_eq!(e, HandshakeError::AuthFailed { user: user.into() });
        assert_eq!(e.reason(), "auth");
        assert_eq!(
            c.unwrap_err(),
            HandshakeError::PeerError {
                reason: "400".into()
            }
        );
    }
    let mut wire = greeting_only(MechanismName::PLAIN, false);
    encode_command(
        &Command::Hello {
            username: Bytes::from_static(b"\xffadmin"),
            password: Bytes::from_static(b"secret"),
        },
        &mut wire,
    );
    let (r, _, mut out) = against(cfg(SocketType::Router, plain_server()), &wire);
    assert_eq!(r.unwrap_err().reason(), "auth");
    assert_eq!(error_reason(&mut out).as_deref(), Some(&b"400"[..]));
}

#[test]
fn plain_roles_come_from_config_not_the_as_server_bit() {
    // libzmq 4.3 sends as-server = 0 even as a PLAIN server.
    let mut wire = greeting_only(MechanismName::PLAIN, false);
    encode_command(&Command::Welcome, &mut wire);
    let mut props = Properties::new();
    props.push("Socket-Type", "ROUTER");
    encode_command(&Command::Ready(props), &mut wire);
    let (r, _, mut out) = against(
        cfg(SocketType::Dealer, plain_client("admin", "secret")),
        &wire,
    );
    assert_eq!(r.unwrap().socket_type, SocketType::Router);
    let sent = sent_commands(&mut out);
    assert!(
        matches!(&sent[..], [Command::Hello { .. }, Command::Initiate(_)]),
        "{sent:?}"
    );
    // Two clients: the first HELLO is an unexpected command.
    let (a, _) = run_pair(
        cfg(SocketType::Dealer, plain_client("a", "b")),
        cfg(SocketType::Router, plain_client("a", "b")),
        64,
    );
    assert_eq!(
        a.unwrap_err(),
        HandshakeError::UnexpectedCommand {
            got: "HELLO",
            expected: "WELCOME"
        }
    );
}

#[test]
fn plain_credentials_longer_than_255_bytes() {
    let long = "x".repeat(256);
    let (r, ..) = against(
        cfg(SocketType::Dealer, plain_client(&long, "pw")),
        &greeting_only(MechanismName::PLAIN, true),
    );
    let e = r.unwrap_err();
    assert_eq!(e, HandshakeError::CredentialsTooLong);
    assert_eq!(e.reason(), "config");
}

#[test]
fn our_identity_longer_than_255_bytes() {
    let mut c = null(SocketType::Dealer);
    c.identity = Bytes::from(vec![b'i'; 256]);
    let (r, ..) = against(c, &greeting_only(MechanismName::NULL, false));
    let e = r.unwrap_err();
    assert_eq!(e, HandshakeError::IdentityTooLong { len: 256 });
    assert_eq!(e.reason(), "config");
}

#[test]
fn advance_after_the_end_is_an_error() {
    let mut out = BytesMut::new();
    let mut h = Handshake::start(null(SocketType::Sub), &mut out);
    let mut input = raw_null_peer(3, 1, &[("Socket-Type", b"PUB")]);
    assert!(h.advance(&mut input, &mut out).unwrap().is_some());
    assert_eq!(
        h.advance(&mut input, &mut out),
        Err(HandshakeError::Finished)
    );
    let mut h = Handshake::start(null(SocketType::Sub), &mut out);
    let mut input = BytesMut::from(&b"nope"[..]);
    assert!(h.advance(&mut input, &mut out).is_err());
    assert_eq!(
        h.advance(&mut input, &mut out),
        Err(HandshakeError::Finished)
    );
}

#[test]
fn debug_never_prints_passwords() {
    let shown = format!(
        "{:?} {:?}",
        plain_client("admin", "hunter2"),
        plain_server()
    );
    assert!(
        !shown.contains("hunter2") && !shown.contains("secret"),
        "{shown}"
    );
}

proptest! {
    #[test]
    fn any_chunking_of_a_plain_handshake(chunks in proptest::collection::vec(1usize..100, 1..12)) {
        // Client -> server bytes are fed in the given chunk sizes.
        let mut c_out = BytesMut::new();
        let mut s_out = BytesMut::new();
        let mut c = Handshake::start(cfg(SocketType::Dealer, plain_client("admin", "secret")), &mut c_out);
        let mut s = Handshake::start(cfg(SocketType::Router, plain_server()), &mut s_out);
        let (mut c_in, mut s_in) = (BytesMut::new(), BytesMut::new());
        let mut sizes = chunks.iter().cycle();
        let (mut c_done, mut s_done) = (None, None);
        for _ in 0..1000 {
            let n = (*sizes.next().unwrap_or(&1)).min(c_out.len());
            s_in.extend_from_slice(&c_out.split_to(n));
            c_in.extend_from_slice(&s_out.split_to(s_out.len()));
            if s_done.is_none() {
                s_done = s.advance(&mut s_in, &mut s_out).unwrap();
            }
            if c_done.is_none() {
                c_done = c.advance(&mut c_in, &mut c_out).unwrap();
            }
            if c_done.is_some() && s_done.is_some() {
                break;
            }
        }
        let server_side = s_done.expect("server done");
        prop_assert_eq!(server_side.user.as_deref(), Some("admin"));
        prop_assert_eq!(c_done.unwrap().socket_type, SocketType::Router);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        prefix in any::<bool>(),
        junk in proptest::collection::vec(any::<u8>(), 0..512),
        split in any::<usize>(),
    ) {
        for config in [
            null(SocketType::Sub),
            cfg(SocketType::Router, plain_server()),
            cfg(SocketType::Dealer, plain_client("admin", "secret")),
        ] {
            let mut wire = if prefix {
                greeting_only(config.mechanism.name(), !config.mechanism.as_server())
            } else {
                BytesMut::new()
            };
            wire.extend_from_slice(&junk);
            let split = split % (wire.len() + 1);
            let mut out = BytesMut::new();
            let mut h = Handshake::start(config, &mut out);
            let mut input = BytesMut::from(&wire[..split]);
            if h.advance(&mut input, &mut out).is_ok() {
                input.extend_from_slice(&wire[split..]);
                let _ = h.advance(&mut input, &mut out);
            }
            prop_assert!(out.len() < 4096);
        }
    }
}
