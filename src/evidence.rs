//! Audit evidence: one record per sensitive decision, saying why step-up was required, what
//! satisfied it and what was performed. Field names follow OPA's decision-log event where they
//! overlap (`decision_id`, `timestamp`, `path`, `result`, `labels`).
//!
//! The shipped sink writes each record as one JSON line to the structured log
//! (target `stepguard::evidence`); the pipeline answers an approval only after `record` succeeded.

use serde_json::json;

use crate::decision::Decision;
use crate::txn::Transaction;

/// Why evidence could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("evidence sink unavailable: {0}")]
    Unavailable(String),
}

/// Where evidence goes.
#[tonic::async_trait]
pub trait Evidence: Send + Sync + 'static {
    async fn record(
        &self,
        decision: &Decision,
        txn: Option<&Transaction>,
    ) -> Result<(), EvidenceError>;
}

/// Evidence as structured log events.
#[derive(Debug, Default)]
pub struct LogEvidence;

#[tonic::async_trait]
impl Evidence for LogEvidence {
    async fn record(
        &self,
        decision: &Decision,
        txn: Option<&Transaction>,
    ) -> Result<(), EvidenceError> {
        let record = json!({
            "decision_id": decision.id,
            "timestamp": crate::clock::Clock::now(&crate::clock::SystemClock),
            "path": "stepguard/authz/decision",
            "result": decision,
            "bound": txn.map(|t| &t.bound),
        });
        tracing::info!(target: "stepguard::evidence", evidence = %record, "decision");
        Ok(())
    }
}
