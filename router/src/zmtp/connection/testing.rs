//! Helpers for the in-crate socket tests.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use crate::metrics::Registry;
use crate::zmtp::frame::Multipart;
use crate::zmtp::metrics::Metrics;

/// Generous deadline for facts that normally take milliseconds.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// A fresh registry and its ZMTP metrics.
pub(crate) fn metrics() -> (Registry, Metrics) {
    let reg = Registry::new();
    let m = Metrics::new(&reg);
    (reg, m)
}

/// A one- or multi-frame message.
pub(crate) fn msg(frames: &[&[u8]]) -> Multipart {
    frames.iter().map(|f| Bytes::copy_from_slice(f)).collect()
}

/// Awaits `fut` or panics after [`DEADLINE`].
pub(crate) async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Polls `cond` until true, or panics after [`DEADLINE`].
pub(crate) async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// The value of the first sample line of `name` with all `labels` in the
/// registry's text output (0 when absent).
pub(crate) fn metric(reg: &Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = reg.encode();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            && let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse().ok())
        {
            return v;
        }
    }
    0.0
}

/// Connects to `addr` and completes a NULL handshake as `socket_type`;
/// returns the stream and the bytes already read past the handshake.
pub(crate) async fn raw_client(
    addr: std::net::SocketAddr,
    socket_type: crate::zmtp::socket_type::SocketType,
) -> (tokio::net::TcpStream, bytes::BytesMut) {
    raw_client_with(addr, socket_type, None).await
}

/// [`raw_client`] with a kernel receive buffer of `rcvbuf` bytes.
pub(crate) async fn raw_client_with(
    addr: std::net::SocketAddr,
    socket_type: crate::zmtp::socket_type::SocketType,
    rcvbuf: Option<u32>,
) -> (tokio::net::TcpStream, bytes::BytesMut) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::zmtp::handshake::{Handshake, HandshakeConfig, Mechanism};

    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    if let Some(n) = rcvbuf {
        socket.set_recv_buffer_size(n).expect("rcvbuf");
    }
    let mut s = within("connect", socket.connect(addr))
        .await
        .expect("connect");
    let mut out = bytes::BytesMut::new();
    let mut hs = Handshake::start(
        HandshakeConfig {
            socket_type,
            identity: Bytes::new(),
            mechanism: Mechanism::Null,
            limits: Default::default(),
        },
        &mut out,
    );
    let mut input = bytes::BytesMut::with_capacity(4096);
    loop {
        let r = hs.advance(&mut input, &mut out);
        s.write_all(&out).await.expect("write");
        out.clear();
        match r {
            Ok(Some(_)) => return (s, input),
            Ok(None) => {}
            Err(e) => panic!("handshake failed: {e}"),
        }
        let n = within("handshake bytes", s.read_buf(&mut input))
            .await
            .expect("read");
        assert!(n > 0, "server closed during handshake");
    }
}
