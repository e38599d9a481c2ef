//! No allocation growth over a long run: the shipped policy evaluated many times on the
//! production allocator, with the process's resident memory read from `/proc/self/statm` after
//! a warm-up and after each later round. (A counting `#[global_allocator]` would need `unsafe`,
//! which the crate forbids.)
//!
//! `STEPGUARD_ALLOC_EVALS` sets the evaluations per round (default 6 000: a warm-up round, then
//! four measured rounds; the last two must not add more than a small bound).
//! `cargo test --release --test policy_alloc` with `STEPGUARD_ALLOC_EVALS=100000` is the long
//! run recorded in docs/benchmarks.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The allocator `stepguard serve` runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
const ROUNDS: usize = 4;

#[test]
fn repeated_decisions_do_not_grow_memory() {
    let evals: usize = std::env::var("STEPGUARD_ALLOC_EVALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6_000);
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
    let settled = marks[marks.len() - 3];
    let last = marks[marks.len() - 1];
    let growth = last.saturating_sub(settled);
    println!(
        "{evals} evaluations per round; RSS after warm-up and each round (B): {marks:?}; \
         over the last two rounds: +{growth} B ({:.2} B per evaluation)",
        growth as f64 / (2 * evals) as f64
    );
    // A leak of 64 bytes per evaluation would add 0.75 MiB over 12 000 evaluations.
    let bound = (2 * evals as u64 * 64).max(512 << 10);
    assert!(
        growth <= bound,
        "resident memory grew by {growth} B over the last {} evaluations (bound {bound} B): {marks:?}",
        2 * evals
    );
}
