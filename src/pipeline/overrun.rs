//! A decision that outlives its budget. Envoy gets the fault (`decision_budget_exceeded`)
//! at once; what the decision had done by then — whose transaction it was, and above all a
//! single-use grant it had already spent — is still recorded, off the answer's path, so an
//! auditor sees why a grant is gone although its transaction was never approved.
//!
//! The decision's future is dropped at the deadline, so it cannot say what it did: it reports
//! its progress as it goes into a [`Progress`] the deadline handler reads. When the overrun
//! happens while an approval's own record was being written, that record may still reach the
//! spool; the overrun record, under the same `decision_id`, says the client got the fault.

use std::sync::{Arc, Mutex};

use crate::decision::Decision;
use crate::evidence::{Evidence, EvidenceContext, Origin};
use crate::fault::Fault;
use crate::grant::Grant;
use crate::telemetry::metrics;

/// The reason added when the overrun happened after a grant was spent.
pub const GRANT_SPENT: &str = "grant_spent_before_deadline";

/// What a decision had established and done, as it went.
#[derive(Debug, Default)]
pub struct Progress(Mutex<Known>);

#[derive(Debug, Default, Clone)]
struct Known {
    action: Option<String>,
    subject: Option<String>,
    transaction: Option<String>,
    policy_revision: Option<String>,
    spent: Option<Grant>,
}

impl Progress {
    /// The request is a sensitive action of `subject` on `transaction`.
    pub fn bound(&self, action: &str, subject: String, transaction: &str, revision: &str) {
        let mut known = self.lock();
        known.action = Some(action.to_string());
        known.subject = Some(subject);
        known.transaction = Some(transaction.to_string());
        known.policy_revision = Some(revision.to_string());
    }

    /// The decision spent `grant`.
    pub fn spent(&self, grant: &Grant) {
        self.lock().spent = Some(grant.clone());
    }

    /// The fault Envoy gets, with what was known.
    pub fn fault(&self, id: String) -> Decision {
        let known = self.lock().clone();
        let mut decision = Decision::refuse(id, Fault::DecisionBudgetExceeded);
        decision.action = known.action;
        decision.subject = known.subject;
        decision.transaction = known.transaction;
        decision.policy_revision = known.policy_revision;
        if let Some(grant) = known.spent {
            decision.reasons.push(GRANT_SPENT.into());
            decision.grant_id = Some(grant.id.clone());
            decision.satisfied_by = Some(grant);
        }
        decision
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Records an overrun fault in the background (a denial needs no durable record before its
/// answer). Before anyone was identified it is only counted, like every other refusal then.
pub fn record(evidence: &Arc<dyn Evidence>, decision: &Decision, origin: Origin, now: i64) {
    if decision.subject.is_none() {
        crate::intake::refused(decision, &origin, now);
        return;
    }
    let (evidence, decision) = (evidence.clone(), decision.clone());
    tokio::spawn(async move {
        let ctx = EvidenceContext {
            decision: &decision,
            txn: None,
            subject: None,
            origin: &origin,
        };
        match evidence.record(&ctx).await {
            Ok(()) => metrics::evidence_recorded("decision"),
            Err(e) => {
                metrics::evidence_failed();
                tracing::error!(decision_id = %decision.id, error = %e, "overrun not recorded");
            }
        }
    });
}

#[cfg(test)]
mod tests;
