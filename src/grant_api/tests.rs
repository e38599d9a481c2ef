use std::sync::Arc;

use serde_json::json;
use tonic::Code;

use super::*;
use crate::clock::ManualClock;
use crate::grant::{GrantTerms, MemoryStore, Requirement};
use crate::testkit::{ISSUER, config, header, sign};

const NOW: i64 = 1_800_000_000;
const ALICE: &str = "https://idp.stepguard.local|alice";
const DIGEST: &str = "dev1:AAAAdigest";

fn section(allowed: &str) -> String {
    format!(
        "\ngrant_api:\n  token:\n    issuer: {ISSUER}\n    audiences: [stepguard-grant-api]\n    algorithms: [ES256]\n    jwks: {{file: dev-jwks.json}}\n{allowed}"
    )
}

struct Fixture {
    api: GrantApi,
    store: Arc<MemoryStore>,
    clock: Arc<ManualClock>,
}

async fn fixture(allowed: &str) -> Fixture {
    let config = config(|t| t + &section(allowed));
    let store = Arc::new(MemoryStore::new(100));
    let clock = Arc::new(ManualClock::new(NOW));
    let completer = crate::completion::Completer::new(
        store.clone(),
        Arc::new(crate::evidence::LogEvidence::default()),
        config.challenge.acr_ladder.clone(),
        config.challenge.completion_skew_secs as i64,
    );
    let api = GrantApi::new(
        config.grant_api.as_ref().unwrap(),
        config.identity.leeway_secs,
        config.jwks_wait(),
        completer,
        clock.clone(),
    )
    .await
    .unwrap();
    store.put_challenge(challenge()).await.unwrap();
    Fixture { api, store, clock }
}

async fn approval_service() -> Fixture {
    fixture("  allowed_subjects: [approval-service]\n").await
}

fn challenge() -> Challenge {
    Challenge {
        id: "ch1".into(),
        digest: DIGEST.into(),
        subject: ALICE.into(),
        action: "keys.export".into(),
        requirement: Requirement {
            acr_values: vec!["aal3".into()],
            max_age: 0,
        },
        terms: GrantTerms {
            single_use: true,
            ttl: 60,
        },
        issued_at: NOW,
        expires_at: NOW + 300,
        return_to: "/secret-path".into(),
        nonce: "nonce".into(),
        pkce_verifier: "verifier".into(),
        attempts: 2,
        browser_binding: None,
        authorization_details: None,
        policy_revision: None,
    }
}

/// A caller token: `sub` for `aud`, expiring `exp_in` seconds after NOW.
fn caller_token(sub: &str, aud: &str, exp_in: i64) -> String {
    sign(
        header(),
        json!({"iss": ISSUER, "aud": aud, "sub": sub, "iat": NOW - 5, "exp": NOW + exp_in}),
    )
}

fn with_auth<T>(message: T, authorization: &[&str]) -> Request<T> {
    let mut request = Request::new(message);
    for value in authorization {
        request
            .metadata_mut()
            .append("authorization", value.parse().unwrap());
    }
    request
}

fn bearer() -> String {
    format!(
        "Bearer {}",
        caller_token("approval-service", "stepguard-grant-api", 300)
    )
}

fn reported(acr: &str, auth_time: i64) -> proto::Assurance {
    proto::Assurance {
        acr: acr.into(),
        amr: vec!["hwk".into()],
        method: "webauthn".into(),
        auth_time,
        approver: "bob@example.com".into(),
    }
}

async fn complete(f: &Fixture, acr: &str, auth_time: i64) -> Result<(String, i64), Status> {
    complete_as(f, "ch1", reported(acr, auth_time)).await
}

async fn complete_as(
    f: &Fixture,
    challenge_id: &str,
    assurance: proto::Assurance,
) -> Result<(String, i64), Status> {
    let req = proto::CompleteChallengeRequest {
        challenge_id: challenge_id.into(),
        assurance: Some(assurance),
    };
    let r = f
        .api
        .complete_challenge(with_auth(req, &[&bearer()]))
        .await?
        .into_inner();
    Ok((r.grant_id, r.expires_at))
}

async fn lookup(f: &Fixture, authorization: &[&str]) -> Result<proto::Challenge, Status> {
    let req = proto::LookupChallengeRequest {
        challenge_id: "ch1".into(),
    };
    let r = f
        .api
        .lookup_challenge(with_auth(req, authorization))
        .await?;
    Ok(r.into_inner().challenge.unwrap())
}

fn reason(status: &Status) -> &str {
    status
        .metadata()
        .get("stepguard-reason")
        .unwrap()
        .to_str()
        .unwrap()
}

#[test]
fn a_challenge_is_shown_without_its_secrets() {
    let shown = challenge_message(&challenge());
    let txn = shown.transaction.as_ref().unwrap();
    assert_eq!((txn.digest.as_str(), txn.key_id.as_str()), (DIGEST, "dev1"));
    assert_eq!(
        (txn.action.as_str(), txn.subject.as_str()),
        ("keys.export", ALICE)
    );
    assert!(txn.bound.is_empty());
    let requirement = shown.requirement.as_ref().unwrap();
    assert_eq!(
        (requirement.acr_values.clone(), requirement.max_age),
        (vec!["aal3".to_string()], 0)
    );
    assert_eq!(
        (shown.issued_at, shown.expires_at, shown.attempts),
        (NOW, NOW + 300, 2)
    );
    let debug = format!("{shown:?}");
    for secret in ["nonce", "verifier", "secret-path"] {
        assert!(!debug.contains(secret), "{secret} leaked: {debug}");
    }
    assert_eq!(key_id("nocolon"), "");
}

#[test]
fn errors_map_to_one_status_table() {
    let cases = [
        (
            GrantApiError::Unauthenticated(IdentityError::Missing),
            Code::Unauthenticated,
            "token_missing",
        ),
        (
            GrantApiError::Unauthenticated(IdentityError::InvalidToken("expired")),
            Code::Unauthenticated,
            "invalid_token",
        ),
        (
            GrantApiError::NotAllowed,
            Code::PermissionDenied,
            "caller_not_allowed",
        ),
        (
            GrantApiError::SelfApproval,
            Code::PermissionDenied,
            "self_approval",
        ),
        (
            GrantApiError::InvalidArgument {
                field: "x",
                message: "is required",
            },
            Code::InvalidArgument,
            "invalid_argument",
        ),
        (
            CompletionError::NotOpen.into(),
            Code::NotFound,
            "challenge_not_open",
        ),
        (
            CompletionError::WeakAcr {
                achieved: "aal1".into(),
                required: vec!["aal3".into()],
            }
            .into(),
            Code::FailedPrecondition,
            "acr_insufficient",
        ),
        (
            CompletionError::StaleAuthentication.into(),
            Code::FailedPrecondition,
            "auth_time_before_challenge",
        ),
        (
            CompletionError::TooOld.into(),
            Code::FailedPrecondition,
            "auth_time_too_old",
        ),
        (
            CompletionError::Store(GrantError::Full).into(),
            Code::Unavailable,
            "grant_store_unavailable",
        ),
        (
            GrantError::Unavailable("redis: secret detail".into()).into(),
            Code::Unavailable,
            "grant_store_unavailable",
        ),
    ];
    for (error, code, why) in cases {
        let status = Status::from(error.clone());
        assert_eq!((status.code(), reason(&status)), (code, why), "{error:?}");
        assert!(status.message().starts_with(why), "{}", status.message());
        assert!(
            !status.message().contains("secret detail"),
            "{}",
            status.message()
        );
    }
}

mod completion;
mod revocation;
