//! The RFC 9470 completion path: a client challenged for a transaction retries with a stronger
//! access token. When the token's `acr` and `auth_time` satisfy the transaction's open challenge
//! (the same rules as every completion: after the challenge was issued, within `max_age`, the
//! challenged subject), the challenge is completed — closed once — and its grant returned. A
//! token that does not satisfy it leaves it open: the caller challenges again.

use super::{Assurance, AuthEvent, Completer, CompletionError};
use crate::fault::Fault;
use crate::grant::Grant;
use crate::identity::Subject;
use crate::telemetry::metrics;
use crate::telemetry::stage;
use crate::telemetry::traces::Stage;

/// A retried request that may answer its transaction's open challenge.
pub struct Retry<'a> {
    /// The decision, for the logs.
    pub decision_id: &'a str,
    /// Who presented the token, with its `acr`, `amr`, `auth_time`, `sid` and claims.
    pub subject: &'a Subject,
    /// The transaction's digest.
    pub digest: &'a str,
    /// How long a challenge stays open (`challenge.ttl_secs`), in seconds.
    pub challenge_ttl: i64,
    pub now: i64,
}

impl Completer {
    /// Completes the transaction's open challenge with the retry's token, if it satisfies it:
    /// the grant minted, `None` when there is nothing to complete (the caller challenges again),
    /// or the fault when the store or the evidence sink failed.
    pub async fn answer_retry(&self, r: Retry<'_>) -> Result<Option<Grant>, Fault> {
        let (id, s, now) = (r.decision_id, r.subject, r.now);
        let (Some(acr), Some(auth_time)) = (&s.acr, s.auth_time) else {
            return Ok(None);
        };
        // No open challenge is older than a challenge lifetime: an older sign-in cannot
        // satisfy one, so the store is not asked.
        if auth_time < now - r.challenge_ttl - self.skew() {
            return Ok(None);
        }
        let store_fault = |e: &dyn std::fmt::Display| {
            tracing::error!(decision_id = id, error = %e, "open challenge lookup failed");
            Fault::GrantStoreUnavailable
        };
        let Some(open) = stage(
            Stage::GrantLookup,
            self.grants.open_challenge(r.digest, now),
        )
        .await
        .map_err(|e| {
            metrics::store_error("open_challenge");
            store_fault(&e)
        })?
        else {
            return Ok(None);
        };
        let assurance = Assurance {
            subject: s.binding_key(),
            acr: acr.clone(),
            amr: s.amr.clone(),
            auth_time,
            method: "rfc9470".into(),
            approver: None,
            event: AuthEvent::sign_in(s.binding_key(), auth_time, s.sid.clone()),
        };
        if let Err(e) = self.check(&open, &assurance, now) {
            tracing::info!(decision_id = id, challenge_id = %open.id, reason = e.reason(), "retry does not satisfy the open challenge");
            return Ok(None);
        }
        // The token's authentication may complete this challenge only: it stays spent for as
        // long as the token could be presented.
        let until = s
            .claims
            .get("exp")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(now)
            .max(now + r.challenge_ttl);
        match self.complete_once(&open, &assurance, now, until).await {
            Ok(grant) => {
                tracing::info!(
                    target: "stepguard::evidence",
                    event = "step_up_completed",
                    method = "rfc9470",
                    decision_id = id,
                    challenge_id = %open.id,
                    transaction = %open.digest,
                    action = %open.action,
                    subject = %open.subject,
                    acr = %grant.acr,
                    "step-up completed"
                );
                Ok(Some(grant))
            }
            Err(CompletionError::Store(e)) => {
                metrics::store_error("complete");
                Err(store_fault(&e))
            }
            Err(CompletionError::Evidence(e)) => {
                tracing::error!(decision_id = id, error = %e, "completion not recorded");
                Err(Fault::EvidenceUnavailable)
            }
            // Completed concurrently by another request: this one is challenged again.
            Err(_) => Ok(None),
        }
    }
}
