//! ZMTP 3.x framing (RFC 23 "Framing"): the traffic-phase [`Decoder`] that
//! turns bytes into whole multipart messages and commands, and the encoders.
//!
//! A frame is a flags byte (bit 0 MORE, bit 1 LONG, bit 2 COMMAND), a size
//! (1 byte, or 8 bytes big-endian when LONG) and the body. Every limit is
//! checked on the header, before the body is buffered: a peer declaring a
//! 2^40-byte frame is refused after 9 bytes, without any allocation.
//!
//! Liberal where libzmq is: reserved flag bits are ignored, and a long frame
//! may carry fewer than 256 bytes. Strict where safety or the RFC needs it: a
//! command with the MORE flag, or in the middle of a multipart message, is a
//! protocol error.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use super::command::Command;
use super::limits::Limits;
pub use super::protocol_error::ProtocolError;

/// One ZeroMQ message: its frames, in order. Up to three frames are held
/// inline without a heap allocation.
pub type Multipart = SmallVec<[Bytes; 3]>;

/// Flags bit: more frames of this message follow.
pub const FLAG_MORE: u8 = 0x01;
/// Flags bit: the size field is 8 bytes (big-endian) instead of 1.
pub const FLAG_LONG: u8 = 0x02;
/// Flags bit: the frame is a command, not message data.
pub const FLAG_COMMAND: u8 = 0x04;
/// Largest frame header: flags + 8-byte size.
pub const MAX_HEADER_LEN: usize = 9;

/// What the decoder produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// A complete message (at least one frame).
    Message(Multipart),
    /// A command (PING, SUBSCRIBE, ...).
    Command(Command),
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    /// The flags byte.
    pub(crate) flags: u8,
    /// The declared body size (peer-controlled: bound it before use).
    pub(crate) size: u64,
    /// Bytes of the header itself (2 or 9).
    pub(crate) len: usize,
}

/// Reads a frame header from the front of `buf` without consuming it;
/// `Err(missing)` says how many more bytes the header needs.
#[inline]
pub(crate) fn peek_header(buf: &[u8]) -> Result<Header, usize> {
    match *buf {
        [] => Err(2),
        [flags, ..] if flags & FLAG_LONG != 0 => {
            let Some(raw) = buf.get(1..MAX_HEADER_LEN) else {
                return Err(MAX_HEADER_LEN - buf.len());
            };
            let mut size = [0u8; 8];
            size.copy_from_slice(raw);
            Ok(Header {
                flags,
                size: u64::from_be_bytes(size),
                len: MAX_HEADER_LEN,
            })
        }
        [_] => Err(1),
        [flags, size, ..] => Ok(Header {
            flags,
            size: u64::from(size),
            len: 2,
        }),
    }
}

/// Splits `size` bytes off the front of `buf` as an immutable `Bytes`
/// (no copy; an empty body takes no reference on the buffer).
#[inline]
fn take_body(buf: &mut BytesMut, size: usize) -> Bytes {
    if size == 0 {
        Bytes::new()
    } else {
        buf.split_to(size).freeze()
    }
}

/// Checks a command frame header against the limits.
#[inline]
fn check_command_header(h: Header, max_command_size: usize) -> Result<usize, ProtocolError> {
    if h.flags & FLAG_MORE != 0 {
        return Err(ProtocolError::MalformedFrame {
            detail: "command frame with the MORE flag",
        });
    }
    match usize::try_from(h.size) {
        Ok(size) if size <= max_command_size => Ok(size),
        _ => Err(ProtocolError::CommandTooLarge {
            size: h.size,
            max: max_command_size,
        }),
    }
}

/// Decodes one command frame from the front of `buf` (handshake phase, where
/// message frames are not allowed). `Ok(None)` = need more bytes; `buf` is
/// untouched until a whole frame is present.
///
/// # Errors
/// [`ProtocolError::ExpectedCommand`] on a message frame (detected from its
/// first byte), [`ProtocolError::CommandTooLarge`] or a malformed command.
pub fn decode_command(
    buf: &mut BytesMut,
    max_command_size: usize,
) -> Result<Option<Command>, ProtocolError> {
    match decode_command_body(buf, max_command_size)? {
        Some(body) => Command::parse(body).map(Some),
        None => Ok(None),
    }
}

/// Like [`decode_command`], but returns the command body unparsed (the
/// CURVE handshake reads its commands' binary layouts itself).
///
/// # Errors
/// [`ProtocolError::ExpectedCommand`] on a message frame,
/// [`ProtocolError::CommandTooLarge`] past `max_command_size`.
pub fn decode_command_body(
    buf: &mut BytesMut,
    max_command_size: usize,
) -> Result<Option<Bytes>, ProtocolError> {
    if buf.first().is_some_and(|&flags| flags & FLAG_COMMAND == 0) {
        return Err(ProtocolError::ExpectedCommand);
    }
    let Ok(h) = peek_header(buf) else {
        return Ok(None);
    };
    let size = check_command_header(h, max_command_size)?;
    if buf.len() - h.len < size {
        return Ok(None);
    }
    buf.advance(h.len);
    Ok(Some(take_body(buf, size)))
}

/// A traffic-phase decoder: bytes in, whole messages and commands out.
/// [`Decoder`] for NULL and PLAIN connections,
/// [`super::curve::CurveDecoder`] for CURVE; the connection's reader is
/// generic over it, so the choice costs nothing per frame.
pub trait Decode {
    /// Decodes the next complete message or command from `buf`; `Ok(None)`
    /// = need more bytes (see [`Decode::wanted`]).
    ///
    /// # Errors
    /// Any [`ProtocolError`]; the connection must then be closed.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, ProtocolError>;

    /// After `Ok(None)`: how many more bytes are needed at least (bounded by
    /// the limits, so safe to reserve).
    fn wanted(&self) -> usize;
}

impl Decode for Decoder {
    #[inline]
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, ProtocolError> {
        Decoder::decode(self, buf)
    }

    #[inline]
    fn wanted(&self) -> usize {
        Decoder::wanted(self)
    }
}

/// Checks one more message frame of `size` bytes against `limits`, with
/// `held` frames of `so_far` bytes of its message already received; returns
/// the size as a `usize`.
///
/// # Errors
/// [`ProtocolError::FrameTooLarge`], [`ProtocolError::TooManyFrames`] or
/// [`ProtocolError::MessageTooLarge`].
#[inline]
pub(crate) fn check_message_frame(
    limits: &Limits,
    held: usize,
    so_far: usize,
    size: u64,
) -> Result<usize, ProtocolError> {
    if size > limits.max_frame_size as u64 {
        return Err(ProtocolError::FrameTooLarge {
            size,
            max: limits.max_frame_size,
        });
    }
    if held >= limits.max_frames {
        return Err(ProtocolError::TooManyFrames {
            max: limits.max_frames,
        });
    }
    // Both terms are at most a usize limit, so the sum cannot overflow u64.
    let total = so_far as u64 + size;
    if total > limits.max_message_size as u64 {
        return Err(ProtocolError::MessageTooLarge {
            size: total,
            max: limits.max_message_size,
        });
    }
    // size <= max_frame_size, a usize.
    Ok(size as usize)
}

/// The traffic-phase decoder: bytes in, whole messages and commands out.
///
/// Keeps the frames of a partly received multipart message; everything else
/// stays in the caller's buffer until a whole frame is present, so memory per
/// connection is bounded by the [`Limits`].
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    frames: Multipart,
    size: usize,
    wanted: usize,
}

impl Decoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Decoder {
            limits,
            frames: Multipart::new(),
            size: 0,
            wanted: 2,
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Decodes the next complete message or command from `buf`, splitting
    /// frame bodies off `buf` without copying (`split_to(..).freeze()`).
    /// `Ok(None)` = need more bytes (see [`Decoder::wanted`]).
    ///
    /// Limits are checked on the header, before any buffering of the body.
    /// After an error the connection must be closed; calling again is safe but
    /// the result is unspecified.
    ///
    /// # Errors
    /// Any [`ProtocolError`]: a limit exceeded, a command inside a message, a
    /// malformed command.
    #[inline]
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, ProtocolError> {
        loop {
            let h = match peek_header(buf) {
                Ok(h) => h,
                Err(missing) => {
                    self.wanted = missing;
                    return Ok(None);
                }
            };
            if h.flags & FLAG_COMMAND != 0 {
                if !self.frames.is_empty() {
                    return Err(ProtocolError::CommandInsideMessage);
                }
                let size = check_command_header(h, self.limits.max_command_size)?;
                if buf.len() - h.len < size {
                    self.wanted = size - (buf.len() - h.len);
                    return Ok(None);
                }
                buf.advance(h.len);
                self.wanted = 0;
                return Command::parse(take_body(buf, size)).map(|c| Some(Inbound::Command(c)));
            }
            let size = self.check_message_header(h)?;
            if buf.len() - h.len < size {
                self.wanted = size - (buf.len() - h.len);
                return Ok(None);
            }
            buf.advance(h.len);
            let body = take_body(buf, size);
            self.frames.push(body);
            if h.flags & FLAG_MORE == 0 {
                self.size = 0;
                self.wanted = 0;
                return Ok(Some(Inbound::Message(std::mem::take(&mut self.frames))));
            }
            self.size += size;
        }
    }

    #[inline]
    fn check_message_header(&self, h: Header) -> Result<usize, ProtocolError> {
        check_message_frame(&self.limits, self.frames.len(), self.size, h.size)
    }

    /// After [`Decoder::decode`] returned `Ok(None)`: how many more bytes it
    /// needs at least to make progress (the rest of the frame header or body
    /// being read; bounded by the limits, so safe to reserve). After
    /// `Ok(Some(_))` it is 0: call `decode` again.
    pub fn wanted(&self) -> usize {
        self.wanted
    }

    /// Number of frames of a partly received message held by the decoder.
    pub fn pending_frames(&self) -> usize {
        self.frames.len()
    }
}

#[inline]
fn put_header(flags: u8, len: usize, out: &mut BytesMut) {
    if len <= usize::from(u8::MAX) {
        out.put_slice(&[flags, len as u8]);
    } else {
        out.put_u8(flags | FLAG_LONG);
        out.put_u64(len as u64);
    }
}

/// Length of the header [`encode_frame_header`] writes for a body of `len`
/// bytes (2 or 9).
#[inline]
pub fn header_len(len: usize) -> usize {
    if len <= usize::from(u8::MAX) {
        2
    } else {
        MAX_HEADER_LEN
    }
}

/// Appends one whole message (frames with MORE flags) to `out`: header and a
/// copy of each body. An empty `frames` writes nothing (a ZeroMQ message has
/// at least one frame).
#[inline]
pub fn encode_message(frames: &[Bytes], out: &mut BytesMut) {
    let total: usize = frames.iter().map(|f| header_len(f.len()) + f.len()).sum();
    out.reserve(total);
    let last = frames.len().saturating_sub(1);
    for (i, frame) in frames.iter().enumerate() {
        put_header(u8::from(i < last), frame.len(), out);
        out.put_slice(frame);
    }
}

/// Appends one frame header (for vectored writes of large bodies): MORE when
/// more frames of the message follow, short or long form by `len`.
#[inline]
pub fn encode_frame_header(more: bool, len: usize, out: &mut BytesMut) {
    put_header(u8::from(more), len, out);
}

/// Appends the header of a command frame whose body is `len` bytes.
#[inline]
pub fn encode_command_header(len: usize, out: &mut BytesMut) {
    put_header(FLAG_COMMAND, len, out);
}

/// Appends one command frame (header and body) to `out`.
pub fn encode_command(cmd: &Command, out: &mut BytesMut) {
    let len = cmd.body_len();
    out.reserve(header_len(len) + len);
    put_header(FLAG_COMMAND, len, out);
    cmd.encode_body(out);
}

#[cfg(test)]
mod tests;
