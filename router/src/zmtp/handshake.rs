//! The sans-IO ZMTP 3.x handshake: greeting exchange, version negotiation and
//! the NULL, PLAIN or CURVE security mechanism, ending with both peers'
//! metadata (RFC 23 "Authentication and Confidentiality", RFC 24 for PLAIN,
//! RFC 25/26 for CURVE, whose commands [`super::curve`] reads and writes).
//!
//! The state machine never reads a socket: [`Handshake::advance`] takes the
//! bytes received so far and appends what must be sent. The peer's bytes may
//! arrive split at any offset (libzmq sends the first 10 greeting bytes, then
//! the rest); nothing is consumed from the input before a whole greeting or
//! command frame is present, and every command is bounded by
//! [`Limits::max_command_size`] before it is buffered.
//!
//! ```text
//! NULL:          greeting <-> greeting, READY <-> READY
//! PLAIN client:  greeting <-> greeting, HELLO ->, <- WELCOME, INITIATE ->, <- READY
//! PLAIN server:  greeting <-> greeting, <- HELLO, WELCOME ->, <- INITIATE, READY ->
//! CURVE:         as PLAIN, each command boxed; then every frame is a MESSAGE
//! ```
//!
//! A CURVE handshake leaves a [`Session`] behind
//! ([`Handshake::take_session`]): the keys the traffic phase seals and
//! opens frames with.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};

use super::command::{Command, PROPERTY_IDENTITY, PROPERTY_SOCKET_TYPE, Properties};
use super::curve::{self, CurveError, CurveKeypair, CurvePublicKey, Session};
use super::frame::{ProtocolError, decode_command, decode_command_body, encode_command};
use super::greeting::{GREETING_LEN, Greeting, GreetingError, MechanismName, OUR_VERSION};
use super::limits::Limits;
use super::socket_type::SocketType;

/// ERROR reason sent when PLAIN credentials are refused: the ZAP status code
/// libzmq sends, so libzmq clients report an authentication failure.
const AUTH_FAILED_REASON: &[u8] = b"400";

/// The security mechanism we run, and our role in it.
#[derive(Clone)]
pub enum Mechanism {
    /// NULL: no authentication, no encryption.
    Null,
    /// PLAIN client: sends these credentials (each at most 255 bytes).
    PlainClient {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// PLAIN server: accepts a client whose user name maps to its password.
    PlainServer {
        /// User name → password.
        credentials: Arc<HashMap<String, String>>,
    },
    /// CURVE server: our long-term keypair; admits the clients whose
    /// long-term public key is listed, under the name it maps to.
    CurveServer {
        /// Our long-term keypair (S, s).
        keys: Arc<CurveKeypair>,
        /// Allowed client public key → the name it authenticates as.
        clients: Arc<HashMap<CurvePublicKey, String>>,
    },
    /// CURVE client: our long-term keypair and the server's public key.
    CurveClient {
        /// Our long-term keypair (C, c).
        keys: Arc<CurveKeypair>,
        /// The server's long-term public key (S).
        server_key: CurvePublicKey,
    },
}

impl Mechanism {
    fn name(&self) -> MechanismName {
        match self {
            Mechanism::Null => MechanismName::NULL,
            Mechanism::PlainClient { .. } | Mechanism::PlainServer { .. } => MechanismName::PLAIN,
            Mechanism::CurveClient { .. } | Mechanism::CurveServer { .. } => MechanismName::CURVE,
        }
    }

    fn as_server(&self) -> bool {
        matches!(
            self,
            Mechanism::PlainServer { .. } | Mechanism::CurveServer { .. }
        )
    }
}

impl fmt::Debug for Mechanism {
    // Never print passwords or secret keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mechanism::Null => f.write_str("Null"),
            Mechanism::PlainClient { username, .. } => f
                .debug_struct("PlainClient")
                .field("username", username)
                .finish_non_exhaustive(),
            Mechanism::PlainServer { credentials } => f
                .debug_struct("PlainServer")
                .field("users", &credentials.len())
                .finish(),
            Mechanism::CurveServer { keys, clients } => f
                .debug_struct("CurveServer")
                .field("public", &keys.public())
                .field("clients", &clients.len())
                .finish_non_exhaustive(),
            Mechanism::CurveClient { keys, server_key } => f
                .debug_struct("CurveClient")
                .field("public", &keys.public())
                .field("server_key", server_key)
                .finish_non_exhaustive(),
        }
    }
}

/// What we announce and how we authenticate.
#[derive(Clone, Debug)]
pub struct HandshakeConfig {
    /// Our socket type, sent as `Socket-Type` and checked against the peer's.
    pub socket_type: SocketType,
    /// Our identity (routing id) sent as `Identity`; empty = none. At most
    /// 255 bytes, else the handshake fails with
    /// [`HandshakeError::IdentityTooLong`].
    pub identity: Bytes,
    /// Security mechanism and role.
    pub mechanism: Mechanism,
    /// Limits; the handshake uses `max_command_size`.
    pub limits: Limits,
}

/// What the handshake learned about the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's socket type (compatible with ours).
    pub socket_type: SocketType,
    /// The peer's `Identity` property; `None` when absent or empty. At most
    /// 255 bytes. May start with a zero byte (reserved by the RFC for
    /// generated ids; the ROUTER side decides what to do with it).
    pub identity: Option<Bytes>,
    /// Peer's minor version: 0 => ZMTP 3.0 (subscriptions as messages, no
    /// PING), >= 1 => 3.1. A peer with major version > 3 is recorded as 1.
    pub minor_version: u8,
    /// All the peer's metadata, in wire order.
    pub properties: Properties,
    /// The name the peer authenticated as (server side only): its PLAIN
    /// user name, or the name its CURVE key is listed under.
    pub user: Option<String>,
}

/// Why a handshake failed. The connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The peer's first bytes are not a ZMTP signature.
    #[error("bad greeting signature: the peer does not speak ZMTP 3.x")]
    BadSignature,
    /// The peer speaks ZMTP older than 3.0.
    #[error("unsupported ZMTP version {major}.{minor} (need 3.0 or later)")]
    UnsupportedVersion {
        /// Peer's major version.
        major: u8,
        /// Peer's minor version.
        minor: u8,
    },
    /// The peer uses another security mechanism.
    #[error("security mechanism mismatch: we use {ours}, the peer uses {theirs}")]
    MechanismMismatch {
        /// Ours.
        ours: MechanismName,
        /// The peer's (escaped when printed).
        theirs: MechanismName,
    },
    /// READY (or INITIATE) metadata is missing or invalid.
    #[error("malformed {command} metadata: {detail}")]
    MalformedReady {
        /// `"READY"` or `"INITIATE"`.
        command: &'static str,
        /// What is wrong.
        detail: &'static str,
    },
    /// The peer announced a socket type we do not know.
    #[error("unknown peer socket type \"{name}\"")]
    UnknownSocketType {
        /// The announced name, escaped.
        name: String,
    },
    /// The peer's socket type cannot talk to ours.
    #[error("incompatible socket types: we are {ours}, the peer is {theirs}")]
    IncompatibleSocketType {
        /// Ours.
        ours: SocketType,
        /// The peer's.
        theirs: SocketType,
    },
    /// PLAIN credentials refused (an ERROR was queued for the peer).
    #[error("PLAIN authentication failed for user \"{user}\"")]
    AuthFailed {
        /// The user name the client sent, escaped.
        user: String,
    },
    /// The CURVE handshake failed (an ERROR was queued for the peer when
    /// its key is not allowed).
    #[error(transparent)]
    Curve(#[from] CurveError),
    /// The peer sent ERROR.
    #[error("peer refused the handshake: \"{reason}\"")]
    PeerError {
        /// The peer's reason, escaped.
        reason: String,
    },
    /// The peer sent a valid command that is wrong at this step.
    #[error("unexpected {got} command while waiting for {expected}")]
    UnexpectedCommand {
        /// What arrived (`"UNKNOWN"` for an unknown command).
        got: &'static str,
        /// What the state machine waited for.
        expected: &'static str,
    },
    /// Our PLAIN user name or password is longer than 255 bytes.
    #[error("PLAIN user name or password longer than 255 bytes")]
    CredentialsTooLong,
    /// Our identity is longer than 255 bytes (RFC 23 limit).
    #[error("identity of {len} bytes is longer than 255 bytes")]
    IdentityTooLong {
        /// The configured identity's length.
        len: usize,
    },
    /// `advance` was called after the handshake had finished or failed.
    #[error("handshake already finished")]
    Finished,
    /// A framing or limit violation (e.g. an oversized command).
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

impl HandshakeError {
    /// A short, bounded label for metrics (`reason="version"`).
    pub fn reason(&self) -> &'static str {
        match self {
            HandshakeError::BadSignature => "bad_greeting",
            HandshakeError::UnsupportedVersion { .. } => "version",
            HandshakeError::MechanismMismatch { .. } => "mechanism",
            HandshakeError::MalformedReady { .. } => "malformed_ready",
            HandshakeError::UnknownSocketType { .. }
            | HandshakeError::IncompatibleSocketType { .. } => "socket_type",
            HandshakeError::AuthFailed { .. } => "auth",
            HandshakeError::Curve(e) => e.reason(),
            HandshakeError::PeerError { .. } => "peer_error",
            HandshakeError::UnexpectedCommand { .. } => "unexpected_command",
            HandshakeError::CredentialsTooLong | HandshakeError::IdentityTooLong { .. } => "config",
            HandshakeError::Finished => "state",
            HandshakeError::Protocol(e) => e.reason(),
        }
    }
}

impl From<GreetingError> for HandshakeError {
    fn from(e: GreetingError) -> Self {
        match e {
            GreetingError::BadSignature => HandshakeError::BadSignature,
            GreetingError::UnsupportedVersion { major, minor } => {
                HandshakeError::UnsupportedVersion { major, minor }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for the peer's 64-byte greeting.
    Greeting,
    /// NULL, or PLAIN client after INITIATE: waiting for READY.
    Ready,
    /// PLAIN client: waiting for WELCOME.
    Welcome,
    /// PLAIN server: waiting for HELLO.
    Hello,
    /// PLAIN server: waiting for INITIATE.
    Initiate,
    /// CURVE, either side: the commands go to `Handshake::curve`.
    Curve,
    /// Finished or failed: no more input is accepted.
    Finished,
}

/// The CURVE side we run, once the greetings named CURVE.
enum CurveRole {
    Server(curve::Server),
    Client(curve::Client),
}

/// The handshake state machine for one connection.
pub struct Handshake {
    cfg: HandshakeConfig,
    state: State,
    minor_version: u8,
    user: Option<String>,
    curve: Option<CurveRole>,
    session: Option<Session>,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("cfg", &self.cfg)
            .field("state", &self.state)
            .field("minor_version", &self.minor_version)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// Creates the state machine and appends our greeting (sent in full at
    /// once) to `out`.
    pub fn start(cfg: HandshakeConfig, out: &mut BytesMut) -> Self {
        Greeting::ours(cfg.mechanism.name(), cfg.mechanism.as_server()).encode(out);
        Handshake {
            cfg,
            state: State::Greeting,
            minor_version: 0,
            user: None,
            curve: None,
            session: None,
        }
    }

    /// After a CURVE handshake finished: the keys and nonces of the traffic
    /// phase (taken once). `None` for NULL and PLAIN.
    pub fn take_session(&mut self) -> Option<Session> {
        self.session.take()
    }

    /// Consumes what it can from `input`, appends what must be sent to `out`.
    ///
    /// `Ok(None)`: more input is needed. `Ok(Some(peer))`: done; bytes left in
    /// `input` belong to the traffic phase (decode them with
    /// [`super::frame::Decoder`]).
    ///
    /// # Errors
    /// Any [`HandshakeError`]; `out` may then hold an ERROR command to send
    /// before closing. Every later call returns [`HandshakeError::Finished`].
    pub fn advance(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<Option<PeerInfo>, HandshakeError> {
        let result = self.step(input, out);
        if !matches!(result, Ok(None)) {
            self.state = State::Finished;
        }
        result
    }

    fn step(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<Option<PeerInfo>, HandshakeError> {
        loop {
            if self.state == State::Finished {
                return Err(HandshakeError::Finished);
            }
            if self.state == State::Greeting {
                let Some(greeting) = Greeting::parse(input)? else {
                    return Ok(None);
                };
                input.advance(GREETING_LEN);
                self.on_greeting(greeting, out)?;
                continue;
            }
            if self.state == State::Curve {
                let Some(body) = decode_command_body(input, self.cfg.limits.max_command_size)?
                else {
                    return Ok(None);
                };
                if let Some(peer) = self.on_curve(body, out)? {
                    return Ok(Some(peer));
                }
                continue;
            }
            let Some(cmd) = decode_command(input, self.cfg.limits.max_command_size)
                .map_err(|e| malformed_metadata(e, out))?
            else {
                return Ok(None);
            };
            if let Some(peer) = self.on_command(cmd, out)? {
                return Ok(Some(peer));
            }
        }
    }

    fn on_greeting(&mut self, g: Greeting, out: &mut BytesMut) -> Result<(), HandshakeError> {
        self.minor_version = if g.major == OUR_VERSION.0 {
            g.minor
        } else {
            OUR_VERSION.1
        };
        // The peer's as-server bit is ignored, as libzmq does: libzmq 4.3
        // always sends 0, even as a PLAIN server. Roles come from our config;
        // two clients fail on the first unexpected command, two servers at the
        // handshake timeout.
        let len = self.cfg.identity.len();
        if len > 255 {
            return Err(HandshakeError::IdentityTooLong { len });
        }
        let ours = self.cfg.mechanism.name();
        if g.mechanism != ours {
            send_error(out, b"security mechanism mismatch");
            return Err(HandshakeError::MechanismMismatch {
                ours,
                theirs: g.mechanism,
            });
        }
        match &self.cfg.mechanism {
            Mechanism::Null => {
                encode_command(&Command::Ready(self.our_properties()), out);
                self.state = State::Ready;
            }
            Mechanism::PlainClient { username, password } => {
                if username.len() > 255 || password.len() > 255 {
                    return Err(HandshakeError::CredentialsTooLong);
                }
                let hello = Command::Hello {
                    username: Bytes::copy_from_slice(username.as_bytes()),
                    password: Bytes::copy_from_slice(password.as_bytes()),
                };
                encode_command(&hello, out);
                self.state = State::Welcome;
            }
            Mechanism::PlainServer { .. } => self.state = State::Hello,
            Mechanism::CurveServer { keys, clients } => {
                self.curve = Some(CurveRole::Server(curve::Server::new(
                    keys.clone(),
                    clients.clone(),
                )));
                self.state = State::Curve;
            }
            Mechanism::CurveClient { keys, server_key } => {
                let client = curve::Client::start(keys.clone(), *server_key, out)?;
                self.curve = Some(CurveRole::Client(client));
                self.state = State::Curve;
            }
        }
        Ok(())
    }

    /// One CURVE handshake command (its raw body).
    fn on_curve(
        &mut self,
        body: Bytes,
        out: &mut BytesMut,
    ) -> Result<Option<PeerInfo>, HandshakeError> {
        let (name, expected) = match &self.curve {
            Some(CurveRole::Server(s)) => s.expected(),
            Some(CurveRole::Client(c)) => c.expected(),
            None => return Err(HandshakeError::Finished),
        };
        if body.starts_with(b"\x05ERROR") || body.starts_with(b"^RROR") {
            return match Command::parse(body)? {
                Command::Error { reason } => Err(HandshakeError::PeerError {
                    reason: escape(&reason),
                }),
                other => Err(HandshakeError::UnexpectedCommand {
                    got: other.name(),
                    expected,
                }),
            };
        }
        if name.is_empty() || !body.starts_with(name) {
            send_error(out, b"unexpected command");
            let got = Command::parse(body).map_or("UNKNOWN", |c| c.name());
            return Err(HandshakeError::UnexpectedCommand { got, expected });
        }
        let mut ours = BytesMut::new();
        if matches!(expected, "INITIATE" | "WELCOME") {
            self.our_properties().encode(&mut ours);
        }
        match self.curve.as_mut() {
            Some(CurveRole::Server(s)) if expected == "HELLO" => {
                s.hello(&body, out)?;
                Ok(None)
            }
            Some(CurveRole::Server(s)) => {
                let (name, metadata) = match s.initiate(&body) {
                    Ok(v) => v,
                    Err(e @ CurveError::UnknownClient(_)) => {
                        send_error(out, AUTH_FAILED_REASON);
                        return Err(e.into());
                    }
                    Err(e) => return Err(e.into()),
                };
                let props = Properties::parse(metadata, "INITIATE")
                    .map_err(|e| malformed_metadata(e, out))?;
                self.user = Some(name);
                let peer = self.finish(props, "INITIATE", out)?;
                if let Some(CurveRole::Server(s)) = self.curve.as_mut() {
                    self.session = s.ready(&ours, out);
                }
                Ok(Some(peer))
            }
            Some(CurveRole::Client(c)) if expected == "WELCOME" => {
                c.welcome(&body, &ours, out)?;
                Ok(None)
            }
            Some(CurveRole::Client(c)) => {
                let (metadata, session) = c.ready(&body)?;
                let props =
                    Properties::parse(metadata, "READY").map_err(|e| malformed_metadata(e, out))?;
                let peer = self.finish(props, "READY", out)?;
                self.session = Some(session);
                Ok(Some(peer))
            }
            None => Err(HandshakeError::Finished),
        }
    }

    fn on_command(
        &mut self,
        cmd: Command,
        out: &mut BytesMut,
    ) -> Result<Option<PeerInfo>, HandshakeError> {
        let expected = match self.state {
            State::Ready => "READY",
            State::Welcome => "WELCOME",
            State::Hello => "HELLO",
            State::Initiate => "INITIATE",
            State::Greeting | State::Curve | State::Finished => "nothing",
        };
        match (self.state, cmd) {
            (_, Command::Error { reason }) => Err(HandshakeError::PeerError {
                reason: escape(&reason),
            }),
            (State::Ready, Command::Ready(props)) => self.finish(props, "READY", out).map(Some),
            (State::Welcome, Command::Welcome) => {
                encode_command(&Command::Initiate(self.our_properties()), out);
                self.state = State::Ready;
                Ok(None)
            }
            (State::Hello, Command::Hello { username, password }) => {
                self.check_credentials(&username, &password, out)?;
                encode_command(&Command::Welcome, out);
                self.state = State::Initiate;
                Ok(None)
            }
            (State::Initiate, Command::Initiate(props)) => {
                let peer = self.finish(props, "INITIATE", out)?;
                encode_command(&Command::Ready(self.our_properties()), out);
                Ok(Some(peer))
            }
            (_, other) => {
                send_error(out, b"unexpected command");
                Err(HandshakeError::UnexpectedCommand {
                    got: other.name(),
                    expected,
                })
            }
        }
    }

    fn check_credentials(
        &mut self,
        username: &[u8],
        password: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), HandshakeError> {
        let Mechanism::PlainServer { credentials } = &self.cfg.mechanism else {
            return Err(HandshakeError::Finished);
        };
        let ok = std::str::from_utf8(username)
            .ok()
            .and_then(|u| credentials.get_key_value(u))
            .filter(|(_, expected)| constant_time_eq(expected.as_bytes(), password));
        match ok {
            Some((user, _)) => {
                self.user = Some(user.clone());
                Ok(())
            }
            None => {
                send_error(out, AUTH_FAILED_REASON);
                Err(HandshakeError::AuthFailed {
                    user: escape(username),
                })
            }
        }
    }

    /// Validates the peer's metadata and builds the [`PeerInfo`].
    fn finish(
        &mut self,
        properties: Properties,
        command: &'static str,
        out: &mut BytesMut,
    ) -> Result<PeerInfo, HandshakeError> {
        let result = self.check_metadata(&properties, command);
        let (socket_type, identity) = match result {
            Ok(v) => v,
            Err(e) => {
                send_error(out, b"invalid metadata or socket type");
                return Err(e);
            }
        };
        Ok(PeerInfo {
            socket_type,
            identity,
            minor_version: self.minor_version,
            properties,
            user: self.user.take(),
        })
    }

    fn check_metadata(
        &self,
        properties: &Properties,
        command: &'static str,
    ) -> Result<(SocketType, Option<Bytes>), HandshakeError> {
        let name = properties
            .get(PROPERTY_SOCKET_TYPE)
            .ok_or(HandshakeError::MalformedReady {
                command,
                detail: "missing Socket-Type property",
            })?;
        let theirs = SocketType::parse(name).ok_or_else(|| HandshakeError::UnknownSocketType {
            name: escape(&name[..name.len().min(64)]),
        })?;
        let ours = self.cfg.socket_type;
        if !ours.is_compatible_with(theirs) {
            return Err(HandshakeError::IncompatibleSocketType { ours, theirs });
        }
        let identity = match properties.identity() {
            Some(id) if id.len() > 255 => {
                return Err(HandshakeError::MalformedReady {
                    command,
                    detail: "Identity longer than 255 bytes",
                });
            }
            Some(id) if !id.is_empty() => Some(id.clone()),
            _ => None,
        };
        Ok((theirs, identity))
    }

    fn our_properties(&self) -> Properties {
        let mut p = Properties::new();
        let t = self.cfg.socket_type;
        p.push(PROPERTY_SOCKET_TYPE, t.as_str());
        // libzmq always announces an identity for these types, possibly empty.
        let announces = matches!(t, SocketType::Req | SocketType::Dealer | SocketType::Router);
        if announces || !self.cfg.identity.is_empty() {
            p.push(PROPERTY_IDENTITY, self.cfg.identity.clone());
        }
        p
    }
}

/// A READY or INITIATE whose metadata does not parse is reported as
/// [`HandshakeError::MalformedReady`] (one metric label for every broken
/// READY), and the peer is told.
fn malformed_metadata(e: ProtocolError, out: &mut BytesMut) -> HandshakeError {
    match e {
        ProtocolError::MalformedCommand {
            command: command @ ("READY" | "INITIATE"),
            detail,
        } => {
            send_error(out, b"malformed metadata");
            HandshakeError::MalformedReady { command, detail }
        }
        other => HandshakeError::Protocol(other),
    }
}

fn send_error(out: &mut BytesMut, reason: &'static [u8]) {
    encode_command(
        &Command::Error {
            reason: Bytes::from_static(reason),
        },
        out,
    );
}

/// Peer bytes made printable; callers bound the input length.
fn escape(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// Compares without an early exit on the first differing byte, so the time
/// taken does not reveal how much of a password was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
