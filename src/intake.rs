//! Intake refusals: requests refused before anyone was identified — a malformed request (400
//! `malformed_request`), a missing or invalid token (401 `invalid_token`), a route tag naming no
//! action (503 `unknown_action_tag`). Anyone can send one per request, so none of them writes a
//! durable evidence record (anonymous traffic must not fill the spool, evict real evidence under
//! `delete_oldest`, or make `refuse` block approvals). Each is counted
//! (`stepguard_intake_refusals_total{reason}`) and logged, at most [`LOG_LINES_PER_SECOND`]
//! lines a second; the lines left out are counted in a line of their own when the next second's
//! first refusal is logged. Every decision with a subject is recorded as before
//! (docs/evidence.md, "What is recorded durably").

use std::sync::{Mutex, PoisonError};

use crate::decision::{Decision, Verdict};
use crate::evidence::Origin;
use crate::telemetry::metrics;

/// Most intake refusals logged in one second (the process's, across every connection).
pub const LOG_LINES_PER_SECOND: u32 = 20;

/// The process's log budget for intake refusals.
static LOG: LogBudget = LogBudget::new(LOG_LINES_PER_SECOND);

/// Whether `decision`, finished without an identified subject, was made before identification:
/// the request was never classified (malformed, unknown route tag) or its token was refused.
/// (Decisions after identification — unbindable transactions, faults — carry their action.)
pub fn before_subject(decision: &Decision) -> bool {
    decision.action.is_none() || matches!(decision.verdict, Verdict::Unauthenticated { .. })
}

/// Counts an intake refusal and logs it if this second's budget allows; `now` in unix seconds.
pub fn refused(decision: &Decision, origin: &Origin, now: i64) {
    metrics::intake_refusal(&decision.reason);
    let Some(suppressed) = LOG.admit(now) else {
        return;
    };
    if suppressed > 0 {
        tracing::warn!(
            suppressed,
            per_second = LOG_LINES_PER_SECOND,
            "intake refusals not logged (over the log budget); all are counted in \
             stepguard_intake_refusals_total"
        );
    }
    log(decision, origin);
}

fn log(decision: &Decision, origin: &Origin) {
    let source = origin.source_address.as_deref().unwrap_or_default();
    let (id, reason) = (&decision.id, &decision.reason);
    match &decision.verdict {
        Verdict::Unauthenticated { description } => tracing::info!(
            decision_id = %id,
            reason = %reason,
            status = 401,
            source,
            description = %description,
            "refused before identification (no evidence record)"
        ),
        Verdict::Deny { .. } | Verdict::Refused => tracing::info!(
            decision_id = %id,
            reason = %reason,
            status = crate::response::status(decision),
            source,
            "refused before identification (no evidence record)"
        ),
        // A route tag naming no action: a configuration fault.
        _ => tracing::error!(
            decision_id = %id,
            reason = %reason,
            status = crate::response::status(decision),
            source,
            "refused before identification (no evidence record)"
        ),
    }
}

/// A log budget: at most `per_second` lines in each second, counting the lines left out.
pub struct LogBudget {
    per_second: u32,
    window: Mutex<Window>,
}

struct Window {
    second: i64,
    logged: u32,
    /// Lines left out and not yet reported.
    suppressed: u64,
}

impl LogBudget {
    pub const fn new(per_second: u32) -> Self {
        Self {
            per_second,
            window: Mutex::new(Window {
                second: i64::MIN,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether a line may be logged in `second`: `Some(n)` with the lines left out before it
    /// that were not reported yet (reported once, when a new second begins), `None` if the
    /// second's budget is spent (the line is counted as left out).
    pub fn admit(&self, second: i64) -> Option<u64> {
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let mut report = 0;
        if w.second != second {
            report = std::mem::take(&mut w.suppressed);
            w.second = second;
            w.logged = 0;
        }
        if w.logged < self.per_second {
            w.logged += 1;
            return Some(report);
        }
        w.suppressed += 1 + report;
        None
    }
}

#[cfg(test)]
mod tests;
