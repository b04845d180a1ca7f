//! A tiny HTTP/1.0 server for the node's metrics registry.

use std::time::Duration;
use switchyard::metrics::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

/// Serves `GET /metrics` (any path) with the registry's text encoding.
pub(crate) async fn serve_metrics(listener: tokio::net::TcpListener, registry: Registry) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            // Read the request head (bounded, with a deadline), then answer.
            let _ = timeout(Duration::from_secs(5), async {
                while n < buf.len() {
                    match conn.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            })
            .await;
            let body = registry.encode();
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = timeout(Duration::from_secs(5), async {
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(body.as_bytes()).await;
                let _ = conn.shutdown().await;
            })
            .await;
        });
    }
}
