//! An evidence sink that keeps lifecycle records in memory, as JSON, and can be made to fail.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use crate::evidence::{Evidence, EvidenceContext, EvidenceError, Lifecycle, Recorder};

/// Keeps every lifecycle record it is given (decision records are accepted and dropped); while
/// [`Kept::fail`] is set, every record fails as a full spool would.
#[derive(Default)]
pub struct Kept {
    records: Mutex<Vec<Value>>,
    failing: AtomicBool,
}

impl Kept {
    /// The records kept so far.
    pub fn records(&self) -> Vec<Value> {
        self.records.lock().unwrap().clone()
    }

    /// Makes records fail (`true`) or succeed again.
    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

#[tonic::async_trait]
impl Evidence for Kept {
    async fn record(&self, _: &EvidenceContext<'_>) -> Result<(), EvidenceError> {
        Ok(())
    }

    async fn lifecycle(&self, event: &Lifecycle<'_>) -> Result<(), EvidenceError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(EvidenceError::Unavailable("failing (test)".into()));
        }
        let record = Recorder::default().lifecycle(event, std::time::UNIX_EPOCH);
        self.records.lock().unwrap().push(Value::Object(record));
        Ok(())
    }
}
