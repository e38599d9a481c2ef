//! Two stepguard instances sharing one real Redis: a challenge issued through one is completed
//! and consumed through the other, and neither approves it twice. Plus readiness while Redis is
//! down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::{Duration, Instant};

use crate::support::load::{decide, drive, load, transfer, unlimited};
use crate::support::redis::RedisServer;
use crate::support::sidecar::{Sidecar, quickstart, with_redis};
use crate::support::tokens::{now, token};
use serde_json::Value;
use stepguard::app::App;
use stepguard::decision::Verdict;
use stepguard::grant::Grant;
use stepguard::pipeline::Pipeline;

/// Answers within the budget plus this.
const SLACK: Duration = Duration::from_millis(50);

async fn instance(url: &str) -> std::sync::Arc<Pipeline> {
    App::build(&quickstart(with_redis(url, 100)))
        .await
        .unwrap()
        .into_pipeline()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_from_one_replica_is_completed_and_consumed_through_another() {
    let server = RedisServer::start();
    let (a, b) = (instance(&server.url()).await, instance(&server.url()).await);
    let t = token("alice", "aal2", 5);

    let d = decide(&a, transfer(&t, 50_000)).await;
    let Verdict::Challenge { challenge_id, .. } = &d.verdict else {
        panic!("{d:?}")
    };

    // Replica B finds the challenge A issued and mints its grant (as a completion would).
    let c = b
        .grants
        .challenge(challenge_id, now())
        .await
        .unwrap()
        .expect("challenge shared through Redis");
    assert_eq!(Some(&c.digest), d.transaction.as_ref());
    b.grants
        .put_grant(Grant {
            id: format!("grant-{}", c.id),
            digest: c.digest.clone(),
            subject: c.subject.clone(),
            action: c.action.clone(),
            acr: "aal3".into(),
            amr: vec!["hwk".into()],
            auth_time: now(),
            method: "oidc".into(),
            challenge_id: Some(c.id.clone()),
            issued_at: now(),
            expires_at: now() + c.terms.ttl,
            uses_left: c.terms.single_use.then_some(1),
            policy_revision: None,
        })
        .await
        .unwrap();
    assert!(b.grants.close_challenge(&c).await.unwrap());

    // Another amount is another transaction, on either replica.
    assert!(matches!(
        decide(&a, transfer(&t, 50_001)).await.verdict,
        Verdict::Challenge { .. }
    ));
    // The grant approves its transaction once, through B; then neither replica approves it.
    let d = decide(&b, transfer(&t, 50_000)).await;
    assert_eq!(
        (d.verdict, d.reason.as_str()),
        (Verdict::Allow, "grant_satisfies")
    );
    for p in [&a, &b] {
        assert!(matches!(
            decide(p, transfer(&t, 50_000)).await.verdict,
            Verdict::Challenge { .. }
        ));
    }
}

fn readiness(sidecar: &Sidecar) -> (u16, Value) {
    let (code, body) =
        support::envoy::http_get(sidecar.http.port(), "/readyz", Duration::from_secs(2)).unwrap();
    (code, serde_json::from_str(&body).unwrap())
}

#[test]
fn readiness_reports_a_degraded_store_and_recovers() {
    let mut server = RedisServer::start();
    let sidecar = Sidecar::start(with_redis(&server.url(), 100));
    let wait_for = |status: &str| {
        let started = Instant::now();
        loop {
            let (code, body) = readiness(&sidecar);
            if body["status"] == status {
                assert_eq!(code, 200, "{body}");
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never {status}: {body}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("ready");
    server.kill9();
    wait_for("degraded");
    server.restart();
    wait_for("ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_load_fails_closed_and_recovers_by_itself() {
    let mut server = RedisServer::start();
    let p = unlimited(with_redis(&server.url(), 100)).await;
    decide(&p, transfer(&token("alice", "aal2", 5), 40_000)).await;
    let (killer, restart) = (
        tokio::time::sleep(Duration::from_millis(500)),
        Duration::from_millis(1500),
    );
    let load_task = {
        let p = p.clone();
        tokio::spawn(
            async move { drive(&p, Duration::from_secs(4), 8, |w, _| 50_000 + w, SLACK).await },
        )
    };
    killer.await;
    let killed = Instant::now();
    server.kill9();
    tokio::time::sleep(restart).await;
    let restarted = Instant::now();
    server.restart();
    let samples = load_task.await.unwrap();
    // The faults are the outage's: none before the kill, every check made while Redis was down
    // a 503, and none once it is back (a second for the connection to be remade).
    let before: Vec<_> = samples
        .iter()
        .filter(|s| s.asked + s.took < killed)
        .collect();
    let down: Vec<_> = samples
        .iter()
        .filter(|s| s.within(killed + Duration::from_millis(100), restarted))
        .collect();
    let after: Vec<_> = samples
        .iter()
        .filter(|s| s.asked > restarted + Duration::from_secs(1))
        .collect();
    assert!(!before.is_empty() && !down.is_empty() && !after.is_empty());
    assert!(before.iter().all(|s| !s.fault), "a fault before the kill");
    assert!(
        down.iter().all(|s| s.fault),
        "an answer while Redis was down"
    );
    assert!(
        after.iter().all(|s| !s.fault),
        "still failing a second after the restart"
    );
    let d = decide(&p, transfer(&token("alice", "aal2", 5), 40_001)).await;
    assert!(
        matches!(d.verdict, Verdict::Challenge { .. }),
        "recovered without a restart: {d:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pause_fails_closed_within_budget_then_recovers() {
    let server = RedisServer::start();
    let p = unlimited(with_redis(&server.url(), 100)).await;
    decide(&p, transfer(&token("alice", "aal2", 5), 40_000)).await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("ALL")
        .query(&mut server.client())
        .unwrap();
    let (faults, total) = load(&p, Duration::from_millis(1000)).await;
    assert_eq!(
        faults, total,
        "every sensitive check during the pause is a 503"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let d = decide(&p, transfer(&token("alice", "aal2", 5), 40_002)).await;
    assert!(matches!(d.verdict, Verdict::Challenge { .. }), "{d:?}");
}
