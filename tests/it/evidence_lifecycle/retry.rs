//! RFC 9470 retries as completions, challenges that expire unanswered, and expiry across replicas
//! sharing a Redis.

use super::*;

/// keys.export of `key` by `token`, in-process.
fn export_raw(key: &str, token: &str) -> RawRequest {
    RawRequest {
        method: "POST".into(),
        host: "api.example.com".into(),
        path: format!("/v1/keys/{key}/export"),
        headers: HashMap::from([("authorization".to_string(), format!("Bearer {token}"))]),
        source_address: Some("10.0.0.9".into()),
        ..Default::default()
    }
}

fn spool_config(dir: &Path) -> impl Fn(String) -> String + Clone {
    let spool = dir.join("spool");
    move |text: String| {
        let start = text.find("\nevidence:\n").unwrap();
        format!(
            "{}evidence:\n  spool:\n    dir: {}\n  signing_key_file: evidence-signing-key.DEV-ONLY.pem\n",
            &text[..start + 1],
            spool.display()
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rfc9470_retry_is_a_completion_and_an_unanswered_challenge_expires() {
    let dir = TempDir::new("evidence-rfc9470");
    let spool = dir.path().join("spool");
    let p = App::build(&quickstart(spool_config(dir.path())))
        .await
        .unwrap()
        .into_pipeline();
    let d = p
        .decide(export_raw("K1", &token("alice", "aal1", 60)))
        .await;
    let Verdict::Challenge { challenge_id, .. } = &d.verdict else {
        panic!("{d:?}")
    };
    let unanswered = p
        .decide(export_raw("K2", &token("alice", "aal1", 60)))
        .await;
    let Verdict::Challenge {
        challenge_id: unanswered,
        ..
    } = &unanswered.verdict
    else {
        panic!("{unanswered:?}")
    };
    assert_eq!(p.completer.awaited(), 2);
    let mut stepped_up = claims("alice", "aal3", 0);
    stepped_up["amr"] = json!(["hwk", "user"]);
    let d = p.decide(export_raw("K1", &sign(&stepped_up))).await;
    assert!(d.is_allow(), "{d:?}");
    assert_eq!(
        p.completer.awaited(),
        2,
        "K2's challenge, and K1's grant (spent at once: never recorded expired)"
    );

    // Nothing expires before its time (and grace); then K2's challenge, once; K1's grant was
    // used, so it is not recorded expired unused.
    assert_eq!(p.completer.sweep(now()).await, 0);
    assert_eq!(p.completer.sweep(now() + 400).await, 1);
    assert_eq!(p.completer.sweep(now() + 800).await, 0);
    p.evidence.close().await;

    let all = records(&spool);
    let completed = one(&all, "completed", |r| r["kind"] == "completed");
    assert_eq!(completed["result"]["challenge_id"], challenge_id.as_str());
    let by = &completed["result"]["satisfied_by"];
    assert_eq!(
        (by["method"].as_str(), by["acr"].as_str()),
        (Some("rfc9470"), Some("aal3"))
    );
    assert_eq!(by["amr"], json!(["hwk", "user"]));
    assert_eq!(by["auth_time"], stepped_up["auth_time"]);
    assert_eq!(
        completed["result"]["grant_id"],
        d.grant_id.clone().unwrap().as_str()
    );
    let consumed = one(&all, "consumed", |r| r["event"] == "grant_consumed");
    assert_eq!(consumed["decision_id"], d.id.as_str());
    assert!(
        consumed["result"]["reasons"]
            .as_array()
            .unwrap()
            .contains(&json!("step_up_completed_rfc9470"))
    );
    let expired = one(&all, "expired", |r| r["kind"] == "expired");
    assert_eq!(expired["event"], "challenge_expired");
    assert_eq!(expired["result"]["challenge_id"], unanswered.as_str());
    assert_eq!(expired["result"]["outcome"], "expired");
    assert!(expired["result"]["expires_at"].as_i64().unwrap() > now());
    let report = audit::verify(&[spool], &[dev_key()]).unwrap();
    assert!(report.ok(), "{:?}", report.first_problem());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_shared_redis_a_challenge_completed_on_one_replica_never_expires_on_another() {
    let redis = RedisServer::start();
    let (dir_a, dir_b) = (TempDir::new("evidence-a"), TempDir::new("evidence-b"));
    let url = redis.url();
    let replica = |dir: &Path| {
        let spool = spool_config(dir);
        let store = with_redis(&url, 500);
        quickstart(move |t| spool(store(t)))
    };
    let a = App::build(&replica(dir_a.path()))
        .await
        .unwrap()
        .into_pipeline();
    let b = App::build(&replica(dir_b.path()))
        .await
        .unwrap()
        .into_pipeline();
    let completed_elsewhere = a
        .decide(export_raw("K1", &token("alice", "aal1", 60)))
        .await;
    assert!(matches!(
        completed_elsewhere.verdict,
        Verdict::Challenge { .. }
    ));
    let expires = a
        .decide(export_raw("K2", &token("alice", "aal1", 60)))
        .await;
    let Verdict::Challenge { challenge_id, .. } = &expires.verdict else {
        panic!("{expires:?}")
    };
    // Replica B answers K1's retry (RFC 9470).
    let d = b.decide(export_raw("K1", &token("alice", "aal3", 0))).await;
    assert!(d.is_allow(), "{d:?}");
    assert_eq!(a.completer.awaited(), 2, "A does not know");
    assert_eq!(
        a.completer.sweep(now() + 400).await,
        1,
        "only K2's challenge expired unused"
    );
    a.evidence.close().await;
    b.evidence.close().await;
    let of_a = records(&dir_a.path().join("spool"));
    let expired: Vec<&Value> = of_a.iter().filter(|r| r["kind"] == "expired").collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0]["result"]["challenge_id"], challenge_id.as_str());
    let of_b = records(&dir_b.path().join("spool"));
    one(&of_b, "completed", |r| r["kind"] == "completed");
}
