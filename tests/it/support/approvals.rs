//! The approval service of the grant API tests: its issuer and the audience it calls stepguard
//! with, its caller tokens (the TEST-ONLY RSA key of `tests/fixtures`, published in
//! `rsa-test-jwks.json`), and a challenge completed through the grant API.

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use stepguard::proto;
use stepguard::proto::grant_service_client::GrantServiceClient;

use super::envoy::manifest_dir;
use super::tokens::now;

/// The approval service's token issuer.
pub const APPROVALS: &str = "https://approvals.test";
/// The audience its tokens name (the grant API's `token.audiences`).
pub const AUDIENCE: &str = "stepguard-grant-api";

/// A caller token of the approvals issuer for `sub` and `aud`, expiring in `exp_in` seconds.
pub fn token(sub: &str, aud: &str, exp_in: i64) -> String {
    let pem =
        std::fs::read(manifest_dir().join("tests/fixtures/rsa-test-key.TEST-ONLY.pem")).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-test-1".into());
    let claims = json!({"iss": APPROVALS, "aud": aud, "sub": sub, "iat": now() - 5,
                        "exp": now() + exp_in});
    encode(&header, &claims, &EncodingKey::from_rsa_pem(&pem).unwrap()).unwrap()
}

/// The approval service's `authorization` value.
pub fn bearer() -> String {
    format!("Bearer {}", token("approval-service", AUDIENCE, 300))
}

/// The approval service completes `challenge_id` at aal3 (webauthn, a hardware key) for a
/// sign-in at `auth_time`, approved by `approver`, on stepguard's gRPC port at `grpc_url`: the
/// grant's id.
pub async fn complete(
    grpc_url: String,
    challenge_id: &str,
    auth_time: i64,
    approver: &str,
) -> String {
    let mut req = tonic::Request::new(proto::CompleteChallengeRequest {
        challenge_id: challenge_id.into(),
        assurance: Some(proto::Assurance {
            acr: "aal3".into(),
            amr: vec!["hwk".into()],
            method: "webauthn".into(),
            auth_time,
            approver: approver.into(),
        }),
    });
    req.metadata_mut()
        .insert("authorization", bearer().parse().unwrap());
    let mut client = GrantServiceClient::connect(grpc_url).await.unwrap();
    client
        .complete_challenge(req)
        .await
        .unwrap()
        .into_inner()
        .grant_id
}

/// The config of `stepguard serve` for the approval service: a spool in `spool` signed with the
/// test evidence key, and the grant API trusting the approvals issuer; the rest is
/// [`super::binary::config_text`]'s (memory store, ports `grpc` and `http`).
pub fn spool_and_grant_api(spool: &std::path::Path, grpc: u16, http: u16) -> String {
    let sections = format!(
        "evidence:\n  spool:\n    dir: {}\n  signing_key_file: {}\n\ngrant_api:\n  token:\n    \
         issuer: {APPROVALS}\n    audiences: [{AUDIENCE}]\n    algorithms: [RS256]\n    \
         jwks: {{file: {}}}\n  allowed_subjects: [approval-service]\n",
        spool.display(),
        super::binary::evidence_key().display(),
        manifest_dir()
            .join("tests/fixtures/rsa-test-jwks.json")
            .display()
    );
    super::binary::config_text(grpc, http, &sections)
}
