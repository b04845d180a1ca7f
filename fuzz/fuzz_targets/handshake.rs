//! Fuzz target: arbitrary bytes into the `Handshake` as a NULL peer, a PLAIN
//! server, a PLAIN client, a CURVE server and a CURVE client, delivered in
//! two fuzzer-chosen pieces. Flag bits put a valid greeting and then valid
//! mechanism commands in front of the arbitrary bytes, so the fuzzer also
//! starts from every later state (and from the traffic phase after a
//! finished handshake). CURVE's valid commands come from a real CURVE
//! client handshake played against the server under test (its keys are
//! random, so a CURVE run is not byte-for-byte repeatable); after a
//! finished CURVE handshake the leftover goes to the CURVE decoder.
//!
//! Checks: no panic, bounded output, input consumed only in whole units, and
//! after a finished handshake the traffic decoder accepts the leftover bytes
//! without panicking.

#![no_main]

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use switchyard::zmtp::command::{Command, Properties};
use switchyard::zmtp::curve::{CurveDecoder, CurveKeypair};
use switchyard::zmtp::frame::{Decode, Decoder, encode_command};
use switchyard::zmtp::greeting::{Greeting, MechanismName};
use switchyard::zmtp::handshake::{Handshake, HandshakeConfig, Mechanism};
use switchyard::zmtp::limits::Limits;
use switchyard::zmtp::socket_type::SocketType;

fn config(sel: u8) -> (HandshakeConfig, MechanismName, bool) {
    let socket_type = SocketType::ALL[usize::from(sel >> 4) % SocketType::ALL.len()];
    let server = Arc::new(CurveKeypair::from_secret_bytes([0x51; 32]));
    let client = Arc::new(CurveKeypair::from_secret_bytes([0xC1; 32]));
    let (mechanism, name, peer_as_server) = match sel % 5 {
        0 => (Mechanism::Null, MechanismName::NULL, false),
        1 => {
            let mut users = HashMap::new();
            users.insert("admin".to_string(), "secret".to_string());
            (
                Mechanism::PlainServer {
                    credentials: Arc::new(users),
                },
                MechanismName::PLAIN,
                false,
            )
        }
        2 => (
            Mechanism::PlainClient {
                username: "admin".into(),
                password: "secret".into(),
            },
            MechanismName::PLAIN,
            true,
        ),
        3 => {
            let mut clients = HashMap::new();
            clients.insert(client.public(), "edge".to_string());
            (
                Mechanism::CurveServer {
                    keys: server,
                    clients: Arc::new(clients),
                },
                MechanismName::CURVE,
                false,
            )
        }
        _ => (
            Mechanism::CurveClient {
                keys: client,
                server_key: server.public(),
            },
            MechanismName::CURVE,
            true,
        ),
    };
    let limits = Limits {
        max_command_size: 512,
        ..Limits::default()
    };
    let cfg = HandshakeConfig {
        socket_type,
        identity: Bytes::from_static(b"fuzz"),
        mechanism,
        limits,
    };
    (cfg, name, peer_as_server)
}

/// What a well-behaved peer sends after its greeting.
fn valid_script(cfg: &HandshakeConfig) -> Vec<Command> {
    let peer_type = SocketType::ALL
        .into_iter()
        .find(|t| t.is_compatible_with(cfg.socket_type))
        .unwrap_or(SocketType::Pair);
    let mut props = Properties::new();
    props.push("Socket-Type", peer_type.as_str());
    props.push("Identity", "peer");
    match cfg.mechanism {
        Mechanism::Null => vec![Command::Ready(props)],
        Mechanism::PlainServer { .. } => vec![
            Command::Hello {
                username: Bytes::from_static(b"admin"),
                password: Bytes::from_static(b"secret"),
            },
            Command::Initiate(props),
        ],
        Mechanism::PlainClient { .. } => vec![Command::Welcome, Command::Ready(props)],
        // Boxed commands: see `curve_client_script`; a CURVE client's
        // server replies cannot be made without its transient key.
        Mechanism::CurveServer { .. } | Mechanism::CurveClient { .. } => vec![],
    }
}

/// For a CURVE server under test: plays a real CURVE client against it for
/// `steps` commands after the greeting (HELLO, then INITIATE), feeding the
/// server what the client sends; returns the server and its output so far.
fn curve_client_script(cfg: &HandshakeConfig, steps: usize) -> (Handshake, BytesMut) {
    let peer_type = SocketType::ALL
        .into_iter()
        .find(|t| t.is_compatible_with(cfg.socket_type))
        .unwrap_or(SocketType::Pair);
    let Mechanism::CurveServer { keys, .. } = &cfg.mechanism else {
        unreachable!("a CURVE server config");
    };
    let client_cfg = HandshakeConfig {
        socket_type: peer_type,
        identity: Bytes::from_static(b"peer"),
        mechanism: Mechanism::CurveClient {
            keys: Arc::new(CurveKeypair::from_secret_bytes([0xC1; 32])),
            server_key: keys.public(),
        },
        limits: cfg.limits.clone(),
    };
    let (mut c_out, mut s_out) = (BytesMut::new(), BytesMut::new());
    let mut client = Handshake::start(client_cfg, &mut c_out);
    let mut server = Handshake::start(cfg.clone(), &mut s_out);
    let mut fed = 0;
    let (mut c_in, mut s_in) = (BytesMut::new(), BytesMut::new());
    // Greetings both ways; then each round the client answers the server.
    for _ in 0..4 {
        c_in.extend_from_slice(&s_out.split());
        let _ = client.advance(&mut c_in, &mut c_out);
        if fed >= steps + 1 {
            break;
        }
        s_in.extend_from_slice(&c_out.split());
        fed += 1;
        let _ = server.advance(&mut s_in, &mut s_out);
    }
    (server, s_out)
}

fuzz_target!(|data: &[u8]| {
    let [sel, flags, split, rest @ ..] = data else {
        return;
    };
    let (cfg, mechanism, peer_as_server) = config(*sel);
    if matches!(cfg.mechanism, Mechanism::CurveServer { .. }) && flags & 1 != 0 {
        let steps = usize::from(flags >> 1 & 3).min(2);
        let limits = cfg.limits.clone();
        let (mut hs, mut out) = curve_client_script(&cfg, steps);
        let mut input = BytesMut::from(rest);
        let result = hs.advance(&mut input, &mut out);
        assert!(
            out.len() <= 64 + 4 * (9 + 600),
            "output grew to {}",
            out.len()
        );
        if let Err(e) = &result {
            assert!(!e.reason().is_empty());
        }
        if let Some(session) = hs.take_session() {
            let mut d = CurveDecoder::new(limits, session.opener);
            while let Ok(Some(_)) = d.decode(&mut input) {}
        }
        return;
    }
    let mut wire = BytesMut::new();
    if flags & 1 != 0 {
        Greeting::ours(mechanism, peer_as_server).encode(&mut wire);
        for cmd in valid_script(&cfg)
            .into_iter()
            .take(usize::from(flags >> 1 & 3))
        {
            encode_command(&cmd, &mut wire);
        }
    }
    wire.put_slice(rest);
    let split = usize::from(*split).min(wire.len());

    let mut out = BytesMut::new();
    let mut hs = Handshake::start(cfg, &mut out);
    let mut input = BytesMut::from(&wire[..split]);
    let mut result = hs.advance(&mut input, &mut out);
    if matches!(result, Ok(None)) {
        input.extend_from_slice(&wire[split..]);
        result = hs.advance(&mut input, &mut out);
    }
    // Greeting + at most a few commands, each bounded.
    assert!(
        out.len() <= 64 + 4 * (9 + 600),
        "output grew to {}",
        out.len()
    );
    if let Err(e) = &result {
        assert!(!e.reason().is_empty());
    }
    if let Ok(Some(_peer)) = result {
        let mut d = Decoder::new(Limits::default());
        while let Ok(Some(_)) = d.decode(&mut input) {}
    }
});
