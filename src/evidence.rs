//! Audit evidence: one record per sensitive decision (allow, challenge, deny, fault), saying who
//! asked for which transaction, why step-up was required, what satisfied it and what was
//! decided, and one per grant lifecycle event that is not a decision ([`Lifecycle`]: a challenge
//! completed, a completion refused, grants revoked, a challenge expired unused). Records are
//! shaped like OPA's decision-log events, chained by hash, and appended to a local spool in
//! batches, each closed by one checkpoint signed with Ed25519 and made durable with it before an
//! approval is answered.
//! The format, the chain, checkpoints, durability and `stepguard audit` are documented in
//! `docs/evidence.md`.
//!
//! | file | owns |
//! |---|---|
//! | `record.rs` | the record built from an [`EvidenceContext`]; redaction of bound values |
//! | `canonical.rs` | canonical bytes (RFC 8785 for what records hold), SHA-256 |
//! | `key.rs` | Ed25519 signing and public keys, key ids |
//! | `chain.rs` | sealing a record (unsigned) or a checkpoint (signed) into the chain; checking one line |
//! | `spool.rs` (+ `spool/`) | the durable append-only spool: group commit, checkpoints, segments, recovery |
//! | `audit.rs` | `stepguard audit verify`, `export` and `privileges` |
//! | `ship.rs` | shipping the spool to Redis Streams |
//! | `time.rs` | RFC 3339 |

pub mod audit;
mod canonical;
mod chain;
pub mod config;
mod key;
mod record;
pub mod ship;
mod spool;
mod time;

use std::sync::Arc;
use std::time::SystemTime;

pub use key::{PublicKey, SigningKey};
pub use record::{Recorder, Redaction};
pub use spool::{Shipped, SpoolEvidence, SpoolSettings, SpoolStats, WhenFull};
pub use time::parse as parse_time;

use crate::decision::Decision;
use crate::grant::{Challenge, Grant};
use crate::identity::Subject;
use crate::request::RawRequest;
use crate::txn::Transaction;
use config::{EvidenceConfig, EvidenceSink};

/// Why evidence could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("evidence sink unavailable: {0}")]
    Unavailable(String),
    #[error("evidence key {path}: {message}")]
    Key { path: String, message: String },
}

/// Where a request came from, read before the request is taken apart.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub source_address: Option<String>,
    pub method: String,
    pub host: String,
    /// From the W3C `traceparent` header, when present and well formed.
    pub trace: Option<TraceContext>,
}

/// W3C trace context: the trace and the caller's span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: String,
    pub span_id: String,
}

impl Origin {
    pub fn of(raw: &RawRequest) -> Self {
        let traceparent = raw
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("traceparent"))
            .map(|(_, value)| value.as_str());
        Self {
            source_address: raw.source_address.clone(),
            method: raw.method.clone(),
            host: raw.host.clone(),
            trace: traceparent.and_then(TraceContext::parse),
        }
    }
}

impl TraceContext {
    /// `version-traceid-parentid-flags` (W3C Trace Context); all-zero ids are invalid.
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        let ok = hex(version, 2)
            && version != "ff"
            && (version != "00" || parts.next().is_none())
            && hex(trace, 32)
            && hex(span, 16)
            && hex(flags, 2)
            && trace.bytes().any(|b| b != b'0')
            && span.bytes().any(|b| b != b'0');
        ok.then(|| Self {
            trace_id: trace.into(),
            span_id: span.into(),
        })
    }
}

/// Everything a record is made of, built by the pipeline as it finishes a decision.
pub struct EvidenceContext<'a> {
    pub decision: &'a Decision,
    /// The bound transaction, when the request got that far.
    pub txn: Option<&'a Transaction>,
    /// The verified subject, when the request got that far.
    pub subject: Option<&'a Subject>,
    pub origin: &'a Origin,
}

/// A grant lifecycle event that is not a decision of the check path (those are recorded with
/// their decision: `challenge_issued`, `grant_consumed`).
#[derive(Debug, Clone, Copy)]
pub enum Lifecycle<'a> {
    /// `challenge` was completed and `grant` minted for it (recorded before the grant is stored).
    Completed {
        challenge: &'a Challenge,
        grant: &'a Grant,
        /// Who approved, for the grant API.
        approver: Option<&'a str>,
    },
    /// A completion of `challenge` by `method` was refused for `reason` (nothing was written).
    Refused {
        challenge: &'a Challenge,
        method: &'a str,
        reason: &'a str,
    },
    /// Grants were revoked through the grant API: a subject's, or a transaction's.
    Revoked {
        subject: Option<&'a str>,
        transaction: Option<&'a str>,
        revoked: u32,
        /// The caller's verified identity.
        by: &'a str,
    },
    /// `challenge` expired without being completed.
    Expired { challenge: &'a Challenge },
    /// `grant` expired without ever being used.
    GrantExpired { grant: &'a Grant },
    /// A Security Event Token received (Shared Signals), verified and applied; refused SETs
    /// are counted, not recorded, so unauthenticated traffic cannot fill the spool.
    SignalReceived {
        signal: Signal<'a>,
        /// Grants it revoked.
        revoked: u32,
        /// Journals it was filed in (0 for an event stepguard does not act on).
        filed: usize,
        /// An event type stepguard does not act on.
        ignored: bool,
    },
    /// A Security Event Token stepguard sent after an approval of `action`, and how its
    /// delivery ended (`delivered`, `refused`, `failed`, `dropped`, `sign_failed`).
    SignalSent {
        signal: Signal<'a>,
        action: &'a str,
        /// The receiver's audience.
        audience: &'a str,
        outcome: &'a str,
        attempts: u32,
    },
}

/// What a Security Event Token said, as evidence records it.
#[derive(Debug, Clone, Copy)]
pub struct Signal<'a> {
    /// The SET's `iss`.
    pub issuer: &'a str,
    pub jti: &'a str,
    /// The event type URI.
    pub event_type: &'a str,
    /// The event's time (`event_timestamp`, else `iat`).
    pub time: i64,
    /// The SET's subject identifier as sent (RFC 9493 or the SSF complex form).
    pub subject: &'a serde_json::Value,
    /// The `iss|sub` key of its user, when it names one (`input.subject.id`, as decisions).
    pub user: Option<&'a str>,
}

impl Lifecycle<'_> {
    /// The record's `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Lifecycle::Completed { .. } => "completed",
            Lifecycle::Refused { .. } => "completion_refused",
            Lifecycle::Revoked { .. } => "revoked",
            Lifecycle::Expired { .. } | Lifecycle::GrantExpired { .. } => "expired",
            Lifecycle::SignalReceived { .. } | Lifecycle::SignalSent { .. } => "signal",
        }
    }
}

/// Where evidence goes.
#[tonic::async_trait]
pub trait Evidence: Send + Sync + 'static {
    /// Records one decision. Resolves once the record is durable (for sinks that make it so);
    /// an error means the decision has no record, and an approval must not be given.
    async fn record(&self, ctx: &EvidenceContext<'_>) -> Result<(), EvidenceError>;

    /// Records a lifecycle event, durably like [`Evidence::record`]: an error means the event has
    /// no record (a completion then mints no grant).
    async fn lifecycle(&self, event: &Lifecycle<'_>) -> Result<(), EvidenceError>;

    /// Writes what is pending and closes the sink (at shutdown); later records fail.
    async fn close(&self) {}

    /// The spool's depth, size and counters, for metrics; `None` for sinks without one.
    fn spool(&self) -> Option<SpoolStats> {
        None
    }

    /// False while the sink is known to be failing (its last write or sync failed and it has
    /// not been reopened since): the pipeline then spends no grant on an approval it could not
    /// record. True for sinks that cannot tell.
    fn writable(&self) -> bool {
        true
    }

    /// Where shipping stands, shared with the spool so `delete_oldest` keeps what is not
    /// shipped yet; `None` for sinks without a spool or when nothing ships.
    fn shipped(&self) -> Option<Shipped> {
        None
    }
}

/// Evidence as structured log events only (target `stepguard::evidence`): neither durable nor
/// tamper-evident. The sink when no `evidence` section is configured, and `sink: log`.
#[derive(Default)]
pub struct LogEvidence {
    recorder: Recorder,
}

impl LogEvidence {
    pub fn new(recorder: Recorder) -> Self {
        Self { recorder }
    }
}

#[tonic::async_trait]
impl Evidence for LogEvidence {
    async fn record(&self, ctx: &EvidenceContext<'_>) -> Result<(), EvidenceError> {
        let record = serde_json::Value::Object(self.recorder.decision(ctx, SystemTime::now()));
        tracing::info!(target: "stepguard::evidence", evidence = %record, "decision");
        Ok(())
    }

    async fn lifecycle(&self, event: &Lifecycle<'_>) -> Result<(), EvidenceError> {
        let record = serde_json::Value::Object(self.recorder.lifecycle(event, SystemTime::now()));
        tracing::info!(target: "stepguard::evidence", evidence = %record, "{}", event.kind());
        Ok(())
    }
}

/// The sink the configuration asks for. A spool that cannot be written is not an error here:
/// it starts unavailable (approvals on sensitive routes are refused) and retries.
pub fn from_config(
    config: Option<&EvidenceConfig>,
    entrypoint: &str,
) -> Result<Arc<dyn Evidence>, EvidenceError> {
    let Some(ev) = config else {
        tracing::warn!(
            "no `evidence` section: decision records go to the log only, neither durable nor \
             tamper-evident (docs/evidence.md)"
        );
        return Ok(Arc::new(LogEvidence::new(Recorder::new(
            entrypoint,
            &Default::default(),
            Redaction::default(),
        ))));
    };
    let key_error = |path: &std::path::Path, message: String| EvidenceError::Key {
        path: path.display().to_string(),
        message,
    };
    let redaction_key = match &ev.redact.key_file {
        Some(path) => {
            let key = std::fs::read(path).map_err(|e| key_error(path, e.to_string()))?;
            let key = key.trim_ascii().to_vec();
            if key.len() < 32 {
                return Err(key_error(path, "shorter than 32 bytes".into()));
            }
            Some(key)
        }
        None => None,
    };
    let redaction = Redaction::new(ev.redact.fields.iter().cloned(), redaction_key.as_deref())
        .with_actions(ev.redact.actions.iter().cloned());
    let recorder = Recorder::new(entrypoint, &ev.labels, redaction);
    match (&ev.sink, &ev.spool, &ev.signing_key_file) {
        (EvidenceSink::Spool, Some(spool), Some(path)) => {
            let key = SigningKey::load(path).map_err(|m| key_error(path, m))?;
            if ev.checkpoint != config::CheckpointConfig::default() {
                tracing::warn!(
                    "evidence.checkpoint is no longer used: every batch of records ends with a \
                     signed checkpoint (docs/evidence.md#checkpoints)"
                );
            }
            let mut settings = SpoolSettings::from_config(spool);
            // With shipping, `delete_oldest` deletes only what the shipper has sent.
            settings.shipped = ev.stream.as_ref().map(|_| Shipped::default());
            Ok(Arc::new(SpoolEvidence::open(
                settings, key, recorder, ev.log,
            )))
        }
        // `Config::validate` requires both for a spool.
        (EvidenceSink::Spool, _, _) => Err(EvidenceError::Unavailable(
            "evidence.spool and evidence.signing_key_file are required".into(),
        )),
        (EvidenceSink::Log, _, _) => Ok(Arc::new(LogEvidence::new(recorder))),
    }
}

#[cfg(test)]
pub(crate) mod tests;
