//! CURVE long-term keys and their Z85 text (the 40-character form libzmq,
//! pyzmq and `switchyard curve-keypair` print). Every Z85 key text in the
//! router is read by [`parse_z85_key`], and nowhere else.

use std::fmt;

use crypto_box::{PublicKey, SecretKey};
use zeroize::Zeroizing;

/// Bytes in a CURVE key (public or secret).
pub const KEY_LEN: usize = 32;
/// Characters in the Z85 text of a key.
pub const Z85_KEY_LEN: usize = 40;

/// The Z85 alphabet (ZeroMQ RFC 32), in value order.
const Z85_ALPHABET: &[u8; 85] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// Why a key text is not a Z85 CURVE key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyTextError {
    /// Not 40 characters long.
    #[error("a Z85 CURVE key is 40 characters, this one has {0}")]
    Length(usize),
    /// A character outside the Z85 alphabet (escaped when printed).
    #[error("{0:?} is not a Z85 character")]
    Charset(char),
    /// Z85 digits whose value does not fit in four bytes.
    #[error("is not valid Z85 (a group of five characters overflows)")]
    Overflow,
}

/// Reads the Z85 text of a 32-byte key: exactly 40 characters of the Z85
/// alphabet, surrounding whitespace ignored.
///
/// # Errors
/// [`KeyTextError`] on a wrong length, character or value.
pub fn parse_z85_key(text: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyTextError> {
    let text = text.trim();
    let count = text.chars().count();
    if count != Z85_KEY_LEN {
        return Err(KeyTextError::Length(count));
    }
    if let Some(bad) = text
        .chars()
        .find(|c| !c.is_ascii() || !Z85_ALPHABET.contains(&(*c as u8)))
    {
        return Err(KeyTextError::Charset(bad));
    }
    // The charset and length are checked: the crate's only remaining
    // refusal is a group whose value exceeds 2^32 - 1.
    let raw = Zeroizing::new(z85::decode(text).map_err(|_| KeyTextError::Overflow)?);
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if raw.len() != KEY_LEN {
        return Err(KeyTextError::Overflow);
    }
    key.copy_from_slice(&raw);
    Ok(key)
}

/// The Z85 text of a 32-byte key (40 characters).
pub fn z85_key(bytes: &[u8; KEY_LEN]) -> String {
    z85::encode(bytes)
}

/// A CURVE public key (ours, a peer's, or an allowed client's). Shown as its
/// Z85 text: public keys are not secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CurvePublicKey([u8; KEY_LEN]);

impl CurvePublicKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Reads its Z85 text.
    ///
    /// # Errors
    /// See [`parse_z85_key`].
    pub fn from_z85(text: &str) -> Result<Self, KeyTextError> {
        parse_z85_key(text).map(|k| Self(*k))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Its Z85 text.
    pub fn to_z85(&self) -> String {
        z85_key(&self.0)
    }

    pub(crate) fn to_box_key(self) -> PublicKey {
        PublicKey::from(self.0)
    }
}

impl fmt::Debug for CurvePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CurvePublicKey({})", self.to_z85())
    }
}

impl fmt::Display for CurvePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_z85())
    }
}

/// A CURVE secret key and the public key derived from it. `Debug` shows
/// only the public half; the secret bytes are wiped when dropped.
#[derive(Clone)]
pub struct CurveKeypair {
    secret: SecretKey,
    bytes: Zeroizing<[u8; KEY_LEN]>,
    public: CurvePublicKey,
}

impl CurveKeypair {
    /// The keypair of a secret key.
    pub fn from_secret_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let bytes = Zeroizing::new(bytes);
        let secret = SecretKey::from(*bytes);
        let public = CurvePublicKey(secret.public_key().to_bytes());
        Self {
            secret,
            bytes,
            public,
        }
    }

    /// Reads the Z85 text of a secret key.
    ///
    /// # Errors
    /// See [`parse_z85_key`].
    pub fn from_z85_secret(text: &str) -> Result<Self, KeyTextError> {
        parse_z85_key(text).map(|k| Self::from_secret_bytes(*k))
    }

    /// A fresh keypair from the operating system's random source.
    ///
    /// # Errors
    /// The OS random source failed.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::getrandom(&mut bytes[..])?;
        Ok(Self::from_secret_bytes(*bytes))
    }

    /// The public key.
    pub fn public(&self) -> CurvePublicKey {
        self.public
    }

    /// The secret key's Z85 text (for `switchyard curve-keypair` only).
    pub fn secret_z85(&self) -> Zeroizing<String> {
        Zeroizing::new(z85_key(&self.bytes))
    }

    pub(crate) fn secret(&self) -> &SecretKey {
        &self.secret
    }

    pub(crate) fn secret_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }
}

impl PartialEq for CurveKeypair {
    /// Constant time in the secret (the public key is derived from it).
    fn eq(&self, other: &Self) -> bool {
        self.secret == other.secret
    }
}

impl Eq for CurveKeypair {}

impl fmt::Debug for CurveKeypair {
    // Never the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurveKeypair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pair made by libzmq 4.3.5 (`zmq.curve_keypair()` in pyzmq).
    const LIBZMQ_PUBLIC: &str = "94M<}XHPqoez1KUKdmD2qo*w*Xd2fxbUIb@F@GE%";
    const LIBZMQ_SECRET: &str = "Ai1G-Xq1DK^/z>KbI5cQN]#]J(C:O#u/5/f1A.uM";

    #[test]
    fn libzmq_keypair_derives_the_same_public_key() {
        let pair = CurveKeypair::from_z85_secret(LIBZMQ_SECRET).expect("secret");
        assert_eq!(pair.public().to_z85(), LIBZMQ_PUBLIC);
        assert_eq!(&*pair.secret_z85(), LIBZMQ_SECRET);
    }

    #[test]
    fn z85_round_trips_and_matches_the_rfc_example() {
        // ZeroMQ RFC 32's test vector, padded out to a key's length.
        let mut bytes = [0u8; KEY_LEN];
        bytes[..8].copy_from_slice(&[0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B]);
        let text = z85_key(&bytes);
        assert!(text.starts_with("HelloWorld"), "{text}");
        assert_eq!(*parse_z85_key(&text).expect("key"), bytes);
        let pair = CurveKeypair::generate().expect("rng");
        let back = CurvePublicKey::from_z85(&pair.public().to_z85()).expect("public");
        assert_eq!(back, pair.public());
    }

    #[test]
    fn bad_key_texts_are_refused() {
        assert_eq!(
            parse_z85_key("abc").map(|_| ()),
            Err(KeyTextError::Length(3))
        );
        let quote = format!("{}\"", &LIBZMQ_PUBLIC[..39]);
        assert_eq!(
            parse_z85_key(&quote).map(|_| ()),
            Err(KeyTextError::Charset('"'))
        );
        let accent = format!("{}é", &LIBZMQ_PUBLIC[..39]);
        assert_eq!(
            parse_z85_key(&accent).map(|_| ()),
            Err(KeyTextError::Charset('é'))
        );
        // "#####" is 84 * (85^4 + ... + 1) > 2^32 - 1.
        let over = format!("#####{}", &LIBZMQ_PUBLIC[5..]);
        assert_eq!(
            parse_z85_key(&over).map(|_| ()),
            Err(KeyTextError::Overflow)
        );
        assert!(parse_z85_key(&format!("  {LIBZMQ_PUBLIC}\n")).is_ok());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let pair = CurveKeypair::from_z85_secret(LIBZMQ_SECRET).expect("secret");
        let shown = format!("{pair:?}");
        assert!(shown.contains(LIBZMQ_PUBLIC), "{shown}");
        assert!(!shown.contains(LIBZMQ_SECRET), "{shown}");
    }
}
