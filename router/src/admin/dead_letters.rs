//! `/v1/dead-letters`: listing, showing, replaying and purging the
//! dead-letter store.
//!
//! Times are unix milliseconds, in answers and in the `since` / `until`
//! filters (`since` inclusive, `until` exclusive; both on `last_failed`).
//! Ids are decimal strings. A listing pages with an opaque `cursor`: give
//! back the answer's `next_cursor` for the next page (`null` at the end).
//!
//! Large operations (a replay or purge by filter over a million entries)
//! work in bounded chunks: index scans and disk reads on the blocking pool,
//! at most [`CHUNK_IDS`] entries and [`CHUNK_BYTES`] of messages in memory
//! at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::State;
use crate::http::{self, Body, Error};
use crate::message::Message;
use crate::store::dead::{Filter, Removal, Summary};
use crate::store::{DeadLetter, DeadLetters, DeadReason};

/// The attribute a replayed message gains: the id of the entry it was.
pub const REPLAYED_FROM: &str = "replayed-from";
/// Entries a listing answers unless `limit` says otherwise.
pub(super) const DEFAULT_LIMIT: usize = 100;
/// The most a listing answers.
pub(super) const MAX_LIMIT: usize = 1000;
/// Entries one replay or purge step handles.
pub(super) const CHUNK_IDS: usize = 256;
/// Bytes of messages one replay step holds.
pub(super) const CHUNK_BYTES: usize = 16 << 20;
/// The largest body of a replay or purge.
const MAX_BODY: usize = 1 << 20;
/// Most ids one request may list.
const MAX_IDS: usize = 10_000;

/// One entry as a listing shows it.
#[derive(Debug, Serialize)]
struct Listed {
    id: String,
    message_id: String,
    topic: String,
    route: String,
    output: Option<String>,
    reason: DeadReason,
    attempts: u32,
    first_error: String,
    last_error: String,
    first_failed: u64,
    last_failed: u64,
    publish_time: u64,
    size: u64,
}

impl From<Summary> for Listed {
    fn from(s: Summary) -> Self {
        Self {
            id: s.id.to_string(),
            message_id: s.message_id.to_string(),
            topic: s.topic,
            route: s.route,
            output: s.output,
            reason: s.reason,
            attempts: s.attempts,
            first_error: s.first_error,
            last_error: s.last_error,
            first_failed: millis(s.first_failed),
            last_failed: millis(s.last_failed),
            publish_time: millis(s.publish_time),
            size: s.size,
        }
    }
}

#[derive(Debug, Serialize)]
struct Publisher {
    input: String,
    peer: String,
    principal: Option<String>,
}

/// One entry, whole.
#[derive(Debug, Serialize)]
struct Shown {
    #[serde(flatten)]
    listed: Listed,
    attributes: BTreeMap<String, String>,
    publisher: Publisher,
    priority: u8,
    /// Standard base64, padded.
    payload: String,
}

#[derive(Debug, Serialize)]
struct Listing {
    entries: Vec<Listed>,
    next_cursor: Option<String>,
}

/// What a replay did.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
struct Replayed {
    /// Entries admitted to their route and removed from the store.
    replayed: u64,
    /// Entries a route refused (full, shutting down, or gone); they stay.
    refused: u64,
    /// Ids asked for that the store does not hold.
    missing: u64,
    /// Why the replay stopped early, if it did (a route stayed full, or
    /// the router is shutting down); what was not reached stays.
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped: Option<String>,
}

/// A replay's or purge's body: ids or a filter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Selection {
    ids: Option<Vec<IdValue>>,
    filter: Option<FilterBody>,
    /// Replay only: the route to replay into instead of each entry's own.
    route: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum IdValue {
    Text(String),
    Number(u64),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterBody {
    route: Option<String>,
    output: Option<String>,
    reason: Option<String>,
    since: Option<u64>,
    until: Option<u64>,
}

enum Selected {
    Ids(Vec<u64>),
    Filter(Filter),
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn store(state: &dyn State) -> Result<Arc<DeadLetters>, Error> {
    state.dead_letters().ok_or(Error::DeadLettersDisabled)
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("dead-letter store: {e}"))
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(internal)?
        .map_err(internal)
}

fn parse_id(text: &str) -> Result<u64, Error> {
    text.parse::<u64>().map_err(|_| {
        Error::BadRequest(format!(
            "{text:?} is not a dead-letter id (ids are decimal numbers, as listed)"
        ))
    })
}

fn parse_reason(text: &str) -> Result<DeadReason, Error> {
    DeadReason::parse(text).ok_or_else(|| {
        let all: Vec<&str> = DeadReason::ALL.iter().map(|r| r.label()).collect();
        Error::BadRequest(format!("reason {text:?} is not one of {}", all.join(", ")))
    })
}

fn parse_millis(field: &str, text: &str) -> Result<SystemTime, Error> {
    text.parse::<u64>().map(from_millis).map_err(|_| {
        Error::BadRequest(format!(
            "{field}: {text:?} is not a time; give unix milliseconds"
        ))
    })
}

/// Decodes `%XX` and `+` in a query value.
fn decode(value: &str) -> Result<String, Error> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = value
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| Error::BadRequest(format!("bad %-escape in {value:?}")))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| Error::BadRequest(format!("{value:?} is not UTF-8")))
}

/// The listing's query: filter, limit, cursor.
fn parse_query(query: Option<&str>) -> Result<(Filter, usize, Option<u64>), Error> {
    let mut filter = Filter::default();
    let mut limit = DEFAULT_LIMIT;
    let mut cursor = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decode(value)?;
        match key {
            "route" => filter.route = Some(value),
            "output" => filter.output = Some(value),
            "reason" => filter.reason = Some(parse_reason(&value)?),
            "since" => filter.since = Some(parse_millis("since", &value)?),
            "until" => filter.until = Some(parse_millis("until", &value)?),
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        Error::BadRequest(format!(
                            "limit: {value:?} must be a number from 1 to {MAX_LIMIT}"
                        ))
                    })?;
            }
            "cursor" => {
                cursor = Some(value.parse::<u64>().map_err(|_| {
                    Error::BadRequest(format!(
                        "cursor: {value:?} is not a cursor; give back a listing's next_cursor"
                    ))
                })?);
            }
            other => {
                return Err(Error::BadRequest(format!(
                    "unknown query parameter {other:?}; use route, output, reason, since, until, limit, cursor"
                )));
            }
        }
    }
    Ok((filter, limit, cursor))
}

/// Reads a replay's or purge's body.
async fn selection(
    request: Request<Incoming>,
    replay: bool,
) -> Result<(Selected, Option<String>), Error> {
    let body = http::read_body(
        request.into_body(),
        &http::BodyLimits {
            max: MAX_BODY,
            timeout: Duration::from_secs(10),
        },
    )
    .await?;
    let s: Selection =
        serde_json::from_slice(&body).map_err(|e| Error::InvalidJson(e.to_string()))?;
    if s.route.is_some() && !replay {
        return Err(Error::BadRequest(
            "route only applies to a replay (the route to replay into)".into(),
        ));
    }
    let selected = match (s.ids, s.filter) {
        (Some(_), Some(_)) => {
            return Err(Error::BadRequest(
                "give either ids or a filter, not both".into(),
            ));
        }
        (None, None) => {
            return Err(Error::BadRequest(
                "give ids (\"ids\": [\"12\", ...]) or a filter (\"filter\": {\"route\": ...}; {} for all)"
                    .into(),
            ));
        }
        (Some(ids), None) => {
            if ids.len() > MAX_IDS {
                return Err(Error::BadRequest(format!(
                    "{} ids, over the limit of {MAX_IDS} per request; use a filter",
                    ids.len()
                )));
            }
            let ids = ids
                .into_iter()
                .map(|id| match id {
                    IdValue::Number(n) => Ok(n),
                    IdValue::Text(t) => parse_id(&t),
                })
                .collect::<Result<Vec<u64>, Error>>()?;
            Selected::Ids(ids)
        }
        (None, Some(f)) => Selected::Filter(Filter {
            route: f.route,
            output: f.output,
            reason: f.reason.as_deref().map(parse_reason).transpose()?,
            since: f.since.map(from_millis),
            until: f.until.map(from_millis),
        }),
    };
    Ok((selected, s.route))
}

/// Hands out the selected ids a chunk at a time.
struct Chunks {
    selected: Selected,
    /// Ids: where the next chunk starts. Filter: the cursor.
    at: usize,
    after: Option<u64>,
    done: bool,
}

impl Chunks {
    fn new(selected: Selected) -> Self {
        Self {
            selected,
            at: 0,
            after: None,
            done: false,
        }
    }

    async fn next(
        &mut self,
        store: &Arc<DeadLetters>,
        n: usize,
    ) -> Result<Option<Vec<u64>>, Error> {
        loop {
            if self.done {
                return Ok(None);
            }
            match &self.selected {
                Selected::Ids(ids) => {
                    let chunk: Vec<u64> = ids.iter().skip(self.at).take(n).copied().collect();
                    self.at += chunk.len();
                    self.done = self.at >= ids.len();
                    if !chunk.is_empty() {
                        return Ok(Some(chunk));
                    }
                }
                Selected::Filter(filter) => {
                    let (store, filter, after) = (Arc::clone(store), filter.clone(), self.after);
                    let (ids, next) = blocking(move || Ok(store.ids(&filter, after, n))).await?;
                    self.after = next;
                    self.done = next.is_none();
                    if !ids.is_empty() {
                        return Ok(Some(ids));
                    }
                }
            }
        }
    }
}

/// `GET /v1/dead-letters`.
pub(super) async fn list(
    state: &dyn State,
    request: &Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let store = store(state)?;
    let (filter, limit, cursor) = parse_query(request.uri().query())?;
    let page = blocking(move || store.list(&filter, cursor, limit)).await?;
    Ok(http::json_response(
        StatusCode::OK,
        &Listing {
            entries: page.entries.into_iter().map(Listed::from).collect(),
            next_cursor: page.next.map(|n| n.to_string()),
        },
    ))
}

/// `GET /v1/dead-letters/{id}`.
pub(super) async fn show(state: &dyn State, id: &str) -> Result<Response<Body>, Error> {
    let store = store(state)?;
    let id_num = parse_id(id)?;
    let found = blocking(move || store.get(id_num)).await?;
    let Some((entry, summary)) = found else {
        return Err(Error::DeadLetterNotFound { id: id.to_owned() });
    };
    let m = &entry.message;
    Ok(http::json_response(
        StatusCode::OK,
        &Shown {
            attributes: m
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            publisher: Publisher {
                input: m.publisher.input.to_string(),
                peer: m.publisher.peer.to_string(),
                principal: m.publisher.principal.as_deref().map(str::to_owned),
            },
            priority: m.priority,
            payload: base64::engine::general_purpose::STANDARD.encode(&m.payload),
            listed: Listed::from(summary),
        },
    ))
}

/// `POST /v1/dead-letters/replay`.
pub(super) async fn replay(
    state: &dyn State,
    request: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    if request.method() != Method::POST {
        return Err(Error::MethodNotAllowed {
            method: request.method().clone(),
            allow: "POST",
        });
    }
    let store = store(state)?;
    let (selected, into) = selection(request, true).await?;
    if let Some(route) = &into {
        // Refuse an unknown route before touching anything.
        if let Err(crate::pipeline::Error::NoSuchRoute { route }) =
            state.inject(route, Vec::new()).await
        {
            return Err(Error::RouteNotFound { route });
        }
    }
    let mut report = Replayed::default();
    let mut chunks = Chunks::new(selected);
    'chunks: while let Some(ids) = chunks.next(&store, CHUNK_IDS).await? {
        // Read the chunk's entries, up to CHUNK_BYTES of messages at a
        // time.
        let mut rest = &ids[..];
        while !rest.is_empty() {
            let (read, taken) = {
                let store = Arc::clone(&store);
                let wanted = rest.to_vec();
                blocking(move || {
                    let mut out = Vec::new();
                    let mut bytes = 0;
                    let mut taken = 0;
                    for id in wanted {
                        if bytes >= CHUNK_BYTES {
                            break;
                        }
                        taken += 1;
                        let got = store.get(id)?;
                        if let Some((entry, _)) = &got {
                            bytes += entry.message.size();
                        }
                        out.push((id, got.map(|(e, _)| e)));
                    }
                    Ok((out, taken))
                })
                .await?
            };
            rest = &rest[taken..];
            // By target route, in id order.
            let mut by_route: BTreeMap<String, Vec<(u64, Message)>> = BTreeMap::new();
            for (id, entry) in read {
                let Some(DeadLetter {
                    mut message, route, ..
                }) = entry
                else {
                    report.missing += 1;
                    continue;
                };
                message
                    .attributes
                    .insert(REPLAYED_FROM.to_owned(), id.to_string());
                message.publish_time = SystemTime::now();
                let target = into.clone().unwrap_or(route);
                by_route.entry(target).or_default().push((id, message));
            }
            for (route, batch) in by_route {
                let (ids, messages): (Vec<u64>, Vec<Message>) = batch.into_iter().unzip();
                let offered = match state.inject(&route, messages).await {
                    Ok(offered) => offered,
                    Err(e) => {
                        // The entry's route is gone (removed by a reload):
                        // they stay, to be replayed into a named route.
                        tracing::debug!(route, error = %e, "replay: no such route");
                        report.refused += ids.len() as u64;
                        continue;
                    }
                };
                let admitted = &ids[..offered.admitted.min(ids.len())];
                report.replayed += store
                    .remove(admitted, Removal::Replayed(&route))
                    .await
                    .map_err(internal)?;
                let refused = ids.len() - admitted.len();
                report.refused += refused as u64;
                if let Some(why) = offered.refusal {
                    report.stopped = Some(match why {
                        crate::ingress::Refusal::Backpressure { .. } => {
                            format!("route {route:?} stayed full; replay the rest later")
                        }
                        crate::ingress::Refusal::DiskFull { .. } => {
                            format!("route {route:?} cannot write to its disk")
                        }
                        crate::ingress::Refusal::ShuttingDown => {
                            "the router is shutting down".to_owned()
                        }
                    });
                    break 'chunks;
                }
            }
        }
    }
    Ok(http::json_response(StatusCode::OK, &report))
}

/// `DELETE /v1/dead-letters`.
pub(super) async fn purge(
    state: &dyn State,
    request: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let store = store(state)?;
    let (selected, _) = selection(request, false).await?;
    let mut purged = 0;
    let mut chunks = Chunks::new(selected);
    while let Some(ids) = chunks.next(&store, crate::store::dead::MAX_REMOVE).await? {
        purged += store
            .remove(&ids, Removal::Purged)
            .await
            .map_err(internal)?;
    }
    Ok(http::json_response(
        StatusCode::OK,
        &serde_json::json!({ "purged": purged }),
    ))
}

#[cfg(test)]
mod tests {
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
        fn reload(&self, _: bool, _: Option<String>) -> ReloadFuture<'_> {
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
}
