//! Who the grant API refuses (callers without a valid, allowed token) and when it is served.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_refuses_callers_without_a_valid_allowed_token() {
    let sidecar = start(with_grant_api);
    let id = challenged(&sidecar, "k1").await;
    let wrong_audience = format!(
        "Bearer {}",
        approver_token("approval-service", "stepguard-demo", 300)
    );
    let expired = format!(
        "Bearer {}",
        approver_token("approval-service", AUDIENCE, -120)
    );
    let user = format!("Bearer {}", token("alice", "aal3", 5));
    let stranger = format!(
        "Bearer {}",
        approver_token("mallory-service", AUDIENCE, 300)
    );
    let callers: [(&str, Option<&str>, Code); 6] = [
        ("no token", None, Code::Unauthenticated),
        (
            "not a bearer token",
            Some("Basic YWxpY2U6cHc="),
            Code::Unauthenticated,
        ),
        (
            "wrong audience",
            Some(&wrong_audience),
            Code::Unauthenticated,
        ),
        ("expired", Some(&expired), Code::Unauthenticated),
        ("a user's token", Some(&user), Code::Unauthenticated),
        (
            "subject not allowed",
            Some(&stranger),
            Code::PermissionDenied,
        ),
    ];
    for (name, authorization, code) in callers {
        let looked = lookup(&sidecar, &id, authorization).await.unwrap_err();
        assert_eq!(looked.code(), code, "LookupChallenge, {name}: {looked:?}");
        let completed = complete_as(&sidecar, &id, assurance("aal3", now()), authorization)
            .await
            .unwrap_err();
        assert_eq!(
            completed.code(),
            code,
            "CompleteChallenge, {name}: {completed:?}"
        );
        let revoked = revoke_as(&sidecar, Target::Subject(ALICE.into()), authorization)
            .await
            .unwrap_err();
        assert_eq!(revoked.code(), code, "RevokeGrants, {name}: {revoked:?}");
    }
    assert_eq!(
        lookup(&sidecar, &id, Some(&approval_service()))
            .await
            .unwrap()
            .id,
        id,
        "refused completions leave the challenge open"
    );
    assert_eq!(export_status(&sidecar, "k1").await, 401, "and mint nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grant_api_is_served_only_when_configured() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let health = |sidecar: &Sidecar| {
        let url = sidecar.grpc_url();
        async move {
            let channel = tonic::transport::Endpoint::from_shared(url)
                .unwrap()
                .connect()
                .await
                .unwrap();
            HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: "stepguard.v1.GrantService".into(),
                })
                .await
        }
    };
    let off = start(|t| t);
    let unimplemented = lookup(&off, "any", Some(&approval_service()))
        .await
        .unwrap_err();
    assert_eq!(unimplemented.code(), Code::Unimplemented);
    assert_eq!(health(&off).await.unwrap_err().code(), Code::NotFound);

    let on = start(with_grant_api);
    assert_eq!(health(&on).await.unwrap().into_inner().status, 1, "SERVING");
    let unknown = lookup(&on, "no-such-challenge", Some(&approval_service()))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}
