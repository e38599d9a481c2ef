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

/// Worker `w`'s `n`-th transfer amount: the load cycles through [`TRANSACTIONS`] transactions.
fn spread(w: u64, n: u64) -> u64 {
    60_000 + (n * WORKERS + w) % TRANSACTIONS
}

/// A sidecar pipeline on `cluster` (limits out of the way, 100 ms per store operation), warmed
/// up, and the node to break: one holding neither the subject's keys nor the source IP's
/// counter (every challenge writes both), so that transactions whose slots live on the other
/// two nodes can still be challenged while it is down.
async fn pipeline_and_victim(cluster: &RedisCluster) -> (Arc<Pipeline>, usize) {
    let p = unlimited(with_cluster(&cluster.urls(), 100)).await;
    let t = token("alice", "aal2", 5);
    let d = decide_within(&p, transfer(&t, 40_000), Duration::from_secs(10)).await;
    assert!(matches!(d.verdict, Verdict::Challenge { .. }), "{d:?}");
    let ports = cluster.ports();
    let shared: BTreeSet<usize> = cluster
        .keys_with_pttl()
        .into_iter()
        .filter(|(_, key, _)| key.starts_with("sg:open:") || key.starts_with("sg:count:"))
        .map(|(port, _, _)| ports.iter().position(|p| *p == port).unwrap())
        .collect();
    assert!(!shared.is_empty(), "no subject or source IP keys written");
    let victim = (0..ports.len()).find(|i| !shared.contains(i)).unwrap();
    (p, victim)
}

/// The node each transaction of `samples` lives on (its slot's primary), by amount.
fn nodes_of(cluster: &RedisCluster, samples: &[Sample]) -> BTreeMap<u64, usize> {
    let mut nodes = BTreeMap::new();
    for s in samples {
        if let (false, Some(digest)) = (nodes.contains_key(&s.amount), &s.transaction) {
            nodes.insert(s.amount, cluster.node_of(&format!("{{{digest}}}")));
        }
    }
    nodes
}

/// Sensitive checks asked and answered between `from` and `until`: (503s, checks) for the
/// transactions on node `victim`, then for those on the other nodes.
fn split(
    samples: &[Sample],
    nodes: &BTreeMap<u64, usize>,
    victim: usize,
    (from, until): (Instant, Instant),
) -> [(usize, usize); 2] {
    let mut out = [(0, 0); 2];
    for s in samples.iter().filter(|s| s.within(from, until)) {
        let side = &mut out[usize::from(nodes[&s.amount] != victim)];
        side.0 += usize::from(s.fault);
        side.1 += 1;
    }
    out
}

/// Waits (bounded by `within`) until transactions on every node, two per node, are all
/// challenged in one round; returns how long that took.
async fn all_nodes_challenge(
    p: &Pipeline,
    nodes: &BTreeMap<u64, usize>,
    within: Duration,
) -> Duration {
    let t = token("alice", "aal2", 5);
    let mut probes: Vec<u64> = Vec::new();
    for node in 0..3 {
        let on_node: Vec<u64> = nodes
            .iter()
            .filter(|(_, n)| **n == node)
            .map(|(a, _)| *a)
            .take(2)
            .collect();
        assert!(!on_node.is_empty(), "no transaction on node {node}");
        probes.extend(on_node);
    }
    let started = Instant::now();
    loop {
        let mut last = None;
        for amount in &probes {
            let d = p.decide(transfer(&t, *amount)).await;
            if !matches!(d.verdict, Verdict::Challenge { .. }) {
                last = Some(d);
                break;
            }
        }
        let Some(d) = last else {
            return started.elapsed();
        };
        assert!(
            started.elapsed() < within,
            "no challenges on every node within {within:?}: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a blocking harness step (process signals, waits on the cluster) off the runtime's
/// workers, so the load keeps its threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_a_cluster_node_under_load_fails_closed_and_recovers() {
    let cluster = RedisCluster::start();
    let (p, victim) = pipeline_and_victim(&cluster).await;
    let started = Instant::now();
    let load = {
        let p = p.clone();
        tokio::spawn(async move { drive(&p, Duration::from_secs(5), WORKERS, spread, SLACK).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut cluster = blocking(move || {
        let mut cluster = cluster;
        cluster.kill9(victim);
        cluster
    })
    .await;
    let killed = Instant::now();
    tokio::time::sleep(OUTAGE).await;
    let restarting = Instant::now();
    let cluster = blocking(move || {
        cluster.restart(victim);
        cluster
    })
    .await;
    let rejoined = restarting.elapsed();
    // Every sensitive answer under load was a challenge or a 503 within budget, every public
    // one an allow (checked as they came).
    let samples = load.await.unwrap();
    let nodes = nodes_of(&cluster, &samples);
    // Back without rebuilding the pipeline: transactions on every node, the restarted (empty)
    // one included, are challenged again.
    let recovery = all_nodes_challenge(&p, &nodes, Duration::from_secs(15)).await;

    let [(a_faults, a), (b_faults, b)] = split(&samples, &nodes, victim, (started, killed));
    let [(down_faults, down), (up_faults, up)] =
        split(&samples, &nodes, victim, (killed, restarting));
    let [(back_faults, back), (others_faults, others)] = split(
        &samples,
        &nodes,
        victim,
        (restarting, restarting + rejoined),
    );
    let faults = samples.iter().filter(|s| s.fault).count();
    eprintln!(
        "kill -9 of node {victim}: {faults}/{} sensitive checks 503 in all; before: {}/{} 503; \
         while down: the dead node's transactions {down_faults}/{down} 503, the survivors' \
         {up_faults}/{up} 503; while it rejoined: its transactions {back_faults}/{back} 503, the \
         others' {others_faults}/{others} 503; \
         restarted node rejoined (cluster_state:ok) {rejoined:?} after its start, every node \
         challenging {recovery:?} after that",
        samples.len(),
        a_faults + b_faults,
        a + b,
    );
    assert!(a_faults + b_faults < a + b, "no service before the kill");
    assert!(down > 0 && up > 0, "no checks while down: {down}, {up}");
    assert_eq!(
        down_faults, down,
        "nothing stored on a dead node is challenged or allowed: every check is a 503"
    );
    assert!(
        up_faults < up,
        "transactions on the surviving nodes are still challenged: {up_faults}/{up} 503"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_of_a_cluster_node_fails_closed_within_budget_then_recovers() {
    let cluster = RedisCluster::start();
    let (p, victim) = pipeline_and_victim(&cluster).await;
    let load = {
        let p = p.clone();
        tokio::spawn(async move { drive(&p, Duration::from_secs(4), WORKERS, spread, SLACK).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Stopped, not dead: connections stay open and requests get no answer, until SIGCONT (sent
    // no sooner than `OUTAGE` after `stopping`).
    let stopping = Instant::now();
    let resume = cluster.pause(victim, OUTAGE.as_secs_f64());
    let stopped = Instant::now();
    blocking(move || resume.join().unwrap()).await;
    let resumed = Instant::now();
    // Every sensitive answer under load was a challenge or a 503 within budget (the silent node
    // cost no more than the budget), every public one an allow (checked as they came).
    let samples = load.await.unwrap();
    let nodes = nodes_of(&cluster, &samples);
    let recovery = all_nodes_challenge(&p, &nodes, Duration::from_secs(15)).await;

    let [(down_faults, down), (up_faults, up)] =
        split(&samples, &nodes, victim, (stopped, stopping + OUTAGE));
    let after: Vec<&Sample> = samples.iter().filter(|s| s.asked >= resumed).collect();
    let faults = samples.iter().filter(|s| s.fault).count();
    eprintln!(
        "SIGSTOP of node {victim} for {OUTAGE:?}: {faults}/{} sensitive checks 503 in all; while \
         stopped: its transactions {down_faults}/{down} 503, the survivors' {up_faults}/{up} \
         503; after SIGCONT {}/{} 503, every node challenging {recovery:?} after it",
        samples.len(),
        after.iter().filter(|s| s.fault).count(),
        after.len(),
    );
    assert!(down > 0, "no checks on the stopped node's transactions");
    assert_eq!(
        down_faults, down,
        "nothing stored on a silent node is challenged or allowed: every check is a 503"
    );
    // One silent node does not take the others down: the store never replaces the whole
    // cluster connection (the client times out each node's requests on its own), so the
    // survivors' transactions keep being challenged (those whose challenge index lands on the
    // stopped node's slots still fail: about a third).
    assert!(up > 0, "no checks on the survivors' transactions");
    assert!(
        up_faults * 10 < up * 7,
        "transactions on the surviving nodes are still challenged: {up_faults}/{up} 503"
    );
}
