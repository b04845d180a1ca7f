//! TLS on the HTTP listeners end to end: the real `switchyard` binary,
//! certificates made by `openssl` per test, Python's `ssl` (through
//! `requests`, `tests/peers/https_client.py`) and `openssl s_client` as the
//! clients.
//!
//! - HTTPS publish; mTLS with the principal from the client certificate's
//!   subject, its own topics only; no client certificate refused at the
//!   handshake;
//! - plain HTTP to the TLS port and a client that never finishes its
//!   handshake (slowloris) each cut and counted as `tls_handshake`;
//!   TLS 1.1 refused, TLS 1.2 and 1.3 served, ALPN `http/1.1`;
//! - a certificate replaced while a keep-alive connection stays open: the
//!   open connection goes on, new ones get the new certificate; a broken
//!   pair keeps the one in force (the reload refused and counted).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use switchyard_tests::nats::Certificates;
use switchyard_tests::router::{DEADLINE, Router, until};

/// A `https_client.py` process.
struct Https {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Https {
    fn start(ca: &str, client: Option<(&str, &str)>) -> Result<Self> {
        let mut cmd = Command::new("python3");
        cmd.arg("-u")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/peers/https_client.py"
            ))
            .args(["--ca", ca]);
        if let Some((cert, key)) = client {
            cmd.args(["--cert", cert, "--key", key]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("python3 is not installed: run `./dev setup`")?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            lines,
        })
    }

    fn say(&mut self, line: &str) -> Result<String> {
        writeln!(self.stdin, "{line}")?;
        let answer = self.lines.recv_timeout(DEADLINE).with_context(|| {
            format!("no answer to {line:?} (is `requests` installed? run `./dev setup`)")
        })?;
        if answer.contains("No module named") {
            bail!("{answer}: run `./dev setup`");
        }
        Ok(answer)
    }

    fn post(&mut self, url: &str) -> Result<String> {
        self.say(&format!("POST {url}"))
    }
}

impl Drop for Https {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(certs: &Certificates, handshake_timeout: &str) -> String {
    let p = |n: &str| certs.path(n).display().to_string();
    format!(
        r#"
[router]
admin = "127.0.0.1:0"
admin_auth = ["anonymous"]
metrics_open = true

[[auth]]
name = "certs"
kind = "mtls"

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"
auth = ["anonymous"]
tls = {{ cert = {cert:?}, key = {key:?}, handshake_timeout = "{handshake_timeout}" }}

[[input]]
name = "devices"
kind = "http"
listen = "127.0.0.1:0"
auth = ["certs"]
tls = {{ cert = {cert:?}, key = {key:?}, client_ca = {ca:?} }}

[[output]]
name = "out"
kind = "blackhole"

[[route]]
name = "r"
match = ">"
to = ["out"]

[[acl]]
principals = ["anonymous"]
publish = ["public.>"]

[[acl]]
principals = ["*"]
publish = ["devices.{{principal}}.>"]
"#,
        cert = p("server.pem"),
        key = p("server.key"),
        ca = p("ca.pem"),
    )
}

fn handshake_failures(router: &Router, listener: &str) -> Result<f64> {
    Ok(router
        .scrape()?
        .value(
            "switchyard_auth_failures_total",
            &[("listener", listener), ("reason", "tls_handshake")],
        )
        .unwrap_or(0.0))
}

/// `openssl s_client` against `addr` with `args`; its combined output and
/// whether it exited 0.
fn s_client(addr: std::net::SocketAddr, ca: &str, args: &[&str]) -> Result<(bool, String)> {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-CAfile", ca])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("openssl is not installed: run `./dev setup`")?;
    // Closing stdin ends the session once the handshake is done.
    drop(child.stdin.take());
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait()? {
            let mut out = String::new();
            child
                .stdout
                .take()
                .context("stdout")?
                .read_to_string(&mut out)?;
            child
                .stderr
                .take()
                .context("stderr")?
                .read_to_string(&mut out)?;
            return Ok((status.success(), out));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("openssl s_client did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn https_and_mtls_publish_and_bad_handshakes_are_cut() -> Result<()> {
    let certs = Certificates::new()?;
    let router = Router::start(&config(&certs, "500ms"))?;
    let ca = certs.path("ca.pem").display().to_string();
    let api = router.input("api")?;
    let devices = router.input("devices")?;

    let mut client = Https::start(&ca, None)?;
    let answer = client.post(&format!(
        "https://127.0.0.1:{}/v1/publish/public.news",
        api.port()
    ))?;
    ensure!(answer == "202", "HTTPS publish: {answer}");

    // mTLS: the certificate's subject (CN=client) is the principal.
    let (cert, key) = (
        certs.path("client.pem").display().to_string(),
        certs.path("client.key").display().to_string(),
    );
    let mut device = Https::start(&ca, Some((&cert, &key)))?;
    let base = format!("https://127.0.0.1:{}/v1/publish", devices.port());
    ensure!(device.post(&format!("{base}/devices.client.t"))? == "202");
    ensure!(device.post(&format!("{base}/devices.other.t"))? == "403");
    // Without a client certificate: refused at the handshake, counted.
    let before = handshake_failures(&router, "devices")?;
    let answer = client.post(&format!("{base}/devices.client.t"))?;
    ensure!(answer.starts_with("ERR"), "no client certificate: {answer}");
    router.wait_scrape("the refused handshake", "auth_failures", DEADLINE, |s| {
        s.value(
            "switchyard_auth_failures_total",
            &[("listener", "devices"), ("reason", "tls_handshake")],
        ) > Some(before)
    })?;

    // Plain HTTP to the TLS port: cut, counted.
    let before = handshake_failures(&router, "api")?;
    let mut plain = std::net::TcpStream::connect(api)?;
    plain.set_read_timeout(Some(DEADLINE))?;
    plain.write_all(
        b"POST /v1/publish/public.x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
    )?;
    let mut buf = [0u8; 256];
    let n = plain.read(&mut buf).unwrap_or(0);
    ensure!(
        !String::from_utf8_lossy(&buf[..n]).contains("202"),
        "plain HTTP was served on the TLS port"
    );
    until("plain HTTP counted", DEADLINE, || {
        (handshake_failures(&router, "api").ok()? > before).then_some(())
    })?;

    // A client that connects and never sends its ClientHello: cut at the
    // handshake timeout (500 ms here), counted.
    let before = handshake_failures(&router, "api")?;
    let mut slow = std::net::TcpStream::connect(api)?;
    slow.set_read_timeout(Some(DEADLINE))?;
    let n = slow
        .read(&mut buf)
        .context("the slow client is cut, not left hanging")?;
    ensure!(n == 0, "the server closes the slow connection");
    ensure!(handshake_failures(&router, "api")? > before);

    // Protocol versions and ALPN.
    let (ok, out) = s_client(api, &ca, &["-tls1_3", "-alpn", "http/1.1"])?;
    ensure!(
        ok && out.contains("ALPN protocol: http/1.1"),
        "TLS 1.3 + ALPN:\n{out}"
    );
    let (ok, out) = s_client(api, &ca, &["-tls1_2"])?;
    ensure!(ok && out.contains("TLSv1.2"), "TLS 1.2:\n{out}");
    let (ok, _) = s_client(api, &ca, &["-tls1_1"])?;
    ensure!(!ok, "TLS 1.1 must be refused");

    // Everyone else was served throughout.
    ensure!(
        client.post(&format!(
            "https://127.0.0.1:{}/v1/publish/public.y",
            api.port()
        ))? == "202"
    );
    Ok(())
}

#[test]
fn certificates_reload_without_dropping_connections() -> Result<()> {
    let first = Certificates::new()?;
    let second = Certificates::new()?;
    // The router serves files in a directory of their own, replaced in place.
    let live = switchyard_tests::router::TempDir::new()?;
    for name in [
        "server.pem",
        "server.key",
        "ca.pem",
        "client.pem",
        "client.key",
    ] {
        std::fs::copy(first.path(name), live.path().join(name))?;
    }
    let text = config(&first, "10s").replace(
        &first.path("server").display().to_string(),
        &live.path().join("server").display().to_string(),
    );
    let router = Router::start(&text)?;
    let api = router.input("api")?;
    let url = format!("https://127.0.0.1:{}/v1/publish/public.t", api.port());
    let first_ca = first.path("ca.pem").display().to_string();
    let second_ca = second.path("ca.pem").display().to_string();
    let mut old = Https::start(&first_ca, None)?;
    ensure!(old.post(&url)? == "202");

    let reloads = |result: &str| -> Result<f64> {
        Ok(router
            .scrape()?
            .value(
                "switchyard_tls_reloads_total",
                &[("listener", "api"), ("result", result)],
            )
            .unwrap_or(0.0))
    };
    let before = reloads("success")?;
    // Key first, then the certificate: the reload the second write triggers
    // finds a matching pair (one the first triggers may be refused).
    std::fs::copy(second.path("server.key"), live.path().join("server.key"))?;
    std::fs::copy(second.path("server.pem"), live.path().join("server.pem"))?;
    until("the new certificate in force", DEADLINE, || {
        let mut fresh = Https::start(&second_ca, None).ok()?;
        (reloads("success").ok()? > before && fresh.post(&url).ok()? == "202").then_some(())
    })?;
    // The connection opened before goes on, on its old session.
    ensure!(
        old.post(&url)? == "202",
        "the open keep-alive connection was dropped"
    );
    // New connections verify against the new CA only.
    let mut stale = Https::start(&first_ca, None)?;
    ensure!(
        stale.post(&url)?.starts_with("ERR"),
        "the old certificate is still served"
    );

    // A broken certificate: the reload is refused, the pair in force stays.
    let refused = router
        .scrape()?
        .value("switchyard_config_reloads_total", &[("result", "failure")])
        .unwrap_or(0.0);
    std::fs::write(live.path().join("server.pem"), "not a certificate")?;
    router.wait_scrape("the broken pair refused", "reloads", DEADLINE, |s| {
        s.value("switchyard_config_reloads_total", &[("result", "failure")]) > Some(refused)
    })?;
    let mut fresh = Https::start(&second_ca, None)?;
    ensure!(fresh.post(&url)? == "202", "the pair in force was kept");
    Ok(())
}
