//! Shipping the spool to Redis Streams (`evidence.stream`): a background task tails the spool's
//! durable records and adds each one, as stored (canonical JSON with its `hash`; checkpoints,
//! which sign their batch, with their `sig`), to the stream of its chain on the grant store's
//! Redis. The shipper reads the current chain only up to its durable head, which is always a
//! batch's checkpoint: every record it ships has its checkpoint on disk, shipped after it.
//!
//! - **One stream per chain**, `<key>:<chain id>`; the chain ids are in the set `<key>:chains`.
//!   Replicas have their own spools and chains, so they never write the same stream.
//! - **Idempotent ids.** A record's stream id is `<seq>-0`. Redis refuses an id equal to or
//!   smaller than the stream's last one, so a record is in the stream at most once whatever is
//!   re-sent (after a crash, by a second shipper); ids are monotonic, and `XRANGE key 5 9`
//!   reads records 5 to 9.
//! - **Cursor.** Where a chain's shipping stands is the stream's own `last-generated-id`
//!   (`XINFO STREAM`), read when shipping starts and after any error — nothing is persisted
//!   locally, and a new process (or the same one after Redis came back empty) resumes exactly.
//! - **Never in the way.** Decisions wait for the spool only: the shipper reads the files the
//!   writer made durable (never past the chain's durable head), retries with backoff (100 ms
//!   doubling to 5 s) while Redis is unreachable, and the backlog ships when it is back.
//! - **Trimming.** Each stream is kept to about `max_len` entries (`MAXLEN ~`); the spool keeps
//!   everything until its own cap.
//!
//! - **At shutdown** ([`drain`]): once the spool is closed, what the background shipper has not
//!   sent yet (the last `poll_ms`, the shutdown checkpoint) is shipped before the process exits,
//!   within a bound, so a replica that is replaced (a rollout, a node drain) takes no unshipped
//!   record with it.
//!
//! Metrics: `stepguard_evidence_shipped_total`, `stepguard_evidence_ship_errors_total`, and the
//! gauge `stepguard_evidence_ship_lag_records` (the current chain's records not yet shipped).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead as _, BufReader, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::Value;

use super::chain;
use super::config::StreamConfig;
use super::spool::files;
use super::{Evidence, Shipped};
use crate::grant::RedisConnection;

/// Longest wait for one Redis round trip.
const ROUND_TRIP: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How shipping behaves.
#[derive(Debug, Clone)]
pub struct ShipSettings {
    /// The spool directory.
    pub dir: PathBuf,
    pub key: String,
    pub max_len: u64,
    pub batch: usize,
    pub poll: Duration,
}

impl ShipSettings {
    pub fn new(dir: PathBuf, stream: &StreamConfig) -> Self {
        Self {
            dir,
            key: stream.key.clone(),
            max_len: stream.max_len,
            batch: stream.batch.max(1),
            poll: Duration::from_millis(stream.poll_ms),
        }
    }

    /// The stream of `chain`.
    pub fn stream(&self, chain: &str) -> String {
        format!("{}:{chain}", self.key)
    }

    /// The set of chain ids.
    pub fn chains(&self) -> String {
        format!("{}:chains", self.key)
    }
}

/// Ships everything left in the spool of `evidence`, which must be closed (every record
/// durable), until nothing is left or `within` has passed; whether everything was shipped.
/// Re-sending what the background shipper sent meanwhile is harmless (ids are idempotent).
pub async fn drain(
    settings: ShipSettings,
    conn: RedisConnection,
    evidence: &Arc<dyn Evidence>,
    within: Duration,
) -> bool {
    let mut shipper = Shipper::new(settings, conn, evidence);
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, shipper.round(None)).await {
            Ok(Ok(0)) => return true,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "shipping the spool's last records failed; retrying");
                tokio::time::sleep(MIN_BACKOFF.min(left)).await;
            }
            Err(_) => break,
        }
    }
    tracing::error!(
        within_ms = within.as_millis() as u64,
        "evidence records left unshipped at exit: they are in the spool only"
    );
    false
}

/// Where shipping a chain stands: the last shipped `seq`, and where the next line starts when
/// known.
#[derive(Debug, Clone, Default)]
struct Cursor {
    seq: u64,
    at: Option<(PathBuf, u64)>,
}

/// A record read from the spool, to ship.
struct Item {
    seq: u64,
    kind: String,
    line: String,
    /// Where the line after it starts.
    next: (PathBuf, u64),
}

/// Ships one spool.
pub struct Shipper {
    settings: ShipSettings,
    conn: RedisConnection,
    evidence: Weak<dyn Evidence>,
    cursors: HashMap<String, Cursor>,
    registered: HashSet<String>,
    /// Where shipping stands, for the spool's `delete_oldest`.
    shipped: Option<Shipped>,
}

impl Shipper {
    /// A shipper for the spool of `evidence`; it stops once `evidence` is dropped.
    pub fn new(
        settings: ShipSettings,
        conn: RedisConnection,
        evidence: &Arc<dyn Evidence>,
    ) -> Self {
        Self {
            shipped: evidence.shipped(),
            settings,
            conn,
            evidence: Arc::downgrade(evidence),
            cursors: HashMap::new(),
            registered: HashSet::new(),
        }
    }

    /// Ships until the evidence sink is dropped.
    pub fn spawn(mut self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut backoff = MIN_BACKOFF;
            loop {
                let Some(evidence) = self.evidence.upgrade() else {
                    return;
                };
                let stats = evidence.spool();
                drop(evidence);
                match self
                    .round(stats.as_ref().map(|s| (s.chain.as_str(), s.head_seq)))
                    .await
                {
                    Ok(0) => {
                        backoff = MIN_BACKOFF;
                        tokio::time::sleep(self.settings.poll).await;
                    }
                    Ok(_) => backoff = MIN_BACKOFF,
                    Err(e) => {
                        metrics::counter!("stepguard_evidence_ship_errors_total").increment(1);
                        tracing::warn!(error = %e, retry_ms = backoff.as_millis() as u64, "evidence shipping failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        })
    }

    /// Ships at most one batch per chain; the records shipped. `current` is the chain being
    /// written and its durable head (nothing past it is shipped).
    pub async fn round(&mut self, current: Option<(&str, u64)>) -> Result<usize, String> {
        let mut shipped = 0;
        for dir in files::chains(&self.settings.dir) {
            let Some(chain) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                continue;
            };
            let head = current.filter(|(c, _)| *c == chain).map(|(_, head)| head);
            let cursor = match self.cursors.get(&chain) {
                Some(cursor) => cursor.clone(),
                None => Cursor {
                    seq: self.last_shipped(&chain).await?,
                    at: None,
                },
            };
            let (items, position) = read(&dir, &cursor, head, self.settings.batch)
                .map_err(|e| format!("reading {}: {e}", dir.display()))?;
            let mut cursor = position;
            if let Some(last) = items.last() {
                if let Err(e) = self.send(&chain, &items).await {
                    // The stream's last id is the truth: read it again before going on.
                    self.cursors.remove(&chain);
                    return Err(e);
                }
                cursor = Cursor {
                    seq: last.seq,
                    at: Some(last.next.clone()),
                };
                shipped += items.len();
                metrics::counter!("stepguard_evidence_shipped_total").increment(items.len() as u64);
            }
            if let Some(head) = head {
                metrics::gauge!("stepguard_evidence_ship_lag_records")
                    .set(head.saturating_sub(cursor.seq) as f64);
            }
            if let Some(shipped) = &self.shipped {
                shipped.mark(&chain, cursor.seq);
            }
            self.cursors.insert(chain, cursor);
        }
        Ok(shipped)
    }

    /// The `seq` of the last record in `chain`'s stream: its `last-generated-id` (0 when there
    /// is no stream yet).
    async fn last_shipped(&mut self, chain: &str) -> Result<u64, String> {
        let mut cmd = redis::cmd("XINFO");
        cmd.arg("STREAM").arg(self.settings.stream(chain));
        let reply = tokio::time::timeout(ROUND_TRIP, cmd.query_async::<Value>(&mut self.conn))
            .await
            .map_err(|_| "redis: XINFO timed out".to_string())?;
        let info = match reply {
            Ok(info) => info,
            Err(e) if e.to_string().contains("no such key") => return Ok(0),
            Err(e) => return Err(format!("redis: {e}")),
        };
        let pairs: Vec<(Value, Value)> = match info {
            Value::Map(pairs) => pairs,
            Value::Array(items) => {
                let mut items = items.into_iter();
                std::iter::from_fn(|| Some((items.next()?, items.next()?))).collect()
            }
            other => return Err(format!("redis: unexpected XINFO reply {other:?}")),
        };
        let last = pairs.into_iter().find_map(|(k, v)| {
            let name: String = redis::from_redis_value(k).ok()?;
            (name == "last-generated-id")
                .then(|| redis::from_redis_value::<String>(v).ok())
                .flatten()
        });
        let last = last.ok_or("redis: XINFO without last-generated-id")?;
        last.split_once('-')
            .and_then(|(ms, _)| ms.parse().ok())
            .ok_or_else(|| format!("redis: stream id `{last}` is not `<seq>-0`"))
    }

    /// Adds `items` to `chain`'s stream in one round trip.
    async fn send(&mut self, chain: &str, items: &[Item]) -> Result<(), String> {
        let stream = self.settings.stream(chain);
        let mut pipe = redis::pipe();
        let register = !self.registered.contains(chain);
        if register {
            pipe.cmd("SADD")
                .arg(self.settings.chains())
                .arg(chain)
                .ignore();
        }
        for item in items {
            pipe.cmd("XADD")
                .arg(&stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.settings.max_len)
                .arg(format!("{}-0", item.seq))
                .arg("kind")
                .arg(&item.kind)
                .arg("record")
                .arg(&item.line)
                .ignore();
        }
        let sent = tokio::time::timeout(ROUND_TRIP, pipe.query_async::<()>(&mut self.conn))
            .await
            .map_err(|_| "redis: XADD timed out".to_string())?;
        match sent {
            Ok(()) => {
                if register {
                    self.registered.insert(chain.to_string());
                }
                Ok(())
            }
            Err(e) => Err(format!("redis: {e}")),
        }
    }
}

/// Up to `max` records of the chain in `dir` after `cursor` (none past `head` when given), and
/// where reading stopped.
fn read(
    dir: &Path,
    cursor: &Cursor,
    head: Option<u64>,
    max: usize,
) -> std::io::Result<(Vec<Item>, Cursor)> {
    let segments = files::segments(dir);
    let start = match &cursor.at {
        Some((path, _)) if segments.contains(path) => segments.iter().position(|s| s == path),
        _ => segments
            .iter()
            .rposition(|s| files::segment_seq(s).is_some_and(|first| first <= cursor.seq + 1)),
    }
    .unwrap_or(0);
    let mut items = Vec::new();
    let mut position = cursor.clone();
    'segments: for segment in segments.iter().skip(start) {
        let mut offset = match &cursor.at {
            Some((path, offset)) if path == segment => *offset,
            _ => 0,
        };
        let mut file = match File::open(segment) {
            Ok(file) => file,
            // Deleted to make room meanwhile: the next one follows.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(offset))?;
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                // The end, or a line still being written.
                if n > 0 {
                    break 'segments;
                }
                break;
            }
            let next = offset + n as u64;
            let Ok(record) = chain::check(&line[..n - 1]) else {
                // Not an intact record (a torn tail not yet repaired): `audit verify` says why.
                break 'segments;
            };
            if head.is_some_and(|head| record.seq > head) {
                break 'segments;
            }
            if record.seq > cursor.seq {
                items.push(Item {
                    seq: record.seq,
                    kind: record.kind().to_string(),
                    line: String::from_utf8_lossy(&line[..n - 1]).into_owned(),
                    next: (segment.clone(), next),
                });
                if items.len() >= max {
                    break 'segments;
                }
            } else {
                position.at = Some((segment.clone(), next));
            }
            offset = next;
        }
    }
    Ok((items, position))
}
