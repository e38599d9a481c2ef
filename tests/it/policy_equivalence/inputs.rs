//! The inputs both policies are compared on: the benchmark's full input and its variants
//! (administrator, break-glass, workload, delegation, risk signals), each with fields replaced by
//! values of any type or removed, by meaningful values of the right type, and 3,000 inputs with
//! three typed fields changed at once.

use serde_json::{Value, json};

use super::NOW;

/// The benchmark's input (docs/policy.md, worked example 1).
pub(super) fn bench_input() -> Value {
    json!({
        "attributes": {"request": {"http": {"id": "r1", "method": "POST", "path": "/v1/accounts/A1/transfers"}}},
        "parsed_body": {"amount": 500, "currency": "EUR", "payee": "bob"},
        "stepguard": {
            "now": NOW,
            "acr_ladder": ["aal1", "aal2", "aal3"],
            "action": {"name": "payments.transfer", "risk": "high", "reversible": true,
                       "privileged": false, "value": 500, "currency": "EUR", "mode": "enforce"},
            "subject": {"kind": "human", "id": "alice", "issuer": "https://idp.example",
                        "acr": "aal2", "acr_rank": 1, "amr": ["pwd", "otp"],
                        "auth_time": NOW - 100, "session_age": 100, "roles": [], "scopes": [],
                        "client_id": "web", "sid": "s1", "act": [], "workload": null,
                        "claims": {"sub": "alice"}},
            "transaction": {"digest": "k1:abc", "key_id": "k1",
                            "bound": {"path.account": "A1", "body.amount": "500"}},
            "grant": null,
            "context": {"source_ip": "10.0.0.7", "peer_principal": null, "network": "10.0.0.0/24",
                        "new_network": false, "velocity": {"window_secs": 600, "count": 1},
                        "device_trust": null, "break_glass_justification": null}
        }
    })
}

/// The starting points: the bench input, an administrator, a break-glass key export, a workload
/// with a matching transaction token, a delegated request and one with risk signals.
pub(super) fn bases() -> Vec<(&'static str, Value)> {
    let plain = bench_input();
    let mut admin = plain.clone();
    admin["stepguard"]["subject"]["roles"] = json!(["customer", "admin"]);
    let mut glass = plain.clone();
    glass["stepguard"]["subject"]["roles"] = json!(["sre", "break-glass"]);
    glass["stepguard"]["action"] = json!({"name": "keys.export", "risk": "critical",
        "reversible": false, "privileged": true, "value": null, "currency": null, "mode": "enforce"});
    glass["stepguard"]["context"]["break_glass_justification"] =
        json!("INC-4711: restore access for the payments on-call");
    let mut workload = plain.clone();
    workload["stepguard"]["subject"] = json!({"kind": "workload",
        "id": "spiffe://bank.example/ns/batch/sa/payouts", "issuer": null, "acr": null,
        "acr_rank": -1, "amr": [], "auth_time": null, "session_age": null, "roles": [],
        "scopes": [], "client_id": null, "sid": null, "act": [],
        "workload": {"spiffe_id": "spiffe://bank.example/ns/batch/sa/payouts"},
        "claims": {"sub": "spiffe://bank.example/ns/batch/sa/payouts", "txn": "txn-7c1d",
                   "iat": NOW - 10, "exp": NOW + 50,
                   "tctx": {"action": "payments.transfer",
                            "fields": {"path.account": "A1", "body.amount": "500"}}}});
    let mut delegated = plain.clone();
    delegated["stepguard"]["subject"]["act"] =
        json!([{"sub": "bob", "iss": "https://idp.example"}]);
    let mut signals = plain.clone();
    signals["stepguard"]["context"]["new_network"] = json!(true);
    signals["stepguard"]["context"]["device_trust"] = json!("unmanaged");
    signals["stepguard"]["grant"] = json!({"acr": "aal3", "acr_rank": 2, "amr": ["hwk"],
        "auth_time": NOW - 20, "method": "oidc", "challenge_id": "ch-1",
        "issued_at": NOW - 15, "uses_left": 1});
    vec![
        ("plain", plain),
        ("admin", admin),
        ("break_glass", glass),
        ("workload", workload),
        ("delegated", delegated),
        ("signals", signals),
    ]
}

/// The 23 fields replaced (paths under `input.stepguard`).
pub(super) const FIELDS: [&[&str]; 23] = [
    &["now"],
    &["acr_ladder"],
    &["action"],
    &["action", "name"],
    &["action", "reversible"],
    &["action", "privileged"],
    &["action", "value"],
    &["action", "currency"],
    &["subject"],
    &["subject", "kind"],
    &["subject", "acr_rank"],
    &["subject", "session_age"],
    &["subject", "roles"],
    &["subject", "claims"],
    &["subject", "act"],
    &["subject", "issuer"],
    &["transaction", "bound"],
    &["grant"],
    &["context"],
    &["context", "new_network"],
    &["context", "velocity"],
    &["context", "device_trust"],
    &["context", "break_glass_justification"],
];

/// The 34 values each field takes in turn (then it is removed).
pub(super) fn values() -> Vec<Value> {
    vec![
        json!(null),
        json!(true),
        json!(false),
        json!(0),
        json!(1),
        json!(-1),
        json!(2),
        json!(100),
        json!(301),
        json!(999),
        json!(1000),
        json!(25000),
        json!(1.5),
        json!(""),
        json!("aal3"),
        json!("EUR"),
        json!("GBP"),
        json!("JPY"),
        json!("XXX"),
        json!("keys.export"),
        json!("payments.approve"),
        json!("profile.email_change"),
        json!("human"),
        json!("workload"),
        json!("anonymous"),
        json!([]),
        json!(["admin"]),
        json!(["aal1", "aal2"]),
        json!(["aal1", "aal2", "aal3", "aal4"]),
        json!({}),
        json!({"count": 20, "window_secs": 600}),
        json!([{"sub": "bob", "iss": "https://idp.example"}]),
        json!({"acr": "aal3", "acr_rank": 2, "auth_time": NOW - 10, "uses_left": 1}),
        json!({"path.account": "A1", "body.amount": "500", "extra": null}),
    ]
}

pub(super) fn replaced(base: &Value, path: &[&str], value: Option<&Value>) -> Value {
    let mut input = base.clone();
    let mut node = &mut input["stepguard"];
    for key in &path[..path.len() - 1] {
        node = &mut node[*key];
    }
    let last = path[path.len() - 1];
    match (node.as_object_mut(), value) {
        (Some(obj), Some(v)) => {
            obj.insert(last.to_string(), v.clone());
        }
        (Some(obj), None) => {
            obj.remove(last);
        }
        (None, _) => {}
    }
    input
}

/// Values of the right type for each field, meaningful to the policy: what stepguard can send.
pub(super) fn typed() -> Vec<(&'static [&'static str], Vec<Value>)> {
    let txn = |changes: Value| {
        let mut claims = json!({"sub": "spiffe://bank.example/ns/batch/sa/payouts",
            "txn": "txn-7c1d", "iat": NOW - 10, "exp": NOW + 50,
            "tctx": {"action": "payments.transfer",
                     "fields": {"path.account": "A1", "body.amount": "500"}}});
        for (k, v) in changes.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let grant = |acr_rank: i64, age: i64, uses: Value| {
        json!({"acr": "aal3", "acr_rank": acr_rank, "amr": ["hwk"], "auth_time": NOW - age,
               "method": "oidc", "challenge_id": "ch-1", "issued_at": NOW - age, "uses_left": uses})
    };
    vec![
        (
            &["now"],
            vec![json!(NOW - 1000), json!(NOW + 40), json!(NOW + 1000)],
        ),
        (
            &["action", "name"],
            [
                "payments.transfer",
                "payments.approve",
                "keys.export",
                "iam.escalate",
                "profile.email_change",
                "reports.export",
            ]
            .map(|n| json!(n))
            .to_vec(),
        ),
        (&["action", "reversible"], vec![json!(true), json!(false)]),
        (&["action", "privileged"], vec![json!(true), json!(false)]),
        (
            &["action", "value"],
            vec![
                json!(null),
                json!(0),
                json!(-1),
                json!(999),
                json!(999.5),
                json!(1000),
                json!(9999),
                json!(10000),
                json!(25000),
                json!(150000),
                json!(1500000),
            ],
        ),
        (
            &["action", "currency"],
            vec![
                json!(null),
                json!("EUR"),
                json!("USD"),
                json!("GBP"),
                json!("CHF"),
                json!("JPY"),
                json!("XXX"),
                json!("eur"),
                json!(""),
            ],
        ),
        (
            &["subject", "kind"],
            vec![json!("human"), json!("workload"), json!("anonymous")],
        ),
        (
            &["subject", "acr_rank"],
            vec![json!(-1), json!(0), json!(1), json!(2)],
        ),
        (
            &["subject", "session_age"],
            vec![
                json!(null),
                json!(-100),
                json!(-60),
                json!(0),
                json!(120),
                json!(121),
                json!(300),
                json!(301),
                json!(600),
                json!(601),
                json!(4000),
            ],
        ),
        (
            &["subject", "roles"],
            vec![
                json!([]),
                json!(["admin"]),
                json!(["platform-admin"]),
                json!(["break-glass"]),
                json!(["admin", "break-glass"]),
            ],
        ),
        (
            &["subject", "act"],
            vec![
                json!([]),
                json!([{"sub": "bob", "iss": "https://idp.example"}]),
                json!([{"sub": "mallory", "iss": null}, {"sub": "bob", "iss": "https://idp.example"}]),
                json!([{"sub": "bob", "iss": null}]),
                json!([{"sub": "", "iss": null}]),
            ],
        ),
        (
            &["subject", "claims"],
            vec![
                json!({"sub": "alice"}),
                json!({"sub": "ops", "shared_account": true}),
                txn(json!({})),
                txn(json!({"exp": NOW + 3600})),
                txn(json!({"exp": NOW - 100, "iat": NOW - 200})),
                txn(json!({"txn": ""})),
                txn(json!({"tctx": {"action": "keys.export", "fields": {}}})),
                txn(
                    json!({"tctx": {"action": "payments.transfer", "fields": {"path.account": "A1"}}}),
                ),
            ],
        ),
        (
            &["transaction", "bound"],
            vec![
                json!({"path.account": "A1", "body.amount": "500"}),
                json!({"path.account": "A1", "body.amount": "10000"}),
                json!({}),
                json!({"path.account": "A1", "body.amount": "500", "body.payee": null}),
            ],
        ),
        (
            &["grant"],
            vec![
                json!(null),
                grant(2, 10, json!(1)),
                grant(1, 10, json!(1)),
                grant(2, 10, json!(0)),
                grant(2, 10, json!(null)),
                grant(2, 400, json!(1)),
                grant(2, -100, json!(1)),
                grant(0, 10, json!(2)),
            ],
        ),
        (
            &["context", "new_network"],
            vec![json!(true), json!(false), json!(null)],
        ),
        (
            &["context", "velocity"],
            vec![
                json!(null),
                json!({"window_secs": 600, "count": 10}),
                json!({"window_secs": 600, "count": 11}),
            ],
        ),
        (
            &["context", "device_trust"],
            vec![
                json!(null),
                json!("trusted"),
                json!("managed"),
                json!("unmanaged"),
                json!(""),
            ],
        ),
        (
            &["context", "break_glass_justification"],
            vec![
                json!(null),
                json!("too short"),
                json!("   INC-1: twenty chars   "),
                json!("INC-4711: restore access for the on-call"),
            ],
        ),
    ]
}

pub(super) fn inputs() -> Vec<Value> {
    let values = values();
    let typed = typed();
    let mut out = Vec::new();
    for (_, base) in bases() {
        out.push(base.clone());
        for path in FIELDS {
            for value in &values {
                out.push(replaced(&base, path, Some(value)));
            }
            out.push(replaced(&base, path, None));
        }
        for (path, values) in &typed {
            for value in values {
                out.push(replaced(&base, path, Some(value)));
            }
        }
    }
    // Three typed fields changed at once, chosen by a fixed pseudo-random sequence.
    let bases = bases();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: usize| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize % n
    };
    for _ in 0..3_000 {
        let mut input = bases[next(bases.len())].1.clone();
        for _ in 0..3 {
            let (path, values) = &typed[next(typed.len())];
            input = replaced(&input, path, Some(&values[next(values.len())]));
        }
        out.push(input);
    }
    out
}
