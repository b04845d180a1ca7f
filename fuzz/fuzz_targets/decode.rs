//! Fuzz target: arbitrary bytes into the traffic-phase `Decoder` with small
//! limits, delivered in fuzzer-chosen chunks.
//!
//! Checks, beyond "no panic, no unbounded allocation": every decoded message
//! respects the limits, decoding does not depend on how the bytes were
//! chunked, and re-encoding what was decoded decodes to the same values.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use switchyard::zmtp::frame::{Decoder, Inbound, ProtocolError, encode_command, encode_message};
use switchyard::zmtp::limits::Limits;

fn limits(sel: &[u8]) -> Limits {
    let b = |i: usize| usize::from(sel.get(i).copied().unwrap_or(0));
    Limits {
        max_frame_size: b(0) * 4,
        max_message_size: b(1) * 8,
        max_frames: b(2) % 16,
        max_command_size: b(3) * 2,
    }
}

/// Decodes `wire` delivered in chunks of the given sizes (cycled).
fn run(limits: &Limits, wire: &[u8], chunks: &[u8]) -> (Vec<Inbound>, Option<ProtocolError>) {
    let mut d = Decoder::new(limits.clone());
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut sizes = chunks.iter().map(|&c| usize::from(c).max(1)).cycle();
    while pos < wire.len() {
        let n = sizes.next().unwrap_or(wire.len()).min(wire.len() - pos);
        buf.extend_from_slice(&wire[pos..pos + n]);
        pos += n;
        loop {
            match d.decode(&mut buf) {
                Ok(Some(item)) => out.push(item),
                Ok(None) => {
                    assert!(d.wanted() >= 1, "Ok(None) must ask for bytes");
                    break;
                }
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let (sel, rest) = data.split_at(4);
    let limits = limits(sel);
    let nchunks = usize::from(rest[0] % 8);
    let (chunks, wire) = rest[1..].split_at(nchunks.min(rest.len() - 1));

    let whole = run(&limits, wire, &[255]);
    let chunked = run(&limits, wire, if chunks.is_empty() { &[1] } else { chunks });
    assert_eq!(whole, chunked, "decoding depends on chunking");

    let (items, _) = whole;
    let mut again = BytesMut::new();
    for item in &items {
        match item {
            Inbound::Message(frames) => {
                assert!(!frames.is_empty());
                assert!(frames.len() <= limits.max_frames);
                assert!(frames.iter().all(|f| f.len() <= limits.max_frame_size));
                let total: usize = frames.iter().map(Bytes::len).sum();
                assert!(total <= limits.max_message_size);
                encode_message(frames, &mut again);
            }
            Inbound::Command(cmd) => {
                assert!(cmd.body_len() <= limits.max_command_size);
                encode_command(cmd, &mut again);
            }
        }
    }
    let (round_trip, err) = run(&limits, &again, &[255]);
    assert_eq!(err, None, "re-encoded output must decode");
    assert_eq!(round_trip, items, "re-encoding changed the values");
});
