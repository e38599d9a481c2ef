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
//! `stepguard_intake_refusals_total{reason}`, `stepguard_build_info{version}`, `stepguard_jwks_refresh_total{jwks,result}`,
//! `stepguard_idp_discovery_total{result}`, `stepguard_idp_discovered`,
//! `stepguard_store_connected{store}`, `stepguard_identity_cache_entries`, `stepguard_ssf_events_total{delivery,outcome,type}`, `stepguard_ssf_sent_total{outcome}`,
//! `stepguard_ssf_stream_enabled`, `stepguard_ssf_stream_undelivered_events`,
//! `stepguard_ssf_stream_verified`, `stepguard_ssf_verifications_total{outcome}`;
//! policy reloads and evidence shipping are counted where
//! they happen; the standard `process_*` families ([`super::process`]) are appended at render.
//!
//! Labels are bounded: the `reason` of a decision is reported as itself only when it is one of
//! [`REASONS`] (stepguard's own codes and the shipped policy's documented ones); any other
//! reason a custom policy returns is counted as `other` and logged once.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::stage::Stage;

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
pub const BUILD_INFO: &str = "stepguard_build_info";
pub const JWKS_REFRESHES: &str = "stepguard_jwks_refresh_total";
pub const IDP_DISCOVERIES: &str = "stepguard_idp_discovery_total";
pub const IDP_DISCOVERED: &str = "stepguard_idp_discovered";
pub const STORE_CONNECTED: &str = "stepguard_store_connected";
pub const SSF_EVENTS: &str = "stepguard_ssf_events_total";
pub const SSF_SENT: &str = "stepguard_ssf_sent_total";
pub const SSF_STREAM_ENABLED: &str = "stepguard_ssf_stream_enabled";
pub const SSF_STREAM_UNDELIVERED: &str = "stepguard_ssf_stream_undelivered_events";
pub const SSF_STREAM_VERIFIED: &str = "stepguard_ssf_stream_verified";
pub const SSF_VERIFICATIONS: &str = "stepguard_ssf_verifications_total";

/// The `reason` label of a reason code outside [`REASONS`].
pub const OTHER_REASON: &str = "other";

/// Reason codes reported as themselves in `stepguard_decisions_total{reason}`: stepguard's own
/// (docs/observability.md) and the shipped policy's (docs/policy.md, "Reason codes").
pub const REASONS: &[&str] = &[
    // stepguard
    "not_sensitive",
    "malformed_request",
    "invalid_token",
    "unknown_action_tag",
    "body_unavailable",
    "ambiguous_transaction_field",
    "missing_bound_field",
    "unexpected_content_type",
    "unreadable_bound_field",
    "inexact_bound_number",
    "binding_key_unavailable",
    "policy_unavailable",
    "policy_error",
    "policy_timeout",
    "policy_panicked",
    "policy_contract_violation",
    "policy_used_missing_grant",
    "grant_store_unavailable",
    "grant_already_used",
    "evidence_unavailable",
    "decision_budget_exceeded",
    "rng_unavailable",
    "idp_metadata_unavailable",
    "step_up_required",
    "step_up_not_completing",
    "privileged_needs_its_own_step_up",
    "session_revoked",
    "account_event",
    "challenge_rate_limited_subject",
    "challenge_rate_limited_source_ip",
    "too_many_open_challenges",
    "internal_error",
    "dry_run",
    // the shipped policy
    "invalid_input",
    "authentication_required",
    "workload_requires_transaction_token",
    "transaction_token_too_long_lived",
    "transaction_token_expired",
    "transaction_token_mismatch",
    "policy_misconfigured",
    "shared_account_without_actor",
    "delegation_actor_not_allowed",
    "break_glass_justification_required",
    "grant_satisfies",
    "session_satisfies",
    "transaction_token_satisfies",
    "acr_too_low",
    "session_too_old",
    "fresh_step_up_required",
];

/// Unknown reasons already logged (at most [`LOGGED_REASONS_MAX`], so the log stays bounded too).
static LOGGED_REASONS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
const LOGGED_REASONS_MAX: usize = 64;

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
                    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
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

/// The Prometheus text exposition of every metric (the `process_*` families last), if the
/// recorder is installed.
pub fn render() -> Option<String> {
    HANDLE.get().and_then(Option::as_ref).map(|h| {
        let mut text = h.render();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text + &super::process::exposition()
    })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(DECISIONS, "Decisions by action, outcome and primary reason");
    describe_counter!(
        SSF_EVENTS,
        "Security Event Tokens received, by delivery (push, poll), outcome (applied, ignored, or the refusal) and event type"
    );
    describe_counter!(
        SSF_SENT,
        "Security Event Tokens sent after privileged approvals, by outcome (delivered, retried, refused, failed, dropped)"
    );
    describe_gauge!(
        SSF_STREAM_ENABLED,
        "1 while the managed SSF stream's status is enabled, 0 when paused or disabled"
    );
    describe_gauge!(
        SSF_STREAM_UNDELIVERED,
        "Event types stepguard acts on that the SSF transmitter does not deliver on the stream"
    );
    describe_gauge!(
        SSF_STREAM_VERIFIED,
        "1 once a verification event with a state this deployment asked for arrived"
    );
    describe_counter!(
        SSF_VERIFICATIONS,
        "SSF verification events received, by outcome (matched, unknown_state, unsolicited)"
    );
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
    describe_gauge!(BUILD_INFO, "Always 1; the version label is stepguard's");
    describe_counter!(
        JWKS_REFRESHES,
        "Reads of a JWKS (URL or file), by key set and result (success, failure)"
    );
    describe_counter!(
        IDP_DISCOVERIES,
        "OpenID Provider discovery attempts, by result (success, failure)"
    );
    describe_gauge!(
        IDP_DISCOVERED,
        "1 once the step-up IdP's metadata is discovered, 0 until then"
    );
    describe_gauge!(
        "stepguard_identity_cache_entries",
        "Tokens in the verified-signature cache (valid ones, and expired ones not yet swept)"
    );
    describe_gauge!(
        STORE_CONNECTED,
        "1 while the Redis grant store answers, 0 after an operation it did not answer"
    );
}

/// The `reason` label for a reason code: itself when it is one of [`REASONS`], else
/// [`OTHER_REASON`] (logged the first time each such code is seen).
pub fn reason_label(reason: &str) -> &'static str {
    if let Some(known) = REASONS.iter().find(|r| **r == reason) {
        return known;
    }
    if let Ok(mut logged) = LOGGED_REASONS.lock()
        && logged.len() < LOGGED_REASONS_MAX
        && !logged.iter().any(|r| r == reason)
    {
        logged.push(reason.to_string());
        tracing::warn!(
            reason,
            "a reason code outside the documented set: counted as reason=\"other\" in \
             stepguard_decisions_total"
        );
    }
    OTHER_REASON
}

/// Counts a decision: its action (empty when none), `outcome` label and primary reason.
pub fn decision(action: &str, outcome: &'static str, reason: &str) {
    metrics::counter!(
        DECISIONS,
        "action" => action.to_string(),
        "outcome" => outcome,
        "reason" => reason_label(reason),
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

/// Counts one read of a key set (`jwks`: its URL or file).
pub fn jwks_refresh(jwks: &str, ok: bool) {
    let result = if ok { "success" } else { "failure" };
    metrics::counter!(JWKS_REFRESHES, "jwks" => jwks.to_string(), "result" => result).increment(1);
}

/// Counts a key set whose keys passed their maximum staleness (`result="expired"`, once per
/// expiry: a successful refresh ends it).
pub fn jwks_expired(jwks: &str) {
    metrics::counter!(JWKS_REFRESHES, "jwks" => jwks.to_string(), "result" => "expired")
        .increment(1);
}

/// Counts a discovery attempt of the step-up IdP, and whether its metadata is in hand.
pub fn idp_discovery(ok: bool) {
    let result = if ok { "success" } else { "failure" };
    metrics::counter!(IDP_DISCOVERIES, "result" => result).increment(1);
    metrics::gauge!(IDP_DISCOVERED).set(if ok { 1.0 } else { 0.0 });
}

/// Whether the Redis grant store (`store`: redis, redis_cluster, redis_sentinel) answered.
pub fn store_connected(store: &'static str, connected: bool) {
    metrics::gauge!(STORE_CONNECTED, "store" => store).set(if connected { 1.0 } else { 0.0 });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_outside_the_documented_set_are_other() {
        assert_eq!(
            reason_label("grant_store_unavailable"),
            "grant_store_unavailable"
        );
        assert_eq!(reason_label("acr_too_low"), "acr_too_low");
        assert_eq!(reason_label("user-42-is-suspicious"), OTHER_REASON);
        assert_eq!(reason_label(""), OTHER_REASON);
        // Each unknown code is logged once, and the remembered set stays bounded.
        for i in 0..200 {
            assert_eq!(reason_label(&format!("custom_{i}")), OTHER_REASON);
        }
        let logged = LOGGED_REASONS.lock().unwrap();
        assert!(logged.len() <= LOGGED_REASONS_MAX);
        assert_eq!(
            logged
                .iter()
                .filter(|r| *r == "user-42-is-suspicious")
                .count(),
            1
        );
    }

    /// The set follows the docs: every primary reason of the shipped policy's table
    /// (docs/policy.md, "Reason codes") is reported as itself, and every code reported as itself
    /// is documented there or in docs/observability.md.
    #[test]
    fn the_reason_set_is_the_documented_one() {
        let read = |file: &str| {
            std::fs::read_to_string(format!("{}/docs/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
        };
        let policy = read("policy.md");
        let table = policy
            .split_once("## Reason codes")
            .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(rest))
            .unwrap();
        let mut primary = 0;
        for row in table.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let code = cells[1].trim_matches('`');
            if ["deny", "allow", "step_up"].contains(&cells[2]) {
                primary += 1;
                assert!(
                    REASONS.contains(&code),
                    "{code} (docs/policy.md) would be `other`"
                );
            }
        }
        assert!(primary >= 15, "docs/policy.md reason table not found");
        let observability = read("observability.md");
        for code in REASONS {
            let quoted = format!("`{code}`");
            assert!(
                table.contains(&quoted) || observability.contains(&quoted),
                "{code} is reported as itself but documented nowhere"
            );
        }
    }

    #[test]
    fn documented_reasons_are_distinct_label_values() {
        let mut seen = std::collections::HashSet::new();
        for reason in REASONS {
            assert!(seen.insert(reason), "{reason} listed twice");
            assert!(
                reason
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()),
                "{reason}"
            );
        }
        assert!(!REASONS.contains(&OTHER_REASON));
    }
}
