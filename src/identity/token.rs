//! Strict JWT verification: compact form only, header and payload JSON read once (a duplicate
//! member name is invalid: [`crate::jose`]), allow-listed algorithms per issuer (`none` and
//! symmetric algorithms never), `crit` rejected, signature by the issuer's JWKS `kid`, exact
//! `iss`, `aud` against the configured audiences, numeric `exp`/`nbf`/`iat`/`auth_time` with a
//! small leeway against the injected clock.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::Algorithm;
use serde_json::Value;

use super::IdentityError;
use super::cache::{self, VerifiedCache};
use super::jwks::{Jwks, KeyMiss};
use crate::identity::config::{IssuerConfig, parse_algorithm};

/// Longest token accepted.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// One trusted issuer.
pub(super) struct Issuer {
    name: String,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    jwks: Jwks,
}

fn invalid(reason: &'static str) -> IdentityError {
    IdentityError::InvalidToken(reason)
}

impl Issuer {
    pub(super) fn new(config: &IssuerConfig, jwks: Jwks) -> Self {
        Self {
            name: config.issuer.clone(),
            audiences: config.audiences.clone(),
            algorithms: config.algorithms.iter().map(|a| a.0).collect(),
            jwks,
        }
    }

    /// The issuer's identifier (`iss`).
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn jwks(&self) -> &Jwks {
        &self.jwks
    }

    /// Validates registered claims of an already-verified payload.
    pub(super) fn validate_claims(
        &self,
        claims: &Value,
        now: i64,
        leeway: i64,
    ) -> Result<(), IdentityError> {
        if claims.get("iss").and_then(Value::as_str) != Some(self.name.as_str()) {
            return Err(invalid("wrong issuer"));
        }
        let exp = numeric(claims, "exp")?.ok_or(invalid("missing exp"))?;
        if now > exp.saturating_add(leeway) {
            return Err(invalid("expired"));
        }
        if numeric(claims, "nbf")?.is_some_and(|nbf| nbf > now + leeway) {
            return Err(invalid("not yet valid"));
        }
        if numeric(claims, "iat")?.is_some_and(|iat| iat > now + leeway) {
            return Err(invalid("issued in the future"));
        }
        if numeric(claims, "auth_time")?.is_some_and(|t| t > now + leeway) {
            return Err(invalid("auth_time in the future"));
        }
        if !self.audience_ok(claims.get("aud")) {
            return Err(invalid("wrong audience"));
        }
        Ok(())
    }

    fn audience_ok(&self, aud: Option<&Value>) -> bool {
        match aud {
            Some(Value::String(a)) => self.audiences.contains(a),
            Some(Value::Array(list)) => list.iter().any(|a| {
                a.as_str()
                    .is_some_and(|a| self.audiences.iter().any(|c| c == a))
            }),
            _ => false,
        }
    }
}

/// A time claim: absent is `None`; present but not a finite number is an error.
fn numeric(claims: &Value, name: &'static str) -> Result<Option<i64>, IdentityError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or(invalid("time claim out of range")),
        Some(_) => Err(invalid("time claim is not a number")),
    }
}

/// One header or payload part, read once and unambiguously (no duplicate member names).
pub(super) fn decode_json(part: &str) -> Result<Value, IdentityError> {
    crate::jose::decode_part(part).map_err(|e| invalid(e.reason()))
}

/// Verifies a compact JWS and returns its claims; a token whose signature was already verified
/// under the issuer's current, unexpired key set skips the signature check (the claims are always
/// checked).
pub(super) async fn verify(
    token: &str,
    issuers: &HashMap<String, Issuer>,
    cache: &VerifiedCache,
    now: i64,
    leeway: i64,
) -> Result<Arc<Value>, IdentityError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(invalid("token too large"));
    }
    let key = cache::key(token);
    if let Some(hit) = cache.get(&key)
        && let Some(issuer) = issuers.get(&hit.issuer)
        && issuer.jwks.generation() == hit.key_generation
        && !issuer.jwks.expired()
    {
        issuer.validate_claims(&hit.claims, now, leeway)?;
        return Ok(hit.claims);
    }
    let (issuer, claims) = verify_signature(token, issuers).await?;
    issuer.validate_claims(&claims, now, leeway)?;
    let claims = Arc::new(claims);
    cache.insert(
        key,
        &issuer.name,
        claims.clone(),
        issuer.jwks.generation(),
        now,
    );
    Ok(claims)
}

/// Checks the header and the signature; returns the issuer and the (unvalidated) claims.
async fn verify_signature<'a>(
    token: &str,
    issuers: &'a HashMap<String, Issuer>,
) -> Result<(&'a Issuer, Value), IdentityError> {
    let jws = Jws::parse(token)?;
    let claims = decode_json(jws.payload)?;
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or(invalid("missing iss"))?;
    let issuer = issuers.get(iss).ok_or(invalid("untrusted issuer"))?;
    issuer.check_signature(&jws).await?;
    Ok((issuer, claims))
}

/// A compact JWS whose protected header was read and checked (no `crit`, an allow-listed `alg`).
pub(super) struct Jws<'a> {
    alg: Algorithm,
    kid: Option<String>,
    /// The header's `typ` (explicit typing, RFC 8725 §3.11), when present.
    pub(super) typ: Option<String>,
    /// `header.payload`, what the signature covers.
    message: &'a str,
    pub(super) payload: &'a str,
    signature: &'a str,
}

impl<'a> Jws<'a> {
    pub(super) fn parse(token: &'a str) -> Result<Self, IdentityError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a compact JWS"));
        };
        let header = decode_json(h)?;
        if header.get("crit").is_some() {
            return Err(invalid("crit header not supported"));
        }
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(invalid("missing alg"))?;
        let alg = parse_algorithm(alg_name).map_err(|_| invalid("algorithm not allowed"))?;
        Ok(Self {
            alg,
            kid: header
                .get("kid")
                .and_then(Value::as_str)
                .map(str::to_string),
            typ: header
                .get("typ")
                .and_then(Value::as_str)
                .map(str::to_string),
            message: &token[..h.len() + 1 + p.len()],
            payload: p,
            signature: s,
        })
    }
}

impl Issuer {
    /// Verifies the signature with this issuer's key for the JWS's `kid` (only keys from the
    /// configured JWKS: never one named or carried by the header).
    pub(super) async fn check_signature(&self, jws: &Jws<'_>) -> Result<(), IdentityError> {
        if !self.algorithms.contains(&jws.alg) {
            return Err(invalid("algorithm not allowed"));
        }
        let key = self
            .jwks
            .key(jws.kid.as_deref(), jws.alg)
            .await
            .map_err(|miss| match miss {
                KeyMiss::Unknown => invalid("unknown key"),
                KeyMiss::Expired => invalid("signing keys expired"),
            })?;
        match jsonwebtoken::crypto::verify(jws.signature, jws.message.as_bytes(), &key, jws.alg) {
            Ok(true) => Ok(()),
            _ => Err(invalid("bad signature")),
        }
    }
}
