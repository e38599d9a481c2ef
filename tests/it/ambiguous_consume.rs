//! A consume whose outcome the sidecar never learns (reliability catalogue C4), through the
//! pipeline on a real Redis: a proxy between the sidecar and Redis holds back the consume (the
//! first script call naming the transaction) past the store's time limit, then delivers it, and
//! Redis runs it. The client saw a 503 and the grant is spent; the retry is challenged again,
//! never approved — at most one approval per single-use grant, even when the answer is lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use crate::support::blackhole::Blackhole;
use crate::support::load::{decide, transfer, unlimited};
use crate::support::redis::RedisServer;
use crate::support::sidecar::with_redis;
use crate::support::tokens::{now, token};
use stepguard::decision::Verdict;
use stepguard::grant::{Challenge, Grant};
use stepguard::pipeline::Pipeline;

/// Challenges `amount` and mints the single-use grant a completed step-up would.
async fn granted(p: &Pipeline, t: &str, amount: u64) -> Challenge {
    let d = decide(p, transfer(t, amount)).await;
    let Verdict::Challenge { challenge_id, .. } = &d.verdict else {
        panic!("{d:?}")
    };
    let c = p
        .grants
        .challenge(challenge_id, now())
        .await
        .unwrap()
        .unwrap();
    p.grants
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
            uses_left: Some(1),
            policy_revision: None,
        })
        .await
        .unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_consume_whose_answer_was_lost_is_challenged_again() {
    let server = RedisServer::start();
    let proxy = Blackhole::start(server.port()).await;
    let p = unlimited(with_redis(&proxy.url(), 100)).await;
    let t = token("alice", "aal2", 5);

    // One grant spent normally first: Redis has the consume script cached, so the held call
    // below is the whole consume (no NOSCRIPT round trip left for a client that gave up).
    granted(&p, &t, 40_200).await;
    let d = decide(&p, transfer(&t, 40_200)).await;
    assert_eq!(d.reason, "grant_satisfies", "{d:?}");

    let c = granted(&p, &t, 40_100).await;
    let grant_id = format!("grant-{}", c.id);
    assert!(
        p.grants
            .find_grant(&c.digest, now())
            .await
            .unwrap()
            .is_some()
    );

    // The grant is found (a read naming only its key); the consume, the one call carrying the
    // grant's id, reaches Redis 600 ms late, past the store's 100 ms limit: a fault.
    proxy.hold_next(grant_id.as_bytes(), Duration::from_millis(600));
    let started = Instant::now();
    let d = p.decide(transfer(&t, 40_100)).await;
    assert_eq!(d.verdict, Verdict::Fault, "{d:?}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "answered within the budget"
    );

    // The held consume reaches Redis and runs: the grant is spent although no client was told.
    let deadline = Instant::now() + Duration::from_secs(3);
    // (Reads on the shared connection queue behind the held call until it is delivered.)
    while !matches!(p.grants.find_grant(&c.digest, now()).await, Ok(None)) {
        assert!(Instant::now() < deadline, "the held consume never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The retry finds no grant: challenged again, not approved.
    let d = decide(&p, transfer(&t, 40_100)).await;
    assert!(matches!(d.verdict, Verdict::Challenge { .. }), "{d:?}");
}
