//! Every bad credential the security issue lists, against real keys (the
//! fixtures in `router/tests/fixtures/auth/`), with tokens minted here by
//! `jsonwebtoken`. The end-to-end tests mint theirs with PyJWT.

use hyper::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

use super::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/auth");
const SECRET: &str = "an HMAC secret that is long enough to be safe";
/// SHA-256 of "device-token-1".
const TOKEN: &str = "device-token-1";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture")
}

fn config() -> Config {
    let hash = hex(ring::digest::digest(&ring::digest::SHA256, TOKEN.as_bytes()).as_ref());
    let dir = tempdir();
    let tokens = dir.join("tokens.toml");
    std::fs::write(&tokens, format!("dev-1 = \"{hash}\"\n")).expect("write");
    let text = format!(
        r#"
[router]
admin_auth = ["idp", "hmac"]

[[auth]]
name = "idp"
kind = "jwt"
jwks_file = "{FIXTURES}/jwks.json"
algorithms = ["ES256", "EdDSA"]
issuer = "https://idp.example"
audience = "switchyard"

[[auth]]
name = "hmac"
kind = "jwt"
secret = "{SECRET}"
algorithms = ["HS256"]
leeway = "0s"

[[auth]]
name = "rsa"
kind = "jwt"
public_key_file = "{FIXTURES}/rsa-public.pem"
algorithms = ["RS256"]

[[auth]]
name = "fleet"
kind = "token"
tokens_file = "{}"

[[input]]
name = "api"
kind = "http"
listen = "127.0.0.1:0"
auth = ["idp", "hmac", "rsa", "fleet"]

[[input]]
name = "rsa-only"
kind = "http"
listen = "127.0.0.1:0"
auth = ["rsa"]

[[input]]
name = "open"
kind = "http"
listen = "127.0.0.1:0"
auth = ["anonymous", "fleet"]

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
admin = ["read"]
"#,
        tokens.display()
    );
    Config::parse(&text, "t.toml").expect("valid config")
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-auth-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn security() -> (Security, Registry) {
    let registry = Registry::new();
    let metrics = Metrics::register(&registry);
    (
        Security::build(&config(), &metrics).expect("builds"),
        registry,
    )
}

fn now() -> i64 {
    i64::try_from(unix_now()).expect("time")
}

fn claims() -> serde_json::Value {
    json!({
        "sub": "dev-7",
        "iss": "https://idp.example",
        "aud": "switchyard",
        "exp": now() + 600,
        "role": "ops",
    })
}

fn es256(claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ec1".into());
    let key = EncodingKey::from_ec_pem(&fixture("ec-private.pem")).expect("ec key");
    encode(&header, claims, &key).expect("sign")
}

fn hs256(claims: &serde_json::Value, secret: &[u8]) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret).expect("secret"),
    )
    .expect("sign")
}

fn bearer_headers(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    h
}

fn check(s: &Security, listener: &str, token: &str) -> Result<Caller, Failure> {
    s.authenticate(listener, &bearer_headers(token), None, None)
}

fn b64(v: &serde_json::Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[test]
fn valid_tokens_name_their_principal_and_grants() {
    let (s, _) = security();
    let caller = check(&s, "api", &es256(&claims())).expect("valid ES256");
    assert_eq!(caller.principal().map(|p| &**p), Some("dev-7"));
    assert!(caller.grants().may_publish("sensors.dev-7.temp"));
    assert!(!caller.grants().may_publish("sensors.dev-8.temp"));
    assert!(caller.grants().has_scope(Scope::Read), "role = ops");
    assert!(!caller.grants().has_scope(Scope::Reload));
    // The cache answers the second time, with the same caller.
    let again = check(&s, "api", &es256(&claims())).expect("cached");
    assert_eq!(again.principal(), caller.principal());

    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("ed1".into());
    let key = EncodingKey::from_ed_pem(&fixture("ed-private.pem")).expect("ed key");
    let ed = encode(&header, &claims(), &key).expect("sign");
    assert!(check(&s, "api", &ed).is_ok(), "EdDSA through the JWKS");

    let hs = hs256(&json!({"sub": "svc", "exp": now() + 60}), SECRET.as_bytes());
    assert_eq!(check(&s, "api", &hs).expect("HS256").shown(), "svc");

    let caller = check(&s, "api", TOKEN).expect("static token");
    assert_eq!(caller.shown(), "dev-1");
    assert!(caller.grants().may_publish("sensors.dev-1.x"));
}

#[test]
fn every_bad_token_is_refused_with_its_reason() {
    let (s, registry) = security();
    let mut c = claims();
    let cases: Vec<(&str, String, Failure)> = vec![
        (
            "alg none",
            format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&claims())),
            Failure::AlgorithmNotAllowed,
        ),
        (
            "expired",
            {
                c["exp"] = json!(now() - 60);
                es256(&c)
            },
            Failure::Expired,
        ),
        (
            "nbf in the future",
            {
                let mut c = claims();
                c["nbf"] = json!(now() + 600);
                es256(&c)
            },
            Failure::NotYetValid,
        ),
        (
            "wrong audience",
            {
                let mut c = claims();
                c["aud"] = json!("elsewhere");
                es256(&c)
            },
            Failure::WrongAudience,
        ),
        (
            "no audience",
            {
                let mut c = claims();
                c.as_object_mut().expect("object").remove("aud");
                es256(&c)
            },
            Failure::WrongAudience,
        ),
        (
            "no exp",
            {
                let mut c = claims();
                c.as_object_mut().expect("object").remove("exp");
                es256(&c)
            },
            Failure::Malformed,
        ),
        (
            "unknown kid",
            {
                let mut header = Header::new(Algorithm::ES256);
                header.kid = Some("nope".into());
                let key = EncodingKey::from_ec_pem(&fixture("ec-private.pem")).expect("key");
                encode(&header, &claims(), &key).expect("sign")
            },
            Failure::UnknownKey,
        ),
        (
            "bad signature",
            hs256(
                &json!({"sub": "x", "exp": now() + 60}),
                b"another secret, long enough too!!",
            ),
            Failure::BadSignature,
        ),
        ("too large", "a".repeat(70_000), Failure::TooLarge),
        (
            "header not base64",
            "!!!.e30.sig".into(),
            Failure::Malformed,
        ),
        (
            "header not JSON",
            format!("{}.e30.c2ln", base64_of("not json")),
            Failure::Malformed,
        ),
        (
            "payload not JSON",
            {
                let t = es256(&claims());
                let parts: Vec<&str> = t.split('.').collect();
                format!("{}.{}.{}", parts[0], base64_of("{oops"), parts[2])
            },
            // The signature, checked first, no longer covers the payload.
            Failure::BadSignature,
        ),
        (
            "signature not base64",
            {
                let t = es256(&claims());
                let (head, _) = t.rsplit_once('.').expect("three parts");
                format!("{head}.***")
            },
            Failure::Malformed,
        ),
        (
            "not a known token",
            "not-a-known-token".into(),
            Failure::BadSignature,
        ),
        (
            "static token off by its last byte",
            "device-token-2".into(),
            Failure::BadSignature,
        ),
        (
            "principal claim not a string",
            hs256(&json!({"sub": 7, "exp": now() + 60}), SECRET.as_bytes()),
            Failure::Malformed,
        ),
    ];
    for (what, token, want) in &cases {
        assert_eq!(check(&s, "api", token).err(), Some(*want), "{what}");
    }
    // HS256 signed with the RSA public key as its secret, against an
    // issuer that pins RS256 (key confusion).
    let confused = hs256(
        &json!({"sub": "x", "exp": now() + 60}),
        &fixture("rsa-public.pem"),
    );
    assert_eq!(
        check(&s, "rsa-only", &confused).err(),
        Some(Failure::AlgorithmNotAllowed)
    );
    let mut header = Header::new(Algorithm::RS256);
    header.kid = None;
    let key = EncodingKey::from_rsa_pem(&fixture("rsa-private.pem")).expect("rsa key");
    let rs = encode(&header, &json!({"sub": "r", "exp": now() + 60}), &key).expect("sign");
    assert_eq!(check(&s, "rsa-only", &rs).expect("RS256").shown(), "r");
    let text = registry.encode();
    assert!(
        text.contains(
            "switchyard_auth_failures_total{listener=\"api\",reason=\"algorithm_not_allowed\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("reason=\"too_large\"} 1"), "{text}");
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[test]
fn credentials_come_from_one_bearer_header() {
    let (s, _) = security();
    assert_eq!(
        s.authenticate("api", &HeaderMap::new(), None, None).err(),
        Some(Failure::Missing)
    );
    let mut two = bearer_headers(TOKEN);
    two.append(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {TOKEN}")).expect("header"),
    );
    assert_eq!(
        s.authenticate("api", &two, None, None).err(),
        Some(Failure::Malformed)
    );
    let mut basic = HeaderMap::new();
    basic.insert(
        AUTHORIZATION,
        HeaderValue::from_static("Basic dXNlcjpwdw=="),
    );
    assert_eq!(
        s.authenticate("api", &basic, None, None).err(),
        Some(Failure::Malformed)
    );
    assert_eq!(
        s.authenticate(
            "api",
            &HeaderMap::new(),
            Some(&format!("access_token={TOKEN}")),
            None
        )
        .err(),
        Some(Failure::Malformed),
        "a token in the query string is refused"
    );
}

#[test]
fn anonymous_callers_get_the_anonymous_rules() {
    let (s, _) = security();
    let anon = s
        .authenticate("open", &HeaderMap::new(), None, None)
        .expect("anonymous accepted");
    assert_eq!(anon.principal(), None);
    assert!(anon.grants().may_publish("public.x"));
    assert!(!anon.grants().may_publish("sensors.x.y"));
    // A credential on that listener is still checked, not ignored.
    assert!(
        s.authenticate("open", &bearer_headers(TOKEN), None, None)
            .is_ok()
    );
    assert!(
        s.authenticate("open", &bearer_headers("bogus"), None, None)
            .is_err()
    );
    // A token the "api" listener verified is no good on one that does not
    // accept its issuer, cached or not.
    let t = es256(&claims());
    assert!(check(&s, "api", &t).is_ok());
    assert!(check(&s, "open", &t).is_err());
    // An unknown listener accepts no one.
    assert_eq!(check(&s, "nowhere", TOKEN).err(), Some(Failure::Missing));
}

#[test]
fn an_open_router_parses_nothing() {
    let registry = Registry::new();
    let s = Security::open(&Metrics::register(&registry));
    let mut garbage = HeaderMap::new();
    garbage.insert(AUTHORIZATION, HeaderValue::from_static("garbage"));
    let caller = s.authenticate("api", &garbage, None, None).expect("open");
    assert!(caller.grants().is_open());
    assert!(caller.grants().has_scope(Scope::Reload));
}

#[test]
fn transport_principals_get_their_rules() {
    let (s, _) = security();
    let plain = s.caller_for(Some(Arc::from("edge-1")));
    assert!(plain.grants().may_publish("sensors.edge-1.t"));
    assert!(!plain.grants().may_publish("sensors.edge-2.t"));
    let anon = s.caller_for(None);
    assert!(anon.grants().may_publish("public.a"));
}
