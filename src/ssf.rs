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
//! - [`push`]: RFC 8935 push delivery on the HTTP port;
//! - [`discovery`], [`stream`], [`verification`]: the transmitter's metadata, the stream
//!   stepguard manages there, and the verification events that prove it delivers;
//! - [`metadata`]: stepguard's own transmitter metadata and key set, when it sends SETs.

pub mod config;
pub mod deliver;
pub mod discovery;
pub mod event;
pub mod metadata;
pub mod poll;
pub mod push;
pub mod receiver;
pub mod send;
pub mod set;
pub mod standing;
pub mod stream;
pub mod subject;
pub mod verification;

use config::{SharedSignalsConfig, TransmitterConfig};
use receiver::Applied;
use stream::Management;

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

/// What receiving serves and runs: the push endpoint (its path), the poller, the stream
/// management.
pub type Receiving = (
    Option<(String, push::Push)>,
    Option<poll::Poller>,
    Option<Management>,
);

/// Discovery, before the receiver is built: the transmitter as receiving uses it (its key set
/// the discovered `jwks_uri` when the configuration names none) and its stream management,
/// when configured and offered. A failure refuses to start ([`discovery`]).
pub async fn discovered(
    transmitter: &TransmitterConfig,
    config: &SharedSignalsConfig,
) -> Result<(TransmitterConfig, Option<Management>), String> {
    let metadata = discovery::discover(transmitter, config)
        .await
        .map_err(|e| e.to_string())?;
    let management = match &metadata {
        Some(metadata) => Management::new(config, metadata)?,
        None => None,
    };
    Ok((discovery::keyed(transmitter, metadata.as_ref()), management))
}

/// Counts one applied SET by its event type (`ignored` for the types stepguard does not act on);
/// a verification event is matched ([`verification::answered`]).
pub(crate) fn applied(delivery: &'static str, applied: &Applied) {
    verification::answered(&applied.event);
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
