//! The CURVE server: HELLO in, WELCOME out, INITIATE in, READY out.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use crypto_box::SalsaBox;
use crypto_box::aead::generic_array::GenericArray;
use crypto_secretbox::{KeyInit, XSalsa20Poly1305};
use zeroize::Zeroizing;

use super::traffic::{Session, Side};
use super::{
    COOKIE_LEN, COOKIE_PREFIX, CurveError, CurveKeypair, CurvePublicKey, HELLO_LEN, HELLO_PADDING,
    HELLO_PREFIX, INITIATE_MIN_LEN, INITIATE_PREFIX, LONG_NONCE_LEN, READY_NAME, READY_PREFIX,
    SHORT_NONCE_LEN, TAG_LEN, VOUCH_LEN, VOUCH_PREFIX, WELCOME_LEN, WELCOME_NAME, WELCOME_PREFIX,
    nonce, open, random, read_short_nonce, salsa_box, same_key, seal_into, short_nonce,
};
use crate::zmtp::frame::encode_command_header;

/// Where the server is.
enum State {
    /// Waiting for HELLO.
    Hello,
    /// WELCOME sent; waiting for INITIATE. What the cookie also holds is
    /// kept to check the cookie against.
    Initiate {
        client_transient: CurvePublicKey,
        transient: CurveKeypair,
        cookie_key: Zeroizing<[u8; 32]>,
        hello_nonce: u64,
    },
    /// INITIATE accepted; READY to send.
    Accepted { session: SalsaBox, peer_nonce: u64 },
    /// READY sent, or failed.
    Done,
}

/// The server side of one connection's CURVE handshake.
pub(crate) struct Server {
    keys: Arc<CurveKeypair>,
    clients: Arc<HashMap<CurvePublicKey, String>>,
    state: State,
}

impl Server {
    /// A server with long-term `keys`, admitting the `clients` (key → name).
    pub(crate) fn new(
        keys: Arc<CurveKeypair>,
        clients: Arc<HashMap<CurvePublicKey, String>>,
    ) -> Self {
        Server {
            keys,
            clients,
            state: State::Hello,
        }
    }

    /// The command name (with its length byte) expected next.
    pub(crate) fn expected(&self) -> (&'static [u8], &'static str) {
        match self.state {
            State::Hello => (b"\x05HELLO", "HELLO"),
            State::Initiate { .. } => (b"\x08INITIATE", "INITIATE"),
            State::Accepted { .. } | State::Done => (b"", "nothing"),
        }
    }

    /// Takes the client's HELLO and appends our WELCOME to `out`.
    pub(crate) fn hello(&mut self, hello: &[u8], out: &mut BytesMut) -> Result<(), CurveError> {
        if !matches!(self.state, State::Hello) {
            return Err(CurveError::BadHello("HELLO out of order"));
        }
        self.state = State::Done;
        if hello.len() != HELLO_LEN {
            return Err(CurveError::BadHello("not 200 bytes"));
        }
        if hello[6..8] != [1, 0] {
            return Err(CurveError::BadHello("version is not 1.0"));
        }
        if hello[HELLO_PADDING].iter().any(|&b| b != 0) {
            return Err(CurveError::BadHello("padding is not 72 zero bytes"));
        }
        let mut c_prime = [0u8; 32];
        c_prime.copy_from_slice(&hello[80..112]);
        let client_transient = CurvePublicKey::from_bytes(c_prime);
        let hello_nonce = read_short_nonce(&hello[112..120]);
        let to_client = salsa_box(&client_transient, self.keys.secret());
        let signature = open(
            &to_client,
            &short_nonce(HELLO_PREFIX, hello_nonce),
            &hello[120..200],
        )
        .ok_or(CurveError::WrongServerKey)?;
        if signature.iter().any(|&b| b != 0) {
            return Err(CurveError::BadHello("signature is not 64 zero bytes"));
        }

        // A fresh transient key and cookie key for this connection alone.
        let transient = CurveKeypair::from_secret_bytes(*random::<32>()?);
        let cookie_key = random::<32>()?;
        let cookie_nonce = random::<LONG_NONCE_LEN>()?;
        let mut cookie_text = Zeroizing::new([0u8; 64]);
        cookie_text[..32].copy_from_slice(client_transient.as_bytes());
        cookie_text[32..].copy_from_slice(transient.secret_bytes());
        let mut welcome_text = BytesMut::with_capacity(128 + TAG_LEN);
        welcome_text.put_slice(transient.public().as_bytes());
        welcome_text.put_slice(&cookie_nonce[..]);
        let cookie_box = XSalsa20Poly1305::new(GenericArray::from_slice(&cookie_key[..]));
        seal_into(
            &cookie_box,
            &nonce(COOKIE_PREFIX, &cookie_nonce[..]),
            &cookie_text[..],
            &mut welcome_text,
        );
        debug_assert_eq!(welcome_text.len(), 32 + COOKIE_LEN);

        let welcome_nonce = random::<LONG_NONCE_LEN>()?;
        encode_command_header(WELCOME_LEN, out);
        let at = out.len();
        out.put_slice(WELCOME_NAME);
        out.put_slice(&welcome_nonce[..]);
        seal_into(
            &to_client,
            &nonce(WELCOME_PREFIX, &welcome_nonce[..]),
            &welcome_text,
            out,
        );
        // The cookie holds s' in the clear before sealing: wipe the copy.
        zeroize::Zeroize::zeroize(&mut welcome_text[..]);
        debug_assert_eq!(out.len() - at, WELCOME_LEN);
        self.state = State::Initiate {
            client_transient,
            transient,
            cookie_key,
            hello_nonce,
        };
        Ok(())
    }

    /// Takes the client's INITIATE: on success returns the client's name
    /// and its metadata (unparsed); READY is sent by [`Server::ready`] once
    /// the caller accepted the metadata.
    pub(crate) fn initiate(&mut self, initiate: &[u8]) -> Result<(String, Bytes), CurveError> {
        let State::Initiate {
            client_transient,
            transient,
            cookie_key,
            hello_nonce,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(CurveError::BadInitiate("INITIATE out of order"));
        };
        // Bound every length before slicing (CVE-2019-13132).
        if initiate.len() < INITIATE_MIN_LEN {
            return Err(CurveError::BadInitiate("shorter than 257 bytes"));
        }
        let cookie = &initiate[9..9 + COOKIE_LEN];
        let cookie_box = XSalsa20Poly1305::new(GenericArray::from_slice(&cookie_key[..]));
        let opened = open(
            &cookie_box,
            &nonce(COOKIE_PREFIX, &cookie[..LONG_NONCE_LEN]),
            &cookie[LONG_NONCE_LEN..],
        )
        .ok_or(CurveError::BadCookie)?;
        let ours = transient.secret_bytes();
        if opened.len() != 64
            || !same_key(&opened[..32], client_transient.as_bytes())
            || !same_key(&opened[32..], ours)
        {
            return Err(CurveError::BadCookie);
        }

        let at = 9 + COOKIE_LEN;
        let n = read_short_nonce(&initiate[at..at + SHORT_NONCE_LEN]);
        if n <= hello_nonce {
            return Err(CurveError::Replay);
        }
        let session = salsa_box(&client_transient, transient.secret());
        let text = open(
            &session,
            &short_nonce(INITIATE_PREFIX, n),
            &initiate[at + SHORT_NONCE_LEN..],
        )
        .ok_or(CurveError::BadInitiate("box does not open"))?;
        // 257 bytes and more hold a box of at least 144: a text of 128+.
        let (Some(client), Some(vouch), Some(metadata)) = (
            text.get(..32),
            text.get(32..32 + VOUCH_LEN),
            text.get(128..),
        ) else {
            return Err(CurveError::BadInitiate("box shorter than 144 bytes"));
        };
        let mut c = [0u8; 32];
        c.copy_from_slice(client);
        let client = CurvePublicKey::from_bytes(c);

        let vouch_box = salsa_box(&client, transient.secret());
        let vouched = open(
            &vouch_box,
            &nonce(VOUCH_PREFIX, &vouch[..LONG_NONCE_LEN]),
            &vouch[LONG_NONCE_LEN..],
        )
        .ok_or(CurveError::BadVouch("does not open with the client's key"))?;
        if vouched.len() != 64 || !same_key(&vouched[..32], client_transient.as_bytes()) {
            return Err(CurveError::BadVouch("names another transient key"));
        }
        if !same_key(&vouched[32..], self.keys.public().as_bytes()) {
            return Err(CurveError::BadVouch("names another server key"));
        }
        let Some(name) = self.clients.get(&client) else {
            return Err(CurveError::UnknownClient(client));
        };
        let metadata = Bytes::copy_from_slice(metadata);
        self.state = State::Accepted {
            session,
            peer_nonce: n,
        };
        Ok((name.clone(), metadata))
    }

    /// Appends READY with our `metadata` (already encoded) and returns the
    /// traffic-phase session. `None` unless INITIATE was accepted.
    pub(crate) fn ready(&mut self, metadata: &[u8], out: &mut BytesMut) -> Option<Session> {
        let State::Accepted {
            session,
            peer_nonce,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return None;
        };
        // Our short nonces start at 1, as libzmq's do: READY is 1.
        let n = 1;
        let len = READY_NAME.len() + SHORT_NONCE_LEN + TAG_LEN + metadata.len();
        encode_command_header(len, out);
        out.put_slice(READY_NAME);
        out.put_u64(n);
        seal_into(&session, &short_nonce(READY_PREFIX, n), metadata, out);
        Some(Session::new(session, Side::Server, n + 1, peer_nonce))
    }
}
