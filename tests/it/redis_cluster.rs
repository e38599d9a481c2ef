//! The Redis grant store on a local 3-node Redis Cluster the tests start themselves
//! (`redis-server --cluster-enabled yes` × 3, joined by `redis-cli --cluster create`): the
//! grant/challenge lifecycle (the challenge write spans two slots), exactly-once consume under
//! contention, counters, `ping`, keys spread over several nodes, a TTL on every key of every
//! node, the sidecar built from `store: redis_cluster`, and faults under load: one node killed
//! (`kill -9`) then restarted, one node stopped (SIGSTOP) for 2 s; sensitive checks fail closed
//! within budget, public ones pass, and service comes back without rebuilding the pipeline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::load::{Sample, decide_within, drive, transfer, unlimited};
use crate::support::records::{challenge, grant};
use crate::support::redis::{CLUSTER_NODE_TIMEOUT_MS, RedisCluster, RedisServer};
use crate::support::sidecar::{invalid_field, parse_grants, with_grants};
use crate::support::tokens::token;
use serde_json::json;
use stepguard::app::App;
use stepguard::challenge::limits::contract::{
    assert_issue_limits, assert_subject_checked_before_source_ip,
};
use stepguard::clock::ManualClock;
use stepguard::config::{ConfigError, GrantsConfig};
use stepguard::decision::Verdict;
use stepguard::grant::contract;
use stepguard::grant::{Grant, GrantError, GrantStore, RedisStore};
use stepguard::pipeline::Pipeline;
use stepguard::request::RawRequest;

const NOW: i64 = 1_800_000_000;
/// Generous: these tests are about behaviour on a cluster, not latency (2 busy cores).
const BUDGET: Duration = Duration::from_millis(500);
const SLACK: Duration = Duration::from_millis(100);

fn store(cluster: &RedisCluster, timeout: Duration) -> RedisStore {
    RedisStore::connect_cluster(
        &cluster.urls(),
        "sg",
        timeout,
        Arc::new(ManualClock::new(NOW)),
    )
    .unwrap()
}

/// Waits (bounded) for the lazily made cluster connection to answer.
async fn ready(store: &RedisStore) {
    let started = Instant::now();
    loop {
        match store.ping().await {
            Ok(()) => return,
            Err(e) if started.elapsed() < Duration::from_secs(10) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cluster store not ready within 10 s: {e}"),
        }
    }
}

/// SCAN every key of every node: each must carry a TTL. Returns (key count, nodes holding keys).
fn assert_every_key_has_a_ttl(cluster: &RedisCluster) -> (usize, usize) {
    let keys = cluster.keys_with_pttl();
    for (port, key, pttl) in &keys {
        assert!(*pttl > 0, "key {key} on node {port} has PTTL {pttl}");
    }
    let nodes: BTreeSet<u16> = keys.iter().map(|(port, _, _)| *port).collect();
    (keys.len(), nodes.len())
}

#[tokio::test]
async fn grant_and_challenge_lifecycle_on_a_cluster() {
    let cluster = RedisCluster::start();
    let store = store(&cluster, BUDGET);
    ready(&store).await;

    // Single use: spent once.
    store
        .put_grant(grant("dev1:d1", Some(1), NOW))
        .await
        .unwrap();
    let g = store.find_grant("dev1:d1", NOW).await.unwrap().unwrap();
    assert_eq!(g, grant("dev1:d1", Some(1), NOW));
    assert!(store.consume(&g, NOW).await.unwrap());
    assert!(!store.consume(&g, NOW).await.unwrap());
    assert!(store.find_grant("dev1:d1", NOW).await.unwrap().is_none());

    // Counted (the script's rewrite, an empty amr kept) and reusable.
    let mut counted = grant("dev1:d2", Some(2), NOW);
    counted.amr = Vec::new();
    store.put_grant(counted.clone()).await.unwrap();
    assert!(store.consume(&counted, NOW).await.unwrap());
    let left = store.find_grant("dev1:d2", NOW).await.unwrap().unwrap();
    assert_eq!(
        Grant {
            uses_left: Some(2),
            ..left
        },
        counted
    );
    assert!(store.consume(&counted, NOW).await.unwrap());
    assert!(!store.consume(&counted, NOW).await.unwrap());
    let reusable = grant("dev1:d3", None, NOW);
    store.put_grant(reusable.clone()).await.unwrap();
    for _ in 0..3 {
        assert!(store.consume(&reusable, NOW).await.unwrap());
    }
    assert!(!store.consume(&reusable, NOW + 60).await.unwrap());

    // A challenge: its record and its id index live in different slots (the write and the
    // close are cross-slot pipelines).
    let c = challenge("c-lifecycle", "dev1:d4", NOW);
    assert_ne!(
        cluster.keyslot("sg:{dev1:d4}:challenge:c-lifecycle"),
        cluster.keyslot("sg:challenge:{c-lifecycle}")
    );
    store.put_challenge(c.clone()).await.unwrap();
    assert_eq!(
        store.challenge("c-lifecycle", NOW + 299).await.unwrap(),
        Some(c.clone())
    );
    assert!(
        store
            .challenge("c-lifecycle", NOW + 300)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.challenge("nope", NOW).await.unwrap().is_none());
    assert!(store.close_challenge(&c).await.unwrap());
    assert!(!store.close_challenge(&c).await.unwrap());
    assert!(store.challenge("c-lifecycle", NOW).await.unwrap().is_none());

    // Left: the reusable grant, the transaction's loop-guard counter and latest-challenge
    // pointer, and the subject's grant index.
    assert_eq!(assert_every_key_has_a_ttl(&cluster).0, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_consumers_spend_a_single_use_grant_exactly_once_on_a_cluster() {
    let cluster = RedisCluster::start();
    let store = Arc::new(store(&cluster, Duration::from_secs(2)));
    ready(&store).await;
    contract::assert_consumed_exactly_once(store, "race", 20, NOW).await;
    // Left: the subject's grant index (it expires with the longest grant).
    assert_eq!(assert_every_key_has_a_ttl(&cluster).0, 1);
}

#[tokio::test]
async fn transactions_spread_over_the_nodes_and_every_key_has_a_ttl() {
    let cluster = RedisCluster::start();
    let store = store(&cluster, BUDGET);
    ready(&store).await;
    let digests: Vec<String> = (0..12).map(|i| format!("dev1:spread-{i}")).collect();
    for (i, digest) in digests.iter().enumerate() {
        store.put_grant(grant(digest, Some(1), NOW)).await.unwrap();
        store
            .put_challenge(challenge(&format!("c-spread-{i}"), digest, NOW))
            .await
            .unwrap();
    }
    let slots: BTreeSet<u16> = digests
        .iter()
        .map(|d| cluster.keyslot(&format!("sg:{{{d}}}:grant")))
        .collect();
    assert!(slots.len() >= 2, "digests all in one slot: {slots:?}");
    // Everything one transaction touches shares its slot.
    for (i, d) in digests.iter().enumerate() {
        assert_eq!(
            cluster.keyslot(&format!("sg:{{{d}}}:grant")),
            cluster.keyslot(&format!("sg:{{{d}}}:challenge:c-spread-{i}"))
        );
    }
    // Per transaction: grant, challenge, id index, loop guard, latest-challenge pointer; and the
    // subject's open set and grant index.
    let (keys, nodes) = assert_every_key_has_a_ttl(&cluster);
    assert_eq!(keys, 12 * 5 + 2);
    assert!(nodes >= 2, "keys on {nodes} node(s) only");
    // Every grant is found and spent through the one cluster connection, wherever it lives.
    for d in &digests {
        let g = store.find_grant(d, NOW).await.unwrap().unwrap();
        assert!(store.consume(&g, NOW).await.unwrap());
        assert!(!store.consume(&g, NOW).await.unwrap());
    }
    for (i, d) in digests.iter().enumerate() {
        let id = format!("c-spread-{i}");
        assert!(store.challenge(&id, NOW).await.unwrap().is_some());
        assert!(
            store
                .close_challenge(&challenge(&id, d, NOW))
                .await
                .unwrap()
        );
    }
    // Left: the loop-guard counters and latest-challenge pointers, which expire with the
    // challenges' lifetime, and the subject's grant index.
    assert_eq!(assert_every_key_has_a_ttl(&cluster).0, 12 * 2 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuing_enforces_the_abuse_limits_on_a_cluster() {
    let cluster = RedisCluster::start();
    let store = Arc::new(store(&cluster, BUDGET * 10));
    ready(&store).await;
    assert_issue_limits(&*store, "cluster", NOW).await;
    assert_subject_checked_before_source_ip(&*store, "cluster", NOW).await;
    // The contract every store keeps (`grant::contract`).
    contract::assert_all(store, "cluster", NOW).await;
    let (keys, nodes) = assert_every_key_has_a_ttl(&cluster);
    assert!(keys > 10);
    assert!(nodes >= 2, "keys on {nodes} node(s) only");
}

#[tokio::test]
async fn ping_answers_for_a_live_store_and_fails_within_budget_for_a_dead_one() {
    let budget = Duration::from_millis(50);
    let assert_down = |r: Result<(), GrantError>, started: Instant, what: &str| {
        assert!(
            matches!(r, Err(GrantError::Unavailable(_))),
            "{what}: {r:?}"
        );
        assert!(
            started.elapsed() < budget + SLACK,
            "{what}: ping took {:?}",
            started.elapsed()
        );
    };

    // One URL.
    let mut server = RedisServer::start();
    let single =
        RedisStore::connect(&server.url(), "sg", budget, Arc::new(ManualClock::new(NOW))).unwrap();
    ready(&single).await;
    server.kill9();
    let t = Instant::now();
    assert_down(single.ping().await, t, "single");

    // A cluster: a ping reaches every primary.
    let cluster = RedisCluster::start();
    let clustered = store(&cluster, budget);
    ready(&clustered).await;
    clustered.ping().await.unwrap();
    drop(cluster);
    let t = Instant::now();
    assert_down(clustered.ping().await, t, "cluster");
}

fn with_cluster(nodes: &[String], timeout_ms: u64) -> impl Fn(String) -> String {
    let list: String = nodes.iter().map(|n| format!("    - {n}\n")).collect();
    with_grants(format!(
        "grants:\n  store: redis_cluster\n  nodes:\n{list}  timeout_ms: {timeout_ms}\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_challenges_through_a_cluster_store() {
    let cluster = RedisCluster::start();
    let config = support::sidecar::quickstart(with_cluster(&cluster.urls(), 200));
    let app = App::build(&config).await.unwrap();
    let p = app.pipeline().clone();
    let token = support::tokens::token("alice", "aal1", 10);
    let request = RawRequest {
        method: "POST".into(),
        host: "api.example.com".into(),
        path: "/v1/accounts/A1/transfers".into(),
        headers: HashMap::from([
            ("content-type".to_string(), "application/json".to_string()),
            ("authorization".to_string(), format!("Bearer {token}")),
        ]),
        body: json!({"amount": 50_000, "currency": "EUR", "payee": "mallory"})
            .to_string()
            .into_bytes(),
        source_address: Some("10.0.0.7".into()),
        ..Default::default()
    };
    let started = Instant::now();
    let d = loop {
        let d = p.decide(request.clone()).await;
        if d.verdict != Verdict::Fault || started.elapsed() > Duration::from_secs(10) {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let Verdict::Challenge { challenge_id, .. } = &d.verdict else {
        panic!("{d:?}")
    };
    let stored = p
        .grants
        .challenge(challenge_id, support::tokens::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Some(&stored.digest), d.transaction.as_ref());
    assert!(assert_every_key_has_a_ttl(&cluster).0 >= 2);
}

#[test]
fn redis_cluster_grants_config_is_validated() {
    let c = parse_grants(
        "grants:\n  store: redis_cluster\n  nodes: [redis://10.0.0.1:7000, rediss://10.0.0.2:7000]\n",
    )
    .unwrap();
    let GrantsConfig::RedisCluster {
        nodes,
        timeout_ms,
        key_prefix,
    } = &c.grants
    else {
        panic!("{:?}", c.grants)
    };
    assert_eq!(nodes, &["redis://10.0.0.1:7000", "rediss://10.0.0.2:7000"]);
    assert_eq!(*timeout_ms, 50);
    assert_eq!(key_prefix, "sg");

    let r = parse_grants("grants:\n  store: redis_cluster\n  nodes: []\n");
    assert_eq!(invalid_field(r), "grants.nodes");
    let r = parse_grants(
        "grants:\n  store: redis_cluster\n  nodes: [redis://h:7000, \"unix:///r.sock\"]\n",
    );
    assert_eq!(invalid_field(r), "grants.nodes[1]");
    let r = parse_grants("grants:\n  store: redis_cluster\n  nodes: [\"h:7000\"]\n");
    assert_eq!(invalid_field(r), "grants.nodes[0]");
    let r =
        parse_grants("grants:\n  store: redis_cluster\n  nodes: [redis://h]\n  timeout_ms: 0\n");
    assert_eq!(invalid_field(r), "grants.timeout_ms");
    let r = parse_grants(
        "grants:\n  store: redis_cluster\n  nodes: [redis://h]\n  key_prefix: \"a{b}\"\n",
    );
    assert_eq!(invalid_field(r), "grants.key_prefix");
    // One store, one way to reach it.
    for section in [
        "grants:\n  store: redis_cluster\n",
        "grants:\n  store: redis_cluster\n  nodes: [redis://h]\n  url: redis://h\n",
        "grants:\n  store: redis\n  url: redis://h\n  nodes: [redis://h]\n",
    ] {
        assert!(
            matches!(parse_grants(section), Err(ConfigError::Parse(_))),
            "{section}"
        );
    }
}

/// Concurrent workers of the fault tests' load.
const WORKERS: u64 = 8;
/// Distinct transactions the load cycles through: enough to land on every node's slots.
const TRANSACTIONS: u64 = 48;

/// How long a node is down or silent: well under the cluster node timeout, so the survivors
/// never flag it failing (which, with no replica to promote, would stop the whole cluster).
const OUTAGE: Duration = Duration::from_millis(2000);
const _: () = assert!(OUTAGE.as_millis() < CLUSTER_NODE_TIMEOUT_MS as u128);

mod faults;
