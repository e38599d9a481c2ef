//! The SETs the test transmitter signs: [`Set`] with its knobs (a wrong `aud`, a bad signature,
//! a reused `jti`) and builders for the CAEP and RISC events the tests send.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::{AUDIENCE, CAEP, RISC};

/// The wall clock in unix seconds.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A process-unique `jti`.
fn fresh_jti() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut random = [0u8; 8];
    aws_lc_rs::rand::fill(&mut random).unwrap();
    format!(
        "set-{}-{}",
        NEXT.fetch_add(1, Ordering::Relaxed),
        URL_SAFE_NO_PAD.encode(random)
    )
}

/// One SET to be signed: its event, subject and the knobs tests turn.
#[derive(Debug, Clone)]
pub struct Set {
    pub jti: String,
    pub aud: Value,
    pub event_type: String,
    pub sub_id: Value,
    pub event: Value,
    pub iat: i64,
    /// Signed by the impostor key under the transmitter's `kid`.
    pub forged: bool,
}

impl Set {
    /// A SET of `event_type` (full URI) about `sub_id`, to [`AUDIENCE`], issued now.
    pub fn new(event_type: &str, sub_id: Value, event: Value) -> Set {
        Set {
            jti: fresh_jti(),
            aud: json!(AUDIENCE),
            event_type: event_type.to_string(),
            sub_id,
            event,
            iat: now(),
            forged: false,
        }
    }

    /// Addressed to another receiver.
    pub fn with_aud(mut self, aud: &str) -> Set {
        self.aud = json!(aud);
        self
    }

    /// Under another SET's `jti`.
    pub fn with_jti(mut self, jti: &str) -> Set {
        self.jti = jti.to_string();
        self
    }

    /// Signed by another key under the transmitter's `kid` (a bad signature).
    pub fn forged(mut self) -> Set {
        self.forged = true;
        self
    }

    pub(super) fn claims(&self, iss: &str) -> Value {
        json!({"iss": iss, "aud": self.aud, "iat": self.iat, "jti": self.jti,
               "sub_id": self.sub_id, "events": {self.event_type.clone(): self.event}})
    }
}

/// An RFC 9493 `iss_sub` identifier.
pub fn iss_sub(iss: &str, sub: &str) -> Value {
    json!({"format": "iss_sub", "iss": iss, "sub": sub})
}

/// CAEP `session-revoked` of `sub`'s session `sid` (SSF complex subject), at `event_timestamp`.
pub fn session_revoked(iss: &str, sub: &str, sid: &str) -> Set {
    Set::new(
        &format!("{CAEP}session-revoked"),
        json!({"user": iss_sub(iss, sub), "session": {"format": "opaque", "id": sid}}),
        json!({"event_timestamp": now(), "initiating_entity": "admin",
               "reason_admin": {"en": "session revoked by the test"}}),
    )
}

/// CAEP `assurance-level-change` of `sub` from `previous` to `current` (NIST AAL names).
pub fn assurance_level_change(iss: &str, sub: &str, previous: &str, current: &str) -> Set {
    Set::new(
        &format!("{CAEP}assurance-level-change"),
        iss_sub(iss, sub),
        json!({"namespace": "NIST-AAL", "previous_level": previous, "current_level": current,
               "event_timestamp": now()}),
    )
}

/// RISC `account-disabled` of `sub`, at `event_timestamp` `at`.
pub fn account_disabled(iss: &str, sub: &str, at: i64) -> Set {
    Set::new(
        &format!("{RISC}account-disabled"),
        iss_sub(iss, sub),
        json!({"reason": "hijacking", "event_timestamp": at}),
    )
}

/// An event type no specification defines, about `sub`.
pub fn unknown_event(iss: &str, sub: &str) -> Set {
    Set::new(
        "https://schemas.example.com/secevent/event-type/unheard-of",
        iss_sub(iss, sub),
        json!({"event_timestamp": now(), "note": "nobody acts on this"}),
    )
}
