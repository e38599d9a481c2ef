//! The CAEP, RISC and SSF event types stepguard acts on, what each requires of its payload, and
//! what a subject's recorded events mean for a token presented afterwards ([`assess`]):
//!
//! | event | applied on receipt | on the next sensitive request |
//! |---|---|---|
//! | CAEP `session-revoked` | the subject's grants and open challenges revoked | a token with that `sid` (without a `sid` in the event: issued before it) is refused until it expires |
//! | CAEP `assurance-level-change` (decrease), `credential-change` | the subject's grants revoked | the policy sees the event (`context.events`) |
//! | CAEP `token-claims-change` | – | the event's claims override an older token's for the policy |
//! | RISC `account-disabled`, `account-purged`, `credential-compromise`, `sessions-revoked` | the subject's grants and open challenges revoked | refused (403) until a sign-in newer than the event |
//! | SSF `verification` | answered (recorded) | – |
//! | anything else | ignored and counted | – |

use serde_json::{Map, Value};

const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";
const SSF: &str = "https://schemas.openid.net/secevent/ssf/event-type/";

/// The event types stepguard knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    SessionRevoked,
    AssuranceLevelChange,
    CredentialChange,
    TokenClaimsChange,
    AccountDisabled,
    AccountPurged,
    CredentialCompromise,
    SessionsRevoked,
    Verification,
    /// Anything else: ignored (counted).
    Unknown,
}

impl EventKind {
    /// The kind of an event type URI.
    pub fn of(uri: &str) -> Self {
        if let Some(name) = uri.strip_prefix(CAEP) {
            return match name {
                "session-revoked" => Self::SessionRevoked,
                "assurance-level-change" => Self::AssuranceLevelChange,
                "credential-change" => Self::CredentialChange,
                "token-claims-change" => Self::TokenClaimsChange,
                _ => Self::Unknown,
            };
        }
        if let Some(name) = uri.strip_prefix(RISC) {
            return match name {
                "account-disabled" => Self::AccountDisabled,
                "account-purged" => Self::AccountPurged,
                "credential-compromise" => Self::CredentialCompromise,
                "sessions-revoked" => Self::SessionsRevoked,
                _ => Self::Unknown,
            };
        }
        match uri.strip_prefix(SSF) {
            Some("verification") => Self::Verification,
            _ => Self::Unknown,
        }
    }

    /// The short name the policy and the evidence see (`session-revoked`).
    pub fn name(self) -> &'static str {
        match self {
            Self::SessionRevoked => "session-revoked",
            Self::AssuranceLevelChange => "assurance-level-change",
            Self::CredentialChange => "credential-change",
            Self::TokenClaimsChange => "token-claims-change",
            Self::AccountDisabled => "account-disabled",
            Self::AccountPurged => "account-purged",
            Self::CredentialCompromise => "credential-compromise",
            Self::SessionsRevoked => "sessions-revoked",
            Self::Verification => "verification",
            Self::Unknown => "unknown",
        }
    }

    /// The kind of a recorded event's short name.
    pub fn from_name(name: &str) -> Self {
        ALL.into_iter()
            .find(|k| k.name() == name)
            .unwrap_or(Self::Unknown)
    }

    /// RISC account events: sensitive actions refused until a newer sign-in.
    pub fn locks_out(self) -> bool {
        matches!(
            self,
            Self::AccountDisabled
                | Self::AccountPurged
                | Self::CredentialCompromise
                | Self::SessionsRevoked
        )
    }
}

const ALL: [EventKind; 10] = [
    EventKind::SessionRevoked,
    EventKind::AssuranceLevelChange,
    EventKind::CredentialChange,
    EventKind::TokenClaimsChange,
    EventKind::AccountDisabled,
    EventKind::AccountPurged,
    EventKind::CredentialCompromise,
    EventKind::SessionsRevoked,
    EventKind::Verification,
    EventKind::Unknown,
];

/// An event's payload, checked against its definition (without `subject`).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub facts: Map<String, Value>,
}

impl Event {
    /// Checks what the event's definition requires; keeps the rest as sent.
    pub fn read(kind: EventKind, payload: &Map<String, Value>) -> Result<Self, String> {
        let mut facts = payload.clone();
        facts.remove("subject");
        let string = |name: &str| facts.get(name).and_then(Value::as_str);
        match kind {
            EventKind::AssuranceLevelChange => {
                string("namespace").ok_or("assurance-level-change without namespace")?;
                string("current_level").ok_or("assurance-level-change without current_level")?;
                if let Some(d) = facts.get("change_direction")
                    && !matches!(d.as_str(), Some("increase" | "decrease"))
                {
                    return Err("change_direction is increase or decrease".into());
                }
            }
            EventKind::CredentialChange => {
                string("credential_type").ok_or("credential-change without credential_type")?;
                string("change_type").ok_or("credential-change without change_type")?;
            }
            EventKind::TokenClaimsChange => {
                let claims = facts
                    .get("claims")
                    .and_then(Value::as_object)
                    .ok_or("token-claims-change without claims")?;
                // Claims that identify the token or its subject are never overridden.
                const FIXED: [&str; 8] = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid"];
                if let Some(name) = claims.keys().find(|k| FIXED.contains(&k.as_str())) {
                    return Err(format!("token-claims-change cannot change `{name}`"));
                }
            }
            _ => {}
        }
        Ok(Self { facts })
    }

    /// For `assurance-level-change`: a decrease (explicit, or a current level below the
    /// previous one on `ladder`).
    pub fn is_decrease(&self, ladder: &[String]) -> bool {
        let level = |name: &str| {
            let value = self.facts.get(name).and_then(Value::as_str)?;
            Some(
                ladder
                    .iter()
                    .position(|l| l == value)
                    .map_or(-1, |i| i as i64),
            )
        };
        match self.facts.get("change_direction").and_then(Value::as_str) {
            Some(direction) => direction == "decrease",
            None => {
                matches!((level("current_level"), level("previous_level")), (Some(c), Some(p)) if c < p)
            }
        }
    }
}

/// One event as recorded for a subject (what replicas read back, and the policy sees).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recorded {
    /// The short name ([`EventKind::name`]).
    #[serde(rename = "type")]
    pub kind: String,
    /// When it happened (`event_timestamp`, else the SET's `iat`).
    pub time: i64,
    pub jti: String,
    /// The session it names, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The payload as sent (without `subject`).
    pub facts: Map<String, Value>,
}

impl Recorded {
    /// Reads journal entries back. An entry that does not read is an error, never skipped: a
    /// subject's events are what refuses its tokens, so one lost would fail open.
    pub fn read_all(entries: impl IntoIterator<Item = String>) -> Result<Vec<Self>, String> {
        entries
            .into_iter()
            .map(|e| serde_json::from_str(&e).map_err(|err| format!("unreadable event: {err}")))
            .collect()
    }

    /// A `session-revoked` or an account event: the subject's open challenges go with it.
    pub fn revokes_challenges(&self) -> bool {
        let kind = EventKind::from_name(&self.kind);
        kind == EventKind::SessionRevoked || kind.locks_out()
    }
}

/// The facts of a presented token that the recorded events are judged against.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    pub sid: Option<&'a str>,
    pub iat: Option<i64>,
    pub auth_time: Option<i64>,
}

/// What a subject's events mean for a token.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assessment {
    /// The reason a sensitive action is refused, if it is.
    pub refused: Option<&'static str>,
    /// Claims that override the token's for the policy (newest event last wins).
    pub claims: Map<String, Value>,
}

/// Judges a token against its subject's recorded events.
pub fn assess(events: &[Recorded], token: Presented<'_>) -> Assessment {
    let mut out = Assessment::default();
    let issued_before = |time: i64| token.iat.is_none_or(|iat| iat < time);
    let mut ordered: Vec<&Recorded> = events.iter().collect();
    ordered.sort_by_key(|e| e.time);
    for event in ordered {
        match EventKind::from_name(&event.kind) {
            EventKind::SessionRevoked => {
                let hit = match (&event.sid, token.sid) {
                    (Some(revoked), Some(sid)) => revoked == sid,
                    (Some(_), None) => issued_before(event.time),
                    (None, _) => issued_before(event.time),
                };
                if hit {
                    out.refused = Some("session_revoked");
                }
            }
            kind if kind.locks_out() && token.auth_time.is_none_or(|t| t <= event.time) => {
                out.refused = Some("account_event");
            }
            EventKind::TokenClaimsChange if issued_before(event.time) => {
                if let Some(Value::Object(claims)) = event.facts.get("claims") {
                    out.claims.extend(claims.clone());
                }
            }
            _ => {}
        }
    }
    out
}
