//! A Security Event Token's claims (RFC 8417), checked after its signature: explicit type
//! `secevent+jwt`, the exact issuer and one of our audiences, `iat` within bounds, a `jti` to
//! protect against replay, and — the Shared Signals profile — exactly one event, whose subject is
//! `sub_id` (SSF 1.0) or the event's own `subject` (earlier CAEP/RISC drafts). What the event
//! does is [`super::event`]'s.

use serde_json::{Map, Value};

use super::event::{Event, EventKind};
use super::subject::SubjectId;

/// Why a SET is refused, as RFC 8935 §2.4 names it (the `err` of the error response; the same
/// codes answer a poll's `setErrs`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// Unparseable, or an event that breaks its definition.
    #[error("invalid_request: {0}")]
    InvalidRequest(String),
    /// The signature or key is not acceptable.
    #[error("invalid_key: {0}")]
    InvalidKey(String),
    #[error("invalid_issuer: {0}")]
    InvalidIssuer(String),
    #[error("invalid_audience: {0}")]
    InvalidAudience(String),
    /// Seen before (`jti` replay): refused, and never applied twice.
    #[error("invalid_request: replayed jti")]
    Replayed,
    /// The receiver could not record it (its store did not answer): the transmitter retries.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
}

impl SetError {
    /// The RFC 8935 error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) | Self::Replayed => "invalid_request",
            Self::InvalidKey(_) => "invalid_key",
            Self::InvalidIssuer(_) => "invalid_issuer",
            Self::InvalidAudience(_) => "invalid_audience",
            Self::Unavailable(_) => "temporarily_unavailable",
        }
    }

    /// The short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Replayed => "replayed",
            Self::Unavailable(_) => "unavailable",
            _ => self.code(),
        }
    }
}

fn bad(message: impl Into<String>) -> SetError {
    SetError::InvalidRequest(message.into())
}

/// What the receiver expects of every SET.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    /// Audiences that name this receiver (one must be in `aud`).
    pub audiences: &'a [String],
    /// Oldest `iat` accepted, in seconds before now (queued poll deliveries are older than
    /// pushed ones); the `jti` is remembered at least this long.
    pub max_age: i64,
    /// Clock skew allowed for an `iat` in the future.
    pub leeway: i64,
}

/// One verified SET, read.
#[derive(Debug, Clone, PartialEq)]
pub struct SecurityEvent {
    pub jti: String,
    pub iat: i64,
    /// The event type URI as sent.
    pub uri: String,
    pub kind: EventKind,
    pub subject: SubjectId,
    /// The subject identifier as sent (for evidence).
    pub sub_id: Value,
    /// The event's own time (`event_timestamp`), else `iat`.
    pub time: i64,
    /// The event's payload (without `subject`), for evidence and the policy.
    pub event: Event,
    /// The transmitter's transaction id (`txn`), if any.
    pub txn: Option<String>,
}

/// Reads the claims of a SET whose signature and `iss` were verified, with its header `typ`.
pub fn read(
    typ: Option<&str>,
    claims: &Value,
    expect: &Expect<'_>,
    now: i64,
) -> Result<SecurityEvent, SetError> {
    let typ_ok = typ.is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        t == "secevent+jwt" || t == "application/secevent+jwt"
    });
    if !typ_ok {
        return Err(bad("typ must be secevent+jwt"));
    }
    if !audience_ok(claims.get("aud"), expect.audiences) {
        return Err(SetError::InvalidAudience(
            "aud does not name this receiver".into(),
        ));
    }
    let iat = integer(claims, "iat")?.ok_or_else(|| bad("missing iat"))?;
    if iat > now + expect.leeway {
        return Err(bad("iat in the future"));
    }
    if iat < now - expect.max_age {
        return Err(bad("iat too old"));
    }
    if integer(claims, "exp")?.is_some_and(|exp| exp < now - expect.leeway) {
        return Err(bad("expired"));
    }
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or_else(|| bad("missing or oversized jti"))?;
    // RFC 8417 §2.2: a SET's subject is never `sub` (so it is never taken for an ID token).
    if claims.get("sub").is_some() {
        return Err(bad("a SET carries its subject in sub_id, not sub"));
    }
    let events = claims
        .get("events")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("missing events"))?;
    let mut iter = events.iter();
    let (Some((uri, payload)), None) = (iter.next(), iter.next()) else {
        return Err(bad("exactly one event per SET"));
    };
    let payload = payload
        .as_object()
        .ok_or_else(|| bad("an event payload is a JSON object"))?;
    let (subject, sub_id) = subject_of(claims, payload)?;
    let kind = EventKind::of(uri);
    let event = Event::read(kind, payload).map_err(bad)?;
    let time = match payload.get("event_timestamp") {
        None => iat,
        Some(v) => v
            .as_i64()
            .filter(|t| *t > 0 && *t <= now + expect.leeway)
            .ok_or_else(|| bad("event_timestamp is not a past time in seconds"))?,
    };
    Ok(SecurityEvent {
        jti: jti.to_string(),
        iat,
        uri: uri.clone(),
        kind,
        subject,
        sub_id,
        time,
        event,
        txn: claims
            .get("txn")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// `sub_id` (SSF 1.0) or the event's `subject` (earlier drafts); not both, and one of them.
fn subject_of(
    claims: &Value,
    payload: &Map<String, Value>,
) -> Result<(SubjectId, Value), SetError> {
    match (claims.get("sub_id"), payload.get("subject")) {
        (Some(s), None) | (None, Some(s)) => Ok((SubjectId::read(s).map_err(bad)?, s.clone())),
        (Some(_), Some(_)) => Err(bad("both sub_id and an event subject")),
        (None, None) => Err(bad("missing sub_id")),
    }
}

fn audience_ok(aud: Option<&Value>, ours: &[String]) -> bool {
    match aud {
        Some(Value::String(a)) => ours.contains(a),
        Some(Value::Array(list)) => list
            .iter()
            .any(|a| a.as_str().is_some_and(|a| ours.iter().any(|o| o == a))),
        _ => false,
    }
}

/// An integer time claim: absent is `None`; anything else is refused.
fn integer(claims: &Value, name: &str) -> Result<Option<i64>, SetError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| bad(format!("{name} is not an integer"))),
    }
}
