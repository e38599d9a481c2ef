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
        // A batch never spans segments: each ends with its checkpoint.
        let text = std::fs::read_to_string(segment).unwrap();
        let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last["kind"], "checkpoint", "{}", segment.display());
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

mod checkpoints;
