//! The trial a new policy passes before it serves (see [`Trial`]): its decision on a
//! representative request fits the output contract, and its own validation
//! (`misconfiguration`: the requirements data, the ladder and the settings) finds nothing wrong
//! for any configured action. A policy's decision does not re-validate its data per request, so
//! a bad data document, ladder or setting is refused here, at start and at every reload.

use std::sync::Arc;

use serde_json::json;

use crate::clock::Clock;
use crate::identity::Subject;
use crate::policy::{InputParts, Outcome, PolicyEngine, PolicyError, build_input};
use crate::request::{AuthzRequest, RawRequest};
use crate::route::config::{ActionConfig, Risk};
use crate::route::{Action, RouteTable};
use crate::txn::Transaction;

/// How many evaluations a trial makes before an evaluation error refuses the policy.
pub const TRIAL_TRIES: u32 = 3;

/// The trial a new policy must pass before it serves: its entrypoint evaluated on a
/// representative sensitive request (the first configured action, a human subject at the
/// lowest `acr`, no grant) must produce a decision that fits the output contract, and its
/// `misconfiguration` rule, evaluated on the same request for every configured action, must be
/// empty (or absent: a policy without one has nothing to check).
pub struct Trial {
    action: Arc<Action>,
    /// Every configured action (the first one's trial action when none is configured).
    actions: Vec<Arc<Action>>,
    ladder: Vec<String>,
    clock: Arc<dyn Clock>,
}

impl Trial {
    /// The trial for the first of `actions` (a synthetic high-risk one when none is
    /// configured), on the `acr` ladder `ladder`.
    pub fn for_actions(
        configured_actions: &[ActionConfig],
        ladder: &[String],
        clock: Arc<dyn Clock>,
    ) -> Result<Self, PolicyError> {
        let first = configured_actions
            .first()
            .cloned()
            .unwrap_or_else(|| ActionConfig {
                name: "stepguard.trial".into(),
                matcher: None,
                risk: Risk::High,
                reversible: true,
                privileged: false,
                bind: Vec::new(),
                body: Default::default(),
                value: None,
                currency: None,
                authorization_details_type: None,
                after_approval: Default::default(),
                mode: Default::default(),
            });
        let action = RouteTable::new(std::slice::from_ref(&first))
            .action(&first.name)
            .cloned()
            .ok_or_else(|| PolicyError::Load(format!("no trial action `{}`", first.name)))?;
        let table = RouteTable::new(configured_actions);
        let mut actions = Vec::new();
        for configured in configured_actions {
            let found = table.action(&configured.name).cloned().ok_or_else(|| {
                PolicyError::Load(format!("no trial action `{}`", configured.name))
            })?;
            actions.push(found);
        }
        if actions.is_empty() {
            actions.push(action.clone());
        }
        Ok(Self {
            action,
            actions,
            ladder: ladder.to_vec(),
            clock,
        })
    }

    /// Evaluates `engine` on the trial input and reads the result through the contract. An
    /// evaluation error (a time limit reached, say) is tried again, up to [`TRIAL_TRIES`] times
    /// in all: a policy's first, cold evaluation on a starved CPU (a busy node at start) must not
    /// stop stepguard from starting, while a policy that fails every time is still refused.
    /// Then the policy's validation is evaluated with every configured action's trial input;
    /// problems refuse the policy, naming the action and each problem.
    pub fn check(&self, engine: &dyn PolicyEngine) -> Result<Outcome, PolicyError> {
        let mut tries = 1;
        let value = loop {
            match engine.evaluate(self.input(&self.action)?) {
                Err(PolicyError::Eval(_)) if tries < TRIAL_TRIES => tries += 1,
                result => break result?,
            }
        };
        let outcome = Outcome::from_value(&value, &self.ladder)?;
        self.validate(engine)?;
        Ok(outcome)
    }

    /// `misconfiguration` for every configured action: an error naming the problems, if any.
    pub fn validate(&self, engine: &dyn PolicyEngine) -> Result<(), PolicyError> {
        let mut problems = Vec::new();
        for action in &self.actions {
            let Some(found) = engine.misconfiguration(self.input(action)?)? else {
                return Ok(());
            };
            if !found.is_empty() {
                problems.push(format!("`{}`: {}", action.name, found.join("; ")));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PolicyError::Contract(format!(
                "the policy reports its data, ladder or settings misconfigured for {}",
                problems.join(", ")
            )))
        }
    }

    fn input(&self, action: &Arc<Action>) -> Result<serde_json::Value, PolicyError> {
        let now = self.clock.now();
        let raw = RawRequest {
            id: "stepguard-trial".into(),
            method: "POST".into(),
            scheme: "https".into(),
            host: "stepguard.trial".into(),
            path: "/.stepguard/trial".into(),
            protocol: "HTTP/1.1".into(),
            headers: [("content-type".to_string(), "application/json".to_string())].into(),
            body: b"{}".to_vec(),
            source_address: Some("192.0.2.1".into()),
            ..Default::default()
        };
        let req = AuthzRequest::new(raw, 8)
            .map_err(|e| PolicyError::Eval(format!("trial request: {e}")))?;
        let acr = self.ladder.first().cloned().unwrap_or_default();
        let subject = Subject::from_claims(
            json!({"iss": "https://stepguard.trial", "sub": "trial", "acr": acr,
                   "amr": ["pwd"], "auth_time": now - 3_600, "iat": now - 60, "exp": now + 300}),
            now,
            None,
        );
        let txn = Transaction {
            digest: "trial:AAAA".into(),
            key_id: "trial".into(),
            previous_digests: Vec::new(),
            bound: action.bind.iter().map(|b| (b.field.name(), None)).collect(),
            value: None,
            currency: None,
        };
        Ok(build_input(&InputParts {
            req: &req,
            action,
            subject: &subject,
            txn: &txn,
            grant: None,
            now,
            ladder: &self.ladder,
            signals: None,
            events: &[],
        }))
    }
}
