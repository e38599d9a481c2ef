//! A subject's standing on a sensitive request: the events its journals hold (its `iss|sub`, its
//! verified e-mail address, its session), what they mean for the token presented
//! ([`super::event::assess`]), and the claims a `token-claims-change` overrides — applied to the
//! subject before the policy sees it. Read in one grant-store call (a journal per key,
//! pipelined) at the same time as the grant lookup, then judged.

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

    /// Reads `subject`'s journals (one grant-store call: pipelined on Redis), to be judged by
    /// [`Standing::judge`]; `None` for workloads and anonymous callers, who have none.
    pub async fn read(
        &self,
        subject: &Subject,
        now: i64,
    ) -> Result<Option<Vec<Vec<String>>>, GrantError> {
        let Some(keys) = keys_of(subject) else {
            return Ok(None);
        };
        let names: Vec<String> = keys.iter().map(|k| journal(k)).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.store.journals(&names, now).await.map(Some)
    }

    /// Judges `subject`'s token against the events of its `journals` ([`Standing::read`]) and
    /// applies changed claims to it.
    pub fn judge(
        subject: &mut Subject,
        journals: Option<Vec<Vec<String>>>,
    ) -> Result<Judged, GrantError> {
        let Some(journals) = journals else {
            return Ok(Judged::default());
        };
        let mut events =
            Recorded::read_all(journals.into_iter().flatten()).map_err(GrantError::Unavailable)?;
        if events.is_empty() {
            return Ok(Judged::default());
        }
        events.sort_by(|a, b| (a.time, &a.jti).cmp(&(b.time, &b.jti)));
        events.dedup_by(|a, b| a.jti == b.jti);
        let claims = &subject.claims;
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

/// The journals a person's token reads: its `iss|sub`, its verified e-mail address, its session.
fn keys_of(subject: &Subject) -> Option<Vec<String>> {
    let (SubjectKind::Human, Some(iss), Some(sub)) = (
        subject.kind,
        subject.issuer.as_deref(),
        subject.id.as_deref(),
    ) else {
        return None;
    };
    let claims = &subject.claims;
    let verified_email = claims
        .get("email")
        .and_then(Value::as_str)
        .filter(|_| claims.get("email_verified").and_then(Value::as_bool) != Some(false));
    Some(token_keys(iss, sub, verified_email, subject.sid.as_deref()))
}
