//! A spool that cannot be written: sensitive approvals become 503 denials, every other answer
//! is unchanged (public routes pass, challenges are still issued), and approvals resume once the
//! spool can be written again. Likewise for a spool at its size cap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::support::envoy::TempDir;
use crate::support::sidecar::Sidecar;
use crate::support::tokens::token;
use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

/// The quickstart with its evidence section replaced by a spool in `dir` (`extra` spool lines).
fn with_spool(dir: &Path, extra: &'static str) -> impl Fn(String) -> String {
    let dir = dir.display().to_string();
    move |text: String| {
        let start = text
            .find("\nevidence:\n")
            .expect("the quickstart has an evidence section");
        format!(
            "{}evidence:\n  spool:\n    dir: {dir}\n{extra}  signing_key_file: evidence-signing-key.DEV-ONLY.pem\n",
            &text[..start + 1]
        )
    }
}

fn request(path: &str, headers: &[(&str, &str)], body: &str) -> CheckRequest {
    let method = if body.is_empty() { "GET" } else { "POST" };
    crate::support::check::request(method, path, headers, body)
}

/// The HTTP status Envoy would answer, and the body of a denial.
async fn check(sidecar: &Sidecar, req: CheckRequest) -> (u16, String) {
    let mut client = AuthorizationClient::connect(sidecar.grpc_url())
        .await
        .unwrap();
    let r = client.check(req).await.unwrap().into_inner();
    match r.http_response {
        Some(HttpResponse::OkResponse(_)) => (200, String::new()),
        Some(HttpResponse::DeniedResponse(d)) => (d.status.map_or(403, |s| s.code as u16), d.body),
        _ => (0, String::new()),
    }
}

const TRANSFER: &str = r#"{"amount": 100, "currency": "EUR", "payee": "bob"}"#;

/// A small transfer by a new subject (the shipped policy steps up a subject whose
/// sensitive-request velocity is high).
async fn transfer(sidecar: &Sidecar, acr: &str) -> (u16, String) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let sub = format!("user-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let bearer = format!("Bearer {}", token(&sub, acr, 5));
    let headers = [
        ("content-type", "application/json"),
        ("authorization", bearer.as_str()),
    ];
    check(
        sidecar,
        request("/v1/accounts/A1/transfers", &headers, TRANSFER),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_spool_denies_approvals_only() {
    let tmp = TempDir::new("evidence-unwritable");
    // A file where the spool directory should be: nothing can be created under it.
    let spool = tmp.path().join("spool");
    std::fs::write(&spool, b"not a directory").unwrap();
    let sidecar = Sidecar::start(with_spool(&spool, ""));

    assert_eq!(
        check(&sidecar, request("/public/hello", &[], "")).await.0,
        200
    );
    let (status, body) = transfer(&sidecar, "aal2").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("evidence_unavailable"), "{body}");
    // Not an approval: answered as usual (its record is lost, and logged as such).
    assert_eq!(transfer(&sidecar, "aal1").await.0, 401);

    // Once the spool can be written, approvals resume (it is retried at most once a second).
    std::fs::remove_file(&spool).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = transfer(&sidecar, "aal2").await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "approvals did not resume: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spool_stats = sidecar_stats(&spool);
    assert!(spool_stats >= 2, "the recovered spool holds the approval");
}

/// Records in the spool directory.
fn sidecar_stats(spool: &Path) -> usize {
    stepguard::evidence::audit::expand(&[spool.to_path_buf()])
        .unwrap()
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap().lines().count())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_denies_approvals_only() {
    let tmp = TempDir::new("evidence-full");
    let sidecar = Sidecar::start(with_spool(
        tmp.path(),
        "    segment_bytes: 4096\n    max_bytes: 8192\n",
    ));
    let mut refused = None;
    for i in 0..50 {
        let (status, body) = transfer(&sidecar, "aal2").await;
        if status != 200 {
            refused = Some((i, status, body));
            break;
        }
    }
    let (i, status, body) = refused.expect("the cap is reached");
    assert!(i > 0);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("evidence_unavailable"), "{body}");
    assert_eq!(
        check(&sidecar, request("/public/hello", &[], "")).await.0,
        200
    );
}
