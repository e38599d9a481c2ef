//! `Pipeline::decide`: the one orchestrator. It reads top to bottom like the product: normalize,
//! classify, identify, bind the transaction, find its grant, evaluate policy, then allow (spending
//! a single-use grant atomically), challenge or deny, and record evidence. It never returns an
//! error: every fault on a sensitive route becomes an explicit deny inside the budget.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use crate::challenge::Challenger;
use crate::clock::Clock;
use crate::completion::{Completer, Retry};
use crate::context::Signals;
use crate::context::config::ContextConfig;
use crate::decision::{Decision, Verdict};
use crate::evidence::{Evidence, Origin};
use crate::fault::Fault;
use crate::grant::{Grant, GrantStore};
use crate::identity::{Identity, IdentityError, Subject, SubjectKind};
use crate::policy::{Outcome, PolicyEngine, PolicyHandle};
use crate::random::random_token;
use crate::request::{AuthzRequest, RawRequest};
use crate::response;
use crate::route::{Action, Classification, RouteTable};
use crate::ssf::deliver::Sender;
use crate::ssf::event::Recorded;
use crate::ssf::send::About;
use crate::ssf::standing::Standing;
use crate::telemetry::traces::{CheckSpan, Stage};
use crate::telemetry::{metrics, stage, stage_sync};
use crate::txn::{Binder, Transaction};
use overrun::Progress;

mod act;
pub mod config;
mod finish;
mod outcome;
mod overrun;

/// Everything a decision needs, built once at start-up.
pub struct Pipeline {
    pub routes: RouteTable,
    pub identity: Identity,
    pub binder: Binder,
    pub grants: Arc<dyn GrantStore>,
    /// The live policy; each decision takes one snapshot of it.
    pub policy: Arc<PolicyHandle>,
    pub challenger: Challenger,
    /// Completes challenges answered by an RFC 9470 retry (the callback and the grant API
    /// share its rules).
    pub completer: Completer,
    /// How context signals are computed.
    pub context: ContextConfig,
    pub evidence: Arc<dyn Evidence>,
    pub clock: Arc<dyn Clock>,
    pub budget: Duration,
    pub policy_timeout: Duration,
    pub max_segments: usize,
    /// Subjects' Shared Signals events, when a transmitter is configured.
    pub standing: Option<Standing>,
    /// Sends events after approvals (`after_approval`), when `shared_signals.send` is set.
    pub notifier: Option<Arc<Sender>>,
}

/// A stage's early answer.
type Step<T> = Result<T, Decision>;

/// A sensitive request, classified and identified, and the policy it is decided under.
struct Sensitive {
    req: AuthzRequest,
    action: Arc<Action>,
    subject: Subject,
    txn: Transaction,
    /// The decision's one policy snapshot: every evaluation and the recorded revision.
    policy: Arc<dyn PolicyEngine>,
    /// What the decision has done so far, for the record of an overrun.
    progress: Arc<Progress>,
    /// The subject's Shared Signals events (the policy's `context.events`).
    events: Vec<Recorded>,
}

impl Pipeline {
    /// Decides one request, within the budget, never failing.
    pub async fn decide(&self, raw: RawRequest) -> Decision {
        let id = random_token(12).unwrap_or_else(|| "unavailable".into());
        let remove = crate::request::reserved_names(&raw.headers);
        let check = CheckSpan::start(&id, &raw.trace_context, &raw.headers);
        let (progress, origin) = (Arc::new(Progress::default()), Origin::of(&raw));
        let run = self
            .run(&id, raw, progress.clone())
            .instrument(check.span().clone());
        let mut decision = match tokio::time::timeout(self.budget, run).await {
            Ok(decision) => decision,
            Err(_) => {
                let fault = progress.fault(id);
                overrun::record(&self.evidence, &fault, origin, self.clock.now());
                fault
            }
        };
        decision.remove_headers = remove;
        if let Some((trace_id, span_id)) = check.finish(&response::decided(&decision)) {
            decision.trace_id = Some(trace_id);
            decision.span_id = span_id;
        }
        decision
    }

    async fn run(&self, id: &str, raw: RawRequest, progress: Arc<Progress>) -> Decision {
        let now = self.clock.now();
        let origin = Origin::of(&raw);
        let mut s = match self.sensitive(id, raw, now, progress).await {
            Ok(Some(s)) => s,
            Ok(None) => return Decision::new(id.into(), Verdict::Allow, "not_sensitive"),
            Err(decision) => return self.finish(decision, None, &origin).await,
        };
        let decision = match self.evaluate(id, &mut s, now).await {
            Ok(decision) | Err(decision) => decision,
        };
        let decision = self.finish(decision, Some(&s), &origin).await;
        self.after_approval(&decision, &s, now);
        decision
    }

    /// After an approval of an action with `after_approval.notify`: the event about the
    /// subject's session is queued for the receivers (never awaited).
    fn after_approval(&self, decision: &Decision, s: &Sensitive, now: i64) {
        let (Verdict::Allow, Some(notify), Some(sender)) = (
            &decision.verdict,
            s.action.after_approval.notify,
            &self.notifier,
        ) else {
            return;
        };
        let (Some(iss), Some(sub)) = (s.subject.issuer.as_deref(), s.subject.id.as_deref()) else {
            return;
        };
        let about = About {
            iss,
            sub,
            sid: s.subject.sid.as_deref(),
            acr: s.subject.acr.as_deref(),
        };
        sender.notify(notify, &about, &s.action.name, now);
    }

    /// Steps 1-3: normalize, classify, identify, bind. `None` for a non-sensitive route.
    async fn sensitive(
        &self,
        id: &str,
        raw: RawRequest,
        now: i64,
        progress: Arc<Progress>,
    ) -> Step<Option<Sensitive>> {
        let refuse = |fault| Decision::refuse(id.into(), fault);
        let req = AuthzRequest::new(raw, self.max_segments).map_err(|e| {
            // Counted and logged (sampled) by `finish`: anyone can send these.
            tracing::debug!(decision_id = id, error = %e, "malformed request");
            refuse(Fault::MalformedRequest)
        })?;
        let (action, params) = match stage_sync(Stage::Classify, || self.routes.classify(&req)) {
            Ok(Classification::Public) => return Ok(None),
            Ok(Classification::Sensitive { action, params }) => (action, params),
            Err(e) => {
                tracing::debug!(decision_id = id, error = %e, "route tag misconfigured");
                return Err(refuse(Fault::UnknownActionTag));
            }
        };
        let with_action = |mut d: Decision| {
            d.action = Some(action.name.clone());
            d
        };
        let subject = stage(Stage::Identify, self.identity.resolve(&req, now))
            .await
            .map_err(|e| {
                let description = match e {
                    IdentityError::Missing => "A bearer token is required".to_string(),
                    IdentityError::InvalidToken(why) => {
                        format!("The access token is invalid: {why}")
                    }
                };
                with_action(Decision::new(
                    id.into(),
                    Verdict::Unauthenticated { description },
                    "invalid_token",
                ))
            })?;
        // Unbindable input is the client's fault (naming the field); a missing key is ours.
        let txn = stage_sync(Stage::Bind, || {
            self.binder.bind(&action, &subject, &req, &params, now)
        })
        .map_err(|e| {
            tracing::info!(decision_id = id, error = %e, "transaction not bound");
            let mut d = refuse(Fault::unbound(e));
            d.subject = Some(subject.binding_key());
            with_action(d)
        })?;
        // No policy yet (a bundle server's first bundle has not activated): fail closed.
        let policy = self
            .policy
            .current()
            .ok_or_else(|| with_action(refuse(Fault::PolicyUnavailable)))?;
        progress.bound(
            &action.name,
            subject.binding_key(),
            &txn.digest,
            policy.revision(),
        );
        Ok(Some(Sensitive {
            req,
            action,
            subject,
            txn,
            policy,
            progress,
            events: Vec::new(),
        }))
    }

    /// Steps 4-7: grant lookup, context signals and Shared Signals standing, policy, and acting
    /// on the outcome.
    async fn evaluate(&self, id: &str, s: &mut Sensitive, now: i64) -> Step<Decision> {
        let fault = |fault| Decision::refuse(id.into(), fault);
        let mut digests = vec![s.txn.digest.as_str()];
        digests.extend(s.txn.previous_digests.iter().map(String::as_str));
        let subject = s.subject.binding_key();
        // All in flight at once: one round trip's latency with Redis.
        let (grant, signals, journals) = stage(Stage::GrantLookup, async {
            tokio::join!(
                self.grants.find_any(&digests, now),
                Signals::compute(self.grants.as_ref(), &self.context, &subject, &s.req, now),
                async {
                    match &self.standing {
                        Some(standing) => standing.read(&s.subject, now).await,
                        None => Ok(None),
                    }
                },
            )
        })
        .await;
        let (grant, signals, journals) = match (grant, signals, journals) {
            (Ok(grant), Ok(signals), Ok(journals)) => (grant, signals, journals),
            (grant, signals, journals) => {
                let (op, e) = match (grant, signals, journals) {
                    (Err(e), _, _) => ("find_grant", e),
                    (_, Err(e), _) => ("context_signals", e),
                    (_, _, Err(e)) => ("subject_events", e),
                    _ => return Err(fault(Fault::GrantStoreUnavailable)),
                };
                metrics::store_error(op);
                tracing::error!(decision_id = id, error = %e, "grant store failed");
                return Err(fault(Fault::GrantStoreUnavailable));
            }
        };
        // Shared Signals: a revoked session or an account event newer than the sign-in refuses
        // the sensitive action; changed claims apply before the policy sees them.
        let judged = Standing::judge(&mut s.subject, journals).map_err(|e| {
            tracing::warn!(decision_id = id, error = %e, "subject events unreadable");
            fault(Fault::GrantStoreUnavailable)
        })?;
        if let Some(refused) = judged.refused {
            return Err(fault(refused));
        }
        s.events = judged.events;
        metrics::grant_lookup(grant.is_some());
        let ladder = self.challenger.ladder();
        let (outcome, severity) = self
            .policy_for(id, s, grant.as_ref(), &signals, now)
            .await?;
        let outcome = act::privileged_needs_its_own_step_up(s, outcome, grant.as_ref(), ladder);
        if let Some(d) = outcome::dry_run(id, &s.action, &outcome, &signals) {
            return Ok(d);
        }
        // The policy's severity (break-glass is `high`) and the break-glass justification go
        // into the decision and its evidence whatever the answer.
        let with_severity = |mut d: Decision, severity: &Option<String>| {
            d.severity.clone_from(severity);
            d.justification
                .clone_from(&signals.break_glass_justification);
            d
        };
        let decision = if matches!(outcome, Outcome::StepUp { .. })
            && s.subject.kind != SubjectKind::Workload
            && let Some(minted) = self.answer_retry(id, s, now).await?
        {
            // The request carries what its transaction's open challenge asked for (an RFC 9470
            // retry): the policy decides again, with the grant that completion minted.
            let (outcome, severity) = self.policy_for(id, s, Some(&minted), &signals, now).await?;
            let outcome = act::privileged_needs_its_own_step_up(s, outcome, Some(&minted), ladder);
            let mut d = self
                .act(id, s, outcome, Some(&minted), now)
                .await
                .map_err(|d| with_severity(d, &severity))?;
            d.reasons.push("step_up_completed_rfc9470".into());
            with_severity(d, &severity)
        } else {
            let d = self
                .act(id, s, outcome, grant.as_ref(), now)
                .await
                .map_err(|d| with_severity(d, &severity))?;
            with_severity(d, &severity)
        };
        if decision.is_allow()
            && let Err(e) = signals
                .remember(self.grants.as_ref(), &self.context, &subject, now)
                .await
        {
            // Not remembering only keeps the network new (stricter) next time.
            tracing::warn!(decision_id = id, error = %e, "could not remember the network");
        }
        Ok(decision)
    }

    /// An RFC 9470 retry may answer the transaction's open challenge
    /// ([`crate::completion::Retry`]).
    async fn answer_retry(&self, id: &str, s: &Sensitive, now: i64) -> Step<Option<Grant>> {
        let retry = Retry {
            decision_id: id,
            subject: &s.subject,
            digest: &s.txn.digest,
            challenge_ttl: self.challenger.config().ttl_secs as i64,
            now,
        };
        (self.completer.answer_retry(retry).await).map_err(|f| Decision::refuse(id.into(), f))
    }
}

#[cfg(test)]
mod tests;
