//! The grant API end to end: the real sidecar (`App::serve` on port-0 listeners) with `grant_api`
//! configured, called over gRPC like Envoy (ext_authz `Check`) and like an approval system
//! (`stepguard.v1.GrantService`) on the same listener. Approval-system tokens are signed with the
//! TEST-ONLY RSA key of `tests/fixtures` under their own issuer; user tokens with the quickstart's
//! dev key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use crate::support::sidecar::Sidecar;
use crate::support::tokens::{now, token};
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use serde_json::{Value, json};
use stepguard::proto;
use stepguard::proto::grant_service_client::GrantServiceClient;
use stepguard::proto::revoke_grants_request::Target;
use tonic::Code;

use crate::support::approvals::{self, APPROVALS, AUDIENCE, token as approver_token};
const ALICE: &str = "https://idp.stepguard.local|alice";

/// The quickstart plus a grant API for the approval service's tokens.
fn with_grant_api(text: String) -> String {
    text + &format!(
        "\ngrant_api:\n  token:\n    issuer: {APPROVALS}\n    audiences: [{AUDIENCE}]\n    \
         algorithms: [RS256]\n    jwks: {{file: ../../tests/fixtures/rsa-test-jwks.json}}\n  \
         allowed_subjects: [approval-service]\n"
    )
}

fn approval_service() -> String {
    approvals::bearer()
}

fn authorized<T>(message: T, authorization: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    request
}

async fn client(sidecar: &Sidecar) -> GrantServiceClient<tonic::transport::Channel> {
    GrantServiceClient::connect(sidecar.grpc_url())
        .await
        .unwrap()
}

async fn lookup(
    sidecar: &Sidecar,
    id: &str,
    authorization: Option<&str>,
) -> Result<proto::Challenge, tonic::Status> {
    let req = proto::LookupChallengeRequest {
        challenge_id: id.into(),
    };
    let r = client(sidecar)
        .await
        .lookup_challenge(authorized(req, authorization))
        .await?;
    Ok(r.into_inner().challenge.unwrap())
}

fn assurance(acr: &str, auth_time: i64) -> proto::Assurance {
    proto::Assurance {
        acr: acr.into(),
        amr: vec!["hwk".into()],
        method: "webauthn".into(),
        auth_time,
        approver: "bob@example.com".into(),
    }
}

async fn complete_as(
    sidecar: &Sidecar,
    id: &str,
    assurance: proto::Assurance,
    authorization: Option<&str>,
) -> Result<proto::CompleteChallengeResponse, tonic::Status> {
    let req = proto::CompleteChallengeRequest {
        challenge_id: id.into(),
        assurance: Some(assurance),
    };
    let r = client(sidecar)
        .await
        .complete_challenge(authorized(req, authorization))
        .await?;
    Ok(r.into_inner())
}

async fn complete(
    sidecar: &Sidecar,
    id: &str,
    assurance: proto::Assurance,
) -> Result<proto::CompleteChallengeResponse, tonic::Status> {
    complete_as(sidecar, id, assurance, Some(&approval_service())).await
}

async fn revoke_as(
    sidecar: &Sidecar,
    target: Target,
    authorization: Option<&str>,
) -> Result<u32, tonic::Status> {
    let req = proto::RevokeGrantsRequest {
        target: Some(target),
    };
    let r = client(sidecar)
        .await
        .revoke_grants(authorized(req, authorization))
        .await?;
    Ok(r.into_inner().revoked)
}

fn reason(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("stepguard-reason")
        .map(|r| r.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// `POST /v1/keys/{key}/export` (keys.export: aal3, max_age 0, single-use grants) by `bearer`.
fn export(key: &str, bearer: &str) -> CheckRequest {
    let headers = HashMap::from([("authorization".to_string(), format!("Bearer {bearer}"))]);
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    id: "req-1".into(),
                    method: "POST".into(),
                    host: "api.example.com".into(),
                    path: format!("/v1/keys/{key}/export"),
                    headers,
                    protocol: "HTTP/1.1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

async fn check(sidecar: &Sidecar, req: CheckRequest) -> CheckResponse {
    AuthorizationClient::connect(sidecar.grpc_url())
        .await
        .unwrap()
        .check(req)
        .await
        .unwrap()
        .into_inner()
}

/// The HTTP status Envoy would answer, and the JSON body of a denial.
fn answer(r: &CheckResponse) -> (u16, Value) {
    match r.http_response.as_ref() {
        Some(HttpResponse::OkResponse(_)) => (200, Value::Null),
        Some(HttpResponse::DeniedResponse(d)) => (
            d.status.map_or(403, |s| s.code as u16),
            serde_json::from_str(&d.body).unwrap_or(Value::Null),
        ),
        _ => (0, Value::Null),
    }
}

/// Alice (aal1 session) asks to export `key`: the RFC 9470 challenge's id.
async fn challenged(sidecar: &Sidecar, key: &str) -> String {
    let r = check(sidecar, export(key, &token("alice", "aal1", 60))).await;
    let (status, body) = answer(&r);
    assert_eq!(status, 401, "{r:?}");
    assert_eq!(body["error"], "insufficient_user_authentication");
    assert_eq!(body["acr_values"], json!(["aal3"]));
    body["challenge_id"].as_str().unwrap().to_string()
}

async fn export_status(sidecar: &Sidecar, key: &str) -> u16 {
    answer(&check(sidecar, export(key, &token("alice", "aal1", 60))).await).0
}

/// The sidecar, with this binary's log captured.
fn start(edit: impl Fn(String) -> String) -> Sidecar {
    log();
    Sidecar::start(edit)
}

/// Everything logged at info by this test binary (one global JSON subscriber).
fn log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Captured(buffer.clone());
        tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .init();
        buffer
    })
    .clone()
}

#[derive(Clone)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The grant API's evidence records about challenge `id`.
fn evidence_about(id: &str) -> Vec<Value> {
    let text = String::from_utf8(log().lock().unwrap().clone()).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "stepguard::evidence")
        .filter_map(|l| serde_json::from_str::<Value>(l["fields"]["evidence"].as_str()?).ok())
        .filter(|e| e["path"] == "stepguard.v1.GrantService/CompleteChallenge")
        .filter(|e| e["result"]["challenge_id"] == id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_completes_a_challenge_and_the_export_passes_exactly_once() {
    let sidecar = start(with_grant_api);
    let id = challenged(&sidecar, "k1").await;

    let shown = lookup(&sidecar, &id, Some(&approval_service()))
        .await
        .unwrap();
    let txn = shown.transaction.clone().unwrap();
    assert_eq!(
        (txn.action.as_str(), txn.subject.as_str()),
        ("keys.export", ALICE)
    );
    assert_eq!(txn.key_id, "dev1");
    assert!(txn.digest.starts_with("dev1:"), "{}", txn.digest);
    let requirement = shown.requirement.clone().unwrap();
    assert_eq!(
        (requirement.acr_values, requirement.max_age),
        (vec!["aal3".to_string()], 0)
    );
    assert_eq!(shown.attempts, 1);
    assert!(shown.expires_at > shown.issued_at);

    // Too weak, or an authentication from before the challenge: refused, nothing minted.
    let weak = complete(&sidecar, &id, assurance("aal2", now()))
        .await
        .unwrap_err();
    assert_eq!(
        (weak.code(), reason(&weak).as_str()),
        (Code::FailedPrecondition, "acr_insufficient")
    );
    let stale = complete(&sidecar, &id, assurance("aal3", shown.issued_at - 120))
        .await
        .unwrap_err();
    assert_eq!(
        (stale.code(), reason(&stale).as_str()),
        (Code::FailedPrecondition, "auth_time_before_challenge")
    );
    assert_eq!(
        lookup(&sidecar, &id, Some(&approval_service()))
            .await
            .unwrap()
            .id,
        id
    );
    assert_eq!(
        export_status(&sidecar, "k1").await,
        401,
        "no grant was minted"
    );

    let granted = complete(&sidecar, &id, assurance("aal3", now()))
        .await
        .unwrap();
    assert!(!granted.grant_id.is_empty());
    assert!(
        (now() + 55..=now() + 60).contains(&granted.expires_at),
        "keys.export grant_ttl 60"
    );
    let again = complete(&sidecar, &id, assurance("aal3", now()))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound, "a challenge completes once");
    let closed = lookup(&sidecar, &id, Some(&approval_service()))
        .await
        .unwrap_err();
    assert_eq!(closed.code(), Code::NotFound);

    let r = check(&sidecar, export("k1", &token("alice", "aal1", 60))).await;
    assert_eq!(
        answer(&r).0,
        200,
        "the grant approves this transaction: {r:?}"
    );
    assert_eq!(r.status.unwrap().code, 0);
    assert_eq!(
        export_status(&sidecar, "k1").await,
        401,
        "single use: spent"
    );
    assert_eq!(
        export_status(&sidecar, "k2").await,
        401,
        "another transaction"
    );

    let records = evidence_about(&id);
    let verdicts: Vec<_> = records
        .iter()
        .map(|e| e["result"]["reason"].clone())
        .collect();
    assert_eq!(
        verdicts,
        [
            json!("acr_insufficient"),
            json!("auth_time_before_challenge"),
            json!("challenge_completed"),
            json!("challenge_not_open")
        ],
        "one evidence record per completion attempt"
    );
    let done = &records[2]["result"];
    assert_eq!(done["grant_id"], granted.grant_id.as_str());
    assert_eq!(
        (done["subject"].as_str(), done["action"].as_str()),
        (Some(ALICE), Some("keys.export"))
    );
    assert_eq!(done["transaction"], txn.digest.as_str());
    assert_eq!(
        (done["acr"].as_str(), done["method"].as_str()),
        (Some("aal3"), Some("grant_api"))
    );
    assert_eq!(done["amr"], json!(["hwk", "webauthn"]));
    assert_eq!(
        done["approver"]["identity"],
        format!("{APPROVALS}|approval-service")
    );
    assert_eq!(done["approver"]["reported"], "bob@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_grants_no_longer_approve() {
    let sidecar = start(with_grant_api);
    let mut digests = Vec::new();
    let mut last = i64::MAX;
    for key in ["k1", "k2", "k3"] {
        let id = challenged(&sidecar, key).await;
        let shown = lookup(&sidecar, &id, Some(&approval_service()))
            .await
            .unwrap();
        digests.push(shown.transaction.unwrap().digest);
        // Three approvals, each at its own time (one approval completes one challenge): strictly
        // earlier than the one before, however the clock ticks between them.
        let at = now().min(last - 1);
        last = at;
        complete(&sidecar, &id, assurance("aal3", at))
            .await
            .unwrap();
    }
    let by_digest = Target::TransactionDigest(digests[0].clone());
    let service = approval_service();
    assert_eq!(
        revoke_as(&sidecar, by_digest.clone(), Some(&service))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        revoke_as(&sidecar, by_digest, Some(&service))
            .await
            .unwrap(),
        0
    );
    assert_eq!(export_status(&sidecar, "k1").await, 401, "challenged again");

    let by_subject = Target::Subject(ALICE.into());
    assert_eq!(
        revoke_as(&sidecar, by_subject, Some(&service))
            .await
            .unwrap(),
        2
    );
    assert_eq!(export_status(&sidecar, "k2").await, 401);
    assert_eq!(export_status(&sidecar, "k3").await, 401);
}

mod refusals;
