use serde_json::json;

use super::*;

fn ladder() -> Vec<String> {
    vec!["aal1".into(), "aal2".into(), "aal3".into()]
}

fn outcome(v: serde_json::Value) -> Result<Outcome, PolicyError> {
    Outcome::from_value(&v, &ladder())
}

#[test]
fn allow_deny_and_step_up_are_read() {
    let allow =
        outcome(json!({"result": "allow", "reason": "grant_satisfies", "used_grant": true}))
            .unwrap();
    assert!(matches!(
        allow,
        Outcome::Allow {
            used_grant: Some(true),
            ..
        }
    ));
    let deny = outcome(json!({"result": "deny", "reason": "nope", "status": 429})).unwrap();
    assert!(matches!(deny, Outcome::Deny { status: 429, .. }));
    let step = outcome(json!({"result": "step_up", "reason": "acr_too_low", "reasons": ["acr_too_low", "value_tier"],
        "requirement": {"acr_values": ["aal2", "aal3"], "max_age": 0}, "grant": {"single_use": false, "ttl": 300}})).unwrap();
    let Outcome::StepUp {
        requirement,
        terms,
        reasons,
        ..
    } = step
    else {
        panic!()
    };
    assert_eq!(requirement.acr_values, ["aal2", "aal3"]);
    assert_eq!(
        terms,
        GrantTerms {
            single_use: false,
            ttl: 300
        }
    );
    assert_eq!(reasons, ["acr_too_low", "value_tier"]);
}

#[test]
fn outputs_outside_the_contract_are_errors() {
    let bad = [
        json!("allow"),
        json!({"result": "allow"}),
        json!({"result": "maybe", "reason": "x"}),
        json!({"result": "deny", "reason": "x", "status": 200}),
        json!({"result": "step_up", "reason": "x"}),
        json!({"result": "step_up", "reason": "x", "requirement": {"acr_values": ["aal9"], "max_age": 0}}),
        json!({"result": "step_up", "reason": "x", "requirement": {"acr_values": [], "max_age": 0}}),
        json!({"result": "step_up", "reason": "x", "requirement": {"acr_values": ["aal2"], "max_age": -1}}),
        json!({"result": "step_up", "reason": "x", "requirement": {"acr_values": ["aal2"], "max_age": 0}, "grant": {"ttl": 0}}),
        json!({"result": "allow", "reason": "x", "used_grant": "false"}),
    ];
    for v in bad {
        assert!(
            matches!(outcome(v.clone()), Err(PolicyError::Contract(_))),
            "{v}"
        );
    }
}

#[test]
fn an_allow_says_whether_it_used_the_grant_or_leaves_it_undeclared() {
    let used = |v: serde_json::Value| match outcome(v).unwrap() {
        Outcome::Allow { used_grant, .. } => used_grant,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        used(json!({"result": "allow", "reason": "x", "used_grant": false})),
        Some(false)
    );
    assert_eq!(used(json!({"result": "allow", "reason": "x"})), None);
    assert_eq!(
        used(json!({"result": "allow", "reason": "x", "used_grant": null})),
        None
    );
}
