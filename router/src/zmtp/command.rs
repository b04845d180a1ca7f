//! ZMTP commands (RFC 23, RFC 37, and PLAIN from RFC 24): parsing a command
//! frame body into a [`Command`] and encoding one back.
//!
//! A command body is a short command name (1-byte length + name) followed by
//! command-specific data. Parsing is zero-copy: every `Bytes` in a decoded
//! command is a slice of the frame body.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::frame::ProtocolError;
use super::socket_type::SocketType;

/// Name of the property announcing the sender's socket type.
pub const PROPERTY_SOCKET_TYPE: &str = "Socket-Type";
/// Name of the property carrying the sender's identity (routing id).
pub const PROPERTY_IDENTITY: &str = "Identity";
/// Largest ping context a peer may send; longer contexts are truncated, as
/// libzmq does (RFC 37: "0 to 16 octets").
pub const MAX_PING_CONTEXT: usize = 16;

/// One ZMTP command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `READY`: ends the NULL handshake (and PLAIN, from the server), carrying
    /// the sender's metadata.
    Ready(Properties),
    /// `ERROR`: the sender refuses the connection and will close it.
    Error {
        /// Human-readable reason, at most 255 bytes.
        reason: Bytes,
    },
    /// `SUBSCRIBE` (ZMTP 3.1): subscribe to messages starting with the prefix.
    Subscribe(Bytes),
    /// `CANCEL` (ZMTP 3.1): remove one subscription to the prefix.
    Cancel(Bytes),
    /// `PING` (ZMTP 3.1 heartbeat).
    Ping {
        /// How long the receiver may wait for traffic before considering the
        /// sender dead, in tenths of a second (0 = no opinion).
        ttl_deciseconds: u16,
        /// Opaque context to echo in the PONG; at most
        /// [`MAX_PING_CONTEXT`] bytes (longer contexts are truncated).
        context: Bytes,
    },
    /// `PONG`: the answer to a PING, echoing its context.
    Pong {
        /// The context of the PING being answered.
        context: Bytes,
    },
    /// `HELLO` (PLAIN, client to server): credentials, each at most 255 bytes.
    Hello {
        /// User name.
        username: Bytes,
        /// Password.
        password: Bytes,
    },
    /// `WELCOME` (PLAIN, server to client): credentials accepted.
    Welcome,
    /// `INITIATE` (PLAIN, client to server): the client's metadata.
    Initiate(Properties),
    /// A command this implementation does not know; the traffic phase ignores
    /// it (RFC 23). Its data is discarded.
    Unknown {
        /// The command name as sent (1 to 255 bytes).
        name: Bytes,
    },
}

impl Command {
    /// The command name for logs and metric labels; `"UNKNOWN"` for
    /// [`Command::Unknown`] (never the peer's string).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Ready(_) => "READY",
            Command::Error { .. } => "ERROR",
            Command::Subscribe(_) => "SUBSCRIBE",
            Command::Cancel(_) => "CANCEL",
            Command::Ping { .. } => "PING",
            Command::Pong { .. } => "PONG",
            Command::Hello { .. } => "HELLO",
            Command::Welcome => "WELCOME",
            Command::Initiate(_) => "INITIATE",
            Command::Unknown { .. } => "UNKNOWN",
        }
    }

    fn wire_name(&self) -> &[u8] {
        match self {
            Command::Unknown { name } => name,
            other => other.name().as_bytes(),
        }
    }

    /// Parses a command frame body (zero-copy).
    ///
    /// Liberal where libzmq is: trailing bytes after the fields of ERROR and
    /// HELLO, and the body of WELCOME, are ignored; a PING context longer than
    /// 16 bytes is truncated.
    ///
    /// # Errors
    /// [`ProtocolError::MalformedCommand`] when the name or a field is
    /// truncated or invalid.
    pub fn parse(mut body: Bytes) -> Result<Command, ProtocolError> {
        let name = short_string(&mut body).ok_or(malformed("command", "truncated command name"))?;
        if name.is_empty() {
            return Err(malformed("command", "empty command name"));
        }
        let cmd = match &name[..] {
            b"READY" => Command::Ready(Properties::parse(body, "READY")?),
            b"INITIATE" => Command::Initiate(Properties::parse(body, "INITIATE")?),
            b"SUBSCRIBE" => Command::Subscribe(body),
            b"CANCEL" => Command::Cancel(body),
            b"PING" => {
                if body.len() < 2 {
                    return Err(malformed("PING", "missing TTL"));
                }
                let ttl_deciseconds = body.get_u16();
                body.truncate(MAX_PING_CONTEXT);
                Command::Ping {
                    ttl_deciseconds,
                    context: body,
                }
            }
            b"PONG" => Command::Pong { context: body },
            b"ERROR" => {
                let reason =
                    short_string(&mut body).ok_or(malformed("ERROR", "truncated error reason"))?;
                Command::Error { reason }
            }
            b"HELLO" => {
                let username =
                    short_string(&mut body).ok_or(malformed("HELLO", "truncated username"))?;
                let password =
                    short_string(&mut body).ok_or(malformed("HELLO", "truncated password"))?;
                Command::Hello { username, password }
            }
            b"WELCOME" => Command::Welcome,
            _ => Command::Unknown { name },
        };
        Ok(cmd)
    }

    /// Length of the encoded command body (name included), in bytes.
    pub fn body_len(&self) -> usize {
        let data = match self {
            Command::Ready(p) | Command::Initiate(p) => p.encoded_len(),
            Command::Error { reason } => 1 + reason.len().min(255),
            Command::Subscribe(b) | Command::Cancel(b) => b.len(),
            Command::Ping { context, .. } => 2 + context.len(),
            Command::Pong { context } => context.len(),
            Command::Hello { username, password } => {
                2 + username.len().min(255) + password.len().min(255)
            }
            Command::Welcome | Command::Unknown { .. } => 0,
        };
        1 + self.wire_name().len().min(255) + data
    }

    /// Appends the command body (name and data, no frame header) to `out`.
    ///
    /// Fields limited to 255 bytes by the wire format (ERROR reason, HELLO
    /// credentials, command name) are truncated to fit; properties that cannot
    /// be represented are skipped (see [`Properties::push`]).
    pub fn encode_body(&self, out: &mut BytesMut) {
        put_short_string(out, self.wire_name());
        match self {
            Command::Ready(p) | Command::Initiate(p) => p.encode(out),
            Command::Error { reason } => put_short_string(out, reason),
            Command::Subscribe(b) | Command::Cancel(b) => out.put_slice(b),
            Command::Ping {
                ttl_deciseconds,
                context,
            } => {
                out.put_u16(*ttl_deciseconds);
                out.put_slice(context);
            }
            Command::Pong { context } => out.put_slice(context),
            Command::Hello { username, password } => {
                put_short_string(out, username);
                put_short_string(out, password);
            }
            Command::Welcome | Command::Unknown { .. } => {}
        }
    }
}

/// Connection metadata carried by READY and INITIATE: ordered
/// `(name, value)` pairs. Names compare case-insensitively (RFC 23).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Properties {
    entries: Vec<(Bytes, Bytes)>,
}

impl Properties {
    /// An empty property list.
    pub fn new() -> Properties {
        Properties::default()
    }

    /// Appends a property. A property whose name is empty or longer than 255
    /// bytes, or whose value is longer than `u32::MAX` bytes, cannot be
    /// represented on the wire: it is kept here but skipped by the encoder.
    pub fn push(&mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) {
        self.entries.push((name.into(), value.into()));
    }

    /// The value of the first property called `name` (ASCII
    /// case-insensitive).
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The `Socket-Type` property, if present and a known type.
    pub fn socket_type(&self) -> Option<SocketType> {
        self.get(PROPERTY_SOCKET_TYPE)
            .and_then(|v| SocketType::parse(v))
    }

    /// The `Identity` property, if present (possibly empty).
    pub fn identity(&self) -> Option<&Bytes> {
        self.get(PROPERTY_IDENTITY)
    }

    /// All properties in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &Bytes)> {
        self.entries.iter().map(|(n, v)| (n, v))
    }

    /// Number of properties.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no properties.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn encodable(name: &Bytes, value: &Bytes) -> bool {
        (1..=255).contains(&name.len()) && u32::try_from(value.len()).is_ok()
    }

    /// Length of the encoded metadata, in bytes.
    pub fn encoded_len(&self) -> usize {
        self.entries
            .iter()
            .filter(|(n, v)| Self::encodable(n, v))
            .map(|(n, v)| 1 + n.len() + 4 + v.len())
            .sum()
    }

    /// Appends the encoded metadata to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        for (name, value) in &self.entries {
            if let Ok(len) = u32::try_from(value.len())
                && Self::encodable(name, value)
            {
                put_short_string(out, name);
                out.put_u32(len);
                out.put_slice(value);
            }
        }
    }

    /// Parses metadata (zero-copy). `command` names the carrying command in
    /// errors.
    ///
    /// # Errors
    /// [`ProtocolError::MalformedCommand`] on a truncated or empty name, or a
    /// value length beyond the end of the body.
    pub fn parse(mut body: Bytes, command: &'static str) -> Result<Properties, ProtocolError> {
        let mut entries = Vec::new();
        while !body.is_empty() {
            let name =
                short_string(&mut body).ok_or(malformed(command, "truncated property name"))?;
            if name.is_empty() {
                return Err(malformed(command, "empty property name"));
            }
            if body.len() < 4 {
                return Err(malformed(command, "truncated property value length"));
            }
            let len = body.get_u32();
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l <= body.len())
                .ok_or(malformed(command, "property value beyond end of command"))?;
            entries.push((name, body.split_to(len)));
        }
        Ok(Properties { entries })
    }
}

fn malformed(command: &'static str, detail: &'static str) -> ProtocolError {
    ProtocolError::MalformedCommand { command, detail }
}

/// Reads a short string (1-byte length + bytes) off the front of `body`.
fn short_string(body: &mut Bytes) -> Option<Bytes> {
    let len = usize::from(*body.first()?);
    if body.len() < 1 + len {
        return None;
    }
    body.advance(1);
    Some(body.split_to(len))
}

fn put_short_string(out: &mut BytesMut, s: &[u8]) {
    let s = &s[..s.len().min(255)];
    out.put_u8(u8::try_from(s.len()).unwrap_or(u8::MAX));
    out.put_slice(s);
}
