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
    /// A filter only selects entries below this id: those stored when the
    /// request came. A replay into a route that dead-letters them again
    /// stores them anew, and must not go round for ever.
    below: u64,
    done: bool,
}

impl Chunks {
    fn new(selected: Selected, store: &DeadLetters) -> Self {
        Self {
            selected,
            at: 0,
            after: None,
            below: store.stats().next_id,
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
                    let (mut ids, next) =
                        blocking(move || Ok(store.ids(&filter, after, n))).await?;
                    self.after = next;
                    self.done = next.is_none_or(|n| n >= self.below);
                    if ids.last().is_some_and(|&id| id >= self.below) {
                        ids.retain(|&id| id < self.below);
                        self.done = true;
                    }
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
    let mut chunks = Chunks::new(selected, &store);
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
    let mut chunks = Chunks::new(selected, &store);
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
mod tests;
