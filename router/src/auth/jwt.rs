//! JWT verification for one issuer (`kind = "jwt"`), with `jsonwebtoken`.
//!
//! Everything `jsonwebtoken` leaves loose by default is set explicitly:
//! the algorithms are pinned per issuer (the header's `alg` is checked
//! against them before any key is touched, so `none` and an HS256 token
//! made with an RSA public key as its secret are refused as
//! `algorithm_not_allowed`), `exp` is required, `nbf` is checked when
//! present, `iss` and `aud` are required when configured, and the leeway
//! is the configured one (jsonwebtoken's default is 60 s).

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::Failure;
use crate::config::{JwtAuth, JwtKeys, jwks_keys, pem_key};

/// One verification key.
struct Key {
    /// The JWK's `kid`.
    kid: Option<String>,
    /// The JWK's own `alg`, when it names one: a token must use that.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

/// A configured issuer, ready to verify.
pub(crate) struct Issuer {
    keys: Vec<Key>,
    /// The pinned algorithms, each with its name as headers write it and
    /// its validation settings.
    validations: Vec<(Algorithm, String, Validation)>,
    issuer: Option<String>,
    principal: String,
    leeway: u64,
    max_token_size: usize,
}

/// A token that verified.
pub(crate) struct Verified {
    /// The principal claim's value.
    pub(crate) principal: String,
    /// Every claim.
    pub(crate) claims: Map<String, Value>,
    /// `exp`, in unix seconds, with the leeway added: when it stops being
    /// accepted.
    pub(crate) valid_until: u64,
}

/// The header fields read before verification.
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

impl Issuer {
    /// Builds the issuer's keys and validations.
    ///
    /// # Errors
    /// The key material does not decode (the config checked it when it
    /// was read, so only a bug gets here).
    pub(crate) fn new(config: &JwtAuth) -> Result<Self, String> {
        let keys = match &config.keys {
            JwtKeys::Jwks { text, .. } => jwks_keys(text.expose(), &config.algorithms)?
                .into_iter()
                .map(|(kid, alg, key)| Key { kid, alg, key })
                .collect(),
            JwtKeys::Secret(secret) => vec![Key {
                kid: None,
                alg: None,
                key: DecodingKey::from_secret(secret.expose().as_bytes())
                    .map_err(|e| e.to_string())?,
            }],
            JwtKeys::PublicKey { pem, .. } => vec![Key {
                kid: None,
                alg: None,
                key: pem_key(pem, &config.algorithms)?,
            }],
        };
        let validations = config
            .algorithms
            .iter()
            .map(|alg| {
                let mut v = Validation::new(*alg);
                v.leeway = config.leeway.as_secs();
                v.validate_exp = true;
                v.validate_nbf = true;
                let mut required = vec!["exp"];
                match &config.issuer {
                    Some(iss) => {
                        v.set_issuer(&[iss]);
                        required.push("iss");
                    }
                    None => v.iss = None,
                }
                if config.audience.is_empty() {
                    v.validate_aud = false;
                } else {
                    v.set_audience(&config.audience);
                    required.push("aud");
                }
                v.set_required_spec_claims(&required);
                (*alg, format!("{alg:?}"), v)
            })
            .collect();
        Ok(Self {
            keys,
            validations,
            issuer: config.issuer.clone(),
            principal: config.principal.clone(),
            leeway: config.leeway.as_secs(),
            max_token_size: config.max_token_size,
        })
    }

    /// The longest token it reads.
    pub(crate) fn max_token_size(&self) -> usize {
        self.max_token_size
    }

    /// Whether it pins the algorithm named `alg` (as headers write it).
    pub(crate) fn pins(&self, alg: &str) -> bool {
        self.validations.iter().any(|(_, name, _)| name == alg)
    }

    /// The `iss` this issuer requires, if any.
    pub(crate) fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// Verifies `token`.
    pub(crate) fn verify(&self, token: &str) -> Result<Verified, Failure> {
        if token.len() > self.max_token_size {
            return Err(Failure::TooLarge);
        }
        let header = read_header(token)?;
        let Some((alg, _, validation)) = self
            .validations
            .iter()
            .find(|(_, name, _)| *name == header.alg)
        else {
            return Err(Failure::AlgorithmNotAllowed);
        };
        let candidates: Vec<&Key> = self
            .keys
            .iter()
            .filter(|k| k.key.family() == alg.family())
            .collect();
        let key = match &header.kid {
            Some(kid) => candidates
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid.as_str()))
                .ok_or(Failure::UnknownKey)?,
            None if candidates.len() == 1 => &candidates[0],
            None => return Err(Failure::UnknownKey),
        };
        if key.alg.is_some_and(|a| a != *alg) {
            return Err(Failure::AlgorithmNotAllowed);
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation)
            .map_err(|e| failure(e.kind()))?;
        let claims = data.claims;
        let principal = match claims.get(&self.principal) {
            Some(Value::String(p)) if !p.is_empty() => p.clone(),
            _ => return Err(Failure::Malformed),
        };
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(Failure::Malformed)?;
        Ok(Verified {
            principal,
            claims,
            valid_until: exp.saturating_add(self.leeway),
        })
    }
}

/// The token's `iss` claim, read without verification: only to pick
/// which issuer verifies it.
///
/// # Errors
/// [`Failure::Malformed`]: the payload is not base64url JSON.
pub(crate) fn peek_issuer(token: &str) -> Result<Option<String>, Failure> {
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<Value>,
    }
    let payload = token.split('.').nth(1).ok_or(Failure::Malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| Failure::Malformed)?;
    let iss = serde_json::from_slice::<Iss>(&bytes)
        .map_err(|_| Failure::Malformed)?
        .iss;
    Ok(iss.and_then(|v| v.as_str().map(str::to_owned)))
}

/// Whether `token` has the shape of a JWT (three base64url parts).
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// The header's `alg`, read without verification: only to pick which
/// issuer verifies the token.
///
/// # Errors
/// [`Failure::Malformed`]: the header is not base64url JSON with an `alg`.
pub(crate) fn peek_algorithm(token: &str) -> Result<String, Failure> {
    read_header(token).map(|h| h.alg)
}

fn read_header(token: &str) -> Result<Header, Failure> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Failure::Malformed);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| Failure::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| Failure::Malformed)
}

fn failure(kind: &ErrorKind) -> Failure {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => Failure::BadSignature,
        ErrorKind::ExpiredSignature => Failure::Expired,
        ErrorKind::ImmatureSignature => Failure::NotYetValid,
        ErrorKind::InvalidIssuer => Failure::WrongIssuer,
        ErrorKind::InvalidAudience => Failure::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "iss" => Failure::WrongIssuer,
            "aud" => Failure::WrongAudience,
            _ => Failure::Malformed,
        },
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => Failure::AlgorithmNotAllowed,
        _ => Failure::Malformed,
    }
}
