//! A compact JWS verified against one trusted party's key set, without a JWT's time rules: how
//! a Security Event Token (RFC 8417) from a Shared Signals transmitter is checked. The same
//! strictness as access tokens — an allow-listed asymmetric `alg`, no `crit`, keys only from
//! the configured JWKS (never one named or carried by the header), the header and payload read
//! once through [`crate::jose`] — and the `iss` must be the configured one. What the claims mean
//! (`aud`, `iat`, `jti`, `events`) is the caller's to check.

use serde_json::Value;

use super::IdentityError;
use super::config::IssuerConfig;
use super::jwks::Jwks;
use super::token::{Issuer, Jws, decode_json};

/// Largest JWS verified (a SET is a few hundred bytes; this bounds the work an anonymous POST
/// can cause).
pub const MAX_SIGNED_BYTES: usize = 64 << 10;

/// One party whose signatures are trusted: its `iss`, algorithms and key set.
pub struct SignedBy {
    issuer: Issuer,
}

/// A verified JWS: its header `typ` and its claims.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub typ: Option<String>,
    pub claims: Value,
}

impl SignedBy {
    /// The party of `config` (its `issuer`, `algorithms`) with the key set `jwks`.
    pub fn new(config: &IssuerConfig, jwks: Jwks) -> Self {
        Self {
            issuer: Issuer::new(config, jwks),
        }
    }

    /// The key set (for background refresh).
    pub fn jwks(&self) -> &Jwks {
        self.issuer.jwks()
    }

    /// Checks the header, the signature and `iss`; returns the claims, otherwise unchecked.
    pub async fn verify(&self, token: &str) -> Result<Verified, IdentityError> {
        if token.len() > MAX_SIGNED_BYTES {
            return Err(IdentityError::InvalidToken("token too large"));
        }
        let jws = Jws::parse(token)?;
        let claims = decode_json(jws.payload)?;
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.name()) {
            return Err(IdentityError::InvalidToken("wrong issuer"));
        }
        self.issuer.check_signature(&jws).await?;
        Ok(Verified {
            typ: jws.typ.clone(),
            claims,
        })
    }
}

#[cfg(test)]
mod tests;
