//! The ZMTP CURVE security mechanism (RFC 25 over CurveZMQ, RFC 26), sans-IO:
//! the server and client handshakes that [`super::handshake::Handshake`]
//! drives once the greetings have named CURVE, and the MESSAGE codec that
//! carries every frame of the traffic phase.
//!
//! ```text
//! client                                           server
//! HELLO    C', Box[64 zeros](C'->S)          ->
//!                                            <-    WELCOME  Box[S' + cookie](S->C')
//! INITIATE cookie, Box[C + vouch + meta](C'->S') ->          vouch = Box[C' + S](C->S')
//!                                            <-    READY    Box[meta](S'->C')
//! MESSAGE  Box[flags + frame](C'->S')        <->   MESSAGE  Box[flags + frame](S'->C')
//! ```
//!
//! Byte for byte what libzmq 4.3 (`curve_server.cpp`, `curve_client.cpp`,
//! `curve_mechanism_base.cpp`) sends and accepts: short nonces start at 1
//! on each side (client HELLO 1, INITIATE 2, messages from 3; server READY
//! 1, messages from 2), the cookie key is fresh for every connection, the
//! vouch is boxed from the client's long-term key to the server's
//! transient key (RFC 26 and libzmq agree), and a MESSAGE travels as an
//! ordinary one-frame message (libzmq sets neither MORE nor COMMAND on it;
//! the inner flags byte carries MORE = 1 and COMMAND = 2).
//!
//! The state machines are written here rather than taken from a crate: no
//! maintained, runtime-agnostic Rust crate implements both sides of ZMTP
//! CURVE in a form our sans-IO handshake and zero-copy codec can drive
//! (the `zeromq` crate has no CURVE at all). The cryptography is RustCrypto's
//! `crypto_box` (X25519 + XSalsa20Poly1305, NaCl-compatible) and
//! `crypto_secretbox`; nothing here implements a primitive.
//!
//! Every length is checked before a slice is taken (the CVE-2019-13132
//! class), every box is opened with a constant-time tag check, and a
//! failure is a [`CurveError`] with a bounded metric reason, never a panic.

mod client;
pub mod keys;
mod server;
pub mod traffic;

use bytes::{BufMut, BytesMut};
use crypto_box::SalsaBox;
use crypto_box::aead::consts::U24;
use crypto_box::aead::generic_array::GenericArray;
use crypto_box::aead::{AeadCore, AeadInPlace};
use zeroize::Zeroizing;

pub(crate) use client::Client;
pub use keys::{CurveKeypair, CurvePublicKey, KeyTextError, parse_z85_key};
pub(crate) use server::Server;
pub use traffic::{CurveDecoder, Opener, Sealer, Session};

/// Bytes of a box's authentication tag (Poly1305): a box is this much
/// larger than what it holds.
pub const TAG_LEN: usize = 16;
/// Bytes of a short (sequential) nonce on the wire.
pub const SHORT_NONCE_LEN: usize = 8;
/// Bytes of a long (random) nonce on the wire.
pub const LONG_NONCE_LEN: usize = 16;

const HELLO_PREFIX: &[u8; 16] = b"CurveZMQHELLO---";
const WELCOME_PREFIX: &[u8; 8] = b"WELCOME-";
const INITIATE_PREFIX: &[u8; 16] = b"CurveZMQINITIATE";
const READY_PREFIX: &[u8; 16] = b"CurveZMQREADY---";
const COOKIE_PREFIX: &[u8; 8] = b"COOKIE--";
const VOUCH_PREFIX: &[u8; 8] = b"VOUCH---";
/// MESSAGE nonce prefix of what the client sends.
const MESSAGE_FROM_CLIENT: &[u8; 16] = b"CurveZMQMESSAGEC";
/// MESSAGE nonce prefix of what the server sends.
const MESSAGE_FROM_SERVER: &[u8; 16] = b"CurveZMQMESSAGES";

const HELLO_NAME: &[u8] = b"\x05HELLO";
const WELCOME_NAME: &[u8] = b"\x07WELCOME";
const INITIATE_NAME: &[u8] = b"\x08INITIATE";
const READY_NAME: &[u8] = b"\x05READY";

/// HELLO: name 6, version 2, padding 72, C' 32, nonce 8, signature box 80.
const HELLO_LEN: usize = 200;
const HELLO_PADDING: std::ops::Range<usize> = 8..80;
/// WELCOME: name 8, long nonce 16, box of S' + cookie (32 + 96 + 16).
const WELCOME_LEN: usize = 168;
/// The cookie: long nonce 16 + box of C' + s' (64 + 16).
const COOKIE_LEN: usize = 96;
/// INITIATE without metadata: name 9, cookie 96, nonce 8, box of C + vouch
/// (32 + 96 + 16).
const INITIATE_MIN_LEN: usize = 257;
/// The vouch: long nonce 16 + box of C' + S (64 + 16).
const VOUCH_LEN: usize = 96;
/// READY without metadata: name 6, nonce 8, empty box 16.
const READY_MIN_LEN: usize = 30;

/// Why a CURVE handshake failed. One place for the reasons: the ZMTP
/// metrics count them (`zmtp_handshake_failures_total{reason}`), and an
/// owner may count them again as it likes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CurveError {
    /// HELLO of the wrong size, version or with non-zero padding.
    #[error("malformed CURVE HELLO: {0}")]
    BadHello(&'static str),
    /// HELLO's signature box does not open with our secret key: the client
    /// was given another server key.
    #[error("CURVE HELLO does not open with our key: the client uses another server key")]
    WrongServerKey,
    /// INITIATE too short, or its box does not open with this connection's
    /// transient keys.
    #[error("malformed CURVE INITIATE: {0}")]
    BadInitiate(&'static str),
    /// The INITIATE cookie does not open with this connection's cookie key
    /// (a cookie from another connection, or forged), or does not name this
    /// connection's keys.
    #[error("CURVE INITIATE cookie is not this connection's")]
    BadCookie,
    /// The vouch does not open, or names another transient key or another
    /// server key.
    #[error("CURVE vouch refused: {0}")]
    BadVouch(&'static str),
    /// The client's long-term key is not in the allowed set.
    #[error("CURVE client key {0} is not allowed")]
    UnknownClient(CurvePublicKey),
    /// A short nonce did not increase (a replayed or reordered command).
    #[error("CURVE short nonce did not increase (replay)")]
    Replay,
    /// WELCOME of the wrong size, or whose box does not open with the server
    /// key we were given.
    #[error("malformed or forged CURVE WELCOME: {0}")]
    BadWelcome(&'static str),
    /// READY too short, or its box does not open.
    #[error("malformed or forged CURVE READY: {0}")]
    BadReady(&'static str),
    /// The OS random source failed (no keys, no nonces).
    #[error("the OS random source failed")]
    Rng,
}

impl CurveError {
    /// Every reason [`CurveError::reason`] returns.
    pub const REASONS: [&'static str; 10] = [
        "curve_bad_hello",
        "curve_wrong_server_key",
        "curve_bad_initiate",
        "curve_bad_cookie",
        "curve_bad_vouch",
        "curve_unknown_client",
        "curve_replay",
        "curve_bad_welcome",
        "curve_bad_ready",
        "curve_rng",
    ];

    /// The bounded metric label (`reason="curve_bad_cookie"`).
    pub fn reason(&self) -> &'static str {
        match self {
            CurveError::BadHello(_) => "curve_bad_hello",
            CurveError::WrongServerKey => "curve_wrong_server_key",
            CurveError::BadInitiate(_) => "curve_bad_initiate",
            CurveError::BadCookie => "curve_bad_cookie",
            CurveError::BadVouch(_) => "curve_bad_vouch",
            CurveError::UnknownClient(_) => "curve_unknown_client",
            CurveError::Replay => "curve_replay",
            CurveError::BadWelcome(_) => "curve_bad_welcome",
            CurveError::BadReady(_) => "curve_bad_ready",
            CurveError::Rng => "curve_rng",
        }
    }
}

/// A 24-byte nonce: `prefix` then `tail` (16 + 8 or 8 + 16 bytes).
fn nonce(prefix: &[u8], tail: &[u8]) -> crypto_box::Nonce {
    debug_assert_eq!(prefix.len() + tail.len(), 24);
    let mut n = crypto_box::Nonce::default();
    n[..prefix.len()].copy_from_slice(prefix);
    n[prefix.len()..].copy_from_slice(tail);
    n
}

fn short_nonce(prefix: &[u8; 16], n: u64) -> crypto_box::Nonce {
    nonce(prefix, &n.to_be_bytes())
}

/// Reads a big-endian short nonce; `at` holds at least 8 bytes (callers
/// check the command length first).
fn read_short_nonce(at: &[u8]) -> u64 {
    let mut b = [0u8; SHORT_NONCE_LEN];
    b.copy_from_slice(&at[..SHORT_NONCE_LEN]);
    u64::from_be_bytes(b)
}

/// Random bytes from the OS.
fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>, CurveError> {
    let mut b = Zeroizing::new([0u8; N]);
    getrandom::getrandom(&mut b[..]).map_err(|_| CurveError::Rng)?;
    Ok(b)
}

/// Appends `Box[plaintext]` (tag, then ciphertext, as NaCl lays it out).
fn seal_into<A>(cipher: &A, nonce: &crypto_box::Nonce, plaintext: &[u8], out: &mut BytesMut)
where
    A: AeadInPlace + AeadCore<NonceSize = U24>,
{
    let at = out.len();
    out.put_bytes(0, TAG_LEN);
    out.put_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(nonce, b"", &mut out[at + TAG_LEN..])
        .expect("sealing with no associated data cannot fail");
    out[at..at + TAG_LEN].copy_from_slice(&tag);
}

/// Opens `boxed` (tag, then ciphertext) into a fresh, wiped-on-drop buffer;
/// `None` when it is too short or the tag does not match.
fn open<A>(cipher: &A, nonce: &crypto_box::Nonce, boxed: &[u8]) -> Option<Zeroizing<Vec<u8>>>
where
    A: AeadInPlace + AeadCore<NonceSize = U24>,
{
    let (tag, ciphertext) = boxed.split_at_checked(TAG_LEN)?;
    let mut plain = Zeroizing::new(ciphertext.to_vec());
    cipher
        .decrypt_in_place_detached(nonce, b"", &mut plain, GenericArray::from_slice(tag))
        .ok()?;
    Some(plain)
}

/// The precomputed box between one of our secret keys and a peer's public
/// key (`crypto_box_beforenm`).
fn salsa_box(theirs: &CurvePublicKey, ours: &crypto_box::SecretKey) -> SalsaBox {
    SalsaBox::new(&theirs.to_box_key(), ours)
}

/// Compares two 32-byte keys without an early exit.
fn same_key(a: &[u8], b: &[u8; 32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
