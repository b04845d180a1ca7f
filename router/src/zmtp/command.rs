//! ZMTP commands (RFC 23, RFC 37, and PLAIN from RFC 24): parsing a command
//! frame body into a [`Command`] and encoding one back.
//!
//! A command body is a short command name (1-byte length + name) followed by
//! command-specific data. Parsing is zero-copy: every `Bytes` in a decoded
//! command is a slice of the frame body.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::protocol_error::ProtocolError;
use super::socket_type::SocketType;

/// Name of the property announcing the sender's socket type.
pub const PROPERTY_SOCKET_TYPE: &str = "Socket-Type";
/// Name of the property carrying the sender's identity (routing id).
pub const PROPERTY_IDENTITY: &str = "Identity";
/// Largest ping context a peer may send; longer contexts are truncated, as
/// libzmq does (RFC 37: "0 to 16 octets").
pub const MAX_PING_CONTEXT: usize = 16;

/// How libzmq 4.3 spells the ERROR command name when it refuses PLAIN
/// credentials: its C literal `"\x05ERROR"` reads as the hex escape `\x05E`
/// (`^`) followed by `RROR`. Read as ERROR so the refusal is reported as one.
const LIBZMQ_ERROR_NAME: &[u8] = b"^RROR";

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
        let Some(name) = short_string(&mut body) else {
            if body.starts_with(LIBZMQ_ERROR_NAME) {
                return Self::parse_error(body.slice(LIBZMQ_ERROR_NAME.len()..));
            }
            return Err(malformed("command", "truncated command name"));
        };
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
            b"ERROR" => Self::parse_error(body)?,
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

    fn parse_error(mut data: Bytes) -> Result<Command, ProtocolError> {
        let reason = short_string(&mut data).ok_or(malformed("ERROR", "truncated error reason"))?;
        Ok(Command::Error { reason })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn body(cmd: &Command) -> Bytes {
        let mut out = BytesMut::new();
        cmd.encode_body(&mut out);
        assert_eq!(out.len(), cmd.body_len(), "{cmd:?}");
        out.freeze()
    }

    fn ready(pairs: &[(&'static str, &'static [u8])]) -> Properties {
        let mut p = Properties::new();
        for (n, v) in pairs {
            p.push(*n, *v);
        }
        p
    }

    fn samples() -> Vec<Command> {
        vec![
            Command::Ready(ready(&[("Socket-Type", b"DEALER"), ("Identity", b"")])),
            Command::Ready(Properties::new()),
            Command::Error {
                reason: Bytes::from_static(b"nope"),
            },
            Command::Error {
                reason: Bytes::new(),
            },
            Command::Subscribe(Bytes::from_static(b"topic")),
            Command::Subscribe(Bytes::new()),
            Command::Cancel(Bytes::from_static(b"\x00\x01")),
            Command::Ping {
                ttl_deciseconds: 300,
                context: Bytes::from_static(b"ctx"),
            },
            Command::Ping {
                ttl_deciseconds: 0,
                context: Bytes::new(),
            },
            Command::Pong {
                context: Bytes::from_static(b"ctx"),
            },
            Command::Hello {
                username: Bytes::from_static(b"admin"),
                password: Bytes::from_static(b"secret"),
            },
            Command::Welcome,
            Command::Initiate(ready(&[("Socket-Type", b"PUSH")])),
            Command::Unknown {
                name: Bytes::from_static(b"JOIN"),
            },
        ]
    }

    #[test]
    fn every_command_round_trips() {
        for cmd in samples() {
            assert_eq!(Command::parse(body(&cmd)).unwrap(), cmd);
        }
    }

    #[test]
    fn ready_matches_the_rfc_wire_format() {
        let cmd = Command::Ready(ready(&[("Socket-Type", b"PUB")]));
        let mut expected = Vec::new();
        expected.extend_from_slice(b"\x05READY");
        expected.extend_from_slice(b"\x0bSocket-Type\x00\x00\x00\x03PUB");
        assert_eq!(&body(&cmd)[..], &expected[..]);
        assert_eq!(&body(&Command::Welcome)[..], b"\x07WELCOME");
        let ping = Command::Ping {
            ttl_deciseconds: 0x0102,
            context: Bytes::from_static(b"c"),
        };
        assert_eq!(&body(&ping)[..], b"\x04PING\x01\x02c");
    }

    #[test]
    fn properties_are_case_insensitive_and_keep_order() {
        let p = ready(&[("socket-type", b"SUB"), ("IDENTITY", b"id"), ("X-a", b"1")]);
        assert_eq!(p.socket_type(), Some(SocketType::Sub));
        assert_eq!(p.identity().map(|b| &b[..]), Some(&b"id"[..]));
        assert_eq!(p.len(), 3);
        let names: Vec<_> = p.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(names, ["socket-type", "IDENTITY", "X-a"]);
        assert_eq!(ready(&[("Socket-Type", b"sub")]).socket_type(), None);
        assert!(Properties::new().is_empty());
    }

    #[test]
    fn unencodable_properties_are_skipped() {
        let mut p = Properties::new();
        p.push("", "x");
        p.push(Bytes::from(vec![b'n'; 256]), "x");
        p.push("ok", "v");
        let cmd = Command::Ready(p);
        let parsed = Command::parse(body(&cmd)).unwrap();
        assert_eq!(parsed, Command::Ready(ready(&[("ok", b"v")])));
    }

    #[test]
    fn malformed_ready_is_rejected() {
        let cases: &[(&[u8], &str)] = &[
            (b"\x05READY\x0bSocket-Ty", "truncated property name"),
            (b"\x05READY\x00\x00\x00\x00\x00", "empty property name"),
            (b"\x05READY\x01a\x00\x00", "truncated property value length"),
            (
                b"\x05READY\x01a\x00\x00\x00\x05abc",
                "property value beyond end of command",
            ),
            (
                b"\x05READY\x01a\xff\xff\xff\xff",
                "property value beyond end of command",
            ),
        ];
        for (raw, detail) in cases {
            let err = Command::parse(Bytes::from_static(raw)).unwrap_err();
            assert_eq!(
                err,
                ProtocolError::MalformedCommand {
                    command: "READY",
                    detail
                }
            );
            assert_eq!(err.reason(), "malformed_command");
        }
        assert!(Command::parse(Bytes::from_static(b"\x08INITIATE\x01")).is_err());
    }

    #[test]
    fn malformed_names_and_fields_are_rejected() {
        for raw in [
            &b""[..],
            b"\x00",
            b"\x05READ",
            b"\x04PING\x01",
            b"\x05ERROR",
            b"\x05ERROR\x05abc",
            b"\x05HELLO\x01",
            b"\x05HELLO\x01u\x03pw",
        ] {
            assert!(
                matches!(
                    Command::parse(Bytes::copy_from_slice(raw)),
                    Err(ProtocolError::MalformedCommand { .. })
                ),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn liberal_parsing() {
        // Long PING contexts are truncated to 16 bytes, like libzmq.
        let mut raw = b"\x04PING\x00\x0a".to_vec();
        raw.extend_from_slice(&[b'c'; 40]);
        let Command::Ping {
            ttl_deciseconds,
            context,
        } = Command::parse(Bytes::from(raw)).unwrap()
        else {
            panic!("not a PING");
        };
        assert_eq!(ttl_deciseconds, 10);
        assert_eq!(context.len(), MAX_PING_CONTEXT);
        // Trailing bytes after ERROR / HELLO fields and a WELCOME body are ignored.
        assert!(Command::parse(Bytes::from_static(b"\x05ERROR\x01xjunk")).is_ok());
        assert!(Command::parse(Bytes::from_static(b"\x05HELLO\x00\x00junk")).is_ok());
        assert_eq!(
            Command::parse(Bytes::from_static(b"\x07WELCOMEjunk")).unwrap(),
            Command::Welcome
        );
        // Names are case-sensitive; unknown names are returned, not refused.
        assert_eq!(
            Command::parse(Bytes::from_static(b"\x05ready")).unwrap(),
            Command::Unknown {
                name: Bytes::from_static(b"ready")
            }
        );
        assert_eq!(Command::Unknown { name: Bytes::new() }.name(), "UNKNOWN");
    }

    #[test]
    fn libzmq_misspelled_error_is_read_as_error() {
        // What libzmq 4.3.5 sends as a PLAIN server refusing a password.
        let raw = Bytes::from_static(b"^RROR\x03400");
        assert_eq!(
            Command::parse(raw).unwrap(),
            Command::Error {
                reason: Bytes::from_static(b"400")
            }
        );
        assert!(Command::parse(Bytes::from_static(b"^RROR\x05ab")).is_err());
        assert!(Command::parse(Bytes::from_static(b"^RRO")).is_err());
    }

    #[test]
    fn parsing_is_zero_copy() {
        let raw = body(&Command::Subscribe(Bytes::from_static(b"a-topic")));
        let Command::Subscribe(prefix) = Command::parse(raw.clone()).unwrap() else {
            panic!("not SUBSCRIBE");
        };
        let range = raw.as_ptr_range();
        assert!(range.contains(&prefix.as_ptr()));
    }
}
