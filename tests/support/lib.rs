//! Harness for the end-to-end tests: starting routers, peers and waits with
//! deadlines.
//!
//! - [`process`]: child processes driven over the [`protocol`] line protocol,
//!   killed when dropped; [`driver`]: the command loop of the peer binaries
//!   that speak it.
//! - [`node`]: the `zmtp-node` test binary, one switchyard ZMTP socket role in
//!   its own process, with its metrics and memory readable from outside.
//! - [`peer`]: the same peer roles played by libzmq (pyzmq,
//!   `tests/peers/zpeer.py`) or by the `zeromq` crate (`zeromq-peer`).
//! - [`raw`]: a hand-written ZMTP client over a plain TCP stream, for hostile
//!   peers and a subscriber that stops reading.
//! - [`pair`]: a node and a peer on one endpoint, either side binding;
//!   [`cmd`]: short command constructors and answer checks.
//! - [`wait`], [`scrape`], [`memory`]: facts with deadlines, metric samples,
//!   resident memory from `/proc`.
//! - [`jwt`]: tokens minted by PyJWT and the test keys they use.
//! - [`router`]: the real `switchyard` binary as a child process, with its
//!   own HTTP client, `/metrics` samples and pyzmq peers
//!   (`tests/peers/router/peer.py`), for the `router_*` tests.
//!
//! Binaries are found through [`bins!`], which expands in the test crate where
//! Cargo sets `CARGO_BIN_EXE_*`.

pub mod cmd;
pub mod driver;
pub mod jwt;
pub mod memory;
pub mod nats;
pub mod node;
pub mod pair;
pub mod peer;
pub mod process;
pub mod protocol;
pub mod raw;
pub mod router;
pub mod scrape;
pub mod wait;
pub mod webhook;

/// Paths of the helper binaries built with the tests.
#[derive(Clone, Copy, Debug)]
pub struct Bins {
    /// The `zmtp-node` binary.
    pub node: &'static str,
    /// The `zeromq-peer` binary.
    pub zeromq_peer: &'static str,
}

/// The helper binaries' paths; use it in an integration test
/// (`let bins = switchyard_tests::bins!();`).
#[macro_export]
macro_rules! bins {
    () => {
        $crate::Bins {
            node: env!("CARGO_BIN_EXE_zmtp-node"),
            zeromq_peer: env!("CARGO_BIN_EXE_zeromq-peer"),
        }
    };
}
