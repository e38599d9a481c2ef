//! One grant, one transaction, one sign-in (issue #11), through real Envoy in front of the real
//! sidecar: a token stepguard could read differently from the application (duplicate member
//! names) is refused as `invalid_token`; an RFC 9470 retry whose sign-in predates the challenge
//! never approves a `max_age: 0` action (the token leeway is 30 s, the completion skew 5 s); and
//! one OIDC sign-in (the IdP's session reused: the same `iss`, `sub`, `auth_time`) completes one
//! challenge through the callback, never a second.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};

use crate::support::envoy::manifest_dir;
use crate::support::stack::{Stack, header};
use crate::support::stepup::StepUpStack;
use crate::support::tokens::{claims, now, token};

const HEADER: &str = r#"{"alg":"ES256","kid":"dev-es256-1","typ":"JWT"}"#;

/// A dev-key token whose header and claims are the JSON text given, as written.
fn sign_text(header: &str, claims: &str) -> String {
    let pem =
        std::fs::read(manifest_dir().join("deploy/local/dev-signing-key.DEV-ONLY.pem")).unwrap();
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = EncodingKey::from_ec_pem(&pem).unwrap();
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::ES256).unwrap();
    format!("{message}.{signature}")
}

/// alice's claims (`acr`, signed in `age` s ago) as JSON text, with `extra` members appended.
fn claims_text(acr: &str, age: i64, extra: &str) -> String {
    let text = claims("alice", acr, age).to_string();
    format!("{},{extra}}}", &text[..text.len() - 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_duplicate_payload_members_is_answered_401_invalid_token() {
    let stack = Stack::start();
    let hits = stack.upstream.hits();
    let once = sign_text(HEADER, &claims("alice", "aal2", 10).to_string());
    let r = stack.transfer(Some(&once)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    for extra in [
        r#""sub":"alice""#,
        r#""sub":"admin""#,
        r#""acr":"aal1""#,
        r#""act":{"sub":"agent-7","sub":"admin"}"#,
    ] {
        let twice = sign_text(HEADER, &claims_text("aal2", 10, extra));
        let r = stack.transfer(Some(&twice)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{extra}");
        let www = header(&r, "www-authenticate");
        assert!(www.contains(r#"error="invalid_token""#), "{extra}: {www}");
    }
    assert_eq!(
        stack.upstream.hits(),
        hits + 1,
        "only the plain token passed"
    );
}

/// An API client's `POST /v1/keys/{key}/export` (no HTML: a step-up is an RFC 9470 401).
async fn api_export(stack: &Stack, key: &str, bearer: &str) -> reqwest::Response {
    stack
        .client
        .post(stack.envoy.url(&format!("/v1/keys/{key}/export")))
        .header("content-type", "application/json")
        .bearer_auth(bearer)
        .body("{}")
        .send()
        .await
        .unwrap()
}

/// alice at `acr`, signed in at `auth_time`.
fn signed_in_at(acr: &str, auth_time: i64) -> String {
    crate::support::tokens::signed_in_at("alice", acr, auth_time)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rfc9470_retry_signed_in_before_the_challenge_does_not_approve_max_age_0() {
    let stack = Stack::start();
    let hits = stack.upstream.hits();
    let r = api_export(&stack, "K1", &token("alice", "aal1", 30)).await;
    assert_eq!(r.status(), 401);
    let www = header(&r, "www-authenticate");
    assert!(
        www.contains(r#"error="insufficient_user_authentication""#)
            && www.contains(r#"max_age="0""#),
        "{www}"
    );
    // Inside identity.leeway_secs (30), outside the completion skew (5): not this challenge's.
    let r = api_export(&stack, "K1", &signed_in_at("aal3", now() - 20)).await;
    assert_eq!(r.status(), 401, "{}", r.text().await.unwrap_or_default());
    assert_eq!(stack.upstream.hits(), hits);
    // A sign-in 3 s "before" the (new) challenge is clock skew: approved, once.
    let r = api_export(&stack, "K1", &signed_in_at("aal3", now() - 3)).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    assert_eq!(stack.upstream.hits(), hits + 1);
}

/// A browser's transfer of 100 EUR to `payee` (`aal2` within 300 s: the IdP session may be
/// reused, so one sign-in could answer several challenges).
async fn browser_transfer(
    stack: &StepUpStack,
    browser: &reqwest::Client,
    payee: &str,
) -> reqwest::Response {
    browser
        .post(stack.envoy.url("/v1/accounts/A1/transfers"))
        .header("accept", "text/html")
        .header("content-type", "application/json")
        .bearer_auth(token("alice", "aal1", 30))
        .body(format!(
            r#"{{"amount": 100, "currency": "EUR", "payee": "{payee}"}}"#
        ))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_oidc_sign_in_completes_one_challenge_through_the_callback() {
    let stack = StepUpStack::start(false).await;
    let browser = stack.browser();
    let mut locations = Vec::new();
    for payee in ["bob", "carol"] {
        let r = browser_transfer(&stack, &browser, payee).await;
        assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
        locations.push(header(&r, "location"));
    }
    stack
        .idp
        .set_next_login("alice", "aal2", &["pwd", "otp"], 0)
        .await;
    let first = stack.sign_in(&browser, &locations[0]).await;
    let r = browser.get(&first).send().await.unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());

    // The IdP reuses its session for the second transaction's authorization request: a new
    // code and ID token, but the same sign-in (iss, sub, auth_time).
    let second = stack.sign_in(&browser, &locations[1]).await;
    let r = browser.get(&second).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(body.contains("authentication_already_used"), "{body}");
    let completed: Vec<_> = stack
        .evidence()
        .into_iter()
        .filter(|r| r["kind"] == "completed")
        .collect();
    assert_eq!(completed.len(), 1, "{completed:#?}");

    let hits = stack.upstream.hits();
    let r = browser_transfer(&stack, &browser, "bob").await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let r = browser_transfer(&stack, &browser, "carol").await;
    assert_eq!(r.status(), 302, "no grant for the second transaction");
    assert_eq!(stack.upstream.hits(), hits + 1);
}
