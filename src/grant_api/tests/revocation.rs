//! Revoking grants, and what the evidence records of an approval.

use super::*;

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
