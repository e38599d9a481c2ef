use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::*;

fn shipped() -> PolicySource {
    PolicySource {
        path: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/policies")),
        data: None,
        entrypoint: "stepguard/authz/decision".into(),
        timeout: Duration::from_millis(500),
    }
}

fn input(kind: &str) -> Value {
    json!({"stepguard": {
        "now": 10_000, "acr_ladder": ["aal1", "aal2", "aal3"],
        "action": {"name": "keys.export", "reversible": false, "privileged": true, "value": null},
        "subject": {"kind": kind, "acr_rank": 1, "session_age": 5, "roles": [], "claims": {}, "act": []},
        "transaction": {"bound": {}}, "grant": null, "context": null
    }})
}

#[test]
fn rego_rules_are_listed_per_package() {
    let rules = Rules::load(&shipped()).unwrap();
    assert_eq!(rules.engine(), "rego");
    let packages = rules.evaluate(&input("human")).unwrap().unwrap();
    let authz = packages
        .iter()
        .find(|p| p.package == "data.stepguard.authz")
        .unwrap();
    assert_eq!(authz.rules["decision"]["result"], "step_up");
    assert_eq!(authz.rules["required_rank"], 2);
    assert_eq!(authz.rules["privileged"], true);
    // Undefined for this input: absent.
    assert!(!authz.rules.contains_key("grant_satisfies"));
    // Functions only: no package listed.
    assert!(packages.iter().all(|p| p.package != "data.stepguard.lib"));
}

#[test]
fn the_recorder_keeps_the_last_input_and_result() {
    let inner = crate::policy::load(&shipped()).unwrap();
    let recorder = Recorder::new(inner);
    assert!(recorder.last().is_none());
    let decision = recorder.evaluate(input("anonymous")).unwrap();
    let (seen, result) = recorder.last().unwrap();
    assert_eq!(seen, input("anonymous"));
    assert_eq!(result.unwrap(), decision);
    assert_eq!(decision["reason"], "authentication_required");
}

#[test]
fn wasm_sources_list_no_rules() {
    let source = PolicySource {
        path: PathBuf::from("policy.wasm"),
        ..shipped()
    };
    let rules = Rules::load(&source).unwrap();
    assert_eq!(rules.engine(), "wasm");
    assert!(rules.evaluate(&input("human")).unwrap().is_none());
}
