//! Who is asking: a verified bearer JWT (strict validation against per-issuer JWKS), claims that
//! Envoy's `jwt_authn` filter verified (only when trusted by config), or a workload identified by
//! its mTLS peer principal (SPIFFE ID). Verified claims must name their subject (`sub`): a token
//! is read as a human unless it shows it is a workload, and a human nobody can be bound to is an
//! invalid token, never an anonymous user. Client-sent `x-stepguard-*` headers never count: the
//! request layer removed them before this module runs.

mod cache;
mod claims;
pub mod config;
mod jwks;
pub mod signed;
mod token;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

pub use claims::{Actor, Subject, SubjectKind};
pub use config::parse_algorithm;
pub use jwks::{Jwks, JwksError, KeyMiss};

use crate::identity::config::IdentityConfig;
use crate::request::AuthzRequest;

/// How many verified tokens are remembered (their signatures are not checked again).
const VERIFIED_CACHE_ENTRIES: usize = 50_000;

/// Why a request has no usable identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("no credential presented")]
    Missing,
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
}

/// Resolves the subject of a request.
pub struct Identity {
    issuers: HashMap<String, token::Issuer>,
    verified: cache::VerifiedCache,
    leeway: i64,
    jwt_authn: Option<(String, Vec<String>)>,
    trust_domains: Vec<String>,
}

impl Identity {
    /// Builds the resolver, loading every JWKS once (files now, URLs on first use or refresh).
    pub async fn load(
        config: &IdentityConfig,
        fetch_wait: std::time::Duration,
    ) -> Result<Self, JwksError> {
        let mut issuers = HashMap::new();
        for issuer in &config.issuers {
            let jwks = Jwks::load(issuer.jwks.source(fetch_wait)).await?;
            issuers.insert(issuer.issuer.clone(), token::Issuer::new(issuer, jwks));
        }
        Ok(Self {
            issuers,
            verified: cache::VerifiedCache::new(VERIFIED_CACHE_ENTRIES),
            leeway: config.leeway_secs as i64,
            jwt_authn: config
                .jwt_authn
                .as_ref()
                .map(|j| (j.payload_key.clone(), j.issuers.clone())),
            trust_domains: config.workloads.trust_domains.clone(),
        })
    }

    /// The JWKS of every issuer, for background refresh.
    pub fn jwks(&self) -> impl Iterator<Item = &Jwks> {
        self.issuers.values().map(token::Issuer::jwks)
    }

    /// Resolves the request's subject at `now` (unix seconds).
    pub async fn resolve(&self, req: &AuthzRequest, now: i64) -> Result<Subject, IdentityError> {
        if let Some(authorization) = req.header("authorization") {
            let token =
                bearer(authorization).ok_or(IdentityError::InvalidToken("not a bearer token"))?;
            let claims =
                token::verify(token, &self.issuers, &self.verified, now, self.leeway).await?;
            let peer = req.raw.source_principal.clone();
            return subject(Arc::unwrap_or_clone(claims), now, peer);
        }
        if let Some(claims) = self.jwt_authn_claims(req, now)? {
            return subject(claims, now, req.raw.source_principal.clone());
        }
        if let Some(spiffe) = self.workload(req) {
            return Ok(Subject::workload(spiffe));
        }
        Err(IdentityError::Missing)
    }

    /// Verifies the value of an `Authorization` header (exactly one `Bearer` JWT of a configured
    /// issuer) at `now` and reads its subject; no jwt_authn metadata, no workload fallback. For
    /// callers that are not Envoy requests (the grant API).
    pub async fn verify_bearer(
        &self,
        authorization: &str,
        now: i64,
    ) -> Result<Subject, IdentityError> {
        let token =
            bearer(authorization).ok_or(IdentityError::InvalidToken("not a bearer token"))?;
        let claims = token::verify(token, &self.issuers, &self.verified, now, self.leeway).await?;
        subject(Arc::unwrap_or_clone(claims), now, None)
    }

    fn jwt_authn_claims(
        &self,
        req: &AuthzRequest,
        now: i64,
    ) -> Result<Option<Value>, IdentityError> {
        let Some((key, trusted)) = &self.jwt_authn else {
            return Ok(None);
        };
        let Some(payload) = req
            .raw
            .filter_metadata
            .get("envoy.filters.http.jwt_authn")
            .and_then(|m| m.get(key))
        else {
            return Ok(None);
        };
        let iss = payload
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !trusted.iter().any(|t| t == iss) {
            return Err(IdentityError::InvalidToken("jwt_authn issuer not trusted"));
        }
        let issuer = self
            .issuers
            .get(iss)
            .ok_or(IdentityError::InvalidToken("jwt_authn issuer not trusted"))?;
        issuer.validate_claims(payload, now, self.leeway)?;
        Ok(Some(payload.clone()))
    }

    fn workload(&self, req: &AuthzRequest) -> Option<String> {
        let principal = req.raw.source_principal.as_deref()?;
        let rest = principal.strip_prefix("spiffe://")?;
        let domain = rest.split('/').next()?;
        self.trust_domains
            .iter()
            .any(|d| d == domain)
            .then(|| principal.to_string())
    }
}

/// The subject of verified claims; without a non-empty string `sub` they are invalid. (Claims
/// without `sub` would otherwise be read as a human — a workload shows it is one by its `sub` —
/// that no grant, challenge or evidence record could be bound to.)
fn subject(claims: Value, now: i64, peer: Option<String>) -> Result<Subject, IdentityError> {
    let subject = Subject::from_claims(claims, now, peer);
    if subject.id.as_deref().is_none_or(str::is_empty) {
        return Err(IdentityError::InvalidToken("missing sub"));
    }
    Ok(subject)
}

fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod vectors;
