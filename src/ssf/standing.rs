//! A subject's standing on a sensitive request: the events its journals hold (its `iss|sub`, its
//! verified e-mail address, its session), what they mean for the token presented
//! ([`super::event::assess`]), and the claims a `token-claims-change` overrides — applied to the
//! subject before the policy sees it. One grant-store call (a journal per key, pipelined).

use std::sync::Arc;

use serde_json::Value;

use super::event::{Presented, Recorded, assess};
use super::receiver::{journal, token_keys};
use crate::fault::Fault;
use crate::grant::{GrantError, GrantStore};
use crate::identity::{Subject, SubjectKind};

/// Reads and judges subjects' events.
#[derive(Clone)]
pub struct Standing {
    store: Arc<dyn GrantStore>,
}

/// A subject's recorded events and what they decided.
#[derive(Debug, Default)]
pub struct Judged {
    /// The events, oldest first (the policy's `context.events`).
    pub events: Vec<Recorded>,
    /// The refusal they call for, if any.
    pub refused: Option<Fault>,
}

impl Standing {
    pub fn new(store: Arc<dyn GrantStore>) -> Self {
        Self { store }
    }

    /// Judges `subject`'s token against its events and applies changed claims to it. Workloads
    /// and anonymous callers have no journal.
    pub async fn judge(&self, subject: &mut Subject, now: i64) -> Result<Judged, GrantError> {
        let (SubjectKind::Human, Some(iss), Some(sub)) = (
            subject.kind,
            subject.issuer.as_deref(),
            subject.id.as_deref(),
        ) else {
            return Ok(Judged::default());
        };
        let claims = &subject.claims;
        let verified_email = claims
            .get("email")
            .and_then(Value::as_str)
            .filter(|_| claims.get("email_verified").and_then(Value::as_bool) != Some(false));
        let keys = token_keys(iss, sub, verified_email, subject.sid.as_deref());
        let names: Vec<String> = keys.iter().map(|k| journal(k)).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let journals = self.store.journals(&names, now).await?;
        let mut events =
            Recorded::read_all(journals.into_iter().flatten()).map_err(GrantError::Unavailable)?;
        if events.is_empty() {
            return Ok(Judged::default());
        }
        events.sort_by(|a, b| (a.time, &a.jti).cmp(&(b.time, &b.jti)));
        events.dedup_by(|a, b| a.jti == b.jti);
        let assessment = assess(
            &events,
            Presented {
                sid: subject.sid.as_deref(),
                iat: claims.get("iat").and_then(Value::as_i64),
                auth_time: subject.auth_time,
            },
        );
        if let Value::Object(claims) = &mut subject.claims {
            claims.extend(assessment.claims);
        }
        Ok(Judged {
            events,
            refused: assessment.refused.map(|reason| match reason {
                "session_revoked" => Fault::SessionRevoked,
                _ => Fault::AccountEvent,
            }),
        })
    }
}
