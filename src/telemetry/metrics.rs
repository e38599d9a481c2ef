//! Prometheus metrics: the `metrics` facade's macros where things happen, one process-wide
//! Prometheus recorder (installed on the first [`install`]), rendered as text at `/metrics`.
//! No HTTP listener or push gateway of its own: the HTTP port serves it.
//!
//! Families (names agreed across the code base; see docs/observability.md):
//! `stepguard_decisions_total{action,outcome,reason}`,
//! `stepguard_stage_duration_seconds{stage}`, `stepguard_challenges_issued_total{action}`,
//! `stepguard_challenges_completed_total{method}`, `stepguard_grant_lookups_total{result}`,
//! `stepguard_grants_consumed_total{result}`, `stepguard_store_errors_total{op}`,
//! `stepguard_policy_errors_total{reason}`, `stepguard_evidence_records_total{kind}`,
//! `stepguard_evidence_failures_total`, `stepguard_evidence_spool_bytes`,
//! `stepguard_intake_refusals_total{reason}`; policy reloads and
//! evidence shipping are counted where they happen.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::traces::Stage;
use crate::decision::{Decision, Verdict};

pub const DECISIONS: &str = "stepguard_decisions_total";
pub const STAGE_DURATION: &str = "stepguard_stage_duration_seconds";
pub const CHALLENGES_ISSUED: &str = "stepguard_challenges_issued_total";
pub const CHALLENGES_COMPLETED: &str = "stepguard_challenges_completed_total";
pub const GRANT_LOOKUPS: &str = "stepguard_grant_lookups_total";
pub const GRANTS_CONSUMED: &str = "stepguard_grants_consumed_total";
pub const STORE_ERRORS: &str = "stepguard_store_errors_total";
pub const POLICY_ERRORS: &str = "stepguard_policy_errors_total";
pub const POLICY_RELOADS: &str = "stepguard_policy_reloads_total";
pub const POLICY_INFO: &str = "stepguard_policy_info";
pub const EVIDENCE_RECORDS: &str = "stepguard_evidence_records_total";
pub const EVIDENCE_FAILURES: &str = "stepguard_evidence_failures_total";
pub const EVIDENCE_SPOOL_BYTES: &str = "stepguard_evidence_spool_bytes";
pub const EVIDENCE_SHIPPED: &str = "stepguard_evidence_shipped_total";
pub const EVIDENCE_SHIP_ERRORS: &str = "stepguard_evidence_ship_errors_total";
pub const EVIDENCE_SHIP_LAG: &str = "stepguard_evidence_ship_lag_records";
pub const INTAKE_REFUSALS: &str = "stepguard_intake_refusals_total";

/// Stage histogram buckets, in seconds: 50 µs to 1 s.
pub const STAGE_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// How often histogram samples are folded in between scrapes (bounds their memory).
const UPKEEP: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's `metrics` recorder, once; later calls
/// return the same handle. `None` when another recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = match PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(STAGE_DURATION.into()), STAGE_BUCKETS)
            {
                Ok(builder) => builder,
                Err(e) => {
                    tracing::error!(error = %e, "metrics buckets rejected");
                    return None;
                }
            };
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    let upkeep = handle.clone();
                    let spawned = std::thread::Builder::new()
                        .name("metrics-upkeep".into())
                        .spawn(move || {
                            loop {
                                std::thread::sleep(UPKEEP);
                                upkeep.run_upkeep();
                            }
                        });
                    if let Err(e) = spawned {
                        tracing::warn!(error = %e, "metrics upkeep thread not started");
                    }
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "another metrics recorder is installed: /metrics is empty");
                    None
                }
            }
        })
        .as_ref()
}

/// The Prometheus text exposition of every metric, if the recorder is installed.
pub fn render() -> Option<String> {
    HANDLE.get().and_then(Option::as_ref).map(|h| h.render())
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(DECISIONS, "Decisions by action, outcome and primary reason");
    describe_histogram!(
        STAGE_DURATION,
        Unit::Seconds,
        "Time spent in each stage of a check (total: the whole check)"
    );
    describe_counter!(CHALLENGES_ISSUED, "Step-up challenges issued, by action");
    describe_counter!(
        CHALLENGES_COMPLETED,
        "Step-up challenges completed, by method (oidc_callback, rfc9470, grant_api)"
    );
    describe_counter!(
        GRANT_LOOKUPS,
        "Grant lookups for a transaction: hit or miss"
    );
    describe_counter!(GRANTS_CONSUMED, "Grant consumptions: ok or already_used");
    describe_counter!(
        STORE_ERRORS,
        "Grant store operations that failed, by operation"
    );
    describe_counter!(POLICY_ERRORS, "Policy evaluations that failed, by reason");
    describe_counter!(
        EVIDENCE_RECORDS,
        "Evidence records made durable (or logged), by kind"
    );
    describe_counter!(
        EVIDENCE_FAILURES,
        "Decisions whose evidence was not recorded"
    );
    describe_counter!(
        INTAKE_REFUSALS,
        "Requests refused before identification (no evidence record), by reason"
    );
    describe_gauge!(
        EVIDENCE_SPOOL_BYTES,
        Unit::Bytes,
        "Bytes of the evidence spool's segments"
    );
}

/// The `outcome` label (and span attribute) of a decision.
pub fn outcome(decision: &Decision) -> &'static str {
    match decision.verdict {
        Verdict::RateLimited { .. } => "rate_limited",
        _ => decision.outcome(),
    }
}

/// Counts a decision.
pub fn decision(decision: &Decision) {
    metrics::counter!(
        DECISIONS,
        "action" => decision.action.clone().unwrap_or_default(),
        "outcome" => outcome(decision),
        "reason" => decision.reason.clone(),
    )
    .increment(1);
}

/// Records a stage's duration.
pub fn stage(stage: Stage, elapsed: Duration) {
    metrics::histogram!(STAGE_DURATION, "stage" => stage.label()).record(elapsed.as_secs_f64());
}

pub fn challenge_issued(action: &str) {
    metrics::counter!(CHALLENGES_ISSUED, "action" => action.to_string()).increment(1);
}

/// Counts a completion by the grant's `method` (`oidc`, `rfc9470`, `grant_api`).
pub fn challenge_completed(method: &str) {
    let method = match method {
        "oidc" => "oidc_callback",
        "rfc9470" => "rfc9470",
        "grant_api" => "grant_api",
        _ => "other",
    };
    metrics::counter!(CHALLENGES_COMPLETED, "method" => method).increment(1);
}

pub fn grant_lookup(hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    metrics::counter!(GRANT_LOOKUPS, "result" => result).increment(1);
}

pub fn grant_consumed(ok: bool) {
    let result = if ok { "ok" } else { "already_used" };
    metrics::counter!(GRANTS_CONSUMED, "result" => result).increment(1);
}

/// Counts a failed grant store operation (`find_grant`, `consume`, `issue_challenge`, ...).
pub fn store_error(op: &'static str) {
    metrics::counter!(STORE_ERRORS, "op" => op).increment(1);
}

/// Counts a failed policy evaluation by its reason code.
pub fn policy_error(reason: &'static str) {
    metrics::counter!(POLICY_ERRORS, "reason" => reason).increment(1);
}

pub fn evidence_recorded(kind: &'static str) {
    metrics::counter!(EVIDENCE_RECORDS, "kind" => kind).increment(1);
}

pub fn evidence_failed() {
    metrics::counter!(EVIDENCE_FAILURES).increment(1);
}

/// Counts a refusal before identification by its reason code (`malformed_request`,
/// `invalid_token`, `unknown_action_tag`).
pub fn intake_refusal(reason: &str) {
    metrics::counter!(INTAKE_REFUSALS, "reason" => reason.to_string()).increment(1);
}

pub fn spool_bytes(bytes: u64) {
    metrics::gauge!(EVIDENCE_SPOOL_BYTES).set(bytes as f64);
}
