//! Stream verification (SSF 1.0 §8.1.4): stepguard asks the transmitter for a verification
//! event carrying a `state` ([`super::stream`]), and that event, arriving by push or poll like
//! any SET, is matched here ([`answered`], called for every applied SET).
//!
//! A `state` is `nonce.tag`: a random nonce and an HMAC-SHA256 of the stream id and the nonce
//! under the management bearer token. Every replica that manages the stream holds the same
//! token, so the event is recognised by whichever replica it reaches — with push delivery
//! behind a load balancer that is rarely the one that asked. What is kept is process-wide, as
//! metrics are, keyed by stream id: the key of each stream this process manages and whether a
//! verification arrived. A verification event with a state that is not ours, or without one
//! (the transmitter may verify on its own), is accepted, as the spec has it, and counted.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use super::event::EventKind;
use super::set::SecurityEvent;
use super::subject::Identifier;
use crate::telemetry::metrics::{SSF_STREAM_VERIFIED, SSF_VERIFICATIONS};

/// How a verification event was matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its state is one this deployment asked for, on a stream it manages.
    Matched,
    /// It carries a state that is not (an unknown stream, a foreign or forged state).
    UnknownState,
    /// It carries no state: the transmitter verified on its own.
    Unsolicited,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::Matched => "matched",
            Self::UnknownState => "unknown_state",
            Self::Unsolicited => "unsolicited",
        }
    }
}

struct Watched {
    key: hmac::Key,
    verified: bool,
}

static STREAMS: LazyLock<Mutex<HashMap<String, Watched>>> = LazyLock::new(Default::default);

fn streams() -> std::sync::MutexGuard<'static, HashMap<String, Watched>> {
    STREAMS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts recognising verification states of `stream_id`, keyed by `secret` (the management
/// bearer token); whether it was verified is kept.
pub fn watch(stream_id: &str, secret: &str) {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut streams = streams();
    let verified = streams.get(stream_id).is_some_and(|w| w.verified);
    streams.insert(stream_id.to_string(), Watched { key, verified });
}

/// A fresh state for a verification request on `stream_id` (watched first); `None` when the
/// stream is not watched or the system RNG fails.
pub fn state(stream_id: &str) -> Option<String> {
    let nonce = crate::random::random_token(16)?;
    let streams = streams();
    let watched = streams.get(stream_id)?;
    Some(format!("{nonce}.{}", tag(&watched.key, stream_id, &nonce)))
}

fn tag(key: &hmac::Key, stream_id: &str, nonce: &str) -> String {
    URL_SAFE_NO_PAD.encode(hmac::sign(key, &message(stream_id, nonce)).as_ref())
}

/// What a state's tag is the HMAC of.
fn message(stream_id: &str, nonce: &str) -> Vec<u8> {
    format!("ssf-verification|{stream_id}|{nonce}").into_bytes()
}

/// Whether a verification event with one of our states arrived for `stream_id`.
pub fn verified(stream_id: &str) -> bool {
    streams().get(stream_id).is_some_and(|w| w.verified)
}

/// Matches a verification event (any other event: `None`), logs and counts it.
pub fn answered(event: &SecurityEvent) -> Option<Outcome> {
    if event.kind != EventKind::Verification {
        return None;
    }
    let stream_id = match &event.subject.user {
        Some(Identifier::Opaque(id)) => id.as_str(),
        _ => "",
    };
    let state = event.event.facts.get("state").and_then(Value::as_str);
    let outcome = match state {
        None => Outcome::Unsolicited,
        Some(state) if ours(stream_id, state) => Outcome::Matched,
        Some(_) => Outcome::UnknownState,
    };
    metrics::counter!(SSF_VERIFICATIONS, "outcome" => outcome.label()).increment(1);
    match outcome {
        Outcome::Matched => {
            metrics::gauge!(SSF_STREAM_VERIFIED).set(1.0);
            tracing::info!(stream_id, jti = %event.jti, "SSF stream verified");
        }
        _ => tracing::info!(
            stream_id,
            jti = %event.jti,
            outcome = outcome.label(),
            "SSF verification event not requested by this deployment (accepted)"
        ),
    }
    Some(outcome)
}

/// Whether `state` is `nonce.tag` with a valid tag for `stream_id`; marks the stream verified.
fn ours(stream_id: &str, state: &str) -> bool {
    let Some((nonce, tag)) = state.split_once('.') else {
        return false;
    };
    let Ok(tag) = URL_SAFE_NO_PAD.decode(tag) else {
        return false;
    };
    let mut streams = streams();
    let Some(watched) = streams.get_mut(stream_id) else {
        return false;
    };
    let valid = hmac::verify(&watched.key, &message(stream_id, nonce), &tag).is_ok();
    watched.verified |= valid;
    valid
}
