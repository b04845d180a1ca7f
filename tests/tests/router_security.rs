//! Authentication and permissions end to end: the real `switchyard` binary
//! with `[[auth]]` and `[[acl]]`, tokens minted by PyJWT with the test keys
//! in `router/tests/fixtures/auth/`, requests from curl and from the
//! harness's HTTP client.
//!
//! - publishing: a valid ES256, RS256, HS256 or static token publishes to
//!   its own topics; another principal's topic is `403 TOPIC_FORBIDDEN`
//!   (a batch all or nothing); anonymous callers only where the listener
//!   accepts them, with the anonymous rules;
//! - every bad credential: missing, `alg: none`, key confusion, expired,
//!   `nbf` ahead, wrong `iss`/`aud`, unknown `kid`, malformed parts, too
//!   large (and 1 MB, which the HTTP layer refuses first), two
//!   `Authorization` headers, a token in the query string, a static token
//!   off by its last byte: each its status and its counter, and the
//!   router serves everyone else;
//! - admin endpoints by scope, `/health` and `/ready` open, the audit log;
//! - ZeroMQ: PLAIN principals publish their own topics only (a forbidden
//!   message dropped and counted, or its peer cut with `on_forbidden =
//!   "disconnect"`); anonymous peers where the input says so; a `zmq-pub`
//!   subscriber whose prefix is wider than its grant, or covers a denied
//!   topic, gets only what it may receive;
//! - keys, tokens and rules reloaded under traffic: a valid client never
//!   fails, a broken key set keeps the old keys, a rotated token file and
//!   a new deny rule apply to the next request on the same connection.

use std::process::Command;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use switchyard_tests::jwt::{fixture, mint, sha256_hex};
use switchyard_tests::router::http::{Client, Response};
use switchyard_tests::router::peer::{Peer, PushOptions};
use switchyard_tests::router::{DEADLINE, Router, TempDir, until};

const ISSUER: &str = "https://idp.example";
const HS_SECRET: &str = "a service secret that is long enough for HS256";
const DEVICE_TOKEN: &str = "device-1-token-7f3a";

/// Key files the tests rotate, in their own directory.
struct Keys {
    dir: TempDir,
}

impl Keys {
    fn new() -> Result<Self> {
        let dir = TempDir::new()?;
        let jwks = std::fs::read_to_string(fixture("jwks.json"))?;
        dir.write("jwks.json", &jwks)?;
        dir.write("hs.secret", HS_SECRET)?;
        dir.write(
            "tokens.toml",
            &format!("dev-1 = \"{}\"\n", sha256_hex(DEVICE_TOKEN)),
        )?;
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn config(keys: &Keys, extra_acl: &str) -> String {
    format!(
        r#"
[router]
admin = "127.0.0.1:0"
admin_auth = ["idp", "fleet"]
metrics_open = true

[[auth]]
name = "idp"
kind = "jwt"
jwks_file = {jwks:?}
algorithms = ["ES256"]
issuer = "{ISSUER}"
audience = "switchyard"

[[auth]]
name = "svc"
kind = "jwt"
secret_file = {secret:?}
algorithms = ["HS256"]
leeway = "0s"

[[auth]]
name = "rsa"
kind = "jwt"
public_key_file = {rsa:?}
algorithms = ["RS256"]

[[auth]]
name = "fleet"
kind = "token"
tokens_file = {tokens:?}

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"
auth = ["idp", "svc", "fleet"]

[[input]]
name = "rsa-api"
kind = "http"
listen = "127.0.0.1:0"
auth = ["rsa"]

[[input]]
name = "public"
kind = "http"
listen = "127.0.0.1:0"
auth = ["anonymous"]

[[output]]
name = "out"
kind = "blackhole"

[[route]]
name = "r"
match = ">"
to = ["out"]

[[acl]]
principals = ["*"]
publish = ["sensors.{{principal}}.>"]

[[acl]]
principals = ["anonymous"]
publish = ["public.>"]

[[acl]]
when = {{ role = "ops" }}
admin = ["read", "reload"]
{extra_acl}
"#,
        jwks = keys.path("jwks.json"),
        secret = keys.path("hs.secret"),
        rsa = fixture("rsa-public.pem"),
        tokens = keys.path("tokens.toml"),
    )
}

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
    .unwrap_or(0)
}

/// Claims of the site IdP for `sub`, valid for ten minutes.
fn idp_claims(sub: &str, role: &str) -> Value {
    json!({"sub": sub, "iss": ISSUER, "aud": "switchyard", "exp": now() + 600, "role": role})
}

fn es256(claims: Value) -> Value {
    json!({"alg": "ES256", "key_file": fixture("ec-private.pem"), "kid": "ec1", "claims": claims})
}

fn with(claims: Value, key: &str, value: Value) -> Value {
    let mut c = claims;
    c[key] = value;
    c
}

fn without(claims: Value, key: &str) -> Value {
    let mut c = claims;
    c.as_object_mut().map(|o| o.remove(key));
    c
}

fn publish(client: &mut Client, token: Option<&str>, topic: &str) -> Result<Response> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    client.post(&format!("/v1/publish/{topic}"), &headers, b"x")
}

fn expect(resp: &Response, status: u16, code: Option<&str>, what: &str) -> Result<()> {
    ensure!(
        resp.status == status && (code.is_none() || resp.error_code().as_deref() == code),
        "{what}: expected {status} {code:?}, got {} {}",
        resp.status,
        resp.text()
    );
    Ok(())
}

/// `curl`'s status for a raw publish, as an operator's script would send it.
fn curl_publish(addr: std::net::SocketAddr, token: Option<&str>, topic: &str) -> Result<u16> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
    ])
    .args(["-X", "POST", "--data-binary", "payload"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    cmd.arg(format!("http://{addr}/v1/publish/{topic}"));
    let out = cmd
        .output()
        .context("curl is not installed: run `./dev setup`")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("curl's status")
}

fn failures(router: &Router, listener: &str, reason: &str) -> Result<f64> {
    Ok(router
        .scrape()?
        .value(
            "switchyard_auth_failures_total",
            &[("listener", listener), ("reason", reason)],
        )
        .unwrap_or(0.0))
}

#[test]
fn publishes_need_a_valid_token_and_a_permitted_topic() -> Result<()> {
    let keys = Keys::new()?;
    let router = Router::start(&config(&keys, ""))?;
    let api = router.input("api")?;
    let base = idp_claims("dev-7", "device");
    let specs = json!([
        es256(base.clone()),
        es256(with(base.clone(), "exp", json!(now() - 60))),
        es256(with(base.clone(), "nbf", json!(now() + 600))),
        es256(with(base.clone(), "iss", json!("https://evil.example"))),
        es256(with(base.clone(), "aud", json!("elsewhere"))),
        es256(without(base.clone(), "aud")),
        {"alg": "ES256", "key_file": fixture("ec-private.pem"), "kid": "gone", "claims": base.clone()},
        {"alg": "none", "claims": base.clone()},
        {"alg": "HS256", "secret": HS_SECRET, "claims": {"sub": "svc-1", "exp": now() + 60}},
        {"alg": "RS256", "key_file": fixture("rsa-private.pem"), "claims": {"sub": "r1", "exp": now() + 60}},
        {"confused": fixture("rsa-public.pem"), "claims": {"sub": "r1", "exp": now() + 60}},
    ]);
    let t = mint(&specs)?;
    let (good, expired, early, wrong_iss, wrong_aud, no_aud, unknown_kid, none, hs, rs, confused) = (
        &t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &t[6], &t[7], &t[8], &t[9], &t[10],
    );

    // curl, with and without the token.
    ensure!(curl_publish(api, Some(good), "sensors.dev-7.temp")? == 202);
    ensure!(curl_publish(api, None, "sensors.dev-7.temp")? == 401);

    let mut c = router.http("api")?;
    expect(
        &publish(&mut c, Some(good), "sensors.dev-7.t")?,
        202,
        None,
        "own topic",
    )?;
    expect(
        &publish(&mut c, Some(good), "sensors.dev-8.t")?,
        403,
        Some("TOPIC_FORBIDDEN"),
        "another principal's topic",
    )?;
    expect(
        &publish(&mut c, Some(hs), "sensors.svc-1.t")?,
        202,
        None,
        "HS256",
    )?;
    expect(
        &publish(&mut c, Some(DEVICE_TOKEN), "sensors.dev-1.t")?,
        202,
        None,
        "static token",
    )?;

    // A batch is all or nothing.
    let admitted = |r: &Router| -> Result<f64> {
        Ok(r.scrape()?
            .value("switchyard_input_messages_total", &[("input", "api")])
            .unwrap_or(0.0))
    };
    let before = admitted(&router)?;
    let batch = json!({"messages": [
        {"topic": "sensors.dev-7.a", "payload": "1"},
        {"topic": "sensors.dev-9.b", "payload": "2"},
    ]});
    let resp = c.post(
        "/v1/publish",
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {good}")),
        ],
        batch.to_string().as_bytes(),
    )?;
    expect(
        &resp,
        403,
        Some("TOPIC_FORBIDDEN"),
        "a batch with one forbidden topic",
    )?;
    ensure!(resp.text().contains("messages[1].topic"), "{}", resp.text());
    ensure!(
        admitted(&router)? == before,
        "nothing of the batch was admitted"
    );
    router.wait_metric(
        "switchyard_acl_denied_total",
        &[("listener", "api"), ("action", "publish")],
        2.0,
    )?;

    // Every bad credential: its status, its reason.
    let big = "a".repeat(100_000);
    let cases: [(&str, &str, &str); 10] = [
        ("expired", expired, "expired"),
        ("nbf ahead", early, "not_yet_valid"),
        ("wrong iss", wrong_iss, "wrong_issuer"),
        ("wrong aud", wrong_aud, "wrong_audience"),
        ("no aud", no_aud, "wrong_audience"),
        ("unknown kid", unknown_kid, "unknown_key"),
        ("alg none", none, "algorithm_not_allowed"),
        (
            "static token off by its last byte",
            "device-1-token-7f3b",
            "bad_signature",
        ),
        ("malformed parts", "e30.!!!.x", "malformed"),
        ("too large", &big, "too_large"),
    ];
    for (what, token, reason) in cases {
        let before = failures(&router, "api", reason)?;
        expect(
            &publish(&mut c, Some(token), "sensors.dev-7.t")?,
            401,
            Some("UNAUTHORIZED"),
            what,
        )?;
        router.wait_scrape(what, "switchyard_auth_failures_total", DEADLINE, |s| {
            s.value(
                "switchyard_auth_failures_total",
                &[("listener", "api"), ("reason", reason)],
            ) == Some(before + 1.0)
        })?;
    }
    let resp = c.post(
        "/v1/publish/sensors.dev-7.t",
        &[
            ("authorization", &format!("Bearer {good}")),
            ("authorization", &format!("Bearer {good}")),
        ],
        b"x",
    )?;
    expect(
        &resp,
        401,
        Some("UNAUTHORIZED"),
        "two Authorization headers",
    )?;
    let resp = c.post(
        &format!("/v1/publish/sensors.dev-7.t?access_token={good}"),
        &[],
        b"x",
    )?;
    expect(
        &resp,
        401,
        Some("UNAUTHORIZED"),
        "a token in the query string",
    )?;
    // A missing token, counted.
    expect(
        &publish(&mut c, None, "sensors.dev-7.t")?,
        401,
        None,
        "missing",
    )?;
    ensure!(failures(&router, "api", "missing")? >= 2.0);

    // 1 MB of token: the HTTP layer refuses the headers before auth reads
    // them (431); the router goes on serving.
    let huge = "a".repeat(1 << 20);
    let mut fresh = router.http("api")?;
    // The server may also close before the client has sent it all.
    if let Ok(r) = publish(&mut fresh, Some(&huge), "sensors.dev-7.t") {
        ensure!(r.status == 431, "1 MB token: {} {}", r.status, r.text());
    }
    router.wait_scrape(
        "the oversized headers counted",
        "connection_errors",
        DEADLINE,
        |s| {
            s.value(
                "switchyard_http_connection_errors_total",
                &[("listener", "api"), ("reason", "malformed")],
            ) >= Some(1.0)
        },
    )?;
    expect(
        &publish(&mut router.http("api")?, Some(good), "sensors.dev-7.t")?,
        202,
        None,
        "after",
    )?;

    // Key confusion and a valid RS256 token, on the listener that pins RS256.
    let mut rsa = router.http("rsa-api")?;
    expect(
        &publish(&mut rsa, Some(confused), "sensors.r1.t")?,
        401,
        None,
        "key confusion",
    )?;
    ensure!(failures(&router, "rsa-api", "algorithm_not_allowed")? == 1.0);
    expect(
        &publish(&mut rsa, Some(rs), "sensors.r1.t")?,
        202,
        None,
        "RS256",
    )?;

    // Anonymous callers: only where accepted, only the anonymous rules.
    let mut public = router.http("public")?;
    expect(
        &publish(&mut public, None, "public.news")?,
        202,
        None,
        "anonymous",
    )?;
    expect(
        &publish(&mut public, None, "sensors.dev-7.t")?,
        403,
        Some("TOPIC_FORBIDDEN"),
        "anonymous outside its rules",
    )?;
    Ok(())
}

#[test]
fn admin_endpoints_need_their_scope() -> Result<()> {
    let keys = Keys::new()?;
    let router = Router::start(&config(&keys, ""))?;
    let t = mint(&json!([
        es256(idp_claims("ops-1", "ops")),
        es256(idp_claims("dev-7", "device")),
    ]))?;
    let (ops, dev) = (&t[0], &t[1]);
    let mut admin = Client::new(router.admin());
    let call = |c: &mut Client, method: &str, path: &str, token: Option<&str>| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        c.request(method, path, &headers, &[])
    };
    for open in ["/health", "/ready", "/metrics"] {
        expect(&call(&mut admin, "GET", open, None)?, 200, None, open)?;
    }
    expect(
        &call(&mut admin, "GET", "/v1/status", None)?,
        401,
        Some("UNAUTHORIZED"),
        "no token",
    )?;
    for (path, method) in [
        ("/v1/status", "GET"),
        ("/v1/routes", "GET"),
        ("/v1/plugins", "GET"),
        ("/v1/reload", "POST"),
        ("/v1/dead-letters", "GET"),
    ] {
        expect(
            &call(&mut admin, method, path, Some(dev))?,
            403,
            Some("FORBIDDEN"),
            path,
        )?;
        expect(
            &call(&mut admin, method, path, Some(DEVICE_TOKEN))?,
            403,
            Some("FORBIDDEN"),
            path,
        )?;
    }
    router.wait_metric(
        "switchyard_acl_denied_total",
        &[("listener", "admin"), ("action", "admin")],
        10.0,
    )?;
    expect(
        &call(&mut admin, "GET", "/v1/status", Some(ops))?,
        200,
        None,
        "read",
    )?;
    expect(
        &call(&mut admin, "POST", "/v1/reload?dry_run=true", Some(ops))?,
        200,
        None,
        "dry run",
    )?;
    expect(
        &call(&mut admin, "POST", "/v1/reload", Some(ops))?,
        200,
        None,
        "reload",
    )?;
    expect(
        &call(&mut admin, "GET", "/v1/dead-letters", Some(ops))?,
        403,
        Some("FORBIDDEN"),
        "dead letters without their scope",
    )?;
    // The audit log names who changed what.
    router.wait_log("the reload's audit line", DEADLINE, |v| {
        v["target"] == "switchyard::audit"
            && v["fields"]["principal"] == "ops-1"
            && v["fields"]["endpoint"] == "/v1/reload"
            && v["fields"]["status"] == 200
    })?;
    Ok(())
}

#[test]
fn metrics_need_their_scope_unless_open() -> Result<()> {
    let keys = Keys::new()?;
    let text = config(
        &keys,
        "\n[[acl]]\nprincipals = [\"dev-1\"]\nadmin = [\"metrics\"]\n",
    )
    .replace("metrics_open = true\n", "");
    let router = Router::start(&text)?;
    let mut admin = Client::new(router.admin());
    expect(
        &admin.request("GET", "/metrics", &[], &[])?,
        401,
        None,
        "no token",
    )?;
    let auth = format!("Bearer {DEVICE_TOKEN}");
    let resp = admin.request("GET", "/metrics", &[("authorization", &auth)], &[])?;
    expect(&resp, 200, None, "metrics scope")?;
    ensure!(resp.text().contains("switchyard_auth_failures_total"));
    Ok(())
}

#[test]
fn keys_tokens_and_rules_reload_under_traffic() -> Result<()> {
    let keys = Keys::new()?;
    let router = Router::start(&config(&keys, ""))?;
    let t = mint(&json!([es256(idp_claims("dev-7", "device"))]))?;
    let good = &t[0];
    let mut c = router.http("api")?;
    let reloads = |result: &str| -> Result<f64> {
        Ok(router
            .scrape()?
            .value("switchyard_config_reloads_total", &[("result", result)])
            .unwrap_or(0.0))
    };
    let mut sent = 0;
    let mut send = |c: &mut Client| -> Result<()> {
        sent += 1;
        expect(
            &publish(c, Some(good), "sensors.dev-7.t")?,
            202,
            None,
            "a valid client",
        )
    };
    // A key set rewritten with one more key: reloads by itself, and the
    // valid client never fails meanwhile.
    let mut jwks: Value = serde_json::from_str(&std::fs::read_to_string(keys.path("jwks.json"))?)?;
    let mut extra = jwks["keys"][0].clone();
    extra["kid"] = json!("ec2");
    jwks["keys"].as_array_mut().context("keys")?.push(extra);
    let ok_before = reloads("success")?;
    keys.dir.write("jwks.json", &jwks.to_string())?;
    until("the new key set's reload", DEADLINE, || {
        send(&mut c).ok()?;
        (reloads("success").ok()? > ok_before).then_some(())
    })?;
    send(&mut c)?;

    // A broken key set: the reload fails, the old keys stay.
    let failed_before = reloads("failure")?;
    keys.dir.write("jwks.json", "{ not json")?;
    until("the broken key set's failed reload", DEADLINE, || {
        send(&mut c).ok()?;
        (reloads("failure").ok()? > failed_before).then_some(())
    })?;
    send(&mut c)?;
    keys.dir.write("jwks.json", &jwks.to_string())?;

    // A rotated token file: the new token in, the old one out, on the same
    // connection.
    let ok_before = reloads("success")?;
    keys.dir.write(
        "tokens.toml",
        &format!("dev-1 = \"{}\"\n", sha256_hex("device-1-token-new")),
    )?;
    until("the rotated tokens' reload", DEADLINE, || {
        (reloads("success").ok()? > ok_before).then_some(())
    })?;
    until("the new token accepted", DEADLINE, || {
        (publish(&mut c, Some("device-1-token-new"), "sensors.dev-1.t")
            .ok()?
            .status
            == 202)
            .then_some(())
    })?;
    expect(
        &publish(&mut c, Some(DEVICE_TOKEN), "sensors.dev-1.t")?,
        401,
        None,
        "the old token",
    )?;

    // A new deny rule applies to the next request on the same connection.
    let ok_before = reloads("success")?;
    let denied = config(
        &keys,
        "\n[[acl]]\nprincipals = [\"dev-7\"]\ndeny_publish = [\"sensors.dev-7.secret\"]\n",
    );
    std::fs::write(router.config_path(), denied)?;
    until("the new rules' reload", DEADLINE, || {
        (reloads("success").ok()? > ok_before).then_some(())
    })?;
    expect(
        &publish(&mut c, Some(good), "sensors.dev-7.secret")?,
        403,
        Some("TOPIC_FORBIDDEN"),
        "the new deny rule",
    )?;
    send(&mut c)?;
    ensure!(sent > 3);
    Ok(())
}

/// A libzmq peer of `role` on `endpoint`, a PLAIN client as `user`.
fn plain_peer(
    role: &str,
    endpoint: &str,
    user: &str,
    password: &str,
    extra: &[&str],
) -> Result<Peer> {
    let mut args: Vec<String> = vec![role.into(), endpoint.into()];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args.extend([
        "--plain-user".into(),
        user.into(),
        "--plain-password".into(),
        password.into(),
    ]);
    Peer::spawn(&args)
}

fn topics(msgs: &[switchyard_tests::router::peer::Msg], skip: &str) -> Vec<String> {
    msgs.iter()
        .map(|m| m.topic().to_owned())
        .filter(|t| t != skip)
        .collect()
}

#[test]
fn zmq_messages_and_subscriptions_follow_the_acl() -> Result<()> {
    let text = r#"
[router]
admin = "127.0.0.1:0"
admin_auth = ["anonymous"]
metrics_open = true

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"
auth = ["anonymous"]

[[input]]
name = "devices"
kind = "zmq-pull"
bind = "tcp://127.0.0.1:0"
plain = { users = { dev1 = "pw1", dev2 = "pw2" } }

[[input]]
name = "strict"
kind = "zmq-pull"
bind = "tcp://127.0.0.1:0"
plain = { users = { dev1 = "pw1" } }
on_forbidden = "disconnect"

[[input]]
name = "open"
kind = "zmq-pull"
bind = "tcp://127.0.0.1:0"
auth = ["anonymous"]

[[output]]
name = "feed"
kind = "zmq-pub"
bind = "tcp://127.0.0.1:0"
plain = { users = { viewer = "pwv", dev1 = "pw1" } }

[[route]]
name = "r"
match = ">"
to = ["feed"]

[[acl]]
principals = ["*"]
publish = ["sensors.{principal}.>"]

[[acl]]
principals = ["anonymous"]
publish = ["public.>", "sensors.dev1.sync"]

[[acl]]
principals = ["viewer"]
subscribe = ["sensors.>", "public.>"]
deny_subscribe = ["sensors.dev2.secret"]

[[acl]]
principals = ["dev1"]
subscribe = ["sensors.dev1.>"]
"#;
    let router = Router::start(text)?;
    let feed = router.output_endpoint("feed")?;
    let mut viewer = plain_peer("sub", &feed, "viewer", "pwv", &["--subscribe", ""])?;
    let mut own = plain_peer("sub", &feed, "dev1", "pw1", &["--subscribe", "sensors."])?;
    router.sync_subscribers("api", "sensors.dev1.sync", &mut [&mut viewer, &mut own])?;
    let sync = "sensors.dev1.sync";

    // dev1 publishes its own topics and one of dev2's: that one is dropped
    // and counted, the connection stays.
    let mut dev1 = plain_peer(
        "push",
        &router.input_endpoint("devices")?,
        "dev1",
        "pw1",
        &[],
    )?;
    dev1.send(&[
        &["sensors.dev1.t", "1"],
        &["sensors.dev2.t", "2"],
        &["sensors.dev1.u", "3"],
    ])?;
    let got = viewer.recv_until(DEADLINE, |m| m.topic() == "sensors.dev1.u")?;
    ensure!(
        topics(&got, sync) == ["sensors.dev1.t", "sensors.dev1.u"],
        "{got:?}"
    );
    router.wait_metric(
        "switchyard_input_rejected_total",
        &[("input", "devices"), ("reason", "forbidden")],
        1.0,
    )?;
    router.wait_metric(
        "switchyard_acl_denied_total",
        &[("listener", "devices"), ("action", "publish")],
        1.0,
    )?;

    // dev2's own topics: the viewer gets them but the denied one; dev1's
    // subscriber, whose prefix `sensors.` is wider than its grant, gets
    // none of dev2's: held back at delivery, counted.
    let mut dev2 = plain_peer(
        "push",
        &router.input_endpoint("devices")?,
        "dev2",
        "pw2",
        &[],
    )?;
    dev2.send(&[&["sensors.dev2.secret", "4"], &["sensors.dev2.t", "5"]])?;
    let got = viewer.recv_until(DEADLINE, |m| m.topic() == "sensors.dev2.t")?;
    ensure!(
        topics(&got, sync) == ["sensors.dev2.t"],
        "the denied topic was delivered: {got:?}"
    );
    dev1.send(&[&["sensors.dev1.end", "6"]])?;
    let got = own.recv_until(DEADLINE, |m| m.topic() == "sensors.dev1.end")?;
    ensure!(
        topics(&got, sync) == ["sensors.dev1.t", "sensors.dev1.u", "sensors.dev1.end"],
        "dev1's subscriber got another's topics: {got:?}"
    );
    router.wait_scrape("deliveries held back", "acl_denied", DEADLINE, |s| {
        s.value(
            "switchyard_acl_denied_total",
            &[("listener", "feed"), ("action", "subscribe")],
        ) >= Some(3.0)
    })?;

    // Anonymous peers, where the input says so, under the anonymous rules.
    let mut anon = Peer::push(&router.input_endpoint("open")?, PushOptions::default())?;
    anon.send(&[&["sensors.dev1.x", "7"], &["public.news", "8"]])?;
    let got = viewer.recv_until(DEADLINE, |m| m.topic() == "public.news")?;
    // (The viewer also sees dev1's end marker, sent before.)
    let got: Vec<String> = topics(&got, sync)
        .into_iter()
        .filter(|t| t != "sensors.dev1.end")
        .collect();
    ensure!(
        got == ["public.news"],
        "an anonymous peer published outside its rules: {got:?}"
    );

    // on_forbidden = "disconnect": the message dropped, the peer cut.
    let mut strict = plain_peer(
        "push",
        &router.input_endpoint("strict")?,
        "dev1",
        "pw1",
        &[],
    )?;
    strict.send(&[&["sensors.dev9.x", "9"]])?;
    router.wait_metric(
        "switchyard_zmtp_disconnects_total",
        &[("socket", "strict"), ("reason", "forbidden")],
        1.0,
    )?;
    Ok(())
}
