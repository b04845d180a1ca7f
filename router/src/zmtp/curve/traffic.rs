//! The CURVE traffic phase: every ZMTP frame, message or command, travels
//! as one MESSAGE (`\x07MESSAGE`, an 8-byte short nonce, then
//! `Box[flags + body]`), sealed with the key the handshake precomputed
//! once for the connection.
//!
//! Nonces strictly increase in each direction; a MESSAGE whose nonce does
//! not is refused ([`ProtocolError::CurveReplay`]) and the connection is
//! closed. Frames are opened in place in the read buffer, so a received
//! frame body is a slice of it, as on the NULL path.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use crypto_box::SalsaBox;
use crypto_box::aead::AeadInPlace;
use crypto_box::aead::generic_array::GenericArray;

use super::{MESSAGE_FROM_CLIENT, MESSAGE_FROM_SERVER, TAG_LEN, read_short_nonce, short_nonce};
use crate::zmtp::command::Command;
use crate::zmtp::frame::{
    Decode, FLAG_MORE, Inbound, Multipart, ProtocolError, check_message_frame, encode_frame_header,
    peek_header,
};
use crate::zmtp::limits::Limits;

const MESSAGE_NAME: &[u8; 8] = b"\x07MESSAGE";
/// Inner flags bit: more frames of this message follow.
const INNER_MORE: u8 = 0x01;
/// Inner flags bit: the frame is a command (PING, SUBSCRIBE, ...).
const INNER_COMMAND: u8 = 0x02;
/// Bytes a MESSAGE adds to the frame it carries: name 8, nonce 8, tag 16,
/// flags 1.
pub const MESSAGE_OVERHEAD: usize = 8 + 8 + TAG_LEN + 1;

/// Which side of the mechanism we are: picks the nonce prefixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
}

/// A finished handshake's keys and nonce positions, split into the two
/// directions of the traffic phase.
pub struct Session {
    /// Seals what we send.
    pub sealer: Sealer,
    /// Opens what the peer sends.
    pub opener: Opener,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl Session {
    /// `next_ours`: the short nonce of our next MESSAGE; `last_theirs`: the
    /// peer's last short nonce (its next MESSAGE must be larger).
    pub(crate) fn new(cipher: SalsaBox, side: Side, next_ours: u64, last_theirs: u64) -> Self {
        let cipher = Arc::new(cipher);
        let (ours, theirs) = match side {
            Side::Client => (MESSAGE_FROM_CLIENT, MESSAGE_FROM_SERVER),
            Side::Server => (MESSAGE_FROM_SERVER, MESSAGE_FROM_CLIENT),
        };
        Session {
            sealer: Sealer {
                cipher: Arc::clone(&cipher),
                prefix: ours,
                next: next_ours,
                exhausted: false,
            },
            opener: Opener {
                cipher,
                prefix: theirs,
                last: last_theirs,
            },
        }
    }
}

/// Seals outgoing frames into MESSAGE commands.
pub struct Sealer {
    cipher: Arc<SalsaBox>,
    prefix: &'static [u8; 16],
    next: u64,
    exhausted: bool,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// Whether the 2^64 nonces of the connection are used up: nothing more
    /// is sealed (a nonce is never reused) and the connection must close.
    pub fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// Appends one whole message, each frame its own MESSAGE.
    pub fn seal_message(&mut self, frames: &[Bytes], out: &mut BytesMut) {
        let total: usize = frames.iter().map(|f| 9 + MESSAGE_OVERHEAD + f.len()).sum();
        out.reserve(total);
        let last = frames.len().saturating_sub(1);
        for (i, frame) in frames.iter().enumerate() {
            let flags = if i < last { INNER_MORE } else { 0 };
            self.seal_parts(flags, &[frame], out);
        }
    }

    /// Appends a command (PING, PONG, SUBSCRIBE, CANCEL).
    pub fn seal_command(&mut self, cmd: &Command, out: &mut BytesMut) {
        let len = cmd.body_len();
        self.seal_with(INNER_COMMAND, len, out, |out| cmd.encode_body(out));
    }

    /// Appends one frame whose body is `parts` put together; `more` when
    /// more frames of its message follow.
    pub fn seal_frame(&mut self, more: bool, parts: &[&[u8]], out: &mut BytesMut) {
        self.seal_parts(if more { INNER_MORE } else { 0 }, parts, out);
    }

    fn seal_parts(&mut self, flags: u8, parts: &[&[u8]], out: &mut BytesMut) {
        let len = parts.iter().map(|p| p.len()).sum();
        self.seal_with(flags, len, out, |out| {
            for p in parts {
                out.put_slice(p);
            }
        });
    }

    /// Writes the MESSAGE frame of a `len`-byte body that `body` appends,
    /// encrypting it in place.
    fn seal_with(
        &mut self,
        flags: u8,
        len: usize,
        out: &mut BytesMut,
        body: impl FnOnce(&mut BytesMut),
    ) {
        if self.exhausted {
            return;
        }
        let n = self.next;
        match n.checked_add(1) {
            Some(next) => self.next = next,
            None => {
                self.exhausted = true;
                return;
            }
        }
        // Sent as an ordinary final frame, as libzmq does.
        encode_frame_header(false, MESSAGE_OVERHEAD + len, out);
        out.put_slice(MESSAGE_NAME);
        out.put_u64(n);
        let tag_at = out.len();
        out.put_bytes(0, TAG_LEN);
        let text_at = out.len();
        out.put_u8(flags);
        body(out);
        debug_assert_eq!(out.len() - text_at, 1 + len);
        let tag = self
            .cipher
            .encrypt_in_place_detached(&short_nonce(self.prefix, n), b"", &mut out[text_at..])
            .expect("sealing with no associated data cannot fail");
        out[tag_at..text_at].copy_from_slice(&tag);
    }
}

/// Opens the peer's MESSAGE commands.
pub struct Opener {
    cipher: Arc<SalsaBox>,
    prefix: &'static [u8; 16],
    last: u64,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// Opens one MESSAGE body in place: on success `body` is left holding
    /// the frame's body, and its inner flags are returned.
    ///
    /// # Errors
    /// [`ProtocolError::CurveMessage`] when it is not a MESSAGE or does not
    /// open, [`ProtocolError::CurveReplay`] when its nonce did not increase.
    pub fn open(&mut self, body: &mut BytesMut) -> Result<u8, ProtocolError> {
        if body.len() < MESSAGE_OVERHEAD {
            return Err(ProtocolError::CurveMessage {
                detail: "shorter than 33 bytes",
            });
        }
        if body[..8] != MESSAGE_NAME[..] {
            return Err(ProtocolError::CurveMessage {
                detail: "not a MESSAGE command",
            });
        }
        let n = read_short_nonce(&body[8..16]);
        if n <= self.last {
            return Err(ProtocolError::CurveReplay);
        }
        let tag = *GenericArray::from_slice(&body[16..16 + TAG_LEN]);
        self.cipher
            .decrypt_in_place_detached(
                &short_nonce(self.prefix, n),
                b"",
                &mut body[16 + TAG_LEN..],
                &tag,
            )
            .map_err(|_| ProtocolError::CurveMessage {
                detail: "box does not open",
            })?;
        self.last = n;
        let flags = body[MESSAGE_OVERHEAD - 1];
        body.advance(MESSAGE_OVERHEAD);
        Ok(flags)
    }
}

/// The traffic-phase decoder of a CURVE connection: MESSAGE frames in,
/// whole messages and commands out, with the same limits as
/// [`crate::zmtp::frame::Decoder`] applied to the frames they carry (and
/// the MESSAGE itself bounded by the largest frame or command plus
/// [`MESSAGE_OVERHEAD`], checked on its header before it is buffered).
#[derive(Debug)]
pub struct CurveDecoder {
    limits: Limits,
    opener: Opener,
    frames: Multipart,
    size: usize,
    wanted: usize,
    max_box: usize,
}

impl CurveDecoder {
    /// A decoder opening with `opener` and enforcing `limits`.
    pub fn new(limits: Limits, opener: Opener) -> Self {
        let max_box = limits
            .max_frame_size
            .max(limits.max_command_size)
            .saturating_add(MESSAGE_OVERHEAD);
        CurveDecoder {
            limits,
            opener,
            frames: Multipart::new(),
            size: 0,
            wanted: 2,
            max_box,
        }
    }
}

impl Decode for CurveDecoder {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, ProtocolError> {
        loop {
            let h = match peek_header(buf) {
                Ok(h) => h,
                Err(missing) => {
                    self.wanted = missing;
                    return Ok(None);
                }
            };
            if h.flags & FLAG_MORE != 0 {
                return Err(ProtocolError::CurveMessage {
                    detail: "MESSAGE frame with the MORE flag",
                });
            }
            let size = match usize::try_from(h.size) {
                Ok(s) if s <= self.max_box => s,
                _ => {
                    return Err(ProtocolError::FrameTooLarge {
                        size: h.size,
                        max: self.max_box,
                    });
                }
            };
            if buf.len() - h.len < size {
                self.wanted = size - (buf.len() - h.len);
                return Ok(None);
            }
            buf.advance(h.len);
            let mut body = buf.split_to(size);
            let flags = self.opener.open(&mut body)?;
            let len = body.len();
            if flags & INNER_COMMAND != 0 {
                if !self.frames.is_empty() {
                    return Err(ProtocolError::CommandInsideMessage);
                }
                if flags & INNER_MORE != 0 {
                    return Err(ProtocolError::MalformedFrame {
                        detail: "command frame with the MORE flag",
                    });
                }
                if len > self.limits.max_command_size {
                    return Err(ProtocolError::CommandTooLarge {
                        size: len as u64,
                        max: self.limits.max_command_size,
                    });
                }
                self.wanted = 0;
                return Command::parse(body.freeze()).map(|c| Some(Inbound::Command(c)));
            }
            check_message_frame(&self.limits, self.frames.len(), self.size, len as u64)?;
            self.frames.push(if len == 0 {
                Bytes::new()
            } else {
                body.freeze()
            });
            if flags & INNER_MORE == 0 {
                self.size = 0;
                self.wanted = 0;
                return Ok(Some(Inbound::Message(std::mem::take(&mut self.frames))));
            }
            self.size += len;
        }
    }

    fn wanted(&self) -> usize {
        self.wanted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zmtp::frame::FLAG_LONG;

    fn pair() -> (Session, Session) {
        let a = crypto_box::SecretKey::from([1u8; 32]);
        let b = crypto_box::SecretKey::from([2u8; 32]);
        let client = Session::new(SalsaBox::new(&b.public_key(), &a), Side::Client, 3, 1);
        let server = Session::new(SalsaBox::new(&a.public_key(), &b), Side::Server, 2, 2);
        (client, server)
    }

    fn frames(parts: &[&'static [u8]]) -> Multipart {
        parts.iter().map(|p| Bytes::from_static(p)).collect()
    }

    #[test]
    fn messages_and_commands_round_trip_and_are_zero_copy() {
        let (mut client, server) = pair();
        let mut wire = BytesMut::new();
        let big = Bytes::from(vec![7u8; 70_000]);
        client
            .sealer
            .seal_message(&[Bytes::from_static(b"topic"), big.clone()], &mut wire);
        client
            .sealer
            .seal_command(&Command::Subscribe(Bytes::from_static(b"a.")), &mut wire);
        client.sealer.seal_message(&frames(&[b""]), &mut wire);
        client
            .sealer
            .seal_frame(false, &[b"\x01", b"pre"], &mut wire);
        let mut d = CurveDecoder::new(Limits::default(), server.opener);
        let range = wire.as_ptr_range();
        let Some(Inbound::Message(m)) = d.decode(&mut wire).expect("decode") else {
            panic!("not a message");
        };
        assert_eq!(m.len(), 2);
        assert_eq!(&m[0][..], b"topic");
        assert_eq!(m[1], big);
        assert!(range.contains(&m[1].as_ptr()), "opened in place");
        assert_eq!(
            d.decode(&mut wire).expect("decode"),
            Some(Inbound::Command(Command::Subscribe(Bytes::from_static(
                b"a."
            ))))
        );
        assert_eq!(
            d.decode(&mut wire).expect("decode"),
            Some(Inbound::Message(frames(&[b""])))
        );
        assert_eq!(
            d.decode(&mut wire).expect("decode"),
            Some(Inbound::Message(frames(&[b"\x01pre"])))
        );
        assert!(wire.is_empty());
    }

    #[test]
    fn split_input_waits_for_the_whole_frame() {
        let (mut client, server) = pair();
        let mut wire = BytesMut::new();
        client
            .sealer
            .seal_message(&frames(&[b"a", b"bc"]), &mut wire);
        let mut d = CurveDecoder::new(Limits::default(), server.opener);
        let mut buf = BytesMut::new();
        let mut got = None;
        for b in wire.iter() {
            buf.put_u8(*b);
            if let Some(m) = d.decode(&mut buf).expect("decode") {
                got = Some(m);
            }
        }
        assert_eq!(got, Some(Inbound::Message(frames(&[b"a", b"bc"]))));
    }

    #[test]
    fn a_replayed_or_reordered_message_is_refused() {
        let (mut client, server) = pair();
        let mut one = BytesMut::new();
        client.sealer.seal_message(&frames(&[b"x"]), &mut one);
        let mut d = CurveDecoder::new(Limits::default(), server.opener);
        let mut wire = one.clone();
        wire.extend_from_slice(&one);
        assert!(d.decode(&mut wire).expect("first").is_some());
        assert_eq!(d.decode(&mut wire), Err(ProtocolError::CurveReplay));
        assert_eq!(ProtocolError::CurveReplay.reason(), "curve_replay");
    }

    #[test]
    fn the_handshake_nonces_are_not_accepted_again() {
        // The server's opener starts past the client's INITIATE (2): a
        // MESSAGE sealed with nonce 2 is a replay.
        let (_, server) = pair();
        let a = crypto_box::SecretKey::from([1u8; 32]);
        let b = crypto_box::SecretKey::from([2u8; 32]);
        let mut early = Session::new(SalsaBox::new(&b.public_key(), &a), Side::Client, 2, 1);
        let mut wire = BytesMut::new();
        early.sealer.seal_message(&frames(&[b"x"]), &mut wire);
        let mut d = CurveDecoder::new(Limits::default(), server.opener);
        assert_eq!(d.decode(&mut wire), Err(ProtocolError::CurveReplay));
    }

    #[test]
    fn tampered_wrong_direction_and_malformed_messages_are_refused() {
        let (mut client, server) = pair();
        let mut wire = BytesMut::new();
        client.sealer.seal_message(&frames(&[b"hello"]), &mut wire);
        let last = wire.len() - 1;
        wire[last] ^= 1;
        let mut d = CurveDecoder::new(Limits::default(), server.opener);
        assert!(matches!(
            d.decode(&mut wire),
            Err(ProtocolError::CurveMessage {
                detail: "box does not open"
            })
        ));

        // What the client sealed does not open as if the server had sent it.
        let (mut client, _) = pair();
        let (other_client, _) = pair();
        let mut wire = BytesMut::new();
        client.sealer.seal_message(&frames(&[b"hello"]), &mut wire);
        let mut d = CurveDecoder::new(Limits::default(), other_client.opener);
        assert!(d.decode(&mut wire).is_err());

        let cases: &[(&[u8], &str)] = &[
            (b"\x00\x05short", "shorter than 33 bytes"),
            (
                b"\x00\x21\x07MASSAGE\0\0\0\0\0\0\0\x09aaaaaaaaaaaaaaaaa",
                "not a MESSAGE command",
            ),
            (b"\x01\x00", "MESSAGE frame with the MORE flag"),
        ];
        for (raw, detail) in cases {
            let (_, server) = pair();
            let mut d = CurveDecoder::new(Limits::default(), server.opener);
            let got = d.decode(&mut BytesMut::from(*raw));
            assert_eq!(got, Err(ProtocolError::CurveMessage { detail }), "{raw:?}");
            assert_eq!(got.unwrap_err().reason(), "curve_bad_message");
        }
    }

    #[test]
    fn limits_apply_before_buffering_and_to_the_frames_inside() {
        let limits = Limits {
            max_frame_size: 100,
            max_message_size: 150,
            max_frames: 2,
            max_command_size: 64,
        };
        // A huge declared MESSAGE is refused from its 9-byte header.
        let (_, server) = pair();
        let mut d = CurveDecoder::new(limits.clone(), server.opener);
        let mut raw = BytesMut::new();
        raw.put_u8(FLAG_LONG);
        raw.put_u64(1 << 40);
        assert!(matches!(
            d.decode(&mut raw),
            Err(ProtocolError::FrameTooLarge { .. })
        ));

        let cases: Vec<(Vec<Multipart>, &str)> = vec![
            (vec![frames(&[&[0u8; 101]])], "frame_too_large"),
            (
                vec![frames(&[&[0u8; 100], &[0u8; 60]])],
                "message_too_large",
            ),
            (vec![frames(&[b"a", b"b", b"c"])], "too_many_frames"),
        ];
        for (msgs, reason) in cases {
            let (mut client, server) = pair();
            let mut wire = BytesMut::new();
            for m in &msgs {
                client.sealer.seal_message(m, &mut wire);
            }
            let mut d = CurveDecoder::new(limits.clone(), server.opener);
            let err = loop {
                match d.decode(&mut wire) {
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("{reason}: accepted"),
                    Err(e) => break e,
                }
            };
            assert_eq!(err.reason(), reason);
        }
        let (mut client, server) = pair();
        let mut wire = BytesMut::new();
        client
            .sealer
            .seal_command(&Command::Subscribe(Bytes::from(vec![b'x'; 80])), &mut wire);
        let mut d = CurveDecoder::new(limits, server.opener);
        assert_eq!(
            d.decode(&mut wire).unwrap_err().reason(),
            "command_too_large"
        );
    }

    #[test]
    fn a_command_inside_a_message_is_refused() {
        let (mut client, server) = pair();
        let mut wire = BytesMut::new();
        client.sealer.seal_frame(true, &[b"first"], &mut wire);
        client.sealer.seal_command(
            &Command::Pong {
                context: Bytes::new(),
            },
            &mut wire,
        );
        let mut d = CurveDecoder::new(Limits::default(), server.opener);
        assert_eq!(
            d.decode(&mut wire),
            Err(ProtocolError::CommandInsideMessage)
        );
    }

    #[test]
    fn an_exhausted_sealer_writes_nothing_more() {
        let (mut client, _) = pair();
        client.sealer.next = u64::MAX;
        let mut wire = BytesMut::new();
        client.sealer.seal_message(&frames(&[b"x"]), &mut wire);
        assert!(wire.is_empty());
        assert!(client.sealer.exhausted());
        client.sealer.seal_message(&frames(&[b"x"]), &mut wire);
        assert!(wire.is_empty());
    }
}
