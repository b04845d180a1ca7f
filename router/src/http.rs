//! HTTP server plumbing shared by the HTTP input and the admin listener, and
//! the one place errors become HTTP responses.
//!
//! - [`Server`]: a hyper 1 HTTP/1.1 listener with a bounded number of
//!   connections, backoff on accept errors, a header read timeout (which is
//!   also the keep-alive idle timeout), tracked connection tasks and a
//!   graceful shutdown driven by a `CancellationToken`.
//! - [`read_body`]: reads a request body under a size limit, enforced while
//!   streaming, and a read deadline.
//! - [`tls`]: TLS on a listener: certificates reloaded without dropping
//!   connections, client certificates, a handshake timeout.
//! - [`Error`]: every failure a handler can answer with, each with a stable
//!   machine code and status. [`Error::to_response`] renders the one JSON
//!   error shape: `{"error":{"code":"NOT_FOUND","message":"..."}}`.

mod body;
mod error;
mod server;
pub mod tls;

pub use body::{BodyLimits, read_body};
pub use error::{Error, ids_response, json_response};
pub use server::{Body, Config, Handler, Metrics, Peer, Server, Stopped};

#[cfg(test)]
pub(crate) mod testing;
