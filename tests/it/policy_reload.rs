//! Policy reload without a restart: the real server (`App::serve` on port-0 listeners) polls a
//! bundle server run by the test (axum), which serves OPA bundles built here, honours
//! `If-None-Match` with 304 and counts what it answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::envoy::manifest_dir;
use crate::support::tokens::token;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use stepguard::app::App;
use stepguard::config::Config;
use stepguard::decision::{Decision, Verdict};
use stepguard::pipeline::Pipeline;
use stepguard::request::RawRequest;
use tokio::sync::oneshot;

const POLL_MS: u64 = 150;
const TRANSFER: &str = r#"{"amount": 100, "currency": "EUR", "payee": "bob"}"#;

// --- the bundle server ---------------------------------------------------------------------

#[derive(Default)]
struct Served {
    /// The bundle and its ETag; `None`: 404.
    bundle: Mutex<Option<(Vec<u8>, String)>>,
    requests: AtomicUsize,
    not_modified: AtomicUsize,
}

impl Served {
    fn set(&self, revision: &str, rego: &str) {
        *self.bundle.lock().unwrap() = Some((bundle(revision, rego), format!("\"{revision}\"")));
    }
    fn count(&self) -> (usize, usize) {
        (
            self.requests.load(Ordering::SeqCst),
            self.not_modified.load(Ordering::SeqCst),
        )
    }
}

async fn serve_bundle(State(served): State<Arc<Served>>, headers: HeaderMap) -> Response {
    served.requests.fetch_add(1, Ordering::SeqCst);
    let current = served.bundle.lock().unwrap().clone();
    let Some((bytes, etag)) = current else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        served.not_modified.fetch_add(1, Ordering::SeqCst);
        return StatusCode::NOT_MODIFIED.into_response();
    }
    (StatusCode::OK, [(header::ETAG, etag)], bytes).into_response()
}

async fn bundle_server() -> (String, Arc<Served>) {
    let served = Arc::new(Served::default());
    let app = axum::Router::new()
        .route(
            "/bundles/stepguard.tar.gz",
            axum::routing::get(serve_bundle),
        )
        .with_state(served.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/bundles/stepguard.tar.gz",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, served)
}

/// An OPA bundle: a manifest with `revision` and one Rego file under the `stepguard` root.
fn bundle(revision: &str, rego: &str) -> Vec<u8> {
    let manifest = format!(r#"{{"revision": "{revision}", "roots": ["stepguard"]}}"#);
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    for (name, text) in [
        ("/.manifest", manifest.as_str()),
        ("/stepguard/authz.rego", rego),
    ] {
        let mut header = tar::Header::new_gnu();
        let raw = &mut header.as_gnu_mut().unwrap().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, text.as_bytes()).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// Denies every transaction.
const FROZEN: &str = r#"package stepguard.authz

import rego.v1

decision := {"result": "deny", "status": 403, "reason": "transfers_frozen"}
"#;

/// Steps up (aal2, within 5 minutes) unless the transaction has a grant, which it spends.
fn step_up(reason: &str) -> String {
    format!(
        r#"package stepguard.authz

import rego.v1

decision := {{"result": "allow", "reason": "{reason}", "used_grant": true}} if input.stepguard.grant != null

decision := {{"result": "step_up", "reason": "{reason}",
             "requirement": {{"acr_values": ["aal2"], "max_age": 300}},
             "grant": {{"single_use": true, "ttl": 120}}}} if input.stepguard.grant == null
"#
    )
}

// --- the sidecar ---------------------------------------------------------------------------

/// The quickstart with the bundle server as its policy, evidence to the log only.
fn config(url: &str) -> Config {
    let dir = manifest_dir().join("deploy/local");
    let text = std::fs::read_to_string(dir.join("stepguard.yaml")).unwrap();
    let text = text.replace(
        "  source: ../../policies\n",
        &format!("  bundle:\n    url: {url}\n    interval_ms: {POLL_MS}\n    timeout_ms: 2000\n"),
    );
    let evidence = text.find("# Decision evidence").unwrap();
    Config::parse(&text[..evidence], &dir).unwrap()
}

struct Running {
    pipeline: Arc<Pipeline>,
    grpc: String,
    http_port: u16,
    stop: Option<oneshot::Sender<()>>,
}

async fn start(config: &Config) -> Running {
    let app = App::build(config).await.unwrap();
    let pipeline = app.pipeline().clone();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc_addr, http_port) = (
        grpc.local_addr().unwrap(),
        http.local_addr().unwrap().port(),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.serve(grpc, http, async {
        let _ = stopped.await;
    }));
    Running {
        pipeline,
        grpc: format!("http://{grpc_addr}"),
        http_port,
        stop: Some(stop),
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn transfer(bearer: &str) -> RawRequest {
    RawRequest {
        method: "POST".into(),
        host: "api.example.com".into(),
        path: "/v1/accounts/A1/transfers".into(),
        headers: HashMap::from([
            ("content-type".to_string(), "application/json".to_string()),
            ("authorization".to_string(), format!("Bearer {bearer}")),
        ]),
        body: TRANSFER.as_bytes().to_vec(),
        source_address: Some("10.0.0.7".into()),
        ..Default::default()
    }
}

fn check_request(path: &str, bearer: &str) -> CheckRequest {
    let method = if path.starts_with("/public") {
        "GET"
    } else {
        "POST"
    };
    let authorization = format!("Bearer {bearer}");
    crate::support::check::request(
        method,
        path,
        &[
            ("content-type", "application/json"),
            ("authorization", &authorization),
        ],
        TRANSFER,
    )
}

async fn check(sidecar: &Running, req: CheckRequest) -> (u16, String) {
    let mut client = AuthorizationClient::connect(sidecar.grpc.clone())
        .await
        .unwrap();
    let r: CheckResponse = client.check(req).await.unwrap().into_inner();
    match r.http_response {
        Some(HttpResponse::OkResponse(_)) => (200, String::new()),
        Some(HttpResponse::DeniedResponse(d)) => (d.status.map_or(403, |s| s.code as u16), d.body),
        _ => (0, String::new()),
    }
}

async fn health(sidecar: &Running) -> i32 {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let channel = tonic::transport::Endpoint::from_shared(sidecar.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    client
        .check(HealthCheckRequest {
            service: "envoy.service.auth.v3.Authorization".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

fn readyz(sidecar: &Running) -> u16 {
    let port = sidecar.http_port;
    crate::support::envoy::http_get(port, "/readyz", Duration::from_secs(2))
        .unwrap()
        .0
}

/// Waits (bounded) until the live policy has `revision`.
async fn wait_for_revision(sidecar: &Running, revision: &str) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let live = sidecar.pipeline.policy.current();
        if live.is_some_and(|p| p.revision() == revision) {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("revision {revision} never activated");
}

fn revision_of(d: &Decision) -> &str {
    d.policy_revision.as_deref().unwrap_or("")
}

// --- the test ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_from_a_server_reload_without_a_restart() {
    let (url, served) = bundle_server().await;
    let sidecar = start(&config(&url)).await;
    let weak = token("alice", "aal1", 60);

    // 1. No bundle yet (404): not ready, and sensitive routes fail closed.
    tokio::time::sleep(Duration::from_millis(3 * POLL_MS)).await;
    assert!(served.count().0 >= 1, "the server was asked");
    assert_eq!(
        health(&sidecar).await,
        2,
        "NOT_SERVING before the first bundle"
    );
    assert_eq!(readyz(&sidecar), 503);
    let (status, body) = check(&sidecar, check_request("/v1/accounts/A1/transfers", &weak)).await;
    assert_eq!(status, 503);
    assert!(body.contains("policy_unavailable"), "{body}");
    let (status, _) = check(&sidecar, check_request("/public/hello", &weak)).await;
    assert_eq!(status, 200, "public routes need no policy");

    // 2. Revision A activates: serving, and it denies transfers.
    served.set("rev-a", FROZEN);
    let took = wait_for_revision(&sidecar, "rev-a").await;
    println!("first activation after {took:?}");
    let started = Instant::now();
    while health(&sidecar).await != 1 {
        assert!(started.elapsed() < Duration::from_secs(2), "never SERVING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(readyz(&sidecar), 200);
    let (status, body) = check(&sidecar, check_request("/v1/accounts/A1/transfers", &weak)).await;
    assert_eq!(status, 403);
    assert!(body.contains("transfers_frozen"), "{body}");
    let d = sidecar.pipeline.decide(transfer(&weak)).await;
    assert_eq!(
        (d.reason.as_str(), revision_of(&d)),
        ("transfers_frozen", "rev-a")
    );

    // 3. Unchanged: the sidecar asks with If-None-Match and the server answers 304.
    let (_, before) = served.count();
    tokio::time::sleep(Duration::from_millis(4 * POLL_MS)).await;
    let (requests, after) = served.count();
    assert!(
        after >= before + 2,
        "304s: {before} → {after} of {requests} requests"
    );
    let live = sidecar.pipeline.policy.current().unwrap();
    assert_eq!(live.revision(), "rev-a");

    // 4. Revision B, picked up without a restart: the same transfer now steps up.
    served.set("rev-b", &step_up("stepped_up_rev_b"));
    let took = wait_for_revision(&sidecar, "rev-b").await;
    println!("rev-b active after {took:?}");
    let (status, body) = check(&sidecar, check_request("/v1/accounts/A1/transfers", &weak)).await;
    assert_eq!(status, 401);
    assert!(body.contains("insufficient_user_authentication"), "{body}");
    let challenged = sidecar.pipeline.decide(transfer(&weak)).await;
    assert_eq!(revision_of(&challenged), "rev-b");
    let Verdict::Challenge { challenge_id, .. } = &challenged.verdict else {
        panic!("{challenged:?}")
    };
    let now = support::tokens::now();
    let challenge = sidecar
        .pipeline
        .grants
        .challenge(challenge_id, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(challenge.policy_revision.as_deref(), Some("rev-b"));

    // 5. Broken bundles are rejected; rev-b keeps serving.
    let broken = [
        (
            "bad Rego",
            "package stepguard.authz\n\ndecision := {\n".to_string(),
        ),
        (
            "missing entrypoint",
            "package stepguard.authz\n\nother := 1\n".to_string(),
        ),
        (
            "output outside the contract",
            "package stepguard.authz\n\ndecision := {\"result\": \"allow\"}\n".to_string(),
        ),
    ];
    for (i, (what, rego)) in broken.iter().enumerate() {
        let (requests, _) = served.count();
        served.set(&format!("rev-broken-{i}"), rego);
        let started = Instant::now();
        // Two polls after the swap: the broken bundle was downloaded and then answered 304.
        while served.count().0 < requests + 3 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{what}: not polled"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let live = sidecar.pipeline.policy.current().unwrap();
        assert_eq!(live.revision(), "rev-b", "{what} must be rejected");
        let d = sidecar.pipeline.decide(transfer(&weak)).await;
        assert!(
            matches!(d.verdict, Verdict::Challenge { .. }) && revision_of(&d) == "rev-b",
            "{what}: {d:?}"
        );
    }
    assert_eq!(health(&sidecar).await, 1, "still serving");

    // 6. Revision C; the step-up required under rev-b completes (an RFC 9470 retry with an
    //    aal2 token) and its grant records rev-b, while the decision is made under rev-c.
    served.set("rev-c", &step_up("stepped_up_rev_c"));
    wait_for_revision(&sidecar, "rev-c").await;
    let strong = token("alice", "aal2", 0);
    let d = sidecar.pipeline.decide(transfer(&strong)).await;
    assert_eq!(d.verdict, Verdict::Allow, "{d:?}");
    assert!(
        d.reasons.iter().any(|r| r == "step_up_completed_rfc9470"),
        "{d:?}"
    );
    assert_eq!(revision_of(&d), "rev-c");
    assert_eq!(d.grant_policy_revision.as_deref(), Some("rev-b"));
    assert!(d.grant_id.is_some());
    let (requests, not_modified) = served.count();
    println!("bundle server: {requests} requests, {not_modified} answered 304");
}
