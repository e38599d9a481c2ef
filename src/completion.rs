//! Completing a step-up challenge: the one place that decides whether what an authentication
//! *actually achieved* (as verified by its completion path — the OIDC callback's ID token, an
//! RFC 9470 retry's access token, or an approval system through the grant API) satisfies the
//! challenge, and then mints the grant for exactly the challenged transaction.
//!
//! The rules, the same for every path:
//! - the achieved `acr` is on the ladder at or above the weakest acceptable value;
//! - `auth_time` is no earlier than the challenge's issue time (minus the clock skew): an
//!   authentication from before the challenge — at login, or for another transaction — never
//!   satisfies it; and no older than the requirement's `max_age` when that is set;
//! - the authenticated subject is the challenged one;
//! - the challenge is closed exactly once (a concurrent second completion loses), and only then
//!   is the grant written; a failure anywhere before leaves the challenge open and no grant.

use std::sync::Arc;

use crate::challenge::random_token;
use crate::grant::{Challenge, Grant, GrantError, GrantStore};

/// What an authentication achieved, as verified by the completion path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assurance {
    /// The subject's binding key (`iss|sub`) the authentication was for.
    pub subject: String,
    pub acr: String,
    pub amr: Vec<String>,
    pub auth_time: i64,
    /// `oidc`, `rfc9470` or `grant_api`.
    pub method: String,
    /// Who approved, for the grant API (an approval system's own identity).
    pub approver: Option<String>,
}

/// Why a completion was refused. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompletionError {
    #[error("the challenge is unknown, expired or already completed")]
    NotOpen,
    #[error("acr `{achieved}` does not satisfy {required:?}")]
    WeakAcr {
        achieved: String,
        required: Vec<String>,
    },
    #[error("the authentication happened before the challenge was issued")]
    StaleAuthentication,
    #[error("the authentication is older than max_age")]
    TooOld,
    #[error("another user authenticated")]
    OtherSubject,
    #[error("this authentication already completed another challenge")]
    AlreadyUsed,
    #[error(transparent)]
    Store(#[from] GrantError),
}

impl CompletionError {
    /// A short machine-readable reason (evidence, logs, error pages).
    pub fn reason(&self) -> &'static str {
        match self {
            CompletionError::NotOpen => "challenge_not_open",
            CompletionError::WeakAcr { .. } => "acr_insufficient",
            CompletionError::StaleAuthentication => "auth_time_before_challenge",
            CompletionError::TooOld => "auth_time_too_old",
            CompletionError::OtherSubject => "other_subject",
            CompletionError::AlreadyUsed => "authentication_already_used",
            CompletionError::Store(_) => "grant_store_unavailable",
        }
    }
}

/// Completes challenges against a grant store.
#[derive(Clone)]
pub struct Completer {
    grants: Arc<dyn GrantStore>,
    ladder: Vec<String>,
    skew: i64,
}

impl Completer {
    pub fn new(grants: Arc<dyn GrantStore>, ladder: Vec<String>, skew: i64) -> Self {
        Self {
            grants,
            ladder,
            skew,
        }
    }

    pub fn grants(&self) -> &Arc<dyn GrantStore> {
        &self.grants
    }

    /// The clock skew allowed on `auth_time`, in seconds.
    pub fn skew(&self) -> i64 {
        self.skew
    }

    /// Whether `assurance` satisfies `challenge` at `now` (nothing is written).
    pub fn check(
        &self,
        challenge: &Challenge,
        assurance: &Assurance,
        now: i64,
    ) -> Result<(), CompletionError> {
        if challenge.expires_at <= now {
            return Err(CompletionError::NotOpen);
        }
        if assurance.subject != challenge.subject {
            return Err(CompletionError::OtherSubject);
        }
        if !acr_satisfies(
            &self.ladder,
            &assurance.acr,
            &challenge.requirement.acr_values,
        ) {
            return Err(CompletionError::WeakAcr {
                achieved: assurance.acr.clone(),
                required: challenge.requirement.acr_values.clone(),
            });
        }
        if assurance.auth_time < challenge.issued_at - self.skew {
            return Err(CompletionError::StaleAuthentication);
        }
        let max_age = challenge.requirement.max_age;
        if max_age > 0 && now - assurance.auth_time > max_age + self.skew {
            return Err(CompletionError::TooOld);
        }
        Ok(())
    }

    /// Like [`Completer::complete`], for an authentication that carries no transaction of its
    /// own (an RFC 9470 retry's token): its authentication event — subject and `auth_time` —
    /// is claimed first, until `event_until`, so it completes one challenge and never another
    /// transaction's, however soon after. A refused check claims nothing.
    pub async fn complete_once(
        &self,
        challenge: &Challenge,
        assurance: &Assurance,
        now: i64,
        event_until: i64,
    ) -> Result<Grant, CompletionError> {
        self.check(challenge, assurance, now)?;
        if !self
            .grants
            .claim_once(&event_name(assurance), event_until, now)
            .await?
        {
            return Err(CompletionError::AlreadyUsed);
        }
        self.complete(challenge, assurance, now).await
    }

    /// Checks, closes the challenge (only one completion wins) and mints its grant.
    pub async fn complete(
        &self,
        challenge: &Challenge,
        assurance: &Assurance,
        now: i64,
    ) -> Result<Grant, CompletionError> {
        self.check(challenge, assurance, now)?;
        let id = random_token(16)
            .ok_or_else(|| GrantError::Unavailable("system RNG unavailable".into()))?;
        if !self.grants.close_challenge(challenge).await? {
            return Err(CompletionError::NotOpen);
        }
        let grant = Grant {
            id,
            digest: challenge.digest.clone(),
            subject: challenge.subject.clone(),
            action: challenge.action.clone(),
            acr: assurance.acr.clone(),
            amr: assurance.amr.clone(),
            auth_time: assurance.auth_time,
            method: assurance.method.clone(),
            challenge_id: Some(challenge.id.clone()),
            issued_at: now,
            expires_at: now + challenge.terms.ttl.max(1),
            uses_left: challenge.terms.single_use.then_some(1),
            policy_revision: challenge.policy_revision.clone(),
        };
        self.grants.put_grant(grant.clone()).await?;
        crate::telemetry::metrics::challenge_completed(&grant.method);
        Ok(grant)
    }
}

/// The store name of an authentication event (who, and when they authenticated), hashed.
fn event_name(assurance: &Assurance) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("{}\n{}", assurance.subject, assurance.auth_time).as_bytes(),
    );
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("auth:{hex}")
}

/// Whether `achieved` is on the ladder at or above the weakest of `acceptable`. Values not on
/// the ladder satisfy only an exact match.
pub fn acr_satisfies(ladder: &[String], achieved: &str, acceptable: &[String]) -> bool {
    if acceptable.iter().any(|a| a == achieved) {
        return true;
    }
    let rank = |v: &str| ladder.iter().position(|l| l == v);
    let Some(have) = rank(achieved) else {
        return false;
    };
    acceptable
        .iter()
        .filter_map(|a| rank(a))
        .min()
        .is_some_and(|need| have >= need)
}

#[cfg(test)]
mod tests;
