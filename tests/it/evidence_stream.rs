//! Shipping the spool to a Redis Stream, against a real `redis-server` (append-only file on, so a
//! restart keeps what it had): every record of the chain appears in the chain's stream, in order,
//! with the id `<seq>-0`, exactly once and byte for byte as in the spool; while Redis is killed
//! decisions are still answered and recorded (the spool is the durability point) and the backlog
//! ships once it is back; a new process on the same spool resumes without duplicates; what the
//! stream holds — records and the checkpoints signing them — verifies like the spool.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::envoy::{TempDir, manifest_dir};
use crate::support::load::{transfer, unlimited};
use crate::support::redis::RedisServer;
use crate::support::sidecar::with_redis;
use crate::support::tokens::token;
use stepguard::decision::Verdict;
use stepguard::evidence::{PublicKey, audit};
use stepguard::pipeline::Pipeline;

const KEY: &str = "test:evidence";

/// The quickstart on `redis_url` with a spool in `spool`, shipped to `KEY`.
fn edit(redis_url: &str, spool: &Path) -> impl Fn(String) -> String {
    let store = with_redis(redis_url, 50);
    let spool = spool.display().to_string();
    move |text: String| {
        let text = store(text);
        let start = text.find("\nevidence:\n").unwrap();
        format!(
            "{}evidence:\n  spool:\n    dir: {spool}\n  signing_key_file: evidence-signing-key.DEV-ONLY.pem\n  \
             stream:\n    key: {KEY}\n    poll_ms: 20\n    batch: 7\n",
            &text[..start + 1]
        )
    }
}

/// The spool's records by seq (its one chain), as stored.
fn spool_lines(spool: &Path) -> (String, BTreeMap<u64, String>) {
    let chains: Vec<_> = std::fs::read_dir(spool)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(chains.len(), 1, "one chain: {chains:?}");
    let chain = chains[0].file_name().unwrap().to_str().unwrap().to_string();
    let mut files: Vec<_> = std::fs::read_dir(&chains[0])
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let mut lines = BTreeMap::new();
    for file in files {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            let seq = record["seq"].as_u64().unwrap();
            assert!(lines.insert(seq, line.to_string()).is_none());
        }
    }
    (chain, lines)
}

/// The stream's entries: (id, kind, record).
fn stream(redis: &RedisServer, chain: &str) -> Vec<(String, String, String)> {
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(format!("{KEY}:{chain}"))
        .arg("-")
        .arg("+")
        .query(&mut redis.client())
        .unwrap();
    entries
        .into_iter()
        .map(|(id, fields)| {
            assert_eq!(fields.len(), 4, "{fields:?}");
            assert_eq!((fields[0].as_str(), fields[2].as_str()), ("kind", "record"));
            (id, fields[1].clone(), fields[3].clone())
        })
        .collect()
}

/// Waits until the stream holds every record of the spool, then checks it is exactly the
/// spool: ids `1-0`, `2-0`, … each once, the stored line as the record.
fn shipped_exactly(redis: &RedisServer, spool: &Path) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (chain, lines) = spool_lines(spool);
        let entries = stream(redis, &chain);
        if entries.len() >= lines.len() || Instant::now() > deadline {
            assert_eq!(entries.len(), lines.len(), "every record shipped, once");
            for ((id, kind, record), (seq, line)) in entries.iter().zip(&lines) {
                assert_eq!(id, &format!("{seq}-0"));
                assert_eq!(record, line, "record {seq} as stored");
                let stored: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(kind, stored["kind"].as_str().unwrap());
            }
            let chains: Vec<String> = redis::cmd("SMEMBERS")
                .arg(format!("{KEY}:chains"))
                .query(&mut redis.client())
                .unwrap();
            assert_eq!(chains, [chain]);
            return entries.len();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `n` transfers (each its own transaction): each is challenged (or, with the store down,
/// answered 503) within the decision budget, and recorded.
async fn decide(p: &Arc<Pipeline>, n: u64, from: u64) {
    for amount in from..from + n {
        let started = Instant::now();
        let d = p
            .decide(transfer(&token("alice", "aal1", 60), amount))
            .await;
        assert!(
            matches!(d.verdict, Verdict::Challenge { .. } | Verdict::Fault),
            "{d:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{d:?}");
    }
}

fn head(p: &Pipeline) -> u64 {
    p.evidence.spool().unwrap().head_seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_ship_once_in_order_through_a_redis_outage_and_a_restart() {
    // It reads the process-wide metrics recorder, which other tests of this binary also move.
    if !crate::support::isolated::in_own_process(
        "evidence_stream::records_ship_once_in_order_through_a_redis_outage_and_a_restart",
    ) {
        return;
    }
    stepguard::telemetry::metrics::install();
    let mut redis = RedisServer::start_with(&[
        "--appendonly".into(),
        "yes".into(),
        "--appendfsync".into(),
        "always".into(),
    ]);
    let dir = TempDir::new("evidence-stream");
    let spool = dir.path().join("spool");
    let p = unlimited(edit(&redis.url(), &spool)).await;
    decide(&p, 30, 1000).await;
    let first = shipped_exactly(&redis, &spool);
    assert!(first > 30, "30 decisions and the start checkpoint: {first}");

    // Redis dies: decisions go on (answered 503 by the grant store, and recorded).
    redis.kill9();
    let before = head(&p);
    decide(&p, 25, 2000).await;
    assert_eq!(
        head(&p),
        before + 25 * 2,
        "every decision recorded while Redis is down (one at a time: each with its checkpoint)"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Back with what it had: the backlog ships, nothing twice.
    redis.restart();
    decide(&p, 5, 3000).await;
    let second = shipped_exactly(&redis, &spool);
    assert_eq!(second as u64, head(&p));
    assert!(second > first + 29);

    // A new process on the same spool: same chain, resumes from the stream's last id.
    p.evidence.close().await;
    drop(p);
    let p = unlimited(edit(&redis.url(), &spool)).await;
    decide(&p, 10, 4000).await;
    let third = shipped_exactly(&redis, &spool);
    assert_eq!(third as u64, head(&p));
    assert!(third > second + 10, "shutdown and startup checkpoints too");
    p.evidence.close().await;
    shipped_exactly(&redis, &spool);

    let key =
        PublicKey::load(&manifest_dir().join("deploy/local/evidence-signing-key.DEV-ONLY.pub"))
            .unwrap();
    let report = audit::verify(std::slice::from_ref(&spool), std::slice::from_ref(&key)).unwrap();
    assert!(report.ok(), "{:?}", report.first_problem());

    // What a consumer of the stream reads verifies the same way: the records and the signed
    // checkpoints covering them, in order, written out as one segment.
    let (chain, _) = spool_lines(&spool);
    let copy = dir.path().join("from-stream").join(&chain);
    std::fs::create_dir_all(&copy).unwrap();
    let shipped: String = stream(&redis, &chain)
        .into_iter()
        .map(|(_, _, record)| record + "\n")
        .collect();
    std::fs::write(copy.join("00000000000000000001.jsonl"), shipped).unwrap();
    let from_stream = audit::verify(&[copy], &[key]).unwrap();
    assert!(from_stream.ok(), "{from_stream}");
    let c = &from_stream.chains[0];
    assert_eq!(
        (c.unsigned_tail, c.last_seq),
        (None, report.chains[0].last_seq)
    );
    assert_eq!(
        (c.decisions, c.checkpoints),
        (report.chains[0].decisions, report.chains[0].checkpoints)
    );

    // What the dashboard shows of it: shipped records, the errors of the outage, the lag.
    let text = stepguard::telemetry::metrics::render().unwrap();
    let sample = |name: &str| {
        text.lines()
            .find(|l| l.split([' ', '{']).next() == Some(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
    };
    assert!(sample("stepguard_evidence_shipped_total") >= third as f64);
    assert!(sample("stepguard_evidence_ship_errors_total") >= 1.0);
    assert_eq!(sample("stepguard_evidence_ship_lag_records"), 0.0);
}
