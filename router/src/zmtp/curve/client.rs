//! The CURVE client: HELLO out, WELCOME in, INITIATE out, READY in.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use crypto_box::SalsaBox;

use super::traffic::{Session, Side};
use super::{
    CurveError, CurveKeypair, CurvePublicKey, HELLO_LEN, HELLO_NAME, HELLO_PREFIX,
    INITIATE_MIN_LEN, INITIATE_NAME, INITIATE_PREFIX, LONG_NONCE_LEN, READY_MIN_LEN, READY_PREFIX,
    SHORT_NONCE_LEN, TAG_LEN, VOUCH_PREFIX, WELCOME_LEN, WELCOME_PREFIX, nonce, open, random,
    read_short_nonce, salsa_box, seal_into, short_nonce,
};
use crate::zmtp::frame::encode_command_header;

/// Our short nonces: HELLO 1, INITIATE 2, messages from 3 (as libzmq).
const HELLO_NONCE: u64 = 1;
const INITIATE_NONCE: u64 = 2;

enum State {
    /// HELLO sent; waiting for WELCOME.
    Welcome { to_server: SalsaBox },
    /// INITIATE sent; waiting for READY.
    Ready { session: SalsaBox },
    /// READY taken, or failed.
    Done,
}

/// The client side of one connection's CURVE handshake.
pub(crate) struct Client {
    keys: Arc<CurveKeypair>,
    server: CurvePublicKey,
    transient: CurveKeypair,
    state: State,
}

impl Client {
    /// A client with long-term `keys` for the server whose long-term public
    /// key is `server`; appends HELLO to `out`.
    pub(crate) fn start(
        keys: Arc<CurveKeypair>,
        server: CurvePublicKey,
        out: &mut BytesMut,
    ) -> Result<Self, CurveError> {
        let transient = CurveKeypair::from_secret_bytes(*random::<32>()?);
        let to_server = salsa_box(&server, transient.secret());
        encode_command_header(HELLO_LEN, out);
        let at = out.len();
        out.put_slice(HELLO_NAME);
        out.put_slice(&[1, 0]);
        out.put_bytes(0, 72);
        out.put_slice(transient.public().as_bytes());
        out.put_u64(HELLO_NONCE);
        seal_into(
            &to_server,
            &short_nonce(HELLO_PREFIX, HELLO_NONCE),
            &[0u8; 64],
            out,
        );
        debug_assert_eq!(out.len() - at, HELLO_LEN);
        Ok(Client {
            keys,
            server,
            transient,
            state: State::Welcome { to_server },
        })
    }

    /// The command name (with its length byte) expected next.
    pub(crate) fn expected(&self) -> (&'static [u8], &'static str) {
        match self.state {
            State::Welcome { .. } => (b"\x07WELCOME", "WELCOME"),
            State::Ready { .. } => (b"\x05READY", "READY"),
            State::Done => (b"", "nothing"),
        }
    }

    /// Takes the server's WELCOME and appends our INITIATE, carrying our
    /// `metadata` (already encoded).
    pub(crate) fn welcome(
        &mut self,
        welcome: &[u8],
        metadata: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), CurveError> {
        let State::Welcome { to_server } = std::mem::replace(&mut self.state, State::Done) else {
            return Err(CurveError::BadWelcome("WELCOME out of order"));
        };
        if welcome.len() != WELCOME_LEN {
            return Err(CurveError::BadWelcome("not 168 bytes"));
        }
        let text = open(
            &to_server,
            &nonce(WELCOME_PREFIX, &welcome[8..8 + LONG_NONCE_LEN]),
            &welcome[8 + LONG_NONCE_LEN..],
        )
        .ok_or(CurveError::BadWelcome(
            "does not open with the server key we were given",
        ))?;
        let (Some(s_prime), Some(cookie)) = (text.get(..32), text.get(32..128)) else {
            return Err(CurveError::BadWelcome("box shorter than 144 bytes"));
        };
        let mut s = [0u8; 32];
        s.copy_from_slice(s_prime);
        let server_transient = CurvePublicKey::from_bytes(s);
        let session = salsa_box(&server_transient, self.transient.secret());

        // vouch = Box[C' + S](C->S'), as libzmq makes and checks it.
        let vouch_nonce = random::<LONG_NONCE_LEN>()?;
        let mut vouch_text = [0u8; 64];
        vouch_text[..32].copy_from_slice(self.transient.public().as_bytes());
        vouch_text[32..].copy_from_slice(self.server.as_bytes());
        let mut text = BytesMut::with_capacity(128 + metadata.len());
        text.put_slice(self.keys.public().as_bytes());
        text.put_slice(&vouch_nonce[..]);
        seal_into(
            &salsa_box(&server_transient, self.keys.secret()),
            &nonce(VOUCH_PREFIX, &vouch_nonce[..]),
            &vouch_text,
            &mut text,
        );
        text.put_slice(metadata);

        let len = INITIATE_MIN_LEN + metadata.len();
        encode_command_header(len, out);
        let at = out.len();
        out.put_slice(INITIATE_NAME);
        out.put_slice(cookie);
        out.put_u64(INITIATE_NONCE);
        seal_into(
            &session,
            &short_nonce(INITIATE_PREFIX, INITIATE_NONCE),
            &text,
            out,
        );
        debug_assert_eq!(out.len() - at, len);
        self.state = State::Ready { session };
        Ok(())
    }

    /// Takes the server's READY: returns its metadata (unparsed) and the
    /// traffic-phase session.
    pub(crate) fn ready(&mut self, ready: &[u8]) -> Result<(Bytes, Session), CurveError> {
        let State::Ready { session } = std::mem::replace(&mut self.state, State::Done) else {
            return Err(CurveError::BadReady("READY out of order"));
        };
        if ready.len() < READY_MIN_LEN {
            return Err(CurveError::BadReady("shorter than 30 bytes"));
        }
        let n = read_short_nonce(&ready[6..6 + SHORT_NONCE_LEN]);
        let metadata = open(
            &session,
            &short_nonce(READY_PREFIX, n),
            &ready[6 + SHORT_NONCE_LEN..],
        )
        .ok_or(CurveError::BadReady("box does not open"))?;
        debug_assert!(ready.len() - 6 - SHORT_NONCE_LEN >= TAG_LEN);
        let metadata = Bytes::copy_from_slice(&metadata);
        Ok((
            metadata,
            Session::new(session, Side::Client, INITIATE_NONCE + 1, n),
        ))
    }
}
