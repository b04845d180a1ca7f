//! `webhook`: HTTP(S) POSTs to a URL, through hyper-util's pooled client
//! with rustls (the ring provider; the system's roots plus an optional
//! `ca_file`).
//!
//! A route's batch becomes one or more requests (`encode`: a JSON array
//! per `max_messages`/`max_bytes`, or one request per message with
//! `raw`), sent at once up to `concurrency` in flight for the whole
//! output. Each request's answer decides the fate of the messages it
//! carried (`answer`): a 2xx accepts them, a retryable failure refuses
//! them as `failed` (with its `Retry-After` as the least next pause), a
//! refusal for good as `refused`. The output answers the route once every
//! request of its batch was answered, so on a durable route a message
//! leaves the disk only once a 2xx answered its request. So that one
//! route keeps every slot busy, the output asks its routes for batches of
//! [`ROUNDS`] rounds of `concurrency` full requests
//! ([`Output::preferred_batch`]).
//!
//! `request_timeout` bounds each request from the connect to the last byte
//! of the answer read; the answer's body is read up to 64 KiB (for the
//! log), then the connection is dropped rather than read further. When
//! the deadline strikes after the status line arrived, the status stands.
//! Redirects are never followed.
//!
//! With `max_wait` above zero (json), a request that is not full waits up
//! to that long for the batches of other routes sent to this output to
//! join it ([`Gather`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus::IntCounter;
use serde::Serialize;
use tokio::sync::{Notify, Semaphore, oneshot};

use super::{
    AttachError, Context, Delivery, Error, Handle, Lifecycle, LifecycleFuture, Output, OutputStats,
    Refusals, Reject, SendFuture,
};
use crate::config::{self, WebhookEncoding};
use crate::message::{Message, MessageId};

mod answer;
mod encode;

use encode::{Planned, RawRefusal};

/// How much of an answer's body is read (for the log); the rest is not.
const BODY_CAP: usize = 64 << 10;

/// Rounds of `concurrency` requests one route batch should fill
/// ([`Output::preferred_batch`]): the slots go idle only at a batch's end,
/// while its last requests are answered.
const ROUNDS: usize = 4;

/// The largest route batch the output asks for.
const MOST_PREFERRED: usize = 16_384;

/// A `webhook` output's state, as `/v1/status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WebhookStatus {
    /// The URL it posts to.
    pub url: String,
    /// True once a request got an HTTP answer, false after one failed to
    /// (connection error, timeout, not HTTP).
    pub connected: bool,
    /// The status of the last answer.
    pub last_status: Option<u16>,
    /// The last failure: a status other than 2xx, or a connection error.
    pub last_error: Option<String>,
    /// Requests in flight now.
    pub requests_in_flight: u64,
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// What one request's answer means for its messages (see `answer`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    /// `None`: accepted.
    refusal: Option<Reject>,
    retry_after: Option<Duration>,
    /// What went wrong, for the dead-letter store.
    error: Option<Arc<str>>,
}

impl Outcome {
    const FAILED: Self = Self {
        refusal: Some(Reject::Failed),
        retry_after: None,
        error: None,
    };

    fn failed(error: &str) -> Self {
        Self {
            error: Some(error.into()),
            ..Self::FAILED
        }
    }
}

/// A `webhook` output.
pub struct WebhookOutput {
    name: String,
    settings: config::WebhookOutput,
    uri: Uri,
    /// Swapped when a reload finds a new client certificate or CA file;
    /// `None` while the TLS setup fails.
    client: arc_swap::ArcSwapOption<HttpClient>,
    /// `switchyard_tls_reloads_total{listener=output,result}`.
    tls_reloads: (IntCounter, IntCounter),
    /// Headers every request carries: the configured ones, the bearer
    /// token, the content type.
    fixed: HeaderMap,
    hmac: Option<ring::hmac::Key>,
    permits: Arc<Semaphore>,
    in_flight: AtomicU64,
    sent: IntCounter,
    refused: Refusals,
    state: Mutex<WebhookStatus>,
    closed: AtomicBool,
    gather: Gather,
}

impl std::fmt::Debug for WebhookOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookOutput")
            .field("name", &self.name)
            .field("url", &self.settings.url)
            .finish_non_exhaustive()
    }
}

impl WebhookOutput {
    /// The output `name` as `settings` describe it, counting into `ctx`'s
    /// families. Makes no connection until the first request.
    pub fn build(name: &str, settings: &config::WebhookOutput, ctx: &Context) -> Handle {
        let output = Arc::new(Self::new(name, settings, ctx));
        if settings.ca_file.is_some() || settings.client_cert.is_some() {
            ctx.tls.1.register(&output);
        }
        output
    }

    fn new(name: &str, settings: &config::WebhookOutput, ctx: &Context) -> Self {
        ctx.outputs.declare_peers(name);
        let uri: Uri = settings
            .url
            .parse()
            .expect("the config checked the url is a URL");
        let mut state = WebhookStatus {
            url: settings.url.clone(),
            ..WebhookStatus::default()
        };
        let client = match client(settings) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(output = %name, error = %e, "the webhook's TLS setup failed; every request will fail");
                state.last_error = Some(format!("TLS setup: {e}"));
                None
            }
        };
        let mut fixed = HeaderMap::new();
        for (k, v) in &settings.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                fixed.insert(k, v);
            }
        }
        if let Some(token) = &settings.bearer_token
            && let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        {
            v.set_sensitive(true);
            fixed.insert(header::AUTHORIZATION, v);
        }
        if !fixed.contains_key(header::CONTENT_TYPE) {
            let ct = match settings.encoding {
                WebhookEncoding::Json => "application/json",
                WebhookEncoding::Raw => "application/octet-stream",
            };
            fixed.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        if !fixed.contains_key(header::USER_AGENT) {
            fixed.insert(
                header::USER_AGENT,
                HeaderValue::from_static(concat!("switchyard/", env!("CARGO_PKG_VERSION"))),
            );
        }
        Self {
            name: name.to_owned(),
            settings: settings.clone(),
            uri,
            client: arc_swap::ArcSwapOption::new(client.map(Arc::new)),
            tls_reloads: ctx.tls.0.reload_counters(name),
            fixed,
            hmac: settings
                .hmac_secret
                .as_ref()
                .map(|s| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, s.expose().as_bytes())),
            permits: Arc::new(Semaphore::new(settings.concurrency)),
            in_flight: AtomicU64::new(0),
            sent: ctx.outputs.messages(name),
            refused: ctx.outputs.refusals(name),
            state: Mutex::new(state),
            closed: AtomicBool::new(false),
            gather: Gather::default(),
        }
    }

    /// Sends `batch` as requests and reports each message's fate.
    async fn deliver(&self, batch: &[Message]) -> Result<Delivery, Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed {
                output: self.name.clone(),
            });
        }
        let mut fates: Vec<Option<Reject>> = vec![None; batch.len()];
        let planned = match self.settings.encoding {
            WebhookEncoding::Json => encode::json_requests(
                batch,
                &mut fates,
                self.settings.max_messages,
                self.settings.max_bytes,
            ),
            WebhookEncoding::Raw => self.raw_requests(batch, &mut fates),
        };
        for (i, fate) in fates.iter().enumerate() {
            if *fate == Some(Reject::TooLarge) {
                tracing::warn!(output = %self.name, id = %batch[i].id, bytes = batch[i].payload.len(), max_bytes = self.settings.max_bytes, "a message is larger than the webhook's max_bytes; refused as too large");
            }
        }
        let gathering =
            self.settings.encoding == WebhookEncoding::Json && !self.settings.max_wait.is_zero();
        let last = planned.len().saturating_sub(1);
        let answers =
            futures::future::join_all(planned.into_iter().enumerate().map(|(k, p)| async move {
                let outcome =
                    if gathering && k == last && p.positions.len() < self.settings.max_messages {
                        let ids: Vec<MessageId> =
                            p.positions.iter().map(|&i| batch[i].id).collect();
                        self.gathered(p.body, ids).await
                    } else {
                        self.post(p.body, p.headers).await
                    };
                (p.positions, outcome)
            }))
            .await;
        let mut delivery_hint = None;
        let mut detail = None;
        for (positions, outcome) in answers {
            if let Some(reason) = outcome.refusal {
                for i in positions {
                    fates[i] = Some(reason);
                }
                detail = outcome.error.or(detail);
            }
            if let Some(h) = outcome.retry_after {
                delivery_hint = Some(h.max(delivery_hint.unwrap_or_default()));
            }
        }
        let (mut delivery, accepted) = Delivery::from_fates(&fates);
        if let Some(h) = delivery_hint {
            delivery.set_retry_after(h);
        }
        if let Some(d) = detail {
            delivery.set_detail(d);
        }
        self.sent.inc_by(accepted);
        self.refused.count(&delivery, fates.len());
        Ok(delivery)
    }

    /// One `raw` request per message; the unencodable and the too large
    /// get their fate instead.
    fn raw_requests(&self, batch: &[Message], fates: &mut [Option<Reject>]) -> Vec<Planned> {
        let mut planned = Vec::with_capacity(batch.len());
        for (i, message) in batch.iter().enumerate() {
            match encode::raw_request(message, self.settings.max_bytes) {
                Ok((body, headers)) => planned.push(Planned {
                    positions: vec![i],
                    body,
                    headers,
                }),
                Err(RawRefusal::TooLarge) => fates[i] = Some(Reject::TooLarge),
                Err(RawRefusal::Attribute(attribute)) => {
                    tracing::warn!(
                        output = %self.name,
                        id = %message.id,
                        attribute = %attribute.escape_debug(),
                        "an attribute cannot be an HTTP header (a name that is not an HTTP token, a value with a line break or control character, or two names that differ only in case); the message is refused as unencodable"
                    );
                    fates[i] = Some(Reject::Unencodable);
                }
            }
        }
        planned
    }

    /// Makes one request, within `request_timeout`, and says what its
    /// answer means.
    async fn post(&self, body: Bytes, own: HeaderMap) -> Outcome {
        let Some(client) = self.client.load_full() else {
            return Outcome::FAILED;
        };
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the permits are never closed");
        let _counted = InFlight::new(&self.in_flight);
        let mut headers = self.fixed.clone();
        headers.extend(own);
        if let Some(key) = &self.hmac {
            headers.insert(encode::SIGNATURE, encode::signature(key, &body));
        }
        let mut request = Request::post(self.uri.clone())
            .body(Full::new(body))
            .expect("a POST to a checked URL is a request");
        *request.headers_mut() = headers;
        let timeout = self.settings.request_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let response = match tokio::time::timeout_at(deadline, client.request(request)).await {
            Err(_) => {
                return self.unanswered(format!("no answer within request_timeout ({timeout:?})"));
            }
            Ok(Err(e)) => {
                let what = if e.is_connect() { "connect" } else { "request" };
                return self.unanswered(format!("{what}: {}", error_chain(&e)));
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| answer::retry_after(v.as_bytes(), SystemTime::now()));
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|v| answer::printable(v.as_bytes(), 200));
        let mut body = response.into_body();
        let mut kept = Vec::new();
        // The status stands even if the body is slow: stop reading at the
        // deadline (the connection is then dropped, not reused).
        let _ = tokio::time::timeout_at(deadline, async {
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Ok(data) = frame.into_data() {
                    let room = BODY_CAP - kept.len();
                    kept.extend_from_slice(&data[..room.min(data.len())]);
                    if kept.len() >= BODY_CAP {
                        break;
                    }
                }
            }
        })
        .await;
        drop(body);
        let refusal = answer::classify(status.as_u16());
        let mut state = self.state.lock().expect("state lock");
        state.connected = true;
        state.last_status = Some(status.as_u16());
        if let Some(reason) = refusal {
            let said = answer::printable(&kept, 200);
            let error = format!(
                "HTTP {status}{}",
                if said.is_empty() {
                    String::new()
                } else {
                    format!(": {said}")
                }
            );
            drop(state);
            match (reason, &location) {
                (Reject::Refused, Some(to)) if status.is_redirection() => tracing::warn!(
                    output = %self.name, status = status.as_u16(), location = %to,
                    "the webhook answered with a redirect, which is not followed; its messages are refused for good"
                ),
                (Reject::Refused, _) => tracing::warn!(
                    output = %self.name, status = status.as_u16(), answer = %said,
                    "the webhook refused a request for good; its messages are refused"
                ),
                _ => tracing::warn!(
                    output = %self.name, status = status.as_u16(), answer = %said,
                    retry_after = ?retry_after,
                    "the webhook failed a request; its messages will be retried under the retry policy"
                ),
            }
            self.state.lock().expect("state lock").last_error = Some(error.clone());
            return Outcome {
                refusal,
                retry_after: refusal.and(retry_after),
                error: Some(error.into()),
            };
        }
        Outcome {
            refusal,
            retry_after: None,
            error: None,
        }
    }

    /// A request that got no HTTP answer: its messages failed.
    fn unanswered(&self, error: String) -> Outcome {
        tracing::warn!(output = %self.name, url = %self.settings.url, error = %error, "a webhook request got no answer; its messages will be retried under the retry policy");
        let outcome = Outcome::failed(&error);
        let mut state = self.state.lock().expect("state lock");
        state.connected = false;
        state.last_error = Some(error);
        outcome
    }

    /// Sends the partly full request `body` (a JSON array carrying `ids`)
    /// together with what other routes' sends add within `max_wait`.
    async fn gathered(&self, body: Bytes, ids: Vec<MessageId>) -> Outcome {
        // `[a,b]` -> `a,b`.
        let inner = body.slice(1..body.len() - 1);
        enum Then {
            Wait(oneshot::Receiver<Outcome>),
            Alone,
            Lead(u64),
        }
        let then = {
            let mut open = self.gather.open.lock().expect("gather lock");
            match open.as_mut() {
                Some(o)
                    if o.ids.len() + ids.len() <= self.settings.max_messages
                        && o.body.len() + inner.len() + 2 <= self.settings.max_bytes =>
                {
                    o.body.push(b',');
                    o.body.extend_from_slice(&inner);
                    o.ids.extend(ids.iter().copied());
                    let (tx, rx) = oneshot::channel();
                    o.waiters.push(tx);
                    if o.ids.len() == self.settings.max_messages {
                        o.full.notify_one();
                    }
                    Then::Wait(rx)
                }
                // One open request at a time: with it full (or none), this
                // one opens the next when there is none, else goes alone.
                Some(_) => Then::Alone,
                None => {
                    let generation = self.gather.generation.fetch_add(1, Ordering::Relaxed);
                    let mut b = Vec::with_capacity(self.settings.max_bytes.min(1 << 20));
                    b.push(b'[');
                    b.extend_from_slice(&inner);
                    *open = Some(Open {
                        generation,
                        body: b,
                        ids: ids.clone(),
                        waiters: Vec::new(),
                        full: Arc::new(Notify::new()),
                    });
                    Then::Lead(generation)
                }
            }
        };
        match then {
            Then::Lead(generation) => self.lead(generation).await,
            Then::Wait(rx) => rx.await.unwrap_or(Outcome::FAILED),
            Then::Alone => {
                let mut headers = HeaderMap::new();
                headers.insert(
                    encode::IDEMPOTENCY_KEY,
                    HeaderValue::from_str(&encode::idempotency_key(ids.into_iter())).expect("hex"),
                );
                self.post(body, headers).await
            }
        }
    }

    /// Waits up to `max_wait` (or until full) for the open request
    /// `generation` to fill, then sends it and tells every joiner.
    async fn lead(&self, generation: u64) -> Outcome {
        let full = {
            let open = self.gather.open.lock().expect("gather lock");
            open.as_ref().map(|o| Arc::clone(&o.full))
        };
        let guard = Leading {
            gather: &self.gather,
            generation,
        };
        if let Some(full) = full {
            let _ = tokio::time::timeout(self.settings.max_wait, full.notified()).await;
        }
        let Some(mut open) = guard.take() else {
            return Outcome::FAILED;
        };
        open.body.push(b']');
        let mut headers = HeaderMap::new();
        headers.insert(
            encode::IDEMPOTENCY_KEY,
            HeaderValue::from_str(&encode::idempotency_key(open.ids.iter().copied())).expect("hex"),
        );
        let outcome = self.post(Bytes::from(open.body), headers).await;
        for waiter in open.waiters {
            let _ = waiter.send(outcome.clone());
        }
        outcome
    }

    /// The output's state for `/v1/status`.
    fn status(&self) -> WebhookStatus {
        let mut s = self.state.lock().expect("state lock").clone();
        s.requests_in_flight = self.in_flight.load(Ordering::Relaxed);
        s
    }
}

/// The open request of a `max_wait` output, which other sends may join.
#[derive(Debug, Default)]
struct Gather {
    open: Mutex<Option<Open>>,
    generation: AtomicU64,
}

#[derive(Debug)]
struct Open {
    generation: u64,
    /// `[a,b,...` without the closing bracket.
    body: Vec<u8>,
    ids: Vec<MessageId>,
    /// The joiners, told the request's outcome.
    waiters: Vec<oneshot::Sender<Outcome>>,
    /// Woken when the request is full.
    full: Arc<Notify>,
}

/// The leader of an open request: takes it out of the slot when it sends
/// it, or when its send is dropped (so no joiner waits for a leader that
/// is gone: their senders drop, and they count as failed).
struct Leading<'a> {
    gather: &'a Gather,
    generation: u64,
}

impl Leading<'_> {
    fn take(self) -> Option<Open> {
        let open = self.take_mine();
        std::mem::forget(self);
        open
    }

    fn take_mine(&self) -> Option<Open> {
        let mut slot = self.gather.open.lock().expect("gather lock");
        if slot
            .as_ref()
            .is_some_and(|o| o.generation == self.generation)
        {
            slot.take()
        } else {
            None
        }
    }
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        drop(self.take_mine());
    }
}

/// Counts a request in flight while it lives.
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn new(n: &'a AtomicU64) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Self(n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An error and its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// A reload reads `ca_file` and the client certificate again: requests from
/// then on use a client with them (those in flight finish on the old one);
/// files that do not load leave the client in force (counted, logged).
impl crate::http::tls::Reload for WebhookOutput {
    fn reload(&self) {
        match client(&self.settings) {
            Ok(c) => {
                self.client.store(Some(Arc::new(c)));
                self.tls_reloads.0.inc();
            }
            Err(e) => {
                self.tls_reloads.1.inc();
                tracing::error!(output = %self.name, error = %e, "webhook TLS reload failed; the client in force stays");
            }
        }
    }
}

/// The HTTP client of one output: pooled HTTP/1.1, no redirects followed
/// (hyper-util's client never follows them), TLS by rustls.
fn client(settings: &config::WebhookOutput) -> Result<HttpClient, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(settings.connect_timeout));
    let tls = tls_config(settings)?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        // Write the head and the body with one writev instead of copying
        // the body into hyper's buffer (hyper-rustls' stream does not say
        // it writes vectored, so hyper would flatten).
        .http1_writev(true)
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(settings.concurrency)
        .build(https))
}

/// rustls with the ring provider, trusting the system's roots (for an
/// `https` URL) and `ca_file`.
fn tls_config(settings: &config::WebhookOutput) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    if settings.url.starts_with("https://") {
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!(error = %e, "a system root certificate could not be read");
        }
        let (added, _) = roots.add_parsable_certificates(native.certs);
        if added == 0 && settings.ca_file.is_none() {
            tracing::warn!(url = %settings.url, "no system root certificates found; set ca_file to trust the webhook's server");
        }
    }
    if let Some(path) = &settings.ca_file {
        for cert in crate::http::tls::read_certs(path)? {
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    // ring has no post-quantum key exchange (rustls deprecates its provider
    // for that); aws-lc, which has, needs cmake to build.
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match &settings.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some(pair) => {
            let (chain, key) = client_identity(pair)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("{}: {e}", pair.0.display()))
        }
    }
}

/// The certificate chain and key of `client_cert` / `client_key`.
///
/// # Errors
/// What is wrong with the files.
pub(crate) fn client_identity(
    (cert, key): &(std::path::PathBuf, std::path::PathBuf),
) -> Result<
    (
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    String,
> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject as _;
    let chain = crate::http::tls::read_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{}: no private key: {e}", key.display()))?;
    Ok((chain, key))
}

impl Output for WebhookOutput {
    fn name(&self) -> &str {
        &self.name
    }

    /// Answers once every request of the batch was answered (or timed
    /// out), so [`Output::send_written`] is this too.
    fn send<'a>(&'a self, batch: &'a [Message]) -> SendFuture<'a> {
        Box::pin(self.deliver(batch))
    }

    /// Enough for [`ROUNDS`] rounds of `concurrency` full requests, so
    /// one route keeps every request slot busy while its batch lasts,
    /// at most [`MOST_PREFERRED`].
    fn preferred_batch(&self) -> Option<usize> {
        let per_request = match self.settings.encoding {
            WebhookEncoding::Json => self.settings.max_messages,
            WebhookEncoding::Raw => 1,
        };
        Some(
            per_request
                .saturating_mul(self.settings.concurrency)
                .saturating_mul(ROUNDS)
                .min(MOST_PREFERRED),
        )
    }
}

impl Lifecycle for WebhookOutput {
    fn attach(&self) -> LifecycleFuture<'_, Result<Option<SocketAddr>, AttachError>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    /// At once: a webhook connects per request.
    fn wait_connected(&self, _timeout: Duration) -> LifecycleFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }

    /// Whether the last request got an HTTP answer.
    fn connected(&self) -> bool {
        self.state.lock().expect("state lock").connected
    }

    fn stats(&self) -> OutputStats {
        let webhook = self.status();
        OutputStats {
            name: self.name.clone(),
            kind: "webhook".into(),
            sent: self.sent.get(),
            dropped: self.refused.total(),
            peers: u64::from(webhook.connected),
            webhook: Some(webhook),
            ..OutputStats::default()
        }
    }

    /// Takes no more batches, and waits up to `linger` for the requests in
    /// flight to be answered.
    fn flush_and_close(&self, linger: Duration) -> LifecycleFuture<'_, ()> {
        Box::pin(async move {
            self.closed.store(true, Ordering::Release);
            let all = u32::try_from(self.settings.concurrency).unwrap_or(u32::MAX);
            let _ = tokio::time::timeout(linger, self.permits.acquire_many(all)).await;
        })
    }
}
