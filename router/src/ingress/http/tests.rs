//! Tests of the HTTP input: real connections on 127.0.0.1 port 0 against a
//! fake [`Sink`], then the helpers (reason indices, content types, percent
//! decoding) on their own.

use crate::metrics::Registry;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore};

use super::*;
use crate::http::testing::{DEADLINE, connect, metric, read_reply, request, send};
use crate::ingress::Offered;

/// A sink that admits up to `room` messages, then refuses with
/// `refusal` (after holding a bounded offer for [`HOLD`], as a full `block`
/// route does for its `block_timeout`). With a `gate`, each offer first
/// waits for a permit.
struct FakeSink {
    received: Mutex<Vec<Message>>,
    room: AtomicUsize,
    refusal: Refusal,
    started: Notify,
    gate: Option<Semaphore>,
}

impl FakeSink {
    fn new(room: usize, refusal: Refusal) -> Arc<Self> {
        Arc::new(Self {
            received: Mutex::new(Vec::new()),
            room: AtomicUsize::new(room),
            refusal,
            started: Notify::new(),
            gate: None,
        })
    }

    fn open() -> Arc<Self> {
        Self::new(usize::MAX, BACKPRESSURE)
    }

    fn received(&self) -> Vec<Message> {
        self.received.lock().expect("sink lock").clone()
    }
}

/// How long [`FakeSink`] holds a bounded offer before refusing it for
/// backpressure.
const HOLD: Duration = Duration::from_millis(50);

/// The refusal of a full route whose `block_timeout` is 1s.
const BACKPRESSURE: Refusal = Refusal::Backpressure {
    retry_after: Duration::from_secs(1),
};

impl Sink for FakeSink {
    fn offer(
        &self,
        batch: Vec<Message>,
        wait: Wait,
    ) -> Pin<Box<dyn Future<Output = Offered> + Send + '_>> {
        Box::pin(async move {
            self.started.notify_one();
            if let Some(gate) = &self.gate {
                gate.acquire().await.expect("gate open").forget();
            }
            let mut admitted = 0;
            for message in batch {
                let took = self
                    .room
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(1));
                if took.is_err() {
                    if self.refusal == BACKPRESSURE && wait == Wait::Bounded {
                        tokio::time::sleep(HOLD).await;
                    }
                    return Offered {
                        admitted,
                        refusal: Some(self.refusal),
                    };
                }
                self.received.lock().expect("sink lock").push(message);
                admitted += 1;
            }
            Offered {
                admitted,
                refusal: None,
            }
        })
    }
}

struct Running {
    addr: SocketAddr,
    registry: Registry,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Stopped>,
}

impl Running {
    fn metric(&self, series: &str) -> f64 {
        metric(&self.registry.encode(), series).unwrap_or(0.0)
    }

    async fn stop(self) -> Stopped {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("input stops")
            .expect("input task")
    }
}

async fn start(sink: Arc<FakeSink>, tweak: impl FnOnce(&mut Config)) -> Running {
    let registry = Registry::new();
    let metrics = Metrics::new(
        &crate::ingress::Metrics::register(&registry),
        &http::Metrics::register(&registry),
        &crate::message::request::RequestMetrics::register(&registry),
    );
    let mut config = Config::new("api", "127.0.0.1:0".parse().expect("address"));
    tweak(&mut config);
    let input = HttpInput::bind(config, sink, &metrics).await.expect("bind");
    let addr = input.local_addr();
    assert_ne!(addr.port(), 0);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(input.run(shutdown.clone()));
    Running {
        addr,
        registry,
        shutdown,
        task,
    }
}

fn ids(reply: &serde_json::Value) -> Vec<String> {
    reply["ids"]
        .as_array()
        .expect("ids array")
        .iter()
        .map(|id| id.as_str().expect("id string").to_owned())
        .collect()
}

#[tokio::test]
async fn raw_publish_takes_body_attributes_and_priority() {
    let sink = FakeSink::open();
    let running = start(sink.clone(), |_| {}).await;
    let reply = send(
        running.addr,
        &request(
            "POST",
            "/v1/publish/sensors.line%31.temp",
            &[
                ("X-Attr-Site", "42"),
                ("x-attr-Unit", "°C"),
                ("X-Priority", "7"),
            ],
            b"21.5",
        ),
    )
    .await;
    assert_eq!(reply.status, 202, "{:?}", reply);
    let got = sink.received();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(ids(&reply.json()), vec![m.id.to_string()]);
    assert_eq!(m.topic.as_str(), "sensors.line1.temp");
    assert_eq!(&m.payload[..], b"21.5");
    assert_eq!(m.priority, 7);
    assert_eq!(m.attributes.len(), 2);
    assert_eq!(m.attributes["site"], "42");
    assert_eq!(m.attributes["unit"], "°C");
    assert_eq!(&*m.publisher.input, "api");
    assert!(m.publisher.peer.starts_with("127.0.0.1:"));
    assert_eq!(
        running.metric(r#"switchyard_input_messages_total{input="api"}"#),
        1.0
    );
    assert_eq!(
        running.metric(r#"switchyard_http_requests_total{listener="api",status="202"}"#),
        1.0
    );
    assert_eq!(running.stop().await.connections_cut, 0);
}

#[tokio::test]
async fn json_publish_single_and_batch() {
    let sink = FakeSink::open();
    let running = start(sink.clone(), |_| {}).await;
    let json = [("Content-Type", "application/json; charset=utf-8")];
    let reply = send(
        running.addr,
        &request(
            "POST",
            "/v1/publish",
            &json,
            br#"{"topic":"a.b","payload":{"v":1},"attributes":{"k":"v"},"priority":2}"#,
        ),
    )
    .await;
    assert_eq!(reply.status, 202, "{:?}", reply);
    let single = ids(&reply.json());

    let reply = send(
        running.addr,
        &request(
            "POST",
            "/v1/publish",
            &[],
            br#"{"messages":[{"topic":"x","payload":"one"},{"topic":"y","payload_base64":"dHdv"},{"topic":"z"}]}"#,
        ),
    )
    .await;
    assert_eq!(reply.status, 202, "{:?}", reply);
    let batch = ids(&reply.json());

    let got = sink.received();
    let got_ids: Vec<String> = got.iter().map(|m| m.id.to_string()).collect();
    assert_eq!(got_ids, [single, batch].concat());
    assert_eq!(&got[0].payload[..], br#"{"v":1}"#);
    assert_eq!(got[0].priority, 2);
    assert_eq!(got[0].attributes["k"], "v");
    let topics: Vec<&str> = got.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(topics, ["a.b", "x", "y", "z"]);
    assert_eq!(&got[1].payload[..], b"one");
    assert_eq!(&got[2].payload[..], b"two");
    assert!(got[3].payload.is_empty());
    assert_eq!(
        running.metric(r#"switchyard_input_messages_total{input="api"}"#),
        4.0
    );
    running.stop().await;
}

#[tokio::test]
async fn bad_requests_get_json_errors_and_are_counted() {
    let sink = FakeSink::open();
    let running = start(sink.clone(), |c| c.max_batch = 2).await;
    let json = [("Content-Type", "application/json")];
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            request("POST", "/v1/publish", &json, b"{\"topic\":"),
            400,
            "INVALID_JSON",
        ),
        (
            request("POST", "/v1/publish", &json, br#"{"topic":"a..b"}"#),
            400,
            "INVALID_TOPIC",
        ),
        (
            request("POST", "/v1/publish/a.*", &[], b"x"),
            400,
            "INVALID_TOPIC",
        ),
        (
            request("POST", "/v1/publish/a%zz", &[], b"x"),
            400,
            "BAD_REQUEST",
        ),
        (
            request("POST", "/v1/publish/a", &[("X-Priority", "10")], b"x"),
            400,
            "INVALID_PRIORITY",
        ),
        (
            request("POST", "/v1/publish/a", &[("X-Attr-", "x")], b"x"),
            400,
            "INVALID_ATTRIBUTE",
        ),
        (
            request(
                "POST",
                "/v1/publish",
                &json,
                br#"{"topic":"a","attributes":{"n":1}}"#,
            ),
            400,
            "INVALID_ATTRIBUTE",
        ),
        (
            request(
                "POST",
                "/v1/publish",
                &json,
                br#"{"messages":[{"topic":"a"},{"topic":"a"},{"topic":"a"}]}"#,
            ),
            413,
            "BATCH_TOO_LARGE",
        ),
        (
            request(
                "POST",
                "/v1/publish",
                &[("Content-Type", "text/plain")],
                b"{}",
            ),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            request("GET", "/v1/publish", &[], b""),
            405,
            "METHOD_NOT_ALLOWED",
        ),
        (request("POST", "/v2/elsewhere", &[], b""), 404, "NOT_FOUND"),
    ];
    for (raw, status, code) in cases {
        let reply = send(running.addr, &raw).await;
        let what = String::from_utf8_lossy(&raw[..raw.len().min(60)]).into_owned();
        assert_eq!(reply.status, status, "{what}: {reply:?}");
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{what}"
        );
        let body = reply.json();
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        if status == 405 {
            assert_eq!(reply.header("allow"), Some("POST"));
        }
    }
    assert!(sink.received().is_empty());
    let rejected = |reason: &str| {
        running.metric(&format!(
            r#"switchyard_input_rejected_total{{input="api",reason="{reason}"}}"#
        ))
    };
    assert_eq!(rejected("bad_json"), 1.0);
    assert_eq!(rejected("bad_topic"), 2.0);
    assert_eq!(rejected("bad_request"), 1.0);
    assert_eq!(rejected("bad_priority"), 1.0);
    assert_eq!(rejected("bad_attribute"), 2.0);
    assert_eq!(rejected("too_large"), 1.0);
    assert_eq!(rejected("unsupported_media_type"), 1.0);
    assert_eq!(
        running.metric(r#"switchyard_http_requests_total{listener="api",status="400"}"#),
        7.0
    );
    assert_eq!(
        running.metric(r#"switchyard_input_messages_total{input="api"}"#),
        0.0
    );
    running.stop().await;
}

#[tokio::test]
async fn huge_content_length_is_refused_without_reading_the_body() {
    let sink = FakeSink::open();
    let running = start(sink.clone(), |c| c.max_body = 1024).await;
    let stream = connect(running.addr).await;
    let (mut reader, mut writer) = stream.into_split();
    // Claim 10 GiB, then keep sending (up to 256 MiB) while reading the
    // answer: the server must answer without waiting for the body.
    const PUMP: usize = 256 << 20;
    let pump = tokio::spawn(async move {
        let head =
            "POST /v1/publish/big HTTP/1.1\r\nHost: test\r\nContent-Length: 10737418240\r\n\r\n";
        writer.write_all(head.as_bytes()).await.expect("head");
        let chunk = vec![0u8; 64 * 1024];
        let mut sent = 0;
        while sent < PUMP {
            match writer.write_all(&chunk).await {
                Ok(()) => sent += chunk.len(),
                Err(_) => break,
            }
        }
        sent
    });
    let reply = read_reply(&mut reader).await;
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_eq!(reply.json()["error"]["code"], "PAYLOAD_TOO_LARGE");
    assert_eq!(reply.header("connection"), Some("close"));
    drop(reader);
    let sent = tokio::time::timeout(DEADLINE, pump)
        .await
        .expect("the server closed the connection, ending the pump")
        .expect("pump task");
    assert!(sent < PUMP, "the server kept reading the body");
    assert!(sink.received().is_empty());
    assert_eq!(
        running.metric(r#"switchyard_input_rejected_total{input="api",reason="too_large"}"#),
        1.0
    );
    running.stop().await;
}

#[tokio::test]
async fn expect_continue_with_a_huge_body_gets_413_not_100() {
    let sink = FakeSink::open();
    let running = start(sink.clone(), |c| c.max_body = 1024).await;
    let reply = send(
        running.addr,
        b"POST /v1/publish/big HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: 10737418240\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 413, "{reply:?}");
    running.stop().await;
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_refused_while_streaming() {
    let sink = FakeSink::open();
    let running = start(sink.clone(), |c| c.max_body = 1024).await;
    // No Content-Length: the limit can only be enforced as chunks arrive.
    let mut raw =
        b"POST /v1/publish/big HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for _ in 0..3 {
        raw.extend_from_slice(b"200\r\n");
        raw.extend_from_slice(&[b'x'; 0x200]);
        raw.extend_from_slice(b"\r\n");
    }
    let reply = send(running.addr, &raw).await;
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_eq!(reply.json()["error"]["code"], "PAYLOAD_TOO_LARGE");
    assert!(sink.received().is_empty());

    // A chunked body within the limit is accepted whole.
    let mut raw = b"POST /v1/publish/ok HTTP/1.1\r\nHost: test\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    for part in [&b"hello "[..], b"chunked ", b"world"] {
        raw.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        raw.extend_from_slice(part);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let reply = send(running.addr, &raw).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    assert_eq!(&sink.received()[0].payload[..], b"hello chunked world");
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn slow_headers_are_cut_at_the_header_timeout() {
    let sink = FakeSink::open();
    let running = start(sink.clone(), |c| c.header_timeout = Duration::from_secs(2)).await;
    let stream = connect(running.addr).await;
    let (mut reader, mut writer) = stream.into_split();
    // A slowloris client: one header byte every 100 ms, never done.
    let mut head = b"POST /v1/publish/a HTTP/1.1\r\nHost: test\r\n".to_vec();
    head.extend_from_slice(b"X-Attr-Padding: ");
    head.extend_from_slice(&[b'p'; 400]);
    let total = head.len();
    let trickle = tokio::spawn(async move {
        let mut sent = 0;
        for byte in head {
            if writer.write_all(&[byte]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sent
    });
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(DEADLINE, reader.read(&mut buf))
        .await
        .expect("the server closes the connection");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected the connection closed without a response, got {read:?}"
    );
    drop(reader);
    let sent = tokio::time::timeout(DEADLINE, trickle)
        .await
        .expect("trickle ends")
        .expect("trickle task");
    assert!(sent < total, "the whole head was sent ({sent} bytes)");
    assert_eq!(
        running.metric(
            r#"switchyard_http_connection_errors_total{listener="api",reason="header_timeout"}"#
        ),
        1.0
    );
    assert!(sink.received().is_empty());
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn slow_body_gets_408() {
    let sink = FakeSink::open();
    let running = start(sink.clone(), |c| c.body_timeout = Duration::from_secs(3)).await;
    let mut stream = connect(running.addr).await;
    stream
        .write_all(b"POST /v1/publish/a HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\nhalf")
        .await
        .expect("write");
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.status, 408, "{reply:?}");
    assert_eq!(reply.json()["error"]["code"], "REQUEST_TIMEOUT");
    assert!(sink.received().is_empty());
    assert_eq!(
        running.metric(r#"switchyard_input_rejected_total{input="api",reason="timeout"}"#),
        1.0
    );
    running.stop().await;
}

#[tokio::test]
async fn backpressure_answers_503_with_retry_after_and_the_admitted_ids() {
    // Room for one message; the sink then holds out for a while.
    let sink = FakeSink::new(1, BACKPRESSURE);
    let running = start(sink.clone(), |_| {}).await;
    let reply = send(
        running.addr,
        &request(
            "POST",
            "/v1/publish",
            &[],
            br#"{"messages":[{"topic":"a"},{"topic":"b"},{"topic":"c"}]}"#,
        ),
    )
    .await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.header("retry-after"), Some("1"));
    let body = reply.json();
    assert_eq!(body["error"]["code"], "BACKPRESSURE");
    let got = sink.received();
    assert_eq!(got.len(), 1);
    assert_eq!(ids(&body["error"]), vec![got[0].id.to_string()]);
    assert_eq!(
        running.metric(r#"switchyard_input_messages_total{input="api"}"#),
        1.0
    );
    assert_eq!(
        running.metric(r#"switchyard_input_rejected_total{input="api",reason="backpressure"}"#),
        2.0
    );

    // A raw publish that gets nothing in: 503 with an empty id list.
    let reply = send(running.addr, &request("POST", "/v1/publish/d", &[], b"x")).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.json()["error"]["ids"], serde_json::json!([]));
    assert_eq!(
        running.metric(r#"switchyard_http_requests_total{listener="api",status="503"}"#),
        2.0
    );
    running.stop().await;
}

#[tokio::test]
async fn a_sink_shutting_down_answers_503_shutting_down() {
    let sink = FakeSink::new(0, Refusal::ShuttingDown);
    let running = start(sink.clone(), |_| {}).await;
    let reply = send(running.addr, &request("POST", "/v1/publish/a", &[], b"x")).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.header("retry-after"), None);
    assert_eq!(reply.json()["error"]["code"], "SHUTTING_DOWN");
    assert_eq!(
        running.metric(r#"switchyard_input_rejected_total{input="api",reason="shutting_down"}"#),
        1.0
    );
    running.stop().await;
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish_then_stops_accepting() {
    let mut sink = FakeSink::new(usize::MAX, BACKPRESSURE);
    Arc::get_mut(&mut sink).expect("sole owner").gate = Some(Semaphore::new(0));
    let running = start(sink.clone(), |_| {}).await;
    let addr = running.addr;
    let in_flight =
        tokio::spawn(
            async move { send(addr, &request("POST", "/v1/publish/a", &[], b"last")).await },
        );
    // Once the offer is under way, shut down, then let the offer finish.
    tokio::time::timeout(DEADLINE, sink.started.notified())
        .await
        .expect("offer starts");
    running.shutdown.cancel();
    sink.gate.as_ref().expect("gate").add_permits(1);
    let reply = tokio::time::timeout(DEADLINE, in_flight)
        .await
        .expect("reply in time")
        .expect("client task");
    assert_eq!(reply.status, 202, "{reply:?}");
    assert_eq!(sink.received().len(), 1);
    let stopped = tokio::time::timeout(DEADLINE, running.task)
        .await
        .expect("input stops")
        .expect("input task");
    assert_eq!(stopped.connections_cut, 0);
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// What the sink holds, once it holds something.
async fn until_received(sink: &FakeSink) -> Vec<Message> {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let got = sink.received();
            if !got.is_empty() {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the request reached the sink")
}

#[tokio::test]
async fn the_request_bridge_answers_with_the_reply() {
    use crate::message::request::Source;
    let sink = FakeSink::open();
    let running = start(sink.clone(), |_| {}).await;
    let addr = running.addr;
    let asked = tokio::spawn(async move {
        send(
            addr,
            &request(
                "POST",
                "/v1/request/svc.status",
                &[("X-Attr-Line", "1")],
                b"?",
            ),
        )
        .await
    });
    let got = until_received(&sink).await;
    let m = &got[0];
    assert_eq!(m.topic.as_str(), "svc.status");
    assert_eq!(m.attributes["line"], "1");
    let request = m.request.as_ref().expect("a request");
    let reply = smallvec::smallvec![Bytes::from_static(b"svc"), Bytes::from_static(b"ok")];
    assert!(request.answer(reply, Source::Service));
    let reply = tokio::time::timeout(DEADLINE, asked)
        .await
        .expect("answered")
        .expect("task");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, b"ok");
    assert_eq!(reply.header("x-switchyard-reply-frames"), Some("2"));
    assert_eq!(
        reply.header("x-switchyard-id"),
        Some(m.id.to_string().as_str())
    );
    running.stop().await;
}

#[tokio::test]
async fn the_request_bridge_answers_errors_with_their_status() {
    let sink = FakeSink::new(0, Refusal::ShuttingDown);
    let running = start(sink, |_| {}).await;
    let reply = send(
        running.addr,
        &request("POST", "/v1/request/svc.status", &[], b"?"),
    )
    .await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.json()["error"]["code"], "SHUTTING_DOWN");
    assert_eq!(
        running.metric(r#"switchyard_request_outcomes_total{input="api",outcome="shutting_down"}"#),
        1.0
    );
    // An answer nobody gives (the sink lets go of the request) is an error,
    // never a hang.
    let sink = FakeSink::open();
    let running = start(sink.clone(), |_| {}).await;
    let addr = running.addr;
    let asked = tokio::spawn(async move {
        send(addr, &request("POST", "/v1/request/svc.status", &[], b"?")).await
    });
    until_received(&sink).await;
    sink.received.lock().expect("sink lock").clear();
    let reply = tokio::time::timeout(DEADLINE, asked)
        .await
        .expect("answered")
        .expect("task");
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.json()["error"]["code"], "DROPPED");
    running.stop().await;
}

#[test]
fn reasons_index_their_counters() {
    for (i, reason) in Reason::ALL.iter().enumerate() {
        assert_eq!(*reason as usize, i, "{}", reason.label());
    }
}

#[test]
fn content_types() {
    for (value, json) in [
        ("application/json", true),
        ("Application/JSON; charset=utf-8", true),
        ("application/cloudevents+json", true),
        ("+json", false),
        ("text/plain", false),
        ("application/jsonx", false),
    ] {
        assert_eq!(is_json(&HeaderValue::from_static(value)), json, "{value}");
    }
}

#[test]
fn percent_decoding() {
    assert_eq!(percent_decode("a.b").expect("plain"), "a.b");
    assert_eq!(percent_decode("a%2Eb%20").expect("escaped"), "a.b ");
    assert!(percent_decode("a%2").is_err());
    assert!(percent_decode("a%g0").is_err());
}

/// An input secured by a static token for `dev-1`, allowed
/// `sensors.{principal}.>`.
fn secured_security(registry: &Registry) -> crate::auth::Live {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-http-auth-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let hash: String = ring::digest::digest(&ring::digest::SHA256, b"tok-1")
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let tokens = dir.join("tokens.toml");
    std::fs::write(&tokens, format!("dev-1 = \"{hash}\"\n")).expect("write");
    let text = format!(
        "[router]\nadmin_auth = [\"fleet\"]\n\n[[auth]]\nname = \"fleet\"\nkind = \"token\"\ntokens_file = {:?}\n\n[[input]]\nname = \"api\"\nkind = \"http\"\nlisten = \"127.0.0.1:0\"\nauth = [\"fleet\"]\n\n[[output]]\nname = \"o\"\nkind = \"blackhole\"\n\n[[route]]\nname = \"r\"\nmatch = \">\"\nto = [\"o\"]\n\n[[acl]]\nprincipals = [\"*\"]\npublish = [\"sensors.{{principal}}.>\"]\n",
        tokens.display().to_string()
    );
    let config = crate::config::Config::parse(&text, "t.toml").expect("valid");
    let security = crate::auth::Security::build(&config, &crate::auth::Metrics::register(registry))
        .expect("builds");
    Arc::new(arc_swap::ArcSwap::from_pointee(security))
}

#[tokio::test]
async fn a_secured_input_carries_the_principal_and_refuses_before_reading() {
    let sink = FakeSink::open();
    let auth_registry = Registry::new();
    let security = secured_security(&auth_registry);
    let running = start(sink.clone(), |c| c.security = Some(security)).await;
    let ok = send(
        running.addr,
        &request(
            "POST",
            "/v1/publish/sensors.dev-1.t",
            &[("Authorization", "Bearer tok-1")],
            b"x",
        ),
    )
    .await;
    assert_eq!(ok.status, 202, "{ok:?}");
    assert_eq!(
        sink.received()[0].publisher.principal.as_deref(),
        Some("dev-1"),
        "the message names who published it"
    );
    let forbidden = send(
        running.addr,
        &request(
            "POST",
            "/v1/publish/sensors.dev-2.t",
            &[("Authorization", "Bearer tok-1")],
            b"x",
        ),
    )
    .await;
    assert_eq!(forbidden.status, 403, "{forbidden:?}");
    assert_eq!(forbidden.json()["error"]["code"], "TOPIC_FORBIDDEN");
    let missing = send(
        running.addr,
        &request("POST", "/v1/publish/sensors.dev-1.t", &[], b"x"),
    )
    .await;
    assert_eq!(missing.status, 401, "{missing:?}");
    assert_eq!(sink.received().len(), 1);
    assert_eq!(
        running.metric(r#"switchyard_input_rejected_total{input="api",reason="forbidden"}"#),
        1.0
    );
    assert_eq!(
        running.metric(r#"switchyard_input_rejected_total{input="api",reason="unauthorized"}"#),
        1.0
    );
    assert_eq!(
        metric(
            &auth_registry.encode(),
            r#"switchyard_acl_denied_total{action="publish",listener="api"}"#
        ),
        Some(1.0)
    );
    running.stop().await;
}
