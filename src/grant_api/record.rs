//! The grant API's evidence: one JSON record per completion attempt and per revocation by an
//! authenticated caller, on target `stepguard::evidence`, shaped like the check path's records
//! (`decision_id`, `timestamp`, `path`, `result`). A completion record names the challenge, its
//! transaction, action and subject, what was reported (`acr`, `amr`, `auth_time`, the approval
//! system's `method` and `approver`), the verified caller, and the grant or the refusal reason.

use serde_json::{Value, json};

use super::{Approver, GrantApiError, METHOD, amr_of};
use crate::grant::{Challenge, Grant};
use crate::proto;
use crate::proto::revoke_grants_request::Target;
use crate::random::random_token;

/// What a completion call asked for, and the challenge once it was loaded.
#[derive(Debug, Clone, Default)]
pub struct Attempt {
    pub challenge_id: String,
    pub reported: Option<proto::Assurance>,
    pub challenge: Option<Challenge>,
}

impl Attempt {
    pub fn new(challenge_id: String, reported: Option<proto::Assurance>) -> Self {
        Self {
            challenge_id,
            reported,
            challenge: None,
        }
    }
}

/// Logs a completion attempt.
pub fn completion(
    approver: &Approver,
    attempt: &Attempt,
    outcome: Result<&Grant, &GrantApiError>,
    now: i64,
) {
    let record = completion_record(approver, attempt, outcome, now);
    tracing::info!(target: "stepguard::evidence", evidence = %record, "grant_api completion");
}

/// Logs a revocation.
pub fn revocation(
    approver: &Approver,
    target: Option<&Target>,
    outcome: Result<&u32, &GrantApiError>,
    now: i64,
) {
    let record = revocation_record(approver, target, outcome, now);
    tracing::info!(target: "stepguard::evidence", evidence = %record, "grant_api revocation");
}

fn envelope(path: &str, result: Value, now: i64) -> Value {
    json!({
        "decision_id": random_token(12).unwrap_or_else(|| "unavailable".into()),
        "timestamp": now,
        "path": path,
        "result": result,
    })
}

/// The completion record.
pub fn completion_record(
    approver: &Approver,
    attempt: &Attempt,
    outcome: Result<&Grant, &GrantApiError>,
    now: i64,
) -> Value {
    let c = attempt.challenge.as_ref();
    let r = attempt.reported.as_ref();
    let (verdict, reason) = match outcome {
        Ok(_) => ("grant", "challenge_completed"),
        Err(e) => ("refused", e.reason()),
    };
    let grant = outcome.ok();
    let result = json!({
        "verdict": verdict,
        "reason": reason,
        "challenge_id": attempt.challenge_id,
        "action": c.map(|c| &c.action),
        "subject": c.map(|c| &c.subject),
        "transaction": c.map(|c| &c.digest),
        "requirement": c.map(|c| &c.requirement),
        "acr": r.map(|r| &r.acr),
        "amr": r.map(amr_of),
        "auth_time": r.map(|r| r.auth_time),
        "method": METHOD,
        "reported_method": r.map(|r| &r.method),
        "approver": {
            "identity": approver.identity,
            "reported": r.map(|r| &r.approver),
        },
        "grant_id": grant.map(|g| &g.id),
        "expires_at": grant.map(|g| g.expires_at),
        "single_use": grant.map(|g| g.uses_left.is_some()),
    });
    envelope("stepguard.v1.GrantService/CompleteChallenge", result, now)
}

/// The revocation record.
pub fn revocation_record(
    approver: &Approver,
    target: Option<&Target>,
    outcome: Result<&u32, &GrantApiError>,
    now: i64,
) -> Value {
    let (subject, transaction) = match target {
        Some(Target::Subject(s)) => (Some(s), None),
        Some(Target::TransactionDigest(d)) => (None, Some(d)),
        None => (None, None),
    };
    let result = json!({
        "verdict": if outcome.is_ok() { "revoked" } else { "refused" },
        "reason": outcome.err().map_or("grants_revoked", GrantApiError::reason),
        "subject": subject,
        "transaction": transaction,
        "revoked": outcome.ok(),
        "approver": {"identity": approver.identity},
    });
    envelope("stepguard.v1.GrantService/RevokeGrants", result, now)
}
