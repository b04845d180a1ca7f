//! Authentication and permissions: who is calling, and what they may do.
//!
//! [`Security`] is built from the config's `[[auth]]` and `[[acl]]`
//! sections and the listeners' `auth = [...]` lists, and swapped whole on
//! every reload ([`Live`]), so new keys and rules apply to the next request
//! or message at once. A listener asks it to [`Security::authenticate`] a
//! request's bearer credential and gets a [`Caller`]: the principal and its
//! [`Grants`] (publish and subscribe patterns, admin scopes).
//!
//! - JWTs are verified by their issuer's pinned algorithms and keys
//!   (`auth/jwt.rs`); a verified token is cached by the SHA-256 of its text
//!   until it expires (bounded), so a client on a keep-alive connection
//!   pays for one verification, not one per request.
//! - Static tokens are kept as SHA-256 hashes; a presented token is hashed
//!   and looked up by its digest, so no comparison ever runs over the
//!   secret itself and timing says nothing about how close a guess came.
//! - Without `[[auth]]` and `[[acl]]` the router is not secured: every
//!   caller gets [`Grants::open`] and nothing is parsed.
//!
//! Metrics: `switchyard_auth_failures_total{listener,reason}` (reasons:
//! see [`Failure::reason`]) and `switchyard_acl_denied_total{listener,action}`
//! (actions: `publish`, `subscribe`, `admin`).

mod grants;
mod jwt;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use hyper::header::{AUTHORIZATION, HeaderMap};
use prometheus::IntCounterVec;

pub use grants::Grants;
use grants::Who;

use crate::config::{ANONYMOUS, AuthKind, CertName, Config, Scope};
use crate::http::tls::ClientCert;
use crate::metrics::Registry;

/// The security settings in force, swapped whole by a reload.
pub type Live = Arc<ArcSwap<Security>>;

/// Settings that secure nothing, for tests of the modules that ask.
#[cfg(test)]
pub(crate) fn open_for_tests() -> Live {
    let metrics = Metrics::register(&Registry::new());
    Arc::new(ArcSwap::from_pointee(Security::open(&metrics)))
}

/// The `listener` name of the admin listener.
pub const ADMIN_LISTENER: &str = "admin";

/// Why a credential was refused: the `reason` label of
/// `switchyard_auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// No credential, on a listener that does not accept anonymous callers.
    #[error("credentials required: send `Authorization: Bearer <token>`")]
    Missing,
    /// Not a bearer credential, or a token that does not parse (bad
    /// base64 or JSON, a missing principal or `exp` claim, two
    /// `Authorization` headers, a token in the query string where that is
    /// not accepted).
    #[error("the credential is malformed")]
    Malformed,
    /// The signature does not verify, or the static token is unknown.
    #[error("the credential does not verify")]
    BadSignature,
    /// `exp` has passed (beyond the leeway).
    #[error("the token has expired")]
    Expired,
    /// `nbf` is still ahead (beyond the leeway).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iss` is missing or not an accepted issuer.
    #[error("the token's issuer is not accepted here")]
    WrongIssuer,
    /// `aud` is missing or names none of the accepted audiences.
    #[error("the token's audience is not accepted here")]
    WrongAudience,
    /// The token's `kid` names no key the issuer has (or it names none
    /// and the issuer has several).
    #[error("the token's key is unknown")]
    UnknownKey,
    /// The header's `alg` is not one the issuer pins (`none` included).
    #[error("the token's algorithm is not accepted")]
    AlgorithmNotAllowed,
    /// The token is longer than `max_token_size`.
    #[error("the token is too large")]
    TooLarge,
}

impl Failure {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Failure::Missing => "missing",
            Failure::Malformed => "malformed",
            Failure::BadSignature => "bad_signature",
            Failure::Expired => "expired",
            Failure::NotYetValid => "not_yet_valid",
            Failure::WrongIssuer => "wrong_issuer",
            Failure::WrongAudience => "wrong_audience",
            Failure::UnknownKey => "unknown_key",
            Failure::AlgorithmNotAllowed => "algorithm_not_allowed",
            Failure::TooLarge => "too_large",
        }
    }
}

/// What a caller was refused, the `action` label of
/// `switchyard_acl_denied_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Publishing to a topic.
    Publish,
    /// Subscribing to a pattern (or receiving a topic).
    Subscribe,
    /// An admin endpoint without its scope.
    Admin,
}

impl Action {
    fn label(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
            Action::Admin => "admin",
        }
    }
}

/// The families auth counts into. Register once per registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    failures: IntCounterVec,
    denied: IntCounterVec,
}

impl Metrics {
    /// Registers `switchyard_auth_failures_total{listener,reason}` and
    /// `switchyard_acl_denied_total{listener,action}`.
    pub fn register(registry: &Registry) -> Self {
        Self {
            failures: registry.counter_vec(
                "switchyard_auth_failures_total",
                "Credentials refused, by listener and reason.",
                &["listener", "reason"],
            ),
            denied: registry.counter_vec(
                "switchyard_acl_denied_total",
                "Requests, messages and subscriptions refused by the ACL, by listener and action.",
                &["listener", "action"],
            ),
        }
    }
}

impl Metrics {
    /// The failure family, for failures counted elsewhere (TLS handshakes).
    pub fn failures(&self) -> IntCounterVec {
        self.failures.clone()
    }
}

/// An authenticated (or anonymous, where allowed) caller.
#[derive(Debug, Clone)]
pub struct Caller {
    principal: Option<Arc<str>>,
    grants: Arc<Grants>,
    /// Unix seconds after which the credential is no longer accepted (a
    /// JWT's `exp` plus leeway); `None` never expires.
    valid_until: Option<u64>,
}

impl Caller {
    /// The principal; `None` for an anonymous caller.
    pub fn principal(&self) -> Option<&Arc<str>> {
        self.principal.as_ref()
    }

    /// What the caller may do.
    pub fn grants(&self) -> &Grants {
        &self.grants
    }

    /// When the credential stops being accepted, in unix seconds.
    pub fn valid_until(&self) -> Option<u64> {
        self.valid_until
    }

    /// The principal for logs: its name or `anonymous`.
    pub fn shown(&self) -> &str {
        self.principal.as_deref().unwrap_or(ANONYMOUS)
    }
}

/// One authenticator, ready to check credentials.
enum Method {
    Jwt(jwt::Issuer),
    /// Token digest to principal.
    Tokens(HashMap<[u8; 32], Arc<str>>),
    /// The verified client certificate's name.
    Mtls(CertName),
}

/// What one listener accepts.
#[derive(Debug, Default)]
struct ListenerAuth {
    anonymous: bool,
    /// Indices into [`Security::methods`].
    methods: Vec<usize>,
    /// The longest credential read at all.
    max_token: usize,
}

/// A cached verification.
struct Cached {
    method: usize,
    caller: Caller,
}

/// The verified-token cache's bound.
const CACHE_ENTRIES: usize = 10_000;

/// The longest static token accepted.
const MAX_STATIC_TOKEN: usize = 4096;

/// The security settings of one config generation.
pub struct Security {
    secured: bool,
    metrics_open: bool,
    methods: Vec<(String, Method)>,
    listeners: HashMap<String, ListenerAuth>,
    rules: Vec<crate::config::AclRule>,
    anonymous: Arc<Grants>,
    open: Arc<Grants>,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
    metrics: Metrics,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("secured", &self.secured)
            .field(
                "authenticators",
                &self.methods.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

impl Security {
    /// Settings that let everyone do everything (no `[[auth]]`/`[[acl]]`).
    pub fn open(metrics: &Metrics) -> Self {
        Self {
            secured: false,
            metrics_open: true,
            methods: Vec::new(),
            listeners: HashMap::new(),
            rules: Vec::new(),
            anonymous: Arc::new(Grants::open()),
            open: Arc::new(Grants::open()),
            cache: Mutex::new(HashMap::new()),
            metrics: metrics.clone(),
        }
    }

    /// The settings of `config`.
    ///
    /// # Errors
    /// A key that does not decode (the config checked them when it was
    /// read; a file changed in between is caught here).
    pub fn build(config: &Config, metrics: &Metrics) -> Result<Self, String> {
        if !config.secured() {
            return Ok(Self::open(metrics));
        }
        let mut methods = Vec::with_capacity(config.auth.len());
        for a in &config.auth {
            let method = match &a.kind {
                AuthKind::Jwt(j) => {
                    Method::Jwt(jwt::Issuer::new(j).map_err(|e| format!("auth {:?}: {e}", a.name))?)
                }
                AuthKind::Token(t) => Method::Tokens(
                    t.tokens
                        .iter()
                        .flat_map(|(principal, hashes)| {
                            let principal: Arc<str> = Arc::from(principal.as_str());
                            hashes.iter().map(move |h| (*h, Arc::clone(&principal)))
                        })
                        .collect(),
                ),
                AuthKind::Mtls(name) => Method::Mtls(*name),
            };
            methods.push((a.name.clone(), method));
        }
        let mut listeners = HashMap::new();
        let lists = config
            .inputs
            .iter()
            .filter_map(|i| match &i.kind {
                crate::config::InputKind::Http(h) => Some((i.name.as_str(), h.auth.as_ref())),
                _ => None,
            })
            .chain(std::iter::once((
                ADMIN_LISTENER,
                config.router.admin_auth.as_ref(),
            )));
        for (listener, names) in lists {
            let mut l = ListenerAuth::default();
            for name in names.into_iter().flatten() {
                if name == ANONYMOUS {
                    l.anonymous = true;
                } else if let Some(idx) = methods.iter().position(|(n, _)| n == name) {
                    l.methods.push(idx);
                    l.max_token = l.max_token.max(match &methods[idx].1 {
                        Method::Jwt(j) => j.max_token_size(),
                        Method::Tokens(_) => MAX_STATIC_TOKEN,
                        Method::Mtls(_) => 0,
                    });
                }
            }
            listeners.insert(listener.to_owned(), l);
        }
        let rules = config.acl.clone();
        let anonymous = Arc::new(Grants::of(
            &rules,
            Who {
                principal: None,
                claims: None,
            },
        ));
        Ok(Self {
            secured: true,
            metrics_open: config.router.metrics_open,
            methods,
            listeners,
            rules,
            anonymous,
            open: Arc::new(Grants::open()),
            cache: Mutex::new(HashMap::new()),
            metrics: metrics.clone(),
        })
    }

    /// Whether permissions are enforced.
    pub fn secured(&self) -> bool {
        self.secured
    }

    /// Whether `/metrics` is served without the `metrics` scope.
    pub fn metrics_open(&self) -> bool {
        self.metrics_open
    }

    /// Authenticates a request to `listener` by its `Authorization:
    /// Bearer` header, or else by the client certificate the listener
    /// verified (`client_cert`, where an `mtls` authenticator is
    /// accepted); `query` is the request's query string, where a token
    /// (`access_token=`) is refused: it would end up in access logs. A
    /// refusal is counted.
    ///
    /// # Errors
    /// Why the request is refused.
    pub fn authenticate(
        &self,
        listener: &str,
        headers: &HeaderMap,
        query: Option<&str>,
        client_cert: Option<&ClientCert>,
    ) -> Result<Caller, Failure> {
        if !self.secured {
            return Ok(self.open_caller());
        }
        let in_query = query.is_some_and(|q| {
            q.split('&')
                .any(|kv| kv.split('=').next() == Some("access_token"))
        });
        let result = if in_query {
            Err(Failure::Malformed)
        } else {
            bearer(headers).and_then(|token| self.check(listener, token, client_cert))
        };
        if let Err(f) = result {
            self.count_failure(listener, f);
        }
        result
    }

    /// The caller a transport authenticated itself (a ZMTP PLAIN user, a
    /// CURVE key's name), or an anonymous one.
    pub fn caller_for(&self, principal: Option<Arc<str>>) -> Caller {
        if !self.secured {
            return self.open_caller();
        }
        let grants = match &principal {
            None => Arc::clone(&self.anonymous),
            Some(p) => Arc::new(Grants::of(
                &self.rules,
                Who {
                    principal: Some(p),
                    claims: None,
                },
            )),
        };
        Caller {
            principal,
            grants,
            valid_until: None,
        }
    }

    /// Counts one refusal by the ACL.
    pub fn count_denied(&self, listener: &str, action: Action) {
        self.metrics
            .denied
            .with_label_values(&[listener, action.label()])
            .inc();
    }

    /// Counts one refused credential.
    pub fn count_failure(&self, listener: &str, failure: Failure) {
        self.metrics
            .failures
            .with_label_values(&[listener, failure.reason()])
            .inc();
    }

    /// Whether `caller` has `scope`; a refusal is counted.
    pub fn allow_scope(&self, listener: &str, caller: &Caller, scope: Scope) -> bool {
        let ok = caller.grants.has_scope(scope);
        if !ok {
            self.count_denied(listener, Action::Admin);
        }
        ok
    }

    fn open_caller(&self) -> Caller {
        Caller {
            principal: None,
            grants: Arc::clone(&self.open),
            valid_until: None,
        }
    }

    fn check(
        &self,
        listener: &str,
        token: Option<&str>,
        client_cert: Option<&ClientCert>,
    ) -> Result<Caller, Failure> {
        let Some(l) = self.listeners.get(listener) else {
            return Err(Failure::Missing);
        };
        if token.is_none()
            && let Some(cert) = client_cert
        {
            for idx in &l.methods {
                if let Method::Mtls(name) = &self.methods[*idx].1 {
                    return match cert_principal(cert, *name) {
                        Some(p) => Ok(self.caller_for(Some(Arc::from(p)))),
                        None => Err(Failure::Malformed),
                    };
                }
            }
        }
        let Some(token) = token else {
            return if l.anonymous {
                Ok(Caller {
                    principal: None,
                    grants: Arc::clone(&self.anonymous),
                    valid_until: None,
                })
            } else {
                Err(Failure::Missing)
            };
        };
        if l.methods.is_empty() {
            // An anonymous-only listener: a credential it cannot check is
            // refused rather than ignored.
            return Err(Failure::BadSignature);
        }
        if token.len() > l.max_token {
            return Err(Failure::TooLarge);
        }
        let digest: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .expect("a SHA-256 digest is 32 bytes");
        let now = unix_now();
        if let Some(caller) = self.cached(&digest, l, now) {
            return Ok(caller);
        }
        for idx in &l.methods {
            if let Method::Tokens(tokens) = &self.methods[*idx].1
                && let Some(principal) = tokens.get(&digest)
            {
                let caller = self.caller_for(Some(Arc::clone(principal)));
                self.remember(digest, *idx, &caller, now);
                return Ok(caller);
            }
        }
        let issuers: Vec<(usize, &jwt::Issuer)> = l
            .methods
            .iter()
            .filter_map(|i| match &self.methods[*i].1 {
                Method::Jwt(j) => Some((*i, j)),
                Method::Tokens(_) | Method::Mtls(_) => None,
            })
            .collect();
        if issuers.is_empty() || !jwt::looks_like_jwt(token) {
            // Not a token this listener knows: an unknown static token
            // where static tokens are accepted, else a malformed JWT.
            let static_tokens = l
                .methods
                .iter()
                .any(|i| matches!(self.methods[*i].1, Method::Tokens(_)));
            return Err(if static_tokens || issuers.is_empty() {
                Failure::BadSignature
            } else {
                Failure::Malformed
            });
        }
        // Which issuer verifies it: those that pin its algorithm; of
        // several, the one whose `iss` it names, else those that require
        // no `iss`.
        let alg = jwt::peek_algorithm(token)?;
        let pinning: Vec<(usize, &jwt::Issuer)> =
            issuers.into_iter().filter(|(_, j)| j.pins(&alg)).collect();
        let candidates: Vec<(usize, &jwt::Issuer)> = match pinning.len() {
            0 => return Err(Failure::AlgorithmNotAllowed),
            1 => pinning,
            _ => {
                let iss = jwt::peek_issuer(token)?;
                let named: Vec<_> = pinning
                    .iter()
                    .copied()
                    .filter(|(_, j)| j.issuer().is_some() && j.issuer() == iss.as_deref())
                    .collect();
                if named.is_empty() {
                    pinning
                        .into_iter()
                        .filter(|(_, j)| j.issuer().is_none())
                        .collect()
                } else {
                    named
                }
            }
        };
        let mut first = Failure::WrongIssuer;
        for (n, (idx, issuer)) in candidates.iter().enumerate() {
            match issuer.verify(token) {
                Ok(v) => {
                    let grants = Arc::new(Grants::of(
                        &self.rules,
                        Who {
                            principal: Some(&v.principal),
                            claims: Some(&v.claims),
                        },
                    ));
                    let caller = Caller {
                        principal: Some(Arc::from(v.principal)),
                        grants,
                        valid_until: Some(v.valid_until),
                    };
                    self.remember(digest, *idx, &caller, now);
                    return Ok(caller);
                }
                Err(e) if n == 0 => first = e,
                Err(_) => {}
            }
        }
        Err(first)
    }

    fn cached(&self, digest: &[u8; 32], l: &ListenerAuth, now: u64) -> Option<Caller> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let hit = cache.get(digest)?;
        if hit.caller.valid_until.is_some_and(|until| until < now) {
            cache.remove(digest);
            return None;
        }
        // Cached for one listener, the token is good on another only if
        // that one accepts the same authenticator.
        l.methods.contains(&hit.method).then(|| hit.caller.clone())
    }

    fn remember(&self, digest: [u8; 32], method: usize, caller: &Caller, now: u64) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, c| c.caller.valid_until.is_none_or(|u| u >= now));
            if cache.len() >= CACHE_ENTRIES {
                // Bounded, not clever: a flood of distinct valid tokens
                // costs verifications, never memory.
                cache.clear();
            }
        }
        cache.insert(
            digest,
            Cached {
                method,
                caller: caller.clone(),
            },
        );
    }
}

/// The name of `cert` that `name` picks.
fn cert_principal(cert: &ClientCert, name: CertName) -> Option<&str> {
    match name {
        CertName::SubjectCn => cert.subject_cn.as_deref(),
        CertName::SanDns => cert.dns.first().map(String::as_str),
        CertName::SanEmail => cert.email.first().map(String::as_str),
        CertName::SanUri => cert.uri.first().map(String::as_str),
    }
    .filter(|p| !p.is_empty())
}

/// The bearer token of a request: `None` when it sends no
/// `Authorization` header.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, Failure> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Failure::Malformed);
    }
    let value = value.to_str().map_err(|_| Failure::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(Failure::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(Failure::Malformed);
    }
    Ok(Some(token))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
