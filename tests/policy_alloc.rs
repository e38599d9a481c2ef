//! No allocation growth over a long run: the shipped policy evaluated many times, with the
//! process's resident memory read from `/proc/self/statm` after a warm-up and after each later
//! round. (A counting `#[global_allocator]` would need `unsafe`, which the crate forbids.)
//!
//! This test runs on the system allocator, not mimalloc: mimalloc commits memory in steps of a
//! MiB or more, which would hide a leak of a hundred bytes per decision for thousands of
//! decisions, while glibc's heap grows with what is live, so a leak shows in every round (a
//! leak does not depend on the allocator). Injecting a 100-byte leak per evaluation makes it
//! fail with about +630 KB per round.
//!
//! `STEPGUARD_ALLOC_EVALS` sets the evaluations per round (default 5 000: a warm-up round, then
//! five measured rounds). One of the last three rounds must add at most 32 B per evaluation
//! (a leak adds to every round; a one-off step of the allocator does not), and the whole run at
//! most 8 MiB. `STEPGUARD_ALLOC_EVALS=100000 cargo test --release --test policy_alloc` is the
//! long run recorded in docs/benchmarks.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use stepguard::policy::PolicyEngine;
use stepguard::policy::rego::RegoPolicy;

/// Resident set size in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn input(value: i64, grant: bool) -> Value {
    let now = 1_700_000_000;
    json!({
        "attributes": {"request": {"http": {"method": "POST", "path": "/v1/accounts/A1/transfers",
            "headers": {"content-type": "application/json"}}}},
        "parsed_path": ["v1", "accounts", "A1", "transfers"], "parsed_query": {},
        "parsed_body": {"amount": value, "currency": "EUR", "payee": "bob"},
        "stepguard": {
            "now": now, "acr_ladder": ["aal1", "aal2", "aal3"],
            "action": {"name": "payments.transfer", "risk": "high", "reversible": true,
                       "privileged": false, "value": value, "currency": "EUR"},
            "subject": {"kind": "human", "id": "alice", "issuer": "https://idp.example",
                        "acr": "aal2", "acr_rank": 1, "amr": ["pwd"], "auth_time": now - 100,
                        "session_age": 100, "roles": [], "scopes": [], "client_id": "web",
                        "sid": "s1", "act": [], "workload": null, "claims": {"sub": "alice"}},
            "transaction": {"digest": "k1:abc", "key_id": "k1",
                            "bound": {"path.account": "A1", "body.amount": value.to_string()}},
            "grant": grant.then(|| json!({"acr": "aal3", "acr_rank": 2, "amr": ["hwk"],
                "auth_time": now - 10, "method": "oidc", "challenge_id": "c",
                "issued_at": now - 10, "uses_left": 1})),
            "context": {"source_ip": "10.0.0.7", "peer_principal": null, "device_trust": null}
        }
    })
}

/// Measured rounds after the warm-up.
const ROUNDS: usize = 5;

#[test]
fn repeated_decisions_do_not_grow_memory() {
    let evals: usize = std::env::var("STEPGUARD_ALLOC_EVALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let policy = RegoPolicy::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
        "stepguard/authz/decision",
        Duration::from_secs(1),
    )
    .unwrap();
    // An allow, a step-up, and an allow on a grant: different rules, different values.
    let inputs = [input(500, false), input(25_000, false), input(25_000, true)];
    let results: Vec<Value> = inputs
        .iter()
        .map(|i| policy.evaluate(i.clone()).unwrap()["reason"].clone())
        .collect();
    assert_eq!(
        results,
        ["session_satisfies", "acr_too_low", "grant_satisfies"]
    );
    let round = |n: usize| {
        for k in 0..n {
            let decision = policy.evaluate(inputs[k % inputs.len()].clone()).unwrap();
            assert!(decision.is_object());
        }
    };
    // Warm-up (pools, caches, allocator pages), then rounds until the last two are compared:
    // memory may settle at a higher level once, but must not keep climbing.
    round(evals);
    let mut marks = vec![rss()];
    for _ in 0..ROUNDS {
        round(evals);
        marks.push(rss());
    }
    // A leak grows memory in every round; the allocator may take a one-off step in any round.
    // So: at least one of the last three rounds must add (almost) nothing, and the whole run
    // must stay within a few MiB.
    let steps: Vec<u64> = marks
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect();
    let quietest = steps[steps.len() - 3..].iter().copied().min().unwrap();
    let total = marks[marks.len() - 1].saturating_sub(marks[0]);
    println!(
        "{evals} evaluations per round; RSS after warm-up and each round (B): {marks:?}; \
         growth per round {steps:?}; quietest of the last three +{quietest} B \
         ({:.2} B per evaluation); total +{total} B",
        quietest as f64 / evals as f64
    );
    // A leak of 32 bytes per evaluation would add 160 KB to every 5 000-evaluation round.
    let per_round = evals as u64 * 32;
    assert!(
        quietest <= per_round,
        "memory grew in every one of the last three rounds (>{per_round} B each): {marks:?}"
    );
    assert!(total <= 8 << 20, "memory grew by {total} B: {marks:?}");
}
