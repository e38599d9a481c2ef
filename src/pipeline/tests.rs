use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;

use crate::app::App;
use crate::clock::ManualClock;
use crate::decision::Verdict;
use crate::grant::Grant;
use crate::policy::{PolicyEngine, PolicyError};
use crate::request::RawRequest;
use crate::response::status;
use crate::testkit::{config, token};

use super::*;

const NOW: i64 = 1_800_000_000;

async fn pipeline() -> (Arc<Pipeline>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(NOW));
    let app = App::build_with_clock(&config(|t| t), clock.clone())
        .await
        .unwrap();
    (app.pipeline().clone(), clock)
}

fn transfer(token: Option<&str>, amount: u64, payee: &str) -> RawRequest {
    let mut headers = HashMap::from([("content-type".to_string(), "application/json".to_string())]);
    if let Some(t) = token {
        headers.insert("authorization".into(), format!("Bearer {t}"));
    }
    RawRequest {
        method: "POST".into(),
        host: "api.example.com".into(),
        path: "/v1/accounts/A1/transfers".into(),
        headers,
        body: json!({"amount": amount, "currency": "EUR", "payee": payee})
            .to_string()
            .into_bytes(),
        source_address: Some("10.0.0.7".into()),
        ..Default::default()
    }
}

/// Mints the grant a completed step-up would leave for the request's transaction; its id.
pub(super) async fn grant_for(
    p: &Pipeline,
    raw: RawRequest,
    acr: &str,
    uses: Option<u32>,
) -> String {
    let decision = p.decide(raw).await;
    let Verdict::Challenge { challenge_id, .. } = &decision.verdict else {
        panic!("{decision:?}")
    };
    let c = p
        .grants
        .challenge(challenge_id, NOW)
        .await
        .unwrap()
        .unwrap();
    let id = format!("grant-{challenge_id}");
    p.grants
        .put_grant(Grant {
            acr: acr.into(),
            expires_at: NOW + 120,
            uses_left: uses,
            ..crate::grant::contract::minted(&c, NOW)
        })
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn public_routes_pass_and_lose_forged_headers() {
    let (p, _) = pipeline().await;
    let mut raw = RawRequest {
        method: "GET".into(),
        path: "/public/hello".into(),
        ..Default::default()
    };
    raw.headers
        .insert("x-stepguard-action".into(), "forged".into());
    let d = p.decide(raw).await;
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(d.reason, "not_sensitive");
    assert_eq!(d.remove_headers, ["x-stepguard-action"]);
}

#[tokio::test]
async fn sensitive_routes_need_a_valid_token() {
    let (p, _) = pipeline().await;
    let d = p.decide(transfer(None, 100, "bob")).await;
    assert!(
        matches!(d.verdict, Verdict::Unauthenticated { .. }),
        "{d:?}"
    );
    let d = p.decide(transfer(Some("not.a.jwt"), 100, "bob")).await;
    assert!(
        matches!(d.verdict, Verdict::Unauthenticated { .. }),
        "{d:?}"
    );
    assert_eq!(d.action.as_deref(), Some("payments.transfer"));
}

#[tokio::test]
async fn a_fresh_enough_session_approves_a_small_transfer() {
    let (p, _) = pipeline().await;
    let d = p
        .decide(transfer(Some(&token("alice", "aal2", NOW, 10)), 100, "bob"))
        .await;
    assert_eq!(d.verdict, Verdict::Allow, "{d:?}");
    assert_eq!(d.reason, "session_satisfies");
    assert!(d.transaction.as_deref().unwrap().starts_with("dev1:"));
    let d = p
        .decide(transfer(
            Some(&token("alice", "aal2", NOW, 3600)),
            100,
            "bob",
        ))
        .await;
    assert!(
        matches!(d.verdict, Verdict::Challenge { .. }),
        "old session: {d:?}"
    );
    assert_eq!(d.reason, "session_too_old");
}

#[tokio::test]
async fn browsers_get_a_redirect_and_api_clients_a_401() {
    let (p, _) = pipeline().await;
    let t = token("alice", "aal1", NOW, 10);
    let d = p.decide(transfer(Some(&t), 100, "bob")).await;
    let Verdict::Challenge {
        location: None,
        requirement,
        ..
    } = &d.verdict
    else {
        panic!("{d:?}")
    };
    assert_eq!(requirement.acr_values, ["aal2", "aal3"]);
    let mut raw = transfer(Some(&t), 100, "bob");
    raw.headers.insert("accept".into(), "text/html".into());
    let d = p.decide(raw).await;
    let Verdict::Challenge {
        location: Some(url),
        challenge_id,
        ..
    } = &d.verdict
    else {
        panic!("{d:?}")
    };
    assert!(url.contains(&format!("state={challenge_id}")), "{url}");
    assert!(
        p.grants
            .challenge(challenge_id, NOW)
            .await
            .unwrap()
            .is_some(),
        "challenge stored"
    );
}

#[tokio::test]
async fn a_grant_approves_its_transaction_once_and_no_other() {
    let (p, _) = pipeline().await;
    let t = token("alice", "aal2", NOW, 10);
    grant_for(&p, transfer(Some(&t), 25_000, "bob"), "aal3", Some(1)).await;
    for (amount, payee) in [(25_001, "bob"), (25_000, "mallory")] {
        let d = p.decide(transfer(Some(&t), amount, payee)).await;
        assert!(
            matches!(d.verdict, Verdict::Challenge { .. }),
            "{amount} {payee}: {d:?}"
        );
    }
    let other_user = token("mallory", "aal2", NOW, 10);
    let d = p.decide(transfer(Some(&other_user), 25_000, "bob")).await;
    assert!(
        matches!(d.verdict, Verdict::Challenge { .. }),
        "other subject: {d:?}"
    );
    let d = p.decide(transfer(Some(&t), 25_000, "bob")).await;
    assert_eq!(d.verdict, Verdict::Allow, "{d:?}");
    assert_eq!(d.reason, "grant_satisfies");
    assert!(d.grant_id.is_some());
    let d = p.decide(transfer(Some(&t), 25_000, "bob")).await;
    assert!(
        matches!(d.verdict, Verdict::Challenge { .. }),
        "single use: {d:?}"
    );
}

#[tokio::test]
async fn a_weaker_grant_does_not_satisfy() {
    let (p, _) = pipeline().await;
    let t = token("alice", "aal2", NOW, 10);
    grant_for(&p, transfer(Some(&t), 25_000, "bob"), "aal2", Some(1)).await;
    let d = p.decide(transfer(Some(&t), 25_000, "bob")).await;
    assert!(matches!(d.verdict, Verdict::Challenge { .. }), "{d:?}");
}

#[tokio::test]
async fn grants_expire_with_the_clock() {
    let (p, clock) = pipeline().await;
    let t = token("alice", "aal2", NOW, 10);
    grant_for(&p, transfer(Some(&t), 25_000, "bob"), "aal3", Some(1)).await;
    clock.advance(121);
    let t = token("alice", "aal2", NOW + 121, 10);
    let d = p.decide(transfer(Some(&t), 25_000, "bob")).await;
    assert!(matches!(d.verdict, Verdict::Challenge { .. }), "{d:?}");
}

#[tokio::test]
async fn workloads_are_never_prompted() {
    let (p, _) = pipeline().await;
    let mut raw = transfer(None, 100, "bob");
    raw.source_principal = Some("spiffe://stepguard.local/ns/pay/sa/batch".into());
    let d = p.decide(raw).await;
    assert_eq!(d.verdict, Verdict::Deny { status: 403 }, "{d:?}");
    assert_eq!(d.reason, "workload_requires_transaction_token");
}

#[tokio::test]
async fn malformed_requests_and_unknown_tags_are_refused() {
    let (p, _) = pipeline().await;
    let mut raw = transfer(None, 1, "bob");
    raw.path = "/v1/accounts/A1%2F..%2Fx/transfers".into();
    let d = p.decide(raw).await;
    assert_eq!((&d.verdict, status(&d)), (&Verdict::Refused, 400));
    let mut raw = transfer(None, 1, "bob");
    raw.context_extensions
        .insert("stepguard.action".into(), "nope".into());
    assert_eq!(p.decide(raw).await.verdict, Verdict::Fault);
    let mut raw = transfer(Some(&token("alice", "aal2", NOW, 10)), 1, "bob");
    raw.headers
        .insert("x-envoy-auth-partial-body".into(), "true".into());
    let d = p.decide(raw).await;
    assert_eq!(status(&d), 400);
    assert_eq!(
        (d.verdict, d.reason.as_str()),
        (Verdict::Refused, "body_unavailable")
    );
}

async fn pipeline_with(edit: impl Fn(String) -> String) -> (Arc<Pipeline>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(NOW));
    let app = App::build_with_clock(&config(edit), clock.clone())
        .await
        .unwrap();
    (app.pipeline().clone(), clock)
}

mod context;
mod evidence;
mod faults;
mod limits;
mod privileged;
mod signals;
mod spending;
