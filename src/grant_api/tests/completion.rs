//! Completing a challenge through the grant API: caller tokens, the assurance checked, one grant minted.

use super::*;

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
