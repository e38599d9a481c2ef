//! Faults: every way stepguard refuses a request by itself (not because the policy said so).
//! Each has its reason code — the same on the wire, in evidence and in
//! `stepguard_decisions_total{reason}` — and who caused it: the client, a dependency (the grant
//! store, the IdP, the evidence sink, the policy source) or stepguard itself (its configuration,
//! its policy, its budget). What a fault looks like to Envoy (status, body, headers) is chosen in
//! [`crate::response`] alone.

use crate::txn::TxnError;

/// Who caused a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The request itself: retrying it unchanged does not help (a 4xx).
    Client,
    /// Something stepguard depends on failed: the client may retry shortly (a 503).
    Dependency,
    /// stepguard's configuration, policy or budget: an operator must look (a 503).
    Stepguard,
}

/// Why stepguard refused a request by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The request could not be read (normalization failed).
    MalformedRequest,
    /// The transaction could not be bound from the request (never [`TxnError::Key`]).
    Unbindable(TxnError),
    /// A workload asked to step up: it must present a transaction token instead.
    WorkloadRequiresTransactionToken,
    /// The transaction's single-use grant was spent by a concurrent request.
    GrantAlreadyUsed,
    /// The token's session was revoked by a Shared Signals event (CAEP `session-revoked`).
    SessionRevoked,
    /// A Shared Signals account event (RISC `account-disabled`, …) newer than the sign-in.
    AccountEvent,
    /// The transaction keeps being challenged without a grant in between (the loop guard).
    StepUpNotCompleting,
    /// Too many challenges for the subject in the window.
    ChallengeRateLimitedSubject { retry_after: i64 },
    /// Too many challenges from the source IP (an IPv6 source per /64) in the window.
    ChallengeRateLimitedSourceIp { retry_after: i64 },
    /// Too many open challenges for the subject.
    TooManyOpenChallenges { retry_after: i64 },
    /// The grant store failed (or answered ambiguously).
    GrantStoreUnavailable,
    /// The evidence sink failed: nothing is approved without its record.
    EvidenceUnavailable,
    /// The IdP's metadata (its authorization endpoint) is not known yet.
    IdpMetadataUnavailable,
    /// No policy is active yet (a bundle server's first bundle has not activated).
    PolicyUnavailable,
    /// A route tag names no configured action.
    UnknownActionTag,
    /// The transaction's binding key is not available.
    BindingKeyUnavailable,
    /// The system's random number generator failed.
    RngUnavailable,
    /// The policy failed to evaluate.
    PolicyError,
    /// The policy took longer than its timeout.
    PolicyTimeout,
    /// The policy panicked.
    PolicyPanicked,
    /// The policy's output broke the output contract.
    PolicyContractViolation,
    /// The policy allowed with `used_grant: true` but there was no grant.
    PolicyUsedMissingGrant,
    /// The decision outlived its budget.
    DecisionBudgetExceeded,
    /// The decision task failed (panicked).
    InternalError,
}

impl Fault {
    /// The fault for a transaction that could not be bound: the client's, unless the binding
    /// key is missing (stepguard's).
    pub fn unbound(e: TxnError) -> Self {
        match e {
            TxnError::Key(..) => Self::BindingKeyUnavailable,
            e => Self::Unbindable(e),
        }
    }

    /// The reason code.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MalformedRequest => "malformed_request",
            Self::Unbindable(e) => e.reason(),
            Self::WorkloadRequiresTransactionToken => "workload_requires_transaction_token",
            Self::GrantAlreadyUsed => "grant_already_used",
            Self::SessionRevoked => "session_revoked",
            Self::AccountEvent => "account_event",
            Self::StepUpNotCompleting => "step_up_not_completing",
            Self::ChallengeRateLimitedSubject { .. } => "challenge_rate_limited_subject",
            Self::ChallengeRateLimitedSourceIp { .. } => "challenge_rate_limited_source_ip",
            Self::TooManyOpenChallenges { .. } => "too_many_open_challenges",
            Self::GrantStoreUnavailable => "grant_store_unavailable",
            Self::EvidenceUnavailable => "evidence_unavailable",
            Self::IdpMetadataUnavailable => "idp_metadata_unavailable",
            Self::PolicyUnavailable => "policy_unavailable",
            Self::UnknownActionTag => "unknown_action_tag",
            Self::BindingKeyUnavailable => "binding_key_unavailable",
            Self::RngUnavailable => "rng_unavailable",
            Self::PolicyError => "policy_error",
            Self::PolicyTimeout => "policy_timeout",
            Self::PolicyPanicked => "policy_panicked",
            Self::PolicyContractViolation => "policy_contract_violation",
            Self::PolicyUsedMissingGrant => "policy_used_missing_grant",
            Self::DecisionBudgetExceeded => "decision_budget_exceeded",
            Self::InternalError => "internal_error",
        }
    }

    /// Who caused it.
    pub fn cause(&self) -> Cause {
        match self {
            Self::MalformedRequest
            | Self::Unbindable(_)
            | Self::WorkloadRequiresTransactionToken
            | Self::GrantAlreadyUsed
            | Self::SessionRevoked
            | Self::AccountEvent
            | Self::StepUpNotCompleting
            | Self::ChallengeRateLimitedSubject { .. }
            | Self::ChallengeRateLimitedSourceIp { .. }
            | Self::TooManyOpenChallenges { .. } => Cause::Client,
            Self::GrantStoreUnavailable
            | Self::EvidenceUnavailable
            | Self::IdpMetadataUnavailable
            | Self::PolicyUnavailable => Cause::Dependency,
            Self::UnknownActionTag
            | Self::BindingKeyUnavailable
            | Self::RngUnavailable
            | Self::PolicyError
            | Self::PolicyTimeout
            | Self::PolicyPanicked
            | Self::PolicyContractViolation
            | Self::PolicyUsedMissingGrant
            | Self::DecisionBudgetExceeded
            | Self::InternalError => Cause::Stepguard,
        }
    }

    /// When the client may try again, in seconds, for a rate limit.
    pub fn retry_after(&self) -> Option<i64> {
        match self {
            Self::ChallengeRateLimitedSubject { retry_after }
            | Self::ChallengeRateLimitedSourceIp { retry_after }
            | Self::TooManyOpenChallenges { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// The request field the fault is about (`body.amount` for `missing_bound_field`).
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Unbindable(e) => e.field(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
