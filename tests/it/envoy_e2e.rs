//! End to end through real Envoy: each answer as the client sees it, what the upstream sees,
//! and Envoy failing closed when the sidecar is gone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::stack::{Stack, TRANSFER, header};
use crate::support::tokens::token;
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_through_envoy() {
    let s = Stack::start();

    // Public: 200 from the upstream, forged x-stepguard-* headers never reach it.
    let r = s
        .client
        .get(s.envoy.url("/public/hello"))
        .header("x-stepguard-action", "forged")
        .header("x-stepguard-decision-id", "forged")
        .header("x-stepguard-subject", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let seen = s.upstream.last_request().unwrap();
    let headers = seen["headers"].as_object().unwrap();
    assert!(!headers.contains_key("x-stepguard-action"), "{headers:?}");
    assert!(!headers.contains_key("x-stepguard-subject"), "{headers:?}");
    assert_ne!(headers["x-stepguard-decision-id"], "forged");

    // No token on a sensitive route: RFC 6750 invalid_token, upstream untouched.
    let hits = s.upstream.hits();
    let r = s.transfer(None).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        header(&r, "www-authenticate").starts_with(r#"Bearer error="invalid_token""#),
        "{}",
        header(&r, "www-authenticate")
    );
    let r = s
        .transfer(Some("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Browser with a weak session: 302 to the IdP with the OIDC parameters.
    let weak = token("alice", "aal1", 30);
    let r = s
        .transfer(Some(&weak))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let location = header(&r, "location");
    assert!(
        location.starts_with("http://127.0.0.1:9000/auth?response_type=code&"),
        "{location}"
    );
    for part in [
        "client_id=stepguard-demo",
        "acr_values=aal2+aal3",
        "max_age=300",
        "code_challenge_method=S256",
        "state=",
        "nonce=",
    ] {
        assert!(location.contains(part), "{part} missing from {location}");
    }
    assert_eq!(header(&r, "cache-control"), "no-store");

    // API client with a weak session: RFC 9470.
    let r = s.transfer(Some(&weak)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&r, "www-authenticate"),
        r#"Bearer error="insufficient_user_authentication", error_description="A stronger authentication is required for this transaction", acr_values="aal2 aal3", max_age="300""#
    );
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["reason"], "acr_too_low");
    assert!(body["challenge_id"].as_str().is_some_and(|c| c.len() >= 20));
    assert_eq!(
        s.upstream.hits(),
        hits,
        "no denied request reached the upstream"
    );

    // A stepped-up token: 200, and the upstream learns the decision and the action.
    let strong = token("alice", "aal2", 5);
    let r = s
        .transfer(Some(&strong))
        .header("x-stepguard-action", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let seen = s.upstream.last_request().unwrap();
    assert_eq!(seen["headers"]["x-stepguard-action"], "payments.transfer");
    assert_eq!(
        seen["body"], TRANSFER,
        "the body reaches the upstream intact"
    );

    // Privileged action: even a fresh aal3 session is challenged for this transaction.
    let aal3 = token("alice", "aal3", 1);
    let r = s
        .client
        .post(s.envoy.url("/v1/keys/k1/export"))
        .bearer_auth(&aal3)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&r, "www-authenticate").contains(r#"max_age="0""#));

    // A route tagged in Envoy (context_extensions) is sensitive too.
    let r = s
        .client
        .post(s.envoy.url("/v1/payments/P1/approve"))
        .bearer_auth(&strong)
        .header("x-payment-id", "P1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&r, "www-authenticate").contains("insufficient_user_authentication"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_sidecar_makes_envoy_deny() {
    let mut s = Stack::start();
    let strong = token("alice", "aal2", 5);
    assert_eq!(
        s.transfer(Some(&strong)).send().await.unwrap().status(),
        StatusCode::OK
    );
    s.sidecar.stop();
    let hits = s.upstream.hits();
    for path in ["/public/hello", "/v1/accounts/A1/transfers"] {
        let r = s
            .client
            .post(s.envoy.url(path))
            .bearer_auth(&strong)
            .body(TRANSFER)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
    }
    assert_eq!(s.upstream.hits(), hits, "nothing reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_separators_are_refused_before_classification() {
    let s = Stack::start();
    let r = s
        .client
        .post(s.envoy.url("/v1/accounts/A1%2Ftransfers"))
        .body(TRANSFER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(s.upstream.hits(), 0);
}

/// Issue #11: through real Envoy (with `with_request_body`), a bound field has one value the
/// application reads too, or the request is refused before the upstream sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_fields_have_one_reading_through_envoy() {
    let s = Stack::start();
    let strong = token("alice", "aal2", 5);
    let send = |body: &'static str, content_type: &'static str| {
        s.client
            .post(s.envoy.url("/v1/accounts/A1/transfers"))
            .bearer_auth(&strong)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let refused = |r: reqwest::Response| async move {
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).unwrap()
    };
    let json = "application/json";
    let before = s.upstream.hits();

    let r = refused(
        send(r#"{"amount": 100, "currency": "EUR"}"#, json)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r["reason"], "missing_bound_field", "{r}");
    assert_eq!(r["field"], "body.payee", "{r}");
    let r = refused(send("", json).await.unwrap()).await;
    assert_eq!(r["reason"], "missing_bound_field", "{r}");

    let r = refused(
        send(
            r#"{"amount": 100, "currency": "EUR", "payee": "bob", "payee": "mallory"}"#,
            json,
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(r["reason"], "unreadable_bound_field", "{r}");

    let r = refused(
        send(
            r#"{"amount": 12345678901234567890, "currency": "EUR", "payee": "bob"}"#,
            json,
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(r["reason"], "inexact_bound_number", "{r}");
    assert_eq!(r["field"], "body.amount", "{r}");

    let r = refused(
        send(
            "amount=100&currency=EUR&payee=bob",
            "application/x-www-form-urlencoded",
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(r["reason"], "unexpected_content_type", "{r}");

    // A route tag decides the action: its template still binds path.payment; the header the
    // action binds is required.
    let r = s
        .client
        .put(s.envoy.url("/v1/payments/P1/approve"))
        .bearer_auth(&strong)
        .send()
        .await
        .unwrap();
    let r = refused(r).await;
    assert_eq!(r["reason"], "missing_bound_field", "{r}");
    assert_eq!(r["field"], "header.x-payment-id", "{r}");

    assert_eq!(
        s.upstream.hits(),
        before,
        "a refused request reached the upstream"
    );
    // The same transfer, read one way: allowed on the stepped-up session.
    let r = send(TRANSFER, json).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
