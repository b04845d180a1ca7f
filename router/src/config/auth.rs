//! `[[auth]]`: the authenticators listeners name in `auth = [...]`.
//!
//! ```toml
//! [[auth]]
//! name       = "site-idp"
//! kind       = "jwt"
//! jwks_file  = "jwks.json"            # or secret_file (HS*) / public_key_file (PEM)
//! algorithms = ["ES256"]              # pinned: a token signed otherwise is refused
//! issuer     = "https://idp.example"  # optional: `iss` must be this
//! audience   = "switchyard"           # optional: `aud` must hold one of these
//! principal  = "sub"                  # the claim naming the principal (default)
//! leeway     = "5s"                   # clock skew allowed on exp/nbf (default 5s, at most 5m)
//! max_token_size = "8KiB"             # longer tokens are refused unread
//!
//! [[auth]]
//! name        = "fleet"
//! kind        = "token"
//! tokens_file = "tokens.toml"         # principal = "sha256 hex of the token"
//! ```
//!
//! Key and token files are read when the config is loaded and again by
//! every reload; the router watches them, so a rotated file reloads on its
//! own. A broken new file fails that reload: the keys in force stay.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Serialize;

use super::checker::Checker;
use super::error::Subject;
use super::raw::{OneOrMany, RawAuth, S};
use super::secret::{self, Secret};
use super::units::serialize_duration;

/// The name a listener writes in `auth = [...]` to accept requests
/// without credentials. Not a valid `[[auth]]` name.
pub const ANONYMOUS: &str = "anonymous";

/// One `[[auth]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Authenticator {
    /// Its name, unique among `[[auth]]` entries, named by listeners.
    pub name: String,
    /// What it checks.
    pub kind: AuthKind,
}

/// The kinds of authenticator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// `kind = "jwt"`: bearer JSON Web Tokens.
    Jwt(JwtAuth),
    /// `kind = "token"`: static bearer tokens, kept as SHA-256 hashes.
    Token(TokenAuth),
    /// `kind = "mtls"`: the client certificate a TLS listener verified
    /// (its `tls.client_ca`); the principal is one of its names.
    Mtls(CertName),
}

/// Which name of a client certificate is the principal
/// (`principal = "subject_cn"`, the default, `"san_dns"`, `"san_email"`
/// or `"san_uri"`: the first such SAN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CertName {
    /// The subject's common name.
    SubjectCn,
    /// The first DNS subject alternative name.
    SanDns,
    /// The first e-mail subject alternative name.
    SanEmail,
    /// The first URI subject alternative name (e.g. a SPIFFE id).
    SanUri,
}

/// A JWT issuer's settings. All reload live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JwtAuth {
    /// Where the verification keys come from.
    pub keys: JwtKeys,
    /// The algorithms a token may be signed with; anything else (`none`
    /// included) is refused. Required; each must suit the keys (HS* for a
    /// secret, RS*/PS*/ES*/EdDSA for public keys).
    pub algorithms: Vec<Algorithm>,
    /// When set, a token's `iss` must equal it (and must be present).
    pub issuer: Option<String>,
    /// When not empty, a token's `aud` must name one of these (and must be
    /// present).
    pub audience: Vec<String>,
    /// The claim whose value (a string) names the principal. Default `sub`.
    pub principal: String,
    /// Clock skew allowed when checking `exp` and `nbf`. Default 5s; 0s to
    /// 5m.
    #[serde(serialize_with = "serialize_duration")]
    pub leeway: Duration,
    /// Tokens longer than this, in bytes, are refused before any decoding.
    /// Default 8 KiB; 256 B to 64 KiB.
    pub max_token_size: usize,
}

impl JwtAuth {
    /// Default for [`JwtAuth::leeway`].
    pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);
    /// Default for [`JwtAuth::max_token_size`].
    pub const DEFAULT_MAX_TOKEN_SIZE: usize = 8 << 10;
}

/// A JWT issuer's verification keys, as read from their file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JwtKeys {
    /// `jwks_file`: a JSON Web Key Set; tokens pick a key by `kid`.
    Jwks {
        /// The file, relative paths resolved against the config's directory.
        path: PathBuf,
        /// Its text (a set may hold symmetric keys: redacted).
        text: Secret,
    },
    /// `secret` or `secret_file`: the HMAC secret of HS256/384/512.
    Secret(Secret),
    /// `public_key_file`: one PEM public key (RSA, EC or Ed25519).
    PublicKey {
        /// The file.
        path: PathBuf,
        /// Its PEM text.
        pem: String,
    },
}

/// Static tokens: each principal's tokens, as SHA-256 hashes (lowercase
/// hex). Reloads live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenAuth {
    /// `tokens_file`, relative paths resolved against the config's directory.
    pub path: PathBuf,
    /// Principal to the hashes of its tokens (more than one while a token
    /// is rotated).
    pub tokens: BTreeMap<String, Vec<[u8; 32]>>,
}

impl Authenticator {
    /// The files this entry reads, which the router watches.
    pub fn files(&self) -> Vec<PathBuf> {
        match &self.kind {
            AuthKind::Jwt(j) => match &j.keys {
                JwtKeys::Jwks { path, .. } | JwtKeys::PublicKey { path, .. } => vec![path.clone()],
                JwtKeys::Secret(_) => Vec::new(),
            },
            AuthKind::Token(t) => vec![t.path.clone()],
            AuthKind::Mtls(_) => Vec::new(),
        }
    }
}

/// Reads a listener's `auth = [...]`: names of `[[auth]]` entries
/// (`known`) or `"anonymous"`, at least one, none twice.
pub(crate) fn read_list(
    value: Option<&S<Vec<S<String>>>>,
    field: &str,
    subject: &Subject,
    known: &[String],
    c: &mut Checker<'_>,
) -> Option<Vec<String>> {
    let list = value?;
    if list.get_ref().is_empty() {
        c.invalid(
            subject,
            field,
            list.span(),
            "lists no authenticator; write [\"anonymous\"] to accept requests without credentials",
        );
        return Some(Vec::new());
    }
    let mut names: Vec<String> = Vec::new();
    for name in list.get_ref() {
        let n = name.get_ref();
        if names.contains(n) {
            c.invalid(
                subject,
                field,
                name.span(),
                format!("{n:?} is listed twice"),
            );
        } else if n != ANONYMOUS && !known.contains(n) {
            let hint = super::checker::closest(n, known.iter().map(String::as_str))
                .map_or_else(String::new, |m| format!(" (did you mean {m:?}?)"));
            c.invalid(
                subject,
                field,
                name.span(),
                format!("{n:?} is not an [[auth]] entry nor \"anonymous\"{hint}"),
            );
        }
        names.push(n.clone());
    }
    Some(names)
}

/// The fields only a `jwt` entry has, and only a `token` entry has.
const JWT_FIELDS: [&str; 10] = [
    "jwks_file",
    "secret",
    "secret_file",
    "public_key_file",
    "algorithms",
    "issuer",
    "audience",
    "principal",
    "leeway",
    "max_token_size",
];

/// Reads one `[[auth]]`.
pub(crate) fn build(
    raw: &RawAuth,
    subject: &Subject,
    c: &mut Checker<'_>,
) -> Option<Authenticator> {
    let name = raw.name.get_ref().clone();
    if name == ANONYMOUS {
        c.invalid(
            subject,
            "name",
            raw.name.span(),
            "\"anonymous\" is reserved: listeners write it to accept requests without credentials",
        );
    }
    let kind = match raw.kind.get_ref().as_str() {
        "jwt" => AuthKind::Jwt(build_jwt(raw, subject, c)?),
        "token" => {
            let jwt_written = [
                raw.jwks_file.as_ref().map(S::span),
                raw.secret.as_ref().map(S::span),
                raw.secret_file.as_ref().map(S::span),
                raw.public_key_file.as_ref().map(S::span),
                raw.algorithms.as_ref().map(S::span),
                raw.issuer.as_ref().map(S::span),
                raw.audience.as_ref().map(S::span),
                raw.principal.as_ref().map(S::span),
                raw.leeway.as_ref().map(S::span),
                raw.max_token_size.as_ref().map(S::span),
            ];
            for (field, span) in JWT_FIELDS.iter().zip(jwt_written) {
                if let Some(span) = span {
                    c.invalid(
                        subject,
                        field,
                        span,
                        "has no effect on a `token` authenticator",
                    );
                }
            }
            AuthKind::Token(build_tokens(raw, subject, c)?)
        }
        "mtls" => {
            let written = [
                ("jwks_file", raw.jwks_file.as_ref().map(S::span)),
                ("secret", raw.secret.as_ref().map(S::span)),
                ("secret_file", raw.secret_file.as_ref().map(S::span)),
                ("public_key_file", raw.public_key_file.as_ref().map(S::span)),
                ("algorithms", raw.algorithms.as_ref().map(S::span)),
                ("issuer", raw.issuer.as_ref().map(S::span)),
                ("audience", raw.audience.as_ref().map(S::span)),
                ("leeway", raw.leeway.as_ref().map(S::span)),
                ("max_token_size", raw.max_token_size.as_ref().map(S::span)),
                ("tokens_file", raw.tokens_file.as_ref().map(S::span)),
            ];
            for (field, span) in written {
                if let Some(span) = span {
                    c.invalid(
                        subject,
                        field,
                        span,
                        "has no effect on an `mtls` authenticator",
                    );
                }
            }
            let name = match raw.principal.as_ref().map(|p| p.get_ref().as_str()) {
                None | Some("subject_cn") => CertName::SubjectCn,
                Some("san_dns") => CertName::SanDns,
                Some("san_email") => CertName::SanEmail,
                Some("san_uri") => CertName::SanUri,
                Some(other) => {
                    c.invalid(
                        subject,
                        "principal",
                        raw.principal.as_ref().map_or(0..0, S::span),
                        format!("unknown certificate name {other:?}; expected \"subject_cn\", \"san_dns\", \"san_email\" or \"san_uri\""),
                    );
                    return None;
                }
            };
            AuthKind::Mtls(name)
        }
        other => {
            c.invalid(
                subject,
                "kind",
                raw.kind.span(),
                format!("unknown kind {other:?}; expected \"jwt\", \"token\" or \"mtls\""),
            );
            return None;
        }
    };
    Some(Authenticator { name, kind })
}

fn build_jwt(raw: &RawAuth, subject: &Subject, c: &mut Checker<'_>) -> Option<JwtAuth> {
    if let Some(t) = &raw.tokens_file {
        c.invalid(
            subject,
            "tokens_file",
            t.span(),
            "has no effect on a `jwt` authenticator",
        );
    }
    let algorithms = match &raw.algorithms {
        None => {
            c.invalid(
                subject,
                "algorithms",
                raw.name.span(),
                "is required: pin the algorithms tokens are signed with, e.g. [\"ES256\"]",
            );
            Vec::new()
        }
        Some(list) if list.get_ref().is_empty() => {
            c.invalid(subject, "algorithms", list.span(), "lists no algorithm");
            Vec::new()
        }
        Some(list) => list
            .get_ref()
            .iter()
            .filter_map(|a| match parse_algorithm(a.get_ref()) {
                Ok(alg) => Some(alg),
                Err(reason) => {
                    c.invalid(subject, "algorithms", a.span(), reason);
                    None
                }
            })
            .collect(),
    };
    let written = [
        raw.jwks_file.is_some(),
        raw.secret.is_some() || raw.secret_file.is_some(),
        raw.public_key_file.is_some(),
    ];
    if written.iter().filter(|w| **w).count() != 1 {
        c.invalid(
            subject,
            "jwks_file",
            raw.name.span(),
            "write exactly one of `jwks_file`, `secret` / `secret_file` or `public_key_file`",
        );
        return None;
    }
    let keys = if let Some(file) = &raw.jwks_file {
        let (path, text) = key_file(
            "jwks_file",
            file,
            |t| check_jwks(t, &algorithms),
            subject,
            c,
        )?;
        JwtKeys::Jwks {
            path,
            text: Secret::new(text),
        }
    } else if let Some(file) = &raw.public_key_file {
        let (path, pem) = key_file(
            "public_key_file",
            file,
            |t| check_pem(t, &algorithms),
            subject,
            c,
        )?;
        JwtKeys::PublicKey { path, pem }
    } else {
        let secret = secret::read(
            "secret",
            raw.secret.as_ref(),
            raw.secret_file.as_ref(),
            subject,
            c,
        )?;
        let span = raw
            .secret
            .as_ref()
            .or(raw.secret_file.as_ref())
            .map_or(0..0, S::span);
        if let Some(bad) = algorithms.iter().find(|a| !is_hmac(**a)) {
            c.invalid(
                subject,
                "algorithms",
                span.clone(),
                format!("{bad:?} needs a public key; a secret signs HS256, HS384 or HS512 only"),
            );
        }
        if secret.expose().len() < 32 {
            c.invalid(
                subject,
                "secret",
                span,
                "is shorter than 32 bytes: an HMAC secret that short can be guessed",
            );
        }
        JwtKeys::Secret(secret)
    };
    let audience = match &raw.audience {
        None => Vec::new(),
        Some(a) => match a.get_ref() {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(list) => list.iter().map(|s| s.get_ref().clone()).collect(),
        },
    };
    if let Some(a) = &raw.audience
        && audience.iter().any(String::is_empty)
    {
        c.invalid(subject, "audience", a.span(), "holds an empty audience");
    }
    let principal = raw
        .principal
        .as_ref()
        .map_or_else(|| "sub".to_owned(), |p| p.get_ref().clone());
    if let Some(p) = &raw.principal
        && p.get_ref().is_empty()
    {
        c.invalid(
            subject,
            "principal",
            p.span(),
            "is empty; name a claim, e.g. \"sub\"",
        );
    }
    Some(JwtAuth {
        keys,
        algorithms,
        issuer: raw.issuer.as_ref().map(|i| i.get_ref().clone()),
        audience,
        principal,
        leeway: c.duration(
            subject,
            "leeway",
            raw.leeway.as_ref(),
            JwtAuth::DEFAULT_LEEWAY,
            Duration::ZERO..=Duration::from_secs(300),
        ),
        max_token_size: c.size(
            subject,
            "max_token_size",
            raw.max_token_size.as_ref(),
            JwtAuth::DEFAULT_MAX_TOKEN_SIZE,
            256..=64 << 10,
        ),
    })
}

fn build_tokens(raw: &RawAuth, subject: &Subject, c: &mut Checker<'_>) -> Option<TokenAuth> {
    let Some(file) = &raw.tokens_file else {
        c.invalid(
            subject,
            "tokens_file",
            raw.name.span(),
            "is required: a file of `principal = \"<sha256 hex of the token>\"` lines",
        );
        return None;
    };
    let path = secret::path(file, c);
    let text = match read_file(&path) {
        Ok(text) => text,
        Err(reason) => {
            c.invalid(subject, "tokens_file", file.span(), reason);
            return None;
        }
    };
    match parse_tokens(&text) {
        Ok(tokens) => Some(TokenAuth { path, tokens }),
        Err(reason) => {
            c.invalid(
                subject,
                "tokens_file",
                file.span(),
                format!("{}: {reason}", path.display()),
            );
            None
        }
    }
}

/// Reads the key file at `file` (the value of `field`) and checks its text
/// with `check`; what fails is reported at the field.
fn key_file(
    field: &str,
    file: &S<String>,
    check: impl Fn(&str) -> Result<(), String>,
    subject: &Subject,
    c: &mut Checker<'_>,
) -> Option<(PathBuf, String)> {
    let path = secret::path(file, c);
    let checked = read_file(&path).and_then(|text| match check(&text) {
        Ok(()) => Ok(text),
        Err(reason) => Err(format!("{}: {reason}", path.display())),
    });
    match checked {
        Ok(text) => Some((path, text)),
        Err(reason) => {
            c.invalid(subject, field, file.span(), reason);
            None
        }
    }
}

/// The largest key or token file read: such files are a few kilobytes.
const MAX_KEY_FILE: u64 = 1 << 20;

fn read_file(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_KEY_FILE + 1).read_to_string(&mut text))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(format!("{} is larger than 1 MiB", path.display()));
    }
    Ok(text)
}

/// An algorithm name as JWT headers write it.
fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    const ALLOWED: [(&str, Algorithm); 12] = [
        ("HS256", Algorithm::HS256),
        ("HS384", Algorithm::HS384),
        ("HS512", Algorithm::HS512),
        ("RS256", Algorithm::RS256),
        ("RS384", Algorithm::RS384),
        ("RS512", Algorithm::RS512),
        ("PS256", Algorithm::PS256),
        ("PS384", Algorithm::PS384),
        ("PS512", Algorithm::PS512),
        ("ES256", Algorithm::ES256),
        ("ES384", Algorithm::ES384),
        ("EdDSA", Algorithm::EdDSA),
    ];
    ALLOWED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| *a)
        .ok_or_else(|| {
            let names: Vec<&str> = ALLOWED.iter().map(|(n, _)| *n).collect();
            format!(
                "unknown algorithm {name:?}; expected one of {}",
                names.join(", ")
            )
        })
}

fn is_hmac(a: Algorithm) -> bool {
    matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// Whether `text` is a key set whose every key decodes and suits one of
/// `algorithms`. The auth module builds its keys with [`jwks_keys`].
fn check_jwks(text: &str, algorithms: &[Algorithm]) -> Result<(), String> {
    jwks_keys(text, algorithms).map(drop)
}

/// One key of a key set: its `kid`, the JWK's own `alg` if it names one,
/// and the key.
pub type JwksKey = (Option<String>, Option<Algorithm>, DecodingKey);

/// The keys of a JWKS text that one of `algorithms` can use: `(kid, the
/// JWK's own `alg` if it names one, key)`. Keys for other algorithms (an
/// identity provider's set often holds several) and key types this
/// router cannot verify with are skipped.
///
/// # Errors
/// Why the text is not such a set (invalid JSON, a usable key that does
/// not decode, no usable key at all).
pub fn jwks_keys(text: &str, algorithms: &[Algorithm]) -> Result<Vec<JwksKey>, String> {
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(text).map_err(|e| format!("not a JSON Web Key Set: {e}"))?;
    if set.keys.is_empty() {
        return Err("holds no key".into());
    }
    let mut keys = Vec::with_capacity(set.keys.len());
    for (i, jwk) in set.keys.iter().enumerate() {
        let kid = jwk.common.key_id.clone();
        let which = kid
            .as_deref()
            .map_or_else(|| format!("key #{}", i + 1), |k| format!("key {k:?}"));
        let alg = match jwk.common.key_algorithm {
            Some(a) => match Algorithm::try_from(a) {
                Ok(alg) if algorithms.contains(&alg) => Some(alg),
                // An encryption key, or one for an algorithm not pinned.
                _ => continue,
            },
            None => None,
        };
        if matches!(
            jwk.algorithm,
            jsonwebtoken::jwk::AlgorithmParameters::Other(_)
        ) {
            continue;
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("{which}: {e}"))?;
        if algorithms.iter().any(|a| a.family() == key.family()) {
            keys.push((kid, alg, key));
        }
    }
    if keys.is_empty() {
        return Err(format!(
            "holds no key for {}",
            algorithms
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(keys)
}

/// The key of a PEM public key file, for one of `algorithms`.
///
/// # Errors
/// Why it is not a PEM key the pinned algorithms can use.
pub fn pem_key(pem: &str, algorithms: &[Algorithm]) -> Result<DecodingKey, String> {
    let first = algorithms.first().ok_or("no algorithm is pinned")?;
    if algorithms.iter().any(|a| a.family() != first.family()) {
        return Err(
            "one public key serves one family of algorithms (RS*/PS*, ES* or EdDSA)".into(),
        );
    }
    let bytes = pem.as_bytes();
    let key = match first.family() {
        jsonwebtoken::AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(bytes),
        jsonwebtoken::AlgorithmFamily::Ec => DecodingKey::from_ec_pem(bytes),
        jsonwebtoken::AlgorithmFamily::Ed => DecodingKey::from_ed_pem(bytes),
        jsonwebtoken::AlgorithmFamily::Hmac => {
            return Err("HS* algorithms take a `secret`, not a public key".into());
        }
    };
    key.map_err(|e| format!("not a PEM public key for {first:?}: {e}"))
}

fn check_pem(pem: &str, algorithms: &[Algorithm]) -> Result<(), String> {
    pem_key(pem, algorithms).map(drop)
}

/// Reads a tokens file: `principal = "hex"` or `principal = ["hex", ...]`.
fn parse_tokens(text: &str) -> Result<BTreeMap<String, Vec<[u8; 32]>>, String> {
    let table: BTreeMap<String, toml::Value> =
        toml::from_str(text).map_err(|e| format!("not a tokens file: {}", e.message()))?;
    let mut tokens = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for (principal, value) in table {
        let hexes: Vec<&str> = match &value {
            toml::Value::String(s) => vec![s.as_str()],
            toml::Value::Array(items) => items.iter().filter_map(toml::Value::as_str).collect(),
            _ => Vec::new(),
        };
        if hexes.is_empty() || matches!(&value, toml::Value::Array(a) if a.len() != hexes.len()) {
            return Err(format!(
                "{principal:?}: write the SHA-256 of its token as 64 hex digits, or a list of them"
            ));
        }
        let mut hashes = Vec::with_capacity(hexes.len());
        for hex in hexes {
            let hash = parse_sha256(hex).ok_or_else(|| {
                format!(
                    "{principal:?}: the value is not a SHA-256 in hex (64 digits); write the hash of the token, never the token (`printf %s TOKEN | sha256sum`)"
                )
            })?;
            if !seen.insert(hash) {
                return Err(format!("{principal:?}: a token hash is listed twice"));
            }
            hashes.push(hash);
        }
        tokens.insert(principal, hashes);
    }
    if tokens.is_empty() {
        return Err("lists no token".into());
    }
    Ok(tokens)
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let digit = |b: u8| char::from(b).to_digit(16);
        let value = digit(pair[0])? * 16 + digit(pair[1])?;
        out[i] = u8::try_from(value).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_files_hold_hashes_only() {
        let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let t = parse_tokens(&format!(
            "dev-1 = \"{hash}\"\nops = [\"{}\"]\n",
            "a".repeat(64)
        ))
        .expect("valid");
        assert_eq!(t.len(), 2);
        assert_eq!(t["dev-1"][0][0], 0x9f);
        let e = parse_tokens("dev-1 = \"hunter2\"\n").expect_err("a token, not a hash");
        assert!(e.contains("never the token"), "{e}");
        assert!(
            !e.contains("hunter2"),
            "a mistaken token must not be echoed: {e}"
        );
        let e = parse_tokens(&format!("a = \"{hash}\"\nb = \"{hash}\"\n")).expect_err("dup");
        assert!(e.contains("listed twice"), "{e}");
        assert!(parse_tokens("").is_err());
        assert!(parse_tokens("a = 1").is_err());
    }

    use crate::config::fixture::{base, problems, valid};

    const SECRET: &str = "a secret of thirty-two bytes or more, for tests";

    fn secured(extra: &str) -> String {
        format!(
            "{}\n[[input]]\nname = \"api\"\nkind = \"http\"\nlisten = \"127.0.0.1:0\"\nauth = [\"idp\"]\n\n[[auth]]\nname = \"idp\"\nkind = \"jwt\"\nsecret = \"{SECRET}\"\nalgorithms = [\"HS256\"]\n{extra}",
            base("auth = [\"anonymous\"]", "", "")
        )
    }

    #[test]
    fn a_secured_file_reads_and_names_its_listeners_auth() {
        let text = format!(
            "[router]\nadmin_auth = [\"idp\", \"anonymous\"]\n{}",
            secured("")
        );
        let config = valid(&text);
        assert!(config.secured());
        assert_eq!(
            config.router.admin_auth.as_deref(),
            Some(&["idp".to_owned(), "anonymous".to_owned()][..])
        );
        let AuthKind::Jwt(j) = &config.auth[0].kind else {
            panic!("jwt")
        };
        assert_eq!(j.algorithms, [Algorithm::HS256]);
        assert_eq!(j.principal, "sub");
        assert_eq!(j.leeway, JwtAuth::DEFAULT_LEEWAY);
        // Secrets never show.
        let shown = format!(
            "{config:?}{}",
            serde_json::to_string(&config).expect("json")
        );
        assert!(!shown.contains(SECRET), "{shown}");
    }

    #[test]
    fn a_secured_file_must_say_whom_each_listener_accepts() {
        let got = problems(&secured(""));
        assert!(
            got.iter()
                .any(|p| p.contains("[router] admin_auth is required")),
            "{got:#?}"
        );
        let text = format!("[router]\nadmin_auth = [\"anonymous\"]\n{}", secured(""))
            .replace("auth = [\"idp\"]\n", "");
        let got = problems(&text);
        assert!(
            got.iter()
                .any(|p| p.contains("input \"api\": `auth` is required")),
            "{got:#?}"
        );
    }

    #[test]
    fn bad_auth_entries_are_each_reported() {
        let text = format!(
            "[router]\nadmin_auth = [\"idq\"]\n{}\n[[auth]]\nname = \"anonymous\"\nkind = \"token\"\ntokens_file = \"/nonexistent/tokens.toml\"\nalgorithms = [\"HS256\"]\n\n[[auth]]\nname = \"weak\"\nkind = \"jwt\"\nsecret = \"short\"\nalgorithms = [\"none\", \"RS256\"]\n",
            secured("")
        );
        let got = problems(&text).join("\n");
        for needle in [
            "\"idq\" is not an [[auth]] entry nor \"anonymous\" (did you mean \"idp\"?)",
            "\"anonymous\" is reserved",
            "cannot read /nonexistent/tokens.toml",
            "algorithms: has no effect on a `token` authenticator",
            "unknown algorithm \"none\"",
            "RS256 needs a public key",
            "shorter than 32 bytes",
        ] {
            assert!(got.contains(needle), "{needle:?} not in:\n{got}");
        }
        assert!(!got.contains("short\""), "a secret is never echoed:\n{got}");
    }

    #[test]
    fn acl_rules_are_checked() {
        let text = format!(
            "[router]\nadmin_auth = [\"idp\"]\n{}\n[[acl]]\npublish = [\"a.b\"]\n\n[[acl]]\nprincipals = [\"*\"]\npublish = [\"a.x{{principal}}\"]\nadmin = [\"rule-the-world\"]\n",
            secured("")
        );
        let got = problems(&text).join("\n");
        for needle in [
            "acl #1: principals: is required",
            "must fill a whole token",
            "unknown scope \"rule-the-world\"",
        ] {
            assert!(got.contains(needle), "{needle:?} not in:\n{got}");
        }
    }

    #[test]
    fn secured_zeromq_entries_say_whether_their_peers_are_anonymous() {
        let text = format!("[router]\nadmin_auth = [\"idp\"]\n{}", secured(""))
            .replace("auth = [\"anonymous\"]\n", "");
        let got = problems(&text).join("\n");
        // base() has a NULL zmq-pull input; its zmq-push output has no
        // subscribers to check.
        assert!(
            got.contains("input \"in\": its peers do not authenticate"),
            "{got}"
        );
        assert!(!got.contains("output \"out\""), "{got}");
        let ok = text.replace(
            "bind = \"tcp://127.0.0.1:5556\"",
            "bind = \"tcp://127.0.0.1:5556\"\nauth = [\"anonymous\"]",
        );
        valid(&ok);
        let bad = text.replace(
            "bind = \"tcp://127.0.0.1:5556\"",
            "bind = \"tcp://127.0.0.1:5556\"\nauth = [\"idp\"]\non_forbidden = \"shrug\"",
        );
        let got = problems(&bad).join("\n");
        assert!(got.contains("`auth` can only say [\"anonymous\"]"), "{got}");
        assert!(got.contains("on_forbidden"), "{got}");
        let contradiction = text.replace(
            "bind = \"tcp://127.0.0.1:5556\"",
            "bind = \"tcp://127.0.0.1:5556\"\nauth = [\"anonymous\"]\nplain = { users = { a = \"b\" } }",
        );
        let got = problems(&contradiction).join("\n");
        assert!(
            got.contains("contradicts the `plain` or `curve` users"),
            "{got}"
        );
    }

    #[test]
    fn anonymous_listeners_beyond_loopback_are_warned_about() {
        let open = valid(&base("", "", "").replace(
            "[[output]]",
            "[[input]]\nname = \"api\"\nkind = \"http\"\nlisten = \"0.0.0.0:8080\"\n\n[[output]]",
        ));
        let w = open.security_warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("input \"api\" listens on 0.0.0.0:8080"),
            "{w:?}"
        );
        let shut = valid(
            &format!("[router]\nadmin_auth = [\"idp\"]\n{}", secured(""))
                .replace("127.0.0.1:0", "0.0.0.0:8080"),
        );
        assert!(shut.security_warnings().is_empty());
    }

    #[test]
    fn algorithms_are_named_as_in_headers() {
        assert_eq!(parse_algorithm("ES256"), Ok(Algorithm::ES256));
        assert!(parse_algorithm("none").is_err());
        assert!(parse_algorithm("es256").is_err());
    }
}
