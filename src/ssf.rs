//! Shared Signals (OpenID SSF 1.0, CAEP, RISC): stepguard as a receiver of Security Event
//! Tokens (RFC 8417) from an IdP or other transmitter, so assurance follows risk after the
//! moment of sign-in. This module holds what a SET *is* and what it *means*:
//!
//! - [`set`]: the claims of a verified SET (type, audience, `iat`, `jti`, one event, subject);
//!   the signature and issuer are checked by [`crate::identity::signed::SignedBy`] with the
//!   transmitter's key set;
//! - [`subject`]: RFC 9493 subject identifiers and the SSF complex subject, and the keys an
//!   event is filed under (the `iss|sub` keys grants are bound to);
//! - [`event`]: the event types stepguard acts on and [`event::assess`], what a subject's
//!   recorded events mean for a token presented later;
//! - [`receiver`]: one SET verified, read, refused if replayed, applied (grants revoked, the
//!   event filed in the subject's journals in the grant store, read by every replica);
//! - [`push`]: RFC 8935 push delivery on the HTTP port.

pub mod config;
pub mod deliver;
pub mod event;
pub mod poll;
pub mod push;
pub mod receiver;
pub mod send;
pub mod set;
pub mod standing;
pub mod subject;

use receiver::Applied;

use crate::telemetry::metrics::SSF_EVENTS;

/// Reads a bearer token file (trimmed; an empty one is an error) — the push endpoint's, the
/// poll endpoint's and each receiver's of stepguard's own SETs.
pub(crate) fn read_token(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{}: the bearer token is empty", path.display()));
    }
    Ok(token.to_string())
}

/// Counts one SET received by `delivery` (`push`, `poll`) with its `outcome`.
pub(crate) fn counted(delivery: &'static str, outcome: &'static str) {
    metrics::counter!(SSF_EVENTS, "delivery" => delivery, "outcome" => outcome, "type" => "none")
        .increment(1);
}

/// Counts one applied SET by its event type (`ignored` for the types stepguard does not act on).
pub(crate) fn applied(delivery: &'static str, applied: &Applied) {
    let outcome = if applied.ignored {
        "ignored"
    } else {
        "applied"
    };
    tracing::info!(
        jti = %applied.event.jti,
        event = applied.event.kind.name(),
        revoked = applied.revoked,
        journals = applied.keys.len(),
        "security event {outcome}"
    );
    metrics::counter!(SSF_EVENTS, "delivery" => delivery, "outcome" => outcome,
        "type" => applied.event.kind.name())
    .increment(1);
}

#[cfg(test)]
mod tests;
