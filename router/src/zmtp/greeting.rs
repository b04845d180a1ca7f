//! The 64-byte ZMTP 3.x greeting: signature, version, security mechanism,
//! as-server flag and filler (RFC 23 "Greeting").
//!
//! ```text
//! offset  0      1..9      9      10     11     12..32     32         33..64
//!         0xFF   padding   0x7F   major  minor  mechanism  as-server  filler
//! ```
//!
//! [`Greeting::parse`] validates whatever prefix has arrived so far, so a
//! peer speaking ZMTP 1.0/2.0 (or not ZMTP at all) is refused as soon as the
//! offending byte arrives instead of after the handshake timeout.

use bytes::{BufMut, BytesMut};
use std::fmt;

/// Length of a ZMTP 3.x greeting, in bytes.
pub const GREETING_LEN: usize = 64;
/// Length of the mechanism field, in bytes.
pub const MECHANISM_LEN: usize = 20;
/// The protocol version we speak: ZMTP 3.1.
pub const OUR_VERSION: (u8, u8) = (3, 1);

const SIGNATURE_START: u8 = 0xFF;
const SIGNATURE_END: u8 = 0x7F;
const MAJOR_AT: usize = 10;
const MINOR_AT: usize = 11;
const MECHANISM_AT: usize = 12;
const AS_SERVER_AT: usize = 32;

/// Errors found while reading a peer's greeting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GreetingError {
    /// The first ten bytes are not a ZMTP signature (`0xFF`, padding, `0x7F`).
    #[error("bad greeting signature: the peer does not speak ZMTP 3.x")]
    BadSignature,
    /// The peer speaks a ZMTP version older than 3.0.
    #[error("unsupported ZMTP version {major}.{minor} (need 3.0 or later)")]
    UnsupportedVersion {
        /// Major version the peer announced.
        major: u8,
        /// Minor version the peer announced (0 if it had not arrived yet).
        minor: u8,
    },
}

/// A security mechanism name as carried in the greeting: ASCII, null-padded
/// to 20 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MechanismName([u8; MECHANISM_LEN]);

impl MechanismName {
    /// The NULL mechanism (no security).
    pub const NULL: MechanismName = MechanismName::from_static("NULL");
    /// The PLAIN mechanism (clear-text username and password, RFC 24).
    pub const PLAIN: MechanismName = MechanismName::from_static("PLAIN");
    /// The CURVE mechanism (RFC 25/26; see [`super::curve`]).
    pub const CURVE: MechanismName = MechanismName::from_static("CURVE");

    const fn from_static(name: &str) -> MechanismName {
        let src = name.as_bytes();
        assert!(src.len() <= MECHANISM_LEN, "mechanism name too long");
        let mut raw = [0u8; MECHANISM_LEN];
        let mut i = 0;
        while i < src.len() {
            raw[i] = src[i];
            i += 1;
        }
        MechanismName(raw)
    }

    /// Wraps the raw 20-byte field of a greeting.
    pub fn from_raw(raw: [u8; MECHANISM_LEN]) -> MechanismName {
        MechanismName(raw)
    }

    /// The raw 20-byte field, padding included.
    pub fn raw(&self) -> &[u8; MECHANISM_LEN] {
        &self.0
    }

    /// The name without its null padding.
    pub fn name(&self) -> &[u8] {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(MECHANISM_LEN);
        &self.0[..end]
    }
}

impl fmt::Display for MechanismName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Peer-controlled: print it escaped, never raw.
        write!(f, "{}", self.name().escape_ascii())
    }
}

impl fmt::Debug for MechanismName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MechanismName(\"{self}\")")
    }
}

/// A decoded greeting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Greeting {
    /// Major protocol version (3 for ZMTP 3.x).
    pub major: u8,
    /// Minor protocol version (0 for ZMTP 3.0, 1 for 3.1).
    pub minor: u8,
    /// Security mechanism.
    pub mechanism: MechanismName,
    /// Whether the sender acts as the server of the mechanism (PLAIN, CURVE);
    /// meaningless for NULL.
    pub as_server: bool,
}

impl Greeting {
    /// Our greeting: ZMTP 3.1 with the given mechanism and role.
    pub fn ours(mechanism: MechanismName, as_server: bool) -> Greeting {
        Greeting {
            major: OUR_VERSION.0,
            minor: OUR_VERSION.1,
            mechanism,
            as_server,
        }
    }

    /// Appends the 64-byte greeting to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(GREETING_LEN);
        out.put_u8(SIGNATURE_START);
        out.put_bytes(0, 8);
        out.put_u8(SIGNATURE_END);
        out.put_u8(self.major);
        out.put_u8(self.minor);
        out.put_slice(&self.mechanism.0);
        out.put_u8(u8::from(self.as_server));
        out.put_bytes(0, GREETING_LEN - AS_SERVER_AT - 1);
    }

    /// Validates the prefix of a peer's greeting that has arrived so far.
    ///
    /// Returns `Ok(None)` while fewer than [`GREETING_LEN`] bytes are present
    /// and nothing seen so far is wrong, `Ok(Some(greeting))` once all 64 bytes
    /// are there. Only the first 64 bytes of `bytes` are looked at.
    ///
    /// Liberal where libzmq is: the padding and filler are ignored, and the
    /// end of the signature only needs its low bit set.
    ///
    /// # Errors
    /// [`GreetingError::BadSignature`] or [`GreetingError::UnsupportedVersion`]
    /// as soon as the offending byte is present.
    pub fn parse(bytes: &[u8]) -> Result<Option<Greeting>, GreetingError> {
        if bytes.first().is_some_and(|&b| b != SIGNATURE_START) {
            return Err(GreetingError::BadSignature);
        }
        if bytes.get(9).is_some_and(|&b| b & 0x01 == 0) {
            return Err(GreetingError::BadSignature);
        }
        if let Some(&major) = bytes.get(MAJOR_AT)
            && major < 3
        {
            let minor = bytes.get(MINOR_AT).copied().unwrap_or(0);
            return Err(GreetingError::UnsupportedVersion { major, minor });
        }
        let Some(g) = bytes.get(..GREETING_LEN) else {
            return Ok(None);
        };
        let mut mechanism = [0u8; MECHANISM_LEN];
        mechanism.copy_from_slice(&g[MECHANISM_AT..MECHANISM_AT + MECHANISM_LEN]);
        Ok(Some(Greeting {
            major: g[MAJOR_AT],
            minor: g[MINOR_AT],
            mechanism: MechanismName(mechanism),
            as_server: g[AS_SERVER_AT] != 0,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours() -> BytesMut {
        let mut out = BytesMut::new();
        Greeting::ours(MechanismName::NULL, false).encode(&mut out);
        out
    }

    #[test]
    fn our_greeting_is_64_bytes_and_parses_back() {
        let out = ours();
        assert_eq!(out.len(), GREETING_LEN);
        assert_eq!(out[0], 0xFF);
        assert_eq!(out[9], 0x7F);
        assert_eq!(&out[10..12], &[3, 1]);
        assert_eq!(&out[12..17], b"NULL\0");
        let g = Greeting::parse(&out).unwrap().unwrap();
        assert_eq!(g, Greeting::ours(MechanismName::NULL, false));
        assert_eq!(g.mechanism.name(), b"NULL");

        let mut plain = BytesMut::new();
        Greeting::ours(MechanismName::PLAIN, true).encode(&mut plain);
        let g = Greeting::parse(&plain).unwrap().unwrap();
        assert!(g.as_server);
        assert_eq!(g.mechanism, MechanismName::PLAIN);
    }

    #[test]
    fn every_prefix_is_incomplete_not_an_error() {
        let out = ours();
        for n in 0..GREETING_LEN {
            assert_eq!(Greeting::parse(&out[..n]), Ok(None), "prefix {n}");
        }
    }

    #[test]
    fn bad_signature_is_refused_on_the_first_byte() {
        assert_eq!(Greeting::parse(b"G"), Err(GreetingError::BadSignature));
        assert_eq!(
            Greeting::parse(b"GET / HTTP/1.1\r\n"),
            Err(GreetingError::BadSignature)
        );
        let mut g = ours();
        g[9] = 0x00;
        assert_eq!(Greeting::parse(&g[..10]), Err(GreetingError::BadSignature));
    }

    #[test]
    fn padding_is_not_significant() {
        // libzmq puts an identity length in the padding for ZMTP 1.0 peers.
        let mut g = ours();
        g[1..9].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]);
        g[40] = 0xAA; // filler
        assert!(Greeting::parse(&g).unwrap().is_some());
    }

    #[test]
    fn old_versions_are_refused_as_soon_as_the_version_arrives() {
        let mut g = ours();
        g[10] = 2;
        assert_eq!(
            Greeting::parse(&g[..11]),
            Err(GreetingError::UnsupportedVersion { major: 2, minor: 0 })
        );
        g[11] = 7;
        assert_eq!(
            Greeting::parse(&g[..12]),
            Err(GreetingError::UnsupportedVersion { major: 2, minor: 7 })
        );
        g[10] = 1;
        assert!(matches!(
            Greeting::parse(&g),
            Err(GreetingError::UnsupportedVersion { major: 1, .. })
        ));
    }

    #[test]
    fn newer_versions_are_accepted() {
        for (major, minor) in [(3, 0), (3, 1), (3, 9), (4, 0), (255, 255)] {
            let mut g = ours();
            g[10] = major;
            g[11] = minor;
            let parsed = Greeting::parse(&g).unwrap().unwrap();
            assert_eq!((parsed.major, parsed.minor), (major, minor));
        }
    }

    #[test]
    fn mechanism_names_print_escaped() {
        let mut raw = [0u8; MECHANISM_LEN];
        raw[..3].copy_from_slice(b"a\n\xff");
        let m = MechanismName::from_raw(raw);
        assert_eq!(m.to_string(), "a\\n\\xff");
        assert_eq!(MechanismName::CURVE.to_string(), "CURVE");
        let full = MechanismName::from_raw([b'X'; MECHANISM_LEN]);
        assert_eq!(full.name().len(), MECHANISM_LEN);
    }
}
