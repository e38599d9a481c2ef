//! Who calls the grant API: the `authorization` metadata must hold exactly one `Bearer` JWT,
//! verified like any token stepguard reads (strict JWS, allow-listed algorithms, the issuer's
//! JWKS, exact `iss`, `aud`, `exp`/`nbf`/`iat` with `identity.leeway_secs`) — but against the
//! grant API's own one-issuer [`Identity`], never the issuers trusted for user requests. When
//! `grant_api.allowed_subjects` is set, the token's `sub` must be listed.
//!
//! The mTLS peer (SPIFFE ID) is not consulted: the gRPC listener has no TLS of its own; run it
//! behind the mesh's mTLS for transport security and authorize callers by their token here.

use tonic::metadata::MetadataMap;

use super::GrantApiError;
use super::config::GrantApiConfig;
use crate::identity::config::{IdentityConfig, WorkloadConfig};
use crate::identity::{Identity, IdentityError, Jwks, JwksError};

/// An authenticated, allowed caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approver {
    /// The caller's verified binding key, `iss|sub`.
    pub identity: String,
}

/// Authenticates grant API callers.
pub struct Caller {
    identity: Identity,
    allowed_subjects: Vec<String>,
}

impl Caller {
    /// Loads the callers' issuer (its JWKS file now; a URL on first use or refresh), with the
    /// token `leeway_secs` of `identity`; an unknown `kid` waits at most `jwks_wait`.
    pub async fn new(
        api: &GrantApiConfig,
        leeway_secs: u64,
        jwks_wait: std::time::Duration,
    ) -> Result<Self, JwksError> {
        let identity = IdentityConfig {
            leeway_secs,
            issuers: vec![api.token.clone()],
            jwt_authn: None,
            workloads: WorkloadConfig::default(),
        };
        Ok(Self {
            identity: Identity::load(&identity, jwks_wait).await?,
            allowed_subjects: api.allowed_subjects.clone(),
        })
    }

    /// The callers' key set, for background refresh.
    pub fn jwks(&self) -> impl Iterator<Item = &Jwks> {
        self.identity.jwks()
    }

    /// The caller of a request at `now`: `Unauthenticated` without exactly one valid bearer
    /// token, `NotAllowed` for a subject outside `allowed_subjects`.
    pub async fn authenticate(
        &self,
        metadata: &MetadataMap,
        now: i64,
    ) -> Result<Approver, GrantApiError> {
        let refused = |e: GrantApiError| {
            tracing::warn!(reason = e.reason(), error = %e, "grant API caller refused");
            e
        };
        let authorization = authorization(metadata).map_err(refused)?;
        let subject = self
            .identity
            .verify_bearer(authorization, now)
            .await
            .map_err(|e| refused(GrantApiError::Unauthenticated(e)))?;
        let sub = subject.id.as_deref().unwrap_or_default();
        if sub.is_empty() {
            return Err(refused(GrantApiError::Unauthenticated(
                IdentityError::InvalidToken("missing sub"),
            )));
        }
        if !self.allowed_subjects.is_empty() && !self.allowed_subjects.iter().any(|s| s == sub) {
            return Err(refused(GrantApiError::NotAllowed));
        }
        Ok(Approver {
            identity: subject.binding_key(),
        })
    }
}

/// The one `authorization` value of a call.
fn authorization(metadata: &MetadataMap) -> Result<&str, GrantApiError> {
    let mut values = metadata.get_all("authorization").iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        let e = match metadata.get("authorization") {
            None => IdentityError::Missing,
            Some(_) => IdentityError::InvalidToken("more than one authorization value"),
        };
        return Err(GrantApiError::Unauthenticated(e));
    };
    value.to_str().map_err(|_| {
        GrantApiError::Unauthenticated(IdentityError::InvalidToken(
            "authorization is not visible ASCII",
        ))
    })
}
