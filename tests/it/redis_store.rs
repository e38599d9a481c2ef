//! The Redis grant store against real `redis-server` processes the tests start themselves:
//! lifecycle, atomic consume under contention, TTL on every key, faults (kill -9, restart,
//! SIGSTOP) and the pipeline's answers while Redis is down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::blackhole::Blackhole;
use crate::support::records::{challenge, grant};
use crate::support::redis::RedisServer;
use crate::support::sidecar::{invalid_field, parse_grants, with_redis};
use serde_json::json;
use stepguard::app::App;
use stepguard::challenge::limits::contract::{
    assert_issue_limits, assert_subject_checked_before_source_ip,
};
use stepguard::clock::ManualClock;
use stepguard::config::ConfigError;
use stepguard::decision::Verdict;
use stepguard::grant::contract;
use stepguard::grant::{Grant, GrantError, GrantStore, RedisStore, subject_tag};
use stepguard::request::RawRequest;

const NOW: i64 = 1_800_000_000;
const BUDGET: Duration = Duration::from_millis(50);
/// Scheduling slack on a busy 2-core machine on top of the operation budget.
const SLACK: Duration = Duration::from_millis(100);

fn store(server: &RedisServer, timeout: Duration) -> RedisStore {
    store_at(&server.url(), timeout)
}

fn store_at(url: &str, timeout: Duration) -> RedisStore {
    RedisStore::connect(url, "sg", timeout, Arc::new(ManualClock::new(NOW))).unwrap()
}

/// SCAN every key: each must carry a TTL.
fn assert_every_key_has_a_ttl(server: &RedisServer) -> usize {
    let keys = server.keys_with_pttl();
    for (key, pttl) in &keys {
        assert!(*pttl > 0, "key {key} has PTTL {pttl}");
    }
    keys.len()
}

fn is_unavailable<T: std::fmt::Debug>(r: &Result<T, GrantError>) -> bool {
    matches!(r, Err(GrantError::Unavailable(_)))
}

#[tokio::test]
async fn single_use_grant_is_spent_once() {
    let server = RedisServer::start();
    let store = store(&server, BUDGET * 10);
    store
        .put_grant(grant("dev1:d1", Some(1), NOW))
        .await
        .unwrap();
    let g = store.find_grant("dev1:d1", NOW).await.unwrap().unwrap();
    assert_eq!(g, grant("dev1:d1", Some(1), NOW));
    assert!(store.consume(&g, NOW).await.unwrap());
    assert!(!store.consume(&g, NOW).await.unwrap());
    assert!(store.find_grant("dev1:d1", NOW).await.unwrap().is_none());
    assert!(store.find_grant("dev1:other", NOW).await.unwrap().is_none());
    // Left: the subject's grant index (it expires with the longest grant).
    assert_eq!(assert_every_key_has_a_ttl(&server), 1);
}

#[tokio::test]
async fn counted_and_reusable_grants() {
    let server = RedisServer::start();
    let store = store(&server, BUDGET * 10);
    let mut counted = grant("dev1:d2", Some(2), NOW);
    counted.amr = Vec::new(); // an empty array must survive the script's rewrite
    store.put_grant(counted.clone()).await.unwrap();
    store.put_grant(grant("dev1:d3", None, NOW)).await.unwrap();
    let g2 = store.find_grant("dev1:d2", NOW).await.unwrap().unwrap();
    assert!(store.consume(&g2, NOW).await.unwrap());
    // One use left, the rest of the record untouched, the TTL kept.
    let left = store.find_grant("dev1:d2", NOW).await.unwrap().unwrap();
    assert_eq!(left.uses_left, Some(1));
    assert_eq!(
        Grant {
            uses_left: Some(2),
            ..left
        },
        counted
    );
    let pttl: i64 = redis::cmd("PTTL")
        .arg("sg:{dev1:d2}:grant")
        .query(&mut server.client())
        .unwrap();
    assert!((55_000..=60_000).contains(&pttl), "PTTL {pttl}");
    assert!(store.consume(&g2, NOW).await.unwrap());
    assert!(!store.consume(&g2, NOW).await.unwrap());
    let g3 = store.find_grant("dev1:d3", NOW).await.unwrap().unwrap();
    for _ in 0..5 {
        assert!(store.consume(&g3, NOW).await.unwrap());
    }
    assert_eq!(store.find_grant("dev1:d3", NOW).await.unwrap().unwrap(), g3);
    // The reusable grant and the subject's grant index.
    assert_eq!(assert_every_key_has_a_ttl(&server), 2);
}

#[tokio::test]
async fn expired_grants_and_challenges_are_gone() {
    let server = RedisServer::start();
    let store = store(&server, BUDGET * 10);
    let g = grant("dev1:d4", Some(1), NOW);
    store.put_grant(g.clone()).await.unwrap();
    assert!(
        store
            .find_grant("dev1:d4", NOW + 59)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .find_grant("dev1:d4", NOW + 60)
            .await
            .unwrap()
            .is_none()
    );
    assert!(!store.consume(&g, NOW + 60).await.unwrap());
    // Expired by the caller's clock: not spent, still there for an earlier `now`.
    assert!(store.find_grant("dev1:d4", NOW).await.unwrap().is_some());

    let c = challenge("c1", "dev1:d4", NOW);
    store.put_challenge(c.clone()).await.unwrap();
    assert_eq!(
        store.challenge("c1", NOW + 299).await.unwrap(),
        Some(c.clone())
    );
    assert!(store.challenge("c1", NOW + 300).await.unwrap().is_none());
    assert!(store.challenge("nope", NOW).await.unwrap().is_none());
    assert!(store.close_challenge(&c).await.unwrap());
    assert!(!store.close_challenge(&c).await.unwrap());
    assert!(store.challenge("c1", NOW).await.unwrap().is_none());
    // Left: the grant, the transaction's loop-guard counter and latest-challenge pointer, and
    // the subject's grant index.
    assert_eq!(assert_every_key_has_a_ttl(&server), 4);
}

#[tokio::test]
async fn already_expired_records_are_refused_and_ttls_follow_expiry() {
    let server = RedisServer::start();
    // The store's clock says NOW; a record expiring at NOW or before is not written.
    let store = store(&server, BUDGET * 10);
    let mut stale = grant("dev1:old", Some(1), NOW - 60);
    assert!(is_unavailable(&store.put_grant(stale.clone()).await));
    stale.expires_at = NOW - 1;
    assert!(is_unavailable(&store.put_grant(stale).await));
    assert!(is_unavailable(
        &store
            .put_challenge(challenge("c-old", "dev1:old", NOW - 300))
            .await
    ));
    assert_eq!(server.keys_with_pttl(), Vec::new());

    store
        .put_grant(grant("dev1:new", Some(1), NOW))
        .await
        .unwrap();
    store
        .put_challenge(challenge("c-new", "dev1:new", NOW))
        .await
        .unwrap();
    let mut keys = server.keys_with_pttl();
    keys.sort();
    let names: Vec<_> = keys.iter().map(|(k, _)| k.as_str()).collect();
    let open = format!("sg:open:{{{}}}", subject_tag("iss|alice"));
    let grants = format!("sg:grants:{{{}}}", subject_tag("iss|alice"));
    assert_eq!(
        names,
        [
            "sg:challenge:{c-new}",
            grants.as_str(),
            open.as_str(),
            "sg:{dev1:new}:attempts",
            "sg:{dev1:new}:challenge:c-new",
            "sg:{dev1:new}:grant",
            "sg:{dev1:new}:latest"
        ]
    );
    for (key, pttl) in &keys {
        let want = if key.ends_with(":grant") || key.starts_with("sg:grants:") {
            60_000
        } else {
            300_000
        };
        assert!(
            (want - 5_000..=want).contains(pttl),
            "{key}: PTTL {pttl}, want about {want}"
        );
    }
}

/// The contract every store keeps (`grant::contract`), with a TTL on every key it leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_keeps_the_store_contract() {
    let server = RedisServer::start();
    let store = Arc::new(store(&server, Duration::from_secs(2)));
    contract::assert_all(store, "redis", NOW).await;
    assert!(assert_every_key_has_a_ttl(&server) > 10);
}

#[tokio::test]
async fn issuing_enforces_the_abuse_limits_with_ttls() {
    let server = RedisServer::start();
    let store = store(&server, BUDGET * 10);
    assert_issue_limits(&store, "redis", NOW).await;
    contract::assert_completion_lookups(&store, "redis", NOW).await;
    assert!(assert_every_key_has_a_ttl(&server) > 10);
}

#[tokio::test]
async fn the_subject_is_checked_before_the_source_ip_is_counted() {
    let server = RedisServer::start();
    let store = store(&server, BUDGET * 10);
    assert_subject_checked_before_source_ip(&store, "redis", NOW).await;
    assert_every_key_has_a_ttl(&server);
}

#[tokio::test]
async fn a_replaced_grant_is_not_spent_by_the_old_holder() {
    let server = RedisServer::start();
    let store = store(&server, BUDGET * 10);
    let old = grant("dev1:d5", Some(1), NOW);
    store.put_grant(old.clone()).await.unwrap();
    let mut new = grant("dev1:d5", Some(1), NOW);
    new.id = "g-new".into();
    store.put_grant(new.clone()).await.unwrap();
    assert!(!store.consume(&old, NOW).await.unwrap());
    assert_eq!(
        store.find_grant("dev1:d5", NOW).await.unwrap(),
        Some(new.clone())
    );
    assert!(store.consume(&new, NOW).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_consumers_spend_a_single_use_grant_exactly_once() {
    let server = RedisServer::start();
    // A generous budget: this test is about atomicity, not latency.
    let store = Arc::new(store(&server, Duration::from_secs(2)));
    contract::assert_consumed_exactly_once(store, "race", 50, NOW).await;
    // Left: the subject's grant index.
    assert_eq!(assert_every_key_has_a_ttl(&server), 1);
}

/// Runs every store operation once, asserting each fails as Unavailable within the budget.
async fn assert_all_unavailable_within_budget(store: &RedisStore, budget: Duration) {
    let g = grant("dev1:fault", Some(1), NOW);
    let timed = |started: Instant, what: &str| {
        let elapsed = started.elapsed();
        assert!(
            elapsed < budget + SLACK,
            "{what} took {elapsed:?} (budget {budget:?})"
        );
    };
    let t = Instant::now();
    let r = store.find_grant("dev1:fault", NOW).await;
    assert!(is_unavailable(&r), "find_grant: {r:?}");
    timed(t, "find_grant");
    let t = Instant::now();
    let r = store.consume(&g, NOW).await;
    assert!(is_unavailable(&r), "consume: {r:?}");
    timed(t, "consume");
    let t = Instant::now();
    let r = store.put_grant(g.clone()).await;
    assert!(is_unavailable(&r), "put_grant: {r:?}");
    timed(t, "put_grant");
    let t = Instant::now();
    let c = challenge("c-fault", "dev1:fault", NOW);
    let r = store.put_challenge(c.clone()).await;
    assert!(is_unavailable(&r), "put_challenge: {r:?}");
    timed(t, "put_challenge");
    let t = Instant::now();
    let r = store.challenge("c-fault", NOW).await;
    assert!(is_unavailable(&r), "challenge: {r:?}");
    timed(t, "challenge");
    let t = Instant::now();
    let r = store.close_challenge(&c).await;
    assert!(is_unavailable(&r), "close_challenge: {r:?}");
    timed(t, "close_challenge");
}

/// Waits (bounded) until the same store works again, then runs a full grant round trip.
async fn assert_recovers(store: &RedisStore, within: Duration) {
    let started = Instant::now();
    loop {
        match store.find_grant("dev1:probe", NOW).await {
            Ok(_) => break,
            Err(e) if started.elapsed() < within => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("store did not recover within {within:?}: {e}"),
        }
    }
    let g = grant("dev1:after", Some(1), NOW);
    store.put_grant(g.clone()).await.unwrap();
    assert!(store.consume(&g, NOW).await.unwrap());
    assert!(!store.consume(&g, NOW).await.unwrap());
}

#[tokio::test]
async fn kill9_fails_within_budget_and_a_restart_recovers_the_same_store() {
    let mut server = RedisServer::start();
    let store = store(&server, BUDGET);
    assert_recovers(&store, Duration::from_secs(5)).await;
    let g = grant("dev1:k", Some(1), NOW);
    store.put_grant(g.clone()).await.unwrap();

    server.kill9();
    for _ in 0..3 {
        assert_all_unavailable_within_budget(&store, BUDGET).await;
    }
    server.restart();
    assert_recovers(&store, Duration::from_secs(10)).await;
    // The restarted server is empty (no persistence): the old grant is gone, not approvable.
    assert!(!store.consume(&g, NOW).await.unwrap());
    assert_every_key_has_a_ttl(&server);
}

#[tokio::test]
async fn a_store_made_while_redis_is_down_works_once_it_comes_up() {
    let mut server = RedisServer::start();
    server.kill9();
    let store = store_at(&server.url(), BUDGET);
    assert_all_unavailable_within_budget(&store, BUDGET).await;
    server.restart();
    assert_recovers(&store, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn sigstop_times_out_within_budget_then_recovers() {
    let server = RedisServer::start();
    let store = store(&server, BUDGET);
    assert_recovers(&store, Duration::from_secs(5)).await;
    let g = grant("dev1:s", Some(1), NOW);
    store.put_grant(g.clone()).await.unwrap();

    let resumed = server.pause(2.0);
    // The real grant's consume while Redis is frozen: what the client sees is an error within
    // the budget (the pipeline's deny), never a success — though the command may still run
    // once Redis resumes (ambiguous).
    let t = Instant::now();
    let frozen = store.consume(&g, NOW).await;
    assert!(is_unavailable(&frozen), "consume while frozen: {frozen:?}");
    assert!(t.elapsed() < BUDGET + SLACK, "took {:?}", t.elapsed());
    let paused_at = Instant::now();
    while paused_at.elapsed() < Duration::from_millis(1_500) {
        assert_all_unavailable_within_budget(&store, BUDGET).await;
    }
    resumed.join().unwrap();
    assert_recovers(&store, Duration::from_secs(10)).await;
    // The grant is spent exactly once in all: if the frozen consume ran when Redis resumed, no
    // later consume succeeds (the client that saw the error got no approval from it); if it
    // never ran, exactly one later consume does.
    let ran = store.find_grant("dev1:s", NOW).await.unwrap().is_none();
    let mut later = 0;
    for _ in 0..3 {
        later += usize::from(store.consume(&g, NOW).await.unwrap());
    }
    assert_eq!(later, usize::from(!ran), "frozen consume ran: {ran}");
    assert_every_key_has_a_ttl(&server);
}

mod pipeline;
