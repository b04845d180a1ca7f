//! `switchyard dlq list|show|replay|purge`: the dead-letter store from
//! the command line, through a running router's admin API
//! (`/v1/dead-letters`). Main only parses and hands over.
//!
//! The admin address is `--admin HOST:PORT`, else the `[router] admin` of
//! `--config` (default `config/switchyard.toml`; a wildcard address is
//! reached on loopback). `--json` prints the API's answer as it is;
//! otherwise a table (times in UTC).
//!
//! Exit codes: 0 done; 1 the router refused or could not be reached (or a
//! replay left entries behind); 2 bad arguments or config.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// The router refused, or could not be reached.
const EXIT_FAILED: u8 = 1;
/// Bad arguments or config.
const EXIT_BAD_INPUT: u8 = 2;
/// How long one admin request may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// `switchyard dlq ...`.
#[derive(Debug, Args)]
pub struct Dlq {
    /// The router's admin listener, HOST:PORT (default: the `[router]
    /// admin` of --config).
    #[arg(long, global = true, value_name = "HOST:PORT")]
    admin: Option<String>,
    /// The config file to take the admin address from.
    #[arg(long, short, global = true, default_value = "config/switchyard.toml")]
    config: PathBuf,
    /// Print the API's JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: DlqCommand,
}

/// Which entries: the filters every command but `show` takes.
#[derive(Debug, Args, Default, Clone)]
pub struct Selection {
    /// Only entries of this route.
    #[arg(long)]
    route: Option<String>,
    /// Only entries this output refused.
    #[arg(long)]
    output: Option<String>,
    /// Only entries for this reason: retries_exhausted, too_large,
    /// unencodable, refused, plugin_error, verdict.
    #[arg(long)]
    reason: Option<String>,
    /// Only entries that failed at or after this time (unix ms).
    #[arg(long, value_name = "UNIX_MS")]
    since: Option<u64>,
    /// Only entries that failed before this time (unix ms).
    #[arg(long, value_name = "UNIX_MS")]
    until: Option<u64>,
}

impl Selection {
    fn is_empty(&self) -> bool {
        self.route.is_none()
            && self.output.is_none()
            && self.reason.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }

    fn json(&self) -> Value {
        let mut filter = serde_json::Map::new();
        let mut put = |k: &str, v: Value| {
            filter.insert(k.to_owned(), v);
        };
        if let Some(v) = &self.route {
            put("route", json!(v));
        }
        if let Some(v) = &self.output {
            put("output", json!(v));
        }
        if let Some(v) = &self.reason {
            put("reason", json!(v));
        }
        if let Some(v) = self.since {
            put("since", json!(v));
        }
        if let Some(v) = self.until {
            put("until", json!(v));
        }
        Value::Object(filter)
    }

    fn query(&self) -> Vec<(String, String)> {
        let mut q = Vec::new();
        for (k, v) in [
            ("route", self.route.clone()),
            ("output", self.output.clone()),
            ("reason", self.reason.clone()),
            ("since", self.since.map(|v| v.to_string())),
            ("until", self.until.map(|v| v.to_string())),
        ] {
            if let Some(v) = v {
                q.push((k.to_owned(), v));
            }
        }
        q
    }
}

/// The `switchyard dlq` subcommands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List entries, oldest first, one page at a time (or --all pages).
    List {
        /// Which entries.
        #[command(flatten)]
        filter: Selection,
        /// Entries per page, 1 to 1000.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Where to continue: a previous page's next cursor.
        #[arg(long)]
        cursor: Option<String>,
        /// Every page, not only the first.
        #[arg(long)]
        all: bool,
    },
    /// Show one entry whole, payload included.
    Show {
        /// The entry's id, as listed.
        id: String,
    },
    /// Replay entries (by ids, or every one the filters match) into their
    /// route, or --into another; each keeps its message id and gains the
    /// attribute `replayed-from`. Replayed entries leave the store.
    Replay {
        /// Entry ids; without any, the filters choose (--all for every
        /// entry).
        ids: Vec<String>,
        /// Which entries.
        #[command(flatten)]
        filter: Selection,
        /// Replay into this route instead of each entry's own.
        #[arg(long, value_name = "ROUTE")]
        into: Option<String>,
        /// With no ids and no filter: every entry.
        #[arg(long)]
        all: bool,
    },
    /// Delete entries (by ids, or every one the filters match).
    Purge {
        /// Entry ids; without any, the filters choose (--all for every
        /// entry).
        ids: Vec<String>,
        /// Which entries.
        #[command(flatten)]
        filter: Selection,
        /// With no ids and no filter: every entry.
        #[arg(long)]
        all: bool,
    },
}

/// Why a command failed.
#[derive(Debug)]
enum Failure {
    BadInput(String),
    Failed(String),
}

/// Runs `dlq` and says how the process exits.
pub fn execute(dlq: Dlq) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard dlq: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(run(dlq)) {
        Ok(code) => code,
        Err(Failure::BadInput(why)) => {
            eprintln!("switchyard dlq: {why}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
        Err(Failure::Failed(why)) => {
            eprintln!("switchyard dlq: {why}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn admin_address(dlq: &Dlq) -> Result<String, Failure> {
    if let Some(a) = &dlq.admin {
        return Ok(a.clone());
    }
    let config = crate::config::Config::load(&dlq.config).map_err(|e| {
        Failure::BadInput(format!(
            "no --admin given, and the config does not load:\n{e}"
        ))
    })?;
    let mut addr: SocketAddr = config.router.admin;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(addr.to_string())
}

/// One request to the admin API; the answer's status and JSON body.
async fn call(
    admin: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), Failure> {
    let unreachable = |e: &dyn std::fmt::Display| {
        Failure::Failed(format!("cannot reach the admin API at {admin}: {e}"))
    };
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(admin)
            .await
            .map_err(|e| unreachable(&e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&e))?;
        tokio::spawn(connection);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, admin)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Failure::BadInput(format!("bad request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(&e))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(&e))?
            .to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, json))
    };
    tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| {
        Failure::Failed(format!(
            "the admin API at {admin} did not answer within {TIMEOUT:?}"
        ))
    })?
}

/// The answer's JSON, or the router's error as a failure.
fn ok(status: u16, json: Value) -> Result<Value, Failure> {
    if (200..300).contains(&status) {
        return Ok(json);
    }
    let code = json["error"]["code"].as_str().unwrap_or("?");
    let message = json["error"]["message"].as_str().unwrap_or("no message");
    Err(Failure::Failed(format!(
        "the router answered {status} {code}: {message}"
    )))
}

fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn body(ids: &[String], filter: &Selection, all: bool) -> Result<Value, Failure> {
    if !ids.is_empty() {
        if !filter.is_empty() || all {
            return Err(Failure::BadInput(
                "give ids or filters (or --all), not both".into(),
            ));
        }
        return Ok(json!({ "ids": ids }));
    }
    if filter.is_empty() && !all {
        return Err(Failure::BadInput(
            "give entry ids, filters (--route, --output, --reason, --since, --until), or --all for every entry".into(),
        ));
    }
    Ok(json!({ "filter": filter.json() }))
}

async fn run(dlq: Dlq) -> Result<ExitCode, Failure> {
    let admin = admin_address(&dlq)?;
    match &dlq.command {
        DlqCommand::List {
            filter,
            limit,
            cursor,
            all,
        } => {
            let mut cursor = cursor.clone();
            let mut printed_header = false;
            loop {
                let mut query = filter.query();
                query.push(("limit".into(), limit.to_string()));
                if let Some(c) = &cursor {
                    query.push(("cursor".into(), c.clone()));
                }
                let query: Vec<String> = query
                    .iter()
                    .map(|(k, v)| format!("{k}={}", encode(v)))
                    .collect();
                let path = format!("/v1/dead-letters?{}", query.join("&"));
                let (status, json) = call(&admin, Method::GET, &path, None).await?;
                let page = ok(status, json)?;
                if dlq.json {
                    println!("{page}");
                } else {
                    print_table(&page, &mut printed_header);
                }
                cursor = page["next_cursor"].as_str().map(str::to_owned);
                match (&cursor, all) {
                    (Some(_), true) => continue,
                    (Some(c), false) if !dlq.json => {
                        println!("more: --cursor {c}");
                        break;
                    }
                    _ => break,
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Show { id } => {
            let (status, json) = call(
                &admin,
                Method::GET,
                &format!("/v1/dead-letters/{}", encode(id)),
                None,
            )
            .await?;
            let entry = ok(status, json)?;
            if dlq.json {
                println!("{entry}");
            } else {
                print_entry(&entry);
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Replay {
            ids,
            filter,
            into,
            all,
        } => {
            let mut request = body(ids, filter, *all)?;
            if let Some(route) = into {
                request["route"] = json!(route);
            }
            let (status, json) = call(
                &admin,
                Method::POST,
                "/v1/dead-letters/replay",
                Some(request),
            )
            .await?;
            let report = ok(status, json)?;
            if dlq.json {
                println!("{report}");
            } else {
                println!(
                    "replayed {}, refused {}, missing {}",
                    report["replayed"], report["refused"], report["missing"]
                );
                if let Some(why) = report["stopped"].as_str() {
                    println!("stopped early: {why}");
                }
            }
            let left = report["refused"].as_u64().unwrap_or(0) > 0 || report["stopped"].is_string();
            Ok(if left {
                ExitCode::from(EXIT_FAILED)
            } else {
                ExitCode::SUCCESS
            })
        }
        DlqCommand::Purge { ids, filter, all } => {
            let request = body(ids, filter, *all)?;
            let (status, json) =
                call(&admin, Method::DELETE, "/v1/dead-letters", Some(request)).await?;
            let report = ok(status, json)?;
            if dlq.json {
                println!("{report}");
            } else {
                println!("purged {}", report["purged"]);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `ms` since the epoch as `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

fn print_table(page: &Value, printed_header: &mut bool) {
    let entries = page["entries"].as_array().cloned().unwrap_or_default();
    if !*printed_header {
        println!(
            "{:<10} {:<16} {:<12} {:<17} {:>4} {:<23} {:>8}  {:<24} LAST ERROR",
            "ID", "ROUTE", "OUTPUT", "REASON", "TRY", "LAST FAILED (UTC)", "SIZE", "TOPIC"
        );
        *printed_header = true;
    }
    for e in &entries {
        println!(
            "{:<10} {:<16} {:<12} {:<17} {:>4} {:<23} {:>8}  {:<24} {}",
            text(&e["id"]),
            cut(&text(&e["route"]), 16),
            cut(&text(&e["output"]), 12),
            text(&e["reason"]),
            text(&e["attempts"]),
            utc(e["last_failed"].as_u64().unwrap_or(0)),
            text(&e["size"]),
            cut(&text(&e["topic"]), 24),
            cut(&text(&e["last_error"]), 60),
        );
    }
}

fn print_entry(e: &Value) {
    for key in [
        "id",
        "message_id",
        "topic",
        "route",
        "output",
        "reason",
        "attempts",
        "first_error",
        "last_error",
    ] {
        println!("{key:<13} {}", text(&e[key]));
    }
    for key in ["first_failed", "last_failed", "publish_time"] {
        println!("{key:<13} {} UTC", utc(e[key].as_u64().unwrap_or(0)));
    }
    println!("{:<13} {}", "size", text(&e["size"]));
    println!("{:<13} {}", "priority", text(&e["priority"]));
    println!(
        "{:<13} {} {}",
        "publisher",
        text(&e["publisher"]["input"]),
        text(&e["publisher"]["peer"])
    );
    if let Some(attrs) = e["attributes"].as_object() {
        for (k, v) in attrs {
            println!("{:<13} {k}={}", "attribute", text(v));
        }
    }
    let payload = e["payload"].as_str().unwrap_or("");
    use base64::Engine as _;
    match base64::engine::general_purpose::STANDARD
        .decode(payload)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
    {
        Some(text) => println!("{:<13} {text}", "payload"),
        None => println!("{:<13} (base64) {payload}", "payload"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14 22:13:20.123");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00.000");
    }

    #[test]
    fn a_selection_needs_ids_filters_or_all() {
        let none = Selection::default();
        assert!(matches!(body(&[], &none, false), Err(Failure::BadInput(_))));
        assert_eq!(body(&[], &none, true).ok(), Some(json!({"filter": {}})));
        let ids = vec!["3".to_owned()];
        assert_eq!(body(&ids, &none, false).ok(), Some(json!({"ids": ["3"]})));
        let route = Selection {
            route: Some("r".into()),
            ..Selection::default()
        };
        assert!(matches!(
            body(&ids, &route, false),
            Err(Failure::BadInput(_))
        ));
        assert_eq!(
            body(&[], &route, false).ok(),
            Some(json!({"filter": {"route": "r"}}))
        );
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
