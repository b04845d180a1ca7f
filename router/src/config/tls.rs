//! `tls = { ... }` on an HTTP listener (an `http` input, or `[router]
//! admin_tls`):
//!
//! ```toml
//! tls = { cert = "tls/cert.pem", key = "tls/key.pem" }
//! # and, to verify client certificates (mTLS):
//! tls = { cert = "...", key = "...", client_ca = "tls/clients-ca.pem", client_auth = "required" }
//! ```
//!
//! The files are read when the config is loaded (a pair that does not load
//! is reported at its line) and again after every reload, when the router
//! notices one changed: new connections get the new certificate, open ones
//! keep theirs.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::checker::Checker;
use super::error::Subject;
use super::raw::{RawListenerTls, S};
use super::secret;
use super::units::serialize_duration;

/// A listener's TLS settings. Reload live: the files are read again, the
/// listener is not rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerTls {
    /// The certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) to verify client certificates against. Default
    /// none: clients are not asked for a certificate.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: `client_auth = "required"` (the default) refuses a
    /// client without a certificate at the handshake; `"optional"` lets it
    /// through, to authenticate otherwise.
    pub client_cert_required: bool,
    /// How long a client has to finish the handshake. Default 10s; 100ms to
    /// 1m.
    #[serde(serialize_with = "serialize_duration")]
    pub handshake_timeout: Duration,
}

impl ListenerTls {
    /// Default for [`ListenerTls::handshake_timeout`].
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

    /// The files it reads.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.cert.clone(), self.key.clone()];
        files.extend(self.client_ca.clone());
        files
    }
}

/// Reads `tls = { ... }` (`field` names it in messages) and checks that its
/// files load.
pub(crate) fn build(
    raw: &S<RawListenerTls>,
    field: &str,
    subject: &Subject,
    c: &mut Checker<'_>,
) -> Option<ListenerTls> {
    let span = raw.span();
    let raw = raw.get_ref();
    let client_cert_required = match raw.client_auth.as_ref().map(|a| a.get_ref().as_str()) {
        None | Some("required") => true,
        Some("optional") => false,
        Some(other) => {
            c.invalid(
                subject,
                &format!("{field}.client_auth"),
                raw.client_auth.as_ref().map_or(span.clone(), S::span),
                format!("unknown value {other:?}; expected \"required\" or \"optional\""),
            );
            true
        }
    };
    if raw.client_auth.is_some() && raw.client_ca.is_none() {
        c.invalid(
            subject,
            &format!("{field}.client_auth"),
            span.clone(),
            "needs `client_ca`, the CA client certificates are verified against",
        );
    }
    let tls = ListenerTls {
        cert: secret::path(&raw.cert, c),
        key: secret::path(&raw.key, c),
        client_ca: raw.client_ca.as_ref().map(|p| secret::path(p, c)),
        client_cert_required,
        handshake_timeout: c.duration(
            subject,
            &format!("{field}.handshake_timeout"),
            raw.handshake_timeout.as_ref(),
            ListenerTls::DEFAULT_HANDSHAKE_TIMEOUT,
            Duration::from_millis(100)..=Duration::from_secs(60),
        ),
    };
    if let Err(reason) = crate::http::tls::check(&tls) {
        c.invalid(subject, field, span, reason);
        return None;
    }
    Some(tls)
}
