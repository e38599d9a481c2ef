//! `/metrics` on the HTTP port: strict Prometheus text exposition (checked by a small parser
//! here: HELP/TYPE/sample lines, label syntax, grouping, histogram bucket/sum/count
//! consistency), counters moving as checks flow, and every metric the Grafana dashboard
//! (deploy/grafana/stepguard.json) queries present once traffic produced it.
//!
//! One test function: the recorder is process-wide, so counts are exact only without other
//! tests in this binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use crate::support::envoy::{TempDir, manifest_dir};
use crate::support::ports::free_port;
use crate::support::sidecar::{Sidecar, quickstart};
use crate::support::tokens::token;
use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

mod exposition;
mod queried;

use exposition::{Family, family_of, parse};
use queried::{alert_rule_metrics, dashboard_metrics};

// ---- traffic ----

fn check(path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let method = if path.starts_with("/public") {
        "GET"
    } else {
        "POST"
    };
    let mut headers = headers.to_vec();
    headers.push(("content-type", "application/json"));
    crate::support::check::request(method, path, &headers, "{}")
}

async fn status(sidecar: &Sidecar, req: CheckRequest) -> u16 {
    let mut client = AuthorizationClient::connect(sidecar.grpc_url())
        .await
        .unwrap();
    let r = client.check(req).await.unwrap().into_inner();
    match r.http_response.unwrap() {
        HttpResponse::OkResponse(_) => 200,
        HttpResponse::DeniedResponse(d) => d.status.unwrap().code as u16,
        HttpResponse::ErrorResponse(_) => 0,
    }
}

async fn scrape(sidecar: &Sidecar) -> (String, BTreeMap<String, Family>) {
    let r = reqwest::get(format!("http://{}/metrics", sidecar.http))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        r.headers()
    );
    let text = r.text().await.unwrap();
    let families = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    (text, families)
}

/// The sum of the `name` samples whose labels include `labels` (0 when absent).
fn value(families: &BTreeMap<String, Family>, name: &str, labels: &[(&str, &str)]) -> f64 {
    families
        .get(&family_of(name, families))
        .map(|f| {
            f.samples
                .iter()
                .filter(|s| s.name == name)
                .filter(|s| {
                    labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
                })
                .map(|s| s.value)
                .sum()
        })
        .unwrap_or(0.0)
}

/// The quickstart with its spool in `spool`.
fn with_spool(spool: &Path) -> impl Fn(String) -> String {
    let spool = spool.display().to_string();
    move |t: String| t.replace("dir: stepguard-evidence", &format!("dir: {spool}"))
}

/// Families this crate emits, each produced by the traffic below.
const EXPECTED: &[&str] = &[
    "stepguard_decisions_total",
    "stepguard_stage_duration_seconds",
    "stepguard_challenges_issued_total",
    "stepguard_challenges_completed_total",
    "stepguard_grant_lookups_total",
    "stepguard_grants_consumed_total",
    "stepguard_store_errors_total",
    "stepguard_policy_errors_total",
    "stepguard_evidence_records_total",
    "stepguard_evidence_failures_total",
    "stepguard_evidence_spool_bytes",
    "stepguard_intake_refusals_total",
    "stepguard_build_info",
    "stepguard_jwks_refresh_total",
    "stepguard_store_connected",
    "stepguard_idp_discovery_total",
    "stepguard_idp_discovered",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_threads",
    "process_start_time_seconds",
];

/// Dashboard families only emitted while evidence ships to a Redis Stream: tests/it/evidence_stream.rs
/// checks them (this test's sidecars have no Redis).
const SHIPPING_ONLY: &[&str] = &[
    "stepguard_evidence_shipped_total",
    "stepguard_evidence_ship_errors_total",
    "stepguard_evidence_ship_lag_records",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_traffic_and_cover_the_dashboard() {
    // It reads the process-wide metrics recorder, which other tests of this binary also move.
    if !crate::support::isolated::in_own_process(
        "telemetry_metrics::metrics_follow_the_traffic_and_cover_the_dashboard",
    ) {
        return;
    }
    let dir = TempDir::new("metrics");
    let main = Sidecar::start_with(quickstart(with_spool(&dir.path().join("spool"))));

    // Before sensitive traffic.
    assert_eq!(status(&main, check("/public/hello", &[])).await, 200);
    let (_, before) = scrape(&main).await;
    let public = [
        ("outcome", "allow"),
        ("reason", "not_sensitive"),
        ("action", ""),
    ];
    let public_before = value(&before, "stepguard_decisions_total", &public);
    assert!(public_before >= 1.0);

    for _ in 0..3 {
        assert_eq!(status(&main, check("/public/hello", &[])).await, 200);
    }
    // No token; a weak session (challenged); its RFC 9470 retry (completed, grant spent).
    assert_eq!(status(&main, check("/v1/keys/K1/export", &[])).await, 401);
    let weak = format!("Bearer {}", token("alice", "aal1", 30));
    assert_eq!(
        status(
            &main,
            check("/v1/keys/K1/export", &[("authorization", &weak)])
        )
        .await,
        401
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let strong = format!("Bearer {}", token("alice", "aal3", 0));
    assert_eq!(
        status(
            &main,
            check("/v1/keys/K1/export", &[("authorization", &strong)])
        )
        .await,
        200
    );

    // A grant store that does not answer: a store error, a fault.
    let redis = format!("redis://127.0.0.1:{}", free_port());
    let no_store = Sidecar::start_with(quickstart(|t| {
        with_spool(&dir.path().join("spool-2"))(support::sidecar::with_redis(&redis, 200)(t))
    }));
    assert_eq!(
        status(
            &no_store,
            check("/v1/keys/K1/export", &[("authorization", &weak)])
        )
        .await,
        503
    );

    // A step-up IdP that cannot be discovered (nothing listens on its port).
    let idp = format!("http://127.0.0.1:{}", free_port());
    let no_idp = Sidecar::start_with(quickstart(|t| {
        let t = with_spool(&dir.path().join("spool-3"))(t);
        assert!(t.contains("  authorization_endpoint: http://127.0.0.1:9000/auth\n"));
        t.replace(
            "  authorization_endpoint: http://127.0.0.1:9000/auth\n",
            &format!("  oidc:\n    issuer: {idp}\n"),
        )
    }));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while value(
        &scrape(&no_idp).await.1,
        "stepguard_idp_discovery_total",
        &[("result", "failure")],
    ) < 1.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no discovery failure counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A policy breaking its output contract, and a spool that cannot be written.
    let policy = dir.path().join("policy");
    std::fs::create_dir_all(&policy).unwrap();
    std::fs::write(
        policy.join("broken.rego"),
        // Fits the contract on the reload trial's input (the first action, payments.transfer),
        // so it loads; breaks it on keys.export.
        "package stepguard.authz\n\n\
         default decision := {\"result\": \"deny\", \"reason\": \"frozen\", \"status\": 403}\n\n\
         decision := {\"outcome\": \"perhaps\"} if input.stepguard.action.name == \"keys.export\"\n",
    )
    .unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, "").unwrap();
    let (policy_dir, spool_dir) = (
        policy.display().to_string(),
        not_a_dir.join("spool").display().to_string(),
    );
    let broken = Sidecar::start_with(quickstart(move |t| {
        t.replace(
            "source: ../../policies",
            &format!("source: {policy_dir}\n  reload:\n    interval_ms: 100"),
        )
        .replace("dir: stepguard-evidence", &format!("dir: {spool_dir}"))
    }));
    assert_eq!(
        status(
            &broken,
            check("/v1/keys/K1/export", &[("authorization", &weak)])
        )
        .await,
        503
    );

    // A policy change the broken sidecar reloads (metrics are process-wide: `main` shows it).
    std::fs::write(
        policy.join("broken.rego"),
        "package stepguard.authz\n\n\
         default decision := {\"result\": \"deny\", \"reason\": \"still_frozen\", \"status\": 403}\n",
    )
    .unwrap();
    let reloaded = |m: &BTreeMap<String, Family>| {
        m.contains_key("stepguard_policy_reloads_total")
            && value(
                m,
                "stepguard_policy_reloads_total",
                &[("result", "success")],
            ) >= 1.0
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !reloaded(&scrape(&main).await.1) {
        assert!(
            std::time::Instant::now() < deadline,
            "no policy reload seen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The reloaded policy denies with a reason outside the documented set: counted as `other`.
    assert_eq!(
        status(
            &broken,
            check("/v1/keys/K1/export", &[("authorization", &weak)])
        )
        .await,
        403
    );

    let (text, after) = scrape(&main).await;
    let d = |labels: &[(&str, &str)]| value(&after, "stepguard_decisions_total", labels);
    assert!(
        d(&[("outcome", "deny"), ("reason", "other")]) >= 1.0,
        "{text}"
    );
    let reasons: BTreeSet<&str> = after["stepguard_decisions_total"]
        .samples
        .iter()
        .filter_map(|s| s.labels.get("reason").map(String::as_str))
        .collect();
    assert!(
        !reasons.contains("still_frozen") && !reasons.contains("frozen"),
        "an undocumented reason is a label value: {reasons:?}"
    );
    let v = |name: &str, labels: &[(&str, &str)]| value(&after, name, labels);
    assert_eq!(
        v(
            "stepguard_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(
        v("stepguard_jwks_refresh_total", &[("result", "success")]) >= 1.0,
        "{text}"
    );
    assert_eq!(
        v("stepguard_store_connected", &[("store", "redis")]),
        0.0,
        "the unreachable Redis: {text}"
    );
    assert_eq!(v("stepguard_idp_discovered", &[]), 0.0, "{text}");
    assert!(v("process_cpu_seconds_total", &[]) > 0.0);
    assert!(v("process_resident_memory_bytes", &[]) > 1e6);
    assert!(v("process_start_time_seconds", &[]) > 1.6e9);
    assert_eq!(d(&public) - public_before, 3.0, "{text}");
    assert!(
        d(&[
            ("outcome", "unauthenticated"),
            ("action", "keys.export"),
            ("reason", "invalid_token")
        ]) >= 1.0,
        "{text}"
    );
    assert!(
        d(&[("outcome", "challenge"), ("action", "keys.export")]) >= 1.0,
        "{text}"
    );
    assert!(
        d(&[("outcome", "allow"), ("action", "keys.export")]) >= 1.0,
        "{text}"
    );
    assert!(
        d(&[("outcome", "fault"), ("reason", "grant_store_unavailable")]) >= 1.0,
        "{text}"
    );
    assert!(
        d(&[
            ("outcome", "fault"),
            ("reason", "policy_contract_violation")
        ]) >= 1.0,
        "{text}"
    );
    assert!(
        v(
            "stepguard_challenges_issued_total",
            &[("action", "keys.export")]
        ) >= 1.0
    );
    assert!(
        v(
            "stepguard_challenges_completed_total",
            &[("method", "rfc9470")]
        ) >= 1.0
    );
    assert!(v("stepguard_grant_lookups_total", &[("result", "miss")]) >= 1.0);
    assert!(v("stepguard_grants_consumed_total", &[("result", "ok")]) >= 1.0);
    assert!(
        v("stepguard_store_errors_total", &[("op", "find_grant")]) >= 1.0,
        "{text}"
    );
    assert!(
        v(
            "stepguard_policy_errors_total",
            &[("reason", "policy_contract_violation")]
        ) >= 1.0
    );
    assert!(v("stepguard_evidence_records_total", &[("kind", "decision")]) >= 1.0);
    // The request without a token was refused before identification: counted, not recorded.
    assert!(
        v(
            "stepguard_intake_refusals_total",
            &[("reason", "invalid_token")]
        ) >= 1.0,
        "{text}"
    );
    assert!(v("stepguard_evidence_failures_total", &[]) >= 1.0, "{text}");
    assert!(v("stepguard_evidence_spool_bytes", &[]) > 0.0, "{text}");
    // Every stage was timed; the whole check at least as often as any stage.
    let count = |stage: &str| {
        value(
            &after,
            "stepguard_stage_duration_seconds_count",
            &[("stage", stage)],
        )
    };
    for stage in [
        "classify",
        "identify",
        "bind",
        "grant_lookup",
        "policy",
        "challenge",
        "consume",
        "evidence",
    ] {
        assert!(count(stage) >= 1.0, "stage {stage} not timed:\n{text}");
        assert!(count("total") >= count(stage));
    }
    let buckets: Vec<&str> = after["stepguard_stage_duration_seconds"]
        .samples
        .iter()
        .filter(|s| s.labels.get("stage").map(String::as_str) == Some("total"))
        .filter_map(|s| s.labels.get("le").map(String::as_str))
        .collect();
    assert_eq!(buckets.first(), Some(&"0.00005"), "{buckets:?}");
    assert!(
        buckets.contains(&"1") && buckets.contains(&"+Inf"),
        "{buckets:?}"
    );
    for family in EXPECTED {
        let f = after
            .get(*family)
            .unwrap_or_else(|| panic!("{family} missing:\n{text}"));
        assert!(f.help.is_some(), "{family} has no HELP");
    }

    // Everything the dashboard queries exists (or is named as not emitted by this build).
    let queried = dashboard_metrics();
    for name in &queried {
        let family = family_of(name, &after);
        if SHIPPING_ONLY.contains(&family.as_str()) {
            continue;
        }
        let f = after
            .get(&family)
            .unwrap_or_else(|| panic!("the dashboard queries {name}, which /metrics lacks"));
        if name != &family {
            assert_eq!(f.kind, "histogram", "{name}");
        }
    }
    for family in EXPECTED.iter().chain(SHIPPING_ONLY) {
        if family.starts_with("process_") && *family != "process_resident_memory_bytes" {
            continue;
        }
        let queried_family = queried
            .iter()
            .any(|n| family_of(n, &after) == *family || n == family);
        assert!(queried_family, "the dashboard never shows {family}");
    }
    // Envoy's side of the dashboard: its ext_authz counters and the scrape's `up`.
    let dashboard =
        std::fs::read_to_string(manifest_dir().join("deploy/grafana/stepguard.json")).unwrap();
    for needle in [
        "envoy_http_ext_authz_error",
        "envoy_http_ext_authz_denied",
        "envoy_http_ext_authz_ok",
        "envoy_http_ext_authz_failure_mode_allowed",
        "up{",
    ] {
        assert!(
            dashboard.contains(needle),
            "the dashboard never queries {needle}"
        );
    }

    // Every stepguard (and process) metric an alert rule uses exists.
    for name in alert_rule_metrics() {
        let family = family_of(&name, &after);
        if SHIPPING_ONLY.contains(&family.as_str()) {
            continue;
        }
        assert!(
            after.contains_key(&family),
            "the alert rules use {name}, which /metrics lacks"
        );
    }
}
