//! `webhook-load`: the webhook benchmark's two ends (`bench/webhook.py`).
//!
//! - `--mode serve`: a hyper HTTP/1.1 server on `127.0.0.1:0` that answers
//!   every POST 200 at once (empty body) after reading it, counting the
//!   messages in each JSON array body (occurrences of `{"id":`). It prints
//!   `{"ready":true,"port":P}`, then, once `--count` messages came (or
//!   nothing came for `--idle-ms` after the first), one JSON line: messages,
//!   requests, and the arrival rate from the first request to the last by
//!   its own clock.
//! - `--mode post`: the direct client, the router's own HTTP stack
//!   (hyper-util's legacy pooled client over hyper-rustls, plain http here):
//!   `--count` messages of `--size` bytes (the payload `zsend` sends: `x`s
//!   ending in the 8-byte sequence number) in JSON arrays of `--batch`
//!   messages, encoded per request as the router's webhook output encodes
//!   them (id, topic, publish_time_ms, attributes, payload_encoding,
//!   payload; utf8 or base64 by the same rule), `--concurrency` requests in
//!   flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

/// What the program does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Serve,
    Post,
}

#[derive(Debug, Parser)]
#[command(about = "The webhook benchmark's server and direct client")]
struct Args {
    #[arg(long, value_enum)]
    mode: Mode,
    /// Messages to serve or post.
    #[arg(long, default_value_t = 200_000)]
    count: u64,
    /// serve: give up this long after the last request.
    #[arg(long, default_value_t = 3000)]
    idle_ms: u64,
    /// post: where.
    #[arg(long, default_value = "http://127.0.0.1:8080/")]
    url: String,
    /// post: messages per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// post: requests in flight.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// post: payload bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    match args.mode {
        Mode::Serve => serve(&args).await,
        Mode::Post => post(&args).await,
    }
}

struct Counts {
    messages: AtomicU64,
    requests: AtomicU64,
    first: std::sync::Mutex<Option<Instant>>,
    last: std::sync::Mutex<Option<Instant>>,
    done: tokio::sync::Notify,
}

async fn serve(args: &Args) -> Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    println!("{{\"ready\":true,\"port\":{port}}}");
    let counts = Arc::new(Counts {
        messages: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        first: std::sync::Mutex::new(None),
        last: std::sync::Mutex::new(None),
        done: tokio::sync::Notify::new(),
    });
    let target = args.count;
    let c = Arc::clone(&counts);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let c = Arc::clone(&c);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let c = Arc::clone(&c);
                        async move {
                            let body = req.into_body().collect().await?.to_bytes();
                            let n = count_ids(&body);
                            let now = Instant::now();
                            c.first.lock().expect("lock").get_or_insert(now);
                            *c.last.lock().expect("lock") = Some(now);
                            c.requests.fetch_add(1, Ordering::Relaxed);
                            if c.messages.fetch_add(n, Ordering::Relaxed) + n >= target {
                                c.done.notify_one();
                            }
                            Ok::<_, hyper::Error>(Response::new(Empty::<Bytes>::new()))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let idle = Duration::from_millis(args.idle_ms);
    loop {
        if tokio::time::timeout(idle, counts.done.notified())
            .await
            .is_ok()
        {
            break;
        }
        let last = *counts.last.lock().expect("lock");
        if last.is_some_and(|l| l.elapsed() >= idle) {
            break;
        }
    }
    let messages = counts.messages.load(Ordering::Relaxed);
    let requests = counts.requests.load(Ordering::Relaxed);
    let first = *counts.first.lock().expect("lock");
    let last = *counts.last.lock().expect("lock");
    let secs = match (first, last) {
        (Some(f), Some(l)) => (l - f).as_secs_f64(),
        _ => 0.0,
    };
    let rate = if secs > 0.0 {
        messages as f64 / secs
    } else {
        0.0
    };
    println!(
        "{}",
        serde_json::json!({"messages": messages, "requests": requests, "seconds": secs, "msgs_per_s": rate})
    );
    Ok(())
}

/// Messages in a JSON array body: one `{"id":` each.
fn count_ids(body: &[u8]) -> u64 {
    let needle = b"{\"id\":";
    body.windows(needle.len()).filter(|w| w == needle).count() as u64
}

async fn post(args: &Args) -> Result<()> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(
            rustls::ClientConfig::builder_with_provider(Arc::new({
                #[allow(deprecated)]
                rustls::crypto::ring::default_provider()
            }))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        )
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http1_writev(true)
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(args.concurrency)
        .build(https);
    let uri: hyper::Uri = args.url.parse().context("--url")?;
    let requests = args.count.div_ceil(args.batch as u64);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, uri, next) = (client.clone(), uri.clone(), Arc::clone(&next));
        let (batch, count, size) = (args.batch as u64, args.count, args.size);
        tasks.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= requests {
                    return Ok::<_, anyhow::Error>(());
                }
                let from = k * batch;
                let to = (from + batch).min(count);
                let body = encode(from..to, size);
                let req = Request::post(uri.clone())
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))?;
                let resp = client.request(req).await?;
                let status = resp.status();
                let _ = resp.into_body().collect().await?;
                if !status.is_success() {
                    bail!("HTTP {status}");
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"sent": args.count, "requests": requests, "seconds": secs})
    );
    Ok(())
}

/// One message, as the router's webhook output serializes it.
#[derive(serde::Serialize)]
struct Element<'a> {
    id: String,
    topic: &'a str,
    publish_time_ms: u64,
    attributes: &'a std::collections::BTreeMap<String, String>,
    payload_encoding: &'static str,
    payload: &'a str,
}

/// Messages `range` as one JSON array, each element as the router's
/// webhook output writes it, with the payload `zsend --frames 2` sends:
/// `size - 8` bytes of `x`, then the sequence number (8 bytes, big-endian),
/// as UTF-8 when it is valid UTF-8 and in base64 otherwise.
fn encode(range: std::ops::Range<u64>, size: usize) -> Vec<u8> {
    use base64::Engine as _;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let empty = std::collections::BTreeMap::<String, String>::new();
    let mut body = Vec::with_capacity(((range.end - range.start) as usize) * (size * 2 + 128));
    let mut payload = vec![b'x'; size.max(8)];
    body.push(b'[');
    for (k, i) in range.enumerate() {
        if k > 0 {
            body.push(b',');
        }
        let n = payload.len();
        payload[n - 8..].copy_from_slice(&i.to_be_bytes());
        let (payload_encoding, text) = match std::str::from_utf8(&payload) {
            Ok(t) => ("utf8", std::borrow::Cow::Borrowed(t)),
            Err(_) => (
                "base64",
                std::borrow::Cow::Owned(base64::engine::general_purpose::STANDARD.encode(&payload)),
            ),
        };
        let element = Element {
            id: format!("{:032x}", u128::from(i)),
            topic: "bench.x",
            publish_time_ms: now,
            attributes: &empty,
            payload_encoding,
            payload: &text,
        };
        serde_json::to_writer(&mut body, &element).expect("JSON");
    }
    body.push(b']');
    body
}
