//! Durable route queues on the real `switchyard` binary: HTTP publishers
//! get `202` only once a message is on disk, and `kill -9` of the router at
//! varied moments, ten times over, loses none of them; after the last
//! restart a PULL worker (pyzmq) gets every acknowledged message at least
//! once, the duplicates bounded by what the restarts found on disk.
//! `SWITCHYARD_SOAK_CYCLES` sets the number of kills (default 10);
//! `bench/run.py --suite soak` runs the kill tests with 100 and reads the
//! `soak:` line each prints.
//!
//! With a PUSH output the worker is away while the router is killed (the
//! backlog is on disk, waiting for it), so what is tested is the queue's
//! own guarantee; that a PUSH output answers a durable route only once it
//! wrote a message to a worker's socket is tested with a worker that
//! stalls (nothing it was not written is released). With a DEALER output a
//! REP service (pyzmq) is connected through every kill: a message counts
//! as taken only once its service replied, so what was in flight at a kill
//! is sent again after the restart.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use switchyard_tests::router::http::numbered_batch;
use switchyard_tests::router::peer::{Peer, PullOptions};
use switchyard_tests::router::{DEADLINE, Router, TempDir};

/// The PUSH output the kill tests deliver through.
const PUSH_OUTPUT: &str = r#"
[[output]]
name = "workers"
kind = "zmq-push"
bind = "tcp://127.0.0.1:0"
send_timeout = "60s"
"#;

/// A DEALER output connecting to a REP service bound at `endpoint`.
fn dealer_output(endpoint: &str) -> String {
    format!(
        r#"
[[output]]
name = "workers"
kind = "zmq-dealer"
connect = ["{endpoint}"]
"#
    )
}

fn config(data_dir: &std::path::Path, fsync: &str) -> String {
    config_with(data_dir, fsync, PUSH_OUTPUT)
}

/// A durable route `jobs` from HTTP input `api` to `output` (an output
/// named `workers`).
fn config_with(data_dir: &std::path::Path, fsync: &str, output: &str) -> String {
    format!(
        r#"
[router]
admin = "127.0.0.1:0"
shutdown_grace = "2s"
data_dir = "{}"

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"
{output}
[[route]]
name = "jobs"
match = "jobs.>"
to = ["workers"]
queue = {{ durable = true, capacity = 100000, max_bytes = "64MiB", fsync = "{fsync}" }}
"#,
        data_dir.display()
    )
}

/// Publishes numbered batches of 10 from `next` on until a request fails
/// (the router was killed); returns the numbers that got a `202`.
fn publish_until_gone(
    router: &Router,
    next: u64,
    accepted: Arc<Mutex<BTreeSet<u64>>>,
) -> Result<std::thread::JoinHandle<u64>> {
    let mut api = router.http("api")?;
    Ok(std::thread::spawn(move || {
        let mut n = next;
        loop {
            let Ok(resp) = api.post_json("/v1/publish", &numbered_batch("jobs.x", n, n + 10, 32))
            else {
                return n + 10;
            };
            if resp.status == 202 {
                accepted.lock().expect("lock").extend(n..n + 10);
            }
            n += 10;
        }
    }))
}

fn number(payload: &str) -> Option<u64> {
    payload.trim_end_matches('.').parse().ok()
}

/// Waits until route `jobs` is empty, then sends an end marker and returns
/// the numbers `worker` got before it (since it started), checking that
/// every one of `accepted` is among them.
fn deliver_all(router: &Router, worker: &mut Peer, accepted: &BTreeSet<u64>) -> Result<Vec<u64>> {
    let mut api = router.http("api")?;
    router.wait_scrape(
        "the backlog delivered",
        "switchyard_route",
        Duration::from_secs(120),
        |s| s.route("jobs").depth == 0,
    )?;
    let resp = api.post("/v1/publish/jobs.end", &[], b"end")?;
    ensure!(resp.status == 202, "marker: {}", resp.text());
    let mut got = worker.recv_until(Duration::from_secs(120), |m| m.payload() == "end")?;
    got.pop();
    let numbers: Vec<u64> = got.iter().filter_map(|m| number(m.payload())).collect();
    let unique: BTreeSet<u64> = numbers.iter().copied().collect();
    let lost: Vec<&u64> = accepted
        .iter()
        .filter(|n| !unique.contains(n))
        .take(10)
        .collect();
    ensure!(
        lost.is_empty(),
        "accepted but never delivered (first 10): {lost:?}"
    );
    Ok(numbers)
}

/// [`deliver_all`] to a PULL worker that connects now.
fn pull_all(router: &Router, accepted: &BTreeSet<u64>) -> Result<Vec<u64>> {
    let mut worker = Peer::pull(&router.output_endpoint("workers")?, PullOptions::default())?;
    deliver_all(router, &mut worker, accepted)
}

/// Kills per test: `SWITCHYARD_SOAK_CYCLES`, or 10.
fn cycles() -> Result<u64> {
    match std::env::var("SWITCHYARD_SOAK_CYCLES") {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .with_context(|| format!("SWITCHYARD_SOAK_CYCLES={v:?}: want a count above 0")),
        Err(_) => Ok(10),
    }
}

/// Where the kill tests deliver.
enum Worker {
    /// A PULL worker that connects after the last restart.
    Pull,
    /// A REP service, bound, that a DEALER output connects to through
    /// every kill.
    Rep(Peer),
}

fn survive_kills(fsync: &str, mut worker: Worker) -> Result<()> {
    let cycles = cycles()?;
    let data = TempDir::new()?;
    let output = match &worker {
        Worker::Pull => PUSH_OUTPUT.to_owned(),
        Worker::Rep(service) => dealer_output(service.endpoint()),
    };
    // A soak run's backlog outgrows the usual bounds (about 300 messages
    // a kill, 112 bytes each as the queue counts them): room for 500 a
    // kill, within the most a route takes.
    let capacity = (cycles * 500).clamp(100_000, 10_000_000);
    let max_bytes_mib = ((capacity * 256) >> 20).max(64);
    let config = config_with(data.path(), fsync, &output).replace(
        "capacity = 100000, max_bytes = \"64MiB\"",
        &format!("capacity = {capacity}, max_bytes = \"{max_bytes_mib}MiB\""),
    );
    ensure!(config.contains(&format!("capacity = {capacity},")));
    let accepted = Arc::new(Mutex::new(BTreeSet::new()));
    let mut next = 0;
    let mut recovered = 0.0;
    // Of those, the records already handed to the output when the router
    // died (in flight): what a restart sends again.
    let mut redelivered = 0.0;
    for cycle in 0..cycles {
        let mut router = Router::start(&config)?;
        let scrape = router.scrape()?;
        recovered += scrape.get(
            "switchyard_queue_recovered_records_total",
            &[("route", "jobs")],
        );
        redelivered += scrape.get("switchyard_route_redelivered_total", &[("route", "jobs")]);
        let publisher = publish_until_gone(&router, next, Arc::clone(&accepted))?;
        // Kill at a different moment each cycle: 30 to 300 messages in.
        let at = 30 * (1 + (cycle * 7) % 10);
        router.wait_scrape(
            &format!("{at} offered"),
            "switchyard_route",
            DEADLINE,
            |s| s.route("jobs").offered >= at,
        )?;
        router.signal("KILL")?;
        router.wait_exit(DEADLINE)?;
        next = publisher
            .join()
            .map_err(|_| anyhow::anyhow!("publisher panicked"))?;
    }
    let accepted = accepted.lock().expect("lock").clone();
    ensure!(
        accepted.len() as u64 >= cycles * 30,
        "too few accepted: {}",
        accepted.len()
    );

    // The worker comes back: everything acknowledged arrives.
    let router = Router::start(&config)?;
    let scrape = router.scrape()?;
    recovered += scrape.get(
        "switchyard_queue_recovered_records_total",
        &[("route", "jobs")],
    );
    redelivered += scrape.get("switchyard_route_redelivered_total", &[("route", "jobs")]);
    let numbers = match &mut worker {
        Worker::Pull => {
            let backlog = scrape.get("switchyard_route_queue_depth", &[("route", "jobs")]);
            ensure!(
                backlog as usize >= accepted.len(),
                "backlog {backlog} < accepted {}",
                accepted.len()
            );
            pull_all(&router, &accepted)?
        }
        Worker::Rep(service) => deliver_all(&router, service, &accepted)?,
    };
    let unique: BTreeSet<u64> = numbers.iter().copied().collect();
    let duplicates = numbers.len() - unique.len();
    // One line for the soak bench (bench/run.py --suite soak) to read.
    eprintln!(
        "soak: {}",
        serde_json::json!({
            "fsync": fsync,
            "output": output_kind(&worker),
            "cycles": cycles,
            "accepted": accepted.len(),
            "delivered": numbers.len(),
            "unique": unique.len(),
            "duplicates": duplicates,
            "recovered": recovered,
            "redelivered": redelivered,
        })
    );
    ensure!(
        duplicates as f64 <= recovered,
        "{duplicates} duplicates, more than the {recovered} records the restarts found"
    );
    let s = router.scrape()?;
    ensure!(
        s.get(
            "switchyard_route_dropped_total",
            &[("route", "jobs"), ("reason", "no_subscriber")]
        ) == 0.0
    );
    Ok(())
}

fn output_kind(worker: &Worker) -> &'static str {
    match worker {
        Worker::Pull => "zmq-push",
        Worker::Rep(_) => "zmq-dealer",
    }
}

#[test]
fn kill_9_ten_times_loses_no_acknowledged_message_batch_fsync() -> Result<()> {
    survive_kills("batch", Worker::Pull).context("fsync = batch")
}

#[test]
fn kill_9_ten_times_loses_no_acknowledged_message_always_fsync() -> Result<()> {
    survive_kills("always", Worker::Pull).context("fsync = always")
}

#[test]
fn kill_9_ten_times_with_a_rep_service_replying_throughout_loses_no_acknowledged_message()
-> Result<()> {
    let service = Peer::rep("tcp://127.0.0.1:0", "svc", true)?;
    survive_kills("batch", Worker::Rep(service)).context("zmq-dealer, fsync = batch")
}

#[test]
fn a_second_router_on_the_same_data_dir_refuses_to_start() -> Result<()> {
    let data = TempDir::new()?;
    let config = config(data.path(), "batch");
    let _first = Router::start(&config)?;
    let err = Router::start(&config).expect_err("the data_dir is locked");
    ensure!(
        format!("{err:?}").contains("in use by another router"),
        "{err:?}"
    );
    Ok(())
}

/// A 16 MiB tmpfs mounted for one test, unmounted when dropped. CI runs as
/// root; elsewhere run the suite as root (`sudo ./dev test`).
struct SmallDisk {
    path: std::path::PathBuf,
    _dir: TempDir,
}

impl SmallDisk {
    fn mount() -> Result<Self> {
        let dir = TempDir::new()?;
        let path = dir.path().join("disk");
        std::fs::create_dir_all(&path)?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
            .arg(&path)
            .output()
            .context("run mount")?;
        ensure!(
            out.status.success(),
            "mounting a 16 MiB tmpfs needs root (CI runs as root; locally: sudo ./dev test): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Self { path, _dir: dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

#[test]
fn a_full_disk_answers_503_and_the_route_resumes_when_space_returns() -> Result<()> {
    let disk = SmallDisk::mount()?;
    let data = disk.path.join("data");
    // Leave about 3 MiB for the queue.
    let filler = disk.path.join("filler");
    std::fs::write(&filler, vec![0u8; 13 << 20]).context("fill the disk")?;
    let config = config(&data, "always").replace(
        "fsync = \"always\" }",
        "fsync = \"always\", block_timeout = \"300ms\" }",
    );
    let router = Router::start(&config)?;
    let mut api = router.http("api")?;

    // Publish 1 KiB messages until the disk is full.
    let mut accepted = BTreeSet::new();
    let mut next = 0u64;
    let full = loop {
        ensure!(next < 100_000, "the disk never filled");
        let resp = api.post_json(
            "/v1/publish",
            &numbered_batch("jobs.x", next, next + 10, 1024),
        )?;
        match resp.status {
            202 => accepted.extend(next..next + 10),
            503 => break resp,
            s => anyhow::bail!("unexpected {s}: {}", resp.text()),
        }
        next += 10;
    };
    next += 10;
    assert_eq!(
        full.error_code().as_deref(),
        Some("BACKPRESSURE"),
        "{}",
        full.text()
    );
    assert!(full.header("retry-after").is_some());
    let s = router.scrape()?;
    ensure!(
        s.get(
            "switchyard_input_rejected_total",
            &[("input", "api"), ("reason", "disk_full")]
        ) > 0.0,
        "{}",
        s.show("switchyard_input_rejected_total")
    );
    // Still full: refused again, the router alive.
    let again = api.post_json(
        "/v1/publish",
        &numbered_batch("jobs.x", next, next + 10, 1024),
    )?;
    assert_eq!(again.status, 503, "{}", again.text());
    next += 10;

    // Space returns: the route resumes by itself.
    std::fs::remove_file(&filler)?;
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let resp = api.post_json(
            "/v1/publish",
            &numbered_batch("jobs.x", next, next + 10, 1024),
        )?;
        if resp.status == 202 {
            accepted.extend(next..next + 10);
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "never resumed: {}",
            resp.text()
        );
        next += 10;
    }

    // Everything accepted, before and after, is delivered.
    pull_all(&router, &accepted)?;
    drop(router);
    Ok(())
}

#[test]
fn a_damaged_segment_costs_only_its_damaged_records_and_is_counted() -> Result<()> {
    let data = TempDir::new()?;
    let config = config(data.path(), "always");
    let mut router = Router::start(&config)?;
    let mut api = router.http("api")?;
    for start in (0..100).step_by(10) {
        let resp = api.post_json(
            "/v1/publish",
            &numbered_batch("jobs.x", start, start + 10, 200),
        )?;
        ensure!(resp.status == 202, "{}", resp.text());
    }
    // A clean stop: the backlog stays on disk (no worker ever came).
    router.signal("TERM")?;
    router.wait_exit(DEADLINE)?;
    let dir = data.path().join("queues").join("jobs");
    let segment = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .context("a segment file")?;
    let mut bytes = std::fs::read(&segment)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&segment, bytes)?;

    let router = Router::start(&config)?;
    let s = router.scrape()?;
    let recovered = s.get(
        "switchyard_queue_recovered_records_total",
        &[("route", "jobs")],
    );
    ensure!(recovered == 100.0, "recovered {recovered}");
    ensure!(
        s.get(
            "switchyard_queue_corrupt_records_total",
            &[("route", "jobs")]
        ) >= 1.0
    );
    let delivered: BTreeSet<u64> = pull_all(&router, &BTreeSet::new())?.into_iter().collect();
    let s = router.scrape()?;
    let r = s.route("jobs");
    let corrupt = s.get(
        "switchyard_route_dropped_total",
        &[("route", "jobs"), ("reason", "corrupt")],
    );
    ensure!(
        (1.0..=2.0).contains(&corrupt),
        "one flipped byte loses one record (two if it hit a boundary): {corrupt}"
    );
    ensure!(
        delivered.len() as f64 == 100.0 - corrupt,
        "delivered {} of 100, {corrupt} corrupt",
        delivered.len()
    );
    // The marker was offered in this run; the 100 were recovered.
    ensure!(
        r.offered + 100 == r.delivered + r.dropped + r.depth,
        "offered + recovered = delivered + dropped + depth: {r:?}"
    );
    Ok(())
}

#[test]
fn a_reload_changes_fsync_live_but_refuses_to_drop_a_durable_backlog() -> Result<()> {
    use switchyard_tests::router::reload::post;
    let data = TempDir::new()?;
    let config = config(data.path(), "batch");
    let router = Router::start(&config)?;

    let always = config.replace("fsync = \"batch\"", "fsync = \"always\"");
    let resp = post(&router, "", Some(&always))?;
    ensure!(resp.status == 200, "{} {}", resp.status, resp.text());
    ensure!(resp.text().contains("queue.fsync"), "{}", resp.text());

    // No worker is connected: what is published stays queued on disk.
    let mut api = router.http("api")?;
    for n in 0..3 {
        let resp = api.post("/v1/publish/jobs.x", &[], format!("held-{n}").as_bytes())?;
        ensure!(resp.status == 202, "{}", resp.text());
    }
    let memory = always
        .replace("durable = true, ", "")
        .replace(", fsync = \"always\"", ", when_full = \"block\"");
    let removed = always.replace("[[route]]\nname = \"jobs\"", "[[route]]\nname = \"jobs2\"");
    for (edit, why) in [
        (&memory, "turns this route's queue into a memory one"),
        (&removed, "removes (or renames) this route"),
    ] {
        let resp = post(&router, "", Some(edit))?;
        ensure!(
            resp.status != 200,
            "a reload that {why} was applied: {}",
            resp.text()
        );
        ensure!(
            resp.text().contains(why) && resp.text().contains("holds 3 messages"),
            "{} {}",
            resp.status,
            resp.text()
        );
    }
    // Still serving the durable route.
    let resp = api.post("/v1/publish/jobs.x", &[], b"still")?;
    ensure!(resp.status == 202, "{}", resp.text());

    // Forced, the route goes; its backlog stays on disk and is there again
    // when the route comes back (once the old queue has closed).
    let resp = post(&router, "?force=true", Some(&removed))?;
    ensure!(resp.status == 200, "{} {}", resp.status, resp.text());
    switchyard_tests::router::until("the route to come back", Duration::from_secs(60), || {
        let resp = post(&router, "", Some(&always)).ok()?;
        (resp.status == 200).then_some(())
    })?;
    router.wait_metric("switchyard_route_queue_depth", &[("route", "jobs")], 4.0)?;
    Ok(())
}

/// A PUSH output answers a durable route for a message only once its bytes
/// were written to a worker's socket: with the worker stalled and room
/// for everything in the output's socket queue, the route releases no more
/// than the socket wrote (the rest stays on disk, so a crash would not
/// lose it); once the worker reads, each message arrives once. 32 MiB, so
/// most of it cannot hide in the kernel's socket buffers (Linux grows a
/// send buffer to 4 MiB by default, `net.ipv4.tcp_wmem`).
#[test]
fn a_push_output_releases_nothing_it_has_not_written_to_a_worker() -> Result<()> {
    const N: u64 = 2000;
    const SIZE: usize = 16 * 1024;
    let data = TempDir::new()?;
    let output = r#"
[[output]]
name = "workers"
kind = "zmq-push"
bind = "tcp://127.0.0.1:0"
send_hwm = 100000
send_hwm_bytes = "64MiB"
send_timeout = "60s"
"#;
    let router = Router::start(&config_with(data.path(), "batch", output))?;
    let mut worker = Peer::pull(&router.output_endpoint("workers")?, PullOptions::stalled())?;
    router.wait_metric("switchyard_zmtp_peers", &[("socket", "workers")], 1.0)?;
    let mut api = router.http("api")?;
    for n in (0..N).step_by(50) {
        let resp = api.post_json("/v1/publish", &numbered_batch("jobs.x", n, n + 50, SIZE))?;
        ensure!(resp.status == 202, "publish {n}: {}", resp.text());
    }
    // The stall holds: the route's counts and the socket's writes still
    // over two scrapes in a row, after the socket wrote something.
    let written = |s: &switchyard_tests::router::Scrape| {
        s.get(
            "switchyard_zmtp_messages_total",
            &[("socket", "workers"), ("direction", "out")],
        )
    };
    let mut last = None;
    let s = router.wait_scrape("the worker stalled", "switchyard_", DEADLINE, |s| {
        let now = (s.route("jobs"), written(s) as u64);
        let same = last == Some(now);
        last = Some(now);
        same && now.0.offered == N && now.1 > 0
    })?;
    let (depth, out) = (s.route("jobs").depth, written(&s) as u64);
    ensure!(
        depth + out >= N,
        "released more than the socket wrote: {depth} still held, {out} written, of {N}"
    );
    worker.go()?;
    let got = worker.recv_n(N as usize, DEADLINE)?;
    let numbers: BTreeSet<u64> = got.iter().filter_map(|m| number(m.payload())).collect();
    ensure!(
        numbers.len() as u64 == N,
        "{} distinct of {N}",
        numbers.len()
    );
    router.wait_scrape("route jobs drained", "switchyard_route", DEADLINE, |s| {
        s.route("jobs").depth == 0
    })?;
    Ok(())
}
