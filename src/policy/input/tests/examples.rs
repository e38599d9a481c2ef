//! Every input the documentation and the Rego tests show follows the contract: the worked
//! examples of docs/policy.md (fragments of `input.stepguard`, laid over a complete document)
//! and the documents the Rego tests' fixtures build (`policies/stepguard/authz_test.rego`).

use std::path::Path;

use serde_json::{Value, json};

use crate::policy::PolicyInput;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A complete document: example 1's request with the default context of the examples.
fn base() -> Value {
    json!({
        "attributes": {
            "source": {"address": {"socketAddress": {"address": "203.0.113.5", "portValue": 51234}}},
            "destination": {"address": {"socketAddress": {"address": "10.0.0.9", "portValue": 8080}}},
            "request": {"http": {"id": "req-1", "method": "POST", "headers": {},
                "path": "/v1/accounts/A1/transfers", "host": "api.bank.example",
                "scheme": "https", "protocol": "HTTP/1.1"}},
            "contextExtensions": {}
        },
        "parsed_path": ["v1", "accounts", "A1", "transfers"],
        "parsed_query": {},
        "parsed_body": {"amount": 500},
        "truncated_body": false,
        "version": {"encoding": "protojson", "ext_authz": "v3"},
        "stepguard": {
            "now": 1_700_000_000,
            "acr_ladder": ["aal1", "aal2", "aal3"],
            "action": {"name": "payments.transfer", "risk": "high", "reversible": true,
                       "privileged": false, "value": 500.0, "currency": "EUR", "mode": "enforce"},
            "subject": {"kind": "human", "id": "alice", "issuer": "https://idp.bank.example",
                        "acr": "aal2", "acr_rank": 1, "amr": ["pwd", "otp"],
                        "auth_time": 1_699_999_900, "session_age": 100, "roles": ["customer"],
                        "scopes": [], "client_id": "web", "sid": "s-1", "act": [],
                        "workload": null, "claims": {"sub": "alice"}},
            "transaction": {"digest": "k1:Zm9v", "key_id": "k1",
                            "bound": {"path.account": "A1", "body.amount": "500"}},
            "grant": null,
            "context": {"source_ip": "203.0.113.5", "peer_principal": null,
                        "network": "203.0.113.0/24", "new_network": false,
                        "velocity": {"window_secs": 600, "count": 1},
                        "device_trust": null, "break_glass_justification": null}
        }
    })
}

/// `patch` laid over `target`: objects merged member by member (a `"...": "..."` member, the
/// examples' "and the rest", dropped), anything else replaced.
fn overlay(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if key == "..." {
                    continue;
                }
                match target.get_mut(key) {
                    Some(slot) if slot.is_object() && value.is_object() => overlay(slot, value),
                    _ => {
                        let mut fresh = Value::Object(Default::default());
                        overlay(&mut fresh, value);
                        target.insert(
                            key.clone(),
                            if value.is_object() {
                                fresh
                            } else {
                                value.clone()
                            },
                        );
                    }
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// The ```json blocks of docs/policy.md's "Worked examples" that show input (members of
/// `input.stepguard`, not a decision).
fn documented_fragments() -> Vec<Value> {
    let doc = std::fs::read_to_string(root().join("docs/policy.md")).unwrap();
    let start = doc.find("## Worked examples").unwrap();
    let end = start + doc[start..].find("\n## Testing the policy").unwrap();
    let mut out = Vec::new();
    for block in doc[start..end].split("```json\n").skip(1) {
        let body = block.split("```").next().unwrap().trim();
        if body.starts_with('{') {
            continue; // a decision
        }
        let fragment: Value = serde_json::from_str(&format!("{{{body}}}"))
            .unwrap_or_else(|e| panic!("an input fragment that is not JSON ({e}):\n{body}"));
        out.push(fragment);
    }
    out
}

#[test]
fn every_worked_example_input_in_the_docs_follows_the_contract() {
    let fragments = documented_fragments();
    assert!(fragments.len() >= 14, "found {} fragments", fragments.len());
    for fragment in fragments {
        let mut input = base();
        overlay(&mut input["stepguard"], &fragment);
        if let Err(e) = PolicyInput::from_json(&input) {
            panic!("{e}\nfragment: {fragment}");
        }
    }
}

/// The Rego tests' fixtures, evaluated by regorus from the test package itself.
fn rego_fixture_inputs() -> Vec<Value> {
    let mut engine = regorus::Engine::new();
    let dir = root().join("policies/stepguard");
    // Every file of the shipped policy and its tests (the fixtures are in `decision_test.rego`,
    // package `stepguard.authz_test`).
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rego"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        engine.add_policy(path.display().to_string(), text).unwrap();
    }
    let data = regorus::Value::from_json_file(root().join("policies/data.json")).unwrap();
    engine.add_data(data).unwrap();
    let t = "data.stepguard.authz_test";
    let subjects = [
        format!("{t}.alice"),
        format!("{t}.session(\"aal3\", 5)"),
        format!(
            "{t}.human({{\"roles\": [\"customer\", \"admin\"], \"act\": [{{\"sub\": \"bob\", \"iss\": \"https://idp.bank.example\"}}]}})"
        ),
        format!("{t}.payments_workload"),
        format!("{t}.anonymous"),
    ];
    let actions = [
        format!("{t}.transfer(500)"),
        format!("{t}.transfer_in(150000, \"JPY\")"),
        format!("{t}.transfer_in(1, null)"),
        format!("{t}.approve"),
        format!("{t}.keys_export"),
        format!("{t}.iam_escalate"),
        format!("{t}.email_change"),
    ];
    let grants = [
        "null".to_string(),
        format!("{t}.grant(\"aal3\", 10, 1)"),
        format!("{t}.grant(\"aal2\", 30, null)"),
    ];
    let mut out = Vec::new();
    for subject in &subjects {
        for action in &actions {
            for grant in &grants {
                for context in [
                    "{}".to_string(),
                    "{\"new_network\": true, \"device_trust\": \"unmanaged\", \"break_glass_justification\": \"INC-1\", \"velocity\": {\"window_secs\": 60, \"count\": 40}}".to_string(),
                ] {
                    let query = format!(
                        "{t}.with_context({t}.request({action}, {subject}, {grant}), {context})"
                    );
                    let results = engine.eval_query(query.clone(), false).unwrap();
                    let value = &results.result[0].expressions[0].value;
                    out.push(serde_json::to_value(value).unwrap());
                }
            }
        }
    }
    out
}

#[test]
fn every_input_the_rego_test_fixtures_build_follows_the_contract() {
    let inputs = rego_fixture_inputs();
    assert_eq!(inputs.len(), 5 * 7 * 3 * 2);
    for input in inputs {
        if let Err(e) = PolicyInput::from_json(&input) {
            panic!("{e}\ninput: {input}");
        }
    }
}
