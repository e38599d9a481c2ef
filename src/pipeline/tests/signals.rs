//! Shared Signals through the pipeline: a SET received on one side (the receiver, over the same
//! grant store) changes what the next sensitive request of its subject meets.

use serde_json::{Value, json};

use super::*;
use crate::ssf::receiver::Receiver;
use crate::ssf::receiver::tests::{RISC, alice, receiver_for, set};
use crate::testkit::tokens::{claims, sign_claims};

const SECTION: &str = "shared_signals:\n  transmitter:\n    issuer: https://idp.stepguard.local\n    jwks: {file: dev-jwks.json}\n  audiences: [https://stepguard.example/ssf]\n  push: {}\n";

async fn pipeline_and_receiver() -> (Arc<Pipeline>, Receiver) {
    pipeline_and_receiver_with(|t| format!("{t}\n{SECTION}")).await
}

/// A pipeline on the quickstart edited by `edit` (which must add a receiving
/// `shared_signals` section), and a receiver over its grant store.
async fn pipeline_and_receiver_with(
    edit: impl Fn(String) -> String + Clone,
) -> (Arc<Pipeline>, Receiver) {
    let (p, clock) = pipeline_with(edit.clone()).await;
    let config = config(edit);
    let receiver = receiver_for(&config, p.grants.clone(), clock).await;
    (p, receiver)
}

/// alice's token of session `sid`, signed in `age` seconds before now and issued then.
fn session_token(sid: &str, age: i64) -> String {
    let mut c: Value = claims("alice", "aal2", NOW, age);
    c["sid"] = json!(sid);
    c["iat"] = json!(NOW - age);
    sign_claims(&c)
}

#[tokio::test]
async fn a_revoked_session_is_refused_and_a_new_one_is_not() {
    let (p, receiver) = pipeline_and_receiver().await;
    let old = session_token("s-1", 100);
    assert_eq!(
        p.decide(transfer(Some(&old), 100, "bob")).await.verdict,
        Verdict::Allow
    );

    let complex = json!({"user": alice(), "session": {"format": "opaque", "id": "s-1"}});
    let caep = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
    receiver
        .receive(&set(
            "p-1",
            caep,
            json!({"event_timestamp": NOW - 10}),
            complex,
        ))
        .await
        .unwrap();
    let d = p.decide(transfer(Some(&old), 100, "bob")).await;
    assert_eq!(
        (d.verdict.clone(), d.reason.as_str()),
        (Verdict::Refused, "session_revoked")
    );
    assert_eq!(status(&d), 403);
    let new = session_token("s-2", 5);
    assert_eq!(
        p.decide(transfer(Some(&new), 100, "bob")).await.verdict,
        Verdict::Allow
    );
}

#[tokio::test]
async fn an_account_event_holds_until_a_newer_sign_in() {
    let (p, receiver) = pipeline_and_receiver().await;
    receiver
        .receive(&set(
            "p-2",
            &format!("{RISC}account-disabled"),
            json!({"event_timestamp": NOW - 20}),
            alice(),
        ))
        .await
        .unwrap();
    let before = session_token("s-1", 30);
    let d = p.decide(transfer(Some(&before), 100, "bob")).await;
    assert_eq!(
        (d.verdict, d.reason.as_str()),
        (Verdict::Refused, "account_event")
    );
    // Public routes and other subjects are untouched.
    let bob = token("bob", "aal2", NOW, 30);
    assert_eq!(
        p.decide(transfer(Some(&bob), 100, "carol")).await.verdict,
        Verdict::Allow
    );
    let after = session_token("s-2", 10);
    assert_eq!(
        p.decide(transfer(Some(&after), 100, "bob")).await.verdict,
        Verdict::Allow
    );
}

#[tokio::test]
async fn a_challenge_opened_before_a_revocation_never_completes() {
    use crate::completion::{Assurance, AuthEvent, CompletionError};
    let (p, receiver) = pipeline_and_receiver().await;
    let before = session_token("s-1", 30);
    let d = p.decide(transfer(Some(&before), 25_000, "bob")).await;
    let Verdict::Challenge { challenge_id, .. } = &d.verdict else {
        panic!("{d:?}")
    };
    let challenge = p
        .grants
        .challenge(challenge_id, NOW)
        .await
        .unwrap()
        .unwrap();
    let caep = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
    receiver
        .receive(&set("p-3", caep, json!({"event_timestamp": NOW}), alice()))
        .await
        .unwrap();
    let subject = challenge.subject.clone();
    let assurance = Assurance {
        subject: subject.clone(),
        acr: "aal3".into(),
        amr: vec!["hwk".into()],
        auth_time: NOW,
        method: "oidc".into(),
        approver: None,
        event: AuthEvent::sign_in(subject, NOW, Some("s-9".into())),
    };
    let outcome = p.completer.complete(&challenge, &assurance, NOW).await;
    assert_eq!(outcome.err(), Some(CompletionError::Revoked));
}

#[tokio::test]
async fn a_privileged_approval_sends_a_session_revoked_set_verifiable_by_the_published_jwks() {
    let (url, got) = crate::ssf::deliver::tests::receiver(202).await;
    let send = format!(
        "shared_signals:\n  send:\n    issuer: https://stepguard.example\n    signing_key_file: dev-signing-key.DEV-ONLY.pem\n    \
         receivers: [{{url: '{url}', audience: https://idp.example/ssf}}]\n"
    );
    let (p, _) = pipeline_with(|t| {
        format!("{t}\n{send}").replace(
            "    privileged: true\n    bind: [path.key]\n",
            "    privileged: true\n    bind: [path.key]\n    after_approval: {notify: session-revoked}\n",
        )
    })
    .await;
    let export = |token: &str| RawRequest {
        method: "POST".into(),
        host: "api.example.com".into(),
        path: "/v1/keys/K1/export".into(),
        headers: HashMap::from([("authorization".to_string(), format!("Bearer {token}"))]),
        source_address: Some("10.0.0.7".into()),
        ..Default::default()
    };
    let token = session_token("s-7", 30);
    grant_for(&p, export(&token), "aal3", Some(1)).await;
    let d = p.decide(export(&token)).await;
    assert_eq!(d.verdict, Verdict::Allow, "{d:?}");
    let mut waited = 0;
    while got.lock().unwrap().is_empty() && waited < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        waited += 1;
    }
    let set = got
        .lock()
        .unwrap()
        .first()
        .cloned()
        .expect("a SET was sent");
    // Verified against the published key set, as a receiver would.
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(p.notifier.as_ref().unwrap().jwks()).unwrap();
    let header = jsonwebtoken::decode_header(&set).unwrap();
    assert_eq!(header.typ.as_deref(), Some("secevent+jwt"));
    let key =
        jsonwebtoken::DecodingKey::from_jwk(jwks.find(header.kid.as_deref().unwrap()).unwrap())
            .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["https://idp.example/ssf"]);
    validation.set_issuer(&["https://stepguard.example"]);
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Value>(&set, &key, &validation)
        .unwrap()
        .claims;
    let event =
        &claims["events"]["https://schemas.openid.net/secevent/caep/event-type/session-revoked"];
    assert_eq!(event["initiating_entity"], "policy");
    assert_eq!(claims["sub_id"]["session"]["id"], "s-7");
    assert_eq!(claims["sub_id"]["user"]["sub"], "alice");
    // A refused or challenged request sends nothing.
    let other = session_token("s-8", 30);
    let d = p.decide(export(&other)).await;
    assert!(matches!(d.verdict, Verdict::Challenge { .. }), "{d:?}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(got.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn the_policy_sees_the_subjects_events() {
    let dir = std::env::temp_dir().join(format!("stepguard-ssf-events-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("custom.rego"),
        r#"package custom

import rego.v1

events := object.get(input.stepguard.context, "events", [])

default decision := {"result": "allow", "reason": "no_events"}

decision := {"result": "deny", "status": 403, "reason": concat(",", [e.type | some e in events])} if count(events) > 0
"#,
    )
    .unwrap();
    let source = dir.display().to_string();
    let edit = move |t: String| {
        format!("{t}\n{SECTION}")
            .replace("source: ../../policies", &format!("source: {source}"))
            .replace(
                "entrypoint: stepguard/authz/decision",
                "entrypoint: custom/decision",
            )
            .replace("budget_ms: 250", "budget_ms: 5000")
            .replace("timeout_ms: 100", "timeout_ms: 2000")
    };
    let (p, receiver) = pipeline_and_receiver_with(edit).await;
    let token = session_token("s-1", 30);
    let d = p.decide(transfer(Some(&token), 100, "bob")).await;
    assert_eq!(d.reason, "no_events", "{d:?}");
    let change = "https://schemas.openid.net/secevent/caep/event-type/credential-change";
    receiver
        .receive(&set(
            "p-events",
            change,
            json!({"credential_type": "password", "change_type": "update"}),
            alice(),
        ))
        .await
        .unwrap();
    let d = p.decide(transfer(Some(&token), 100, "bob")).await;
    assert_eq!(d.reason, "credential-change", "{d:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn an_unreadable_event_refuses_instead_of_being_skipped() {
    let (p, _) = pipeline_and_receiver().await;
    let key = crate::ssf::subject::subject_key(crate::testkit::ISSUER, "alice");
    let name = crate::ssf::receiver::journal(&key);
    p.grants
        .append(&name, "{not an event", NOW + 600, NOW)
        .await
        .unwrap();
    let d = p
        .decide(transfer(Some(&session_token("s-1", 30)), 100, "bob"))
        .await;
    assert_eq!(d.reason, "grant_store_unavailable", "{d:?}");
    assert_eq!(status(&d), 503);
}
