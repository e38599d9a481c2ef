//! The end of every decision: the context filled in and the evidence recorded (an approval is
//! answered only once its record is durable).

use super::{Pipeline, Sensitive};
use crate::decision::{ActionClass, Decision};
use crate::evidence::{EvidenceContext, Origin};
use crate::fault::Fault;
use crate::intake;
use crate::telemetry::traces::{Stage, current_ids, record_acr_achieved};
use crate::telemetry::{metrics, stage};

impl Pipeline {
    /// Fills in the context and records evidence; an approval is answered only once its record
    /// is durable, and an approval without evidence is refused. A refusal before identification
    /// is not recorded ([`intake`]).
    pub(super) async fn finish(
        &self,
        mut decision: Decision,
        s: Option<&Sensitive>,
        origin: &Origin,
    ) -> Decision {
        if let Some(s) = s {
            decision.action = Some(s.action.name.clone());
            decision.subject = Some(s.subject.binding_key());
            decision.transaction = Some(s.txn.digest.clone());
            decision.policy_revision = Some(s.policy.revision().to_string());
            decision.action_class = Some(ActionClass {
                privileged: s.action.privileged,
                reversible: s.action.reversible,
            });
            if decision.grant_id.is_none()
                && let Some(acr) = &s.subject.acr
            {
                record_acr_achieved(acr);
            }
        }
        (decision.trace_id, decision.span_id) = current_ids();
        // Refused before anyone was identified: counted and logged (sampled), no durable record.
        if s.is_none() && intake::before_subject(&decision) {
            intake::refused(&decision, origin, self.clock.now());
            return decision;
        }
        if matches!(decision.severity.as_deref(), Some("high" | "critical")) {
            tracing::warn!(
                decision_id = %decision.id,
                severity = decision.severity.as_deref().unwrap_or_default(),
                action = decision.action.as_deref().unwrap_or_default(),
                reasons = ?decision.reasons,
                "high-severity sensitive decision"
            );
        }
        let ctx = EvidenceContext {
            decision: &decision,
            txn: s.map(|s| &s.txn),
            subject: s.map(|s| &s.subject),
            origin,
        };
        let recorded = stage(Stage::Evidence, self.evidence.record(&ctx)).await;
        match &recorded {
            Ok(()) => metrics::evidence_recorded("decision"),
            Err(_) => metrics::evidence_failed(),
        }
        if let Err(e) = recorded {
            tracing::error!(decision_id = %decision.id, error = %e, "evidence not recorded");
            if decision.is_allow() {
                return Decision::refuse(decision.id, Fault::EvidenceUnavailable);
            }
        }
        decision
    }
}
