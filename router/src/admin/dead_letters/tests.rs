use std::sync::Mutex;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::admin::{AdminServer, Config, InjectFuture, PluginStats, ReloadFuture};
use crate::egress::OutputStats;
use crate::http::testing::{DEADLINE, Reply, metric, request, send};
use crate::ingress::{Offered, Refusal};
use crate::message::{Publisher, Topic};
use crate::metrics::Registry;
use crate::pipeline::PipelineSnapshot;
use crate::store::dead::{Metrics, Options};
use crate::store::{Fsync, MemoryStorage};

struct Fake {
    store: Option<Arc<DeadLetters>>,
    injected: Mutex<Vec<(String, Message)>>,
}

impl State for Fake {
    fn ready(&self) -> bool {
        true
    }
    fn config_generation(&self) -> u64 {
        1
    }
    fn pipeline(&self) -> PipelineSnapshot {
        PipelineSnapshot {
            generation: 1,
            routes: Vec::new(),
            unrouted: 0,
            shutting_down: false,
        }
    }
    fn outputs(&self) -> Vec<OutputStats> {
        Vec::new()
    }
    fn plugins(&self) -> Vec<PluginStats> {
        Vec::new()
    }
    fn reload_status(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn reload(&self, _: bool, _: bool, _: Option<String>) -> ReloadFuture<'_> {
        Box::pin(async { Ok(serde_json::Value::Null) })
    }
    fn dead_letters(&self) -> Option<Arc<DeadLetters>> {
        self.store.clone()
    }
    /// Route "gone" does not exist; route "full" takes one message and
    /// then stays full.
    fn inject<'a>(&'a self, route: &'a str, messages: Vec<Message>) -> InjectFuture<'a> {
        Box::pin(async move {
            if route == "gone" {
                return Err(crate::pipeline::Error::NoSuchRoute {
                    route: route.to_owned(),
                });
            }
            let n = messages.len();
            if route == "again" {
                // A route that dead-letters everything once more.
                let store = self.store.as_ref().expect("a store");
                let again = messages
                    .iter()
                    .map(|m| DeadLetter {
                        message: m.clone(),
                        ..entry("again", DeadReason::Verdict, 0)
                    })
                    .collect();
                store.put(again).await.expect("put");
            }
            let take = if route == "full" { n.min(1) } else { n };
            let mut injected = self.injected.lock().expect("test lock");
            injected.extend(
                messages
                    .into_iter()
                    .take(take)
                    .map(|m| (route.to_owned(), m)),
            );
            Ok(Offered {
                admitted: take,
                refusal: (take < n).then_some(Refusal::Backpressure {
                    retry_after: Duration::from_secs(1),
                }),
            })
        })
    }
}

struct Running {
    addr: std::net::SocketAddr,
    state: Arc<Fake>,
    registry: Registry,
    shutdown: CancellationToken,
}

impl Running {
    async fn call(&self, method: &str, path: &str, body: &str) -> Reply {
        let headers: &[(&str, &str)] = if body.is_empty() {
            &[]
        } else {
            &[("content-type", "application/json")]
        };
        tokio::time::timeout(
            DEADLINE,
            send(self.addr, &request(method, path, headers, body.as_bytes())),
        )
        .await
        .expect("answers")
    }
}

async fn start(with_store: bool) -> Running {
    let registry = Registry::new();
    let store = with_store.then(|| {
        let (store, _) = DeadLetters::open(
            Arc::new(MemoryStorage::new()),
            Options {
                fsync: Fsync::Always,
                ..Options::default()
            },
            Metrics::register(&registry),
        )
        .expect("opens");
        Arc::new(store)
    });
    let state = Arc::new(Fake {
        store,
        injected: Mutex::new(Vec::new()),
    });
    let http_metrics = http::Metrics::register(&registry);
    let admin = AdminServer::bind(
        Config::new("127.0.0.1:0".parse().expect("address")),
        Arc::clone(&state) as Arc<dyn State>,
        registry.clone(),
        &http_metrics,
    )
    .await
    .expect("bind");
    let addr = admin.local_addr();
    let shutdown = CancellationToken::new();
    tokio::spawn(admin.run(shutdown.clone()));
    Running {
        addr,
        state,
        registry,
        shutdown,
    }
}

fn entry(route: &str, reason: DeadReason, n: u8) -> DeadLetter {
    let mut message = Message::new(
        Topic::try_from("sensors.a").expect("topic"),
        Bytes::from(vec![n; 4]),
        Publisher::new("api", "127.0.0.1:9"),
    );
    message.attributes.insert("site".into(), "42".into());
    let now = SystemTime::now();
    DeadLetter {
        message,
        route: route.into(),
        output: (reason == DeadReason::TooLarge).then(|| "out".to_owned()),
        reason,
        attempts: 1,
        first_error: "refused".into(),
        last_error: "refused".into(),
        first_failed: now,
        last_failed: now,
    }
}

#[tokio::test]
async fn without_a_store_every_endpoint_says_it_needs_a_data_dir() {
    let running = start(false).await;
    for (method, path, body) in [
        ("GET", "/v1/dead-letters", ""),
        ("GET", "/v1/dead-letters/1", ""),
        ("POST", "/v1/dead-letters/replay", "{\"ids\":[\"1\"]}"),
        ("DELETE", "/v1/dead-letters", "{\"filter\":{}}"),
    ] {
        let reply = running.call(method, path, body).await;
        assert_eq!(reply.status, 404, "{method} {path}");
        let json = reply.json();
        assert_eq!(json["error"]["code"], "DEAD_LETTERS_DISABLED");
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("data_dir"))
        );
    }
    running.shutdown.cancel();
}

#[tokio::test]
async fn list_show_replay_purge() {
    let running = start(true).await;
    let store = running.state.store.clone().expect("store");
    let mut batch = Vec::new();
    for n in 0..6 {
        let reason = if n % 2 == 0 {
            DeadReason::TooLarge
        } else {
            DeadReason::Verdict
        };
        batch.push(entry(if n < 4 { "a" } else { "b" }, reason, n));
    }
    store.put(batch).await.expect("put");

    // List and paginate.
    let all = running.call("GET", "/v1/dead-letters", "").await;
    assert_eq!(all.status, 200);
    let all = all.json();
    let entries = all["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 6);
    assert_eq!(all["next_cursor"], serde_json::Value::Null);
    let first = &entries[0];
    assert_eq!(first["route"], "a");
    assert_eq!(first["reason"], "too_large");
    assert_eq!(first["output"], "out");
    assert_eq!(first["topic"], "sensors.a");
    assert!(
        first["last_failed"]
            .as_u64()
            .is_some_and(|t| t > 1_600_000_000_000)
    );
    let ids: Vec<String> = entries
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    let mut paged = Vec::new();
    let mut path = "/v1/dead-letters?limit=4".to_owned();
    loop {
        let page = running.call("GET", &path, "").await.json();
        paged.extend(
            page["entries"]
                .as_array()
                .expect("entries")
                .iter()
                .map(|e| e["id"].as_str().expect("id").to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/dead-letters?limit=4&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(paged, ids);
    let filtered = running
        .call("GET", "/v1/dead-letters?route=a&reason=verdict", "")
        .await
        .json();
    assert_eq!(filtered["entries"].as_array().expect("entries").len(), 2);

    // Bad queries.
    for query in [
        "limit=0",
        "limit=1001",
        "reason=bogus",
        "since=yesterday",
        "cursor=x",
        "colour=red",
    ] {
        let reply = running
            .call("GET", &format!("/v1/dead-letters?{query}"), "")
            .await;
        assert_eq!(reply.status, 400, "{query}");
        assert_eq!(reply.json()["error"]["code"], "BAD_REQUEST", "{query}");
    }

    // Show.
    let shown = running
        .call("GET", &format!("/v1/dead-letters/{}", ids[1]), "")
        .await;
    assert_eq!(shown.status, 200);
    let shown = shown.json();
    assert_eq!(
        shown["payload"],
        base64::engine::general_purpose::STANDARD.encode([1u8; 4])
    );
    assert_eq!(shown["attributes"]["site"], "42");
    assert_eq!(shown["publisher"]["input"], "api");
    assert_eq!(shown["priority"], 4);
    let missing = running.call("GET", "/v1/dead-letters/999999", "").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "DEAD_LETTER_NOT_FOUND");
    assert_eq!(
        running.call("GET", "/v1/dead-letters/abc", "").await.status,
        400
    );

    // Replay two by id: they go back to their route, marked, and leave
    // the store.
    let body = format!("{{\"ids\":[\"{}\",\"{}\",\"999999\"]}}", ids[0], ids[1]);
    let replayed = running.call("POST", "/v1/dead-letters/replay", &body).await;
    assert_eq!(replayed.status, 200);
    assert_eq!(
        replayed.json(),
        serde_json::json!({"replayed": 2, "refused": 0, "missing": 1})
    );
    {
        let injected = running.state.injected.lock().expect("test lock");
        assert_eq!(injected.len(), 2);
        assert_eq!(injected[0].0, "a");
        assert_eq!(injected[0].1.attributes.get(REPLAYED_FROM), Some(&ids[0]));
        assert_eq!(&injected[1].1.payload[..], &[1u8; 4]);
    }
    assert_eq!(store.stats().entries, 4);
    assert_eq!(
        metric(
            &running.registry.encode(),
            "switchyard_dead_letter_replayed_total{route=\"a\"}"
        ),
        Some(2.0)
    );
    // Into a route that does not exist: refused before anything moves.
    let gone = running
        .call(
            "POST",
            "/v1/dead-letters/replay",
            "{\"filter\":{},\"route\":\"gone\"}",
        )
        .await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json()["error"]["code"], "ROUTE_NOT_FOUND");
    // Into a full route: one goes, the rest stay.
    let full = running
        .call(
            "POST",
            "/v1/dead-letters/replay",
            "{\"filter\":{\"route\":\"a\"},\"route\":\"full\"}",
        )
        .await
        .json();
    assert_eq!(full["replayed"], 1);
    assert_eq!(full["refused"], 1);
    assert!(
        full["stopped"].as_str().is_some_and(|s| s.contains("full")),
        "{full}"
    );
    assert_eq!(store.stats().entries, 3);

    // Bad bodies.
    for body in [
        "{}",
        "{\"ids\":[\"1\"],\"filter\":{}}",
        "{\"ids\":[\"x\"]}",
        "{\"filter\":{\"reason\":\"nope\"}}",
        "{\"filter\":{},\"route\":\"a\"}",
        "not json",
        "{\"idz\":[]}",
    ] {
        let reply = running.call("DELETE", "/v1/dead-letters", body).await;
        assert_eq!(reply.status, 400, "{body}");
    }
    assert_eq!(
        running.call("PUT", "/v1/dead-letters", "").await.status,
        405
    );

    // Purge by filter: counted, gone.
    let purged = running
        .call(
            "DELETE",
            "/v1/dead-letters",
            "{\"filter\":{\"route\":\"b\"}}",
        )
        .await;
    assert_eq!(purged.status, 200);
    assert_eq!(purged.json(), serde_json::json!({"purged": 2}));
    let left = running.call("GET", "/v1/dead-letters", "").await.json();
    assert_eq!(left["entries"].as_array().expect("entries").len(), 1);
    assert_eq!(
        metric(
            &running.registry.encode(),
            "switchyard_dead_letter_purged_total"
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(&running.registry.encode(), "switchyard_dead_letter_depth"),
        Some(1.0)
    );
    running.shutdown.cancel();
}

#[tokio::test]
async fn a_replay_by_filter_does_not_chase_what_it_dead_letters_again() {
    let running = start(true).await;
    let store = running.state.store.clone().expect("store");
    store
        .put((0..3).map(|n| entry("a", DeadReason::Verdict, n)).collect())
        .await
        .expect("put");
    let reply = running
        .call(
            "POST",
            "/v1/dead-letters/replay",
            "{\"filter\":{},\"route\":\"again\"}",
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        serde_json::json!({"replayed": 3, "refused": 0, "missing": 0})
    );
    // The three came back as new entries, and were left alone.
    assert_eq!(store.stats().entries, 3);
    running.shutdown.cancel();
}
