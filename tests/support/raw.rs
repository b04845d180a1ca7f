//! A hand-written ZMTP 3.x client over a plain TCP stream, independent of the
//! code under test: for hostile peers (bad greetings, huge frame headers,
//! truncated frames, malformed commands) and for a subscriber that stops
//! reading. Everything here is built from RFC 23/37 byte layouts.

use anyhow::{Context, Result, bail};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Frame flag: more frames follow in this message.
pub const MORE: u8 = 0x01;
/// Frame flag: 8-byte size field.
pub const LONG: u8 = 0x02;
/// Frame flag: a command frame.
pub const COMMAND: u8 = 0x04;

/// A 64-byte greeting: signature, version, mechanism, as-server, filler.
pub fn greeting(major: u8, minor: u8, mechanism: &str, as_server: bool) -> [u8; 64] {
    let mut g = [0u8; 64];
    g[0] = 0xFF;
    g[9] = 0x7F;
    g[10] = major;
    g[11] = minor;
    let m = mechanism.as_bytes();
    let n = m.len().min(20);
    g[12..12 + n].copy_from_slice(&m[..n]);
    g[32] = u8::from(as_server);
    g
}

/// The header of one frame with the given flags and body length (short form
/// when it fits in one byte).
pub fn header(flags: u8, len: u64) -> Vec<u8> {
    match u8::try_from(len) {
        Ok(short) => vec![flags & !LONG, short],
        Err(_) => long_header(flags, len).to_vec(),
    }
}

/// A long-form header declaring `len` bytes, whatever follows.
pub fn long_header(flags: u8, len: u64) -> [u8; 9] {
    let mut h = [0u8; 9];
    h[0] = flags | LONG;
    h[1..].copy_from_slice(&len.to_be_bytes());
    h
}

/// One message frame.
pub fn frame(more: bool, body: &[u8]) -> Vec<u8> {
    let mut f = header(if more { MORE } else { 0 }, body.len() as u64);
    f.extend_from_slice(body);
    f
}

/// One whole message.
pub fn message(frames: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        out.extend(frame(i + 1 < frames.len(), f));
    }
    out
}

/// One command frame: name length, name, data.
pub fn command(name: &str, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(1 + name.len() + data.len());
    body.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(data);
    let mut f = header(COMMAND, body.len() as u64);
    f.extend(body);
    f
}

/// Metadata properties: name length, name, 4-byte value length, value.
pub fn properties(props: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in props {
        out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// A READY command announcing `socket_type`.
pub fn ready(socket_type: &str) -> Vec<u8> {
    command(
        "READY",
        &properties(&[("Socket-Type", socket_type.as_bytes())]),
    )
}

/// One frame read from the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The flags byte.
    pub flags: u8,
    /// The body.
    pub body: Vec<u8>,
}

impl Frame {
    /// Whether it is a command frame.
    pub fn is_command(&self) -> bool {
        self.flags & COMMAND != 0
    }

    /// Whether more frames follow.
    pub fn more(&self) -> bool {
        self.flags & MORE != 0
    }

    /// A command's name (empty for message frames).
    pub fn command_name(&self) -> &[u8] {
        if !self.is_command() || self.body.is_empty() {
            return b"";
        }
        let n = usize::from(self.body[0]);
        self.body.get(1..1 + n).unwrap_or(b"")
    }
}

/// A raw TCP connection speaking (or abusing) ZMTP.
#[derive(Debug)]
pub struct RawPeer {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawPeer {
    /// Connects to `addr` (`host:port`).
    ///
    /// # Errors
    /// When the connection is refused or times out.
    pub fn connect(addr: &str) -> Result<Self> {
        Self::connect_with(addr, None)
    }

    /// Connects with `SO_RCVBUF` set to `rcvbuf` before the handshake of
    /// TCP, so the window the peer sees is small from the start.
    ///
    /// # Errors
    /// When the connection is refused or times out.
    pub fn connect_with(addr: &str, rcvbuf: Option<usize>) -> Result<Self> {
        let sa: SocketAddr = addr.parse().with_context(|| format!("address {addr}"))?;
        let s = socket2::Socket::new(
            socket2::Domain::for_address(sa),
            socket2::Type::STREAM,
            None,
        )?;
        if let Some(n) = rcvbuf {
            s.set_recv_buffer_size(n)?;
        }
        s.connect_timeout(&sa.into(), Duration::from_secs(10))
            .with_context(|| format!("connecting to {addr}"))?;
        let stream: TcpStream = s.into();
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(RawPeer {
            stream,
            buf: Vec::new(),
        })
    }

    /// The stream, for anything not covered here.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Writes all of `bytes` (10 s write deadline).
    ///
    /// # Errors
    /// When the peer closed or reset the connection.
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).context("writing to the node")
    }

    /// Sends our greeting and READY, and reads the node's greeting and READY.
    /// Returns the node's READY body.
    ///
    /// # Errors
    /// When the node's greeting or READY is not what ZMTP 3 says.
    pub fn handshake(&mut self, socket_type: &str, deadline: Duration) -> Result<Vec<u8>> {
        self.handshake_with(&[("Socket-Type", socket_type.as_bytes())], deadline)
    }

    /// As [`RawPeer::handshake`], with any READY properties (e.g. an
    /// `Identity`).
    ///
    /// # Errors
    /// When the node's greeting or READY is not what ZMTP 3 says.
    pub fn handshake_with(
        &mut self,
        props: &[(&str, &[u8])],
        deadline: Duration,
    ) -> Result<Vec<u8>> {
        let mut out = greeting(3, 1, "NULL", false).to_vec();
        out.extend(command("READY", &properties(props)));
        self.send(&out)?;
        let end = Instant::now() + deadline;
        let g = self.read_exact(64, end)?;
        if g[0] != 0xFF || g[9] != 0x7F || g[10] < 3 {
            bail!("not a ZMTP 3 greeting: {g:?}");
        }
        if &g[12..16] != b"NULL" {
            bail!("node mechanism is not NULL: {:?}", &g[12..32]);
        }
        let f = self.read_frame(end)?;
        if f.command_name() != b"READY" {
            bail!("expected READY, got {f:?}");
        }
        Ok(f.body)
    }

    fn fill(&mut self, want: usize, end: Instant) -> Result<()> {
        let mut chunk = [0u8; 64 * 1024];
        while self.buf.len() < want {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("deadline passed with {} of {want} bytes", self.buf.len());
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut chunk) {
                Ok(0) => bail!("connection closed by the node"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e).context("reading from the node"),
            }
        }
        Ok(())
    }

    /// Reads exactly `n` bytes before `end`.
    ///
    /// # Errors
    /// On close, reset or deadline.
    pub fn read_exact(&mut self, n: usize, end: Instant) -> Result<Vec<u8>> {
        self.fill(n, end)?;
        Ok(self.buf.drain(..n).collect())
    }

    /// Reads one frame before `end`.
    ///
    /// # Errors
    /// On close, reset or deadline.
    pub fn read_frame(&mut self, end: Instant) -> Result<Frame> {
        self.fill(2, end)?;
        let flags = self.buf[0];
        let (hlen, len) = if flags & LONG != 0 {
            self.fill(9, end)?;
            let mut b = [0u8; 8];
            b.copy_from_slice(&self.buf[1..9]);
            (9, u64::from_be_bytes(b))
        } else {
            (2, u64::from(self.buf[1]))
        };
        let len = usize::try_from(len).context("frame length")?;
        if len > 64 * 1024 * 1024 {
            bail!("the node sent a {len}-byte frame");
        }
        self.fill(hlen + len, end)?;
        self.buf.drain(..hlen);
        let body = self.buf.drain(..len).collect();
        Ok(Frame { flags, body })
    }

    /// Reads one message before `end`, answering PING with PONG and skipping
    /// other commands.
    ///
    /// # Errors
    /// On close, reset or deadline.
    pub fn read_message(&mut self, end: Instant) -> Result<Vec<Vec<u8>>> {
        let mut frames = Vec::new();
        loop {
            let f = self.read_frame(end)?;
            if f.is_command() {
                if f.command_name() == b"PING" {
                    // PING: ttl (2 bytes) then context, echoed in PONG.
                    let ctx = f.body.get(1 + 4 + 2..).unwrap_or(b"").to_vec();
                    self.send(&command("PONG", &ctx))?;
                }
                continue;
            }
            let more = f.more();
            frames.push(f.body);
            if !more {
                return Ok(frames);
            }
        }
    }

    /// Sends a SUBSCRIBE command (ZMTP 3.1) for `prefix`.
    ///
    /// # Errors
    /// When the connection is closed.
    pub fn subscribe(&mut self, prefix: &[u8]) -> Result<()> {
        self.send(&command("SUBSCRIBE", prefix))
    }

    /// Reads and discards until the node closes the connection (FIN or RST).
    /// Returns how many bytes the node sent meanwhile.
    ///
    /// # Errors
    /// When the connection is still open at the deadline.
    pub fn wait_closed(&mut self, deadline: Duration) -> Result<usize> {
        let end = Instant::now() + deadline;
        let mut total = std::mem::take(&mut self.buf).len();
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("the node kept the connection open for {deadline:?}");
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => return Ok(total),
            }
        }
    }

    /// Closes with RST instead of FIN (SO_LINGER 0).
    ///
    /// # Errors
    /// When the option cannot be set.
    pub fn reset(self) -> Result<()> {
        socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO))?;
        drop(self);
        Ok(())
    }

    /// Half-closes our side (FIN), keeping the read side open.
    ///
    /// # Errors
    /// When the socket is already gone.
    pub fn finish(&self) -> Result<()> {
        self.stream.shutdown(std::net::Shutdown::Write)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_layouts_follow_the_rfc() {
        let g = greeting(3, 1, "NULL", false);
        assert_eq!(
            (g[0], g[9], g[10], g[11], &g[12..16], g[32]),
            (0xFF, 0x7F, 3, 1, &b"NULL"[..], 0)
        );
        assert_eq!(frame(true, b"ab"), vec![MORE, 2, b'a', b'b']);
        assert_eq!(header(0, 256)[0], LONG);
        assert_eq!(header(0, 256).len(), 9);
        let r = ready("SUB");
        assert_eq!(r[0], COMMAND);
        assert_eq!(&r[2..8], b"\x05READY");
        assert_eq!(&r[8..20], b"\x0bSocket-Type");
        assert_eq!(&r[20..27], b"\x00\x00\x00\x03SUB");
    }
}
