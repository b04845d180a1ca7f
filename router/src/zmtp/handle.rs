//! What every role's socket type holds and does the same way, written once:
//!
//! - [`Handle`]: the socket's core and role, with bind, connect, peer
//!   count, flush and close; dropping it cancels the socket's tasks.
//! - [`Inbound`]: a [`Handle`] plus the receiving end of the socket's inbox
//!   (PULL, SUB, ROUTER), with recv, recv_many and stop_reading.
//! - `socket_methods!`: the public `bind`/`connect` (and, for the inbound
//!   roles, `recv`/`recv_many`/`stop_reading`) of a role's socket type, and
//!   its [`Attach`](super::endpoint::Attach) impl, delegating to the above.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::connection::{Received, Role, SocketCore};
use super::endpoint::{self, EndpointError};
use super::inbox::InboxRx;

/// A socket's shared core and its role.
#[derive(Debug)]
pub(crate) struct Handle<R> {
    pub(crate) core: Arc<SocketCore>,
    pub(crate) role: Arc<R>,
}

impl<R: Role> Handle<R> {
    /// See [`endpoint::bind`].
    pub(crate) async fn bind(&self, endpoint: &str) -> Result<SocketAddr, EndpointError> {
        endpoint::bind(&self.core, &self.role, endpoint).await
    }

    /// See [`endpoint::connect`].
    pub(crate) fn connect(&self, endpoint: &str) -> Result<(), EndpointError> {
        endpoint::connect(&self.core, &self.role, endpoint)
    }

    /// Peers connected past the handshake.
    pub(crate) fn peer_count(&self) -> usize {
        self.core.peer_count()
    }

    /// See [`SocketCore::flush`].
    pub(crate) async fn flush(&self, timeout: Duration, drained: impl Fn() -> bool) -> bool {
        self.core.flush(timeout, drained).await
    }

    /// Stops listening, closes every connection and waits for the socket's
    /// tasks to end.
    pub(crate) async fn close(&self) {
        self.core.close().await;
    }
}

impl<R> Drop for Handle<R> {
    fn drop(&mut self) {
        self.core.cancel.cancel();
    }
}

/// A [`Handle`] whose readers feed an inbox, and the inbox's receiving end.
#[derive(Debug)]
pub(crate) struct Inbound<R> {
    pub(crate) handle: Handle<R>,
    pub(crate) rx: InboxRx,
}

impl<R: Role> Inbound<R> {
    /// The next message; `None` once the socket is closed.
    pub(crate) async fn recv(&mut self) -> Option<Received> {
        self.rx.recv().await
    }

    /// Appends up to `max` messages to `buf`; 0 once the socket is closed.
    pub(crate) async fn recv_many(&mut self, buf: &mut Vec<Received>, max: usize) -> usize {
        self.rx.recv_many(buf, max).await
    }

    /// Closes the socket, then ends the inbound stream once what was
    /// already received has been taken.
    pub(crate) async fn stop_reading(&mut self) {
        self.handle.close().await;
        self.rx.close();
    }
}

/// Generates a role socket's public methods that are the same on every
/// role, delegating to its [`Handle`] (at the field path given):
/// `socket_methods!(PushSocket, handle)` gives `bind` and `connect` and
/// implements [`Attach`](super::endpoint::Attach);
/// `socket_methods!(PullSocket, inbound.handle, inbound: inbound)` adds
/// `recv`, `recv_many` and `stop_reading` from the [`Inbound`] field.
macro_rules! socket_methods {
    ($socket:ty, $($handle:ident).+) => {
        impl $socket {
            /// Listens on `endpoint` (`tcp://host:port`, port 0 = any); returns the
            /// bound address.
            ///
            /// # Errors
            /// A malformed endpoint, a name that does not resolve, or a failed bind.
            pub async fn bind(
                &self,
                endpoint: &str,
            ) -> Result<std::net::SocketAddr, $crate::zmtp::endpoint::EndpointError> {
                self.$($handle).+.bind(endpoint).await
            }

            /// Connects to `endpoint` in the background, reconnecting forever.
            ///
            /// # Errors
            /// A malformed endpoint, or a closed socket.
            pub fn connect(
                &self,
                endpoint: &str,
            ) -> Result<(), $crate::zmtp::endpoint::EndpointError> {
                self.$($handle).+.connect(endpoint)
            }

            /// Waits until at least `want` peers are past the handshake, or
            /// until `timeout`; returns whether they are. Woken by each
            /// change of the peer set, not polled.
            pub async fn wait_for_peers(&self, want: usize, timeout: std::time::Duration) -> bool {
                self.$($handle).+.core.wait_for_peers(want, timeout).await
            }

            /// Cuts the connection of `peer`, counted in
            /// `switchyard_zmtp_disconnects_total{reason}`; false when it is
            /// already gone.
            pub fn disconnect(&self, peer: $crate::zmtp::connection::PeerId, reason: &'static str) -> bool {
                self.$($handle).+.core.disconnect(peer, reason)
            }
        }

        impl $crate::zmtp::endpoint::Attach for $socket {
            async fn bind(
                &self,
                endpoint: &str,
            ) -> Result<std::net::SocketAddr, $crate::zmtp::endpoint::EndpointError> {
                <$socket>::bind(self, endpoint).await
            }

            fn connect(&self, endpoint: &str) -> Result<(), $crate::zmtp::endpoint::EndpointError> {
                <$socket>::connect(self, endpoint)
            }
        }
    };
    ($socket:ty, $($handle:ident).+, inbound: $inbound:ident) => {
        $crate::zmtp::handle::socket_methods!($socket, $($handle).+);

        impl $socket {
            /// The next message; `None` once the socket is closed.
            ///
            /// # Cancel safety
            /// Cancel-safe: a message is either returned or stays queued.
            pub async fn recv(&mut self) -> Option<$crate::zmtp::connection::Received> {
                self.$inbound.recv().await
            }

            /// Appends up to `max` messages to `buf` (waiting for at least one);
            /// returns how many, 0 once the socket is closed.
            ///
            /// # Cancel safety
            /// Cancel-safe.
            pub async fn recv_many(
                &mut self,
                buf: &mut Vec<$crate::zmtp::connection::Received>,
                max: usize,
            ) -> usize {
                self.$inbound.recv_many(buf, max).await
            }

            /// Stops reading from the wire, as [`Self::close`] does, and ends the
            /// inbound stream: `recv` and `recv_many` still return what had been
            /// received, then `None` / 0. For a graceful shutdown that hands over
            /// everything already read.
            pub async fn stop_reading(&mut self) {
                self.$inbound.stop_reading().await;
            }
        }
    };
}

pub(crate) use socket_methods;
