use std::path::Path;

use serde_json::json;

use super::*;

const POLICIES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");

fn shipped() -> RegoPolicy {
    RegoPolicy::load(
        Path::new(POLICIES),
        "stepguard/authz/decision",
        Duration::from_millis(200),
    )
    .unwrap()
}

/// The shipped Rego unit tests, each reported like `opa test`.
#[test]
fn shipped_rego_unit_tests_pass() {
    let results = run_tests(Path::new(POLICIES)).unwrap();
    assert!(
        results.len() >= 20,
        "only {} Rego tests found",
        results.len()
    );
    for r in &results {
        println!("{}: {:?} ({:.1?})", r.name, r.outcome, r.elapsed);
    }
    let failed: Vec<_> = results
        .iter()
        .filter(|r| r.outcome != TestOutcome::Pass)
        .collect();
    assert!(failed.is_empty(), "failing Rego tests: {failed:#?}");
}

#[test]
fn the_runner_reports_failures() {
    let dir = std::env::temp_dir().join(format!("stepguard-rego-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("p.rego"), "package p\nx := 1\n").unwrap();
    std::fs::write(
        dir.join("p_test.rego"),
        "package p_test\ntest_ok if data.p.x == 1\ntest_bad if data.p.x == 2\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("..data")).unwrap();
    std::fs::write(
        dir.join("..data/p_test.rego"),
        "package p_test\ntest_hidden if true\n",
    )
    .unwrap();
    let results = run_tests(&dir).unwrap();
    let outcomes: Vec<_> = results
        .iter()
        .map(|r| (r.name.as_str(), r.outcome.clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("data.p_test.test_ok", TestOutcome::Pass),
            ("data.p_test.test_bad", TestOutcome::Fail)
        ]
    );
    std::fs::write(dir.join("p.rego"), "package p\nx := \n").unwrap();
    assert!(matches!(
        RegoPolicy::load(&dir, "p/x", Duration::from_millis(10)),
        Err(PolicyError::Load(_))
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn entrypoints_are_checked_at_load() {
    assert_eq!(
        entrypoint_rule("stepguard/authz/decision"),
        "data.stepguard.authz.decision"
    );
    assert_eq!(entrypoint_rule("data.a.b"), "data.a.b");
    assert!(
        RegoPolicy::load(
            Path::new(POLICIES),
            "stepguard/authz/nope",
            Duration::from_millis(10)
        )
        .is_err()
    );
}

#[test]
fn the_shipped_policy_decides_and_has_a_revision() {
    let policy = shipped();
    assert!(policy.revision().starts_with("sha256:"));
    let input = json!({
        "attributes": {"request": {"http": {"method": "POST", "path": "/v1/keys/k1/export", "headers": {}}}},
        "parsed_path": ["v1", "keys", "k1", "export"], "parsed_query": {}, "parsed_body": null,
        "stepguard": {
            "now": 1000, "acr_ladder": ["aal1", "aal2", "aal3"],
            "action": {"name": "keys.export", "risk": "critical", "reversible": false, "privileged": true, "value": null, "currency": null},
            "subject": {"kind": "human", "id": "alice", "issuer": "i", "acr": "aal3", "acr_rank": 2, "amr": ["hwk"],
                        "auth_time": 990, "session_age": 10, "roles": [], "scopes": [], "client_id": null, "sid": null,
                        "act": [], "workload": null, "claims": {}},
            "transaction": {"digest": "k:d", "key_id": "k", "bound": {}},
            "grant": null,
            "context": {"source_ip": null, "peer_principal": null, "device_trust": null}
        }
    });
    let out = policy.evaluate(input).unwrap();
    assert_eq!(
        out["result"], "step_up",
        "a fresh aal3 session never replaces a per-transaction step-up: {out}"
    );
    assert_eq!(out["requirement"]["max_age"], 0);
}

#[test]
fn test_rules_are_found_once_each() {
    let text =
        "package x_test\ntest_a if true\ntest_a if false\n  test_nested if true\ntest_b := true\n";
    assert_eq!(test_rules(text), ["test_a", "test_b"]);
    assert_eq!(package_of(text), Some("x_test"));
}

fn input_for(
    kind: &str,
    action: &str,
    privileged: bool,
    acr: &str,
    age: i64,
    value: Option<f64>,
    grant: Option<(&str, i64)>,
) -> serde_json::Value {
    let ladder = ["aal1", "aal2", "aal3"];
    let rank = |a: &str| ladder.iter().position(|l| *l == a).map_or(-1, |i| i as i64);
    json!({
        "attributes": {"request": {"http": {"method": "POST", "path": "/x", "headers": {}}}},
        "parsed_path": ["x"], "parsed_query": {}, "parsed_body": null,
        "stepguard": {
            "now": 10_000, "acr_ladder": ladder,
            "action": {"name": action, "risk": "high", "reversible": !privileged, "privileged": privileged, "value": value, "currency": "EUR"},
            "subject": {"kind": kind, "id": "alice", "issuer": "i", "acr": acr, "acr_rank": rank(acr), "amr": ["pwd"],
                        "auth_time": 10_000 - age, "session_age": age, "roles": [], "scopes": [], "client_id": null, "sid": null,
                        "act": [], "workload": null, "claims": {}},
            "transaction": {"digest": "k:d", "key_id": "k", "bound": {}},
            "grant": grant.map(|(acr, uses)| json!({"acr": acr, "acr_rank": rank(acr), "amr": ["hwk"], "auth_time": 9_990,
                "method": "oidc", "challenge_id": "c", "issued_at": 9_990, "uses_left": uses})),
            "context": {"source_ip": null, "peer_principal": null, "device_trust": null}
        }
    })
}

/// The compiled VM the decisions use gives what regorus's interpreter gives, over a grid of inputs.
#[test]
fn the_vm_agrees_with_the_interpreter() {
    let policy = shipped();
    let sources = read_sources(Path::new(POLICIES), false).unwrap();
    let engine = engine_with(&sources).unwrap();
    let mut compared = 0;
    for kind in ["human", "workload", "anonymous"] {
        for (action, privileged) in [
            ("payments.transfer", false),
            ("keys.export", true),
            ("profile.email_change", false),
            ("unlisted.action", false),
        ] {
            for acr in ["aal1", "aal2", "aal3", "unknown"] {
                for age in [5, 400, 5000] {
                    for value in [None, Some(50.0), Some(5_000.0), Some(50_000.0)] {
                        for grant in [None, Some(("aal2", 1)), Some(("aal3", 1))] {
                            let input = input_for(kind, action, privileged, acr, age, value, grant);
                            let mut interpreter = engine.clone();
                            interpreter.set_input(regorus::Value::from(input.clone()));
                            let expected = interpreter
                                .eval_rule("data.stepguard.authz.decision".into())
                                .unwrap();
                            let expected = serde_json::to_value(&expected).unwrap();
                            assert_eq!(
                                policy.evaluate(input.clone()).unwrap(),
                                expected,
                                "{input}"
                            );
                            compared += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(compared, 3 * 4 * 4 * 3 * 4 * 3);
}

#[test]
fn vm_evaluation_is_bounded() {
    let dir = std::env::temp_dir().join(format!("stepguard-rego-loop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("p.rego"), "package p\nx := count([1 | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000)])\n").unwrap();
    let policy = RegoPolicy::load(&dir, "p/x", Duration::from_millis(20)).unwrap();
    let started = Instant::now();
    assert!(matches!(
        policy.evaluate(json!({})),
        Err(PolicyError::Eval(_))
    ));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
