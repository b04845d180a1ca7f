//! Fuzz target: arbitrary bytes into the `Handshake` as a NULL peer, a PLAIN
//! server and a PLAIN client, delivered in two fuzzer-chosen pieces. Flag
//! bits put a valid greeting and then valid mechanism commands in front of
//! the arbitrary bytes, so the fuzzer also starts from every later state
//! (and from the traffic phase after a finished handshake).
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
use switchyard::zmtp::frame::{Decoder, encode_command};
use switchyard::zmtp::greeting::{Greeting, MechanismName};
use switchyard::zmtp::handshake::{Handshake, HandshakeConfig, Mechanism};
use switchyard::zmtp::limits::Limits;
use switchyard::zmtp::socket_type::SocketType;

fn config(sel: u8) -> (HandshakeConfig, MechanismName, bool) {
    let socket_type = SocketType::ALL[usize::from(sel >> 4) % SocketType::ALL.len()];
    let (mechanism, name, peer_as_server) = match sel % 3 {
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
        _ => (
            Mechanism::PlainClient {
                username: "admin".into(),
                password: "secret".into(),
            },
            MechanismName::PLAIN,
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
    }
}

fuzz_target!(|data: &[u8]| {
    let [sel, flags, split, rest @ ..] = data else {
        return;
    };
    let (cfg, mechanism, peer_as_server) = config(*sel);
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
