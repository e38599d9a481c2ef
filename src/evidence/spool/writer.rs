//! The writer thread: group commit, checkpoints, rotation, the size cap, and reopening a spool
//! that failed. It owns the chain: records are sealed only here, in order.
//!
//! Each batch is its records, sealed unsigned, and one signed checkpoint covering them (`batch`,
//! or `pruned` when segments were deleted to make room for it), written with one `write` and
//! made durable with one `fsync`: a record is acknowledged only once its batch's checkpoint is
//! on disk with it. A batch never spans segments (rotation happens before its write).

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value, json};

use super::files::{self, Open};
use super::{Job, Msg, SpoolSettings, Stats, WhenFull};
use crate::evidence::chain::{Head, Sealer};
use crate::evidence::key::{PublicKey, SigningKey};
use crate::evidence::record::FORMAT;
use crate::evidence::time;

/// Room assumed per record when making room before a batch is sealed.
const RECORD_ESTIMATE: u64 = 2048;

pub struct Writer {
    settings: SpoolSettings,
    sealer: Sealer,
    public: PublicKey,
    labels: Map<String, Value>,
    stats: Arc<Stats>,
    open: Option<Open>,
    /// Why the spool is unavailable, and when opening it was last tried.
    down: Option<(String, Instant)>,
    /// Bytes of the whole spool directory, as last counted plus what was written since.
    total: u64,
}

impl Writer {
    pub fn new(
        settings: SpoolSettings,
        key: SigningKey,
        labels: Map<String, Value>,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            settings,
            public: key.public_key(),
            sealer: Sealer::new(String::new(), key),
            labels,
            stats,
            open: None,
            down: None,
            total: 0,
        }
    }

    /// Opens the spool, signals `ready`, then commits batches until closed or disconnected.
    pub fn run(mut self, rx: Receiver<Msg>, ready: Sender<()>) {
        self.reopen(true);
        let _ = ready.send(());
        loop {
            let first = match rx.recv_timeout(self.until_next()) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) if self.open.is_none() => {
                    self.reopen(false);
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut jobs = Vec::new();
            let mut close = None;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Record(job) => jobs.push(job),
                    Msg::Close(done) => {
                        close = Some(done);
                        break;
                    }
                }
                if jobs.len() < self.settings.max_batch {
                    next = rx.try_recv().ok();
                }
            }
            self.stats
                .queued
                .fetch_sub(jobs.len() as u64, Ordering::AcqRel);
            if !jobs.is_empty() {
                self.commit(jobs);
            }
            if let Some(done) = close {
                self.shutdown();
                let _ = done.send(());
                return;
            }
        }
        self.shutdown();
    }

    /// While the spool is broken, until the next reopening; otherwise until the next record.
    fn until_next(&self) -> Duration {
        match (&self.open, &self.down) {
            (None, Some((_, at))) => self
                .settings
                .retry
                .saturating_sub(at.elapsed())
                .max(Duration::from_millis(1)),
            _ => Duration::from_secs(3600),
        }
    }

    /// Seals a batch and the checkpoint that covers it, and writes both; each job learns its
    /// `seq` once they are durable.
    fn commit(&mut self, jobs: Vec<Job>) {
        let count = jobs.len() as u64;
        let pruned = match self.ready_for(count * RECORD_ESTIMATE) {
            Ok(pruned) => pruned,
            Err(e) => return self.fail(jobs, e),
        };
        let Some(open) = &self.open else {
            return self.fail(jobs, "evidence spool unavailable".into());
        };
        let mut batch = Batch::new(open.head.clone());
        let mut waiting = Vec::with_capacity(jobs.len());
        for job in jobs {
            let seq = batch.push(&self.sealer, job.body, false);
            waiting.push((seq, job.done));
        }
        let covers = Some((open.head.seq + 1, batch.head.seq));
        let body = match pruned.is_empty() {
            true => self.checkpoint("batch", &batch.head, covers, json!({})),
            false => self.checkpoint("pruned", &batch.head, covers, json!({"deleted": pruned})),
        };
        batch.push(&self.sealer, body, true);
        match self.write(&batch) {
            Ok(()) => {
                self.stats.records.fetch_add(count, Ordering::AcqRel);
                for (seq, done) in waiting {
                    let _ = done.send(Ok(seq));
                }
            }
            Err(e) => {
                self.stats.failed.fetch_add(count, Ordering::AcqRel);
                for (_, done) in waiting {
                    let _ = done.send(Err(e.clone()));
                }
            }
        }
    }

    fn fail(&self, jobs: Vec<Job>, error: String) {
        self.stats
            .failed
            .fetch_add(jobs.len() as u64, Ordering::AcqRel);
        for job in jobs {
            let _ = job.done.send(Err(error.clone()));
        }
    }

    /// An open spool with room for about `need` more bytes; the segments deleted to make room.
    fn ready_for(&mut self, need: u64) -> Result<Vec<String>, String> {
        if self.open.is_none() && !self.reopen(false) {
            let why = self.down.as_ref().map(|(e, _)| e.clone());
            return Err(why.unwrap_or_else(|| "evidence spool unavailable".into()));
        }
        if self.total + need <= self.settings.max_bytes {
            return Ok(Vec::new());
        }
        self.total = files::spool_bytes(&self.settings.dir);
        if self.total + need <= self.settings.max_bytes
            || self.settings.when_full == WhenFull::Refuse
        {
            return Ok(Vec::new());
        }
        let over = self.total + need - self.settings.max_bytes;
        let shipped = self.settings.shipped.as_ref();
        let deleted = files::delete_oldest(&self.settings.dir, over, |chain| {
            shipped.map_or(u64::MAX, |s| s.upto(chain))
        });
        if !deleted.is_empty() {
            tracing::warn!(?deleted, "evidence spool full: oldest segments deleted");
            self.total = files::spool_bytes(&self.settings.dir);
        }
        if shipped.is_some() && self.total + need > self.settings.max_bytes {
            // Only shipped segments may go: the rest is refused until shipping catches up.
            self.stats.available.store(false, Ordering::Release);
            return Err(format!(
                "evidence spool full: {} of {} bytes (evidence.spool.max_bytes), and the oldest \
                 segments are not shipped yet (evidence.stream): nothing unshipped is deleted",
                self.total, self.settings.max_bytes
            ));
        }
        Ok(deleted)
    }

    /// Rotates if the batch does not fit the segment, checks the cap, then one write and one
    /// fsync. On failure the chain does not advance and the spool is reopened before next use.
    fn write(&mut self, batch: &Batch) -> Result<(), String> {
        let Some(open) = self.open.as_mut() else {
            return Err("evidence spool unavailable".into());
        };
        let len = batch.bytes.len() as u64;
        if open.len > 0
            && open.len + len > self.settings.segment_bytes
            && let Err(e) = files::rotate(open)
        {
            let error = format!("rotating {}: {e}", open.segment.display());
            return Err(self.broken(error));
        }
        if self.total + len > self.settings.max_bytes {
            self.stats.available.store(false, Ordering::Release);
            return Err(format!(
                "evidence spool full: {} of {} bytes (evidence.spool.max_bytes)",
                self.total, self.settings.max_bytes
            ));
        }
        let written = open
            .file
            .write_all(&batch.bytes)
            .and_then(|()| open.file.sync_data());
        if let Err(e) = written {
            // Cut what may have been written, so the next record follows the last durable one.
            let _ = open
                .file
                .set_len(open.len)
                .and_then(|()| open.file.sync_data());
            let segment = open.segment.display().to_string();
            return Err(self.broken(format!("writing {segment}: {e}")));
        }
        open.len += len;
        open.head = batch.head.clone();
        self.total += len;
        let s = &self.stats;
        s.available.store(true, Ordering::Release);
        s.fsyncs.fetch_add(1, Ordering::AcqRel);
        s.checkpoints.fetch_add(batch.checkpoints, Ordering::AcqRel);
        s.head_seq.store(batch.head.seq, Ordering::Release);
        s.bytes.store(self.total, Ordering::Release);
        metrics::gauge!("stepguard_evidence_spool_bytes").set(self.total as f64);
        for (seq, hash, reason) in &batch.checkpoint_heads {
            tracing::info!(
                target: "stepguard::evidence",
                chain = self.sealer.chain(),
                seq,
                hash = %hash,
                reason = %reason,
                "evidence checkpoint"
            );
        }
        Ok(())
    }

    /// Marks the spool unavailable until reopened; the error, for the callers.
    fn broken(&mut self, error: String) -> String {
        tracing::error!(error = %error, "evidence spool write failed");
        self.open = None;
        self.down = Some((error.clone(), Instant::now()));
        self.stats.available.store(false, Ordering::Release);
        self.stats.broken.store(true, Ordering::Release);
        error
    }

    /// Opens (or reopens) the spool and writes its start checkpoint. Tried at most once per
    /// `retry` while the spool is down, unless `force`d.
    fn reopen(&mut self, force: bool) -> bool {
        if let Some((_, at)) = &self.down
            && !force
            && at.elapsed() < self.settings.retry
        {
            return false;
        }
        let open = match files::open(&self.settings.dir, &self.public) {
            Ok(open) => open,
            Err(e) => {
                tracing::error!(error = %e, "evidence spool unavailable");
                self.down = Some((format!("evidence spool unavailable: {e}"), Instant::now()));
                self.stats.available.store(false, Ordering::Release);
                self.stats.broken.store(true, Ordering::Release);
                return false;
            }
        };
        self.sealer.set_chain(open.chain.clone());
        if let Ok(mut chain) = self.stats.chain.lock() {
            chain.clone_from(&open.chain);
        }
        let reason = if open.created { "genesis" } else { "startup" };
        let extra = match &open.torn {
            Some((bytes, kept)) => json!({"torn_bytes": bytes, "torn_file": kept.file_name()
                .map(|n| n.to_string_lossy().into_owned())}),
            None => json!({}),
        };
        let mut batch = Batch::new(open.head.clone());
        let body = self.checkpoint(reason, &open.head, None, extra);
        batch.push(&self.sealer, body, true);
        tracing::info!(
            chain = %open.chain,
            head = open.head.seq,
            dir = %self.settings.dir.display(),
            "evidence spool open"
        );
        self.open = Some(open);
        self.down = None;
        self.total = files::spool_bytes(&self.settings.dir);
        let written = self.write(&batch).is_ok();
        if written {
            self.stats.broken.store(false, Ordering::Release);
        }
        written
    }

    /// A clean stop: a checkpoint saying so (every record before it is already covered by its
    /// batch's checkpoint).
    fn shutdown(&mut self) {
        if let Some(open) = &self.open {
            let mut batch = Batch::new(open.head.clone());
            let body = self.checkpoint("shutdown", &open.head, None, json!({}));
            batch.push(&self.sealer, body, true);
            let _ = self.write(&batch);
        }
        self.open = None;
    }

    /// A checkpoint: the chain head it follows and the records it covers (`from..=to`, the
    /// records since the previous checkpoint; `None` for a checkpoint that follows one).
    fn checkpoint(
        &self,
        reason: &str,
        head: &Head,
        covers: Option<(u64, u64)>,
        extra: Value,
    ) -> Map<String, Value> {
        let (timestamp, unix) = time::stamp(SystemTime::now());
        let mut checkpoint = json!({
            "reason": reason,
            "head": {"seq": head.seq, "hash": head.hash},
        });
        if let (Some(c), Some((from, to))) = (checkpoint.as_object_mut(), covers) {
            let count = to + 1 - from;
            c.insert(
                "covers".into(),
                json!({"from": from, "to": to, "count": count}),
            );
        }
        if let (Some(c), Value::Object(extra)) = (checkpoint.as_object_mut(), extra) {
            c.extend(extra);
        }
        let mut body = Map::new();
        body.insert("v".into(), FORMAT.into());
        body.insert("kind".into(), "checkpoint".into());
        body.insert("timestamp".into(), timestamp.into());
        body.insert("unix".into(), unix.into());
        body.insert("labels".into(), self.labels.clone().into());
        body.insert("checkpoint".into(), checkpoint);
        body
    }
}

/// Lines sealed for one write.
struct Batch {
    bytes: Vec<u8>,
    head: Head,
    checkpoints: u64,
    checkpoint_heads: Vec<(u64, String, String)>,
}

impl Batch {
    fn new(head: Head) -> Self {
        Self {
            bytes: Vec::with_capacity(4096),
            head,
            checkpoints: 0,
            checkpoint_heads: Vec::new(),
        }
    }

    /// Seals `body` after the batch's head (a record, or a signed `checkpoint`); its `seq`.
    fn push(&mut self, sealer: &Sealer, body: Map<String, Value>, checkpoint: bool) -> u64 {
        if !checkpoint {
            let (line, head) = sealer.seal(body, &self.head);
            self.bytes.extend_from_slice(&line);
            self.head = head;
            return self.head.seq;
        }
        let reason = body
            .get("checkpoint")
            .and_then(|c| c.get("reason"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let (line, head) = sealer.seal_signed(body, &self.head);
        self.bytes.extend_from_slice(&line);
        self.head = head;
        self.checkpoints += 1;
        self.checkpoint_heads
            .push((self.head.seq, self.head.hash.clone(), reason));
        self.head.seq
    }
}
