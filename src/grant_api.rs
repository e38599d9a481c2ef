//! The grant API, `stepguard.v1.GrantService` (`proto/stepguard/v1/grant.proto`), served on the
//! gRPC listener beside ext_authz when `grant_api` is configured: how external approval systems
//! — push approval, WebAuthn ceremonies, a human approving an agent's transaction — look up an
//! open step-up challenge, complete it with the assurance they achieved, and revoke grants.
//!
//! - **Who may call.** Every RPC needs `authorization: Bearer <JWT>` of the one configured
//!   issuer and audience (`grant_api.token`), from a listed `sub` when `allowed_subjects` is set
//!   ([`caller`]). Missing or invalid: `UNAUTHENTICATED`; valid but not listed:
//!   `PERMISSION_DENIED`. The mTLS peer is not used for authorization (the listener has no TLS;
//!   terminate mTLS in the mesh).
//! - **What is verified, what is trusted.** The approval system vouches for the user it approved
//!   for: the assurance it reports is taken to be *the challenge's subject's* (stepguard cannot
//!   see that ceremony). Its `acr` and `auth_time` are then judged by the same rules as every
//!   other completion ([`crate::completion::Completer`]): `acr` on the ladder at or above the
//!   requirement, `auth_time` not before the challenge (minus skew) and within `max_age`, the
//!   challenge closed exactly once. A caller whose own identity is the challenged subject may not
//!   approve it (no self-approval).
//! - **One approval, one challenge.** An approval event is the caller's verified `iss|sub`, the
//!   reported `approver`, the challenged subject and the reported `auth_time`
//!   ([`crate::completion::AuthEvent::Approval`]); it is claimed once in the grant store, so the
//!   same approval reported for a second challenge is refused (`FAILED_PRECONDITION`,
//!   `authentication_already_used`). An approval system that approves two transactions of one
//!   user reports two approvals, with their own `auth_time`s.
//! - **What a grant records.** `method` is `grant_api`; the approval system's `method` (e.g.
//!   `webauthn`) is appended to the grant's `amr`, so policies can tell ceremonies apart; the
//!   approver (the caller's verified `iss|sub` and the reported `approver`) goes to the evidence.
//! - **Evidence.** A completion is recorded (`completed`, durable before the grant is stored, by
//!   the [`Completer`]) and so is every revocation (`revoked`, durable before the call answers;
//!   a revocation that cannot be recorded answers `UNAVAILABLE` — the grants are gone all the
//!   same). Every attempt is also logged on target `stepguard::evidence` (`record.rs`).
//!
//! Errors map to gRPC codes in one table, [`GrantApiError`]'s `From` for `Status`.

pub mod caller;
pub mod config;
mod message;
mod record;

use std::sync::Arc;

use tokio::sync::watch;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::clock::Clock;
use crate::completion::{Completer, CompletionError};
use crate::evidence::Lifecycle;
use crate::grant::{Challenge, Grant, GrantError, GrantStore};
use crate::identity::{IdentityError, Jwks, JwksError};
use crate::proto;
use crate::proto::grant_service_server::GrantService;
use crate::proto::revoke_grants_request::Target;
use config::GrantApiConfig;

pub use caller::{Approver, Caller};
pub use message::{
    amr_of, approver_of, assurance_for, challenge_message, key_id, validate_assurance,
};

/// The `method` of every grant minted through this API.
pub const METHOD: &str = "grant_api";

/// Why a grant API call was refused; `From<GrantApiError> for Status` is the one mapping to gRPC
/// codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantApiError {
    #[error("{0}")]
    Unauthenticated(IdentityError),
    #[error("the caller's subject is not in grant_api.allowed_subjects")]
    NotAllowed,
    #[error("the caller is the challenged subject and cannot approve its own transaction")]
    SelfApproval,
    #[error("`{field}` {message}")]
    InvalidArgument {
        field: &'static str,
        message: &'static str,
    },
    #[error(transparent)]
    Completion(#[from] CompletionError),
    #[error(transparent)]
    Store(#[from] GrantError),
}

impl GrantApiError {
    /// A short machine-readable reason (status messages, the `stepguard-reason` metadata,
    /// evidence).
    pub fn reason(&self) -> &'static str {
        match self {
            GrantApiError::Unauthenticated(IdentityError::Missing) => "token_missing",
            GrantApiError::Unauthenticated(IdentityError::InvalidToken(_)) => "invalid_token",
            GrantApiError::NotAllowed => "caller_not_allowed",
            GrantApiError::SelfApproval => "self_approval",
            GrantApiError::InvalidArgument { .. } => "invalid_argument",
            GrantApiError::Completion(e) => e.reason(),
            GrantApiError::Store(_) => "grant_store_unavailable",
        }
    }

    /// The gRPC code.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            GrantApiError::Unauthenticated(_) => Code::Unauthenticated,
            GrantApiError::NotAllowed | GrantApiError::SelfApproval => Code::PermissionDenied,
            GrantApiError::InvalidArgument { .. } => Code::InvalidArgument,
            GrantApiError::Completion(CompletionError::NotOpen) => Code::NotFound,
            GrantApiError::Completion(CompletionError::Store(_) | CompletionError::Evidence(_))
            | GrantApiError::Store(_) => Code::Unavailable,
            GrantApiError::Completion(_) => Code::FailedPrecondition,
        }
    }
}

impl From<GrantApiError> for Status {
    fn from(e: GrantApiError) -> Status {
        let message = match e.code() {
            // Store faults may carry backend details: logged, not returned.
            tonic::Code::Unavailable => {
                tracing::error!(error = %e, "grant API: grant store fault");
                format!("{}: the grant store is unavailable; retry", e.reason())
            }
            _ => format!("{}: {e}", e.reason()),
        };
        let mut status = Status::new(e.code(), message);
        status
            .metadata_mut()
            .insert("stepguard-reason", MetadataValue::from_static(e.reason()));
        status
    }
}

/// The `GrantService` implementation.
pub struct GrantApi {
    caller: Caller,
    completer: Completer,
    clock: Arc<dyn Clock>,
    /// Clock skew tolerated on `auth_time` (`challenge.completion_skew_secs`).
    skew: i64,
}

impl GrantApi {
    /// Builds the service from its config section over the sidecar's completer (its grant
    /// store, evidence and completion rules) and clock; `leeway_secs` and `jwks_wait` as for
    /// user tokens.
    pub async fn new(
        api: &GrantApiConfig,
        leeway_secs: u64,
        jwks_wait: std::time::Duration,
        completer: Completer,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, JwksError> {
        Ok(Self {
            caller: Caller::new(api, leeway_secs, jwks_wait).await?,
            skew: completer.skew(),
            completer,
            clock,
        })
    }

    /// The callers' key set.
    pub fn jwks(&self) -> impl Iterator<Item = &Jwks> {
        self.caller.jwks()
    }

    /// Refetches a URL key set in the background every `ttl_secs` until `stop` is raised (an
    /// unknown `kid` refetches it anyway, rate-limited), so a key removed from the set stops
    /// being trusted without a restart.
    pub fn spawn_jwks_refresh(&self, mut stop: watch::Receiver<bool>) {
        let jwks: Vec<Jwks> = self.jwks().filter(|j| j.ttl().is_some()).cloned().collect();
        let Some(period) = jwks.iter().filter_map(Jwks::ttl).min() else {
            return;
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = stop.changed() => return,
                }
                for set in &jwks {
                    set.refresh(true).await;
                }
            }
        });
    }

    fn grants(&self) -> &Arc<dyn GrantStore> {
        self.completer.grants()
    }

    /// The open challenge `id`; unknown, expired or completed: `NOT_FOUND`.
    async fn open(&self, id: &str, now: i64) -> Result<Challenge, GrantApiError> {
        let id = message::bounded("challenge_id", id)?;
        self.grants()
            .challenge(id, now)
            .await?
            .ok_or(GrantApiError::Completion(CompletionError::NotOpen))
    }

    /// Loads and checks, then completes: closes the challenge and mints its grant.
    async fn complete(
        &self,
        approver: &Approver,
        attempt: &mut record::Attempt,
        now: i64,
    ) -> Result<Grant, GrantApiError> {
        let reported = attempt
            .reported
            .as_ref()
            .ok_or(GrantApiError::InvalidArgument {
                field: "assurance",
                message: "is required",
            })?;
        validate_assurance(reported, now, self.skew)?;
        let challenge = self.open(&attempt.challenge_id, now).await?;
        let challenge = attempt.challenge.insert(challenge);
        if approver.identity == challenge.subject {
            return Err(GrantApiError::SelfApproval);
        }
        let assurance = assurance_for(challenge, reported, approver);
        Ok(self.completer.complete(challenge, &assurance, now).await?)
    }

    async fn revoke(&self, target: Option<&Target>) -> Result<u32, GrantApiError> {
        match target {
            Some(Target::Subject(subject)) => {
                let subject = message::bounded("subject", subject)?;
                if !subject
                    .split_once('|')
                    .is_some_and(|(iss, sub)| !iss.is_empty() && !sub.is_empty())
                {
                    return Err(GrantApiError::InvalidArgument {
                        field: "subject",
                        message: "must be a binding key `issuer|sub`",
                    });
                }
                Ok(self.grants().revoke_subject(subject).await?)
            }
            Some(Target::TransactionDigest(digest)) => {
                let digest = message::bounded("transaction_digest", digest)?;
                if !digest.contains(':') {
                    return Err(GrantApiError::InvalidArgument {
                        field: "transaction_digest",
                        message: "must be a digest `key_id:…`",
                    });
                }
                Ok(u32::from(self.grants().revoke_transaction(digest).await?))
            }
            None => Err(GrantApiError::InvalidArgument {
                field: "target",
                message: "set subject or transaction_digest",
            }),
        }
    }
}

#[tonic::async_trait]
impl GrantService for GrantApi {
    async fn lookup_challenge(
        &self,
        request: Request<proto::LookupChallengeRequest>,
    ) -> Result<Response<proto::LookupChallengeResponse>, Status> {
        let now = self.clock.now();
        self.caller.authenticate(request.metadata(), now).await?;
        let challenge = self.open(&request.get_ref().challenge_id, now).await?;
        Ok(Response::new(proto::LookupChallengeResponse {
            challenge: Some(challenge_message(&challenge)),
        }))
    }

    async fn complete_challenge(
        &self,
        request: Request<proto::CompleteChallengeRequest>,
    ) -> Result<Response<proto::CompleteChallengeResponse>, Status> {
        let now = self.clock.now();
        let approver = self.caller.authenticate(request.metadata(), now).await?;
        let req = request.into_inner();
        let mut attempt = record::Attempt::new(req.challenge_id, req.assurance);
        let outcome = self.complete(&approver, &mut attempt, now).await;
        record::completion(&approver, &attempt, outcome.as_ref(), now);
        let grant = outcome?;
        Ok(Response::new(proto::CompleteChallengeResponse {
            grant_id: grant.id,
            expires_at: grant.expires_at,
        }))
    }

    async fn revoke_grants(
        &self,
        request: Request<proto::RevokeGrantsRequest>,
    ) -> Result<Response<proto::RevokeGrantsResponse>, Status> {
        let now = self.clock.now();
        let approver = self.caller.authenticate(request.metadata(), now).await?;
        let target = request.into_inner().target;
        let outcome = self.revoke(target.as_ref()).await;
        record::revocation(&approver, target.as_ref(), outcome.as_ref(), now);
        let revoked = outcome?;
        let (subject, transaction) = match &target {
            Some(Target::Subject(s)) => (Some(s.as_str()), None),
            Some(Target::TransactionDigest(d)) => (None, Some(d.as_str())),
            None => (None, None),
        };
        let event = Lifecycle::Revoked {
            subject,
            transaction,
            revoked,
            by: &approver.identity,
        };
        if let Err(e) = self.completer.evidence().lifecycle(&event).await {
            tracing::error!(error = %e, revoked, "revocation not recorded");
            return Err(Status::unavailable(
                "evidence_unavailable: the grants were revoked but the revocation could not be recorded; retry",
            ));
        }
        Ok(Response::new(proto::RevokeGrantsResponse { revoked }))
    }
}

#[cfg(test)]
mod tests;
