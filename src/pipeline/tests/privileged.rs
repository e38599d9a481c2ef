//! Standing privilege: a person's approval of a privileged action rests on a step-up for that
//! very transaction, whatever the policy and the token say — for every privileged action of the
//! quickstart, on the shipped policy and on a policy that would allow on the session alone.

use super::spending::custom_policy;
use super::*;
use crate::grant::Requirement;

/// The quickstart's privileged actions, each with a request for one of its transactions.
fn privileged_requests(token: &str, which: &str) -> Vec<(&'static str, RawRequest)> {
    let post = |path: String, body: serde_json::Value| RawRequest {
        method: "POST".into(),
        host: "api.example.com".into(),
        path,
        headers: HashMap::from([
            ("content-type".to_string(), "application/json".to_string()),
            ("authorization".to_string(), format!("Bearer {token}")),
        ]),
        body: body.to_string().into_bytes(),
        source_address: Some("10.0.0.7".into()),
        ..Default::default()
    };
    vec![
        (
            "keys.export",
            post(format!("/v1/keys/{which}/export"), json!({})),
        ),
        (
            "iam.escalate",
            post(
                format!("/v1/iam/roles/{which}/grants"),
                json!({"member": "alice"}),
            ),
        ),
    ]
}

/// Every privileged action of the quickstart is covered here (a new one fails this until it is).
#[test]
fn the_requests_cover_every_privileged_action() {
    let config = config(|t| t);
    let mut privileged: Vec<&str> = config
        .actions
        .iter()
        .filter(|a| a.privileged)
        .map(|a| a.name.as_str())
        .collect();
    privileged.sort();
    let mut covered: Vec<&str> = privileged_requests("t", "k")
        .iter()
        .map(|(n, _)| *n)
        .collect();
    covered.sort();
    assert_eq!(privileged, covered);
}

/// Allows every request on the session alone, and says so.
const ALLOW_ON_SESSION: &str = r#"package custom

import rego.v1

decision := {"result": "allow", "reason": "session_ok", "used_grant": false}
"#;

fn challenged(d: &Decision) -> &Requirement {
    match &d.verdict {
        Verdict::Challenge { requirement, .. } => requirement,
        other => panic!(
            "{} expected a step-up: {other:?} {d:?}",
            d.action.as_deref().unwrap_or("?")
        ),
    }
}

#[tokio::test]
async fn a_fresh_top_level_session_never_approves_a_privileged_action_on_the_shipped_policy() {
    let (p, _) = pipeline().await;
    let t = token("alice", "aal3", NOW, 0);
    for (name, raw) in privileged_requests(&t, "k1") {
        let d = p.decide(raw).await;
        assert_eq!(d.action.as_deref(), Some(name));
        assert_eq!(challenged(&d).max_age, 0, "{name}: a fresh sign-in");
    }
}

#[tokio::test]
async fn a_policy_that_allows_on_the_session_still_gets_a_step_up_for_each_privileged_action() {
    let (p, _) = custom_policy("privileged-session", ALLOW_ON_SESSION).await;
    let t = token("alice", "aal2", NOW, 0);
    // The rule is about privileged actions only: the policy's allow stands for a transfer.
    let d = p.decide(transfer(Some(&t), 100, "bob")).await;
    assert_eq!(
        (&d.verdict, d.reason.as_str()),
        (&Verdict::Allow, "session_ok")
    );
    for (name, raw) in privileged_requests(&t, "k1") {
        let d = p.decide(raw).await;
        let requirement = challenged(&d);
        assert_eq!(d.reason, "privileged_needs_its_own_step_up", "{name}");
        assert_eq!(requirement.max_age, 0, "{name}");
        assert_eq!(
            requirement.acr_values,
            vec!["aal2".to_string(), "aal3".to_string()],
            "{name}: at the session's level or above"
        );
    }
}

#[tokio::test]
async fn one_privileged_step_up_approves_its_own_transaction_once_and_nothing_else() {
    let (p, _) = custom_policy("privileged-once", ALLOW_ON_SESSION).await;
    let t = token("alice", "aal2", NOW, 0);
    let [(_, export_k1), (_, escalate_k1)]: [_; 2] =
        privileged_requests(&t, "k1").try_into().unwrap();
    // A step-up for exporting key k1 (the policy asked nothing; stepguard asked for it).
    grant_for(&p, export_k1.clone(), "aal2", None).await;
    let d = p.decide(export_k1.clone()).await;
    assert_eq!(d.verdict, Verdict::Allow, "{d:?}");
    assert!(
        d.grant_id.is_some(),
        "the approval rests on the grant, spent although the policy said it did not use it"
    );
    // The elevation does not carry over: another privileged action, or another key.
    challenged(&p.decide(escalate_k1).await);
    let (_, export_k2) = privileged_requests(&t, "k2").remove(0);
    challenged(&p.decide(export_k2).await);
}
