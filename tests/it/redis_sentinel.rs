//! The Redis grant store on a Sentinel-managed primary with two replicas (`store: redis_sentinel`),
//! against real `redis-server` and `redis-server --sentinel` processes the tests start: grants
//! consumed from many tasks across a failover are spent at most once in total, and the store
//! follows the new primary without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::records::{challenge, grant};
use crate::support::sentinel::{MASTER_NAME, SentinelSet};
use crate::support::sidecar::{invalid_field, parse_grants};
use stepguard::challenge::limits::contract::assert_issue_limits;
use stepguard::clock::ManualClock;
use stepguard::config::GrantsConfig;
use stepguard::grant::contract;
use stepguard::grant::{GrantStore, RedisStore};

const NOW: i64 = 1_800_000_000;
/// Generous: these tests are about behaviour across a failover, not latency (2 busy cores).
const BUDGET: Duration = Duration::from_millis(500);

fn store(set: &SentinelSet, replica_acks: u32) -> RedisStore {
    RedisStore::connect_sentinel(
        &set.sentinel_urls(),
        MASTER_NAME,
        replica_acks,
        "sg",
        BUDGET,
        Arc::new(ManualClock::new(NOW)),
    )
    .unwrap()
}

/// Waits (bounded) until a write through the store succeeds.
async fn writable(store: &RedisStore, within: Duration) {
    let started = Instant::now();
    loop {
        match store.put_grant(grant("dev1:probe", None, NOW)).await {
            Ok(()) => return,
            Err(e) if started.elapsed() < within => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("sentinel store not writable within {within:?}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_use_grants_are_spent_at_most_once_across_a_failover() {
    let set = SentinelSet::start();
    let old = set.servers[0].port();
    assert_eq!(set.primary_port(), old);
    // Every replica must acknowledge a consume: whichever one the sentinels promote has it.
    let store = Arc::new(store(&set, 2));
    writable(&store, Duration::from_secs(10)).await;

    // Spent before the failover: acknowledged by the replicas, so it stays spent.
    store
        .put_grant(grant("dev1:before", Some(1), NOW))
        .await
        .unwrap();
    let before = store.find_grant("dev1:before", NOW).await.unwrap().unwrap();
    assert!(store.consume(&before, NOW).await.unwrap());

    // 150 single-use grants released one every 200 ms; 8 tasks keep trying to spend every
    // released grant, before, during and after the failover. (After it, consumes are refused
    // until the new primary has two replicas again: the old primary must be demoted, which
    // Sentinel does on its next check of it, within about 10 s.)
    let grants: Vec<_> = (0..150)
        .map(|i| grant(&format!("dev1:across-{i}"), Some(1), NOW))
        .collect();
    for g in &grants {
        store.put_grant(g.clone()).await.unwrap();
    }
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, grants, stop) = (store.clone(), grants.clone(), stop.clone());
            tokio::spawn(async move {
                let mut spent = Vec::<(String, Duration)>::new();
                while !stop.load(Ordering::Relaxed) {
                    let released = (started.elapsed().as_millis() / 200 + 1) as usize;
                    for g in grants.iter().take(released) {
                        if let Ok(true) = store.consume(g, NOW).await {
                            spent.push((g.digest.clone(), started.elapsed()));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                spent
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let failover_at = started.elapsed();
    set.failover();
    // The sentinel calls block this worker; the other keeps the consumers running.
    let new = set.wait_for_new_primary(old, Duration::from_secs(20));
    let promoted_at = started.elapsed();
    writable(&store, Duration::from_secs(20)).await;
    set.wait_for_replicas(new, 2, Duration::from_secs(25));
    let recovered_at = started.elapsed();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = HashMap::<String, usize>::new();
    let (mut early, mut late) = (0, 0);
    for t in tasks {
        for (digest, at) in t.await.unwrap() {
            *total.entry(digest).or_default() += 1;
            early += usize::from(at < failover_at);
            late += usize::from(at > recovered_at);
        }
    }
    assert!(
        early > 0 && late > 0,
        "consumes did not span the failover: {early} before, {late} after (failover at \
         {failover_at:?}, promoted at {promoted_at:?}, replicated again at {recovered_at:?})"
    );
    for (digest, n) in &total {
        assert_eq!(*n, 1, "{digest} approved {n} times across the failover");
    }

    // After the failover: the old primary is a replica, the store writes to the new one.
    assert!(
        !store.consume(&before, NOW).await.unwrap(),
        "a grant spent before the failover is still spent"
    );
    for g in &grants {
        // Spent, or never approved (a consume that was not acknowledged counts as spent), or
        // still there: at most one more approval, then none.
        let again = store.consume(g, NOW).await.unwrap();
        assert!(
            !(again && total.contains_key(&g.digest)),
            "{} approved twice",
            g.digest
        );
        assert!(!store.consume(g, NOW).await.unwrap(), "{}", g.digest);
    }
    store
        .put_grant(grant("dev1:after", Some(1), NOW))
        .await
        .unwrap();
    let exists: bool = redis::cmd("EXISTS")
        .arg("sg:{dev1:after}:grant")
        .query(&mut set.client(new))
        .unwrap();
    assert!(exists, "written to the new primary");
    let after = store.find_grant("dev1:after", NOW).await.unwrap().unwrap();
    assert!(store.consume(&after, NOW).await.unwrap());
    assert!(!store.consume(&after, NOW).await.unwrap());
}

#[tokio::test]
async fn a_consume_no_replica_acknowledged_does_not_approve() {
    let set = SentinelSet::start();
    // Asks for three acknowledgements where two replicas exist: never enough.
    let store = store(&set, 3);
    writable(&store, Duration::from_secs(10)).await;
    store
        .put_grant(grant("dev1:unacked", Some(1), NOW))
        .await
        .unwrap();
    let g = store
        .find_grant("dev1:unacked", NOW)
        .await
        .unwrap()
        .unwrap();
    let r = store.consume(&g, NOW).await;
    assert!(r.is_err(), "an unreplicated consume approved: {r:?}");
    assert!(
        !store.consume(&g, NOW).await.unwrap_or(true),
        "ambiguous means spent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenges_and_limits_through_sentinel() {
    let set = SentinelSet::start();
    let store = Arc::new(store(&set, 1));
    writable(&store, Duration::from_secs(10)).await;
    let c = challenge("c-sentinel", "dev1:s1", NOW);
    store.put_challenge(c.clone()).await.unwrap();
    assert_eq!(
        store.challenge("c-sentinel", NOW).await.unwrap(),
        Some(c.clone())
    );
    assert!(store.close_challenge(&c).await.unwrap());
    assert_issue_limits(&*store, "sentinel", NOW).await;
    // The contract every store keeps (`grant::contract`).
    contract::assert_all(store, "sentinel", NOW).await;
    for (key, pttl) in support::redis::scan_pttl(&mut set.client(set.primary_port())) {
        assert!(pttl > 0, "key {key} has PTTL {pttl}");
    }
}

#[test]
fn redis_sentinel_grants_config_is_validated() {
    let c = parse_grants(
        "grants:\n  store: redis_sentinel\n  master_name: sgprimary\n  sentinels: [redis://10.0.0.1:26379, redis://10.0.0.2:26379]\n  replica_acks: 2\n",
    )
    .unwrap();
    let GrantsConfig::RedisSentinel {
        sentinels,
        master_name,
        replica_acks,
        timeout_ms,
        key_prefix,
    } = c.grants
    else {
        panic!("{:?}", c.grants)
    };
    assert_eq!(sentinels.len(), 2);
    assert_eq!(master_name, "sgprimary");
    assert_eq!(
        (replica_acks, timeout_ms, key_prefix.as_str()),
        (2, 50, "sg")
    );
    assert!(
        matches!(
            parse_grants(
                "grants:\n  store: redis_sentinel\n  master_name: m\n  sentinels: [redis://h:1]\n"
            ),
            Err(stepguard::config::ConfigError::Parse(_))
        ),
        "replica_acks has no default"
    );
    let r = parse_grants(
        "grants:\n  store: redis_sentinel\n  master_name: m\n  sentinels: []\n  replica_acks: 1\n",
    );
    assert_eq!(invalid_field(r), "grants.sentinels");
    let r = parse_grants(
        "grants:\n  store: redis_sentinel\n  master_name: m\n  sentinels: [redis://h:1, \"h:2\"]\n  replica_acks: 1\n",
    );
    assert_eq!(invalid_field(r), "grants.sentinels[1]");
    let r = parse_grants(
        "grants:\n  store: redis_sentinel\n  master_name: \"\"\n  sentinels: [redis://h:1]\n  replica_acks: 1\n",
    );
    assert_eq!(invalid_field(r), "grants.master_name");
    let r = parse_grants(
        "grants:\n  store: redis_sentinel\n  master_name: m\n  sentinels: [redis://h:1]\n  replica_acks: 99\n",
    );
    assert_eq!(invalid_field(r), "grants.replica_acks");
}
