//! The dead-letter store end to end, on the real `switchyard` binary: a
//! content-routing plugin refuses some messages (its `otherwise =
//! "dead_letter"` verdict) on a route without a `dead_letter` output, so
//! they go to the store in `data_dir`. Then, over the admin API and the
//! `switchyard dlq` CLI: list, filter and paginate; show (the payload, as
//! base64, is what was published); replay into another route (they arrive
//! at its subscriber with `replayed-from` and their message id); purge
//! (gone, counted in the metrics); and after a restart the store holds
//! exactly what it held before.

use anyhow::{Context, Result, ensure};
use base64::Engine as _;
use serde_json::{Value, json};
use switchyard_tests::router::http::{Client, Response};
use switchyard_tests::router::peer::Peer;
use switchyard_tests::router::plugin_cases::*;
use switchyard_tests::router::plugins::{entry, toml_path};
use switchyard_tests::router::{DEADLINE, Router, TempDir, cli};

const N: usize = 30;

fn config(data_dir: &std::path::Path) -> Result<String> {
    let plugin = entry(
        "keep-marked",
        "content_router",
        &healthy(
            r#"config = { rules = [
  { attributes = { keep = "yes" }, to = ["out"] },
], otherwise = "dead_letter" }"#,
        ),
    )?;
    let head = HEAD.replace(
        "admin = \"127.0.0.1:0\"\n",
        &format!(
            "admin = \"127.0.0.1:0\"\ndata_dir = {}\nshutdown_grace = \"2s\"\n",
            toml_path(data_dir)
        ),
    );
    Ok(format!(
        r#"{head}
[dead_letters]
fsync = "always"
max_age = "1d"
{}{}
[[route]]
name = "readings"
match = "readings.>"
router = "keep-marked"
to = ["out"]

# Matches no topic: only a replay puts messages here.
[[route]]
name = "retry"
match = "retry.never"
to = ["out"]
{plugin}"#,
        output("out"),
        probe_route(&["out"]),
    ))
}

fn admin(router: &Router, method: &str, path: &str, body: Option<&Value>) -> Result<Response> {
    let mut client = Client::new(router.admin());
    let text = body.map(Value::to_string).unwrap_or_default();
    let headers: &[(&str, &str)] = if body.is_some() {
        &[("content-type", "application/json")]
    } else {
        &[]
    };
    client.request(method, path, headers, text.as_bytes())
}

fn ok_json(resp: &Response) -> Result<Value> {
    ensure!(resp.status == 200, "{} {}", resp.status, resp.text());
    resp.json()
}

/// Every entry id, walking the pages `limit` at a time.
fn all_ids(router: &Router, query: &str, limit: usize) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/dead-letters?limit={limit}{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = ok_json(&admin(router, "GET", &path, None)?)?;
        let entries = page["entries"].as_array().context("entries")?;
        ensure!(entries.len() <= limit, "a page over its limit: {page}");
        ids.extend(
            entries
                .iter()
                .filter_map(|e| e["id"].as_str().map(str::to_owned)),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok(ids),
        }
    }
}

fn dlq(router: &Router, args: &[&str]) -> Result<cli::Exited> {
    let admin = router.admin().to_string();
    let mut all = vec!["dlq", "--admin", admin.as_str()];
    all.extend_from_slice(args);
    cli::run(all, DEADLINE)
}

#[test]
fn dead_letters_are_listed_shown_replayed_purged_and_survive_a_restart() -> Result<()> {
    let data = TempDir::new()?;
    let config = config(data.path())?;
    let mut router = Router::start(&config)?;
    let mut sub = Peer::sub(&router.output_endpoint("out")?, &[""])?;
    router.sync_subscribers("api", "probe", &mut [&mut sub])?;

    // Every third message is marked to keep; the rest are dead-lettered.
    let messages: Vec<Value> = (0..N)
        .map(|i| {
            let mut m = json!({
                "topic": if i % 2 == 0 { "readings.even" } else { "readings.odd" },
                "payload": { "i": i },
                "attributes": { "n": i.to_string() },
            });
            if i % 3 == 0 {
                m["attributes"]["keep"] = json!("yes");
            }
            m
        })
        .collect();
    let resp = router
        .http("api")?
        .post_json("/v1/publish", &json!({ "messages": messages }))?;
    ensure!(
        resp.status == 202,
        "publish: {} {}",
        resp.status,
        resp.text()
    );
    let message_ids = resp.ids()?;
    let dead: Vec<usize> = (0..N).filter(|i| i % 3 != 0).collect();

    let s = settle(&router, &[("readings", N as u64)])?;
    let r = s.route("readings");
    assert_eq!(
        (r.delivered, r.dead_lettered, r.dropped),
        (10, dead.len() as u64, 0),
        "{r:?}"
    );
    assert_eq!(
        s.count(
            "switchyard_dead_letter_messages_total",
            &[("route", "readings"), ("reason", "verdict")]
        ),
        dead.len() as u64
    );
    assert_eq!(
        s.count("switchyard_dead_letter_depth", &[]),
        dead.len() as u64
    );

    // List, paginate, filter.
    let listed = ok_json(&admin(&router, "GET", "/v1/dead-letters", None)?)?;
    let entries = listed["entries"].as_array().context("entries")?.clone();
    assert_eq!(entries.len(), dead.len());
    assert_eq!(listed["next_cursor"], Value::Null);
    let ids: Vec<String> = entries
        .iter()
        .map(|e| e["id"].as_str().map(str::to_owned).context("id"))
        .collect::<Result<_>>()?;
    for (e, &i) in entries.iter().zip(&dead) {
        assert_eq!(e["message_id"], message_ids[i], "{e}");
        assert_eq!(e["route"], "readings");
        assert_eq!(e["output"], Value::Null);
        assert_eq!(e["reason"], "verdict");
        assert_eq!(e["attempts"], 1);
        assert!(
            e["last_error"]
                .as_str()
                .is_some_and(|t| t.contains("keep-marked")),
            "{e}"
        );
    }
    assert_eq!(all_ids(&router, "", 7)?, ids);
    let odd = all_ids(&router, "&route=readings&reason=verdict", 3)?;
    assert_eq!(odd, ids);
    assert!(all_ids(&router, "&reason=too_large", 100)?.is_empty());
    assert!(all_ids(&router, "&route=probe", 100)?.is_empty());
    let later = admin(&router, "GET", "/v1/dead-letters?since=4102444800000", None)?;
    assert!(
        ok_json(&later)?["entries"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
    let bad = admin(&router, "GET", "/v1/dead-letters?limit=5000", None)?;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(bad.error_code().as_deref(), Some("BAD_REQUEST"));

    // Show: the payload as it was published, and its attributes.
    let shown = ok_json(&admin(
        &router,
        "GET",
        &format!("/v1/dead-letters/{}", ids[0]),
        None,
    )?)?;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(shown["payload"].as_str().context("payload")?)?;
    let payload: Value = serde_json::from_slice(&payload)?;
    assert_eq!(payload, json!({ "i": dead[0] }));
    assert_eq!(shown["attributes"], json!({ "n": dead[0].to_string() }));
    assert_eq!(shown["publisher"]["input"], "api");
    assert_eq!(
        shown["topic"],
        if dead[0].is_multiple_of(2) {
            "readings.even"
        } else {
            "readings.odd"
        }
    );
    let missing = admin(&router, "GET", "/v1/dead-letters/999999999", None)?;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.error_code().as_deref(),
        Some("DEAD_LETTER_NOT_FOUND")
    );

    // Replay five by id into the retry route (the readings route would
    // dead-letter them again), and one more with the CLI.
    let replay = json!({ "ids": &ids[..5], "route": "retry" });
    let replayed = ok_json(&admin(
        &router,
        "POST",
        "/v1/dead-letters/replay",
        Some(&replay),
    )?)?;
    assert_eq!(
        replayed,
        json!({ "replayed": 5, "refused": 0, "missing": 0 })
    );
    let out = dlq(&router, &["replay", &ids[5], "--into", "retry"])?;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.stdout.contains("replayed 1, refused 0"), "{out:?}");
    let nowhere = json!({ "ids": &ids[6..7], "route": "nowhere" });
    let refused = admin(&router, "POST", "/v1/dead-letters/replay", Some(&nowhere))?;
    assert_eq!(refused.status, 404);
    assert_eq!(refused.error_code().as_deref(), Some("ROUTE_NOT_FOUND"));

    let s = settle(&router, &[("retry", 6)])?;
    assert_eq!(s.route("retry").delivered, 6);
    assert_eq!(
        s.count(
            "switchyard_dead_letter_replayed_total",
            &[("route", "retry")]
        ),
        6
    );
    let got: Vec<_> = received(&router, &mut sub)?;
    let replays: Vec<_> = got
        .iter()
        .filter(|m| attrs(m).is_ok_and(|a| a.contains_key("replayed-from")))
        .collect();
    assert_eq!(replays.len(), 6, "{got:?}");
    for (m, (id, &i)) in replays.iter().zip(ids.iter().zip(&dead)) {
        let a = attrs(m)?;
        assert_eq!(a.get("replayed-from"), Some(id), "{m:?}");
        assert_eq!(a.get("n"), Some(&i.to_string()), "{m:?}");
        let payload: Value = serde_json::from_str(m.payload())?;
        assert_eq!(payload, json!({ "i": i }));
    }

    // Purge four by id: gone, counted.
    let purge = json!({ "ids": &ids[6..10] });
    let purged = ok_json(&admin(&router, "DELETE", "/v1/dead-letters", Some(&purge))?)?;
    assert_eq!(purged, json!({ "purged": 4 }));
    let gone = admin(
        &router,
        "GET",
        &format!("/v1/dead-letters/{}", ids[7]),
        None,
    )?;
    assert_eq!(gone.status, 404);
    let left: Vec<String> = ids[10..].to_vec();
    assert_eq!(all_ids(&router, "", 100)?, left);
    let s = router.wait_scrape("purges counted", "switchyard_dead_letter", DEADLINE, |s| {
        s.count("switchyard_dead_letter_depth", &[]) == left.len() as u64
    })?;
    assert_eq!(s.count("switchyard_dead_letter_purged_total", &[]), 4);

    // The CLI: a table, JSON, an entry, and refusals with their exit codes.
    let table = dlq(&router, &["list", "--route", "readings"])?;
    assert_eq!(table.code(), Some(0), "{table:?}");
    assert!(table.stdout.starts_with("ID"), "{table:?}");
    assert!(
        left.iter().all(|id| table.stdout.contains(id.as_str())),
        "{table:?}"
    );
    let listed = dlq(&router, &["list", "--json", "--limit", "2", "--all"])?;
    assert_eq!(listed.code(), Some(0), "{listed:?}");
    let pages: Vec<Value> = listed
        .stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(pages.len(), left.len().div_ceil(2));
    let shown = dlq(&router, &["show", &left[0]])?;
    assert_eq!(shown.code(), Some(0), "{shown:?}");
    assert!(shown.stdout.contains("reason        verdict"), "{shown:?}");
    let unknown = dlq(&router, &["show", "999999999"])?;
    assert_eq!(unknown.code(), Some(1), "{unknown:?}");
    assert!(
        unknown.stderr.contains("DEAD_LETTER_NOT_FOUND"),
        "{unknown:?}"
    );
    let vague = dlq(&router, &["purge"])?;
    assert_eq!(vague.code(), Some(2), "{vague:?}");

    // Restart: the store holds exactly what it held.
    let before = ok_json(&admin(&router, "GET", "/v1/dead-letters", None)?)?;
    router.signal("TERM")?;
    let status = router.wait_exit(DEADLINE)?;
    ensure!(status.success(), "the router exited with {status}");
    let away = dlq(&router, &["list"])?;
    assert_eq!(away.code(), Some(1), "{away:?}");
    let router = Router::start(&config)?;
    let s = router.scrape()?;
    assert_eq!(
        s.count("switchyard_dead_letter_depth", &[]),
        left.len() as u64
    );
    let after = ok_json(&admin(&router, "GET", "/v1/dead-letters", None)?)?;
    assert_eq!(after, before);
    let shown = ok_json(&admin(
        &router,
        "GET",
        &format!("/v1/dead-letters/{}", left[0]),
        None,
    )?)?;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(shown["payload"].as_str().context("payload")?)?;
    assert_eq!(
        serde_json::from_slice::<Value>(&payload)?,
        json!({ "i": dead[10] })
    );

    // Purge the rest with the CLI.
    let all = dlq(&router, &["purge", "--all"])?;
    assert_eq!(all.code(), Some(0), "{all:?}");
    assert_eq!(all.stdout.trim(), format!("purged {}", left.len()));
    assert!(all_ids(&router, "", 100)?.is_empty());
    Ok(())
}
