//! The `zmq-router` input: the ROUTER side facing REQ and DEALER clients.
//!
//! Each client message is a request. Its envelope (the frames up to the
//! empty delimiter: the delimiter alone from a REQ client, or a request id
//! and the delimiter from libzmq's `ZMQ_REQ_CORRELATE`) is kept for the
//! reply; the frames after it are decoded with the input's envelope into a
//! [`Message`] that carries a [`Request`](crate::message::request::Request).
//! A DEALER client that sends no delimiter gets its reply without one.
//!
//! Whatever answers the request (a service through a `zmq-dealer` output, a
//! plugin, or an error) is sent back to the connection that asked, with its
//! envelope: a reply as the service gave it, an error as two frames,
//! `switchyard.error` and a JSON body (see [`crate::message::request`]). A
//! request that cannot be decoded is answered `BAD_REQUEST` at once.
//! Answers go straight into the connection's queue; a client that lets
//! `send_hwm` answers pile up unread loses the next ones, counted
//! (`switchyard_zmtp_dropped_total{reason="peer_queue_full"}`), so a client
//! that does not read costs a bounded amount of memory.
//!
//! At most `max_pending` requests wait for answers; at the bound the input
//! stops reading (TCP backpressure) until answers go out. When the input
//! stops, it hands over what it had read, answers any later request with
//! `SHUTTING_DOWN`, and keeps its connections until every pending request
//! is answered (at most [`LINGER`]), so no client waits on a closed socket.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::zmq::{Counters, Permits, Publishers, Verdict};
use super::{Context, Metrics, Running, Sink, StartError, Wait, attach};
use crate::config::RouterInput;
use crate::envelope::Envelope;
use crate::message::Frames;
use crate::message::Message;
use crate::message::request::{Answer, InputRequests, Replier, RequestError};
use crate::zmtp::connection::{PeerId, Received};
use crate::zmtp::router::{RouterSender, RouterSocket};

/// Most requests read from the socket and offered as one batch.
const BATCH: usize = 256;
/// The longest a stopped input keeps its connections for pending answers.
pub const LINGER: Duration = Duration::from_secs(30);
/// How long the last answers get to reach the wire before the socket closes.
const FLUSH: Duration = Duration::from_secs(1);

/// Sends a request's answer back to the connection that asked, with the
/// request's envelope.
struct ZmqReplier {
    sender: RouterSender,
    peer: PeerId,
    /// The request's envelope, sent before the answer.
    envelope: Frames,
    /// One of the input's `max_pending` places, freed with the answer.
    _permit: OwnedSemaphorePermit,
}

impl Replier for ZmqReplier {
    fn reply(self: Box<Self>, answer: Answer) {
        answer_to(&self.sender, self.peer, self.envelope, answer.into_frames());
    }
}

/// Queues `answer` with `envelope` for `peer`. A client with
/// `send_hwm` answers unread loses this one, counted
/// (`switchyard_zmtp_dropped_total{reason="peer_queue_full"}`); one that
/// is gone is counted as `unroutable`.
fn answer_to(sender: &RouterSender, peer: PeerId, envelope: Frames, answer: Frames) {
    let mut frames = envelope;
    frames.extend(answer);
    sender.send_or_drop(peer, frames);
}

/// Splits a client message into its envelope (up to and including the
/// empty delimiter, when one comes first or second with a body after it)
/// and the body.
fn split_envelope(frames: &[Bytes]) -> (&[Bytes], &[Bytes]) {
    match frames.iter().take(2).position(Bytes::is_empty) {
        Some(i) if i + 1 < frames.len() => frames.split_at(i + 1),
        _ => (&[], frames),
    }
}

/// A running `zmq-router` input.
pub struct ZmqRouterInput {
    name: Arc<str>,
    socket: RouterSocket,
    envelope: Envelope,
    sink: Arc<dyn Sink>,
    counters: Counters,
    publishers: Publishers,
    permits: Permits,
    /// The socket's sending half, for answers.
    sender: RouterSender,
    requests: InputRequests,
    max_pending: usize,
    places: Arc<Semaphore>,
}

impl std::fmt::Debug for ZmqRouterInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZmqRouterInput")
            .field("name", &self.name)
            .field("envelope", &self.envelope)
            .field("max_pending", &self.max_pending)
            .finish_non_exhaustive()
    }
}

impl ZmqRouterInput {
    /// An input named `name` reading `socket` (already bound or
    /// connecting), with at most `max_pending` requests unanswered.
    // Each argument is one independent part of the input; a builder would
    // only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        socket: RouterSocket,
        envelope: Envelope,
        sink: Arc<dyn Sink>,
        metrics: &Metrics,
        requests: InputRequests,
        max_pending: usize,
        security: (&crate::auth::Live, crate::config::OnForbidden),
    ) -> Self {
        let max_pending = max_pending.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            name: Arc::from(name),
            sender: socket.sender(),
            socket,
            envelope,
            sink,
            counters: Counters::new(metrics, name),
            publishers: Publishers::new(name),
            permits: Permits::new(name, security.0, security.1),
            requests,
            max_pending,
            places: Arc::new(Semaphore::new(max_pending)),
        }
    }

    /// Starts a `zmq-router` input as its entry says: bound or connected,
    /// reading on a task of `ctx.lingering` that outlives the intake (its
    /// connections stay for the answers), handed over to `ctx.tracker`
    /// once it has offered what it read.
    ///
    /// # Errors
    /// [`StartError::Endpoint`] when it cannot bind.
    pub async fn start(
        name: &str,
        entry: &RouterInput,
        ctx: &Context,
    ) -> Result<Running, StartError> {
        let settings = &entry.socket;
        let socket = RouterSocket::new(name, settings.options.socket_options(), &ctx.zmtp);
        let addr = attach(name, settings, &socket).await?;
        let reader = Self::new(
            name,
            socket,
            settings.envelope,
            Arc::clone(&ctx.sink),
            &ctx.inputs,
            ctx.requests.for_input(name),
            entry.max_pending,
            (&ctx.security, settings.options.on_forbidden),
        );
        let stop = ctx.stop.child_token();
        let handed_over = CancellationToken::new();
        ctx.lingering
            .spawn(reader.run(stop.clone(), handed_over.clone()));
        let task = ctx
            .tracker
            .spawn(async move { handed_over.cancelled().await });
        Ok(Running::new(addr, stop, task))
    }

    /// Reads, decodes and offers requests until `stop` is cancelled, then
    /// cancels `handed_over` once everything read so far was offered. It
    /// keeps answering (later requests get `SHUTTING_DOWN`) until every
    /// pending request is answered or [`LINGER`] passes, then closes the
    /// socket.
    pub async fn run(mut self, stop: CancellationToken, handed_over: CancellationToken) {
        // Cancelled at the hand-over below, or if this task ends otherwise.
        let handed_over = handed_over.drop_guard();
        let mut received = Vec::with_capacity(BATCH);
        loop {
            // A place for at least one more request before reading.
            let room = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                room = Arc::clone(&self.places).acquire_owned() => room,
            };
            let Ok(first) = room else { break };
            // No more than there are places for, so each read request has one.
            let max = (self.places.available_permits() + 1).min(BATCH);
            let n = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                n = self.socket.recv_many(&mut received, max) => n,
            };
            if n == 0 {
                break;
            }
            let batch = self.decode(&mut received, first);
            if batch.is_empty() {
                continue;
            }
            let len = batch.len();
            let offered = self.sink.offer(batch, Wait::Unbounded).await;
            self.counters.offered(len, offered);
        }
        drop(handed_over);
        self.linger().await;
        // Answers still owed past the linger die with the socket; those
        // queued get a moment to reach the wire.
        if !self.socket.flush(FLUSH).await {
            tracing::warn!(input = %self.name, "clients did not take every answer before the input closed");
        }
        self.socket.close().await;
        tracing::debug!(input = %self.name, "input stopped");
    }

    /// After the stop: answers new requests `SHUTTING_DOWN` until every
    /// pending one is answered, or [`LINGER`].
    async fn linger(&mut self) {
        let until = Instant::now() + LINGER;
        let all = u32::try_from(self.max_pending).unwrap_or(u32::MAX);
        let places = Arc::clone(&self.places);
        let mut received = Vec::with_capacity(BATCH);
        let drained = places.acquire_many(all);
        tokio::pin!(drained);
        loop {
            tokio::select! {
                biased;
                _ = &mut drained => break,
                () = sleep_until(until) => {
                    tracing::warn!(input = %self.name, pending = self.requests.pending(), "input closed with requests unanswered");
                    break;
                }
                n = self.socket.recv_many(&mut received, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    for r in received.drain(..) {
                        self.counters.shutting_down.inc();
                        self.refuse(&r, &RequestError::ShuttingDown);
                    }
                }
            }
        }
    }

    /// Answers `r` with `error` at once, without making it a request.
    fn refuse(&self, r: &Received, error: &RequestError) {
        let (envelope, _) = split_envelope(&r.frames);
        let envelope = envelope.iter().cloned().collect();
        answer_to(&self.sender, r.peer, envelope, error.frames());
    }

    /// Decodes `received` into requests, each holding a place (`first`
    /// for the first one; the others take free places as they go, or wait
    /// for one). Undecodable requests are answered `BAD_REQUEST` at once.
    fn decode(
        &mut self,
        received: &mut Vec<Received>,
        first: OwnedSemaphorePermit,
    ) -> Vec<Message> {
        let mut batch = Vec::with_capacity(received.len());
        let mut place = Some(first);
        let secured = self.permits.begin();
        for mut r in received.drain(..) {
            let publisher = self.publishers.of(r.peer, r.user.take());
            let (envelope, body) = split_envelope(&r.frames);
            let envelope: Frames = envelope.iter().cloned().collect();
            let decoded = self.envelope.decode(body, &publisher);
            let verdict = match &decoded {
                Ok(message) if secured => self.permits.check(
                    r.peer,
                    message.publisher.principal.as_ref(),
                    message.topic.as_str(),
                    &self.counters.forbidden,
                ),
                _ => Verdict::Allowed,
            };
            match decoded {
                Ok(message) if verdict != Verdict::Allowed => {
                    // Answered, so the client knows; then cut if so configured.
                    let error = RequestError::Forbidden {
                        topic: message.topic.as_str().to_owned(),
                        principal: message
                            .publisher
                            .principal
                            .as_deref()
                            .unwrap_or(crate::config::ANONYMOUS)
                            .to_owned(),
                    };
                    answer_to(&self.sender, r.peer, envelope, error.frames());
                    if verdict == Verdict::Disconnect {
                        self.socket.disconnect(r.peer, "forbidden");
                    }
                }
                Ok(mut message) => {
                    let permit = match place.take() {
                        Some(p) => p,
                        None => match Arc::clone(&self.places).try_acquire_owned() {
                            Ok(p) => p,
                            // Not while this task is the only one taking
                            // places (it reads no more requests than are
                            // free); should it happen, the request is
                            // refused as overload, not let past the bound.
                            Err(_) => {
                                self.counters.backpressure.inc();
                                self.refuse(&r, &RequestError::Overloaded);
                                continue;
                            }
                        },
                    };
                    let replier = ZmqReplier {
                        sender: self.sender.clone(),
                        peer: r.peer,
                        envelope,
                        _permit: permit,
                    };
                    message.request = Some(self.requests.start(Box::new(replier)));
                    batch.push(message);
                }
                Err(e) => {
                    self.counters.rejected(&e).inc();
                    tracing::debug!(input = %self.name, peer = %r.peer, error = %e, "request rejected");
                    let error = RequestError::BadRequest {
                        reason: e.to_string(),
                    };
                    answer_to(&self.sender, r.peer, envelope, error.frames());
                }
            }
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;

    use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

    use super::*;
    use crate::ingress::Offered;
    use crate::message::request::{RequestMetrics, Source};
    use crate::metrics::Registry;
    use crate::zmtp::connection::testing::{eventually, metrics, within};
    use crate::zmtp::options::Options;

    fn frames(parts: &[&[u8]]) -> Vec<Bytes> {
        parts.iter().map(|p| Bytes::copy_from_slice(p)).collect()
    }

    #[test]
    fn envelopes_split_at_the_delimiter() {
        let req = frames(&[b"", b"topic", b"body"]);
        let (env, body) = split_envelope(&req);
        assert_eq!((env.len(), body.len()), (1, 2));
        let correlated = frames(&[b"\x00\x00\x00\x01", b"", b"topic", b"body"]);
        let (env, body) = split_envelope(&correlated);
        assert_eq!((env.len(), body.len()), (2, 2));
        let dealer = frames(&[b"topic", b"body"]);
        let (env, body) = split_envelope(&dealer);
        assert_eq!((env.len(), body.len()), (0, 2));
        let only_delimiter = frames(&[b""]);
        let (env, body) = split_envelope(&only_delimiter);
        assert_eq!((env.len(), body.len()), (0, 1));
    }

    /// Answers each request with its topic and payload reversed.
    struct Answering;

    impl Sink for Answering {
        fn offer(
            &self,
            batch: Vec<Message>,
            _wait: Wait,
        ) -> Pin<Box<dyn Future<Output = Offered> + Send + '_>> {
            Box::pin(async move {
                let admitted = batch.len();
                for m in batch {
                    if let Some(r) = &m.request {
                        let body: Vec<u8> = m.payload.iter().rev().copied().collect();
                        let reply =
                            smallvec::smallvec![m.topic.as_bytes().clone(), Bytes::from(body)];
                        r.answer(reply, Source::Service);
                    }
                }
                Offered {
                    admitted,
                    refusal: None,
                }
            })
        }
    }

    async fn start(sink: Arc<dyn Sink>) -> (Registry, String, CancellationToken) {
        start_with(sink, 64).await
    }

    async fn start_with(
        sink: Arc<dyn Sink>,
        max_pending: usize,
    ) -> (Registry, String, CancellationToken) {
        let (registry, endpoint, stop, _wire) =
            start_full(sink, max_pending, Options::default()).await;
        (registry, endpoint, stop)
    }

    /// The input with `options` on its socket; the last value is the ZMTP
    /// layer's registry.
    async fn start_full(
        sink: Arc<dyn Sink>,
        max_pending: usize,
        options: Options,
    ) -> (Registry, String, CancellationToken, Registry) {
        let registry = Registry::new();
        let (wire_registry, wire) = metrics();
        let socket = RouterSocket::new("clients", options, &wire);
        let addr = socket.bind("tcp://127.0.0.1:0").await.expect("bind");
        let input = ZmqRouterInput::new(
            "clients",
            socket,
            Envelope::TopicPayload,
            sink,
            &Metrics::register(&registry),
            RequestMetrics::register(&registry).for_input("clients"),
            max_pending,
            (
                &crate::auth::open_for_tests(),
                crate::config::OnForbidden::Drop,
            ),
        );
        let stop = CancellationToken::new();
        tokio::spawn(input.run(stop.clone(), CancellationToken::new()));
        (registry, format!("tcp://{addr}"), stop, wire_registry)
    }

    fn message(parts: &[&[u8]]) -> ZmqMessage {
        let mut m = ZmqMessage::from(parts[0].to_vec());
        for p in &parts[1..] {
            m.push_back(Bytes::copy_from_slice(p));
        }
        m
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_req_clients_each_get_their_own_answer() {
        let (registry, endpoint, stop) = start(Arc::new(Answering)).await;
        let mut clients = Vec::new();
        for i in 0..20u32 {
            let endpoint = endpoint.clone();
            clients.push(tokio::spawn(async move {
                let mut req = zeromq::ReqSocket::new();
                within("connect", req.connect(&endpoint))
                    .await
                    .expect("connect");
                for j in 0..10u32 {
                    let body = format!("{i}-{j}");
                    within("send", req.send(message(&[b"rpc.echo", body.as_bytes()])))
                        .await
                        .expect("send");
                    let reply = within("reply", req.recv()).await.expect("recv");
                    let want: String = body.chars().rev().collect();
                    assert_eq!(reply.get(0).map(|b| &b[..]), Some(&b"rpc.echo"[..]));
                    assert_eq!(reply.get(1).map(|b| &b[..]), Some(want.as_bytes()));
                }
            }));
        }
        for c in clients {
            within("client", c).await.expect("client ok");
        }
        let text = registry.encode();
        assert!(
            text.contains(
                r#"switchyard_request_outcomes_total{input="clients",outcome="replied"} 200"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"switchyard_request_pending{input="clients"} 0"#),
            "{text}"
        );
        stop.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_that_does_not_fit_the_envelope_is_answered_bad_request() {
        let (registry, endpoint, stop) = start(Arc::new(Answering)).await;
        let mut req = zeromq::ReqSocket::new();
        within("connect", req.connect(&endpoint))
            .await
            .expect("connect");
        within("send", req.send(message(&[b"only-one-frame"])))
            .await
            .expect("send");
        let reply = within("reply", req.recv()).await.expect("recv");
        assert_eq!(
            reply.get(0).map(|b| &b[..]),
            Some(crate::message::request::ERROR_FRAME)
        );
        let body: serde_json::Value =
            serde_json::from_slice(reply.get(1).expect("json frame")).expect("json");
        assert_eq!(body["error"]["code"], "BAD_REQUEST");
        assert!(registry.encode().contains(
            r#"switchyard_input_rejected_total{input="clients",reason="bad_envelope"} 1"#
        ));
        // The client is still served.
        within("send", req.send(message(&[b"rpc.echo", b"ab"])))
            .await
            .expect("send");
        let reply = within("reply", req.recv()).await.expect("recv");
        assert_eq!(reply.get(1).map(|b| &b[..]), Some(&b"ba"[..]));
        stop.cancel();
    }

    /// Holds every request it is offered, unanswered, until released.
    #[derive(Default)]
    struct Holding(std::sync::Mutex<Vec<Message>>);

    impl Holding {
        fn held(&self) -> usize {
            self.0.lock().expect("lock").len()
        }

        /// Answers and lets go of everything held.
        fn release(&self) {
            for m in self.0.lock().expect("lock").drain(..) {
                if let Some(r) = &m.request {
                    r.answer(smallvec::smallvec![m.payload.clone()], Source::Service);
                }
            }
        }
    }

    impl Sink for Holding {
        fn offer(
            &self,
            batch: Vec<Message>,
            _wait: Wait,
        ) -> Pin<Box<dyn Future<Output = Offered> + Send + '_>> {
            Box::pin(async move {
                let admitted = batch.len();
                self.0.lock().expect("lock").extend(batch);
                Offered {
                    admitted,
                    refusal: None,
                }
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_max_pending_the_input_stops_reading_until_answers_go_out() {
        let sink = Arc::new(Holding::default());
        let (registry, endpoint, stop) = start_with(sink.clone(), 2).await;
        let mut clients = Vec::new();
        for i in 0..5u8 {
            let endpoint = endpoint.clone();
            clients.push(tokio::spawn(async move {
                let mut req = zeromq::ReqSocket::new();
                within("connect", req.connect(&endpoint))
                    .await
                    .expect("connect");
                within("send", req.send(message(&[b"rpc.x", &[i]])))
                    .await
                    .expect("send");
                let reply = within("reply", req.recv()).await.expect("recv");
                assert_eq!(reply.get(0).map(|b| &b[..]), Some(&[i][..]), "its own");
            }));
        }
        eventually("two held", || sink.held() == 2).await;
        // The other three wait in the socket, unread, while two are
        // pending; each answer lets one more in.
        let pending = || {
            crate::zmtp::connection::testing::metric(
                &registry,
                "switchyard_request_pending",
                &[("input", "clients")],
            )
        };
        assert_eq!(pending(), 2.0);
        let mut answered = 0;
        while answered < 5 {
            eventually("more held", || sink.held() > 0).await;
            answered += sink.held();
            assert!(sink.held() <= 2, "never more than max_pending");
            sink.release();
        }
        for c in clients {
            within("client", c).await.expect("client ok");
        }
        assert_eq!(pending(), 0.0);
        stop.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_never_reads_loses_answers_counted_not_memory() {
        use tokio::io::AsyncWriteExt;

        let options = Options {
            send_hwm: 8,
            ..Options::default()
        };
        let (_registry, endpoint, stop, wire) = start_full(Arc::new(Answering), 64, options).await;
        let addr = endpoint
            .trim_start_matches("tcp://")
            .parse()
            .expect("address");
        let (mut hostile, _) = crate::zmtp::connection::testing::raw_client_with(
            addr,
            crate::zmtp::socket_type::SocketType::Dealer,
            Some(4096),
        )
        .await;
        // Requests without a body, each answered BAD_REQUEST, never read.
        let mut out = bytes::BytesMut::new();
        for _ in 0..20_000 {
            crate::zmtp::frame::encode_message(&[Bytes::from_static(b"x")], &mut out);
        }
        within("write", hostile.write_all(&out))
            .await
            .expect("write");
        eventually("answers dropped for the stuck client", || {
            crate::zmtp::connection::testing::metric(
                &wire,
                "switchyard_zmtp_dropped_total",
                &[("socket", "clients"), ("reason", "peer_queue_full")],
            ) > 0.0
        })
        .await;
        // Another client is served as ever.
        let mut req = zeromq::ReqSocket::new();
        within("connect", req.connect(&endpoint))
            .await
            .expect("connect");
        within("send", req.send(message(&[b"rpc.echo", b"ab"])))
            .await
            .expect("send");
        let reply = within("reply", req.recv()).await.expect("recv");
        assert_eq!(reply.get(1).map(|b| &b[..]), Some(&b"ba"[..]));
        stop.cancel();
    }
}
