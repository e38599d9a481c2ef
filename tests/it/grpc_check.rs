//! The real server on port-0 listeners, called over gRPC like Envoy calls it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::support::sidecar::Sidecar;
use crate::support::tokens::token;
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

fn check_request(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> CheckRequest {
    crate::support::check::request(method, path, headers, body)
}

async fn check(sidecar: &Sidecar, req: CheckRequest) -> CheckResponse {
    let mut client = AuthorizationClient::connect(sidecar.grpc_url())
        .await
        .unwrap();
    client
        .check(req)
        .await
        .expect("stepguard never answers with a gRPC error")
        .into_inner()
}

fn http_status(r: &CheckResponse) -> u16 {
    match r.http_response.as_ref() {
        Some(HttpResponse::OkResponse(_)) => 200,
        Some(HttpResponse::DeniedResponse(d)) => d.status.map_or(403, |s| s.code as u16),
        _ => 0,
    }
}

const TRANSFER: &str = r#"{"amount": 100, "currency": "EUR", "payee": "bob"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_and_sensitive_checks_over_grpc() {
    let sidecar = Sidecar::start(|t| t);
    let r = check(&sidecar, check_request("GET", "/public/hello", &[], "")).await;
    assert_eq!((r.status.as_ref().unwrap().code, http_status(&r)), (0, 200));

    let json = ("content-type", "application/json");
    let r = check(
        &sidecar,
        check_request("POST", "/v1/accounts/A1/transfers", &[json], TRANSFER),
    )
    .await;
    assert_eq!(http_status(&r), 401);

    let bearer = format!("Bearer {}", token("alice", "aal2", 5));
    let r = check(
        &sidecar,
        check_request(
            "POST",
            "/v1/accounts/A1/transfers",
            &[json, ("authorization", &bearer)],
            TRANSFER,
        ),
    )
    .await;
    assert_eq!(http_status(&r), 200, "{r:?}");

    let weak = format!("Bearer {}", token("alice", "aal1", 5));
    let r = check(
        &sidecar,
        check_request(
            "POST",
            "/v1/accounts/A1/transfers",
            &[json, ("authorization", &weak)],
            TRANSFER,
        ),
    )
    .await;
    assert_eq!(http_status(&r), 401);
    let Some(HttpResponse::DeniedResponse(d)) = r.http_response else {
        panic!()
    };
    assert!(
        d.body.contains("insufficient_user_authentication"),
        "{}",
        d.body
    );
}

/// Without trace export, the caller's W3C trace id still names the check: to the upstream with
/// the decision id, and to the client on a denial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_trace_id_is_passed_on_without_export() {
    let sidecar = Sidecar::start(|t| t);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    let headers = |r: &CheckResponse| -> HashMap<String, String> {
        let list = match r.http_response.as_ref().unwrap() {
            HttpResponse::OkResponse(ok) => &ok.headers,
            HttpResponse::DeniedResponse(d) => &d.headers,
            _ => panic!("{r:?}"),
        };
        list.iter()
            .filter_map(|h| h.header.as_ref())
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect()
    };
    let forged = [
        ("traceparent", traceparent.as_str()),
        ("x-stepguard-trace-id", "forged"),
    ];
    let r = check(&sidecar, check_request("GET", "/public/hello", &forged, "")).await;
    assert_eq!(http_status(&r), 200);
    assert_eq!(headers(&r)["x-stepguard-trace-id"], trace);
    let r = check(
        &sidecar,
        check_request("POST", "/v1/accounts/A1/transfers", &forged, TRANSFER),
    )
    .await;
    assert_eq!(http_status(&r), 401);
    assert_eq!(headers(&r)["x-stepguard-trace-id"], trace);
    // No (or a malformed) traceparent: no trace id.
    let r = check(
        &sidecar,
        check_request(
            "GET",
            "/public/hello",
            &[("traceparent", "00-zz-zz-01")],
            "",
        ),
    )
    .await;
    assert!(!headers(&r).contains_key("x-stepguard-trace-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let sidecar = Sidecar::start(|t| t);
    let channel = tonic::transport::Endpoint::from_shared(sidecar.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let status = health
        .check(HealthCheckRequest {
            service: "envoy.service.auth.v3.Authorization".into(),
        })
        .await
        .unwrap();
    assert_eq!(status.into_inner().status, 1, "SERVING");
    for path in ["/healthz", "/readyz"] {
        let (code, _) =
            support::envoy::http_get(sidecar.http.port(), path, Duration::from_secs(2)).unwrap();
        assert_eq!(code, 200, "{path}");
    }
}

/// Bad input of every kind: a clean, explicit answer in bounded time, never a gRPC error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_denied_cleanly() {
    let sidecar = Sidecar::start(|t| t);
    let good = token("alice", "aal2", 5);
    let huge = format!("Bearer {}", "a".repeat(1 << 20));
    let duplicate = format!("Bearer {good},Bearer {good}");
    let deep = "/a".repeat(10_000);
    let deep_sensitive = format!("/v1/accounts/A1/transfers{}", "/x".repeat(10_000));
    let json = ("content-type", "application/json");
    let cases: Vec<(&str, CheckRequest, u16)> = vec![
        (
            "1 MiB authorization header",
            check_request(
                "POST",
                "/v1/accounts/A1/transfers",
                &[json, ("authorization", &huge)],
                TRANSFER,
            ),
            401,
        ),
        (
            "1 MiB other header",
            check_request(
                "POST",
                "/v1/keys/k/export",
                &[("x-junk", &"j".repeat(1 << 20))],
                "",
            ),
            401,
        ),
        (
            "duplicate authorization",
            check_request(
                "POST",
                "/v1/accounts/A1/transfers",
                &[json, ("authorization", &duplicate)],
                TRANSFER,
            ),
            401,
        ),
        (
            "invalid UTF-8 in path",
            check_request("POST", "/v1/accounts/%ff%fe/transfers", &[json], TRANSFER),
            400,
        ),
        (
            "encoded slash",
            check_request("POST", "/v1/accounts/A1%2Ftransfers", &[json], TRANSFER),
            400,
        ),
        (
            "10k-segment path",
            check_request("GET", &deep, &[], ""),
            400,
        ),
        (
            "10k-segment sensitive path",
            check_request("POST", &deep_sensitive, &[], ""),
            400,
        ),
        ("no attributes", CheckRequest { attributes: None }, 400),
        (
            "bad JSON body",
            check_request(
                "POST",
                "/v1/accounts/A1/transfers",
                &[json, ("authorization", &format!("Bearer {good}"))],
                "{\"amount\": 1",
            ),
            400,
        ),
        (
            "alg none",
            check_request(
                "POST",
                "/v1/keys/k/export",
                &[(
                    "authorization",
                    "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.",
                )],
                "",
            ),
            401,
        ),
    ];
    for (name, req, expected) in cases {
        let started = Instant::now();
        let r = check(&sidecar, req).await;
        assert_eq!(http_status(&r), expected, "{name}: {r:?}");
        assert_ne!(
            r.status.as_ref().unwrap().code,
            0,
            "{name} must not be allowed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{name} took {:?}",
            started.elapsed()
        );
    }
}
