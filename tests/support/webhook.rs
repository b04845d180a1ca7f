//! A scripted HTTP server for the webhook tests: hyper on a real TCP
//! socket on `127.0.0.1:0` (HTTPS with tokio-rustls if asked), in a thread
//! of its own, answering each request
//! with the next [`Reply`] of its script (200 once the script is empty),
//! and recording every request it got (headers, body, arrival time).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;

/// How the server answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status, an empty body.
    Status(u16),
    /// This status with these headers and body.
    With {
        /// The status.
        status: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// The body.
        body: Vec<u8>,
    },
    /// Never answers (until the client gives up and closes).
    Hang,
    /// Closes the connection with a TCP reset, no answer.
    Reset,
    /// Writes bytes that are not HTTP, then closes.
    Garbage,
    /// A 200 whose body comes one byte every 100 ms, never ending.
    SlowBody,
    /// A 200 with a body of this many bytes, streamed in 64 KiB chunks.
    Huge(usize),
}

/// One request the server got.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request's path and query.
    pub path: String,
    /// Its headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
    /// When it arrived, on the test's clock.
    pub at: Instant,
}

impl Received {
    /// The value of header `name` (lowercase), if it came.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as a JSON array (a `json` webhook's request).
    ///
    /// # Errors
    /// When it is not one.
    pub fn messages(&self) -> Result<Vec<serde_json::Value>> {
        serde_json::from_slice(&self.body).context("a JSON array body")
    }
}

#[derive(Default)]
struct Shared {
    script: Mutex<VecDeque<Reply>>,
    received: Mutex<Vec<Received>>,
    arrived: Condvar,
}

/// The server; stopped when dropped.
pub struct HookServer {
    scheme: &'static str,
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Body = BoxBody<Bytes, Infallible>;

impl HookServer {
    /// Starts a server on `127.0.0.1:0`.
    ///
    /// # Errors
    /// When it cannot bind.
    pub fn start() -> Result<Self> {
        Self::start_with(None)
    }

    /// Starts an HTTPS server on `127.0.0.1:0` with the certificate chain
    /// in `cert` and the key in `key` (PEM files).
    ///
    /// # Errors
    /// When it cannot bind or the files are not a certificate and a key.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Result<Self> {
        Self::start_tls_verifying(cert, key, None)
    }

    /// As [`HookServer::start_tls`], and with `client_ca` every client must
    /// present a certificate that CA signed (mTLS).
    ///
    /// # Errors
    /// As [`HookServer::start_tls`], or a CA file that does not load.
    pub fn start_tls_verifying(
        cert: &std::path::Path,
        key: &std::path::Path,
        client_ca: Option<&std::path::Path>,
    ) -> Result<Self> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(cert)
            .context("the certificate file")?
            .collect::<Result<Vec<_>, _>>()
            .context("a certificate")?;
        let key = PrivateKeyDer::from_pem_file(key).context("the key file")?;
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(ca).context("the CA file")? {
                    roots.add(c.context("a CA certificate")?)?;
                }
                builder.with_client_cert_verifier(
                    rustls::server::WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider,
                    )
                    .build()?,
                )
            }
        };
        let config = builder.with_single_cert(chain, key)?;
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }

    fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Result<Self> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(Notify::new());
        let (s, st) = (Arc::clone(&shared), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("hook-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                    loop {
                        tokio::select! {
                            () = st.notified() => break,
                            accepted = listener.accept() => {
                                if let Ok((stream, _)) = accepted {
                                    tokio::spawn(connection(stream, tls.clone(), Arc::clone(&s)));
                                }
                            }
                        }
                    }
                });
            })?;
        Ok(Self {
            scheme,
            addr,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:<port><path>` (`https://` with TLS).
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// Queues `replies`, answered in order to the next requests.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared
            .script
            .lock()
            .expect("script lock")
            .extend(replies);
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("received lock").clone()
    }

    /// Waits until at least `n` requests came, up to `timeout`.
    ///
    /// # Errors
    /// When fewer came by then.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Result<Vec<Received>> {
        let deadline = Instant::now() + timeout;
        let mut got = self.shared.received.lock().expect("received lock");
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("{} requests of {n} within {timeout:?}", got.len());
            }
            got = self
                .shared
                .arrived
                .wait_timeout(got, left)
                .expect("received lock")
                .0;
        }
        Ok(got.clone())
    }
}

impl Drop for HookServer {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a request asked the connection to do instead of answering.
#[derive(Clone, Copy)]
enum Abort {
    Reset,
    Garbage,
}

async fn connection(
    stream: tokio::net::TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
) {
    // A second handle on the socket, to reset it or write garbage on it
    // behind hyper's back.
    let Ok(std) = stream.into_std() else { return };
    let Ok(side) = std.try_clone() else { return };
    let Ok(stream) = tokio::net::TcpStream::from_std(std) else {
        return;
    };
    let abort = Arc::new(Notify::new());
    let action: Arc<Mutex<Option<Abort>>> = Arc::new(Mutex::new(None));
    let (a, act) = (Arc::clone(&abort), Arc::clone(&action));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let shared = Arc::clone(&shared);
        let (a, act) = (Arc::clone(&a), Arc::clone(&act));
        async move { Ok::<_, Infallible>(answer(req, shared, a, act).await) }
    });
    let http = hyper::server::conn::http1::Builder::new();
    match tls {
        None => {
            let conn = http.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                () = abort.notified() => {}
            }
        }
        Some(acceptor) => {
            // A client that refuses the certificate ends the handshake.
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let conn = http.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                () = abort.notified() => {}
            }
        }
    }
    let what = *action.lock().expect("action lock");
    match what {
        Some(Abort::Reset) => {
            let _ = socket2::SockRef::from(&side).set_linger(Some(Duration::ZERO));
        }
        Some(Abort::Garbage) => {
            let _ = side.set_nonblocking(false);
            let mut side_ref = &side;
            let _ = side_ref.write_all(b"\x16\x03\x01 this is not HTTP at all\r\n\r\n\x00\xff");
            let _ = side.shutdown(std::net::Shutdown::Both);
        }
        None => {}
    }
}

async fn answer(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    abort: Arc<Notify>,
    action: Arc<Mutex<Option<Abort>>>,
) -> Response<Body> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let reply = shared
        .script
        .lock()
        .expect("script lock")
        .pop_front()
        .unwrap_or(Reply::Status(200));
    {
        let mut got = shared.received.lock().expect("received lock");
        got.push(Received {
            path,
            headers,
            body,
            at: Instant::now(),
        });
        shared.arrived.notify_all();
    }
    let full = |status: u16, headers: Vec<(String, String)>, body: Vec<u8>| {
        let mut r = Response::builder().status(status);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.body(Full::new(Bytes::from(body)).boxed())
            .expect("a response")
    };
    match reply {
        Reply::Status(s) => full(s, Vec::new(), Vec::new()),
        Reply::With {
            status,
            headers,
            body,
        } => full(status, headers, body),
        Reply::Hang => std::future::pending().await,
        Reply::Reset | Reply::Garbage => {
            let what = if matches!(reply, Reply::Reset) {
                Abort::Reset
            } else {
                Abort::Garbage
            };
            *action.lock().expect("action lock") = Some(what);
            abort.notify_one();
            std::future::pending().await
        }
        Reply::SlowBody => {
            let drip = futures::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"."))),
                    (),
                ))
            });
            Response::new(StreamBody::new(drip).boxed())
        }
        Reply::Huge(n) => {
            let chunk = Bytes::from(vec![b'x'; 64 << 10]);
            let chunks = futures::stream::unfold(n, move |left| {
                let chunk = chunk.clone();
                async move {
                    (left > 0).then(|| {
                        let piece = chunk.slice(..left.min(chunk.len()));
                        let rest = left - piece.len();
                        (Ok::<_, Infallible>(Frame::data(piece)), rest)
                    })
                }
            });
            Response::builder()
                .header("content-length", n.to_string())
                .body(StreamBody::new(chunks).boxed())
                .expect("a response")
        }
    }
}
