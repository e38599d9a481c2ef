//! Completing a step-up challenge: the one place that decides whether what an authentication
//! *actually achieved* (as verified by its completion path — the OIDC callback's ID token, an
//! RFC 9470 retry's access token, or an approval system through the grant API) satisfies the
//! challenge, and then mints the grant for exactly the challenged transaction.
//!
//! The rules, the same for every path:
//! - the achieved `acr` is on the ladder at or above the weakest acceptable value;
//! - `auth_time` is no earlier than the challenge's issue time minus a small clock-skew
//!   allowance (`challenge.completion_skew_secs`, default 5 s, at most 30 — never the token
//!   leeway): an authentication from before the challenge — at login, or for another
//!   transaction — never satisfies it, whatever its `max_age` (for `max_age: 0` this is what
//!   proves the sign-in is fresh on the RFC 9470 path; the OIDC path also has the nonce); and
//!   no older than the requirement's `max_age` when that is set;
//! - the authenticated subject is the challenged one;
//! - the authentication event ([`AuthEvent`]: a sign-in's `iss`, `sub`, `auth_time` and `sid`,
//!   or a grant API approval) is claimed once in the grant store, for longer than any challenge
//!   it could satisfy stays open: one sign-in never completes two challenges, on any path;
//! - the challenge is closed exactly once (a concurrent second completion loses), and only then
//!   is the grant written; a failure anywhere before leaves no grant (a refused check leaves the
//!   challenge open and claims nothing).
//!
//! Evidence (`docs/evidence.md`, "ordering"): after the challenge is closed, its *outcome* is
//! claimed in the grant store (`outcome:<challenge id>`, first caller wins), then the `completed`
//! record is made durable, and only then is the grant stored — no grant exists that has no
//! record. A record that cannot be written leaves the challenge closed and no grant (the caller
//! is refused; the user steps up again). Refused completions are recorded as best effort.
//!
//! Challenges that expire unused: the challenges this process issued ([`Completer::issued`])
//! are kept until they expire; the sweeper ([`Completer::sweep`], every second) claims the
//! outcome of each one past its expiry (plus [`EXPIRY_GRACE_SECS`]) and records it `expired`.
//! A completion anywhere (another replica on a shared Redis) claimed it first, so it is not.
//!
//! Grants that expire unused: the grants this process minted are awaited the same way. Spending
//! a grant claims `used:<grant id>` ([`Completer::used`], off the approval's path); past the
//! grant's expiry the sweeper claims the same name, and when it wins — nobody spent the grant —
//! records it `expired` (event `grant_expired_unused`).

use std::sync::Arc;

use crate::evidence::{Evidence, Lifecycle};
use crate::grant::{Challenge, Grant, GrantError, GrantStore};
use crate::random::random_token;
use expiry::{Awaited, Pending, outcome_name, outcome_until};
pub use retry::Retry;

mod expiry;
mod retry;

/// Seconds after a challenge's expiry before the sweeper records it expired (replicas' clocks
/// may differ by this much; a completion on a replica whose clock lags loses to the sweeper's
/// claim and is refused).
pub const EXPIRY_GRACE_SECS: i64 = 2;

/// The authentication event an assurance comes from: what is claimed once, in the grant store
/// (shared by replicas), by every completion path, so one sign-in or one approval never completes
/// two challenges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthEvent {
    /// A sign-in at an IdP (the OIDC callback's ID token, an RFC 9470 retry's access token): the
    /// token's own `iss|sub`, its `auth_time`, and its session id (`sid`) when it names one.
    SignIn {
        subject: String,
        auth_time: i64,
        sid: Option<String>,
    },
    /// An approval reported through the grant API: the approval system (the caller's verified
    /// `iss|sub`), who approved there (the reported `approver`, possibly empty), the subject
    /// approved for, and the reported `auth_time`. The same approval system reporting the same
    /// approver at the same second for the same user is one approval.
    Approval {
        caller: String,
        approver: String,
        subject: String,
        auth_time: i64,
    },
}

impl AuthEvent {
    /// A sign-in event.
    pub fn sign_in(subject: String, auth_time: i64, sid: Option<String>) -> Self {
        Self::SignIn {
            subject,
            auth_time,
            sid,
        }
    }

    /// The store name claimed for this event: a digest over an unambiguous encoding.
    fn name(&self) -> String {
        let parts = match self {
            Self::SignIn {
                subject,
                auth_time,
                sid,
            } => serde_json::json!(["sign_in", subject, auth_time, sid]),
            Self::Approval {
                caller,
                approver,
                subject,
                auth_time,
            } => serde_json::json!(["approval", caller, approver, subject, auth_time]),
        };
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, parts.to_string().as_bytes());
        let hex: String = digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("auth:{hex}")
    }
}

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
    /// The authentication event, completing one challenge at most.
    pub event: AuthEvent,
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
    #[error("a security event about the subject came after the challenge was issued")]
    Revoked,
    #[error(transparent)]
    Store(#[from] GrantError),
    #[error("the completion could not be recorded: {0}")]
    Evidence(String),
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
            CompletionError::Revoked => "challenge_revoked",
            CompletionError::Store(_) => "grant_store_unavailable",
            CompletionError::Evidence(_) => "evidence_unavailable",
        }
    }
}

/// Completes challenges against a grant store, recording each completion.
#[derive(Clone)]
pub struct Completer {
    grants: Arc<dyn GrantStore>,
    evidence: Arc<dyn Evidence>,
    ladder: Vec<String>,
    skew: i64,
    /// Challenges issued here that may still expire unused.
    pending: Arc<Pending>,
    /// Shared Signals are received: a challenge issued before a revoking event about its
    /// subject never completes.
    signals: bool,
}

impl Completer {
    pub fn new(
        grants: Arc<dyn GrantStore>,
        evidence: Arc<dyn Evidence>,
        ladder: Vec<String>,
        skew: i64,
    ) -> Self {
        Self {
            grants,
            evidence,
            ladder,
            skew,
            pending: Arc::default(),
            signals: false,
        }
    }

    /// With Shared Signals received: challenges opened before a `session-revoked` or an
    /// account event (RISC) about their subject are revoked with it.
    pub fn with_shared_signals(mut self) -> Self {
        self.signals = true;
        self
    }

    /// Whether a revoking event about `challenge`'s subject came at or after its issue.
    async fn revoked(&self, challenge: &Challenge, now: i64) -> Result<bool, GrantError> {
        if !self.signals {
            return Ok(false);
        }
        let name = crate::ssf::receiver::journal(&challenge.subject);
        let journals = self.grants.journals(&[name.as_str()], now).await?;
        let events = crate::ssf::event::Recorded::read_all(journals.into_iter().flatten())
            .map_err(GrantError::Unavailable)?;
        Ok(events
            .iter()
            .any(|e| e.time >= challenge.issued_at && e.revokes_challenges()))
    }

    /// Records a refused completion (best effort: a refusal changes nothing).
    async fn refused(&self, challenge: &Challenge, assurance: &Assurance, e: &CompletionError) {
        let event = Lifecycle::Refused {
            challenge,
            method: &assurance.method,
            reason: e.reason(),
        };
        if let Err(err) = self.evidence.lifecycle(&event).await {
            tracing::warn!(challenge_id = %challenge.id, error = %err, "refused completion not recorded");
        }
    }

    pub fn grants(&self) -> &Arc<dyn GrantStore> {
        &self.grants
    }

    pub fn evidence(&self) -> &Arc<dyn Evidence> {
        &self.evidence
    }

    /// The clock skew allowed on `auth_time` (`challenge.completion_skew_secs`), in seconds.
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

    /// Like [`Completer::complete`], keeping the authentication event claimed until at least
    /// `event_until` (an RFC 9470 retry: for as long as its token could be presented).
    pub async fn complete_once(
        &self,
        challenge: &Challenge,
        assurance: &Assurance,
        now: i64,
        event_until: i64,
    ) -> Result<Grant, CompletionError> {
        let until = event_until.max(self.event_until(challenge, assurance, now));
        let outcome = self
            .complete_claimed(challenge, assurance, now, until)
            .await;
        match &outcome {
            Ok(_) => self.pending.remove(challenge),
            Err(e) => self.refused(challenge, assurance, e).await,
        }
        outcome
    }

    /// Checks; claims the authentication event (a sign-in or an approval completes one
    /// challenge, whatever its path); closes the challenge (only one completion wins); records
    /// the completion durably and only then stores its grant. Refusals are recorded (best
    /// effort); a refused check claims nothing.
    pub async fn complete(
        &self,
        challenge: &Challenge,
        assurance: &Assurance,
        now: i64,
    ) -> Result<Grant, CompletionError> {
        self.complete_once(challenge, assurance, now, now).await
    }

    /// How long an event stays claimed: past the expiry of every challenge it could satisfy (one
    /// issued no later than `auth_time` plus the skew), so it never completes a second one.
    fn event_until(&self, challenge: &Challenge, assurance: &Assurance, now: i64) -> i64 {
        let lifetime = challenge.expires_at - challenge.issued_at;
        let latest_issue = assurance.auth_time.saturating_add(self.skew).max(now);
        latest_issue.saturating_add(lifetime + EXPIRY_GRACE_SECS + 60)
    }

    async fn complete_claimed(
        &self,
        challenge: &Challenge,
        assurance: &Assurance,
        now: i64,
        event_until: i64,
    ) -> Result<Grant, CompletionError> {
        self.check(challenge, assurance, now)?;
        if self.revoked(challenge, now).await? {
            return Err(CompletionError::Revoked);
        }
        if !self
            .grants
            .claim_once(&assurance.event.name(), event_until, now)
            .await?
        {
            return Err(CompletionError::AlreadyUsed);
        }
        self.complete_recorded(challenge, assurance, now).await
    }

    async fn complete_recorded(
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
        // The sweeper may have recorded it expired (a replica whose clock runs ahead).
        if !self
            .grants
            .claim_once(&outcome_name(challenge), outcome_until(challenge), now)
            .await?
        {
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
        let event = Lifecycle::Completed {
            challenge,
            grant: &grant,
            approver: assurance.approver.as_deref(),
        };
        self.evidence.lifecycle(&event).await.map_err(|e| {
            tracing::error!(challenge_id = %challenge.id, error = %e, "completion not recorded: no grant minted");
            CompletionError::Evidence(e.to_string())
        })?;
        self.grants.put_grant(grant.clone()).await?;
        self.pending.insert(Awaited::Grant(grant.clone()), false);
        crate::telemetry::metrics::challenge_completed(&grant.method);
        Ok(grant)
    }
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
