//! Grant lifecycle evidence in the spool, end to end: the real sidecar (`App::serve`) with a
//! spool, a grant API and redaction; records are read back from the spool files, the chain is
//! verified with `audit verify`, and `audit export` filters them by transaction and subject.
//! Covered: challenge issued, completed (grant API and RFC 9470), refused, consumed, revoked,
//! expired unused (memory store, and across two replicas sharing a real Redis), and a redacted
//! bound value that never reaches the spool while its keyed hash does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::support::envoy::{TempDir, manifest_dir};
use crate::support::redis::RedisServer;
use crate::support::sidecar::{Sidecar, quickstart, with_redis};
use crate::support::tokens::{claims, now, sign, token};
use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use serde_json::{Value, json};
use stepguard::app::App;
use stepguard::decision::Verdict;
use stepguard::evidence::{PublicKey, audit};
use stepguard::proto;
use stepguard::proto::grant_service_client::GrantServiceClient;
use stepguard::proto::revoke_grants_request::Target;
use stepguard::request::RawRequest;

use crate::support::approvals::{APPROVALS, AUDIENCE, bearer as approval_service};
const ALICE: &str = "https://idp.stepguard.local|alice";
/// A redaction key (test only): 32 bytes.
const REDACTION_KEY: &str = "test-only-redaction-key-32-bytes!";
const SECRET_KEY_NAME: &str = "kms-key-7c1d-secret";

/// The quickstart with a spool in `dir`, `path.key` (keys.export's bound key name) redacted under
/// a key file, and a grant API for the approval service.
fn edit(dir: &Path) -> impl Fn(String) -> String + Clone {
    let key_file = dir.join("redaction.key");
    std::fs::write(&key_file, REDACTION_KEY).unwrap();
    let spool = dir.join("spool");
    move |text: String| {
        let start = text.find("\nevidence:\n").unwrap();
        format!(
            "{}evidence:\n  spool:\n    dir: {}\n  signing_key_file: evidence-signing-key.DEV-ONLY.pem\n  \
             redact:\n    fields: [path.key]\n    key_file: {}\n\
             grant_api:\n  token:\n    issuer: {APPROVALS}\n    audiences: [{AUDIENCE}]\n    \
             algorithms: [RS256]\n    jwks: {{file: ../../tests/fixtures/rsa-test-jwks.json}}\n  \
             allowed_subjects: [approval-service]\n",
            &text[..start + 1],
            spool.display(),
            key_file.display(),
        )
    }
}

fn authorized<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", approval_service().parse().unwrap());
    request
}

async fn grants(sidecar: &Sidecar) -> GrantServiceClient<tonic::transport::Channel> {
    GrantServiceClient::connect(sidecar.grpc_url())
        .await
        .unwrap()
}

/// `POST /v1/keys/{key}/export` (keys.export: aal3, max_age 0, single-use grants).
fn export(key: &str, bearer: &str) -> CheckRequest {
    let headers = HashMap::from([("authorization".to_string(), format!("Bearer {bearer}"))]);
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
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

async fn check(sidecar: &Sidecar, key: &str) -> (u16, Value) {
    let r: CheckResponse = AuthorizationClient::connect(sidecar.grpc_url())
        .await
        .unwrap()
        .check(export(key, &token("alice", "aal1", 60)))
        .await
        .unwrap()
        .into_inner();
    match r.http_response {
        Some(HttpResponse::OkResponse(_)) => (200, Value::Null),
        Some(HttpResponse::DeniedResponse(d)) => (
            d.status.map_or(403, |s| s.code as u16),
            serde_json::from_str(&d.body).unwrap_or(Value::Null),
        ),
        _ => (0, Value::Null),
    }
}

/// Alice asks to export `key` with an aal1 session: the RFC 9470 challenge's id.
async fn challenged(sidecar: &Sidecar, key: &str) -> String {
    let (status, body) = check(sidecar, key).await;
    assert_eq!(status, 401, "{body}");
    body["challenge_id"].as_str().unwrap().to_string()
}

async fn complete(
    sidecar: &Sidecar,
    id: &str,
    acr: &str,
) -> Result<proto::CompleteChallengeResponse, tonic::Status> {
    complete_at(sidecar, id, acr, now()).await
}

/// Completes with an approval made at `auth_time` (one approval completes one challenge).
async fn complete_at(
    sidecar: &Sidecar,
    id: &str,
    acr: &str,
    auth_time: i64,
) -> Result<proto::CompleteChallengeResponse, tonic::Status> {
    let req = proto::CompleteChallengeRequest {
        challenge_id: id.into(),
        assurance: Some(proto::Assurance {
            acr: acr.into(),
            amr: vec!["hwk".into()],
            method: "webauthn".into(),
            auth_time,
            approver: "bob@example.com".into(),
        }),
    };
    Ok(grants(sidecar)
        .await
        .complete_challenge(authorized(req))
        .await?
        .into_inner())
}

/// Every record of every chain in `spool`, in file order.
fn records(spool: &Path) -> Vec<Value> {
    segments(spool)
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn segments(spool: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for chain in std::fs::read_dir(spool).unwrap().flatten() {
        for f in std::fs::read_dir(chain.path()).unwrap().flatten() {
            if f.path().extension().is_some_and(|e| e == "jsonl") {
                files.push(f.path());
            }
        }
    }
    files.sort();
    files
}

fn one<'a>(records: &'a [Value], what: &str, pred: impl Fn(&Value) -> bool) -> &'a Value {
    let found: Vec<&Value> = records.iter().filter(|r| pred(r)).collect();
    assert_eq!(found.len(), 1, "one {what} record: {found:#?}");
    found[0]
}

fn dev_key() -> PublicKey {
    PublicKey::load(&manifest_dir().join("deploy/local/evidence-signing-key.DEV-ONLY.pub")).unwrap()
}

fn exported(spool: &Path, filter: audit::Filter) -> Vec<Value> {
    let mut out = Vec::new();
    audit::export(&[spool.to_path_buf()], &filter, &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_consumption_revocation_and_refusal_are_recorded_and_redacted() {
    let dir = TempDir::new("evidence-lifecycle");
    let spool = dir.path().join("spool");
    let mut sidecar = Sidecar::start(edit(dir.path()));

    let id = challenged(&sidecar, SECRET_KEY_NAME).await;
    let weak = complete(&sidecar, &id, "aal2").await.unwrap_err();
    assert_eq!(weak.code(), tonic::Code::FailedPrecondition);
    let first_at = now();
    let granted = complete_at(&sidecar, &id, "aal3", first_at).await.unwrap();
    assert_eq!(check(&sidecar, SECRET_KEY_NAME).await.0, 200, "consumed");
    assert_eq!(check(&sidecar, SECRET_KEY_NAME).await.0, 401, "single use");

    let other = challenged(&sidecar, "k2").await;
    // Another approval: another auth_time (one approval completes one challenge), within the
    // completion skew of the challenge just issued, whatever second the clock is in now.
    let t = now();
    let second_at = if t - 1 == first_at { t } else { t - 1 };
    let second = complete_at(&sidecar, &other, "aal3", second_at)
        .await
        .unwrap();
    let revoked = grants(&sidecar)
        .await
        .revoke_grants(authorized(proto::RevokeGrantsRequest {
            target: Some(Target::Subject(ALICE.into())),
        }))
        .await
        .unwrap()
        .into_inner()
        .revoked;
    assert_eq!(revoked, 1);
    assert_eq!(check(&sidecar, "k2").await.0, 401, "revoked");
    sidecar.stop();

    let all = records(&spool);
    let issued = &all
        .iter()
        .find(|r| r["event"] == "challenge_issued" && r["result"]["challenge_id"] == id.as_str())
        .unwrap();
    assert_eq!(issued["kind"], "decision");
    assert_eq!(
        issued["result"]["requirement"],
        json!({"acr_values": ["aal3"], "max_age": 0})
    );
    assert_eq!(issued["input"]["subject"]["kind"], "human");
    let txn = issued["input"]["transaction"]["digest"]
        .as_str()
        .unwrap()
        .to_string();

    let refused = one(&all, "refused", |r| {
        r["kind"] == "completion_refused" && r["result"]["challenge_id"] == id.as_str()
    });
    assert_eq!(refused["event"], "challenge_refused");
    assert_eq!(refused["result"]["reason"], "acr_insufficient");
    assert_eq!(refused["result"]["method"], "grant_api");

    let completed = one(&all, "completed", |r| {
        r["kind"] == "completed" && r["result"]["challenge_id"] == id.as_str()
    });
    assert_eq!(completed["event"], "challenge_completed");
    assert_eq!(completed["input"]["transaction"]["digest"], txn.as_str());
    assert_eq!(completed["input"]["subject"]["id"], ALICE);
    assert_eq!(completed["input"]["action"], "keys.export");
    assert_eq!(completed["result"]["grant_id"], granted.grant_id.as_str());
    let by = &completed["result"]["satisfied_by"];
    assert_eq!(by["acr"], "aal3");
    assert_eq!(by["method"], "grant_api");
    assert_eq!(by["challenge_id"], id.as_str());
    assert!(
        by["amr"].as_array().unwrap().contains(&json!("hwk")),
        "{by}"
    );
    assert!(by["auth_time"].as_i64().unwrap() >= now() - 60);
    assert!(
        by["approver"]
            .as_str()
            .unwrap()
            .starts_with("bob@example.com via "),
        "{by}"
    );
    assert_eq!(completed["result"]["grant"]["single_use"], true);

    let consumed = one(&all, "consumed", |r| r["event"] == "grant_consumed");
    assert_eq!(consumed["kind"], "decision");
    assert_eq!(consumed["result"]["outcome"], "allow");
    assert_eq!(consumed["result"]["grant_id"], granted.grant_id.as_str());
    assert_eq!(
        consumed["result"]["satisfied_by"]["challenge_id"],
        id.as_str()
    );
    assert_eq!(consumed["result"]["satisfied_by"]["acr"], "aal3");
    assert_eq!(consumed["input"]["transaction"]["digest"], txn.as_str());
    let order = |r: &Value| r["seq"].as_u64().unwrap();
    assert!(order(issued) < order(completed) && order(completed) < order(consumed));

    let revocation = one(&all, "revoked", |r| r["kind"] == "revoked");
    assert_eq!(revocation["event"], "grants_revoked");
    assert_eq!(revocation["input"]["subject"]["id"], ALICE);
    assert_eq!(revocation["result"]["revoked"], 1);
    assert_eq!(
        revocation["result"]["revoked_by"],
        format!("{APPROVALS}|approval-service")
    );
    one(&all, "second completion", |r| {
        r["kind"] == "completed" && r["result"]["grant_id"] == second.grant_id.as_str()
    });

    // Redaction: the key name never reaches the spool; its keyed hash does, in every record
    // of that transaction's decisions.
    let key = hmac::Key::new(hmac::HMAC_SHA256, REDACTION_KEY.as_bytes());
    let expected = format!(
        "hmac-sha256:{}",
        URL_SAFE_NO_PAD.encode(hmac::sign(&key, b"path.key\0s:kms-key-7c1d-secret").as_ref())
    );
    let bytes: Vec<u8> = segments(&spool)
        .iter()
        .flat_map(|f| std::fs::read(f).unwrap())
        .collect();
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        !text.contains(SECRET_KEY_NAME),
        "the raw value is in the spool"
    );
    assert_eq!(
        issued["input"]["transaction"]["bound"]["path.key"],
        expected
    );
    assert_eq!(
        consumed["input"]["transaction"]["bound"]["path.key"],
        expected
    );
    assert_eq!(
        issued["masked"],
        json!(["/input/transaction/bound/path.key"])
    );

    // The chain with the new kinds verifies; export filters by transaction and by subject.
    let report = audit::verify(std::slice::from_ref(&spool), &[dev_key()]).unwrap();
    assert!(report.ok(), "{:?}", report.first_problem());
    let of_txn = exported(
        &spool,
        audit::Filter {
            transaction: Some(txn.clone()),
            ..Default::default()
        },
    );
    let events: Vec<&str> = of_txn
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "challenge_issued",
            "challenge_refused",
            "challenge_completed",
            "grant_consumed",
            "challenge_issued"
        ],
        "{of_txn:#?}"
    );
    let of_alice = exported(
        &spool,
        audit::Filter {
            subject: Some("alice".into()),
            ..Default::default()
        },
    );
    assert!(of_alice.iter().any(|r| r["kind"] == "revoked"));
    assert!(of_alice.iter().all(|r| r["kind"] != "checkpoint"));
    assert_eq!(
        of_alice.len(),
        all.iter().filter(|r| r["kind"] != "checkpoint").count()
    );
}

mod retry;
