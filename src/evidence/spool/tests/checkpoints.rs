//! Checkpoints in the spool: one signed checkpoint closing every batch, and what a crash leaves
//! after the last one (cut at the next start, never signed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

#[tokio::test]
async fn a_torn_tail_is_cut_and_the_chain_continues() {
    let tmp = TempDir::new("torn");
    let pkcs8 = SigningKey::generate_pkcs8().unwrap();
    let public = SigningKey::from_pkcs8(&pkcs8).unwrap().public_key();
    let spool = open_with(settings(tmp.path()), &pkcs8);
    for i in 0..5 {
        append(&spool, &format!("d-{i}")).await.unwrap();
    }
    let chain = spool.stats().chain;
    drop(spool);
    // Wait for the shutdown checkpoint, then tear a record in half after it (a crash mid-write).
    let segment = chain_dirs(tmp.path())[0].join(files::segment_name(1));
    let deadline = Instant::now() + Duration::from_secs(5);
    // The whole checkpoint line, not a prefix of it still being written.
    let written = |text: String| text.contains("\"shutdown\"") && text.ends_with('\n');
    while !written(std::fs::read_to_string(&segment).unwrap()) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    // …and for the writer to let go of the chain (its lock is released just after).
    let lock = chain_dirs(tmp.path())[0].join("LOCK");
    while std::fs::OpenOptions::new()
        .write(true)
        .open(&lock)
        .unwrap()
        .try_lock()
        .is_err()
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let intact = std::fs::read(&segment).unwrap();
    // What a crash in the middle of a batch's write leaves: its first records complete (sealed
    // after the head, as the writer seals them), then half a line, without the checkpoint.
    let uncovered = uncovered_records(&intact, &chain, &["lost-1", "lost-2"]);
    let torn = &intact[..intact.len() / 3];
    let half_line = &torn[torn.iter().rposition(|&b| b == b'\n').unwrap() + 1..];
    let mut bytes = intact.clone();
    bytes.extend_from_slice(&uncovered);
    std::fs::write(&segment, &bytes).unwrap();
    let report = audit::verify(&[tmp.path().to_path_buf()], std::slice::from_ref(&public)).unwrap();
    let head = report.chains[0].last_seq.unwrap();
    assert_eq!(
        report.chains[0].unsigned_tail,
        Some((head - 1, head)),
        "{report}"
    );
    assert!(report.to_string().contains("UNSIGNED TAIL"), "{report}");
    bytes.extend_from_slice(half_line);
    bytes.extend_from_slice(&[0u8; 100]); // and zeroes, as a grown file can hold
    std::fs::write(&segment, &bytes).unwrap();
    assert_eq!(
        audit::verify(&[tmp.path().to_path_buf()], std::slice::from_ref(&public))
            .unwrap()
            .first_problem()
            .map(|p| p.kind),
        Some(ProblemKind::Truncated)
    );

    let spool = open_with(settings(tmp.path()), &pkcs8);
    assert_eq!(spool.stats().chain, chain, "the same chain is continued");
    let seq = append(&spool, "after").await.unwrap();
    assert_eq!(std::fs::read(&segment).unwrap()[..intact.len()], intact[..]);
    let records = lines(tmp.path());
    let startup = records
        .iter()
        .find(|r| r["checkpoint"]["reason"] == "startup")
        .unwrap();
    assert_eq!(
        startup["checkpoint"]["torn_bytes"],
        (uncovered.len() + half_line.len() + 100) as u64,
        "the records without their checkpoint are cut with the torn line"
    );
    assert!(
        records.iter().all(|r| r["decision_id"] != "lost-1"),
        "never signed into the chain"
    );
    let after = records
        .iter()
        .find(|r| r["decision_id"] == "after")
        .unwrap();
    assert_eq!(after["seq"], seq);
    assert_eq!(records.last().unwrap()["checkpoint"]["covers"]["from"], seq);
    let kept = std::fs::read_dir(segment.parent().unwrap())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains(".torn-"));
    assert!(kept, "the torn bytes are kept beside the segment");
    verify_ok(tmp.path(), &public);
}

/// Records sealed after the last line of `segment` (unsigned, as the writer seals them), as
/// the lines a batch's write left before a crash cut it short.
fn uncovered_records(segment: &[u8], chain: &str, ids: &[&str]) -> Vec<u8> {
    let text = std::str::from_utf8(segment).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let mut head = crate::evidence::chain::Head {
        seq: last["seq"].as_u64().unwrap(),
        hash: last["hash"].as_str().unwrap().to_string(),
    };
    let sealer = crate::evidence::chain::Sealer::new(chain.to_string(), key());
    let mut bytes = Vec::new();
    for id in ids {
        let (line, next) = sealer.seal(body(&Recorder::default(), id), &head);
        bytes.extend_from_slice(&line);
        head = next;
    }
    bytes
}

#[tokio::test]
async fn every_batch_ends_with_a_signed_checkpoint_covering_it_and_shutdown_adds_one() {
    let tmp = TempDir::new("checkpoints");
    let (spool, public) = open(settings(tmp.path()));
    for i in 0..4 {
        append(&spool, &format!("d-{i}")).await.unwrap();
    }
    spool.close().await;
    assert!(append(&spool, "late").await.is_err(), "closed");
    let records = lines(tmp.path());
    let reasons: Vec<&str> = records
        .iter()
        .filter_map(|r| r["checkpoint"]["reason"].as_str())
        .collect();
    assert_eq!(
        reasons,
        ["genesis", "batch", "batch", "batch", "batch", "shutdown"]
    );
    for (i, r) in records.iter().enumerate() {
        let signed = r.get("sig").is_some() && r.get("key_id") == Some(&public.id().into());
        match r["kind"].as_str().unwrap() {
            "checkpoint" => assert!(signed, "{r}"),
            _ => {
                assert!(r.get("sig").is_none() && r.get("key_id").is_none(), "{r}");
                assert_eq!(r["v"], 2);
                // One record per batch here: the next line is its checkpoint, covering it.
                let seq = r["seq"].as_u64().unwrap();
                let cp = &records[i + 1]["checkpoint"];
                assert_eq!(
                    cp["covers"],
                    serde_json::json!({"from": seq, "to": seq, "count": 1})
                );
                assert_eq!(cp["head"]["hash"], r["hash"]);
            }
        }
    }
    let report = verify_ok(tmp.path(), &public);
    assert_eq!(report.chains[0].checkpoints, 6);
    assert_eq!(report.chains[0].unsigned_tail, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_of_many_records_is_covered_by_one_checkpoint() {
    let tmp = TempDir::new("batch-checkpoint");
    let mut s = settings(tmp.path());
    s.max_batch = 64;
    let (spool, public) = open(s);
    let spool = Arc::new(spool);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..400 {
        let spool = spool.clone();
        tasks.spawn(async move { append(&spool, &format!("d-{i}")).await.unwrap() });
    }
    while let Some(seq) = tasks.join_next().await {
        seq.unwrap();
    }
    let stats = spool.stats();
    let records = lines(tmp.path());
    let covers: Vec<u64> = records
        .iter()
        .filter(|r| r["checkpoint"]["reason"] == "batch")
        .map(|r| r["checkpoint"]["covers"]["count"].as_u64().unwrap())
        .collect();
    assert_eq!(covers.iter().sum::<u64>(), 400);
    assert!(covers.iter().all(|&n| n <= 64), "{covers:?}");
    assert!(
        covers.iter().any(|&n| n > 1),
        "some batch of several: {covers:?}"
    );
    // One signature per fsync (the genesis checkpoint's write, then one per batch).
    assert_eq!(stats.checkpoints, stats.fsyncs, "{stats:?}");
    let report = verify_ok(tmp.path(), &public);
    assert_eq!(report.chains[0].decisions, 400);
}

#[tokio::test]
async fn a_new_segment_holding_only_records_without_their_checkpoint_is_emptied_at_start() {
    let tmp = TempDir::new("uncovered-segment");
    let pkcs8 = SigningKey::generate_pkcs8().unwrap();
    let public = SigningKey::from_pkcs8(&pkcs8).unwrap().public_key();
    let spool = open_with(settings(tmp.path()), &pkcs8);
    append(&spool, "d-0").await.unwrap();
    let chain = spool.stats().chain;
    spool.close().await;
    let dir = chain_dirs(tmp.path())[0].clone();
    let closed = std::fs::read(files::segments(&dir).pop().unwrap()).unwrap();
    let head = lines(tmp.path()).last().unwrap()["seq"].as_u64().unwrap();
    // A crash just after rotating, while the first batch of the new segment was being written.
    let uncovered = uncovered_records(&closed, &chain, &["lost-1", "lost-2"]);
    let segment = dir.join(files::segment_name(head + 1));
    std::fs::write(&segment, &uncovered).unwrap();
    let report = audit::verify(&[tmp.path().to_path_buf()], std::slice::from_ref(&public)).unwrap();
    assert!(report.ok(), "{report}");
    assert_eq!(report.chains[0].unsigned_tail, Some((head + 1, head + 2)));

    let spool = open_with(settings(tmp.path()), &pkcs8);
    assert_eq!(spool.stats().chain, chain, "the same chain is continued");
    append(&spool, "after").await.unwrap();
    spool.close().await;
    let records = lines(tmp.path());
    assert!(records.iter().all(|r| r["decision_id"] != "lost-1"));
    let startup = records
        .iter()
        .find(|r| r["checkpoint"]["reason"] == "startup")
        .unwrap();
    assert_eq!(
        startup["seq"],
        head + 1,
        "written where the cut records were"
    );
    assert_eq!(startup["checkpoint"]["torn_bytes"], uncovered.len() as u64);
    let report = verify_ok(tmp.path(), &public);
    assert_eq!(report.chains[0].unsigned_tail, None);
}
