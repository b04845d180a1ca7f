//! `zmq-dealer` over real sockets: the project's ROUTER sockets (echoing
//! the envelope, as REP does) and the `zeromq` crate's REP as services.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::*;
use crate::egress::Rejection;
use crate::message::request::{InputRequests, OneshotReplier, Request, RouteTag};
use crate::message::{Publisher, Topic};
use crate::zmtp::connection::testing::{eventually, metric, raw_client, within};
use crate::zmtp::router::RouterSocket;

/// What a test service does with the requests it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Replies `[name, payload]` at once.
    Echo,
    /// Keeps the request; [`Command::Release`] replies to what it kept.
    Hold,
}

enum Command {
    Mode(Mode),
    Release,
    /// Closes the service's socket.
    Stop,
}

/// A service: a ROUTER socket bound on 127.0.0.1:0 that answers like REP.
struct Service {
    addr: SocketAddr,
    commands: mpsc::UnboundedSender<Command>,
    /// Payloads received, in order.
    seen: Arc<Mutex<Vec<Bytes>>>,
}

impl Service {
    async fn start(name: &'static str, mode: Mode, wire: &crate::zmtp::metrics::Metrics) -> Self {
        let mut socket = RouterSocket::new(name, Options::default(), wire);
        let addr = socket.bind("tcp://127.0.0.1:0").await.expect("bind");
        let (commands, mut rx) = mpsc::unbounded_channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = Arc::clone(&seen);
        tokio::spawn(async move {
            let mut mode = mode;
            let mut held = Vec::new();
            loop {
                enum Event {
                    Command(Option<Command>),
                    Request(Option<crate::zmtp::connection::Received>),
                }
                let event = tokio::select! {
                    cmd = rx.recv() => Event::Command(cmd),
                    got = socket.recv() => Event::Request(got),
                };
                match event {
                    Event::Command(Some(Command::Mode(m))) => mode = m,
                    Event::Command(Some(Command::Release)) => {
                        for (peer, frames) in held.drain(..) {
                            let _ = socket.send(peer, frames).await;
                        }
                    }
                    Event::Command(Some(Command::Stop) | None) => {
                        socket.close().await;
                        return;
                    }
                    Event::Request(None) => return,
                    Event::Request(Some(got)) => {
                        // [id, "", topic, payload]
                        let f = got.frames;
                        seen2.lock().expect("lock").push(f[3].clone());
                        let reply: Multipart = [
                            f[0].clone(),
                            f[1].clone(),
                            Bytes::from_static(name.as_bytes()),
                            f[3].clone(),
                        ]
                        .into_iter()
                        .collect();
                        match mode {
                            Mode::Echo => {
                                let _ = socket.send(got.peer, reply).await;
                            }
                            Mode::Hold => held.push((got.peer, reply)),
                        }
                    }
                }
            }
        });
        Self {
            addr,
            commands,
            seen,
        }
    }

    fn endpoint(&self) -> String {
        format!("tcp://{}", self.addr)
    }

    fn set(&self, mode: Mode) {
        let _ = self.commands.send(Command::Mode(mode));
    }

    fn release(&self) {
        let _ = self.commands.send(Command::Release);
    }

    fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
    }

    fn seen(&self) -> Vec<Bytes> {
        self.seen.lock().expect("lock").clone()
    }
}

struct Fixture {
    registry: Registry,
    wire: crate::zmtp::metrics::Metrics,
    output: Arc<ZmqDealerOutput>,
    input: InputRequests,
}

fn fixture(config: Config) -> Fixture {
    let registry = Registry::new();
    let wire = crate::zmtp::metrics::Metrics::new(&registry);
    let outputs = super::super::Metrics::register(&registry);
    let dealer = DealerMetrics::register(&registry);
    let requests = RequestMetrics::register(&registry);
    let output = Arc::new(ZmqDealerOutput::new(
        "svc",
        config,
        Options::default(),
        Envelope::TopicPayload,
        &outputs,
        &wire,
        &dealer,
        &requests,
    ));
    Fixture {
        registry,
        wire,
        output,
        input: requests.for_input("clients"),
    }
}

impl Fixture {
    /// A request message on `topic` with `payload`, travelling a route
    /// whose timeout is `timeout` (none: untagged).
    fn request(
        &self,
        topic: &str,
        payload: &str,
        timeout: Option<Duration>,
    ) -> (Message, oneshot::Receiver<Answer>) {
        let (tx, rx) = oneshot::channel();
        let mut request = self.input.start(Box::new(OneshotReplier(tx)));
        if let Some(timeout) = timeout {
            request.set_route(RouteTag {
                name: Arc::from("r"),
                timeout,
            });
        }
        let mut message = Message::new(
            Topic::new(Bytes::copy_from_slice(topic.as_bytes())).expect("topic"),
            Bytes::copy_from_slice(payload.as_bytes()),
            Publisher::new("clients", ""),
        );
        message.request = Some(request);
        (message, rx)
    }

    /// Starts a service in `mode`, connects the output to it and waits
    /// until `up` services are up.
    async fn connected(&self, name: &'static str, mode: Mode, up: usize) -> Service {
        let s = Service::start(name, mode, &self.wire).await;
        self.output.connect(&s.endpoint()).expect("connect");
        self.wait_up(up).await;
        s
    }

    /// Sends one request with `payload` on a route whose timeout is
    /// `timeout`; the message (held, so its request stays open) and its
    /// answer to come.
    async fn send_one(
        &self,
        payload: &str,
        timeout: Duration,
    ) -> (Message, oneshot::Receiver<Answer>) {
        let (m, rx) = self.request("t", payload, Some(timeout));
        within("send", self.output.send(std::slice::from_ref(&m)))
            .await
            .expect("send");
        (m, rx)
    }

    async fn wait_up(&self, n: usize) {
        eventually("services up", || {
            self.output
                .services()
                .iter()
                .filter(|s| s.state == ServiceState::Up)
                .count()
                == n
                && self.output.stats().peers == n as u64
        })
        .await;
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&self.registry, name, labels)
    }
}

const LONG: Duration = Duration::from_secs(20);

/// The reply frames of an answer (panics on an error).
fn reply(answer: Answer) -> (String, String) {
    match answer {
        Answer::Reply(f) => (
            String::from_utf8_lossy(&f[0]).into_owned(),
            String::from_utf8_lossy(&f[1]).into_owned(),
        ),
        Answer::Error(e) => panic!("an error: {e}"),
    }
}

fn error_code(answer: Answer) -> &'static str {
    match answer {
        Answer::Error(e) => e.code(),
        Answer::Reply(f) => panic!("a reply: {f:?}"),
    }
}

/// Sends each message alone and returns the replying services' names.
async fn round_trips(
    f: &Fixture,
    messages: impl IntoIterator<Item = (String, String)>,
) -> Vec<String> {
    let mut names = Vec::new();
    for (topic, payload) in messages {
        let (m, rx) = f.request(&topic, &payload, Some(LONG));
        let d = within("send", f.output.send(std::slice::from_ref(&m)))
            .await
            .expect("send");
        assert!(d.is_complete(), "{d:?}");
        let (name, body) = reply(within("reply", rx).await.expect("answer"));
        assert_eq!(body, payload);
        names.push(name);
    }
    names
}

fn count(names: &[String]) -> HashMap<&str, usize> {
    let mut c = HashMap::new();
    for n in names {
        *c.entry(n.as_str()).or_default() += 1;
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_requests_evenly() {
    let f = fixture(Config::default());
    let mut services = Vec::new();
    for name in ["a", "b", "c"] {
        let s = Service::start(name, Mode::Echo, &f.wire).await;
        f.output.connect(&s.endpoint()).expect("connect");
        services.push(s);
    }
    f.wait_up(3).await;
    let names = round_trips(&f, (0..30).map(|i| ("t".to_owned(), format!("m{i}")))).await;
    let c = count(&names);
    assert_eq!((c["a"], c["b"], c["c"]), (10, 10, 10), "{names:?}");
    assert_eq!(
        f.metric("switchyard_output_messages_total", &[("output", "svc")]),
        30.0
    );
    assert_eq!(
        f.metric(
            "switchyard_request_outcomes_total",
            &[("outcome", "replied")]
        ),
        30.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_is_exact() {
    let f = fixture(Config {
        balance: Balance::Weighted,
        weights: vec![3, 1],
        ..Config::default()
    });
    let heavy = Service::start("heavy", Mode::Echo, &f.wire).await;
    let light = Service::start("light", Mode::Echo, &f.wire).await;
    f.output.connect(&heavy.endpoint()).expect("connect");
    f.output.connect(&light.endpoint()).expect("connect");
    f.wait_up(2).await;
    // One batch: the output takes it in one go.
    let mut batch = Vec::new();
    let mut answers = Vec::new();
    for i in 0..400 {
        let (m, rx) = f.request("t", &format!("m{i}"), Some(LONG));
        batch.push(m);
        answers.push(rx);
    }
    let d = within("send", f.output.send(&batch)).await.expect("send");
    assert!(d.is_complete());
    let mut names = Vec::new();
    for rx in answers {
        names.push(reply(within("reply", rx).await.expect("answer")).0);
    }
    let c = count(&names);
    assert_eq!((c["heavy"], c["light"]), (300, 100));
    let weights: Vec<u32> = f.output.services().iter().map(|s| s.weight).collect();
    assert_eq!(weights, [3, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_keys_on_their_service() {
    let f = fixture(Config {
        balance: Balance::ConsistentHash {
            attribute: "device".into(),
        },
        ..Config::default()
    });
    let mut services = Vec::new();
    for name in ["a", "b", "c"] {
        let s = Service::start(name, Mode::Echo, &f.wire).await;
        f.output.connect(&s.endpoint()).expect("connect");
        services.push(s);
    }
    f.wait_up(3).await;
    let send_keys = |rounds: usize| {
        let f = &f;
        async move {
            let mut owner: HashMap<String, String> = HashMap::new();
            for _ in 0..rounds {
                for k in 0..24 {
                    let key = format!("dev-{k}");
                    let (mut m, rx) = f.request("t", &key, Some(LONG));
                    m.attributes.insert("device".into(), key.clone());
                    let d = within("send", f.output.send(std::slice::from_ref(&m)))
                        .await
                        .expect("send");
                    assert!(d.is_complete());
                    let (name, _) = reply(within("reply", rx).await.expect("answer"));
                    let prev = owner.insert(key.clone(), name.clone());
                    assert!(
                        prev.as_ref().is_none_or(|p| *p == name),
                        "{key} moved from {prev:?} to {name}"
                    );
                }
            }
            owner
        }
    };
    let before = send_keys(3).await;
    let owners: std::collections::HashSet<&String> = before.values().collect();
    assert!(owners.len() >= 2, "keys spread over services: {before:?}");
    // Without a topic attribute the topic is the key: still sticky.
    let topics = round_trips(
        &f,
        (0..6).map(|_| ("same.topic".to_owned(), "x".to_owned())),
    )
    .await;
    assert!(topics.windows(2).all(|w| w[0] == w[1]), "{topics:?}");

    // Service b goes away: only its keys move.
    services[1].stop();
    eventually("b disconnected", || {
        f.output.services()[1].state == ServiceState::Disconnected
    })
    .await;
    let after = send_keys(2).await;
    for (key, owner) in &before {
        if owner == "b" {
            assert_ne!(after[key], "b");
        } else {
            assert_eq!(&after[key], owner, "{key} moved");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_request_gets_its_error_and_the_late_reply_is_counted() {
    let f = fixture(Config::default());
    let s = f.connected("slow", Mode::Hold, 1).await;
    let (m, rx) = f.request("t", "late", Some(Duration::from_millis(200)));
    let deadline = m
        .request
        .as_ref()
        .and_then(Request::deadline)
        .expect("deadline");
    let d = within("send", f.output.send(std::slice::from_ref(&m)))
        .await
        .expect("send");
    assert!(d.is_complete(), "accepted: a service took it");
    eventually("request held", || s.seen().len() == 1).await;
    let answer = within("answer", rx).await.expect("answer");
    assert!(Instant::now() >= deadline, "not before the deadline");
    assert_eq!(error_code(answer), "REQUEST_TIMEOUT");
    assert_eq!(
        f.metric("switchyard_request_timeouts_total", &[("route", "r")]),
        1.0
    );
    // The reply comes after all: discarded, counted late, not unmatched.
    s.release();
    eventually("late reply counted", || {
        f.metric(
            "switchyard_request_late_replies_total",
            &[("output", "svc")],
        ) == 1.0
    })
    .await;
    assert_eq!(
        f.metric(
            "switchyard_zmtp_dropped_total",
            &[("reason", "unmatched_reply")]
        ),
        0.0
    );
    assert_eq!(f.output.pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_fails_at_once() {
    let f = fixture(Config::default());
    let (m, rx) = f.request("t", "x", Some(Duration::ZERO));
    let d = within("send", f.output.send(std::slice::from_ref(&m)))
        .await
        .expect("send");
    assert_eq!(
        d.rejections(),
        &[Rejection {
            messages: 0..1,
            reason: Reject::Failed
        }]
    );
    assert_eq!(
        error_code(within("answer", rx).await.expect("answer")),
        "REQUEST_TIMEOUT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_service_fails_fast_with_no_subscriber() {
    let f = fixture(Config::default());
    // An endpoint nobody listens on: the service stays disconnected.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = unused.local_addr().expect("addr");
    drop(unused);
    f.output.connect(&format!("tcp://{addr}")).expect("connect");
    let (m, rx) = f.request("t", "x", Some(LONG));
    // Less than the route timeout or send_timeout: it does not wait.
    let d = tokio::time::timeout(
        Duration::from_secs(4),
        f.output.send(std::slice::from_ref(&m)),
    )
    .await
    .expect("no wait")
    .expect("send");
    assert_eq!(d.rejections()[0].reason, Reject::NoSubscriber);
    assert_eq!(
        error_code(within("answer", rx).await.expect("answer")),
        "NO_SERVICE"
    );
    assert_eq!(f.output.services()[0].state, ServiceState::Disconnected);
    assert_eq!(
        f.metric("switchyard_output_services", &[("state", "disconnected")]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_service_is_ejected_then_probed_back() {
    let f = fixture(Config {
        eject_after: 2,
        probe_interval: Duration::from_millis(100),
        ..Config::default()
    });
    let s = f.connected("flaky", Mode::Hold, 1).await;
    for i in 0..2 {
        let (m, rx) = f.request("t", &format!("m{i}"), Some(Duration::from_millis(100)));
        within("send", f.output.send(std::slice::from_ref(&m)))
            .await
            .expect("send");
        assert_eq!(
            error_code(within("answer", rx).await.expect("answer")),
            "REQUEST_TIMEOUT"
        );
    }
    assert_eq!(f.output.services()[0].state, ServiceState::Ejected);
    assert_eq!(f.output.services()[0].failures, 2);
    assert_eq!(
        f.metric(
            "switchyard_output_service_ejections_total",
            &[("output", "svc")]
        ),
        1.0
    );
    assert_eq!(
        f.metric("switchyard_output_services", &[("state", "ejected")]),
        1.0
    );
    s.set(Mode::Echo);
    // Until its probe time the only service is out (NO_SERVICE; the
    // table's tests pin that down with a clock). Then one request is its
    // probe, and its reply puts it back.
    within("probe", async {
        loop {
            let (m, rx) = f.request("t", "probe", Some(LONG));
            let d = f.output.send(std::slice::from_ref(&m)).await.expect("send");
            match rx.await.expect("answer") {
                Answer::Reply(_) => {
                    assert!(d.is_complete());
                    break;
                }
                Answer::Error(e) => {
                    assert_eq!(e.code(), "NO_SERVICE");
                    assert_eq!(d.rejections()[0].reason, Reject::NoSubscriber);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    })
    .await;
    let status = &f.output.services()[0];
    assert_eq!((status.state, status.failures), (ServiceState::Up, 0));
    assert_eq!(
        f.metric("switchyard_output_services", &[("state", "up")]),
        1.0
    );
}

/// Time a request waits for the service in the probe tests.
const PROBE_TIMEOUT: Duration = Duration::from_millis(400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_probe_ejects_again_and_others_take_the_load() {
    let f = fixture(Config {
        eject_after: 1,
        probe_interval: Duration::from_millis(50),
        ..Config::default()
    });
    let bad = Service::start("bad", Mode::Hold, &f.wire).await;
    let good = Service::start("good", Mode::Echo, &f.wire).await;
    f.output.connect(&bad.endpoint()).expect("connect");
    f.output.connect(&good.endpoint()).expect("connect");
    f.wait_up(2).await;
    // Round-robin: the first goes to bad and times out, ejecting it.
    let (_m, rx) = f.send_one("first", PROBE_TIMEOUT).await;
    assert_eq!(
        error_code(within("answer", rx).await.expect("answer")),
        "REQUEST_TIMEOUT"
    );
    assert_eq!(f.output.services()[0].state, ServiceState::Ejected);
    // Keep sending: good answers everything but bad's probes (the timeout
    // is generous so that good answers in time even on a loaded machine).
    let mut probes = 0;
    within("two failed probes", async {
        while probes < 2 {
            let (m, rx) = f.request("t", "x", Some(PROBE_TIMEOUT));
            f.output.send(std::slice::from_ref(&m)).await.expect("send");
            match rx.await.expect("answer") {
                Answer::Reply(frames) => assert_eq!(&frames[0][..], b"good"),
                Answer::Error(e) => {
                    assert_eq!(e.code(), "REQUEST_TIMEOUT");
                    probes += 1;
                }
            }
        }
    })
    .await;
    assert_eq!(f.output.services()[0].state, ServiceState::Ejected);
    assert_eq!(
        f.metric(
            "switchyard_output_service_ejections_total",
            &[("output", "svc")]
        ),
        1.0,
        "a failed probe is not a new ejection"
    );
    eventually("bad saw its probes", || bad.seen().len() == 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_disconnects_holding_a_request_fails_it() {
    let f = fixture(Config::default());
    let s = f.connected("dying", Mode::Hold, 1).await;
    let (_m, rx) = f.send_one("x", LONG).await;
    eventually("request held", || s.seen().len() == 1).await;
    s.stop();
    assert_eq!(
        error_code(within("answer", rx).await.expect("answer")),
        "SERVICE_FAILED"
    );
    assert_eq!(f.output.services()[0].failures, 1);
    assert_eq!(f.output.pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_each_get_their_own_reply() {
    let f = Arc::new(fixture(Config::default()));
    let a = Service::start("a", Mode::Echo, &f.wire).await;
    let b = Service::start("b", Mode::Echo, &f.wire).await;
    f.output.connect(&a.endpoint()).expect("connect");
    f.output.connect(&b.endpoint()).expect("connect");
    f.wait_up(2).await;
    let mut tasks = Vec::new();
    for t in 0..4 {
        let f = Arc::clone(&f);
        tasks.push(tokio::spawn(async move {
            let mut batch = Vec::new();
            let mut answers = Vec::new();
            for i in 0..100 {
                let (m, rx) = f.request("t", &format!("{t}-{i}"), Some(LONG));
                batch.push(m);
                answers.push((format!("{t}-{i}"), rx));
            }
            for chunk in batch.chunks(10) {
                let d = f.output.send(chunk).await.expect("send");
                assert!(d.is_complete());
            }
            for (want, rx) in answers {
                let (_, got) = reply(rx.await.expect("answer"));
                assert_eq!(got, want);
            }
        }));
    }
    for t in tasks {
        within("client", t).await.expect("task");
    }
    assert_eq!(a.seen().len() + b.seen().len(), 400);
    assert_eq!(f.output.pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_is_bounded_and_waits_end_at_the_deadline() {
    let f = fixture(Config {
        max_in_flight: 1,
        ..Config::default()
    });
    let s = f.connected("slow", Mode::Hold, 1).await;
    let (first, rx1) = f.request("t", "1", Some(Duration::from_millis(150)));
    let (second, rx2) = f.request("t", "2", Some(LONG));
    // The second waits for the first's slot, freed at its deadline.
    let d = within("send", f.output.send(&[first, second]))
        .await
        .expect("send");
    assert!(d.is_complete());
    assert_eq!(
        error_code(within("answer", rx1).await.expect("answer")),
        "REQUEST_TIMEOUT"
    );
    eventually("second sent", || s.seen().len() == 2).await;
    s.set(Mode::Echo);
    s.release();
    // The first's reply is late; the second's is delivered.
    let (_, body) = reply(within("answer", rx2).await.expect("answer"));
    assert_eq!(body, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_messages_are_sent_and_their_replies_discarded() {
    let f = fixture(Config::default());
    let s = f.connected("a", Mode::Echo, 1).await;
    let (mut m, _rx) = f.request("t", "oneway", None);
    m.request = None;
    let d = within("send", f.output.send(std::slice::from_ref(&m)))
        .await
        .expect("send");
    assert!(d.is_complete());
    eventually("reply taken", || {
        f.output.pending() == 0 && s.seen().len() == 1
    })
    .await;
    assert_eq!(f.metric("switchyard_request_late_replies_total", &[]), 0.0);
    assert_eq!(
        f.metric(
            "switchyard_zmtp_dropped_total",
            &[("reason", "unmatched_reply")]
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_message_is_taken_when_its_reply_arrives_and_refused_without_one() {
    let f = fixture(Config {
        default_timeout: Duration::from_millis(300),
        ..Config::default()
    });
    let s = f.connected("held", Mode::Hold, 1).await;
    let (mut m, _rx) = f.request("t", "one", None);
    m.request = None;
    let batch = std::slice::from_ref(&m);
    let mut send = f.output.send(batch);
    // Held by the service: the send waits for its reply.
    assert!(
        futures_poll_once(&mut send).await.is_none(),
        "dispatched, waiting"
    );
    eventually("request held", || s.seen().len() == 1).await;
    assert!(
        futures_poll_once(&mut send).await.is_none(),
        "not taken before the reply"
    );
    s.release();
    let d = within("send", send).await.expect("send");
    assert!(d.is_complete(), "taken once the reply came");
    // A reply that never comes: refused at the deadline, so a route can
    // retry it or dead-letter it.
    s.set(Mode::Hold);
    let (mut m, _rx) = f.request("t", "two", None);
    m.request = None;
    let d = within("send", f.output.send(std::slice::from_ref(&m)))
        .await
        .expect("send");
    assert_eq!(
        d.rejections().first().map(|r| r.reason),
        Some(Reject::Failed),
        "{d:?}"
    );
}

/// Polls `fut` once: `Some` if it was ready.
async fn futures_poll_once<F: std::future::Future + Unpin>(fut: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut *fut).poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_fails_what_is_outstanding_with_shutting_down() {
    let f = fixture(Config::default());
    let _s = f.connected("slow", Mode::Hold, 1).await;
    let (_m, rx) = f.send_one("x", LONG).await;
    within("close", f.output.flush_and_close(Duration::from_millis(50))).await;
    assert_eq!(
        error_code(within("answer", rx).await.expect("answer")),
        "SHUTTING_DOWN"
    );
    let (m, _rx) = f.request("t", "y", Some(LONG));
    assert!(matches!(
        f.output.send(std::slice::from_ref(&m)).await,
        Err(Error::Closed { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeromq_rep_services_connect_to_a_bound_output() {
    use zeromq::{Socket, SocketRecv, SocketSend};
    let f = fixture(Config::default());
    let addr = f.output.bind("tcp://127.0.0.1:0").await.expect("bind");
    let mut rep = zeromq::RepSocket::new();
    within("connect", rep.connect(&format!("tcp://{addr}")))
        .await
        .expect("connect");
    f.wait_up(1).await;
    let services = f.output.services();
    assert_eq!(services[0].endpoint, None);
    assert!(
        services[0]
            .peer
            .as_deref()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{services:?}"
    );
    let (_m, rx) = f.send_one("ping", LONG).await;
    let req = within("request", rep.recv()).await.expect("recv");
    assert_eq!(req.get(1).map(|b| &b[..]), Some(&b"ping"[..]));
    let mut out = zeromq::ZmqMessage::from("pong");
    out.push_front(Bytes::from_static(b"svc"));
    within("reply", rep.send(out)).await.expect("send");
    assert_eq!(
        reply(within("answer", rx).await.expect("answer")),
        ("svc".into(), "pong".into())
    );
    drop(rep);
    // A peer that leaves is forgotten. The zeromq crate closes its
    // connections when a deferred reclamation gets to them, which may take
    // arbitrarily long on a busy machine, so the leaving peer here is one
    // whose TCP connection the test closes itself.
    let (stream, _) = raw_client(addr, crate::zmtp::socket_type::SocketType::Rep).await;
    let peer = stream.local_addr().expect("local address").to_string();
    let listed = |peer: &str| {
        f.output
            .services()
            .iter()
            .any(|s| s.peer.as_deref() == Some(peer))
    };
    eventually("raw service listed", || listed(&peer)).await;
    drop(stream);
    eventually("peer gone", || !listed(&peer)).await;
}
