//! A small blocking HTTP/1.1 client over `std::net::TcpStream`: enough for
//! the publish API and the admin endpoints (fixed-length and chunked
//! bodies), with read and write timeouts on every call.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

/// Socket read and write timeout; longer than any wait the router makes a
/// request do (block timeouts in tests are short).
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    ///
    /// # Errors
    /// When it is not JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("status {} body is not JSON: {}", self.status, self.text()))
    }

    /// The message ids of a publish answer: `ids` of a 202, or
    /// `error.ids` of a 503 (the admitted prefix); empty otherwise.
    ///
    /// # Errors
    /// When the body is not JSON or an id is not a string.
    pub fn ids(&self) -> Result<Vec<String>> {
        let v = self.json()?;
        let ids = if self.status == 202 {
            &v["ids"]
        } else {
            &v["error"]["ids"]
        };
        match ids {
            Value::Null => Ok(Vec::new()),
            Value::Array(a) => a
                .iter()
                .map(|id| {
                    id.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| anyhow!("id {id} is not a string"))
                })
                .collect(),
            other => bail!("ids is not an array: {other}"),
        }
    }

    /// `error.code` of an error answer.
    pub fn error_code(&self) -> Option<String> {
        self.json()
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
    }
}

/// A keep-alive client for one server.
#[derive(Debug)]
pub struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    /// A client for `addr`; connects on the first request.
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, conn: None }
    }

    /// Sends one request and reads its response. A connection the server
    /// closed while idle is replaced once, before anything was read back.
    ///
    /// # Errors
    /// Connection, timeout or protocol errors.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response> {
        let reused = self.conn.is_some();
        match self.try_request(method, path, headers, body) {
            Ok(r) => Ok(r),
            Err(Attempt::NothingBack(e)) if reused => {
                self.conn = None;
                self.try_request(method, path, headers, body)
                    .map_err(Attempt::into_error)
                    .with_context(|| format!("{method} {path} (after reconnecting: {e})"))
            }
            Err(e) => Err(e.into_error()).with_context(|| format!("{method} {path}")),
        }
    }

    /// `POST path` with a body and headers.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub fn post(&mut self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Response> {
        self.request("POST", path, headers, body)
    }

    /// `POST path` with a JSON body.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub fn post_json(&mut self, path: &str, body: &Value) -> Result<Response> {
        self.request(
            "POST",
            path,
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, Attempt> {
        if self.conn.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT)
                .with_context(|| format!("connect {}", self.addr))
                .map_err(Attempt::Failed)?;
            stream
                .set_read_timeout(Some(IO_TIMEOUT))
                .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
                .and_then(|()| stream.set_nodelay(true))
                .context("socket options")
                .map_err(Attempt::Failed)?;
            self.conn = Some(BufReader::new(stream));
        }
        let conn = self.conn.as_mut().expect("connected above");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        let result = conn
            .get_mut()
            .write_all(&request)
            .context("write request")
            .map_err(Attempt::NothingBack)
            .and_then(|()| read_response(conn));
        match &result {
            Ok(r)
                if r.header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close")) =>
            {
                self.conn = None;
            }
            Ok(_) => {}
            Err(_) => self.conn = None,
        }
        result
    }
}

/// Why one attempt failed: whether the server sent anything back decides
/// whether it is safe to retry on a new connection.
#[derive(Debug)]
enum Attempt {
    NothingBack(anyhow::Error),
    Failed(anyhow::Error),
}

impl Attempt {
    fn into_error(self) -> anyhow::Error {
        match self {
            Self::NothingBack(e) | Self::Failed(e) => e,
        }
    }
}

fn read_response(conn: &mut BufReader<TcpStream>) -> Result<Response, Attempt> {
    let mut line = String::new();
    let n = conn
        .read_line(&mut line)
        .context("read status line")
        .map_err(Attempt::NothingBack)?;
    if n == 0 {
        return Err(Attempt::NothingBack(anyhow!(
            "connection closed before a response"
        )));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Attempt::Failed(anyhow!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        conn.read_line(&mut h)
            .context("read header")
            .map_err(Attempt::Failed)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| Attempt::Failed(anyhow!("bad header {h:?}")))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if let Some(len) = response.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| Attempt::Failed(anyhow!("bad content-length {len}")))?;
        response.body.resize(len, 0);
        conn.read_exact(&mut response.body)
            .context("read body")
            .map_err(Attempt::Failed)?;
    } else if response
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        response.body = read_chunked(conn).map_err(Attempt::Failed)?;
    } else if status != 204 && status != 304 {
        conn.read_to_end(&mut response.body)
            .context("read body to end")
            .map_err(Attempt::Failed)?;
    }
    Ok(response)
}

fn read_chunked(conn: &mut BufReader<TcpStream>) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        conn.read_line(&mut size).context("chunk size")?;
        let size = size.trim().split(';').next().unwrap_or("");
        let size =
            usize::from_str_radix(size, 16).with_context(|| format!("chunk size {size:?}"))?;
        if size == 0 {
            // Trailers, then the final blank line.
            loop {
                let mut t = String::new();
                conn.read_line(&mut t).context("trailer")?;
                if t.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        conn.read_exact(&mut body[start..]).context("chunk")?;
        let mut crlf = [0u8; 2];
        conn.read_exact(&mut crlf).context("chunk end")?;
    }
}

/// `GET path` on a fresh connection.
///
/// # Errors
/// As [`Client::request`].
pub fn get(addr: SocketAddr, path: &str) -> Result<Response> {
    Client::new(addr).request("GET", path, &[("connection", "close")], &[])
}

/// A `/v1/publish` body: messages `start..end` on `topic`, each payload its
/// number padded with `.` to `size` bytes.
pub fn numbered_batch(topic: &str, start: u64, end: u64, size: usize) -> Value {
    let messages: Vec<_> = (start..end)
        .map(|i| {
            let mut p = i.to_string();
            while p.len() < size {
                p.push('.');
            }
            json!({"topic": topic, "payload": p})
        })
        .collect();
    json!({ "messages": messages })
}
