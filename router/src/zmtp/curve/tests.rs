//! The CURVE handshake in memory: a whole client-server exchange through
//! [`Handshake`], and every check the server makes, each against a client
//! forged to break exactly that one thing.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::zmtp::command::{Command, Properties};
use crate::zmtp::frame::{Decode, Inbound, decode_command_body, encode_command};
use crate::zmtp::greeting::{Greeting, MechanismName};
use crate::zmtp::handshake::{Handshake, HandshakeConfig, HandshakeError, Mechanism, PeerInfo};
use crate::zmtp::limits::Limits;
use crate::zmtp::socket_type::SocketType;

fn pair(seed: u8) -> Arc<CurveKeypair> {
    Arc::new(CurveKeypair::from_secret_bytes([seed; 32]))
}

fn server_keys() -> Arc<CurveKeypair> {
    pair(0x51)
}

fn client_keys() -> Arc<CurveKeypair> {
    pair(0xC1)
}

fn clients() -> Arc<HashMap<CurvePublicKey, String>> {
    let mut m = HashMap::new();
    m.insert(client_keys().public(), "edge-7".to_owned());
    m.insert(pair(0xC2).public(), "edge-8".to_owned());
    Arc::new(m)
}

fn server_mechanism() -> Mechanism {
    Mechanism::CurveServer {
        keys: server_keys(),
        clients: clients(),
    }
}

fn client_mechanism(keys: Arc<CurveKeypair>, server_key: CurvePublicKey) -> Mechanism {
    Mechanism::CurveClient { keys, server_key }
}

fn cfg(socket_type: SocketType, mechanism: Mechanism) -> HandshakeConfig {
    HandshakeConfig {
        socket_type,
        identity: Bytes::new(),
        mechanism,
        limits: Limits::default(),
    }
}

type Outcome = Result<PeerInfo, HandshakeError>;

/// Two handshakes against each other, `chunk` bytes per step each way.
/// Returns both outcomes and both handshakes (for their sessions).
fn run(
    a: HandshakeConfig,
    b: HandshakeConfig,
    chunk: usize,
) -> ((Outcome, Handshake), (Outcome, Handshake)) {
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
        let failed = matches!(ra, Some(Err(_))) || matches!(rb, Some(Err(_)));
        if (ra.is_some() && rb.is_some()) || (failed && a_out.is_empty() && b_out.is_empty()) {
            break;
        }
    }
    (
        (ra.unwrap_or(Err(HandshakeError::Finished)), ha),
        (rb.unwrap_or(Err(HandshakeError::Finished)), hb),
    )
}

fn reason(outcome: &Outcome) -> &'static str {
    match outcome {
        Ok(_) => "ok",
        Err(e) => e.reason(),
    }
}

#[test]
fn client_and_server_agree_and_exchange_messages_both_ways() {
    for chunk in [1, 7, 64, 10_000] {
        let server = cfg(SocketType::Pull, server_mechanism());
        let client = cfg(
            SocketType::Push,
            client_mechanism(client_keys(), server_keys().public()),
        );
        let ((rs, mut hs), (rc, mut hc)) = run(server, client, chunk);
        let (ps, pc) = (rs.expect("server"), rc.expect("client"));
        assert_eq!(ps.socket_type, SocketType::Push);
        assert_eq!(pc.socket_type, SocketType::Pull);
        // The name the client's key is listed under is its principal.
        assert_eq!(ps.user.as_deref(), Some("edge-7"));
        assert_eq!(pc.user, None);
        let (Some(mut s), Some(mut c)) = (hs.take_session(), hc.take_session()) else {
            panic!("no session");
        };
        assert!(hs.take_session().is_none(), "taken once");

        let mut wire = BytesMut::new();
        let msg = [Bytes::from_static(b"jobs.1"), Bytes::from(vec![9u8; 300])];
        c.sealer.seal_message(&msg, &mut wire);
        c.sealer.seal_command(
            &Command::Ping {
                ttl_deciseconds: 0,
                context: Bytes::from_static(b"hb"),
            },
            &mut wire,
        );
        let mut d = CurveDecoder::new(Limits::default(), s.opener);
        assert_eq!(
            d.decode(&mut wire).expect("message"),
            Some(Inbound::Message(msg.iter().cloned().collect()))
        );
        assert!(matches!(
            d.decode(&mut wire).expect("ping"),
            Some(Inbound::Command(Command::Ping { .. }))
        ));
        s.sealer
            .seal_message(&[Bytes::from_static(b"reply")], &mut wire);
        let mut d = CurveDecoder::new(Limits::default(), c.opener);
        assert_eq!(
            d.decode(&mut wire).expect("reply"),
            Some(Inbound::Message(
                [Bytes::from_static(b"reply")].into_iter().collect()
            ))
        );
    }
}

#[test]
fn every_role_pair_handshakes_over_curve() {
    for (server_type, client_type) in [
        (SocketType::Pub, SocketType::Sub),
        (SocketType::Sub, SocketType::Pub),
        (SocketType::Router, SocketType::Req),
        (SocketType::Router, SocketType::Dealer),
        (SocketType::Rep, SocketType::Dealer),
        (SocketType::Pull, SocketType::Push),
        (SocketType::Push, SocketType::Pull),
    ] {
        let ((rs, _), (rc, _)) = run(
            cfg(server_type, server_mechanism()),
            cfg(
                client_type,
                client_mechanism(client_keys(), server_keys().public()),
            ),
            100,
        );
        assert!(
            rs.is_ok() && rc.is_ok(),
            "{server_type} {client_type}: {rs:?} {rc:?}"
        );
    }
}

#[test]
fn the_greeting_must_name_curve_on_both_sides() {
    // A NULL or PLAIN client cannot downgrade a CURVE server, nor a NULL
    // server a CURVE client.
    let cases = [
        (
            cfg(SocketType::Pull, server_mechanism()),
            cfg(SocketType::Push, Mechanism::Null),
        ),
        (
            cfg(SocketType::Pull, server_mechanism()),
            cfg(
                SocketType::Push,
                Mechanism::PlainClient {
                    username: "u".into(),
                    password: "p".into(),
                },
            ),
        ),
        (
            cfg(SocketType::Pull, Mechanism::Null),
            cfg(
                SocketType::Push,
                client_mechanism(client_keys(), server_keys().public()),
            ),
        ),
    ];
    for (a, b) in cases {
        let ((ra, _), (rb, _)) = run(a, b, 100);
        assert_eq!(reason(&ra), "mechanism", "{ra:?}");
        assert_eq!(reason(&rb), "mechanism", "{rb:?}");
    }
    // A ZMTP 2.0 greeting (no mechanism field) is refused outright.
    let mut out = BytesMut::new();
    let mut hs = Handshake::start(cfg(SocketType::Pull, server_mechanism()), &mut out);
    let mut input = BytesMut::from(&[0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F, 1, 5][..]);
    assert_eq!(
        hs.advance(&mut input, &mut out).unwrap_err().reason(),
        "version"
    );
}

#[test]
fn a_client_with_another_server_key_fails_at_hello() {
    let ((rs, _), (rc, _)) = run(
        cfg(SocketType::Pull, server_mechanism()),
        cfg(
            SocketType::Push,
            client_mechanism(client_keys(), pair(0x99).public()),
        ),
        100,
    );
    assert_eq!(reason(&rs), "curve_wrong_server_key");
    // The server said nothing; the client is left waiting for WELCOME.
    assert!(rc.is_err());
}

#[test]
fn an_unknown_client_key_is_refused_with_error_400() {
    let stranger = pair(0x77);
    let ((rs, _), (rc, _)) = run(
        cfg(SocketType::Pull, server_mechanism()),
        cfg(
            SocketType::Push,
            client_mechanism(stranger.clone(), server_keys().public()),
        ),
        100,
    );
    match &rs {
        Err(HandshakeError::Curve(CurveError::UnknownClient(k))) => {
            assert_eq!(*k, stranger.public());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(reason(&rs), "curve_unknown_client");
    match rc {
        Err(HandshakeError::PeerError { reason }) => assert_eq!(reason, "400"),
        other => panic!("{other:?}"),
    }
}

/// The body of the one command frame at the front of `out`.
fn take_body(out: &mut BytesMut) -> Bytes {
    decode_command_body(out, 1 << 20)
        .expect("a command frame")
        .expect("a whole command frame")
}

/// A CURVE client built from the module's pieces, each step overridable,
/// to break exactly one thing in what it sends.
struct Forger {
    keys: Arc<CurveKeypair>,
    server: CurvePublicKey,
    transient: CurveKeypair,
    hello_nonce: u64,
}

/// What the forged INITIATE gets wrong.
#[derive(Default, Clone)]
struct Forgery {
    initiate_nonce: Option<u64>,
    /// Seal the vouch with this secret instead of ours.
    vouch_signer: Option<Arc<CurveKeypair>>,
    vouch_transient: Option<CurvePublicKey>,
    vouch_server: Option<CurvePublicKey>,
    /// Claim this long-term key.
    claimed: Option<CurvePublicKey>,
    metadata: Option<Vec<u8>>,
    truncate_to: Option<usize>,
}

impl Forger {
    fn new(keys: Arc<CurveKeypair>, server: CurvePublicKey) -> Self {
        Forger {
            keys,
            server,
            transient: CurveKeypair::from_secret_bytes(*random::<32>().expect("rng")),
            hello_nonce: 1,
        }
    }

    fn hello(&self) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.put_slice(HELLO_NAME);
        out.put_slice(&[1, 0]);
        out.put_bytes(0, 72);
        out.put_slice(self.transient.public().as_bytes());
        out.put_u64(self.hello_nonce);
        seal_into(
            &salsa_box(&self.server, self.transient.secret()),
            &short_nonce(HELLO_PREFIX, self.hello_nonce),
            &[0u8; 64],
            &mut out,
        );
        out.to_vec()
    }

    /// Opens WELCOME: the server's transient key and the cookie.
    fn welcome(&self, welcome: &[u8]) -> (CurvePublicKey, Vec<u8>) {
        let text = open(
            &salsa_box(&self.server, self.transient.secret()),
            &nonce(WELCOME_PREFIX, &welcome[8..24]),
            &welcome[24..],
        )
        .expect("WELCOME opens");
        let mut s = [0u8; 32];
        s.copy_from_slice(&text[..32]);
        (CurvePublicKey::from_bytes(s), text[32..128].to_vec())
    }

    fn initiate(&self, s_prime: &CurvePublicKey, cookie: &[u8], f: &Forgery) -> Vec<u8> {
        let signer = f.vouch_signer.clone().unwrap_or_else(|| self.keys.clone());
        let mut vouch_text = [0u8; 64];
        vouch_text[..32].copy_from_slice(
            f.vouch_transient
                .unwrap_or(self.transient.public())
                .as_bytes(),
        );
        vouch_text[32..].copy_from_slice(f.vouch_server.unwrap_or(self.server).as_bytes());
        let vouch_nonce = [7u8; 16];
        let mut text = BytesMut::new();
        text.put_slice(f.claimed.unwrap_or(self.keys.public()).as_bytes());
        text.put_slice(&vouch_nonce);
        seal_into(
            &salsa_box(s_prime, signer.secret()),
            &nonce(VOUCH_PREFIX, &vouch_nonce),
            &vouch_text,
            &mut text,
        );
        match &f.metadata {
            Some(m) => text.put_slice(m),
            None => text.put_slice(b"\x0bSocket-Type\x00\x00\x00\x04PUSH"),
        }
        let n = f.initiate_nonce.unwrap_or(self.hello_nonce + 1);
        let mut out = BytesMut::new();
        out.put_slice(INITIATE_NAME);
        out.put_slice(cookie);
        out.put_u64(n);
        seal_into(
            &salsa_box(s_prime, self.transient.secret()),
            &short_nonce(INITIATE_PREFIX, n),
            &text,
            &mut out,
        );
        let mut out = out.to_vec();
        if let Some(len) = f.truncate_to {
            out.truncate(len);
        }
        out
    }
}

fn server() -> Server {
    Server::new(server_keys(), clients())
}

/// HELLO and WELCOME between a fresh server and a forger; returns them
/// ready for INITIATE.
fn up_to_welcome() -> (Server, Forger, CurvePublicKey, Vec<u8>) {
    let mut s = server();
    let forger = Forger::new(client_keys(), server_keys().public());
    let mut out = BytesMut::new();
    s.hello(&forger.hello(), &mut out).expect("HELLO accepted");
    let welcome = take_body(&mut out);
    assert_eq!(welcome.len(), WELCOME_LEN);
    let (s_prime, cookie) = forger.welcome(&welcome);
    (s, forger, s_prime, cookie)
}

fn initiate_with(f: Forgery) -> Result<(String, Bytes), CurveError> {
    let (mut s, forger, s_prime, cookie) = up_to_welcome();
    s.initiate(&forger.initiate(&s_prime, &cookie, &f))
}

#[test]
fn the_forger_itself_is_accepted() {
    let (name, metadata) = initiate_with(Forgery::default()).expect("accepted");
    assert_eq!(name, "edge-7");
    assert_eq!(&metadata[..], b"\x0bSocket-Type\x00\x00\x00\x04PUSH");
}

#[test]
fn hello_of_the_wrong_size_version_or_padding_is_refused() {
    let forger = Forger::new(client_keys(), server_keys().public());
    let good = forger.hello();
    let mut short = good.clone();
    short.pop();
    let mut long = good.clone();
    long.push(0);
    let mut padded = good.clone();
    padded[40] = 1;
    let mut version = good.clone();
    version[6] = 2;
    for (hello, detail) in [
        (short, "not 200 bytes"),
        (long, "not 200 bytes"),
        (Vec::from(&good[..6]), "not 200 bytes"),
        (padded, "padding is not 72 zero bytes"),
        (version, "version is not 1.0"),
    ] {
        let err = server().hello(&hello, &mut BytesMut::new()).unwrap_err();
        assert_eq!(err, CurveError::BadHello(detail));
        assert_eq!(err.reason(), "curve_bad_hello");
    }
    // A flipped bit in the signature box: it no longer opens.
    let mut flipped = good.clone();
    flipped[150] ^= 1;
    assert_eq!(
        server().hello(&flipped, &mut BytesMut::new()),
        Err(CurveError::WrongServerKey)
    );
}

#[test]
fn a_cookie_from_another_connection_is_refused() {
    // One client HELLO answered by two connections of the same server: the
    // INITIATE made from the second one's cookie is sent to the first.
    let forger = Forger::new(client_keys(), server_keys().public());
    let (mut first, mut second) = (server(), server());
    let (mut out1, mut out2) = (BytesMut::new(), BytesMut::new());
    first.hello(&forger.hello(), &mut out1).expect("first");
    second.hello(&forger.hello(), &mut out2).expect("second");
    let (s_prime, cookie) = forger.welcome(&take_body(&mut out2));
    let initiate = forger.initiate(&s_prime, &cookie, &Forgery::default());
    let err = first.initiate(&initiate).unwrap_err();
    assert_eq!(err, CurveError::BadCookie);
    assert_eq!(err.reason(), "curve_bad_cookie");

    // A cookie with one bit flipped does not open either.
    let (mut s, forger, s_prime, mut cookie) = up_to_welcome();
    cookie[50] ^= 1;
    let initiate = forger.initiate(&s_prime, &cookie, &Forgery::default());
    assert_eq!(s.initiate(&initiate), Err(CurveError::BadCookie));
}

#[test]
fn initiate_too_short_or_with_broken_lengths_is_refused() {
    for len in [0, 9, 100, 256] {
        let err = initiate_with(Forgery {
            truncate_to: Some(len),
            ..Forgery::default()
        })
        .unwrap_err();
        assert_eq!(
            err,
            CurveError::BadInitiate("shorter than 257 bytes"),
            "{len}"
        );
        assert_eq!(err.reason(), "curve_bad_initiate");
    }
    // Cut inside the box: it no longer opens.
    let err = initiate_with(Forgery {
        truncate_to: Some(270),
        ..Forgery::default()
    })
    .unwrap_err();
    assert_eq!(err, CurveError::BadInitiate("box does not open"));
}

#[test]
fn metadata_lengths_beyond_the_box_are_refused_through_the_handshake() {
    // A property value length of 2^32 - 1 inside a valid INITIATE box.
    let f = Forgery {
        metadata: Some(b"\x0bSocket-Type\xff\xff\xff\xffPUSH".to_vec()),
        ..Forgery::default()
    };
    let got = server_against(|forger, s_prime, cookie| forger.initiate(s_prime, cookie, &f));
    assert_eq!(reason(&got.0), "malformed_ready");
}

#[test]
fn a_vouch_that_does_not_open_or_names_other_keys_is_refused() {
    let cases = [
        (
            Forgery {
                vouch_signer: Some(pair(0x42)),
                ..Forgery::default()
            },
            CurveError::BadVouch("does not open with the client's key"),
        ),
        (
            // Claiming another allowed client's key without its secret.
            Forgery {
                claimed: Some(pair(0xC2).public()),
                ..Forgery::default()
            },
            CurveError::BadVouch("does not open with the client's key"),
        ),
        (
            Forgery {
                vouch_transient: Some(pair(0x43).public()),
                ..Forgery::default()
            },
            CurveError::BadVouch("names another transient key"),
        ),
        (
            Forgery {
                vouch_server: Some(pair(0x44).public()),
                ..Forgery::default()
            },
            CurveError::BadVouch("names another server key"),
        ),
    ];
    for (f, want) in cases {
        let err = initiate_with(f).unwrap_err();
        assert_eq!(err, want);
        assert_eq!(err.reason(), "curve_bad_vouch");
    }
}

#[test]
fn a_key_outside_the_allowed_set_is_refused() {
    let mut s = server();
    let stranger = Forger::new(pair(0x66), server_keys().public());
    let mut out = BytesMut::new();
    s.hello(&stranger.hello(), &mut out).expect("HELLO");
    let (s_prime, cookie) = stranger.welcome(&take_body(&mut out));
    let err = s
        .initiate(&stranger.initiate(&s_prime, &cookie, &Forgery::default()))
        .unwrap_err();
    assert_eq!(err, CurveError::UnknownClient(pair(0x66).public()));
    assert_eq!(err.reason(), "curve_unknown_client");
    assert!(
        s.ready(b"", &mut BytesMut::new()).is_none(),
        "no READY after a refusal"
    );
}

#[test]
fn short_nonces_must_increase() {
    for n in [0, 1] {
        let err = initiate_with(Forgery {
            initiate_nonce: Some(n),
            ..Forgery::default()
        })
        .unwrap_err();
        assert_eq!(err, CurveError::Replay, "{n}");
        assert_eq!(err.reason(), "curve_replay");
    }
    // Any larger nonce is fine.
    assert!(
        initiate_with(Forgery {
            initiate_nonce: Some(1000),
            ..Forgery::default()
        })
        .is_ok()
    );
}

#[test]
fn a_replayed_initiate_is_refused() {
    // Captured on one connection, replayed on another: the cookie is the
    // first connection's.
    let (mut s, forger, s_prime, cookie) = up_to_welcome();
    let initiate = forger.initiate(&s_prime, &cookie, &Forgery::default());
    s.initiate(&initiate).expect("first time");
    let mut replay_target = server();
    let mut out = BytesMut::new();
    replay_target
        .hello(&forger.hello(), &mut out)
        .expect("replayed HELLO");
    assert_eq!(
        replay_target.initiate(&initiate),
        Err(CurveError::BadCookie)
    );
    // Sent twice on the same connection: out of order.
    assert!(matches!(
        s.initiate(&initiate),
        Err(CurveError::BadInitiate(_))
    ));
}

/// Runs a whole server [`Handshake`] against a forger whose INITIATE
/// `make_initiate` builds; returns the outcome and what the server sent.
fn server_against(
    make_initiate: impl Fn(&Forger, &CurvePublicKey, &[u8]) -> Vec<u8>,
) -> (Outcome, BytesMut) {
    let forger = Forger::new(client_keys(), server_keys().public());
    let mut out = BytesMut::new();
    let mut hs = Handshake::start(cfg(SocketType::Pull, server_mechanism()), &mut out);
    out.clear();
    let mut input = BytesMut::new();
    Greeting::ours(MechanismName::CURVE, false).encode(&mut input);
    frame(&forger.hello(), &mut input);
    assert!(hs.advance(&mut input, &mut out).expect("HELLO").is_none());
    let welcome = take_body(&mut out);
    let (s_prime, cookie) = forger.welcome(&welcome);
    frame(&make_initiate(&forger, &s_prime, &cookie), &mut input);
    let outcome = match hs.advance(&mut input, &mut out) {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(HandshakeError::Finished),
        Err(e) => Err(e),
    };
    (outcome, out)
}

fn frame(body: &[u8], out: &mut BytesMut) {
    crate::zmtp::frame::encode_command_header(body.len(), out);
    out.put_slice(body);
}

#[test]
fn server_failures_through_the_handshake_are_counted_by_reason() {
    let (ok, mut out) = server_against(|f, s, c| f.initiate(s, c, &Forgery::default()));
    assert_eq!(ok.expect("accepted").user.as_deref(), Some("edge-7"));
    assert!(take_body(&mut out).starts_with(READY_NAME));

    let (refused, mut out) = server_against(|f, s, c| {
        f.initiate(
            s,
            c,
            &Forgery {
                initiate_nonce: Some(1),
                ..Forgery::default()
            },
        )
    });
    assert_eq!(reason(&refused), "curve_replay");
    assert!(
        out.is_empty(),
        "no answer to a replay: {:?}",
        take_body(&mut out)
    );

    // A PLAIN HELLO on a CURVE connection is a malformed CURVE HELLO.
    let mut out = BytesMut::new();
    let mut hs = Handshake::start(cfg(SocketType::Pull, server_mechanism()), &mut out);
    let mut input = BytesMut::new();
    Greeting::ours(MechanismName::CURVE, false).encode(&mut input);
    encode_command(
        &Command::Hello {
            username: Bytes::from_static(b"u"),
            password: Bytes::from_static(b"p"),
        },
        &mut input,
    );
    assert_eq!(
        hs.advance(&mut input, &mut out).unwrap_err().reason(),
        "curve_bad_hello"
    );

    // A command of 2^40 bytes is refused from its header.
    let mut out = BytesMut::new();
    let mut hs = Handshake::start(cfg(SocketType::Pull, server_mechanism()), &mut out);
    let mut input = BytesMut::new();
    Greeting::ours(MechanismName::CURVE, false).encode(&mut input);
    input.put_u8(0x06);
    input.put_u64(1 << 40);
    assert_eq!(
        hs.advance(&mut input, &mut out).unwrap_err().reason(),
        "command_too_large"
    );

    // INITIATE before HELLO, READY to a server: unexpected.
    let mut out = BytesMut::new();
    let mut hs = Handshake::start(cfg(SocketType::Pull, server_mechanism()), &mut out);
    let mut input = BytesMut::new();
    Greeting::ours(MechanismName::CURVE, false).encode(&mut input);
    encode_command(&Command::Ready(Properties::new()), &mut input);
    assert_eq!(
        hs.advance(&mut input, &mut out).unwrap_err().reason(),
        "unexpected_command"
    );
}

#[test]
fn client_checks_welcome_and_ready() {
    let start = || {
        let mut out = BytesMut::new();
        let c = Client::start(client_keys(), server_keys().public(), &mut out).expect("start");
        (c, take_body(&mut out))
    };
    let (mut c, hello) = start();
    assert_eq!(hello.len(), HELLO_LEN);
    assert_eq!(
        c.welcome(&[0u8; 100], b"", &mut BytesMut::new()),
        Err(CurveError::BadWelcome("not 168 bytes"))
    );
    // A WELCOME from a server with another long-term key does not open.
    let (mut c, hello) = start();
    let mut impostor = Server::new(pair(0x13), clients());
    let err = impostor.hello(&hello, &mut BytesMut::new()).unwrap_err();
    assert_eq!(err, CurveError::WrongServerKey);
    let mut real = server();
    let mut out = BytesMut::new();
    real.hello(&hello, &mut out).expect("HELLO");
    let mut welcome = take_body(&mut out).to_vec();
    welcome[100] ^= 1;
    let err = c.welcome(&welcome, b"", &mut BytesMut::new()).unwrap_err();
    assert_eq!(err.reason(), "curve_bad_welcome");

    // A READY that is short or tampered with.
    let until_ready = || {
        let (mut c, hello) = start();
        let mut s = server();
        let mut out = BytesMut::new();
        s.hello(&hello, &mut out).expect("HELLO");
        let welcome = take_body(&mut out);
        let mut out = BytesMut::new();
        c.welcome(&welcome, b"\x0bSocket-Type\x00\x00\x00\x04PUSH", &mut out)
            .expect("WELCOME");
        let (name, _) = s.initiate(&take_body(&mut out)).expect("INITIATE");
        assert_eq!(name, "edge-7");
        let mut out = BytesMut::new();
        s.ready(b"\x0bSocket-Type\x00\x00\x00\x04PULL", &mut out)
            .expect("session");
        (c, take_body(&mut out).to_vec())
    };
    let (mut c, ready) = until_ready();
    assert_eq!(
        c.ready(&ready[..29]).map(|_| ()),
        Err(CurveError::BadReady("shorter than 30 bytes"))
    );
    let (mut c, mut ready) = until_ready();
    ready[20] ^= 1;
    assert_eq!(
        c.ready(&ready).map(|_| ()),
        Err(CurveError::BadReady("box does not open"))
    );
    let (mut c, ready) = until_ready();
    let (metadata, _session) = c.ready(&ready).expect("READY");
    assert_eq!(&metadata[..], b"\x0bSocket-Type\x00\x00\x00\x04PULL");
}

#[test]
fn debug_never_prints_secret_keys() {
    let keys = CurveKeypair::from_secret_bytes([0xAB; 32]);
    let secret = keys.secret_z85();
    for m in [
        Mechanism::CurveServer {
            keys: Arc::new(keys.clone()),
            clients: clients(),
        },
        Mechanism::CurveClient {
            keys: Arc::new(keys.clone()),
            server_key: server_keys().public(),
        },
    ] {
        let shown = format!("{m:?}");
        assert!(!shown.contains(secret.as_str()), "{shown}");
        assert!(shown.contains(&keys.public().to_z85()), "{shown}");
    }
}

#[test]
fn every_reason_is_listed() {
    let errors = [
        CurveError::BadHello(""),
        CurveError::WrongServerKey,
        CurveError::BadInitiate(""),
        CurveError::BadCookie,
        CurveError::BadVouch(""),
        CurveError::UnknownClient(pair(1).public()),
        CurveError::Replay,
        CurveError::BadWelcome(""),
        CurveError::BadReady(""),
        CurveError::Rng,
    ];
    let got: Vec<_> = errors.iter().map(CurveError::reason).collect();
    assert_eq!(got, CurveError::REASONS);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Arbitrary bytes after a valid greeting, and after a valid HELLO,
    /// never panic a CURVE server and never make it answer with more than
    /// a WELCOME and an ERROR.
    #[test]
    fn arbitrary_bytes_never_panic_a_curve_server(
        after_hello in any::<bool>(),
        junk in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let forger = Forger::new(client_keys(), server_keys().public());
        let mut out = BytesMut::new();
        let mut hs = Handshake::start(cfg(SocketType::Pull, server_mechanism()), &mut out);
        let mut input = BytesMut::new();
        Greeting::ours(MechanismName::CURVE, false).encode(&mut input);
        if after_hello {
            frame(&forger.hello(), &mut input);
        }
        input.extend_from_slice(&junk);
        let _ = hs.advance(&mut input, &mut out);
        prop_assert!(out.len() <= 64 + 2 + WELCOME_LEN + 9 + 300);
    }

    /// Arbitrary command bodies as INITIATE never panic the server.
    #[test]
    fn arbitrary_initiate_bodies_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let (mut s, _, _, _) = up_to_welcome();
        let mut b = INITIATE_NAME.to_vec();
        b.extend_from_slice(&body);
        prop_assert!(s.initiate(&b).is_err());
    }
}
