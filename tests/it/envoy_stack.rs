//! Real Envoy (the harness bootstrap) in front of the real stepguard (the
//! quickstart config) in front of an echo upstream: what Envoy sends stepguard
//! and what the app then receives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::envoy::{Envoy, RouteTag};
use crate::support::stack::{Stack, TRANSFER};
use crate::support::tokens::token;
use serde_json::Value;

async fn json(response: reqwest::Response) -> Value {
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_stepguard_app_round_trip() {
    let s = Stack::start();

    // Not sensitive: allowed, and forged x-stepguard-* never reach the app.
    let r = s
        .client
        .get(s.envoy.url("/public/hello"))
        .header("x-stepguard-action", "forged")
        .header("x-stepguard-decision-id", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = json(r).await;
    assert_ne!(seen["headers"]["x-stepguard-action"], "forged", "{seen}");
    assert_ne!(
        seen["headers"]["x-stepguard-decision-id"], "forged",
        "{seen}"
    );
    assert!(
        seen["headers"]["x-stepguard-decision-id"].is_string(),
        "{seen}"
    );
    assert_eq!(s.upstream.hits(), 1);

    // Sensitive, no credentials: refused before the app.
    let r = s
        .client
        .post(s.envoy.url("/v1/accounts/A1/transfers"))
        .header("content-type", "application/json")
        .body(TRANSFER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers().contains_key("www-authenticate"),
        "{:?}",
        r.headers()
    );
    assert_eq!(s.upstream.hits(), 1);

    // Sensitive, strong enough: the app gets the body intact and the decision headers.
    let r = s
        .client
        .post(s.envoy.url("/v1/accounts/A1/transfers"))
        .header("content-type", "application/json")
        .header(
            "authorization",
            format!("Bearer {}", token("alice", "aal2", 5)),
        )
        .header("x-stepguard-action", "forged")
        .body(TRANSFER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = json(r).await;
    assert_eq!(seen["body"], TRANSFER);
    assert_eq!(
        seen["headers"]["x-stepguard-action"], "payments.transfer",
        "{seen}"
    );
    assert!(
        seen["headers"]["x-stepguard-decision-id"].is_string(),
        "{seen}"
    );
    assert_eq!(s.upstream.hits(), 2);

    // Same transfer, path spelled to dodge classification: normalised by Envoy,
    // still classified (no token => 401), never reaches the app.
    for path in [
        "/v1/accounts/A1/./transfers",
        "/v1//accounts/A1/transfers",
        "/v1/x/../accounts/A1/transfers",
    ] {
        let r = s
            .client
            .post(s.envoy.url(path))
            .header("content-type", "application/json")
            .body(TRANSFER)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    // Escaped slashes: Envoy refuses them outright.
    let r = s
        .client
        .post(s.envoy.url("/v1/accounts/A1%2Ftransfers"))
        .body(TRANSFER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(s.upstream.hits(), 2);

    // The callback route bypasses ext_authz and reaches stepguard's HTTP port.
    let checks = |envoy: &Envoy| {
        ["ok", "denied", "error"]
            .iter()
            .map(|s| {
                envoy
                    .stat(&format!("http.ingress_http.ext_authz.{s}"))
                    .unwrap_or(0)
            })
            .sum::<u64>()
    };
    let before = checks(&s.envoy);
    // 1 public + 2 transfers + 3 respelled paths; the %2F request never got there.
    assert_eq!(before, 6, "Check calls so far");
    let r = s
        .client
        .get(s.envoy.url("/.stepguard/callback?state=unknown&code=x"))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers().contains_key("x-envoy-upstream-service-time"),
        "answered by stepguard's HTTP port, not by Envoy: {:?}",
        r.headers()
    );
    assert_eq!(
        checks(&s.envoy),
        before,
        "the callback went through ext_authz"
    );
    assert_eq!(s.upstream.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_tags_reach_stepguard() {
    // A PUT: the table's payments.approve matches POST only, the route tag any method.
    let approve = |s: &Stack| {
        s.client
            .put(s.envoy.url("/v1/payments/P1/approve"))
            .header("x-payment-id", "P1")
            .header(
                "authorization",
                format!("Bearer {}", token("alice", "aal2", 5)),
            )
            .send()
    };

    // Untagged, the table does not know the route: not sensitive, allowed.
    let s = Stack::start_with_tags(Some(&[]));
    let r = approve(&s).await.unwrap();
    assert_eq!(r.status(), 200);
    let seen = json(r).await;
    assert!(seen["headers"]["x-stepguard-action"].is_null(), "{seen}");
    drop(s);

    // Tagged payments.approve (the default bootstrap): sensitive, and this
    // action wants a fresh step-up, so the 5-second-old login is not enough.
    let s = Stack::start();
    let r = approve(&s).await.unwrap();
    assert!(
        [302, 401].contains(&r.status().as_u16()),
        "tagged approve without fresh step-up: {}",
        r.status()
    );
    assert_eq!(s.upstream.hits(), 0);
    drop(s);

    // A tag naming an action stepguard does not know is a configuration fault.
    let s = Stack::start_with_tags(Some(&[RouteTag::new(
        "/v1/payments/[^/]+/approve",
        "no.such.action",
    )]));
    let r = approve(&s).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(s.upstream.hits(), 0);
}
