//! `kind = "webhook"`: HTTP(S) POSTs to a URL. The settings here; the
//! sending in `egress/webhook.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use serde::Serialize;

use super::checker::Checker;
use super::error::Subject;
use super::raw::RawWebhook;
use super::secret::{self, Secret};
use super::units::serialize_duration;

/// A `webhook` output. Every field reloads live (the output is rebuilt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookOutput {
    /// Where each request is POSTed: an `http://` or `https://` URL, with
    /// its path and query. Required.
    pub url: String,
    /// How messages become requests. Default `json`.
    pub encoding: WebhookEncoding,
    /// With `json`: most messages in one request. Default 100; 1 to
    /// 100000. (With `raw` every request is one message.)
    pub max_messages: usize,
    /// Most bytes in one request's body; a message whose encoding alone is
    /// larger is refused as `too_large`. Default 1 MiB; 1 KiB to 64 MiB.
    pub max_bytes: usize,
    /// With `json`: how long a partly full request waits for messages from
    /// other routes feeding this output before it is sent. Default 0s (no
    /// wait); at most 10s. A route is answered only when the request that
    /// carried its messages was answered, so one route's next batch never
    /// joins its previous one: only other routes' batches can.
    #[serde(serialize_with = "serialize_duration")]
    pub max_wait: Duration,
    /// Headers added to every request, e.g. `{ "X-Site" = "42" }`. Names
    /// the output sets itself (`Content-Length`, `Host`,
    /// `Idempotency-Key`, `X-Switchyard-*`, ...) are refused.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Sent as `Authorization: Bearer <token>`; from `bearer_token`
    /// (usually `"${ENV}"`) or `bearer_token_file`. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<Secret>,
    /// The key of `X-Switchyard-Signature: sha256=<hex HMAC-SHA256 of the
    /// body>`; from `hmac_secret` or `hmac_secret_file`. Default none (no
    /// signature).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hmac_secret: Option<Secret>,
    /// How long a TCP connect (and TLS handshake) may take. Default 5s;
    /// 1ms to 5m.
    #[serde(serialize_with = "serialize_duration")]
    pub connect_timeout: Duration,
    /// How long one request may take, from connecting to the last byte of
    /// the answer's body read. Default 30s; 1ms to 1h.
    #[serde(serialize_with = "serialize_duration")]
    pub request_timeout: Duration,
    /// Requests in flight at once, shared by every route feeding this
    /// output. Default 4; 1 to 1024.
    pub concurrency: usize,
    /// A PEM file of CA certificates trusted besides the system's (a
    /// private CA). Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The client certificate (chain, PEM) and its key the router presents
    /// to a server that asks for one (mTLS): `client_cert` and
    /// `client_key`, both or neither, `https://` only. Default none. Read
    /// when the output is built.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// A webhook's `encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookEncoding {
    /// One request per batch: a JSON array of messages.
    Json,
    /// One request per message: the payload as the body, the rest as
    /// headers.
    Raw,
}

impl WebhookOutput {
    /// The default `max_messages`.
    pub const DEFAULT_MAX_MESSAGES: usize = 100;
    /// The default `max_bytes`.
    pub const DEFAULT_MAX_BYTES: usize = 1 << 20;
    /// The default `concurrency`.
    pub const DEFAULT_CONCURRENCY: usize = 4;
}

/// Header names a webhook sets itself, so `headers` may not.
fn reserved(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "content-length"
            | "transfer-encoding"
            | "host"
            | "connection"
            | "idempotency-key"
            | "te"
            | "upgrade"
            | "expect"
    ) || n.starts_with("x-switchyard-")
}

/// Reads a `webhook` output's settings.
pub(crate) fn build(raw: &RawWebhook, subject: &Subject, c: &mut Checker<'_>) -> WebhookOutput {
    let url = raw.url.get_ref().clone();
    if let Err(reason) = check_url(&url) {
        c.invalid(subject, "url", raw.url.span(), reason);
    }
    let encoding = c.choice(
        subject,
        "encoding",
        raw.encoding.as_ref(),
        WebhookEncoding::Json,
        &[
            ("json", WebhookEncoding::Json),
            ("raw", WebhookEncoding::Raw),
        ],
    );
    if encoding == WebhookEncoding::Raw {
        for (field, at) in [
            ("max_messages", raw.max_messages.as_ref().map(|v| v.span())),
            ("max_wait", raw.max_wait.as_ref().map(|v| v.span())),
        ] {
            if let Some(at) = at {
                c.invalid(
                    subject,
                    field,
                    at,
                    "has no effect with encoding = \"raw\" (one request per message)",
                );
            }
        }
    }
    let max_messages = c.count(
        subject,
        "max_messages",
        raw.max_messages.as_ref(),
        WebhookOutput::DEFAULT_MAX_MESSAGES,
        1..=100_000,
    );
    let max_bytes = c.size(
        subject,
        "max_bytes",
        raw.max_bytes.as_ref(),
        WebhookOutput::DEFAULT_MAX_BYTES,
        1024..=64 << 20,
    );
    let max_wait = c.duration(
        subject,
        "max_wait",
        raw.max_wait.as_ref(),
        Duration::ZERO,
        Duration::ZERO..=Duration::from_secs(10),
    );
    let mut headers = BTreeMap::new();
    if let Some(written) = &raw.headers {
        for (name, value) in written.get_ref() {
            let parsed = HeaderName::from_bytes(name.as_bytes());
            match parsed {
                Err(_) => c.invalid(
                    subject,
                    "headers",
                    value.span(),
                    format!("{:?} is not a valid HTTP header name", name.escape_debug()),
                ),
                Ok(n) if reserved(&n) => c.invalid(
                    subject,
                    "headers",
                    value.span(),
                    format!("{name:?} is set by the output itself"),
                ),
                Ok(n) if n == hyper::header::AUTHORIZATION
                    && (raw.bearer_token.is_some() || raw.bearer_token_file.is_some()) =>
                {
                    c.invalid(
                        subject,
                        "headers",
                        value.span(),
                        "\"Authorization\" is set by bearer_token; write one of them",
                    );
                }
                Ok(n) => match HeaderValue::from_str(value.get_ref()) {
                    Ok(_) => {
                        headers.insert(n.as_str().to_owned(), value.get_ref().clone());
                    }
                    Err(_) => c.invalid(
                        subject,
                        "headers",
                        value.span(),
                        format!(
                            "the value of {name:?} is not a valid HTTP header value (a line break or control character)"
                        ),
                    ),
                },
            }
        }
    }
    let bearer_token = secret::read(
        "bearer_token",
        raw.bearer_token.as_ref(),
        raw.bearer_token_file.as_ref(),
        subject,
        c,
    );
    if let Some(token) = &bearer_token
        && HeaderValue::from_str(&format!("Bearer {}", token.expose())).is_err()
    {
        let at = raw
            .bearer_token
            .as_ref()
            .or(raw.bearer_token_file.as_ref())
            .map_or_else(|| raw.name.span(), |v| v.span());
        c.invalid(
            subject,
            "bearer_token",
            at,
            "cannot be sent in a header (a line break or control character)",
        );
    }
    let hmac_secret = secret::read(
        "hmac_secret",
        raw.hmac_secret.as_ref(),
        raw.hmac_secret_file.as_ref(),
        subject,
        c,
    );
    let connect_timeout = c.duration(
        subject,
        "connect_timeout",
        raw.connect_timeout.as_ref(),
        Duration::from_secs(5),
        Duration::from_millis(1)..=Duration::from_secs(300),
    );
    let request_timeout = c.duration(
        subject,
        "request_timeout",
        raw.request_timeout.as_ref(),
        Duration::from_secs(30),
        Duration::from_millis(1)..=Duration::from_secs(3600),
    );
    let concurrency = c.count(
        subject,
        "concurrency",
        raw.concurrency.as_ref(),
        WebhookOutput::DEFAULT_CONCURRENCY,
        1..=1024,
    );
    let ca_file = raw.ca_file.as_ref().and_then(|written| {
        let path = secret::path(written, c);
        match std::fs::read_to_string(&path) {
            Ok(text) if text.contains("-----BEGIN CERTIFICATE-----") => Some(path),
            Ok(_) => {
                c.invalid(
                    subject,
                    "ca_file",
                    written.span(),
                    format!("{} holds no PEM certificate", path.display()),
                );
                None
            }
            Err(e) => {
                c.invalid(
                    subject,
                    "ca_file",
                    written.span(),
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        }
    });
    if let Some(at) = &raw.ca_file
        && url.starts_with("http://")
    {
        c.invalid(
            subject,
            "ca_file",
            at.span(),
            "only applies to an https:// url",
        );
    }
    let client_cert = match (&raw.client_cert, &raw.client_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let pair = (secret::path(cert, c), secret::path(key, c));
            if url.starts_with("http://") {
                c.invalid(
                    subject,
                    "client_cert",
                    cert.span(),
                    "only applies to an https:// url",
                );
            }
            match crate::egress::webhook::client_identity(&pair) {
                Ok(_) => Some(pair),
                Err(reason) => {
                    c.invalid(subject, "client_cert", cert.span(), reason);
                    None
                }
            }
        }
        (Some(one), None) | (None, Some(one)) => {
            c.invalid(
                subject,
                if raw.client_cert.is_some() {
                    "client_cert"
                } else {
                    "client_key"
                },
                one.span(),
                "write both `client_cert` and `client_key`",
            );
            None
        }
    };
    WebhookOutput {
        client_cert,
        url,
        encoding,
        max_messages,
        max_bytes,
        max_wait,
        headers,
        bearer_token,
        hmac_secret,
        connect_timeout,
        request_timeout,
        concurrency,
        ca_file,
    }
}

/// Checks `url` is an absolute `http://` or `https://` URL with a host and
/// no credentials.
fn check_url(url: &str) -> Result<(), String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(format!(
                "{url:?}: the scheme must be http or https, not {other:?}"
            ));
        }
        None => return Err(format!("{url:?} needs a scheme: http:// or https://")),
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("{url:?} has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "{url:?}: credentials in the URL are not sent; use bearer_token or headers"
        ));
    }
    if authority.host().is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixture::{assert_one, base, problems, valid};
    use crate::config::{OutputKind, Retry};

    /// The base file with its output turned into a `webhook` with `lines`.
    fn webhook(lines: &str) -> String {
        base("", "", "").replace(
            "kind = \"zmq-push\"\nbind = \"tcp://127.0.0.1:6556\"",
            &format!("kind = \"webhook\"\n{lines}"),
        )
    }

    fn settings(text: &str) -> (WebhookOutput, Option<Retry>) {
        let config = valid(text);
        let OutputKind::Webhook(w) = &config.outputs[0].kind else {
            panic!("webhook")
        };
        (w.clone(), config.outputs[0].retry)
    }

    #[test]
    fn webhooks_read_their_settings_with_defaults() {
        let (w, retry) = settings(&webhook("url = \"https://hooks.example/in?x=1\""));
        assert_eq!(w.url, "https://hooks.example/in?x=1");
        assert_eq!(w.encoding, WebhookEncoding::Json);
        assert_eq!(w.max_messages, 100);
        assert_eq!(w.max_bytes, 1 << 20);
        assert_eq!(w.max_wait, Duration::ZERO);
        assert_eq!(w.connect_timeout, Duration::from_secs(5));
        assert_eq!(w.request_timeout, Duration::from_secs(30));
        assert_eq!(w.concurrency, 4);
        assert!(w.headers.is_empty() && w.bearer_token.is_none() && w.hmac_secret.is_none());
        assert_eq!(retry, None, "none written");
        let config = valid(&webhook("url = \"https://hooks.example/in?x=1\""));
        assert_eq!(
            config.outputs[0].retry_on(false),
            Some(Retry::WEBHOOK_DEFAULT),
            "webhooks retry by default on a memory route"
        );
        assert_eq!(
            config.outputs[0].retry_on(true),
            None,
            "a durable route retries until taken"
        );

        let (w, retry) = settings(&webhook(
            "url = \"http://127.0.0.1:9/x\"\nencoding = \"raw\"\nmax_bytes = \"64KiB\"\nheaders = { \"X-Site\" = \"42\" }\nbearer_token = \"t0k\"\nhmac_secret = \"k\"\nconnect_timeout = \"1s\"\nrequest_timeout = \"2s\"\nconcurrency = 8\nretry = { max_attempts = 3 }",
        ));
        assert_eq!(w.encoding, WebhookEncoding::Raw);
        assert_eq!(w.max_bytes, 64 << 10);
        assert_eq!(w.headers.get("x-site").map(String::as_str), Some("42"));
        assert_eq!(w.bearer_token.as_ref().map(Secret::expose), Some("t0k"));
        assert_eq!(format!("{:?}", w.bearer_token), "Some(<redacted>)");
        assert_eq!(w.hmac_secret.as_ref().map(Secret::expose), Some("k"));
        assert_eq!(w.request_timeout, Duration::from_secs(2));
        assert_eq!(w.concurrency, 8);
        assert_eq!(retry.and_then(|r| r.max_attempts), Some(3));
        assert_eq!(
            retry.and_then(|r| r.max_elapsed),
            None,
            "a written table wins"
        );
        let shown = serde_json::to_string(&w).expect("serializes");
        assert!(!shown.contains("t0k"), "{shown}");
    }

    #[test]
    fn webhook_secrets_come_from_files() {
        let dir = std::env::temp_dir().join(format!("sy-webhook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let token = dir.join("token");
        std::fs::write(&token, "from-file\n").expect("write");
        let (w, _) = settings(&webhook(&format!(
            "url = \"https://h/\"\nbearer_token_file = {:?}\nhmac_secret_file = {:?}",
            token.display(),
            token.display()
        )));
        assert_eq!(
            w.bearer_token.as_ref().map(Secret::expose),
            Some("from-file")
        );
        assert_eq!(
            w.hmac_secret.as_ref().map(Secret::expose),
            Some("from-file")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn webhook_mistakes_are_reported_at_their_line() {
        let got = problems(&webhook("url = \"ftp://h/x\""));
        assert_one(&got, "the scheme must be http or https");
        assert!(got[0].contains("t.toml:10"), "{got:?}");
        assert_one(
            &problems(&webhook("url = \"hooks.example:8080\"")),
            "needs a scheme",
        );
        assert_one(&problems(&webhook("url = \"http://\"")), "url");
        assert_one(&problems(&webhook("url = \"not a url\"")), "url");
        assert_one(
            &problems(&webhook("url = \"https://u:p@h/x\"")),
            "credentials in the URL",
        );
        assert_one(&problems(&webhook("")), "url");
        let u = "url = \"https://h/\"\n";
        assert_one(
            &problems(&webhook(&format!("{u}max_messages = 0"))),
            "max_messages",
        );
        assert_one(
            &problems(&webhook(&format!("{u}max_bytes = \"100\""))),
            "max_bytes",
        );
        assert_one(
            &problems(&webhook(&format!("{u}max_bytes = \"1GiB\""))),
            "max_bytes",
        );
        assert_one(
            &problems(&webhook(&format!("{u}max_wait = \"1m\""))),
            "max_wait",
        );
        assert_one(
            &problems(&webhook(&format!("{u}concurrency = 0"))),
            "concurrency",
        );
        assert_one(
            &problems(&webhook(&format!("{u}request_timeout = \"0s\""))),
            "request_timeout",
        );
        assert_one(
            &problems(&webhook(&format!("{u}encoding = \"xml\""))),
            "\"xml\" is not one of \"json\", \"raw\"",
        );
        assert_one(
            &problems(&webhook(&format!(
                "{u}encoding = \"raw\"\nmax_messages = 5"
            ))),
            "max_messages: has no effect with encoding = \"raw\"",
        );
        assert_one(
            &problems(&webhook(&format!(
                "{u}headers = {{ \"Bad Name\" = \"1\" }}"
            ))),
            "not a valid HTTP header name",
        );
        assert_one(
            &problems(&webhook(&format!("{u}headers = {{ \"X-A\" = \"a\\nb\" }}"))),
            "not a valid HTTP header value",
        );
        assert_one(
            &problems(&webhook(&format!(
                "{u}headers = {{ \"Content-Length\" = \"1\" }}"
            ))),
            "set by the output itself",
        );
        assert_one(
            &problems(&webhook(&format!(
                "{u}headers = {{ \"X-Switchyard-Id\" = \"1\" }}"
            ))),
            "set by the output itself",
        );
        assert_one(
            &problems(&webhook(&format!(
                "{u}bearer_token = \"a\"\nheaders = {{ \"Authorization\" = \"Basic x\" }}"
            ))),
            "set by bearer_token",
        );
        assert_one(
            &problems(&webhook(&format!(
                "{u}bearer_token = \"a\"\nbearer_token_file = \"/t\""
            ))),
            "write `bearer_token` or `bearer_token_file`, not both",
        );
        assert_one(
            &problems(&webhook(&format!(
                "{u}hmac_secret_file = \"/nonexistent/k\""
            ))),
            "hmac_secret_file: cannot read /nonexistent/k",
        );
        assert_one(
            &problems(&webhook(&format!("{u}ca_file = \"/nonexistent/ca.pem\""))),
            "ca_file: cannot read",
        );
        assert_one(
            &problems(&webhook(&format!("{u}servers = [\"nats://h:1\"]"))),
            "servers",
        );
    }
}
