//! Redis faults beyond "down" and "stopped", against real `redis-server` processes the tests
//! start on loopback: writes refused (`maxmemory` with `noeviction`, a read-only replica behind
//! the URL, `min-replicas-to-write` with no replica) deny every sensitive check within the budget,
//! approve nothing that needed a refused write and leave nothing half-written; a consume Redis
//! acknowledged before a `kill -9` stays spent after a restart from the append-only file (while a
//! snapshot alone brings it back); a primary killed right after a consume no replica received is
//! replaced by a replica that still holds the grant, and the grant is approved at most once. See "Faults and what stepguard does" in docs/redis.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::blackhole::Blackhole;
use crate::support::load::{decide, public, transfer, unlimited};
use crate::support::records::{challenge, grant, minted};
use crate::support::redis::RedisServer;
use crate::support::sentinel::{MASTER_NAME, SentinelSet, wait_until};
use crate::support::sidecar::with_redis;
use crate::support::tokens::{now, token};
use stepguard::clock::ManualClock;
use stepguard::decision::Verdict;
use stepguard::grant::{Challenge, Grant, GrantError, GrantStore, RedisStore};
use stepguard::pipeline::Pipeline;
use stepguard::request::RawRequest;

/// Scheduling slack on a busy 2-core machine on top of the decision budget.
const SLACK: Duration = Duration::from_millis(100);

/// A pipeline on the Redis at `url` (store budget 100 ms), challenge limits out of the way.
async fn pipeline(url: &str) -> Arc<Pipeline> {
    unlimited(with_redis(url, 100)).await
}

/// `t`'s transfer of `amount` stepped up: challenged through `p`, then a grant minted for the
/// challenge and the challenge closed, as a completion does. Returns the grant.
async fn stepped_up(p: &Pipeline, t: &str, amount: u64) -> Grant {
    let c = challenged(p, t, amount).await;
    let g = minted(&c, now());
    p.grants.put_grant(g.clone()).await.unwrap();
    assert!(p.grants.close_challenge(&c).await.unwrap());
    g
}

/// `t`'s transfer of `amount` challenged through `p`: the open challenge.
async fn challenged(p: &Pipeline, t: &str, amount: u64) -> Challenge {
    let d = decide(p, transfer(t, amount)).await;
    let Verdict::Challenge { challenge_id, .. } = &d.verdict else {
        panic!("{d:?}")
    };
    p.grants
        .challenge(challenge_id, now())
        .await
        .unwrap()
        .unwrap()
}

/// One check through `p`, not retried: a 503 `grant_store_unavailable`, within the budget.
async fn assert_503(p: &Pipeline, raw: RawRequest) {
    let started = Instant::now();
    let d = p.decide(raw).await;
    let took = started.elapsed();
    assert_eq!(
        (&d.verdict, d.reason.as_str()),
        (&Verdict::Fault, "grant_store_unavailable"),
        "{d:?}"
    );
    assert!(took < p.budget + SLACK, "answered in {took:?}");
}

/// `t`'s stepped-up transfer of `amount` is approved once through `p`, then challenged again.
async fn assert_approves_once(p: &Pipeline, t: &str, amount: u64) {
    let d = decide(p, transfer(t, amount)).await;
    assert_eq!(
        (&d.verdict, d.reason.as_str()),
        (&Verdict::Allow, "grant_satisfies"),
        "{d:?}"
    );
    let d = decide(p, transfer(t, amount)).await;
    assert!(matches!(d.verdict, Verdict::Challenge { .. }), "{d:?}");
}

/// The store's keys (`sg:`) and values, sorted; every one carries a TTL.
fn store_state(server: &RedisServer) -> Vec<(String, Option<String>)> {
    let mut con = server.client();
    let mut keys: Vec<_> = server
        .keys_with_pttl()
        .into_iter()
        .filter(|(key, _)| key.starts_with("sg:"))
        .map(|(key, pttl)| {
            assert!(pttl > 0, "key {key} has PTTL {pttl}");
            // Strings by value; the sets and counters by name only.
            let value: Option<String> = redis::cmd("GET").arg(&key).query(&mut con).ok();
            (key, value)
        })
        .collect();
    keys.sort();
    keys
}

use stepguard::challenge::limits::{IssueLimits, Rate, RateScope};

/// A challenge for `digest` issued straight to the store, with a per-subject rate limit.
async fn issue(store: &dyn GrantStore, id: &str, digest: &str) -> Result<(), GrantError> {
    let limits = IssueLimits {
        rates: vec![Rate {
            scope: RateScope::Subject,
            name: "subject:faults".into(),
            window: 60,
            max: 100,
        }],
        max_open: Some(100),
        max_attempts: Some(100),
    };
    let now = now();
    stepguard::challenge::limits::issue(store, challenge(id, digest, now), &limits, now)
        .await
        .map(|_| ())
}

/// With every write refused by Redis: sensitive checks through `p` answer 503 within the budget
/// (the stepped-up transaction `granted` too: its velocity counter cannot be counted), public
/// routes pass, reads still answer, and no refused write left anything behind — not a grant, a
/// challenge, or a reset loop guard (`open` is a transaction with an open challenge). A counted
/// grant's consume, which must rewrite the record, fails and spends nothing.
async fn assert_refused_writes_deny(
    p: &Pipeline,
    server: &RedisServer,
    t: &str,
    granted: &Grant,
    counted: &Grant,
    open: &Challenge,
) {
    let before = store_state(server);
    for _ in 0..3 {
        assert_503(p, transfer(t, 50_000)).await;
        assert_503(p, transfer(t, 50_009)).await;
        assert_eq!(p.decide(public()).await.verdict, Verdict::Allow);
    }
    let s = p.grants.as_ref();
    assert_eq!(
        s.find_grant(&granted.digest, now()).await.unwrap().as_ref(),
        Some(granted),
        "reads answer"
    );
    assert_eq!(
        s.challenge(&open.id, now()).await.unwrap().as_ref(),
        Some(open)
    );
    let r = s.consume(counted, now()).await;
    assert!(matches!(r, Err(GrantError::Unavailable(_))), "{r:?}");
    let r = s.put_grant(minted(open, now())).await;
    assert!(matches!(r, Err(GrantError::Unavailable(_))), "{r:?}");
    let r = issue(s, "c-refused", "dev1:refused").await;
    assert!(matches!(r, Err(GrantError::Unavailable(_))), "{r:?}");
    assert_eq!(
        store_state(server),
        before,
        "a refused write changed the store"
    );
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Fills `server` with 256 KiB values until it refuses one (`OOM`), then lowers `maxmemory`
/// 2 MiB under what is used: every further write is refused, and the few bytes the test itself
/// deletes cannot bring Redis back under the limit.
fn fill(server: &RedisServer) {
    let mut con = server.client();
    let chunk = vec![b'x'; 256 << 10];
    let full = (0..200).find_map(|i| {
        redis::cmd("SET")
            .arg(format!("filler:{i}"))
            .arg(&chunk)
            .arg("EX")
            .arg(600)
            .query::<()>(&mut con)
            .err()
    });
    let full = full.expect("200 values of 256 KiB never filled an 8 MiB Redis");
    assert_eq!(full.code(), Some("OOM"), "{full}");
    let used = server
        .info("memory")
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap();
    server.config_set("maxmemory", &(used - (2 << 20)).to_string());
    let refused = redis::cmd("SET")
        .arg("probe")
        .arg(1)
        .query::<()>(&mut con)
        .unwrap_err();
    assert_eq!(refused.code(), Some("OOM"), "{refused}");
}

/// Deletes what [`fill`] wrote and gives Redis room again.
fn empty(server: &RedisServer) {
    server.config_set("maxmemory", "64mb");
    let mut con = server.client();
    for i in 0..200 {
        let () = redis::cmd("DEL")
            .arg(format!("filler:{i}"))
            .query(&mut con)
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxmemory_noeviction_denies_and_no_approval_depends_on_a_refused_write() {
    let server = RedisServer::start_with(&args(&[
        "--maxmemory",
        "8mb",
        "--maxmemory-policy",
        "noeviction",
    ]));
    let p = pipeline(&server.url()).await;
    let t = token("alice", "aal2", 5);
    let granted = stepped_up(&p, &t, 50_000).await;
    let open = challenged(&p, &t, 50_001).await;
    let counted = grant("dev1:counted", Some(2), now());
    let single = grant("dev1:single", Some(1), now());
    for g in [&counted, &single] {
        p.grants.put_grant(g.clone()).await.unwrap();
    }

    fill(&server);
    assert_refused_writes_deny(&p, &server, &t, &granted, &counted, &open).await;
    // Spending a single-use grant only deletes it, which Redis allows when out of memory: an
    // approval that happened, not one that depends on a refused write.
    assert!(p.grants.consume(&single, now()).await.unwrap());
    assert!(!p.grants.consume(&single, now()).await.unwrap());

    // Memory back: nothing was spent by the refusals.
    empty(&server);
    assert_approves_once(&p, &t, 50_000).await;
    let left = p.grants.find_grant(&counted.digest, now()).await.unwrap();
    assert_eq!(left.and_then(|g| g.uses_left), Some(2));
    store_state(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_replica_behind_the_url_denies_within_budget() {
    let primary = RedisServer::start();
    let replica = RedisServer::start_with(&args(&[
        "--replicaof",
        "127.0.0.1",
        &primary.port().to_string(),
    ]));
    wait_until(Duration::from_secs(10), "replica in sync", || {
        replica
            .info("replication")
            .contains("master_link_status:up")
    });
    let on_primary = pipeline(&primary.url()).await;
    let t = token("alice", "aal2", 5);
    let granted = stepped_up(&on_primary, &t, 50_000).await;
    let open = challenged(&on_primary, &t, 50_001).await;
    let counted = grant("dev1:counted", Some(2), now());
    let single = grant("dev1:single", Some(1), now());
    for g in [&counted, &single] {
        on_primary.grants.put_grant(g.clone()).await.unwrap();
    }

    let on_replica = pipeline(&replica.url()).await;
    // Connected, and the replica has everything the primary wrote.
    let started = Instant::now();
    while !matches!(
        on_replica.grants.find_grant(&single.digest, now()).await,
        Ok(Some(_))
    ) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "replica never read"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_refused_writes_deny(&on_replica, &replica, &t, &granted, &counted, &open).await;
    // Unlike when out of memory, even the delete that spends a single-use grant is refused.
    let r = on_replica.grants.consume(&single, now()).await;
    assert!(matches!(r, Err(GrantError::Unavailable(_))), "{r:?}");

    // Nothing was spent: through the primary, each grant works as before.
    assert_approves_once(&on_primary, &t, 50_000).await;
    assert!(on_primary.grants.consume(&single, now()).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_replicas_to_write_without_a_replica_denies_and_spends_nothing() {
    let server = RedisServer::start();
    let p = pipeline(&server.url()).await;
    let t = token("alice", "aal2", 5);
    let granted = stepped_up(&p, &t, 50_000).await;
    let open = challenged(&p, &t, 50_001).await;
    let counted = grant("dev1:counted", Some(2), now());
    let single = grant("dev1:single", Some(1), now());
    for g in [&counted, &single] {
        p.grants.put_grant(g.clone()).await.unwrap();
    }

    server.config_set("min-replicas-to-write", "1");
    assert_refused_writes_deny(&p, &server, &t, &granted, &counted, &open).await;
    let r = p.grants.consume(&single, now()).await;
    assert!(matches!(r, Err(GrantError::Unavailable(_))), "{r:?}");

    server.config_set("min-replicas-to-write", "0");
    assert_approves_once(&p, &t, 50_000).await;
    assert!(p.grants.consume(&single, now()).await.unwrap());
    store_state(&server);
}

mod restarts;
