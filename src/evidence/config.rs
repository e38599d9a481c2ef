//! The `evidence` section: where decision records go and how they are protected
//! (`docs/evidence.md`), and its rules ([`EvidenceConfig::validate`]; what it says about actions
//! and the grant store is checked by `crate::config`). Absent: records go to the log only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::section::{Invalid, Resolve, invalid, resolve_opt, resolve_path};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceConfig {
    /// `spool` (default): the durable, signed spool. `log`: the structured log only.
    #[serde(default)]
    pub sink: EvidenceSink,
    /// The spool (required for `sink: spool`).
    #[serde(default)]
    pub spool: Option<SpoolConfig>,
    /// An Ed25519 PKCS#8 key (PEM or DER) signing every record (required for `sink: spool`).
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    #[serde(default)]
    pub redact: RedactConfig,
    /// Added to every record's `labels` (beside `app` and `version`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Also write each decision record to the log (target `stepguard::evidence`).
    #[serde(default)]
    pub log: bool,
    /// Ship the spool's records to Redis Streams on the grant store's Redis (requires a spool
    /// and a Redis grant store).
    #[serde(default)]
    pub stream: Option<StreamConfig>,
}

/// Shipping records to Redis Streams: one stream per chain, `<key>:<chain id>`, each record
/// added with the id `<seq>-0` (so a record sent twice is refused by Redis), the chain ids in
/// the set `<key>:chains`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// The streams' key prefix.
    pub key: String,
    /// Each stream is trimmed to about this many entries (`MAXLEN ~`).
    pub max_len: u64,
    /// Most records sent in one round trip.
    pub batch: usize,
    /// How often the spool is looked at when everything was shipped.
    pub poll_ms: u64,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            key: "stepguard:evidence".into(),
            max_len: 1_000_000,
            batch: 256,
            poll_ms: 200,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceSink {
    #[default]
    Spool,
    Log,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// The spool directory (created if missing).
    pub dir: PathBuf,
    /// A segment file is closed and the next one started past this size.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// The whole spool directory's cap.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// What happens past `max_bytes`.
    #[serde(default)]
    pub when_full: WhenFull,
    /// Most records made durable by one fsync.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Most records waiting to be written; past it records fail at once.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

/// What a full spool does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Refuse records: approvals on sensitive routes are answered 503 until there is room.
    #[default]
    Refuse,
    /// Delete the oldest closed segments (only where they are shipped or archived elsewhere).
    DeleteOldest,
}

/// No longer used (every batch ends with a signed checkpoint); still read so older files load,
/// and a value other than the default is warned about at start.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    pub every_records: u64,
    pub every_secs: u64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            every_records: 1000,
            every_secs: 60,
        }
    }
}

/// Bound fields whose values are not written as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactConfig {
    /// Bound field names (`body.payee`, `path.account`…).
    #[serde(default)]
    pub fields: Vec<String>,
    /// Action names every bound value of which is redacted.
    #[serde(default)]
    pub actions: Vec<String>,
    /// A secret (≥ 32 bytes): values become `hmac-sha256:…` under it; without it,
    /// `"[redacted]"`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

fn default_segment_bytes() -> u64 {
    64 << 20
}
fn default_max_bytes() -> u64 {
    1 << 30
}
fn default_max_batch() -> usize {
    512
}
fn default_queue() -> usize {
    8192
}

impl Resolve for EvidenceConfig {
    fn resolve(&mut self, base: &Path) {
        if let Some(spool) = &mut self.spool {
            resolve_path(&mut spool.dir, base);
        }
        resolve_opt(&mut self.signing_key_file, base);
        resolve_opt(&mut self.redact.key_file, base);
    }
}

impl EvidenceConfig {
    /// The section's rules: a spool and key exactly for `sink: spool`, sane sizes and
    /// intervals, a stream only from a spool, label names that do not shadow `app`/`version`.
    pub fn validate(&self) -> Result<(), Invalid> {
        let e = self;
        match (e.sink, &e.spool, &e.signing_key_file) {
            (EvidenceSink::Spool, None, _) => {
                return Err(invalid("evidence.spool", "required for `sink: spool`"));
            }
            (EvidenceSink::Spool, _, None) => {
                return Err(invalid(
                    "evidence.signing_key_file",
                    "required for `sink: spool`",
                ));
            }
            (EvidenceSink::Log, Some(_), _) | (EvidenceSink::Log, _, Some(_)) => {
                return Err(invalid(
                    "evidence.sink",
                    "`spool` and `signing_key_file` are only for `sink: spool`",
                ));
            }
            _ => {}
        }
        if let Some(s) = &e.spool {
            validate_spool(s)?;
        }
        let c = &e.checkpoint;
        if c.every_records == 0 {
            return Err(invalid("evidence.checkpoint.every_records", "at least 1"));
        }
        if !(1..=86_400).contains(&c.every_secs) {
            return Err(invalid(
                "evidence.checkpoint.every_secs",
                "between 1 and 86400",
            ));
        }
        if let Some(stream) = &e.stream {
            if e.sink != EvidenceSink::Spool {
                return Err(invalid(
                    "evidence.stream",
                    "ships the spool: needs `sink: spool`",
                ));
            }
            if stream.key.is_empty() || stream.key.contains(['{', '}', ' ']) {
                return Err(invalid(
                    "evidence.stream.key",
                    "a non-empty key prefix without braces or spaces",
                ));
            }
            if stream.max_len < 1000 {
                return Err(invalid("evidence.stream.max_len", "at least 1000"));
            }
            if !(1..=10_000).contains(&stream.batch) {
                return Err(invalid("evidence.stream.batch", "between 1 and 10000"));
            }
            if !(10..=60_000).contains(&stream.poll_ms) {
                return Err(invalid("evidence.stream.poll_ms", "between 10 and 60000"));
            }
        }
        for name in e.labels.keys() {
            if name.is_empty() || name == "app" || name == "version" {
                return Err(invalid(
                    "evidence.labels",
                    format!("`{name}`: a non-empty name other than `app` and `version`"),
                ));
            }
        }
        Ok(())
    }
}

fn validate_spool(s: &SpoolConfig) -> Result<(), Invalid> {
    if s.dir.as_os_str().is_empty() {
        return Err(invalid("evidence.spool.dir", "must not be empty"));
    }
    if !(4096..=1 << 30).contains(&s.segment_bytes) {
        return Err(invalid(
            "evidence.spool.segment_bytes",
            "between 4096 and 1073741824",
        ));
    }
    if s.max_bytes < s.segment_bytes {
        return Err(invalid(
            "evidence.spool.max_bytes",
            "at least evidence.spool.segment_bytes",
        ));
    }
    if !(1..=10_000).contains(&s.max_batch) {
        return Err(invalid("evidence.spool.max_batch", "between 1 and 10000"));
    }
    if !(1..=1_000_000).contains(&s.queue) {
        return Err(invalid("evidence.spool.queue", "between 1 and 1000000"));
    }
    Ok(())
}
