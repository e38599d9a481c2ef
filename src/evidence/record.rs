//! The record of one decision or lifecycle event, shaped like OPA's decision-log event where the
//! two overlap (`decision_id`, `timestamp`, `path`, `labels`, `bundles`, `trace_id`, `span_id`,
//! `input`, `result`, `masked`), with the bound values of the transaction redacted as configured: a
//! listed field's value becomes `hmac-sha256:<base64url>` under the redaction key (equal values
//! stay equal, so records can still be correlated) or `"[redacted]"` without one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use super::canonical::sanitize;
use super::{EvidenceContext, Lifecycle, Signal, time};
use crate::decision::Verdict;
use crate::fault::Fault;
use crate::grant::{Challenge, Grant, Requirement};

/// Record format version: 2, records unsigned and each batch closed by a signed checkpoint (1:
/// every record signed).
pub const FORMAT: u64 = 2;

/// Which bound fields are redacted, and how.
#[derive(Default)]
pub struct Redaction {
    fields: BTreeSet<String>,
    /// Actions all of whose bound values are redacted.
    actions: BTreeSet<String>,
    key: Option<hmac::Key>,
}

impl Redaction {
    /// Redacts `fields`: keyed hashes with `key`, `"[redacted]"` without.
    pub fn new(fields: impl IntoIterator<Item = String>, key: Option<&[u8]>) -> Self {
        Self {
            fields: fields.into_iter().collect(),
            actions: BTreeSet::new(),
            key: key.map(|k| hmac::Key::new(hmac::HMAC_SHA256, k)),
        }
    }

    /// Also redacts every bound value of `actions`.
    pub fn with_actions(mut self, actions: impl IntoIterator<Item = String>) -> Self {
        self.actions = actions.into_iter().collect();
        self
    }

    fn covers(&self, action: Option<&str>, field: &str) -> bool {
        self.fields.contains(field) || action.is_some_and(|a| self.actions.contains(a))
    }

    fn apply(&self, field: &str, value: &str) -> String {
        match &self.key {
            Some(key) => {
                let mut ctx = hmac::Context::with_key(key);
                ctx.update(field.as_bytes());
                ctx.update(&[0]);
                ctx.update(value.as_bytes());
                format!(
                    "hmac-sha256:{}",
                    URL_SAFE_NO_PAD.encode(ctx.sign().as_ref())
                )
            }
            None => "[redacted]".into(),
        }
    }
}

/// Builds decision records.
#[derive(Default)]
pub struct Recorder {
    /// The policy entrypoint (OPA's `path`).
    path: String,
    labels: Map<String, Value>,
    redaction: Redaction,
}

impl Recorder {
    pub fn new(path: &str, labels: &BTreeMap<String, String>, redaction: Redaction) -> Self {
        let mut all = Map::new();
        all.insert("app".into(), "stepguard".into());
        all.insert("version".into(), env!("CARGO_PKG_VERSION").into());
        for (k, v) in labels {
            all.insert(k.clone(), v.clone().into());
        }
        Self {
            path: path.trim_start_matches("data.").replace('.', "/"),
            labels: all,
            redaction,
        }
    }

    pub fn labels(&self) -> &Map<String, Value> {
        &self.labels
    }

    /// The record of a lifecycle event at `at` (without the chain fields). Its `input` has the
    /// decision records' shape (`action`, `subject.id`, `transaction.digest`), so `audit export`
    /// filters both alike; a challenge's bound values are in its `challenge_issued` record.
    pub fn lifecycle(&self, event: &Lifecycle<'_>, at: SystemTime) -> Map<String, Value> {
        let (timestamp, unix) = time::stamp(at);
        let mut record = Map::new();
        record.insert("v".into(), FORMAT.into());
        record.insert("kind".into(), event.kind().into());
        let (name, input, result) = match event {
            Lifecycle::Completed {
                challenge,
                grant,
                approver,
            } => {
                let mut result = challenge_result(challenge);
                result.insert("outcome".into(), "completed".into());
                result.insert("grant_id".into(), grant.id.clone().into());
                let mut by = satisfied_by(grant);
                put(&mut by, "approver", approver.map(Value::from));
                result.insert("satisfied_by".into(), by.into());
                result.insert(
                    "grant".into(),
                    json!({"expires_at": grant.expires_at,
                           "single_use": grant.uses_left.is_some()}),
                );
                ("challenge_completed", challenge_input(challenge), result)
            }
            Lifecycle::Refused {
                challenge,
                method,
                reason,
            } => {
                let mut result = challenge_result(challenge);
                result.insert("outcome".into(), "refused".into());
                result.insert("reason".into(), (*reason).into());
                result.insert("method".into(), (*method).into());
                ("challenge_refused", challenge_input(challenge), result)
            }
            Lifecycle::Revoked {
                subject,
                transaction,
                revoked,
                by,
            } => {
                let mut input = Map::new();
                if let Some(s) = subject {
                    input.insert("subject".into(), json!({"id": s}));
                }
                if let Some(t) = transaction {
                    input.insert("transaction".into(), json!({"digest": t}));
                }
                let result = json!({"outcome": "revoked", "revoked": revoked,
                                    "revoked_by": by});
                ("grants_revoked", input, object(result))
            }
            Lifecycle::Expired { challenge } => {
                let mut result = challenge_result(challenge);
                result.insert("outcome".into(), "expired".into());
                ("challenge_expired", challenge_input(challenge), result)
            }
            Lifecycle::GrantExpired { grant } => {
                let input = object(json!({
                    "action": grant.action,
                    "subject": {"id": grant.subject},
                    "transaction": {"digest": grant.digest},
                }));
                let mut result = Map::new();
                result.insert("outcome".into(), "expired".into());
                result.insert("grant_id".into(), grant.id.clone().into());
                result.insert("satisfied_by".into(), satisfied_by(grant).into());
                result.insert(
                    "grant".into(),
                    json!({"issued_at": grant.issued_at, "expires_at": grant.expires_at,
                           "single_use": grant.uses_left.is_some()}),
                );
                ("grant_expired_unused", input, result)
            }
            Lifecycle::SignalReceived {
                signal,
                revoked,
                filed,
                ignored,
            } => {
                let input = signal_input(signal, None, None);
                let outcome = if *ignored { "ignored" } else { "applied" };
                let result = json!({"outcome": outcome, "revoked": revoked, "journals": filed});
                ("signal_received", input, object(result))
            }
            Lifecycle::SignalSent {
                signal,
                action,
                audience,
                outcome,
                attempts,
            } => {
                let input = signal_input(signal, Some(action), Some(audience));
                let result = json!({"outcome": outcome, "attempts": attempts});
                ("signal_sent", input, object(result))
            }
        };
        record.insert("event".into(), name.into());
        let id = crate::random::random_token(12).unwrap_or_else(|| "unavailable".into());
        record.insert("decision_id".into(), id.into());
        record.insert("timestamp".into(), timestamp.into());
        record.insert("unix".into(), unix.into());
        record.insert("labels".into(), self.labels.clone().into());
        record.insert("input".into(), input.into());
        record.insert("result".into(), result.into());
        let mut value = Value::Object(record);
        sanitize(&mut value);
        object(value)
    }

    /// The record of `ctx`'s decision, made at `at` (without the chain fields).
    pub fn decision(&self, ctx: &EvidenceContext<'_>, at: SystemTime) -> Map<String, Value> {
        let d = ctx.decision;
        let (timestamp, unix) = time::stamp(at);
        let mut masked = Vec::new();
        let mut record = Map::new();
        record.insert("v".into(), FORMAT.into());
        record.insert("kind".into(), "decision".into());
        record.insert(
            "event".into(),
            decision_event(&d.verdict, d.grant_id.is_some()).into(),
        );
        record.insert("decision_id".into(), d.id.clone().into());
        record.insert("timestamp".into(), timestamp.into());
        record.insert("unix".into(), unix.into());
        record.insert("path".into(), self.path.clone().into());
        record.insert("labels".into(), self.labels.clone().into());
        if let Some(revision) = &d.policy_revision {
            record.insert(
                "bundles".into(),
                json!({"stepguard": {"revision": revision}}),
            );
        }
        // The decision's own span when tracing knows it, else the caller's `traceparent`.
        let caller = ctx.origin.trace.as_ref();
        let trace_id = d.trace_id.clone().or(caller.map(|t| t.trace_id.clone()));
        let span_id = match &d.trace_id {
            Some(_) => d.span_id.clone(),
            None => caller.map(|t| t.span_id.clone()),
        };
        put(&mut record, "trace_id", trace_id.map(Value::from));
        put(&mut record, "span_id", span_id.map(Value::from));
        record.insert("input".into(), self.input(ctx, &mut masked).into());
        record.insert("result".into(), result(ctx).into());
        if !masked.is_empty() {
            record.insert("masked".into(), masked.into());
        }
        let mut value = Value::Object(record);
        sanitize(&mut value);
        object(value)
    }

    fn input(&self, ctx: &EvidenceContext<'_>, masked: &mut Vec<String>) -> Map<String, Value> {
        let d = ctx.decision;
        let mut input = Map::new();
        put(&mut input, "action", d.action.clone().map(Value::from));
        if let Some(class) = &d.action_class {
            input.insert(
                "action_class".into(),
                json!({"privileged": class.privileged, "reversible": class.reversible}),
            );
        }
        if let Some(subject) = subject(ctx) {
            input.insert("subject".into(), subject.into());
        }
        if let Some(justification) = &d.justification {
            // Free text, not a bound value: redacted with the action's bound values.
            let field = "context.break_glass_justification";
            let value = match self.redaction.covers(d.action.as_deref(), field) {
                true => {
                    masked.push("/input/context/break_glass_justification".into());
                    self.redaction.apply(field, justification)
                }
                false => justification.clone(),
            };
            input.insert(
                "context".into(),
                json!({"break_glass_justification": value}),
            );
        }
        let o = ctx.origin;
        if let Some(address) = &o.source_address {
            input.insert("source".into(), json!({"address": address}));
        }
        if !o.method.is_empty() {
            input.insert(
                "request".into(),
                json!({"method": o.method, "host": o.host}),
            );
        }
        if let Some(txn) = ctx.txn {
            let mut bound = Map::new();
            for (field, value) in &txn.bound {
                let value = match value {
                    Some(v) if self.redaction.covers(d.action.as_deref(), field) => {
                        masked.push(format!(
                            "/input/transaction/bound/{}",
                            field.replace('~', "~0").replace('/', "~1")
                        ));
                        Value::from(self.redaction.apply(field, v))
                    }
                    Some(v) => Value::from(v.clone()),
                    None => Value::Null,
                };
                bound.insert(field.clone(), value);
            }
            input.insert(
                "transaction".into(),
                json!({"digest": txn.digest, "key_id": txn.key_id, "bound": bound}),
            );
        }
        input
    }
}

/// Who asked: the verified subject when the request got that far, else what the decision knows.
fn subject(ctx: &EvidenceContext<'_>) -> Option<Map<String, Value>> {
    let mut out = Map::new();
    put(
        &mut out,
        "id",
        ctx.decision.subject.clone().map(Value::from),
    );
    if let Some(s) = ctx.subject {
        out.insert("kind".into(), json!(s.kind));
        if !s.act.is_empty() {
            out.insert("act".into(), json!(s.act));
        }
        put(&mut out, "acr", s.acr.clone().map(Value::from));
        if !s.amr.is_empty() {
            out.insert("amr".into(), json!(s.amr));
        }
        // What the token granted (not the token): for access reviews (`audit privileges`).
        if !s.roles.is_empty() {
            out.insert("roles".into(), json!(s.roles));
        }
        if !s.scopes.is_empty() {
            out.insert("scopes".into(), json!(s.scopes));
        }
        put(&mut out, "auth_time", s.auth_time.map(Value::from));
        put(&mut out, "client_id", s.client_id.clone().map(Value::from));
        put(&mut out, "workload", s.workload.clone().map(Value::from));
    }
    (!out.is_empty()).then_some(out)
}

/// A Security Event Token's record input: the subject (as decisions name it, when the SET
/// names a user) and what the SET said.
fn signal_input(
    signal: &Signal<'_>,
    action: Option<&str>,
    audience: Option<&str>,
) -> Map<String, Value> {
    let mut input = Map::new();
    put(&mut input, "action", action.map(Value::from));
    if let Some(user) = signal.user {
        input.insert("subject".into(), json!({"id": user}));
    }
    let mut set = object(json!({
        "iss": signal.issuer, "jti": signal.jti, "type": signal.event_type,
        "time": signal.time, "subject": signal.subject,
    }));
    put(&mut set, "aud", audience.map(Value::from));
    input.insert("signal".into(), set.into());
    input
}

/// What was decided, and why.
fn result(ctx: &EvidenceContext<'_>) -> Map<String, Value> {
    let d = ctx.decision;
    let mut out = Map::new();
    out.insert("outcome".into(), d.outcome().into());
    if let Some(retry_after) = d.fault.as_ref().and_then(Fault::retry_after) {
        out.insert("retry_after".into(), retry_after.into());
    }
    out.insert("status".into(), crate::response::status(d).into());
    out.insert("reason".into(), d.reason.clone().into());
    out.insert("reasons".into(), json!(d.reasons));
    if let Verdict::Challenge {
        challenge_id,
        requirement,
        ..
    } = &d.verdict
    {
        out.insert("challenge_id".into(), challenge_id.clone().into());
        out.insert("requirement".into(), requirement_value(requirement));
    }
    put(&mut out, "grant_id", d.grant_id.clone().map(Value::from));
    put(&mut out, "severity", d.severity.clone().map(Value::from));
    put(
        &mut out,
        "grant_policy_revision",
        d.grant_policy_revision.clone().map(Value::from),
    );
    if let Some(grant) = &d.satisfied_by {
        out.insert("satisfied_by".into(), satisfied_by(grant).into());
    }
    out
}

/// A decision record's `event`: the lifecycle event the decision is, if any.
fn decision_event(verdict: &Verdict, spent_grant: bool) -> &'static str {
    match verdict {
        Verdict::Challenge { .. } => "challenge_issued",
        Verdict::Allow if spent_grant => "grant_consumed",
        _ => "decided",
    }
}

fn requirement_value(r: &Requirement) -> Value {
    json!({"acr_values": r.acr_values, "max_age": r.max_age})
}

/// What satisfied a step-up: the authentication the grant records.
fn satisfied_by(g: &Grant) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("grant_id".into(), g.id.clone().into());
    put(
        &mut out,
        "challenge_id",
        g.challenge_id.clone().map(Value::from),
    );
    out.insert("acr".into(), g.acr.clone().into());
    out.insert("amr".into(), json!(g.amr));
    out.insert("auth_time".into(), g.auth_time.into());
    out.insert("method".into(), g.method.clone().into());
    out
}

fn challenge_input(c: &Challenge) -> Map<String, Value> {
    object(json!({
        "action": c.action,
        "subject": {"id": c.subject},
        "transaction": {"digest": c.digest},
    }))
}

fn challenge_result(c: &Challenge) -> Map<String, Value> {
    object(json!({
        "challenge_id": c.id,
        "requirement": requirement_value(&c.requirement),
        "issued_at": c.issued_at,
        "expires_at": c.expires_at,
    }))
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn put(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        map.insert(key.into(), value);
    }
}
