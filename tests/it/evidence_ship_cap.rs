//! The spool's cap reached during a shipping outage, with `when_full: delete_oldest` and records
//! shipped to a Redis Stream (real `redis-server`, append-only file): the spool never deletes a
//! segment whose records are not in the stream yet. At the cap with the oldest segment unshipped
//! approvals are refused (503 `evidence_unavailable`) while everything else is answered; once
//! shipping is back, the backlog ships, approvals resume, and in the end the stream holds every
//! record the chain ever had (1 to its head), each exactly once and as stored, and the chain
//! verifies.
//!
//! Two outages: the stream refused while the grant store works (its key taken by a value of
//! another type: every `XADD` fails with WRONGTYPE, so approvals are possible and shown refused
//! at the cap), then Redis itself killed (every sensitive decision is a 503 from the store, and
//! still recorded until the cap).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::envoy::{TempDir, manifest_dir};
use crate::support::load::{public, transfer, unlimited};
use crate::support::redis::RedisServer;
use crate::support::sidecar::with_redis;
use crate::support::tokens::token;
use stepguard::decision::Verdict;
use stepguard::evidence::{PublicKey, audit};
use stepguard::pipeline::Pipeline;

const KEY: &str = "test:capped";

fn edit(redis_url: &str, spool: &Path) -> impl Fn(String) -> String {
    let store = with_redis(redis_url, 100);
    let spool = spool.display().to_string();
    move |text: String| {
        let text = store(text);
        let start = text.find("\nevidence:\n").unwrap();
        format!(
            "{}evidence:\n  spool:\n    dir: {spool}\n    segment_bytes: 8192\n    max_bytes: 40960\n    \
             when_full: delete_oldest\n  signing_key_file: evidence-signing-key.DEV-ONLY.pem\n  \
             stream:\n    key: {KEY}\n    poll_ms: 20\n    batch: 5\n",
            &text[..start + 1]
        )
    }
}

/// Every record in the spool by seq (one chain), as stored.
fn spool_lines(spool: &Path) -> BTreeMap<u64, String> {
    let mut lines = BTreeMap::new();
    for file in audit::expand(&[spool.to_path_buf()]).unwrap() {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            lines.insert(record["seq"].as_u64().unwrap(), line.to_string());
        }
    }
    lines
}

fn stream_key(p: &Pipeline) -> String {
    format!("{KEY}:{}", p.evidence.spool().unwrap().chain)
}

/// The stream's entries by seq; every id is `<seq>-0` and appears once.
fn stream(redis: &RedisServer, key: &str) -> BTreeMap<u64, String> {
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query(&mut redis.client())
        .unwrap();
    let mut by_seq = BTreeMap::new();
    for (id, fields) in entries {
        let seq: u64 = id.strip_suffix("-0").unwrap().parse().unwrap();
        assert!(
            by_seq.insert(seq, fields[3].clone()).is_none(),
            "{id} twice"
        );
    }
    by_seq
}

/// Waits until the stream has the chain's every record up to the spool's head.
fn shipped_up_to_head(redis: &RedisServer, p: &Pipeline) -> BTreeMap<u64, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let head = p.evidence.spool().unwrap().head_seq;
        let entries = stream(redis, &stream_key(p));
        if entries.keys().next_back() == Some(&head) {
            return entries;
        }
        assert!(
            Instant::now() < deadline,
            "shipping did not catch up to {head}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A session approval for a new subject: its verdict and reason.
async fn approve(p: &Arc<Pipeline>, n: u64) -> (Verdict, String) {
    let t = token(&format!("cap-{n}"), "aal2", 5);
    let d = p.decide(transfer(&t, 100 + n % 800)).await;
    (d.verdict, d.reason)
}

/// Decides until the spool refuses records (its head stops moving); asserts every record after
/// `shipped` (the last seq in the stream) is still in the spool.
async fn fill_to_cap(p: &Arc<Pipeline>, spool: &Path, from: u64, shipped: u64, approvals: bool) {
    let mut refused = false;
    for n in from..from + 200 {
        let (verdict, reason) = approve(p, n).await;
        assert_eq!(p.decide(public()).await.verdict, Verdict::Allow, "public");
        if !p.evidence.spool().unwrap().available {
            if approvals {
                assert_eq!(
                    (verdict, reason.as_str()),
                    (Verdict::Fault, "evidence_unavailable")
                );
            }
            refused = true;
            break;
        }
        if approvals {
            assert_eq!(verdict, Verdict::Allow, "{reason}");
        }
    }
    assert!(refused, "the cap was reached");
    let head = p.evidence.spool().unwrap().head_seq;
    let kept = spool_lines(spool);
    for seq in shipped + 1..=head {
        assert!(
            kept.contains_key(&seq),
            "record {seq} was deleted before it shipped"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_oldest_never_deletes_unshipped_records_and_refuses_approvals_at_the_cap() {
    let mut redis = RedisServer::start_with_aof("always");
    let dir = TempDir::new("evidence-ship-cap");
    let spool = dir.path().join("spool");
    let p = unlimited(edit(&redis.url(), &spool)).await;
    for n in 0..20 {
        let (verdict, reason) = approve(&p, n).await;
        assert_eq!(verdict, Verdict::Allow, "{reason}");
    }
    let shipped = *shipped_up_to_head(&redis, &p).keys().next_back().unwrap();

    // Outage 1: the stream refused, the grant store working.
    let key = stream_key(&p);
    let mut con = redis.client();
    let () = redis::cmd("RENAME")
        .arg(&key)
        .arg(format!("{key}:aside"))
        .query(&mut con)
        .unwrap();
    let () = redis::cmd("SET")
        .arg(&key)
        .arg("not a stream")
        .query(&mut con)
        .unwrap();
    fill_to_cap(&p, &spool, 100, shipped, true).await;
    // A challenge is still answered while the spool refuses.
    let weak = p.decide(transfer(&token("cap-weak", "aal1", 60), 7)).await;
    assert!(
        matches!(weak.verdict, Verdict::Challenge { .. }),
        "{weak:?}"
    );
    let () = redis::cmd("DEL").arg(&key).query(&mut con).unwrap();
    let () = redis::cmd("RENAME")
        .arg(format!("{key}:aside"))
        .arg(&key)
        .query(&mut con)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 400;
    while approve(&p, n).await.0 != Verdict::Allow {
        assert!(Instant::now() < deadline, "approvals did not resume");
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let shipped = *shipped_up_to_head(&redis, &p).keys().next_back().unwrap();

    // Outage 2: Redis killed; decisions (503s from the store) are recorded up to the cap.
    redis.kill9();
    fill_to_cap(&p, &spool, 500, shipped, false).await;
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 700;
    while approve(&p, n).await.0 != Verdict::Allow {
        assert!(Instant::now() < deadline, "approvals did not resume");
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every record the chain ever had is in the stream once, as stored in the spool.
    p.evidence.close().await;
    let entries = shipped_up_to_head(&redis, &p);
    let head = p.evidence.spool().unwrap().head_seq;
    assert_eq!(
        entries.keys().copied().collect::<Vec<_>>(),
        (1..=head).collect::<Vec<_>>()
    );
    let kept = spool_lines(&spool);
    assert!(
        *kept.keys().next().unwrap() > 1,
        "shipped segments were deleted at the cap"
    );
    for (seq, line) in kept {
        assert_eq!(entries[&seq], line, "record {seq} as stored");
    }
    let key =
        PublicKey::load(&manifest_dir().join("deploy/local/evidence-signing-key.DEV-ONLY.pub"))
            .unwrap();
    let report = audit::verify(&[spool], &[key]).unwrap();
    assert!(report.ok(), "{report}");
}
