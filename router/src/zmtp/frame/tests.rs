//! Unit tests for the frame decoder and encoders, including the hostile
//! cases: huge declared lengths, millions of empty frames, commands inside
//! messages, truncation at every offset; the property tests are in
//! `proptests`.

mod proptests;

use super::*;

fn small_limits() -> Limits {
    Limits {
        max_frame_size: 1000,
        max_message_size: 1500,
        max_frames: 4,
        max_command_size: 100,
    }
}

fn msg(frames: &[&'static [u8]]) -> Inbound {
    Inbound::Message(frames.iter().map(|f| Bytes::from_static(f)).collect())
}

fn encoded(frames: &[&'static [u8]]) -> BytesMut {
    let frames: Vec<Bytes> = frames.iter().map(|f| Bytes::from_static(f)).collect();
    let mut out = BytesMut::new();
    encode_message(&frames, &mut out);
    out
}

#[test]
fn single_and_multipart_messages() {
    let mut d = Decoder::new(Limits::default());
    let mut buf = encoded(&[b"hello"]);
    assert_eq!(&buf[..], b"\x00\x05hello");
    buf.extend_from_slice(&encoded(&[b"a", b"", b"c"]));
    assert_eq!(d.decode(&mut buf).unwrap(), Some(msg(&[b"hello"])));
    assert_eq!(d.wanted(), 0);
    assert_eq!(d.decode(&mut buf).unwrap(), Some(msg(&[b"a", b"", b"c"])));
    assert_eq!(d.decode(&mut buf).unwrap(), None);
    assert_eq!(d.wanted(), 2);
    assert!(buf.is_empty());
}

#[test]
fn long_frames_and_short_long_frames() {
    let body = vec![7u8; 300];
    let mut buf = BytesMut::new();
    encode_message(&[Bytes::from(body.clone())], &mut buf);
    assert_eq!(&buf[..9], &[FLAG_LONG, 0, 0, 0, 0, 0, 0, 1, 44]);
    // A long header for a 3-byte body is tolerated, as libzmq does.
    buf.extend_from_slice(&[FLAG_LONG, 0, 0, 0, 0, 0, 0, 0, 3, b'x', b'y', b'z']);
    let mut d = Decoder::new(Limits::default());
    let Some(Inbound::Message(m)) = d.decode(&mut buf).unwrap() else {
        panic!("no message");
    };
    assert_eq!(&m[0][..], &body[..]);
    assert_eq!(d.decode(&mut buf).unwrap(), Some(msg(&[b"xyz"])));
}

#[test]
fn reserved_flag_bits_are_ignored() {
    let mut buf = BytesMut::from(&[0xF8 | FLAG_MORE, 1, b'a', 0xF8, 1, b'b'][..]);
    let mut d = Decoder::new(Limits::default());
    assert_eq!(d.decode(&mut buf).unwrap(), Some(msg(&[b"a", b"b"])));
}

#[test]
fn truncated_input_returns_none_at_every_offset() {
    let mut whole = encoded(&[b"first", &[9u8; 300]]);
    encode_command(
        &Command::Ping {
            ttl_deciseconds: 1,
            context: Bytes::new(),
        },
        &mut whole,
    );
    for cut in 0..whole.len() {
        let mut d = Decoder::new(Limits::default());
        let mut buf = BytesMut::from(&whole[..cut]);
        let mut out = Vec::new();
        while let Some(item) = d.decode(&mut buf).unwrap() {
            out.push(item);
        }
        assert!(d.wanted() >= 1, "cut {cut}");
        // Feeding exactly `wanted` more bytes always makes progress or asks again.
        let mut fed = cut;
        loop {
            let n = d.wanted().min(whole.len() - fed);
            buf.extend_from_slice(&whole[fed..fed + n]);
            fed += n;
            while let Some(item) = d.decode(&mut buf).unwrap() {
                out.push(item);
            }
            if fed == whole.len() {
                break;
            }
        }
        assert_eq!(out.len(), 2, "cut {cut}");
    }
}

#[test]
fn huge_declared_lengths_are_refused_from_the_header_alone() {
    for size in [1u64 << 40, u64::MAX, 1001] {
        let mut buf = BytesMut::with_capacity(16);
        buf.put_u8(FLAG_LONG);
        buf.put_u64(size);
        let cap = buf.capacity();
        let err = Decoder::new(small_limits()).decode(&mut buf).unwrap_err();
        assert_eq!(err, ProtocolError::FrameTooLarge { size, max: 1000 });
        assert_eq!(err.reason(), "frame_too_large");
        assert_eq!(buf.capacity(), cap, "nothing reserved");

        let mut buf = BytesMut::new();
        buf.put_u8(FLAG_LONG | FLAG_COMMAND);
        buf.put_u64(size);
        let err = Decoder::new(small_limits()).decode(&mut buf).unwrap_err();
        assert_eq!(err, ProtocolError::CommandTooLarge { size, max: 100 });
    }
    // Same through the default limits.
    let mut buf = BytesMut::from(&[FLAG_LONG | FLAG_MORE, 0, 0, 1, 0, 0, 0, 0, 0][..]);
    assert!(matches!(
        Decoder::new(Limits::default()).decode(&mut buf),
        Err(ProtocolError::FrameTooLarge { size, .. }) if size == 1 << 40
    ));
}

#[test]
fn five_million_empty_more_frames_hit_max_frames() {
    let mut buf = BytesMut::with_capacity(10_000_000);
    for _ in 0..5_000_000 {
        buf.put_slice(&[FLAG_MORE, 0]);
    }
    let mut d = Decoder::new(Limits::default());
    let err = d.decode(&mut buf).unwrap_err();
    assert_eq!(err, ProtocolError::TooManyFrames { max: 64 });
    assert_eq!(err.reason(), "too_many_frames");
    assert_eq!(d.pending_frames(), 64);
    assert_eq!(buf.len(), 10_000_000 - 64 * 2);
}

#[test]
fn max_frames_allows_exactly_the_limit() {
    let mut d = Decoder::new(small_limits());
    let mut buf = encoded(&[b"1", b"2", b"3", b"4"]);
    assert!(matches!(d.decode(&mut buf), Ok(Some(Inbound::Message(m))) if m.len() == 4));
    let mut buf = encoded(&[b"1", b"2", b"3", b"4", b"5"]);
    assert_eq!(
        d.decode(&mut buf),
        Err(ProtocolError::TooManyFrames { max: 4 })
    );
}

#[test]
fn message_size_is_the_sum_of_frames() {
    let mut d = Decoder::new(small_limits());
    let mut buf = BytesMut::new();
    encode_frame_header(true, 1000, &mut buf);
    buf.put_bytes(1, 1000);
    encode_frame_header(false, 501, &mut buf);
    let err = d.decode(&mut buf).unwrap_err();
    assert_eq!(
        err,
        ProtocolError::MessageTooLarge {
            size: 1501,
            max: 1500
        }
    );
    assert_eq!(err.reason(), "message_too_large");
    // 1000 + 500 fits exactly.
    let mut d = Decoder::new(small_limits());
    let mut buf = BytesMut::new();
    encode_frame_header(true, 1000, &mut buf);
    buf.put_bytes(1, 1000);
    encode_frame_header(false, 500, &mut buf);
    buf.put_bytes(2, 500);
    assert!(d.decode(&mut buf).unwrap().is_some());
}

#[test]
fn commands_in_traffic() {
    let mut buf = BytesMut::new();
    encode_command(&Command::Subscribe(Bytes::from_static(b"t")), &mut buf);
    buf.extend_from_slice(&encoded(&[b"m"]));
    encode_command(
        &Command::Unknown {
            name: Bytes::from_static(b"JOIN"),
        },
        &mut buf,
    );
    let mut d = Decoder::new(small_limits());
    assert_eq!(
        d.decode(&mut buf).unwrap(),
        Some(Inbound::Command(Command::Subscribe(Bytes::from_static(
            b"t"
        ))))
    );
    assert_eq!(d.decode(&mut buf).unwrap(), Some(msg(&[b"m"])));
    assert!(matches!(
        d.decode(&mut buf).unwrap(),
        Some(Inbound::Command(Command::Unknown { .. }))
    ));
}

#[test]
fn command_inside_a_message_is_an_error() {
    let mut buf = BytesMut::from(&[FLAG_MORE, 1, b'a'][..]);
    encode_command(
        &Command::Pong {
            context: Bytes::new(),
        },
        &mut buf,
    );
    let err = Decoder::new(small_limits()).decode(&mut buf).unwrap_err();
    assert_eq!(err, ProtocolError::CommandInsideMessage);
    assert_eq!(err.reason(), "command_inside_message");
}

#[test]
fn command_with_more_flag_is_an_error() {
    let mut buf = BytesMut::from(&[FLAG_COMMAND | FLAG_MORE, 0][..]);
    let err = Decoder::new(small_limits()).decode(&mut buf).unwrap_err();
    assert_eq!(err.reason(), "malformed_frame");
}

#[test]
fn malformed_command_in_traffic_is_an_error() {
    let mut buf = BytesMut::from(&b"\x04\x08\x05READY\x01a"[..]);
    let err = Decoder::new(small_limits()).decode(&mut buf).unwrap_err();
    assert_eq!(err.reason(), "malformed_command");
}

#[test]
fn bodies_are_split_off_the_input_without_copying() {
    let mut buf = encoded(&[b"0123456789", b"abcdef"]);
    let range = buf.as_ptr_range();
    let Some(Inbound::Message(m)) = Decoder::new(Limits::default()).decode(&mut buf).unwrap()
    else {
        panic!("no message");
    };
    assert!(m.iter().all(|f| range.contains(&f.as_ptr())));
    assert!(!m.spilled());
}

#[test]
fn decode_command_refuses_message_frames_from_the_header() {
    let mut buf = BytesMut::new();
    assert_eq!(decode_command(&mut buf, 100), Ok(None));
    let mut buf = BytesMut::from(&[0u8][..]);
    assert_eq!(
        decode_command(&mut buf, 100),
        Err(ProtocolError::ExpectedCommand)
    );
    let mut buf = BytesMut::from(&[FLAG_LONG, 0xff][..]);
    assert_eq!(
        decode_command(&mut buf, 100),
        Err(ProtocolError::ExpectedCommand)
    );
    let mut buf = BytesMut::from(&[FLAG_COMMAND | FLAG_LONG, 0xff, 0xff][..]);
    assert_eq!(decode_command(&mut buf, 100), Ok(None));
    buf.put_bytes(0xff, 6);
    assert!(matches!(
        decode_command(&mut buf, 100),
        Err(ProtocolError::CommandTooLarge { size: u64::MAX, .. })
    ));
    let mut buf = BytesMut::new();
    encode_command(&Command::Welcome, &mut buf);
    buf.put_u8(0);
    assert_eq!(decode_command(&mut buf, 100), Ok(Some(Command::Welcome)));
    assert_eq!(&buf[..], &[0]);
}

/// Micro-benchmark, not a test: prints decode and encode rates for the
/// hot path (64-byte one- and two-frame messages). Run with
/// `cargo test -p switchyard --release --lib zmtp::frame::tests::throughput
/// -- --ignored --nocapture`.
#[test]
#[ignore = "micro-benchmark; run explicitly in release mode"]
fn throughput() {
    const N: usize = 2_000_000;
    for (label, frames) in [
        ("1 x 64 B", vec![Bytes::from(vec![7u8; 64])]),
        (
            "2 x 32 B",
            vec![Bytes::from(vec![1u8; 32]), Bytes::from(vec![2u8; 32])],
        ),
    ] {
        let start = std::time::Instant::now();
        let mut wire = BytesMut::with_capacity(N * 70);
        for _ in 0..N {
            encode_message(&frames, &mut wire);
        }
        let encode = start.elapsed();
        let wire = wire.freeze();
        let mut d = Decoder::new(Limits::default());
        let start = std::time::Instant::now();
        let mut count = 0usize;
        // Feed 64 KiB reads into one read buffer, as a socket would.
        let mut buf = BytesMut::with_capacity(128 * 1024);
        for chunk in wire.chunks(64 * 1024) {
            buf.extend_from_slice(chunk);
            while let Ok(Some(m)) = d.decode(&mut buf) {
                count += 1;
                drop(m);
            }
        }
        let decode = start.elapsed();
        assert_eq!(count, N);
        println!(
            "{label}: encode {:.1} M msg/s, decode {:.1} M msg/s (incl. 64 KiB chunk copies)",
            N as f64 / encode.as_secs_f64() / 1e6,
            N as f64 / decode.as_secs_f64() / 1e6,
        );
    }
}

#[test]
fn encoders_pick_short_or_long_headers() {
    let mut out = BytesMut::new();
    encode_frame_header(true, 255, &mut out);
    assert_eq!(&out[..], &[FLAG_MORE, 255]);
    out.clear();
    encode_frame_header(false, 256, &mut out);
    assert_eq!(&out[..], &[FLAG_LONG, 0, 0, 0, 0, 0, 0, 1, 0]);
    assert_eq!(header_len(255), 2);
    assert_eq!(header_len(256), 9);
    out.clear();
    encode_message(&[], &mut out);
    assert!(out.is_empty());
    encode_command(&Command::Welcome, &mut out);
    assert_eq!(&out[..], b"\x04\x08\x07WELCOME");
}
