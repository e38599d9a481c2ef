#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;
use crate::evidence::audit::{self, ProblemKind};
use crate::evidence::tests::{body, key};
use crate::evidence::{PublicKey, Recorder};

/// A directory removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(label: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "stepguard-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // A spool dropped just before may still be writing its shutdown checkpoint.
        for _ in 0..50 {
            if std::fs::remove_dir_all(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn settings(dir: &Path) -> SpoolSettings {
    let mut s = SpoolSettings::new(dir.to_path_buf());
    s.retry = Duration::from_millis(20);
    s
}

/// A spool and the public key of its signing key.
fn open(settings: SpoolSettings) -> (SpoolEvidence, PublicKey) {
    let key = key();
    let public = key.public_key();
    (
        SpoolEvidence::open(settings, key, Recorder::default(), false),
        public,
    )
}

fn open_with(settings: SpoolSettings, pkcs8: &[u8]) -> SpoolEvidence {
    let key = SigningKey::from_pkcs8(pkcs8).unwrap();
    SpoolEvidence::open(settings, key, Recorder::default(), false)
}

async fn append(spool: &SpoolEvidence, id: &str) -> Result<u64, EvidenceError> {
    spool.append(body(&Recorder::default(), id)).await
}

fn chain_dirs(dir: &Path) -> Vec<PathBuf> {
    files::chains(dir)
}

fn lines(path: &Path) -> Vec<Value> {
    audit::expand(&[path.to_path_buf()])
        .unwrap()
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect()
}

fn verify_ok(dir: &Path, key: &PublicKey) -> audit::Report {
    let report = audit::verify(&[dir.to_path_buf()], std::slice::from_ref(key)).unwrap();
    assert!(report.ok(), "{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_makes_many_records_durable_with_few_fsyncs() {
    let tmp = TempDir::new("group-commit");
    let (spool, public) = open(settings(tmp.path()));
    let spool = Arc::new(spool);
    let start = spool.stats();
    assert!(start.available, "{start:?}");
    let n = 2000u64;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let spool = spool.clone();
        tasks.spawn(async move {
            let seq = append(&spool, &format!("d-{i}")).await.unwrap();
            // Resolved only once its batch is durable: the durable head is at or past it.
            assert!(spool.stats().head_seq >= seq);
            seq
        });
    }
    let mut seqs = Vec::new();
    while let Some(seq) = tasks.join_next().await {
        seqs.push(seq.unwrap());
    }
    let elapsed = started.elapsed();
    let end = spool.stats();
    let fsyncs = end.fsyncs - start.fsyncs;
    eprintln!(
        "group commit: {n} records in {elapsed:?} ({:.0}/s), {fsyncs} fsyncs ({:.1} records per fsync)",
        n as f64 / elapsed.as_secs_f64(),
        n as f64 / fsyncs as f64
    );
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len() as u64, n, "every record has its own seq");
    assert!(fsyncs * 4 <= n, "{fsyncs} fsyncs for {n} records");
    assert_eq!(end.records - start.records, n);
    assert_eq!(end.queued, 0);
    let ids: std::collections::HashSet<String> = lines(tmp.path())
        .iter()
        .filter_map(|r| r["decision_id"].as_str().map(str::to_string))
        .collect();
    assert!((0..n).all(|i| ids.contains(&format!("d-{i}"))));
    verify_ok(tmp.path(), &public);
}

#[tokio::test]
async fn a_future_resolves_after_its_record_is_on_disk() {
    let tmp = TempDir::new("durable");
    let (spool, _) = open(settings(tmp.path()));
    for i in 0..20 {
        let id = format!("d-{i}");
        let seq = append(&spool, &id).await.unwrap();
        let on_disk = lines(tmp.path());
        let record = on_disk.iter().find(|r| r["decision_id"] == id.as_str());
        assert_eq!(record.map(|r| r["seq"].as_u64()), Some(Some(seq)), "{id}");
        // …and so is the checkpoint that signs it.
        let covered = on_disk.iter().any(|r| {
            let covers = &r["checkpoint"]["covers"];
            r.get("sig").is_some()
                && covers["from"].as_u64() <= Some(seq)
                && covers["to"].as_u64() >= Some(seq)
        });
        assert!(
            covered,
            "{id} (seq {seq}) acknowledged before its checkpoint"
        );
    }
}

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
async fn a_tail_that_does_not_verify_is_left_alone() {
    let tmp = TempDir::new("tampered-tail");
    let pkcs8 = SigningKey::generate_pkcs8().unwrap();
    let spool = open_with(settings(tmp.path()), &pkcs8);
    append(&spool, "d-1").await.unwrap();
    let first = spool.stats().chain;
    spool.close().await;
    let segment = chain_dirs(tmp.path())[0].join(files::segment_name(1));
    let text = std::fs::read_to_string(&segment).unwrap();
    let tampered = text.replace("\"shutdown\"", "\"shutdowm\"");
    assert_ne!(text, tampered);
    std::fs::write(&segment, &tampered).unwrap();
    let spool = open_with(settings(tmp.path()), &pkcs8);
    assert_ne!(spool.stats().chain, first, "a new chain is started");
    append(&spool, "d-2").await.unwrap();
    assert_eq!(std::fs::read_to_string(&segment).unwrap(), tampered);
}

#[tokio::test]
async fn two_writers_on_one_directory_write_two_chains() {
    let tmp = TempDir::new("two-writers");
    let pkcs8 = SigningKey::generate_pkcs8().unwrap();
    let public = SigningKey::from_pkcs8(&pkcs8).unwrap().public_key();
    let a = open_with(settings(tmp.path()), &pkcs8);
    let b = open_with(settings(tmp.path()), &pkcs8);
    assert_ne!(a.stats().chain, b.stats().chain);
    for i in 0..10 {
        append(&a, &format!("a-{i}")).await.unwrap();
        append(&b, &format!("b-{i}")).await.unwrap();
    }
    let chain_b = b.stats().chain;
    b.close().await;
    let report = verify_ok(tmp.path(), &public);
    assert_eq!(report.chains.len(), 2);
    // The next writer takes over the free chain.
    let c = open_with(settings(tmp.path()), &pkcs8);
    assert_eq!(c.stats().chain, chain_b);
}

#[tokio::test]
async fn segments_rotate_and_the_chain_runs_across_them() {
    let tmp = TempDir::new("rotate");
    let mut s = settings(tmp.path());
    s.segment_bytes = 4096;
    let (spool, public) = open(s);
    for i in 0..30 {
        append(&spool, &format!("d-{i}")).await.unwrap();
    }
    spool.close().await;
    let segments = files::segments(&chain_dirs(tmp.path())[0]);
    assert!(segments.len() > 5, "{segments:?}");
    for segment in &segments {
        assert!(std::fs::metadata(segment).unwrap().len() <= 4096);
        let first: Value = serde_json::from_str(
            std::fs::read_to_string(segment)
                .unwrap()
                .lines()
                .next()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            Some(first["seq"].as_u64().unwrap()),
            files::segment_seq(segment)
        );
    }
    let report = verify_ok(tmp.path(), &public);
    assert_eq!(report.chains[0].decisions, 30);
    assert_eq!(
        report.chains[0].last_checkpoint.as_ref().unwrap().1,
        "shutdown"
    );
}

#[tokio::test]
async fn a_full_spool_refuses_records() {
    let tmp = TempDir::new("full");
    let mut s = settings(tmp.path());
    s.segment_bytes = 4096;
    s.max_bytes = 12 * 1024;
    let (spool, public) = open(s);
    let mut refused = None;
    for i in 0..100 {
        if let Err(e) = append(&spool, &format!("d-{i}")).await {
            refused = Some((i, e.to_string()));
            break;
        }
    }
    let (at, error) = refused.expect("the cap is reached");
    assert!(error.contains("full"), "{error}");
    assert!(at > 3, "{at}");
    assert!(!spool.stats().available);
    assert!(files::spool_bytes(tmp.path()) <= 12 * 1024);
    verify_ok(tmp.path(), &public);
    spool.close().await;
}

#[tokio::test]
async fn delete_oldest_keeps_writing_and_says_what_it_deleted() {
    let tmp = TempDir::new("delete-oldest");
    let mut s = settings(tmp.path());
    s.segment_bytes = 4096;
    s.max_bytes = 12 * 1024;
    s.when_full = WhenFull::DeleteOldest;
    let (spool, public) = open(s);
    for i in 0..100 {
        append(&spool, &format!("d-{i}")).await.unwrap();
    }
    assert!(files::spool_bytes(tmp.path()) <= 12 * 1024);
    let records = lines(tmp.path());
    assert!(
        records
            .iter()
            .any(|r| r["checkpoint"]["reason"] == "pruned")
    );
    let report = verify_ok(tmp.path(), &public);
    assert!(
        report.chains[0].notes[0].contains("starts at seq"),
        "{report}"
    );
    spool.close().await;
}

#[tokio::test]
async fn delete_oldest_never_deletes_what_is_not_shipped() {
    let tmp = TempDir::new("delete-oldest-shipped");
    let shipped = Shipped::default();
    let mut s = settings(tmp.path());
    s.segment_bytes = 4096;
    s.max_bytes = 12 * 1024;
    s.when_full = WhenFull::DeleteOldest;
    s.shipped = Some(shipped.clone());
    let (spool, public) = open(s);
    let chain = spool.stats().chain;
    // Nothing shipped (a shipping outage): at the cap records are refused, nothing deleted.
    let mut refused = None;
    for i in 0..100 {
        if let Err(e) = append(&spool, &format!("d-{i}")).await {
            refused = Some(e.to_string());
            break;
        }
    }
    let refused = refused.expect("the cap is reached");
    assert!(refused.contains("not shipped"), "{refused}");
    assert!(!spool.stats().available);
    let first = tmp.path().join(&chain).join(files::segment_name(1));
    assert!(first.exists(), "the oldest, unshipped segment is kept");
    let head = spool.stats().head_seq;

    // Shipped up to the second segment's end only: room is made from that, and no further.
    let segments = files::segments(&tmp.path().join(&chain));
    let upto = files::segment_seq(&segments[2]).unwrap() - 1;
    shipped.mark(&chain, upto);
    append(&spool, "after").await.unwrap();
    let records = lines(tmp.path());
    let first_kept = records[0]["seq"].as_u64().unwrap();
    assert!(first_kept > 1, "a shipped segment was deleted");
    assert!(first_kept <= upto + 1, "nothing unshipped was deleted");
    assert!(
        records
            .iter()
            .any(|r| r["checkpoint"]["reason"] == "pruned")
    );
    assert!(
        records
            .iter()
            .all(|r| r["seq"].as_u64().unwrap() <= head + 3)
    );
    verify_ok(tmp.path(), &public);
    spool.close().await;
}

#[tokio::test]
async fn a_broken_spool_is_not_writable_and_reopens_by_itself() {
    let tmp = TempDir::new("broken-reopens");
    let dir = tmp.path().join("spool");
    std::fs::write(&dir, b"a file where the directory should be").unwrap();
    let (spool, public) = open(settings(&dir));
    assert!(!Evidence::writable(&spool), "grants are not spent on it");
    std::fs::remove_file(&dir).unwrap();
    // No record arrives: the writer reopens it on its own (every `retry`, 20 ms here).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !Evidence::writable(&spool) {
        assert!(Instant::now() < deadline, "the spool was not reopened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(spool.stats().available);
    verify_ok(&dir, &public);
    spool.close().await;
}

#[tokio::test]
async fn an_unwritable_spool_fails_records_until_it_can_be_written() {
    let tmp = TempDir::new("unwritable");
    let dir = tmp.path().join("spool");
    std::fs::write(&dir, b"a file where the directory should be").unwrap();
    let (spool, public) = open(settings(&dir));
    assert!(!spool.stats().available);
    let error = append(&spool, "d-1").await.unwrap_err().to_string();
    assert!(error.contains("unavailable"), "{error}");
    assert_eq!(spool.stats().failed, 1);
    std::fs::remove_file(&dir).unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    append(&spool, "d-2").await.unwrap();
    assert!(spool.stats().available);
    verify_ok(&dir, &public);
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
