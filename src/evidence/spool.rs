//! The spool: a local, append-only directory of hash-chained records (JSON lines), each batch
//! closed by a signed checkpoint, made durable before an approval is answered.
//!
//! - **Group commit.** [`SpoolEvidence::append`] hands the record to one writer thread and waits.
//!   The writer takes every record queued while it was busy (up to `max_batch`), seals them in
//!   order, adds one signed checkpoint covering them, and makes the batch durable with one
//!   `write` and one `fsync` (`File::sync_data`); only then does each caller's future resolve.
//!   Under load the cost of an fsync and of a signature is shared by the whole batch.
//! - **Chains and segments** (`spool/files.rs`). The directory holds chains, one per writing
//!   process at a time (an advisory lock); a restarted process takes over the most recent
//!   unlocked chain, verifies its tail, cuts a torn last line and continues it. A chain is split
//!   into segment files of at most `segment_bytes`, named by their first `seq`.
//! - **Checkpoints** (`spool/writer.rs`): signed records of the chain head closing every batch
//!   (the only signatures), at start and at shutdown. Opening a chain cuts records a crash left
//!   after its last checkpoint (a batch whose write was cut short, never acknowledged).
//! - **Cap.** Past `max_bytes` the spool refuses records (`when_full: refuse`) or deletes the
//!   oldest closed segments (`delete_oldest`, noted in a checkpoint). With shipping
//!   (`evidence.stream`) only segments whose every record is in the stream ([`Shipped`]) are
//!   deleted: at the cap with the oldest segment unshipped (a shipping outage), records are
//!   refused — approvals become 503 — until shipping catches up; unshipped evidence is never
//!   deleted.
//! - **Failure.** A spool that cannot be opened or written (a `write` or `fdatasync` error) fails
//!   the records (approvals become 503): the failed batch is cut off the segment, never counted
//!   as durable, and the chain continues after the last durable record once the spool is
//!   reopened — by the writer itself, at most once per second, whether records arrive or not.
//!   While it is broken the pipeline spends no grant ([`Evidence::writable`]).

pub(super) mod files;
mod writer;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::config::SpoolConfig;
use super::{Evidence, EvidenceContext, EvidenceError, Lifecycle, Recorder, SigningKey};

pub use super::config::WhenFull;

/// How the spool behaves.
#[derive(Debug, Clone)]
pub struct SpoolSettings {
    pub dir: PathBuf,
    pub segment_bytes: u64,
    pub max_bytes: u64,
    pub when_full: WhenFull,
    /// Most records made durable by one fsync.
    pub max_batch: usize,
    /// Most records waiting for the writer; past it records fail at once.
    pub queue: usize,
    /// An unavailable spool is reopened at most this often.
    pub retry: Duration,
    /// With shipping: how far each chain has shipped; `delete_oldest` deletes nothing after it.
    pub shipped: Option<Shipped>,
}

/// The last `seq` of each chain known to be in its stream, written by the shipper and read by
/// the spool's writer before it deletes a segment. A chain not in it has shipped nothing.
#[derive(Debug, Clone, Default)]
pub struct Shipped(Arc<Mutex<HashMap<String, u64>>>);

impl Shipped {
    /// Records that `chain` is shipped up to `seq`.
    pub fn mark(&self, chain: &str, seq: u64) {
        if let Ok(mut marks) = self.0.lock() {
            marks.insert(chain.to_string(), seq);
        }
    }

    /// The last `seq` of `chain` known to be shipped (0: none).
    pub fn upto(&self, chain: &str) -> u64 {
        self.0
            .lock()
            .ok()
            .and_then(|marks| marks.get(chain).copied())
            .unwrap_or(0)
    }
}

impl SpoolSettings {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            segment_bytes: 64 << 20,
            max_bytes: 1 << 30,
            when_full: WhenFull::Refuse,
            max_batch: 512,
            queue: 8192,
            retry: Duration::from_secs(1),
            shipped: None,
        }
    }

    pub fn from_config(spool: &SpoolConfig) -> Self {
        Self {
            dir: spool.dir.clone(),
            segment_bytes: spool.segment_bytes,
            max_bytes: spool.max_bytes,
            when_full: spool.when_full,
            max_batch: spool.max_batch,
            queue: spool.queue,
            retry: Duration::from_secs(1),
            shipped: None,
        }
    }
}

/// A snapshot of the spool, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Whether the spool is open and the last write succeeded.
    pub available: bool,
    /// Records waiting for the writer (the depth).
    pub queued: u64,
    /// Bytes of every segment in the spool directory.
    pub bytes: u64,
    /// The chain being written.
    pub chain: String,
    /// `seq` of the last durable record.
    pub head_seq: u64,
    /// Decision records made durable since start.
    pub records: u64,
    pub checkpoints: u64,
    /// Batches written (one fsync each).
    pub fsyncs: u64,
    /// Records that failed (spool unavailable or full, queue full).
    pub failed: u64,
}

#[derive(Default)]
struct Stats {
    available: AtomicBool,
    /// A write, sync or open failed and the spool has not been reopened since.
    broken: AtomicBool,
    queued: AtomicU64,
    bytes: AtomicU64,
    chain: Mutex<String>,
    head_seq: AtomicU64,
    records: AtomicU64,
    checkpoints: AtomicU64,
    fsyncs: AtomicU64,
    failed: AtomicU64,
}

impl Stats {
    fn snapshot(&self) -> SpoolStats {
        let get = |a: &AtomicU64| a.load(Ordering::Acquire);
        SpoolStats {
            available: self.available.load(Ordering::Acquire),
            queued: get(&self.queued),
            bytes: get(&self.bytes),
            chain: self.chain.lock().map(|c| c.clone()).unwrap_or_default(),
            head_seq: get(&self.head_seq),
            records: get(&self.records),
            checkpoints: get(&self.checkpoints),
            fsyncs: get(&self.fsyncs),
            failed: get(&self.failed),
        }
    }
}

/// A record waiting for the writer, and who to tell once it is durable (its `seq`).
struct Job {
    body: Map<String, Value>,
    done: oneshot::Sender<Result<u64, String>>,
}

enum Msg {
    Record(Job),
    Close(oneshot::Sender<()>),
}

/// Evidence in a durable, tamper-evident spool.
pub struct SpoolEvidence {
    recorder: Recorder,
    shipped: Option<Shipped>,
    tx: SyncSender<Msg>,
    stats: Arc<Stats>,
    log: bool,
}

impl SpoolEvidence {
    /// Opens the spool (taking over or starting a chain, verifying and repairing its tail) and
    /// starts the writer. Never fails: a spool that cannot be opened starts unavailable.
    pub fn open(settings: SpoolSettings, key: SigningKey, recorder: Recorder, log: bool) -> Self {
        let (tx, rx) = sync_channel(settings.queue.max(1));
        let stats = Arc::new(Stats::default());
        let shipped = settings.shipped.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let writer = writer::Writer::new(settings, key, recorder.labels().clone(), stats.clone());
        let spawned = std::thread::Builder::new()
            .name("stepguard-evidence".into())
            .spawn(move || writer.run(rx, ready_tx));
        match spawned {
            // Wait for the spool to be opened, so start-up reports its state.
            Ok(_) => drop(ready_rx.recv()),
            Err(e) => tracing::error!(error = %e, "evidence writer not started"),
        }
        Self {
            recorder,
            shipped,
            tx,
            stats,
            log,
        }
    }

    /// Appends a record; resolves with its `seq` once it is durable.
    pub async fn append(&self, body: Map<String, Value>) -> Result<u64, EvidenceError> {
        let (done, durable) = oneshot::channel();
        self.stats.queued.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = self.tx.try_send(Msg::Record(Job { body, done })) {
            self.stats.queued.fetch_sub(1, Ordering::AcqRel);
            self.stats.failed.fetch_add(1, Ordering::AcqRel);
            return Err(EvidenceError::Unavailable(match e {
                TrySendError::Full(_) => "evidence queue full".into(),
                TrySendError::Disconnected(_) => "evidence spool closed".into(),
            }));
        }
        match durable.await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(e)) => Err(EvidenceError::Unavailable(e)),
            Err(_) => Err(EvidenceError::Unavailable("evidence spool closed".into())),
        }
    }

    pub fn stats(&self) -> SpoolStats {
        self.stats.snapshot()
    }
}

#[tonic::async_trait]
impl Evidence for SpoolEvidence {
    async fn record(&self, ctx: &EvidenceContext<'_>) -> Result<(), EvidenceError> {
        let body = self.recorder.decision(ctx, SystemTime::now());
        if self.log {
            let record = Value::Object(body.clone());
            tracing::info!(target: "stepguard::evidence", evidence = %record, "decision");
        }
        self.append(body).await.map(drop)
    }

    async fn lifecycle(&self, event: &Lifecycle<'_>) -> Result<(), EvidenceError> {
        let body = self.recorder.lifecycle(event, SystemTime::now());
        if self.log {
            let record = Value::Object(body.clone());
            tracing::info!(target: "stepguard::evidence", evidence = %record, "{}", event.kind());
        }
        self.append(body).await.map(drop)
    }

    async fn close(&self) {
        let (done, closed) = oneshot::channel();
        let tx = self.tx.clone();
        // Behind queued records: they are written first.
        let sent = tokio::task::spawn_blocking(move || tx.send(Msg::Close(done)).is_ok()).await;
        if matches!(sent, Ok(true)) {
            let _ = closed.await;
        }
    }

    fn spool(&self) -> Option<SpoolStats> {
        Some(self.stats())
    }

    fn shipped(&self) -> Option<Shipped> {
        self.shipped.clone()
    }

    fn writable(&self) -> bool {
        !self.stats.broken.load(Ordering::Acquire)
    }
}

#[cfg(test)]
pub(crate) mod tests;
