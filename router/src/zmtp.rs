//! ZeroMQ wire protocol (ZMTP 3.0 and 3.1, RFCs 23 and 37), built for a
//! router: hard limits enforced before any allocation, a bounded queue per
//! peer whose drops are counted, zero-copy fan-out and batched writes.
//!
//! Sans-IO core (bytes in, values out; unit-tested and fuzzed without
//! sockets): [`limits`], [`socket_type`], [`greeting`], [`command`],
//! [`frame`], [`handshake`], and [`curve`] (the CURVE mechanism's handshake
//! and the MESSAGE codec that encrypts its traffic).
//!
//! I/O on tokio: [`options`], [`endpoint`], [`connection`],
//! [`subscriptions`], [`metrics`], and the peer roles
//! [`sub`], [`pull`], [`router`], [`publish`], [`push`], [`dealer`].

pub mod command;
pub mod curve;
pub mod frame;
pub mod greeting;
pub mod handshake;
pub mod limits;
mod protocol_error;
pub mod socket_type;

pub mod connection;
pub mod dealer;
pub mod endpoint;
mod handle;
mod inbox;
pub mod metrics;
pub mod options;
pub mod publish;
pub mod pull;
pub mod push;
pub mod router;
pub mod sub;
pub mod subscriptions;
