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
        &config,
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

#[tokio::test]
async fn callers_need_a_valid_token_of_the_grant_api_issuer_and_audience() {
    let f = approval_service().await;
    let good = bearer();
    let user = format!("Bearer {}", crate::testkit::token("alice", "aal3", NOW, 5));
    let expired = format!(
        "Bearer {}",
        caller_token("approval-service", "stepguard-grant-api", -60)
    );
    let stranger = format!(
        "Bearer {}",
        caller_token("mallory-service", "stepguard-grant-api", 300)
    );
    let cases: [(&str, Vec<&str>, Code); 7] = [
        ("no token", vec![], Code::Unauthenticated),
        ("not bearer", vec!["Basic YTpi"], Code::Unauthenticated),
        ("garbage", vec!["Bearer not.a.jwt"], Code::Unauthenticated),
        (
            "user token (other audience)",
            vec![&user],
            Code::Unauthenticated,
        ),
        ("expired", vec![&expired], Code::Unauthenticated),
        ("two tokens", vec![&good, &good], Code::Unauthenticated),
        (
            "subject not allowed",
            vec![&stranger],
            Code::PermissionDenied,
        ),
    ];
    for (name, authorization, code) in cases {
        let status = lookup(&f, &authorization).await.unwrap_err();
        assert_eq!(status.code(), code, "{name}: {status:?}");
    }
    assert_eq!(lookup(&f, &[&good]).await.unwrap().id, "ch1");
}

#[tokio::test]
async fn completion_mints_one_grant_for_the_challenged_transaction() {
    let f = approval_service().await;
    f.clock.advance(20);
    let (grant_id, expires_at) = complete(&f, "aal3", NOW + 10).await.unwrap();
    assert_eq!(expires_at, NOW + 20 + 60, "challenge terms ttl");
    let grant = f.store.find_grant(DIGEST, NOW + 20).await.unwrap().unwrap();
    assert_eq!(grant.id, grant_id);
    assert_eq!(
        (grant.subject.as_str(), grant.action.as_str()),
        (ALICE, "keys.export")
    );
    assert_eq!((grant.acr.as_str(), grant.auth_time), ("aal3", NOW + 10));
    assert_eq!(
        grant.amr,
        ["hwk", "webauthn"],
        "the reported method joins the amr"
    );
    assert_eq!(grant.method, "grant_api");
    assert_eq!(grant.uses_left, Some(1));
    assert_eq!(grant.challenge_id.as_deref(), Some("ch1"));

    let again = complete(&f, "aal3", NOW + 10).await.unwrap_err();
    assert_eq!(
        (again.code(), reason(&again)),
        (Code::NotFound, "challenge_not_open")
    );
    let gone = lookup(&f, &[&bearer()]).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn weak_stale_or_malformed_assurance_is_refused_and_leaves_the_challenge_open() {
    let f = approval_service().await;
    f.clock.advance(20);
    let cases = [
        (
            "aal2",
            NOW + 10,
            Code::FailedPrecondition,
            "acr_insufficient",
        ),
        (
            "urn:unknown",
            NOW + 10,
            Code::FailedPrecondition,
            "acr_insufficient",
        ),
        (
            "aal3",
            NOW - 600,
            Code::FailedPrecondition,
            "auth_time_before_challenge",
        ),
        ("aal3", NOW + 600, Code::InvalidArgument, "invalid_argument"),
        ("aal3", 0, Code::InvalidArgument, "invalid_argument"),
        ("", NOW + 10, Code::InvalidArgument, "invalid_argument"),
    ];
    for (acr, auth_time, code, why) in cases {
        let status = complete(&f, acr, auth_time).await.unwrap_err();
        assert_eq!(
            (status.code(), reason(&status)),
            (code, why),
            "{acr} {auth_time}: {status:?}"
        );
    }
    assert!(
        f.store
            .find_grant(DIGEST, NOW + 20)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        lookup(&f, &[&bearer()]).await.unwrap().id,
        "ch1",
        "still open"
    );
    let missing = proto::CompleteChallengeRequest {
        challenge_id: "ch1".into(),
        assurance: None,
    };
    let status = f
        .api
        .complete_challenge(with_auth(missing, &[&bearer()]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        complete(&f, "aal3", NOW + 10).await.is_ok(),
        "still completable"
    );
}

#[tokio::test]
async fn an_expired_challenge_cannot_be_completed() {
    let f = approval_service().await;
    f.clock.advance(300);
    let status = complete(&f, "aal3", NOW + 299).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn the_challenged_user_cannot_approve_their_own_transaction() {
    let f = fixture("").await;
    let own = format!(
        "Bearer {}",
        caller_token("alice", "stepguard-grant-api", 300)
    );
    let req = proto::CompleteChallengeRequest {
        challenge_id: "ch1".into(),
        assurance: Some(reported("aal3", NOW)),
    };
    let status = f
        .api
        .complete_challenge(with_auth(req, &[&own]))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status)),
        (Code::PermissionDenied, "self_approval")
    );
    assert!(f.store.find_grant(DIGEST, NOW).await.unwrap().is_none());
    // Without an allow-list any other subject of the issuer and audience may approve.
    let other = format!(
        "Bearer {}",
        caller_token("approvals", "stepguard-grant-api", 300)
    );
    let req = proto::CompleteChallengeRequest {
        challenge_id: "ch1".into(),
        assurance: Some(reported("aal3", NOW)),
    };
    assert!(
        f.api
            .complete_challenge(with_auth(req, &[&other]))
            .await
            .is_ok()
    );
}

async fn revoke(f: &Fixture, target: Option<Target>) -> Result<u32, Status> {
    let req = proto::RevokeGrantsRequest { target };
    Ok(f.api
        .revoke_grants(with_auth(req, &[&bearer()]))
        .await?
        .into_inner()
        .revoked)
}

#[tokio::test]
async fn grants_are_revoked_by_transaction_or_subject() {
    let f = approval_service().await;
    complete(&f, "aal3", NOW).await.unwrap();
    let by_digest = Some(Target::TransactionDigest(DIGEST.into()));
    assert_eq!(revoke(&f, by_digest.clone()).await.unwrap(), 1);
    assert_eq!(revoke(&f, by_digest).await.unwrap(), 0);

    let mut second = challenge();
    second.id = "ch2".into();
    second.digest = "dev1:other".into();
    f.store.put_challenge(second.clone()).await.unwrap();
    // A challenge id is completed once (its outcome is claimed): the transaction's next
    // challenge has an id of its own.
    let mut again = challenge();
    again.id = "ch3".into();
    f.store.put_challenge(again.clone()).await.unwrap();
    let approver = Approver {
        identity: "x|y".into(),
    };
    let assurance = assurance_for(&again, &reported("aal3", NOW), &approver);
    f.api
        .completer
        .complete(&again, &assurance, NOW)
        .await
        .unwrap();
    // Another approval (at its own time): one approval completes one challenge.
    let assurance = assurance_for(
        &second,
        &reported("aal3", NOW - 1),
        &Approver {
            identity: "x|y".into(),
        },
    );
    f.api
        .completer
        .complete(&second, &assurance, NOW)
        .await
        .unwrap();
    assert_eq!(
        revoke(&f, Some(Target::Subject(ALICE.into())))
            .await
            .unwrap(),
        2
    );
    assert!(
        f.store
            .find_grant("dev1:other", NOW)
            .await
            .unwrap()
            .is_none()
    );

    for bad in [
        None,
        Some(Target::Subject("alice".into())),
        Some(Target::Subject(String::new())),
        Some(Target::TransactionDigest("nokeyid".into())),
    ] {
        let status = revoke(&f, bad.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
    }
}

#[test]
fn the_recorded_assurance_is_the_challenged_subjects_with_the_approver() {
    let approver = Approver {
        identity: "https://approvals|svc".into(),
    };
    let a = assurance_for(&challenge(), &reported("aal3", NOW), &approver);
    assert_eq!(a.subject, ALICE);
    assert_eq!(a.method, METHOD);
    assert_eq!(
        a.approver.as_deref(),
        Some("bob@example.com via https://approvals|svc")
    );
    let mut anonymous = reported("aal3", NOW);
    anonymous.approver.clear();
    anonymous.amr = vec!["webauthn".into()];
    let a = assurance_for(&challenge(), &anonymous, &approver);
    assert_eq!(a.approver.as_deref(), Some("https://approvals|svc"));
    assert_eq!(
        a.amr,
        ["webauthn"],
        "a method already listed is not repeated"
    );
}

#[test]
fn evidence_records_the_challenge_the_assurance_and_the_outcome() {
    let approver = Approver {
        identity: "https://approvals|svc".into(),
    };
    let mut attempt = record::Attempt::new("ch1".into(), Some(reported("aal3", NOW)));
    attempt.challenge = Some(challenge());
    let refused = GrantApiError::from(CompletionError::StaleAuthentication);
    let r = record::completion_record(&approver, &attempt, Err(&refused), NOW);
    assert_eq!(r["path"], "stepguard.v1.GrantService/CompleteChallenge");
    let result = &r["result"];
    assert_eq!(result["verdict"], "refused");
    assert_eq!(result["reason"], "auth_time_before_challenge");
    assert_eq!(result["transaction"], DIGEST);
    assert_eq!(result["subject"], ALICE);
    assert_eq!(result["action"], "keys.export");
    assert_eq!(result["amr"], json!(["hwk", "webauthn"]));
    assert_eq!(result["method"], "grant_api");
    assert_eq!(result["reported_method"], "webauthn");
    assert_eq!(result["approver"]["identity"], "https://approvals|svc");
    assert_eq!(result["approver"]["reported"], "bob@example.com");
    assert!(result["grant_id"].is_null());
    let text = r.to_string();
    for secret in ["nonce", "verifier"] {
        assert!(!text.contains(secret), "{text}");
    }
}

#[tokio::test]
async fn one_approval_completes_one_challenge() {
    let f = approval_service().await;
    let mut other = challenge();
    other.id = "ch2".into();
    other.digest = "dev1:other-transaction".into();
    f.store.put_challenge(other).await.unwrap();
    f.clock.advance(20);
    complete_as(&f, "ch1", reported("aal3", NOW + 10))
        .await
        .unwrap();
    // The same approval (same approval system, approver, user and auth_time) reported again
    // for another of the user's transactions: refused, nothing minted, the challenge open.
    let status = complete_as(&f, "ch2", reported("aal3", NOW + 10))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status)),
        (Code::FailedPrecondition, "authentication_already_used")
    );
    let mut method = reported("aal3", NOW + 10);
    method.method = "push".into();
    method.amr = vec!["swk".into()];
    assert_eq!(
        reason(&complete_as(&f, "ch2", method).await.unwrap_err()),
        "authentication_already_used",
        "another method or amr is not another approval"
    );
    assert!(
        f.store
            .find_grant("dev1:other-transaction", NOW + 20)
            .await
            .unwrap()
            .is_none()
    );
    // A second approval, at its own time, completes it.
    complete_as(&f, "ch2", reported("aal3", NOW + 12))
        .await
        .unwrap();
}
