//! The `switchyard` binary with CURVE on a ZeroMQ input and output, against
//! libzmq (pyzmq) clients: keys made by `switchyard curve-keypair`, the
//! input's clients read from a `clients_file`, the output's key from the
//! environment. A client whose key is not listed is refused and counted
//! while a listed one keeps flowing.

use anyhow::{Context, Result, ensure};
use switchyard_tests::router::peer::Peer;
use switchyard_tests::router::{DEADLINE, Router, TempDir, binary};

/// Runs `switchyard curve-keypair`; returns (public, the whole output,
/// which is itself a secret key file).
fn keypair() -> Result<(String, String)> {
    let out = std::process::Command::new(binary()?)
        .arg("curve-keypair")
        .output()
        .context("run switchyard curve-keypair")?;
    ensure!(out.status.success(), "curve-keypair failed: {out:?}");
    let text = String::from_utf8(out.stdout)?;
    let value = |name: &str| -> Result<String> {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} = ")))
            .with_context(|| format!("no `{name} = ` line in {text:?}"))?;
        let v = line[name.len() + 3..].trim_matches('"').to_owned();
        ensure!(v.len() == 40, "{name}: {v:?} is not 40 characters");
        Ok(v)
    };
    let public = value("public")?;
    value("secret")?;
    Ok((public, text))
}

fn secret_of(file: &str) -> String {
    file.lines()
        .find_map(|l| l.strip_prefix("secret = "))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_default()
}

/// A CURVE client of the router: `role` with our secret and its key.
fn client(role: &str, endpoint: &str, secret: &str, server_public: &str) -> Result<Peer> {
    // `--flag=value`: a Z85 key may start with `-`.
    Peer::spawn(&[
        role.into(),
        endpoint.into(),
        format!("--curve-secret={secret}"),
        format!("--curve-server-key={server_public}"),
    ])
}

#[test]
fn curve_in_and_out_with_a_refused_stranger() -> Result<()> {
    let keys = TempDir::new()?;
    let (server_public, server_file) = keypair()?;
    let (edge_public, edge_file) = keypair()?;
    let (worker_public, worker_file) = keypair()?;
    let (_, stranger_file) = keypair()?;
    let server_key = keys.write("server.key", &server_file)?;
    let clients = keys.write(
        "clients.toml",
        &format!("edge-7 = \"{edge_public}\"\nworker-1 = \"{worker_public}\"\n"),
    )?;
    let config = format!(
        r#"
[router]
admin = "127.0.0.1:0"
shutdown_grace = "2s"

[[input]]
name = "edge"
kind = "zmq-pull"
bind = "tcp://127.0.0.1:0"
curve = {{ secret_key_file = "{}", clients_file = "{}" }}

[[output]]
name = "workers"
kind = "zmq-push"
bind = "tcp://127.0.0.1:0"
curve = {{ secret_key = "${{OUT_KEY}}", clients_file = "{}" }}

[[route]]
name = "jobs"
match = "jobs.>"
to = ["workers"]
"#,
        server_key.display(),
        clients.display(),
        clients.display()
    );
    let router = Router::builder(&config)
        .env("OUT_KEY", &secret_of(&server_file))
        .start()?;
    let input = router.input_endpoint("edge")?;
    let output = router.output_endpoint("workers")?;

    let mut worker = client("pull", &output, &secret_of(&worker_file), &server_public)?;
    let mut edge = client("push", &input, &secret_of(&edge_file), &server_public)?;
    let msgs: Vec<Vec<String>> = (0..20)
        .map(|i| vec![format!("jobs.{i}"), format!("payload {i}")])
        .collect();
    let refs: Vec<Vec<&str>> = msgs
        .iter()
        .map(|m| m.iter().map(String::as_str).collect())
        .collect();
    let refs: Vec<&[&str]> = refs.iter().map(Vec::as_slice).collect();
    edge.send(&refs[..10])?;
    let got = worker.recv_n(10, DEADLINE)?;
    ensure!(
        got.iter().map(|m| m.topic().to_owned()).collect::<Vec<_>>()
            == (0..10).map(|i| format!("jobs.{i}")).collect::<Vec<_>>(),
        "got {got:?}"
    );

    // A stranger (a key in no clients_file) is refused at the handshake...
    let _stranger = client("push", &input, &secret_of(&stranger_file), &server_public)?;
    router.wait_scrape(
        "the stranger to be refused",
        "handshake_failures",
        DEADLINE,
        |s| {
            s.value(
                "switchyard_zmtp_handshake_failures_total",
                &[("reason", "curve_unknown_client")],
            )
            .is_some_and(|v| v >= 1.0)
        },
    )?;
    // ...and counted as an authentication failure of that input.
    let refused = router.scrape()?.value(
        "switchyard_auth_failures_total",
        &[("listener", "edge"), ("reason", "curve_handshake")],
    );
    ensure!(
        refused >= Some(1.0),
        "auth failure not counted: {refused:?}"
    );
    // ...while the listed client keeps flowing.
    edge.send(&refs[10..])?;
    let got = worker.recv_n(10, DEADLINE)?;
    ensure!(got[9].payload() == "payload 19", "got {got:?}");
    Ok(())
}
