//! TLS on an HTTP listener (rustls, ring): the certificate and key from PEM
//! files, optional client-certificate verification against a CA file, a
//! handshake timeout, and reloads that keep open connections.
//!
//! - TLS 1.2 and 1.3 only (all rustls speaks); key exchange pinned to
//!   X25519 then P-256, so a client cannot ask for the dearer P-384; ALPN
//!   `http/1.1`, the one protocol the listener serves.
//! - [`Tls::reload`] reads the files again and swaps the server config:
//!   new connections get the new certificate, open ones keep theirs. A
//!   pair that does not load leaves the old one in force, counted in
//!   `switchyard_tls_reloads_total{listener,result="failure"}` and logged.
//! - A handshake that fails or takes longer than the timeout (a slowloris,
//!   plain HTTP sent to the TLS port) closes the connection and counts
//!   `switchyard_auth_failures_total{listener,reason="tls_handshake"}`.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use arc_swap::ArcSwap;
use prometheus::{IntCounter, IntCounterVec};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::metrics::Registry;

/// A listener's TLS settings.
pub use crate::config::ListenerTls as Settings;

/// What the verified client certificate says, for mTLS principals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject's common name.
    pub subject_cn: Option<String>,
    /// DNS names of the subject alternative names.
    pub dns: Vec<String>,
    /// E-mail addresses of the subject alternative names.
    pub email: Vec<String>,
    /// URIs of the subject alternative names (SPIFFE ids, ...).
    pub uri: Vec<String>,
}

impl ClientCert {
    /// Reads the names of a DER certificate; `None` if it does not parse
    /// (it verified, so only an oddity of the parser gets here).
    fn from_der(der: &[u8]) -> Option<Self> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject_cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let mut out = Self {
            subject_cn,
            ..Self::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => out.dns.push((*d).to_owned()),
                    GeneralName::RFC822Name(e) => out.email.push((*e).to_owned()),
                    GeneralName::URI(u) => out.uri.push((*u).to_owned()),
                    _ => {}
                }
            }
        }
        Some(out)
    }
}

/// The TLS families, registered once per registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    reloads: IntCounterVec,
    failures: IntCounterVec,
}

impl Metrics {
    /// The `success` and `failure` counters of `name`'s reloads.
    pub fn reload_counters(&self, name: &str) -> (IntCounter, IntCounter) {
        (
            self.reloads.with_label_values(&[name, "success"]),
            self.reloads.with_label_values(&[name, "failure"]),
        )
    }

    /// Registers `switchyard_tls_reloads_total{listener,result}`; handshake
    /// failures count into `failures`, the auth failure family.
    pub fn register(registry: &Registry, failures: IntCounterVec) -> Self {
        Self {
            reloads: registry.counter_vec(
                "switchyard_tls_reloads_total",
                "Certificate reloads of TLS listeners, by listener and result (success, failure).",
                &["listener", "result"],
            ),
            failures,
        }
    }
}

/// A listener's TLS: the server config in force and how to reload it.
pub struct Tls {
    listener: String,
    settings: Settings,
    acceptor: ArcSwap<TlsAcceptor>,
    handshake_failures: IntCounter,
    reloaded: IntCounter,
    reload_failed: IntCounter,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("listener", &self.listener)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the files of `settings` for `listener`.
    ///
    /// # Errors
    /// What is wrong with the files.
    pub fn new(listener: &str, settings: Settings, metrics: &Metrics) -> Result<Arc<Self>, String> {
        let config = server_config(&settings)?;
        Ok(Arc::new(Self {
            listener: listener.to_owned(),
            handshake_failures: metrics
                .failures
                .with_label_values(&[listener, "tls_handshake"]),
            reloaded: metrics.reloads.with_label_values(&[listener, "success"]),
            reload_failed: metrics.reloads.with_label_values(&[listener, "failure"]),
            settings,
            acceptor: ArcSwap::from_pointee(TlsAcceptor::from(Arc::new(config))),
        }))
    }

    /// Reads the files again and, if they load, serves new connections
    /// with them; else keeps the pair in force (counted, logged).
    pub fn reload(&self) {
        match server_config(&self.settings) {
            Ok(config) => {
                self.acceptor
                    .store(Arc::new(TlsAcceptor::from(Arc::new(config))));
                self.reloaded.inc();
            }
            Err(e) => {
                self.reload_failed.inc();
                tracing::error!(listener = %self.listener, error = %e, "TLS certificate reload failed; the certificate in force stays");
            }
        }
    }

    /// Runs the handshake on `stream`, within the timeout.
    ///
    /// # Errors
    /// The handshake failed or timed out (counted).
    pub async fn accept(
        &self,
        stream: TcpStream,
    ) -> Result<(TlsStream<TcpStream>, Option<Arc<ClientCert>>), String> {
        let acceptor = self.acceptor.load_full();
        let result =
            tokio::time::timeout(self.settings.handshake_timeout, acceptor.accept(stream)).await;
        let stream = match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                self.handshake_failures.inc();
                return Err(e.to_string());
            }
            Err(_) => {
                self.handshake_failures.inc();
                return Err(format!(
                    "no handshake within {:?}",
                    self.settings.handshake_timeout
                ));
            }
        };
        let cert = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|c| ClientCert::from_der(c.as_ref()))
            .map(Arc::new);
        Ok((stream, cert))
    }
}

/// Something that reads certificate or key files and can read them again:
/// a TLS listener, an output's TLS client.
pub trait Reload: Send + Sync {
    /// Reads the files again; if they do not load, keeps what is in force
    /// (counted and logged).
    fn reload(&self);
}

impl Reload for Tls {
    fn reload(&self) {
        Tls::reload(self);
    }
}

/// Everything of a router that reads certificates, so a config reload can
/// have them read again. Held weakly: what stops drops out.
#[derive(Clone, Default)]
pub struct Reloads(Arc<Mutex<Vec<Weak<dyn Reload>>>>);

impl std::fmt::Debug for Reloads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_struct("Reloads").field("registered", &n).finish()
    }
}

impl Reloads {
    /// Adds one.
    pub fn register<R: Reload + 'static>(&self, what: &Arc<R>) {
        let mut list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        list.retain(|w| w.strong_count() > 0);
        let what: Arc<dyn Reload> = Arc::clone(what) as Arc<dyn Reload>;
        list.push(Arc::downgrade(&what));
    }

    /// Has every live one read its files again.
    pub fn reload_all(&self) {
        let live: Vec<Arc<dyn Reload>> = {
            let mut list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            list.retain(|w| w.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        for tls in live {
            tls.reload();
        }
    }
}

/// Checks that `settings`' files load (for config validation).
///
/// # Errors
/// What is wrong with them.
pub fn check(settings: &Settings) -> Result<(), String> {
    server_config(settings).map(drop)
}

fn server_config(s: &Settings) -> Result<rustls::ServerConfig, String> {
    let chain = read_certs(&s.cert)?;
    let key = PrivateKeyDer::from_pem_file(&s.key)
        .map_err(|e| format!("{}: no private key: {e}", s.key.display()))?;
    // ring, as the webhook client: rustls deprecates its provider for
    // lacking post-quantum key exchange, which the groups pinned here
    // (the issue's: X25519, then P-256) do not use anyway.
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![
        rustls::crypto::ring::kx_group::X25519,
        rustls::crypto::ring::kx_group::SECP256R1,
    ];
    let provider = Arc::new(provider);
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let builder = match &s.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if s.client_cert_required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("{}: {e}", ca.display()))?,
            )
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("{} and {}: {e}", s.cert.display(), s.key.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The certificates of a PEM file, at least one.
///
/// # Errors
/// The file cannot be read, holds something else, or no certificate.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no certificate", path.display()));
    }
    Ok(certs)
}
