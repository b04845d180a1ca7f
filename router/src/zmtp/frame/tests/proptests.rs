//! Property tests for the framing codec: encode/decode round-trips under any
//! chunking of the input, command round-trips, and no panic on any bytes.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use crate::zmtp::command::{Command, Properties};
use crate::zmtp::frame::{Decoder, Inbound, ProtocolError, encode_command, encode_message};
use crate::zmtp::limits::Limits;

fn frame() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..80),
        1 => proptest::collection::vec(any::<u8>(), 250..600),
    ]
    .prop_map(Bytes::from)
}

fn message() -> impl Strategy<Value = Vec<Bytes>> {
    proptest::collection::vec(frame(), 1..6)
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn properties() -> impl Strategy<Value = Properties> {
    proptest::collection::vec(
        (
            bytes(20).prop_filter("non-empty", |n| !n.is_empty()),
            bytes(40),
        ),
        0..4,
    )
    .prop_map(|pairs| {
        let mut p = Properties::new();
        for (n, v) in pairs {
            p.push(n, v);
        }
        p
    })
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        properties().prop_map(Command::Ready),
        properties().prop_map(Command::Initiate),
        bytes(255).prop_map(|reason| Command::Error { reason }),
        bytes(100).prop_map(Command::Subscribe),
        bytes(100).prop_map(Command::Cancel),
        (any::<u16>(), bytes(17)).prop_map(|(ttl_deciseconds, context)| Command::Ping {
            ttl_deciseconds,
            context
        }),
        bytes(16).prop_map(|context| Command::Pong { context }),
        (bytes(255), bytes(255))
            .prop_map(|(username, password)| Command::Hello { username, password }),
        Just(Command::Welcome),
        "[A-Z]{1,12}"
            .prop_filter("unknown name", |n| Command::parse(Bytes::from(format!(
                "{}{n}",
                char::from(u8::try_from(n.len()).unwrap_or(0))
            )))
            .is_ok_and(|c| matches!(c, Command::Unknown { .. })))
            .prop_map(|n| Command::Unknown {
                name: Bytes::from(n)
            }),
    ]
}

fn limits() -> Limits {
    Limits {
        max_frame_size: 4096,
        max_message_size: 8192,
        max_frames: 16,
        max_command_size: 4096,
    }
}

/// Feeds `wire` to a fresh decoder in chunks of the given sizes (cycled),
/// collecting everything decoded until the first error.
fn decode_chunked(wire: &[u8], chunks: &[usize]) -> (Vec<Inbound>, Option<ProtocolError>) {
    let mut d = Decoder::new(limits());
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut sizes = chunks.iter().cycle();
    while pos < wire.len() {
        let n = (*sizes.next().unwrap_or(&1)).clamp(1, wire.len() - pos);
        buf.extend_from_slice(&wire[pos..pos + n]);
        pos += n;
        loop {
            match d.decode(&mut buf) {
                Ok(Some(item)) => out.push(item),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

/// Pings longer than 16 bytes are truncated on decode.
fn normalised(cmd: Command) -> Command {
    match cmd {
        Command::Ping {
            ttl_deciseconds,
            mut context,
        } => {
            context.truncate(crate::zmtp::command::MAX_PING_CONTEXT);
            Command::Ping {
                ttl_deciseconds,
                context,
            }
        }
        other => other,
    }
}

proptest! {
    #[test]
    fn messages_round_trip_in_any_chunking(
        msgs in proptest::collection::vec(message(), 1..8),
        chunks in proptest::collection::vec(1usize..70, 1..10),
    ) {
        let mut wire = BytesMut::new();
        for m in &msgs {
            encode_message(m, &mut wire);
        }
        let (out, err) = decode_chunked(&wire, &chunks);
        prop_assert_eq!(err, None);
        let expected: Vec<Inbound> = msgs.into_iter().map(|m| Inbound::Message(m.into_iter().collect())).collect();
        prop_assert_eq!(out, expected);
    }

    #[test]
    fn commands_round_trip_between_messages(
        items in proptest::collection::vec(prop_oneof![
            message().prop_map(Ok),
            command().prop_map(Err),
        ], 1..8),
        chunks in proptest::collection::vec(1usize..70, 1..10),
    ) {
        let mut wire = BytesMut::new();
        let mut expected = Vec::new();
        for item in items {
            match item {
                Ok(m) => {
                    encode_message(&m, &mut wire);
                    expected.push(Inbound::Message(m.into_iter().collect()));
                }
                Err(c) => {
                    encode_command(&c, &mut wire);
                    expected.push(Inbound::Command(normalised(c)));
                }
            }
        }
        let (out, err) = decode_chunked(&wire, &chunks);
        prop_assert_eq!(err, None);
        prop_assert_eq!(out, expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_chunking_does_not_matter(
        wire in proptest::collection::vec(any::<u8>(), 0..2048),
        chunks in proptest::collection::vec(1usize..64, 1..10),
    ) {
        let whole = decode_chunked(&wire, &[wire.len().max(1)]);
        let chunked = decode_chunked(&wire, &chunks);
        prop_assert_eq!(whole, chunked);
    }

    #[test]
    fn arbitrary_frames_never_panic(
        frames in proptest::collection::vec((any::<u8>(), any::<u64>(), bytes(64)), 0..40),
    ) {
        // Structured garbage: random flags and (often huge) lengths.
        let mut wire = BytesMut::new();
        for (flags, len, body) in frames {
            wire.extend_from_slice(&[flags]);
            if flags & super::FLAG_LONG != 0 {
                wire.extend_from_slice(&len.to_be_bytes());
            } else {
                wire.extend_from_slice(&[len as u8]);
            }
            wire.extend_from_slice(&body);
        }
        let _ = decode_chunked(&wire, &[7]);
    }
}
