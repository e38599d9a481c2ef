//! The writer thread: group commit, checkpoints, rotation, the size cap, and reopening a spool
//! that failed. It owns the chain: records are sealed only here, in order.

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
    /// Decision records since the last checkpoint.
    since_checkpoint: u64,
    last_checkpoint: Instant,
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
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
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
                Err(RecvTimeoutError::Timeout) => {
                    self.interval_checkpoint();
                    continue;
                }
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

    /// Until the next checkpoint, or, while the spool is broken, the next reopening.
    fn until_next(&self) -> Duration {
        match (&self.open, &self.down) {
            (None, Some((_, at))) => self
                .settings
                .retry
                .saturating_sub(at.elapsed())
                .max(Duration::from_millis(1)),
            _ => self.until_checkpoint(),
        }
    }

    fn until_checkpoint(&self) -> Duration {
        let interval = self.settings.checkpoint_interval;
        match self.since_checkpoint {
            0 => interval,
            _ => interval
                .saturating_sub(self.last_checkpoint.elapsed())
                .max(Duration::from_millis(1)),
        }
    }

    /// Seals and writes a batch; each job learns its `seq` once the batch is durable.
    fn commit(&mut self, jobs: Vec<Job>) {
        let count = jobs.len() as u64;
        let pruned = match self.ready_for(count * RECORD_ESTIMATE) {
            Ok(pruned) => pruned,
            Err(e) => return self.fail(jobs, e),
        };
        let Some(open) = &self.open else {
            return self.fail(jobs, "evidence spool unavailable".into());
        };
        let mut batch = Batch::new(open.head.clone(), self.since_checkpoint);
        if !pruned.is_empty() {
            let body = self.checkpoint("pruned", &batch.head, None, json!({"deleted": pruned}));
            batch.push(&self.sealer, body, false);
        }
        let mut waiting = Vec::with_capacity(jobs.len());
        for job in jobs {
            let seq = batch.push(&self.sealer, job.body, true);
            waiting.push((seq, job.done));
            if batch.since >= self.settings.checkpoint_every {
                let body = self.checkpoint("count", &batch.head, Some(batch.since), json!({}));
                batch.push(&self.sealer, body, false);
            }
        }
        if batch.since > 0 && self.last_checkpoint.elapsed() >= self.settings.checkpoint_interval {
            let body = self.checkpoint("interval", &batch.head, Some(batch.since), json!({}));
            batch.push(&self.sealer, body, false);
        }
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
        self.since_checkpoint = batch.since;
        if batch.checkpoints > 0 {
            self.last_checkpoint = Instant::now();
        }
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
        let mut batch = Batch::new(open.head.clone(), 0);
        let body = self.checkpoint(reason, &open.head, None, extra);
        batch.push(&self.sealer, body, false);
        tracing::info!(
            chain = %open.chain,
            head = open.head.seq,
            dir = %self.settings.dir.display(),
            "evidence spool open"
        );
        self.open = Some(open);
        self.down = None;
        self.total = files::spool_bytes(&self.settings.dir);
        self.since_checkpoint = 0;
        let written = self.write(&batch).is_ok();
        if written {
            self.stats.broken.store(false, Ordering::Release);
        }
        written
    }

    fn interval_checkpoint(&mut self) {
        if self.since_checkpoint == 0
            || self.last_checkpoint.elapsed() < self.settings.checkpoint_interval
        {
            return;
        }
        self.checkpoint_now("interval");
    }

    fn shutdown(&mut self) {
        self.checkpoint_now("shutdown");
        self.open = None;
    }

    fn checkpoint_now(&mut self, reason: &str) {
        let Some(open) = &self.open else { return };
        let mut batch = Batch::new(open.head.clone(), self.since_checkpoint);
        let since = Some(self.since_checkpoint);
        let body = self.checkpoint(reason, &open.head, since, json!({}));
        batch.push(&self.sealer, body, false);
        let _ = self.write(&batch);
    }

    /// A checkpoint: the chain head it follows, and the decisions since the previous one
    /// (`None` when not known: after a takeover or a deletion).
    fn checkpoint(
        &self,
        reason: &str,
        head: &Head,
        decisions: Option<u64>,
        extra: Value,
    ) -> Map<String, Value> {
        let (timestamp, unix) = time::stamp(SystemTime::now());
        let mut checkpoint = json!({
            "reason": reason,
            "head": {"seq": head.seq, "hash": head.hash},
        });
        if let (Some(c), Some(n)) = (checkpoint.as_object_mut(), decisions) {
            c.insert("decisions".into(), n.into());
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
    /// Decisions since the last checkpoint, as of the end of the batch.
    since: u64,
    checkpoints: u64,
    checkpoint_heads: Vec<(u64, String, String)>,
}

impl Batch {
    fn new(head: Head, since: u64) -> Self {
        Self {
            bytes: Vec::with_capacity(4096),
            head,
            since,
            checkpoints: 0,
            checkpoint_heads: Vec::new(),
        }
    }

    /// Seals `body` after the batch's head; its `seq`.
    fn push(&mut self, sealer: &Sealer, body: Map<String, Value>, decision: bool) -> u64 {
        let reason = match decision {
            true => None,
            false => body
                .get("checkpoint")
                .and_then(|c| c.get("reason"))
                .and_then(Value::as_str)
                .map(str::to_string),
        };
        let (line, head) = sealer.seal(body, &self.head);
        self.bytes.extend_from_slice(&line);
        self.head = head;
        match reason {
            None => self.since += 1,
            Some(reason) => {
                self.since = 0;
                self.checkpoints += 1;
                self.checkpoint_heads
                    .push((self.head.seq, self.head.hash.clone(), reason));
            }
        }
        self.head.seq
    }
}
