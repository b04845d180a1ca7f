//! A raw HTTP/1.1 client for the tests of the HTTP listeners: bytes in,
//! parsed reply out, every wait under a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A generous deadline: waits that take milliseconds on an idle machine.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// A parsed response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    /// The first header named `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A request with `Connection: close` and a `Content-Length` body.
pub(crate) fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Connects to `addr`, writes `raw`, and reads one response.
pub(crate) async fn send(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut stream = connect(addr).await;
    tokio::time::timeout(DEADLINE, stream.write_all(raw))
        .await
        .expect("write deadline")
        .expect("write request");
    // A response to HEAD has a Content-Length but no body.
    read_response(&mut stream, !raw.starts_with(b"HEAD ")).await
}

/// Connects to `addr` within the deadline.
pub(crate) async fn connect(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(DEADLINE, TcpStream::connect(addr))
        .await
        .expect("connect deadline")
        .expect("connect")
}

/// Reads one response: head, then `Content-Length` bytes of body (or up
/// to EOF without one). Stops as soon as the response is complete, so a
/// reset that follows it does not hide it.
pub(crate) async fn read_reply<R: AsyncRead + Unpin>(stream: &mut R) -> Reply {
    read_response(stream, true).await
}

async fn read_response<R: AsyncRead + Unpin>(stream: &mut R, with_body: bool) -> Reply {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_len, status, headers) = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap_or_default();
            let status = status_line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .collect::<Vec<_>>();
            break (end + 4, status, headers);
        }
        let n = read_some(stream, &mut chunk).await;
        assert!(
            n > 0,
            "connection closed before a response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .map(|l| if with_body { l } else { 0 });
    loop {
        let have = buf.len() - head_len;
        if length.is_some_and(|l| have >= l) {
            break;
        }
        let n = read_some(stream, &mut chunk).await;
        if n == 0 {
            assert!(length.is_none(), "connection closed mid-body");
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Reply {
        status,
        headers,
        body: buf.split_off(head_len),
    }
}

async fn read_some<R: AsyncRead + Unpin>(stream: &mut R, chunk: &mut [u8]) -> usize {
    tokio::time::timeout(DEADLINE, stream.read(chunk))
        .await
        .expect("read deadline")
        .expect("read")
}

/// The value of the sample `series` (name and labels, exactly as
/// exposed) in a Prometheus text body, if present.
pub(crate) fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}
