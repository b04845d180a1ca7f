//! Hot reload, end to end: the ways editors save a file (in place, temp
//! file renamed over, delete and create, a truncated half-write, 50 saves
//! in a second), SIGHUP, dry runs, restart-required and refused changes,
//! and a removed route that cannot drain. Every wait has a deadline and
//! polls a fact; the only pauses are the deliberate spacing of writes.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use switchyard_tests::router::http::Client;
use switchyard_tests::router::peer::Peer;
use switchyard_tests::router::plugins::stamp_builds;
use switchyard_tests::router::reload::{
    self, HEAD, VERSIONS, names_file_and_line, post, route, route_names, routes, save_by_rename,
    save_in_place, sha256_hex, stamp_entry, status, wait_attempts,
};
use switchyard_tests::router::{DEADLINE, Router, TempDir, until};

/// A config of [`HEAD`] and plain routes `(name, pattern)` to `spare_a`,
/// with a note line that makes each save's content differ.
fn plain(note: &str, routes: &[(&str, &str)]) -> String {
    let mut text = format!("{HEAD}\n# {note}\n");
    for (name, pattern) in routes {
        text += &route(name, pattern, &[], &["spare_a"], "");
    }
    text
}

/// Waits until a reload after generation `after` succeeded and the routes
/// in force are exactly `names`; returns the generation then.
fn wait_applied(router: &Router, after: u64, names: &[&str]) -> Result<u64> {
    let want: BTreeSet<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut last = None;
    let found = until(&format!("routes {want:?} applied"), DEADLINE, || {
        let st = status(router).ok()?;
        let have: BTreeSet<String> = route_names(router).ok()?.into_iter().collect();
        let generation = st["config_generation"].as_u64()?;
        let done = generation > after && st["reload"]["last_result"] == "success" && have == want;
        last = Some((generation, have, st["reload"].clone()));
        done.then_some(generation)
    });
    found.map_err(|e| e.context(format!("last seen: {last:?}")))
}

/// The generation in force.
fn generation(router: &Router) -> Result<u64> {
    status(router)?["config_generation"]
        .as_u64()
        .context("config_generation")
}

/// Writing in place, writing a temporary file and renaming it over,
/// deleting then creating: each ends with the new content in force.
#[test]
fn each_editor_save_ends_with_the_new_content_applied() -> Result<()> {
    let router = Router::start(&plain("start", &[("a", "a.>")]))?;
    let path = router.config_path().to_owned();

    let g = generation(&router)?;
    save_in_place(
        &path,
        plain("in place", &[("a", "a.>"), ("in-place", "p.>")]).as_bytes(),
    )?;
    let g = wait_applied(&router, g, &["a", "in-place"])?;

    save_by_rename(
        &path,
        plain("renamed", &[("a", "a.>"), ("renamed", "r.>")]).as_bytes(),
    )?;
    let g = wait_applied(&router, g, &["a", "renamed"])?;

    std::fs::remove_file(&path)?;
    std::fs::write(
        &path,
        plain("recreated", &[("a", "a.>"), ("recreated", "c.>")]),
    )?;
    wait_applied(&router, g, &["a", "recreated"])?;
    Ok(())
}

/// A save cut in the middle of a line (not TOML), the rest written
/// 300 ms later (past the debounce, so the router may well see the half
/// file and refuse it): the reload ends on the full content.
#[test]
fn a_truncated_half_write_ends_on_the_full_content() -> Result<()> {
    let router = Router::start(&plain("start", &[("a", "a.>")]))?;
    let path = router.config_path().to_owned();
    let g = generation(&router)?;
    let full = plain("completed", &[("a", "a.>"), ("completed", "done.>")]);
    let cut = full.find("\"completed\"").context("the route name")? + 4;
    save_in_place(&path, &full.as_bytes()[..cut])?;
    // Deliberate spacing: the second half comes "a moment later".
    std::thread::sleep(Duration::from_millis(300));
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&path)?;
        f.write_all(&full.as_bytes()[cut..])?;
        f.sync_all()?;
    }
    wait_applied(&router, g, &["a", "completed"])?;
    ensure!(std::fs::read_to_string(&path)? == full);
    Ok(())
}

/// 50 saves within one second (each a different content, 20 ms apart)
/// are coalesced into a few reloads (the debounce restarts on each save;
/// the 1 s cap lets one through mid-burst), the last content in force.
#[test]
fn fifty_saves_within_a_second_are_coalesced() -> Result<()> {
    let router = Router::start(&plain("start", &[("a", "a.>")]))?;
    let path = router.config_path().to_owned();
    let before = reload::reloads(&router)?;
    for k in 0..50 {
        let name = format!("save-{k}");
        save_by_rename(
            &path,
            plain(&name, &[("a", "a.>"), (&name, "s.>")]).as_bytes(),
        )?;
        // Deliberate spacing: 50 saves over one second.
        std::thread::sleep(Duration::from_millis(20));
    }
    let g = wait_applied(&router, before.generation, &["a", "save-49"])?;
    let after = reload::reloads(&router)?;
    ensure!(
        g - before.generation <= 5 && after.attempts() - before.attempts() <= 5,
        "50 saves made {} reloads ({before:?} -> {after:?})",
        after.attempts() - before.attempts()
    );
    Ok(())
}

/// SIGHUP reloads from the file: a config posted through the admin
/// endpoint (the file untouched, so the watcher stays quiet) is replaced
/// by the file's again.
#[test]
fn sighup_reloads_the_file() -> Result<()> {
    let router = Router::start(&plain("file", &[("a", "a.>")]))?;
    let posted = post(
        &router,
        "",
        Some(&plain("posted", &[("a", "a.>"), ("posted", "p.>")])),
    )?;
    ensure!(posted.status == 200, "{} {}", posted.status, posted.text());
    ensure!(route_names(&router)?.len() == 2);
    let before = reload::reloads(&router)?;
    router.signal("HUP")?;
    let after = wait_attempts(&router, before.attempts() + 1)?;
    ensure!(
        after.success == before.success + 1 && after.generation == before.generation + 1,
        "{before:?} -> {after:?}"
    );
    ensure!(
        route_names(&router)? == ["a"],
        "{:?}",
        route_names(&router)?
    );
    router.wait_log("a reload triggered by the signal", DEADLINE, |v| {
        switchyard_tests::router::message(v) == Some("reloading the config")
            && v["fields"]["trigger"] == "Signal"
    })?;
    Ok(())
}

/// `POST /v1/reload?dry_run=true` with a config text shows the diff
/// (routes added, removed, changed; the plugin changed) and applies
/// nothing; a broken text is refused the same way, uncounted.
#[test]
fn a_dry_run_shows_the_diff_and_applies_nothing() -> Result<()> {
    let builds = stamp_builds(&VERSIONS[..2])?;
    let dir = TempDir::new()?;
    let v1 = dir.path().join("stamp-v1.wasm");
    let v2 = dir.path().join("stamp-v2.wasm");
    std::fs::copy(&builds[0], &v1)?;
    std::fs::copy(&builds[1], &v2)?;
    let with = |stamp: &Path, routes: &[(&str, &str, &[&str])]| {
        let mut text = format!("{HEAD}{}", stamp_entry(stamp));
        for (name, pattern, filters) in routes {
            text += &route(name, pattern, filters, &["spare_a"], "");
        }
        text
    };
    let running = with(&v1, &[("r-a", "a.>", &["stamp"]), ("r-b", "b.>", &[])]);
    let router = Router::start(&running)?;
    let before = reload::reloads(&router)?;
    let routes_before = routes(&router)?;

    let next = with(&v2, &[("r-a", "a.x.>", &["stamp"]), ("r-c", "c.>", &[])]);
    let resp = post(&router, "?dry_run=true", Some(&next))?;
    ensure!(resp.status == 200, "{} {}", resp.status, resp.text());
    let report = resp.json()?;
    ensure!(
        report["dry_run"] == true && report["applied"].is_null(),
        "{report}"
    );
    ensure!(report["generation"] == 1, "{report}");
    let diff = &report["diff"];
    ensure!(
        diff["routes"]["added"] == serde_json::json!(["r-c"]),
        "{diff}"
    );
    ensure!(
        diff["routes"]["removed"] == serde_json::json!(["r-b"]),
        "{diff}"
    );
    ensure!(
        diff["routes"]["changed"] == serde_json::json!([{"name": "r-a", "fields": ["match"]}]),
        "{diff}"
    );
    let plugins = diff["plugins"]["changed"]
        .as_array()
        .context("plugins.changed")?;
    ensure!(
        plugins.len() == 1
            && plugins[0]["name"] == "stamp"
            && plugins[0]["fields"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "path")),
        "{diff}"
    );
    ensure!(diff["restart_required"] == serde_json::json!([]), "{diff}");

    let broken = post(&router, "?dry_run=true", Some("[[route]\n"))?;
    ensure!(broken.status == 400, "{} {}", broken.status, broken.text());
    ensure!(
        names_file_and_line(&broken.text(), router.config_path()),
        "{}",
        broken.text()
    );

    // Nothing applied, nothing counted.
    ensure!(reload::reloads(&router)? == before);
    ensure!(generation(&router)? == 1);
    ensure!(
        routes(&router)?
            .iter()
            .map(|r| (&r["name"], &r["match"]))
            .eq(routes_before.iter().map(|r| (&r["name"], &r["match"])))
    );
    let plugin = reload::plugin(&router, "stamp")?;
    ensure!(
        plugin["sha256"] == sha256_hex(&std::fs::read(&v1)?),
        "{plugin}"
    );
    Ok(())
}

/// Inputs and outputs change live. One reload changes the HTTP input `api`
/// (rebuilt: it binds port 0, so it comes back on a new port), adds the
/// input `api2`, adds the output `extra` and a route to it, and changes a
/// route; nothing needs a restart. A subscriber on `extra` then receives
/// what `api2` publishes, the rebuilt `api` takes messages, the old `api`
/// port no longer answers, and a second reload removing `api2` and
/// `extra` stops and closes them. A `[router]` key other than the name is
/// still reported as needing a restart.
#[test]
fn inputs_and_outputs_change_live() -> Result<()> {
    let router = Router::start(&plain("start", &[("a", "a.>")]))?;
    let old_api = router.input("api")?;
    let base = plain("bigger body", &[("a", "a.b.>")])
        .replace("max_body = \"4MiB\"", "max_body = \"8MiB\"");
    ensure!(base.contains("8MiB"));
    let grown = format!(
        "{base}\n[[output]]\nname = \"extra\"\nkind = \"zmq-pub\"\nbind = \"tcp://127.0.0.1:0\"\n{}\n[[input]]\nname = \"api2\"\nkind = \"http\"\nlisten = \"127.0.0.1:0\"\n",
        route("x", "x.>", &[], &["extra"], "")
    );
    let resp = post(&router, "", Some(&grown))?;
    ensure!(resp.status == 200, "{} {}", resp.status, resp.text());
    let report = resp.json()?;
    let diff = &report["diff"];
    ensure!(
        diff["restart_required"] == serde_json::json!([])
            && diff["inputs"]["changed"][0]["name"] == "api"
            && diff["inputs"]["added"] == serde_json::json!(["api2"])
            && diff["outputs"]["added"] == serde_json::json!(["extra"])
            && report["warnings"] == serde_json::json!([]),
        "{report}"
    );
    let addr = |section: &str, name: &str| -> Result<std::net::SocketAddr> {
        report["bound"][section][name]
            .as_str()
            .with_context(|| format!("{section} {name} bound in {report}"))?
            .parse()
            .context("an address")
    };
    let (api, api2, extra) = (
        addr("inputs", "api")?,
        addr("inputs", "api2")?,
        addr("outputs", "extra")?,
    );
    ensure!(api != old_api, "api was rebuilt on a new port");
    ensure!(route_names(&router)? == ["a", "x"]);

    // The new output delivers what the new input takes; a PUB drops what
    // comes before the subscription reaches it, so publish until one lands.
    let mut sub = Peer::sub(&format!("tcp://{extra}"), &["x."])?;
    let mut api2_client = Client::new(api2);
    let got = until("a message through api2 and extra", DEADLINE, || {
        let sent = api2_client.post("/v1/publish/x.1", &[], b"hello").ok()?;
        if sent.status != 202 {
            return None;
        }
        sub.recv_timeout(Duration::from_millis(50))
    })?;
    ensure!(got.topic() == "x.1" && got.payload() == "hello", "{got:?}");
    // The rebuilt api takes messages; the old port is gone.
    let published = Client::new(api).post("/v1/publish/a.b.c", &[], b"x")?;
    ensure!(published.status == 202, "{}", published.text());
    ensure!(
        Client::new(old_api)
            .post("/v1/publish/a.b.c", &[], b"x")
            .is_err(),
        "the old api port still answers"
    );

    // Removing them stops the input and closes the output.
    let resp = post(&router, "", Some(&base))?;
    ensure!(resp.status == 200, "{} {}", resp.status, resp.text());
    let report = resp.json()?;
    ensure!(
        report["diff"]["inputs"]["removed"] == serde_json::json!(["api2"])
            && report["diff"]["outputs"]["removed"] == serde_json::json!(["extra"]),
        "{report}"
    );
    until("api2 stops listening", DEADLINE, || {
        Client::new(api2)
            .post("/v1/publish/x.1", &[], b"x")
            .is_err()
            .then_some(())
    })?;
    ensure!(route_names(&router)? == ["a"]);

    // [router] keys other than the name still need a restart.
    let moved_admin = base.replace("shutdown_grace = \"1s\"", "shutdown_grace = \"2s\"");
    ensure!(moved_admin != base);
    let resp = post(&router, "", Some(&moved_admin))?;
    ensure!(resp.status == 200, "{} {}", resp.status, resp.text());
    let st = status(&router)?;
    ensure!(
        st["reload"]["restart_required"] == serde_json::json!(["router.shutdown_grace"]),
        "{st}"
    );
    Ok(())
}

/// A changed output that keeps its fixed address gives it up and binds it
/// again: its subscriber (libzmq, which reconnects by itself) receives
/// again after the reload, and so does an input changed on a fixed port.
#[test]
fn a_changed_output_and_input_on_fixed_ports_bind_them_again() -> Result<()> {
    let free = || -> Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let (out_port, in_port) = (free()?, free()?);
    let config = |hwm: u32, max_body: &str| {
        format!(
            "{}\n[[output]]\nname = \"fixed\"\nkind = \"zmq-pub\"\nbind = \"tcp://127.0.0.1:{out_port}\"\nsend_hwm = {hwm}\n\n[[input]]\nname = \"fixed_in\"\nkind = \"http\"\nlisten = \"127.0.0.1:{in_port}\"\nmax_body = \"{max_body}\"\n{}",
            plain("fixed ports", &[("a", "a.>")]),
            route("f", "f.>", &[], &["fixed"], "")
        )
    };
    let router = Router::start(&config(1000, "1MiB"))?;
    let input = std::net::SocketAddr::from(([127, 0, 0, 1], in_port));
    let mut sub = Peer::sub(&format!("tcp://127.0.0.1:{out_port}"), &["f."])?;
    let mut receive = |what: &str, payload: &str| -> Result<()> {
        let got = until(what, DEADLINE, || {
            let sent = Client::new(input)
                .post("/v1/publish/f.1", &[], payload.as_bytes())
                .ok()?;
            if sent.status != 202 {
                return None;
            }
            sub.recv_timeout(Duration::from_millis(50))
                .filter(|m| m.payload() == payload)
        })?;
        ensure!(got.topic() == "f.1", "{got:?}");
        Ok(())
    };
    receive("a message before the reload", "before")?;
    let resp = post(&router, "", Some(&config(2000, "2MiB")))?;
    ensure!(resp.status == 200, "{} {}", resp.status, resp.text());
    let report = resp.json()?;
    ensure!(
        report["diff"]["outputs"]["changed"][0]["name"] == "fixed"
            && report["diff"]["inputs"]["changed"][0]["name"] == "fixed_in"
            && report["warnings"] == serde_json::json!([])
            && report["bound"]["outputs"]["fixed"] == format!("127.0.0.1:{out_port}").as_str()
            && report["bound"]["inputs"]["fixed_in"] == format!("127.0.0.1:{in_port}").as_str(),
        "{report}"
    );
    receive("a message after the reload", "after")?;
    Ok(())
}

/// A removed route whose output has no worker (its messages stuck: the
/// output waits up to 30 s for one) does not hold the reload up: the
/// reload answers while the route still holds its messages, and each of
/// them ends up counted (`route_removed` once the 3 s drain time is up).
#[test]
fn removing_a_stuck_route_never_blocks_the_reload() -> Result<()> {
    let head = |note: &str| {
        format!(
            "{}\n# {note}\n[[output]]\nname = \"nowhere\"\nkind = \"zmq-push\"\nbind = \"tcp://127.0.0.1:0\"\nsend_timeout = \"30s\"\n{}",
            HEAD.replace("shutdown_grace = \"1s\"", "shutdown_grace = \"3s\""),
            route("a", "a.>", &[], &["spare_a"], "")
        )
    };
    let config = head("with orphan")
        + &route(
            "orphan",
            "orphan.>",
            &[],
            &["nowhere"],
            "queue = { capacity = 100, when_full = \"drop_newest\" }",
        );
    let router = Router::start(&config)?;
    let mut api = router.http("api")?;
    let batch = switchyard_tests::router::http::numbered_batch("orphan.x", 0, 20, 8);
    let resp = api.post_json("/v1/publish", &batch)?;
    ensure!(
        resp.status == 202 && resp.ids()?.len() == 20,
        "{}",
        resp.text()
    );
    router.wait_scrape("orphan offered 20", "route", DEADLINE, |s| {
        s.route("orphan").offered == 20
    })?;

    let resp = post(&router, "", Some(&head("without orphan")))?;
    ensure!(resp.status == 200, "{} {}", resp.status, resp.text());
    let report = resp.json()?;
    ensure!(
        report["applied"]["removed"] == serde_json::json!(["orphan"]),
        "{report}"
    );
    let now = router.scrape()?.route("orphan");
    ensure!(
        now.left() < 20,
        "the reload answered only after the drain: {now:?}"
    );

    let s = router.wait_scrape("orphan drained or counted", "route", DEADLINE, |s| {
        let r = s.route("orphan");
        r.depth == 0 && r.left() == 20
    })?;
    let r = s.route("orphan");
    let removed = s.count(
        "switchyard_route_dropped_total",
        &[("route", "orphan"), ("reason", "route_removed")],
    );
    ensure!(r.conserved() && r.delivered == 0, "{r:?}");
    ensure!(
        removed + r.no_subscriber == 20 && removed > 0,
        "{r:?}, route_removed {removed}"
    );
    ensure!(route_names(&router)? == ["a"]);
    Ok(())
}
