//! Evidence spool benchmarks (criterion): `cargo bench --features testkit --bench evidence`.
//!
//! The cost of one durable record through `SpoolEvidence::append` (sealing, the writer thread's
//! `write` and `fdatasync`, waking the caller), with a decision record as the pipeline makes it:
//!
//! - `evidence_cpu/append_1`: one caller at a time, so every record is its own batch — the
//!   worst case for a signature per batch (one checkpoint per record);
//! - `evidence_cpu/append_64`: 64 callers at once, so batches form while an fsync runs.
//!
//! Measured in CPU time of the whole process (every thread, `/proc/self/task/*/schedstat`), per
//! record; `evidence_wall/*` is the same in wall time. The spool is in the system's temporary
//! directory, so the disk under it decides the wall time.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark: a broken fixture should stop it

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::measurement::Measurement;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use serde_json::json;
use stepguard::decision::{Decision, Verdict};
use stepguard::evidence::{
    EvidenceContext, Origin, Recorder, SigningKey, SpoolEvidence, SpoolSettings,
};
use stepguard::identity::Subject;
use stepguard::txn::Transaction;

#[path = "decision/cpu.rs"]
mod cpu;
use cpu::{ProcessCpu, process_cpu_ns};

/// A decision record as the pipeline makes it for an approved transfer.
fn record(recorder: &Recorder) -> serde_json::Map<String, serde_json::Value> {
    let subject = Subject::from_claims(
        json!({"iss": "https://idp.stepguard.local", "sub": "alice", "acr": "aal2",
               "amr": ["pwd", "otp"], "auth_time": 1_795_830_003u64}),
        10,
        None,
    );
    let mut decision = Decision::new(
        "Y2eZftPM6PkmkX6I".into(),
        Verdict::Allow,
        "grant_for_transaction",
    );
    decision.subject = Some("https://idp.stepguard.local|alice".into());
    let txn = Transaction {
        digest: "dev1:eabidp0WuqX-Vdyo-z_nS0qGdGw_JV5YwKN_cLqb-jU".into(),
        key_id: "dev1".into(),
        previous_digests: Vec::new(),
        bound: BTreeMap::from([
            ("body.amount".to_string(), Some("n:100".to_string())),
            ("body.currency".to_string(), Some("s:EUR".to_string())),
            ("body.payee".to_string(), Some("s:bob".to_string())),
            ("path.account".to_string(), Some("s:A1".to_string())),
        ]),
        value: None,
        currency: None,
    };
    let origin = Origin {
        source_address: Some("10.0.0.7".into()),
        method: "POST".into(),
        host: "api.example.com".into(),
        trace: None,
    };
    let ctx = EvidenceContext {
        decision: &decision,
        txn: Some(&txn),
        subject: Some(&subject),
        origin: &origin,
    };
    recorder.decision(&ctx, SystemTime::now())
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    spool: Arc<SpoolEvidence>,
    body: serde_json::Map<String, serde_json::Value>,
    dir: PathBuf,
}

fn fixture() -> Fixture {
    let dir = std::env::temp_dir().join(format!("stepguard-bench-evidence-{}", std::process::id()));
    let key = SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().unwrap()).unwrap();
    let recorder = Recorder::default();
    let body = record(&recorder);
    let spool = SpoolEvidence::open(SpoolSettings::new(dir.clone()), key, recorder, false);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    Fixture {
        rt,
        spool: Arc::new(spool),
        body,
        dir,
    }
}

/// Appends `iters` records, `concurrent` at a time.
fn appends(f: &Fixture, iters: u64, concurrent: u64) {
    f.rt.block_on(async {
        let mut left = iters;
        while left > 0 {
            let n = left.min(concurrent);
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..n {
                let (spool, body) = (f.spool.clone(), f.body.clone());
                tasks.spawn(async move { black_box(spool.append(body).await.is_ok()) });
            }
            while tasks.join_next().await.is_some() {}
            left -= n;
        }
    })
}

fn configure<M: Measurement>(g: &mut BenchmarkGroup<'_, M>) {
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(15)
        .throughput(Throughput::Elements(1));
}

fn main() {
    let f = fixture();
    if process_cpu_ns() > 0 {
        let mut cpu = Criterion::default()
            .with_measurement(ProcessCpu)
            .configure_from_args();
        let mut g = cpu.benchmark_group("evidence_cpu");
        configure(&mut g);
        for concurrent in [1u64, 64] {
            g.bench_function(format!("append_{concurrent}"), |b| {
                b.iter_custom(|iters| {
                    let start = process_cpu_ns();
                    appends(&f, iters, concurrent);
                    process_cpu_ns().saturating_sub(start)
                })
            });
        }
        g.finish();
        cpu.final_summary();
    }
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("evidence_wall");
    configure(&mut g);
    for concurrent in [1u64, 64] {
        g.bench_function(format!("append_{concurrent}"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                appends(&f, iters, concurrent);
                start.elapsed()
            })
        });
    }
    g.finish();
    c.final_summary();
    let stats = f.spool.stats();
    eprintln!(
        "spool: {} records, {} fsyncs ({:.1} records per fsync), {} bytes",
        stats.records,
        stats.fsyncs,
        stats.records as f64 / stats.fsyncs.max(1) as f64,
        stats.bytes
    );
    drop(f.spool);
    let _ = std::fs::remove_dir_all(&f.dir);
}
