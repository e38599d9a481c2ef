//! The policy's outcome for a sensitive request: the typed input document built, the policy
//! evaluated within its timeout — on the decision's own task when the engine bounds itself (the
//! Rego VM's instruction and time limits), handed off the reactor otherwise — the output
//! contract read, and the dry run (`mode: shadow`) that allows what the outcome would not.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use tokio::runtime::RuntimeFlavor;

use super::{Pipeline, Sensitive, Step};
use crate::context::Signals;
use crate::decision::{Decision, Verdict};
use crate::fault::Fault;
use crate::grant::Grant;
use crate::policy::{InputParts, Outcome, PolicyEngine, PolicyError, PolicyInput};
use crate::route::Action;
use crate::route::config::ActionMode;
use crate::telemetry::traces::Stage;
use crate::telemetry::{metrics, stage};

impl Pipeline {
    /// Evaluates the decision's policy snapshot on the request and what was found for it.
    pub(super) async fn policy_for(
        &self,
        id: &str,
        s: &Sensitive,
        grant: Option<&Grant>,
        signals: &Signals,
        now: i64,
    ) -> Step<(Outcome, Option<String>)> {
        let input = PolicyInput::build(&InputParts {
            req: &s.req,
            action: &s.action,
            subject: &s.subject,
            txn: &s.txn,
            grant,
            now,
            ladder: self.challenger.ladder(),
            signals: Some(signals),
            events: &s.events,
        });
        self.policy_outcome(id, &s.policy, &input).await
    }

    async fn policy_outcome(
        &self,
        id: &str,
        policy: &Arc<dyn PolicyEngine>,
        input: &PolicyInput<'_>,
    ) -> Step<(Outcome, Option<String>)> {
        let fault = |fault: Fault| {
            metrics::policy_error(fault.reason());
            Decision::refuse(id.into(), fault)
        };
        let value = match stage(Stage::Policy, self.evaluate_policy(policy, input)).await {
            Ok(Ok(value)) => value,
            Ok(Err(e)) => {
                tracing::error!(decision_id = id, error = %e, "policy evaluation failed");
                return Err(fault(Fault::PolicyError));
            }
            Err(f) => return Err(fault(f)),
        };
        let outcome = Outcome::from_value(&value, self.challenger.ladder()).map_err(|e| {
            tracing::error!(decision_id = id, error = %e, "policy output rejected");
            fault(Fault::PolicyContractViolation)
        })?;
        Ok((outcome, crate::policy::severity(&value)))
    }

    /// Runs the (synchronous, CPU-bound) policy. An engine that stops a runaway evaluation by
    /// itself within the policy timeout ([`PolicyEngine::inline`]: the Rego VM, ~10 µs a
    /// decision) runs right here, on the decision's task: no thread hand-off, no context switch.
    /// Any other is handed off the reactor ([`Pipeline::hand_off`]). Either way an answer later
    /// than the timeout counts as a timeout, and a panic is a fault.
    async fn evaluate_policy(
        &self,
        policy: &Arc<dyn PolicyEngine>,
        input: &PolicyInput<'_>,
    ) -> Result<Result<serde_json::Value, PolicyError>, Fault> {
        let started = Instant::now();
        let result = if policy.inline() {
            std::panic::catch_unwind(AssertUnwindSafe(|| policy.evaluate_input(input)))
                .map_err(|_| Fault::PolicyPanicked)?
        } else {
            self.hand_off(policy.clone(), input.to_json()).await?
        };
        if started.elapsed() > self.policy_timeout {
            return Err(Fault::PolicyTimeout);
        }
        Ok(result)
    }

    /// An engine that does not bound itself, off the async reactor: on the multi-threaded
    /// runtime with `block_in_place` (this worker's other tasks move to another thread),
    /// elsewhere on the blocking pool, abandoned at the timeout.
    async fn hand_off(
        &self,
        policy: Arc<dyn PolicyEngine>,
        input: serde_json::Value,
    ) -> Result<Result<serde_json::Value, PolicyError>, Fault> {
        match tokio::runtime::Handle::current().runtime_flavor() {
            RuntimeFlavor::MultiThread => tokio::task::block_in_place(move || {
                std::panic::catch_unwind(AssertUnwindSafe(|| policy.evaluate(input)))
            })
            .map_err(|_| Fault::PolicyPanicked),
            _ => {
                let task = tokio::task::spawn_blocking(move || policy.evaluate(input));
                match tokio::time::timeout(self.policy_timeout, task).await {
                    Ok(joined) => joined.map_err(|_| Fault::PolicyPanicked),
                    Err(_) => Err(Fault::PolicyTimeout),
                }
            }
        }
    }
}

/// A dry run (`mode: shadow`): a decision that would not allow is recorded as it would
/// have been and the request allowed — nothing is issued or spent. Never for a break-glass
/// request (the configuration refuses shadow for privileged and irreversible actions).
pub(super) fn dry_run(
    id: &str,
    action: &Action,
    outcome: &Outcome,
    signals: &Signals,
) -> Option<Decision> {
    if action.mode != ActionMode::Shadow {
        return None;
    }
    let (would, reasons) = match outcome {
        Outcome::Allow { .. } => return None,
        Outcome::Deny { reasons, .. } => ("deny", reasons),
        Outcome::StepUp { reasons, .. } => ("step_up", reasons),
    };
    if signals.break_glass_justification.is_some() || reasons.iter().any(|r| r == "break_glass") {
        return None;
    }
    tracing::warn!(
        decision_id = id,
        action = %action.name,
        would,
        reasons = ?reasons,
        "DRY RUN: the request is allowed although the policy would not allow it"
    );
    let mut d = Decision::new(id.into(), Verdict::Allow, "dry_run");
    d.reasons = std::iter::once("dry_run".to_string())
        .chain(std::iter::once(format!("dry_run_would_{would}")))
        .chain(reasons.iter().cloned())
        .collect();
    Some(d)
}
