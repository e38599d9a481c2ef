//! Acting on the policy's outcome: allow (spending the transaction's single-use grant
//! atomically), deny, or challenge.

use super::{Pipeline, Sensitive, Step};
use crate::challenge::ChallengeRequest;
use crate::decision::{Decision, Verdict};
use crate::fault::Fault;
use crate::grant::{Grant, GrantTerms, Requirement};
use crate::identity::SubjectKind;
use crate::policy::Outcome;
use crate::telemetry::traces::{Stage, record_acr_achieved};
use crate::telemetry::{metrics, stage};

/// What a privileged action's step-up asks when the policy asked nothing: single use, for a
/// minute (the shipped policy's terms for privileged actions).
const PRIVILEGED_TERMS: GrantTerms = GrantTerms {
    single_use: true,
    ttl: 60,
};

/// The standing-privilege rule, whatever the policy and the token say: a person's approval of a
/// privileged action rests on a step-up for that transaction. A grant found for it is spent
/// even if the policy said it allowed without; with none, the allow becomes a step-up at the
/// session's own level or above, signed in afresh (`max_age` 0). So an elevation used for one
/// privileged action never carries over to another. Workloads present transaction tokens and
/// never step up.
pub(super) fn privileged_needs_its_own_step_up(
    s: &Sensitive,
    outcome: Outcome,
    grant: Option<&Grant>,
    ladder: &[String],
) -> Outcome {
    if !s.action.privileged || s.subject.kind == SubjectKind::Workload {
        return outcome;
    }
    match outcome {
        Outcome::Allow {
            reason,
            reasons,
            requirement,
            ..
        } if grant.is_some() => Outcome::Allow {
            reason,
            reasons,
            used_grant: Some(true),
            requirement,
        },
        Outcome::Allow {
            reasons,
            requirement,
            ..
        } => {
            let acr_values = requirement.map(|r| r.acr_values).unwrap_or_else(|| {
                let session = s.subject.acr.as_deref();
                let from = session
                    .and_then(|acr| ladder.iter().position(|l| l == acr))
                    .unwrap_or(0);
                ladder[from..].to_vec()
            });
            let mut reasons = reasons;
            reasons.push("privileged_needs_its_own_step_up".into());
            Outcome::StepUp {
                reason: "privileged_needs_its_own_step_up".into(),
                reasons,
                requirement: Requirement {
                    acr_values,
                    max_age: 0,
                },
                terms: PRIVILEGED_TERMS,
            }
        }
        other => other,
    }
}

impl Pipeline {
    /// Allow (spending the transaction's grant unless the policy declared it allowed without
    /// it: `used_grant: false`), deny, or challenge.
    pub(super) async fn act(
        &self,
        id: &str,
        s: &Sensitive,
        outcome: Outcome,
        grant: Option<&Grant>,
        now: i64,
    ) -> Step<Decision> {
        Ok(match outcome {
            Outcome::Allow {
                reason,
                reasons,
                used_grant,
                ..
            } => {
                // A grant found for this transaction is spent unless the policy says it allowed
                // without it: an approval never leaves a single-use grant to approve again.
                let spent = match (used_grant, grant) {
                    (Some(true) | None, Some(g)) => {
                        record_acr_achieved(&g.acr);
                        let spent = stage(Stage::Consume, self.spend(id, g, now)).await?;
                        s.progress.spent(g);
                        Some(spent)
                    }
                    (Some(true), None) => {
                        return Err(Decision::refuse(id.into(), Fault::PolicyUsedMissingGrant));
                    }
                    (Some(false), _) | (None, None) => None,
                };
                let mut d = Decision::new(id.into(), Verdict::Allow, &reason);
                d.reasons = reasons;
                if spent.is_some() {
                    d.grant_policy_revision = grant.and_then(|g| g.policy_revision.clone());
                }
                d.satisfied_by = grant.filter(|_| spent.is_some()).cloned();
                d.grant_id = spent;
                d
            }
            Outcome::Deny {
                status,
                reason,
                reasons,
            } => {
                let mut d = Decision::new(id.into(), Verdict::Deny { status }, &reason);
                d.reasons = reasons;
                d
            }
            Outcome::StepUp { .. } if s.subject.kind == SubjectKind::Workload => {
                Decision::refuse(id.into(), Fault::WorkloadRequiresTransactionToken)
            }
            Outcome::StepUp {
                reason,
                reasons,
                requirement,
                terms,
            } => {
                let mut d = stage(
                    Stage::Challenge,
                    self.challenge(id, s, requirement, terms, now),
                )
                .await?;
                d.reason = reason;
                d.reasons = reasons;
                d
            }
        })
    }

    /// Spends the grant atomically; a grant already spent by a concurrent request is refused.
    /// A spool known to be failing (a write or `fdatasync` error not yet recovered) spends
    /// nothing: the approval could not be recorded, so the grant is kept for the retry.
    async fn spend(&self, id: &str, grant: &Grant, now: i64) -> Step<String> {
        if !self.evidence.writable() {
            return Err(Decision::refuse(id.into(), Fault::EvidenceUnavailable));
        }
        match self.grants.consume(grant, now).await {
            Ok(true) => {
                metrics::grant_consumed(true);
                self.completer.used(grant, now);
                Ok(grant.id.clone())
            }
            Ok(false) => {
                metrics::grant_consumed(false);
                Err(Decision::refuse(id.into(), Fault::GrantAlreadyUsed))
            }
            Err(e) => {
                metrics::store_error("consume");
                tracing::error!(decision_id = id, error = %e, "grant consume failed");
                // An ambiguous consume counts as spent: the user steps up again.
                Err(Decision::refuse(id.into(), Fault::GrantStoreUnavailable))
            }
        }
    }

    /// Issues a challenge for the step-up the policy asked for ([`crate::challenge::Challenger::issue`]).
    async fn challenge(
        &self,
        id: &str,
        s: &Sensitive,
        requirement: Requirement,
        terms: GrantTerms,
        now: i64,
    ) -> Step<Decision> {
        let request = ChallengeRequest {
            decision_id: id,
            action: &s.action,
            subject: &s.subject,
            txn: &s.txn,
            req: &s.req,
            requirement,
            terms,
            policy_revision: s.policy.revision(),
            now,
        };
        let issued = self
            .challenger
            .issue(self.grants.as_ref(), request)
            .await
            .map_err(|f| Decision::refuse(id.into(), f))?;
        self.completer.issued(&issued.challenge);
        let verdict = Verdict::Challenge {
            challenge_id: issued.challenge.id.clone(),
            requirement: issued.challenge.requirement.clone(),
            location: issued.location,
            set_cookie: issued.set_cookie,
        };
        Ok(Decision::new(id.into(), verdict, "step_up_required"))
    }
}
