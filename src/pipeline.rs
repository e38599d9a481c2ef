//! `Pipeline::decide`: the one orchestrator. It reads top to bottom like the product: normalize,
//! classify, identify, bind the transaction, find its grant, evaluate policy, then allow (spending
//! a single-use grant atomically), challenge or deny, and record evidence. It never returns an
//! error: every fault on a sensitive route becomes an explicit deny inside the budget.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::RuntimeFlavor;
use tracing::Instrument;

use crate::challenge::limits::{self, IssueLimits, Issued, Rate, RateScope, source_tag};
use crate::challenge::{Challenger, random_token};
use crate::clock::Clock;
use crate::completion::{Assurance, AuthEvent, Completer, CompletionError};
use crate::config::{ActionMode, ContextConfig};
use crate::context::Signals;
use crate::decision::{Decision, Verdict};
use crate::evidence::{Evidence, EvidenceContext, Origin};
use crate::grant::{Grant, GrantStore, GrantTerms, Requirement, subject_tag};
use crate::identity::{Identity, IdentityError, Subject, SubjectKind};
use crate::intake;
use crate::policy::{InputParts, Outcome, PolicyEngine, PolicyError, PolicyHandle, build_input};
use crate::request::{AuthzRequest, RawRequest};
use crate::route::{Action, Classification, RouteTable};
use crate::telemetry::traces::{CheckSpan, Stage, current_ids, record_acr_achieved};
use crate::telemetry::{metrics, stage, stage_sync};
use crate::txn::{Binder, Transaction, TxnError};
use overrun::Progress;

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
        check.finish(&mut decision);
        decision
    }

    async fn run(&self, id: &str, raw: RawRequest, progress: Arc<Progress>) -> Decision {
        let now = self.clock.now();
        let origin = Origin::of(&raw);
        let s = match self.sensitive(id, raw, now, progress).await {
            Ok(Some(s)) => s,
            Ok(None) => return Decision::new(id.into(), Verdict::Allow, "not_sensitive"),
            Err(decision) => return self.finish(decision, None, &origin).await,
        };
        let decision = match self.evaluate(id, &s, now).await {
            Ok(decision) | Err(decision) => decision,
        };
        self.finish(decision, Some(&s), &origin).await
    }

    /// Steps 1-3: normalize, classify, identify, bind. `None` for a non-sensitive route.
    async fn sensitive(
        &self,
        id: &str,
        raw: RawRequest,
        now: i64,
        progress: Arc<Progress>,
    ) -> Step<Option<Sensitive>> {
        let deny =
            |status, reason: &str| Decision::new(id.into(), Verdict::Deny { status }, reason);
        let req = AuthzRequest::new(raw, self.max_segments).map_err(|e| {
            // Counted and logged (sampled) by `finish`: anyone can send these.
            tracing::debug!(decision_id = id, error = %e, "malformed request");
            deny(400, "malformed_request")
        })?;
        let (action, params) = match stage_sync(Stage::Classify, || self.routes.classify(&req)) {
            Ok(Classification::Public) => return Ok(None),
            Ok(Classification::Sensitive { action, params }) => (action, params),
            Err(e) => {
                tracing::debug!(decision_id = id, error = %e, "route tag misconfigured");
                return Err(Decision::fault(id.into(), "unknown_action_tag"));
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
        // Unbindable input is the client's 400 (naming the field); a missing key is our 503.
        let txn = stage_sync(Stage::Bind, || {
            self.binder.bind(&action, &subject, &req, &params, now)
        })
        .map_err(|e| {
            tracing::info!(decision_id = id, error = %e, "transaction not bound");
            let mut d = match e {
                TxnError::Key(..) => Decision::fault(id.into(), e.reason()),
                _ => deny(400, e.reason()),
            };
            d.field = e.field().map(str::to_string);
            d.subject = Some(subject.binding_key());
            with_action(d)
        })?;
        // No policy yet (a bundle server's first bundle has not activated): fail closed.
        let policy = self
            .policy
            .current()
            .ok_or_else(|| with_action(Decision::fault(id.into(), "policy_unavailable")))?;
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
        }))
    }

    /// Steps 4-7: grant lookup and context signals, policy, and acting on the outcome.
    async fn evaluate(&self, id: &str, s: &Sensitive, now: i64) -> Step<Decision> {
        let fault = |reason: &str| Decision::fault(id.into(), reason);
        let mut digests = vec![s.txn.digest.as_str()];
        digests.extend(s.txn.previous_digests.iter().map(String::as_str));
        let subject = s.subject.binding_key();
        // Both in flight at once: one round trip's latency with Redis.
        let (grant, signals) = stage(Stage::GrantLookup, async {
            tokio::join!(
                self.grants.find_any(&digests, now),
                Signals::compute(self.grants.as_ref(), &self.context, &subject, &s.req, now),
            )
        })
        .await;
        let (grant, signals) = match (grant, signals) {
            (Ok(grant), Ok(signals)) => (grant, signals),
            (grant, signals) => {
                let (op, e) = match (grant, signals) {
                    (Err(e), _) => ("find_grant", e),
                    (_, Err(e)) => ("context_signals", e),
                    _ => return Err(fault("grant_store_unavailable")),
                };
                metrics::store_error(op);
                tracing::error!(decision_id = id, error = %e, "grant store failed");
                return Err(fault("grant_store_unavailable"));
            }
        };
        metrics::grant_lookup(grant.is_some());
        let (outcome, severity) = self
            .policy_for(id, s, grant.as_ref(), &signals, now)
            .await?;
        if let Some(d) = self.dry_run(id, s, &outcome, &signals) {
            return Ok(d);
        }
        // The policy's severity (break-glass is `high`) goes into the decision and its evidence
        // whatever the answer.
        let with_severity = |mut d: Decision, severity: &Option<String>| {
            d.severity.clone_from(severity);
            d
        };
        let decision = if matches!(outcome, Outcome::StepUp { .. })
            && s.subject.kind != SubjectKind::Workload
            && let Some(minted) = self.answer_open_challenge(id, s, now).await?
        {
            // The request carries what its transaction's open challenge asked for (an RFC 9470
            // retry): the policy decides again, with the grant that completion minted.
            let (outcome, severity) = self.policy_for(id, s, Some(&minted), &signals, now).await?;
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

    /// A dry run (`mode: shadow`): a decision that would not allow is recorded as it would
    /// have been and the request allowed — nothing is issued or spent. Never for a break-glass
    /// request (the configuration refuses shadow for privileged and irreversible actions).
    fn dry_run(
        &self,
        id: &str,
        s: &Sensitive,
        outcome: &Outcome,
        signals: &Signals,
    ) -> Option<Decision> {
        if s.action.mode != ActionMode::Shadow {
            return None;
        }
        let (would, reasons) = match outcome {
            Outcome::Allow { .. } => return None,
            Outcome::Deny { reasons, .. } => ("deny", reasons),
            Outcome::StepUp { reasons, .. } => ("step_up", reasons),
        };
        if signals.break_glass_justification.is_some() || reasons.iter().any(|r| r == "break_glass")
        {
            return None;
        }
        tracing::warn!(
            decision_id = id,
            action = %s.action.name,
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

    async fn policy_for(
        &self,
        id: &str,
        s: &Sensitive,
        grant: Option<&Grant>,
        signals: &Signals,
        now: i64,
    ) -> Step<(Outcome, Option<String>)> {
        let input = build_input(&InputParts {
            req: &s.req,
            action: &s.action,
            subject: &s.subject,
            txn: &s.txn,
            grant,
            now,
            ladder: self.challenger.ladder(),
            signals: Some(signals),
        });
        self.policy_outcome(id, &s.policy, input).await
    }

    /// Allow (spending the transaction's grant unless the policy declared it allowed without
    /// it: `used_grant: false`), deny, or challenge.
    async fn act(
        &self,
        id: &str,
        s: &Sensitive,
        outcome: Outcome,
        grant: Option<&Grant>,
        now: i64,
    ) -> Step<Decision> {
        let fault = |reason: &str| Decision::fault(id.into(), reason);
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
                    (Some(true), None) => return Err(fault("policy_used_missing_grant")),
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
            Outcome::StepUp { .. } if s.subject.kind == SubjectKind::Workload => Decision::new(
                id.into(),
                Verdict::Deny { status: 403 },
                "workload_requires_transaction_token",
            ),
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

    /// RFC 9470: a client challenged for this transaction retries with a stronger token. When
    /// the token's `acr` and `auth_time` satisfy the transaction's open challenge (the same
    /// rules as every completion: after the challenge was issued, within `max_age`, the
    /// challenged subject), the challenge is completed — closed once — and its grant returned.
    /// A token that does not satisfy it leaves it open: the caller challenges again.
    async fn answer_open_challenge(
        &self,
        id: &str,
        s: &Sensitive,
        now: i64,
    ) -> Step<Option<Grant>> {
        let (Some(acr), Some(auth_time)) = (&s.subject.acr, s.subject.auth_time) else {
            return Ok(None);
        };
        // No open challenge is older than a challenge lifetime: an older sign-in cannot
        // satisfy one, so the store is not asked.
        let oldest_open = now - self.challenger.config().ttl_secs as i64;
        if auth_time < oldest_open - self.completer.skew() {
            return Ok(None);
        }
        let fault = |e: &dyn std::fmt::Display| {
            tracing::error!(decision_id = id, error = %e, "open challenge lookup failed");
            Decision::fault(id.into(), "grant_store_unavailable")
        };
        let Some(open) = stage(
            Stage::GrantLookup,
            self.grants.open_challenge(&s.txn.digest, now),
        )
        .await
        .map_err(|e| {
            metrics::store_error("open_challenge");
            fault(&e)
        })?
        else {
            return Ok(None);
        };
        let assurance = Assurance {
            subject: s.subject.binding_key(),
            acr: acr.clone(),
            amr: s.subject.amr.clone(),
            auth_time,
            method: "rfc9470".into(),
            approver: None,
            event: AuthEvent::sign_in(s.subject.binding_key(), auth_time, s.subject.sid.clone()),
        };
        if let Err(e) = self.completer.check(&open, &assurance, now) {
            tracing::info!(decision_id = id, challenge_id = %open.id, reason = e.reason(), "retry does not satisfy the open challenge");
            return Ok(None);
        }
        // The token's authentication may complete this challenge only: it stays spent for as
        // long as the token could be presented.
        let until = s
            .subject
            .claims
            .get("exp")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(now)
            .max(now + self.challenger.config().ttl_secs as i64);
        match self
            .completer
            .complete_once(&open, &assurance, now, until)
            .await
        {
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
                Err(fault(&e))
            }
            Err(CompletionError::Evidence(e)) => {
                tracing::error!(decision_id = id, error = %e, "completion not recorded");
                Err(Decision::fault(id.into(), "evidence_unavailable"))
            }
            // Completed concurrently by another request: this one is challenged again.
            Err(_) => Ok(None),
        }
    }

    async fn policy_outcome(
        &self,
        id: &str,
        policy: &Arc<dyn PolicyEngine>,
        input: serde_json::Value,
    ) -> Step<(Outcome, Option<String>)> {
        let fault = |reason: &'static str| {
            metrics::policy_error(reason);
            Decision::fault(id.into(), reason)
        };
        let value = match stage(
            Stage::Policy,
            self.evaluate_off_reactor(policy.clone(), input),
        )
        .await
        {
            Ok(Ok(value)) => value,
            Ok(Err(e)) => {
                tracing::error!(decision_id = id, error = %e, "policy evaluation failed");
                return Err(fault("policy_error"));
            }
            Err(reason) => return Err(fault(reason)),
        };
        let outcome = Outcome::from_value(&value, self.challenger.ladder()).map_err(|e| {
            tracing::error!(decision_id = id, error = %e, "policy output rejected");
            fault("policy_contract_violation")
        })?;
        Ok((outcome, crate::policy::severity(&value)))
    }

    /// Runs the (synchronous, CPU-bound) policy without stalling the async reactor: on the
    /// multi-threaded runtime with `block_in_place` (this worker's other tasks move to another
    /// thread; no hand-off of the evaluation itself), elsewhere on the blocking pool. Either way
    /// the engine's own limits stop a runaway policy, and a late answer counts as a timeout.
    async fn evaluate_off_reactor(
        &self,
        policy: Arc<dyn PolicyEngine>,
        input: serde_json::Value,
    ) -> Result<Result<serde_json::Value, PolicyError>, &'static str> {
        let started = std::time::Instant::now();
        let result = match tokio::runtime::Handle::current().runtime_flavor() {
            RuntimeFlavor::MultiThread => tokio::task::block_in_place(move || {
                std::panic::catch_unwind(AssertUnwindSafe(|| policy.evaluate(input)))
            })
            .map_err(|_| "policy_panicked"),
            _ => {
                let task = tokio::task::spawn_blocking(move || policy.evaluate(input));
                match tokio::time::timeout(self.policy_timeout, task).await {
                    Ok(joined) => joined.map_err(|_| "policy_panicked"),
                    Err(_) => Err("policy_timeout"),
                }
            }
        }?;
        if started.elapsed() > self.policy_timeout {
            return Err("policy_timeout");
        }
        Ok(result)
    }

    /// Spends the grant atomically; a grant already spent by a concurrent request is refused.
    /// A spool known to be failing (a write or `fdatasync` error not yet recovered) spends
    /// nothing: the approval could not be recorded, so the grant is kept for the retry.
    async fn spend(&self, id: &str, grant: &Grant, now: i64) -> Step<String> {
        if !self.evidence.writable() {
            return Err(Decision::fault(id.into(), "evidence_unavailable"));
        }
        match self.grants.consume(grant, now).await {
            Ok(true) => {
                metrics::grant_consumed(true);
                self.completer.used(grant, now);
                Ok(grant.id.clone())
            }
            Ok(false) => {
                metrics::grant_consumed(false);
                Err(Decision::new(
                    id.into(),
                    Verdict::Deny { status: 403 },
                    "grant_already_used",
                ))
            }
            Err(e) => {
                metrics::store_error("consume");
                tracing::error!(decision_id = id, error = %e, "grant consume failed");
                // An ambiguous consume counts as spent: the user steps up again.
                Err(Decision::fault(id.into(), "grant_store_unavailable"))
            }
        }
    }

    async fn challenge(
        &self,
        id: &str,
        s: &Sensitive,
        requirement: Requirement,
        terms: GrantTerms,
        now: i64,
    ) -> Step<Decision> {
        let fault = |reason: &str| Decision::fault(id.into(), reason);
        let mut challenge = self
            .challenger
            .challenge(
                &s.action,
                &s.subject,
                &s.txn,
                &s.req,
                requirement,
                terms,
                now,
            )
            .ok_or_else(|| fault("rng_unavailable"))?;
        challenge.policy_revision = Some(s.policy.revision().to_string());
        // A browser is sent to the IdP, bound by a cookie the callback checks; that needs the
        // IdP's endpoint (discovered) before anything is stored.
        let browser = match s.req.is_browser() {
            false => None,
            true => {
                let cookie = self
                    .challenger
                    .bind_browser(&mut challenge)
                    .ok_or_else(|| fault("rng_unavailable"))?;
                let location = self
                    .challenger
                    .authorization_url(&challenge)
                    .ok_or_else(|| fault("idp_metadata_unavailable"))?;
                Some((location, cookie))
            }
        };
        let issued = limits::issue(&*self.grants, challenge.clone(), &self.issue_limits(s), now)
            .await
            .map_err(|e| {
                metrics::store_error("issue_challenge");
                tracing::error!(decision_id = id, error = %e, "issuing challenge failed");
                fault("grant_store_unavailable")
            })?;
        let limited = |retry_after, reason: &str| {
            Decision::new(id.into(), Verdict::RateLimited { retry_after }, reason)
        };
        match issued {
            Issued::Open { .. } => {
                metrics::challenge_issued(&s.action.name);
                self.completer.issued(&challenge);
            }
            Issued::RateLimited { scope, retry_after } => {
                return Err(limited(
                    retry_after,
                    match scope {
                        RateScope::Subject => "challenge_rate_limited_subject",
                        RateScope::SourceIp => "challenge_rate_limited_source_ip",
                    },
                ));
            }
            Issued::TooManyOpen { retry_after } => {
                return Err(limited(retry_after, "too_many_open_challenges"));
            }
            Issued::Looping { attempts, .. } => {
                tracing::warn!(
                    decision_id = id,
                    attempts,
                    "step-up for this transaction keeps failing to complete"
                );
                return Err(Decision::new(
                    id.into(),
                    Verdict::Deny { status: 403 },
                    "step_up_not_completing",
                ));
            }
        }
        let (location, set_cookie) = browser.unzip();
        let verdict = Verdict::Challenge {
            challenge_id: challenge.id.clone(),
            requirement: challenge.requirement.clone(),
            location,
            set_cookie,
        };
        Ok(Decision::new(id.into(), verdict, "step_up_required"))
    }

    /// Abuse limits, checked by the store as it writes the challenge: challenges per subject
    /// and per source IP (an IPv6 source per /64) in fixed windows (429 with `Retry-After`),
    /// the subject's first; open challenges per subject
    /// (429), and challenges per transaction without a grant in between (the loop guard, 403).
    fn issue_limits(&self, s: &Sensitive) -> IssueLimits {
        let limits = self.challenger.limits();
        let mut rates = vec![Rate {
            scope: RateScope::Subject,
            name: subject_tag(&s.subject.binding_key()),
            window: limits.per_subject.window_secs as i64,
            max: limits.per_subject.max,
        }];
        if let Some(ip) = &s.req.raw.source_address {
            rates.push(Rate {
                scope: RateScope::SourceIp,
                name: source_tag(ip),
                window: limits.per_source_ip.window_secs as i64,
                max: limits.per_source_ip.max,
            });
        }
        IssueLimits {
            rates,
            max_open: Some(limits.max_open_per_subject),
            max_attempts: Some(limits.max_attempts_per_transaction),
        }
    }

    /// Fills in the context and records evidence; an approval is answered only once its record
    /// is durable, and an approval without evidence is refused. A refusal before identification
    /// is not recorded ([`intake`]).
    async fn finish(
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
                return Decision::fault(decision.id, "evidence_unavailable");
            }
        }
        decision
    }
}

#[cfg(test)]
mod tests;
