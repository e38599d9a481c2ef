//! Receiving one SET: verified ([`SignedBy`]), read ([`super::set`]), refused when its `jti` was
//! seen, and applied — on every replica, since what it changes lives in the grant store:
//! the subject's grants revoked where the event calls for it, then the event filed in the
//! subject's journals (the `iss|sub` keys tokens are looked up by, an e-mail key, a session
//! key), where every replica reads it on the subject's next sensitive request.
//!
//! Applying is idempotent and ordered so a failure part-way can be retried: grants are revoked
//! first, the journal entries written last, and a SET whose `jti` was already claimed by these
//! same bytes is applied again unless its entries are all there (only then is it a replay); a
//! `jti` claimed by another SET is a duplicate whatever it says.

use std::sync::Arc;

use aws_lc_rs::digest::{SHA256, digest};

use super::config::{SharedSignalsConfig, TransmitterConfig};
use super::event::{EventKind, Recorded};
use super::set::{Expect, SecurityEvent, SetError, read};
use super::subject::{email_key, keys_for, subject_key};
use crate::clock::Clock;
use crate::evidence::{Evidence, Lifecycle, Signal};
use crate::grant::{GrantStore, Revoke, subject_tag};
use crate::identity::signed::SignedBy;
use crate::identity::{IdentityError, Jwks, JwksError};

/// Clock skew allowed on a SET's `iat`.
const LEEWAY: i64 = 60;

/// What receiving a SET did.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub event: SecurityEvent,
    /// The journals it was filed in (subject keys; empty for an event stepguard ignores).
    pub keys: Vec<String>,
    /// Grants revoked.
    pub revoked: u32,
    /// An event type stepguard does not act on (counted, nothing else).
    pub ignored: bool,
}

/// The receiver of one transmitter's SETs.
pub struct Receiver {
    signed_by: SignedBy,
    audiences: Vec<String>,
    group: Vec<String>,
    max_age: i64,
    remember: i64,
    ladder: Vec<String>,
    store: Arc<dyn GrantStore>,
    clock: Arc<dyn Clock>,
    evidence: Option<Arc<dyn Evidence>>,
}

impl Receiver {
    /// Loads the transmitter's key set (a file now; a URL on first use); `ladder` is the `acr`
    /// ladder assurance levels are judged on; an unknown `kid` waits at most `jwks_wait`.
    pub async fn new(
        transmitter: &TransmitterConfig,
        config: &SharedSignalsConfig,
        ladder: &[String],
        store: Arc<dyn GrantStore>,
        clock: Arc<dyn Clock>,
        jwks_wait: std::time::Duration,
    ) -> Result<Self, JwksError> {
        let jwks = Jwks::load(transmitter.jwks.source(jwks_wait)).await?;
        Ok(Self {
            signed_by: SignedBy::new(&transmitter.as_issuer(&config.audiences), jwks),
            audiences: config.audiences.clone(),
            group: transmitter.subject_group(),
            max_age: config.max_age_secs as i64,
            remember: config.remember_secs as i64,
            ladder: ladder.to_vec(),
            store,
            clock,
            evidence: None,
        })
    }

    /// Records every SET applied in `evidence` before it is acknowledged: a SET that cannot be
    /// recorded is not acknowledged (push answers 503, poll leaves it), and comes again.
    pub fn with_evidence(mut self, evidence: Arc<dyn Evidence>) -> Self {
        self.evidence = Some(evidence);
        self
    }

    /// The transmitter's key set (for background refresh).
    pub fn jwks(&self) -> &Jwks {
        self.signed_by.jwks()
    }

    /// Verifies, reads and applies one SET (compact JWS).
    pub async fn receive(&self, token: &str) -> Result<Applied, SetError> {
        let now = self.clock.now();
        let verified = self.signed_by.verify(token).await.map_err(key_error)?;
        let expect = Expect {
            audiences: &self.audiences,
            max_age: self.max_age,
            leeway: LEEWAY,
        };
        let event = read(verified.typ.as_deref(), &verified.claims, &expect, now)?;
        // Two claims, this SET's bytes first, then its `jti`: a `jti` already claimed by other
        // bytes is a duplicate; by these bytes, a retry (a transmitter resends the same SET),
        // applied again unless it was filed in full.
        let until = event.iat + self.max_age + LEEWAY;
        let new_bytes = self
            .store
            .claim_once(&self.claim(&event, Some(token)), until, now)
            .await
            .map_err(unavailable)?;
        let first = self
            .store
            .claim_once(&self.claim(&event, None), until, now)
            .await
            .map_err(unavailable)?;
        let keys = self.keys(&event);
        let entry = self.entry(&event);
        if !first
            && (new_bytes || entry.is_none() || self.filed(&keys, entry.as_deref(), now).await?)
        {
            return Err(SetError::Replayed);
        }
        let revoked = self.revoke(&event, &keys).await?;
        // Recorded before it is filed: a SET whose record failed is not filed, so its retry is
        // applied (and recorded) again rather than taken for a replay.
        self.record(&event, &keys, revoked, entry.is_some()).await?;
        if let Some(entry) = &entry {
            let until = event.time.max(now) + self.remember;
            for key in &keys {
                self.store
                    .append(&journal(key), entry, until, now)
                    .await
                    .map_err(unavailable)?;
            }
        }
        Ok(Applied {
            ignored: event.kind == EventKind::Unknown,
            keys: if entry.is_some() { keys } else { Vec::new() },
            revoked,
            event,
        })
    }

    /// The evidence record of an applied SET.
    async fn record(
        &self,
        event: &SecurityEvent,
        keys: &[String],
        revoked: u32,
        filed: bool,
    ) -> Result<(), SetError> {
        let Some(evidence) = &self.evidence else {
            return Ok(());
        };
        let signal = Signal {
            issuer: self.group.first().map_or("", String::as_str),
            jti: &event.jti,
            event_type: &event.uri,
            time: event.time,
            subject: &event.sub_id,
            user: keys.iter().find(|k| is_subject_key(k)).map(String::as_str),
        };
        let record = Lifecycle::SignalReceived {
            signal,
            revoked,
            filed: if filed { keys.len() } else { 0 },
            ignored: event.kind == EventKind::Unknown,
        };
        evidence
            .lifecycle(&record)
            .await
            .map_err(|e| SetError::Unavailable(format!("evidence: {e}")))
    }

    /// The single-use claim of a SET's `jti` under the transmitter's issuer, or with `token`, of
    /// these very bytes; hashed (key-safe).
    fn claim(&self, event: &SecurityEvent, token: Option<&str>) -> String {
        let issuer = self.group.first().map_or("", String::as_str);
        let mut text = format!("{issuer}|{}", event.jti);
        if let Some(token) = token {
            text.push('|');
            text.push_str(token);
        }
        let hash = digest(&SHA256, text.as_bytes());
        let hex: String = hash.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        match token {
            None => format!("ssf-jti:{hex}"),
            Some(_) => format!("ssf-set:{hex}"),
        }
    }

    /// The journals an event is filed under: its user's keys, and its session's.
    fn keys(&self, event: &SecurityEvent) -> Vec<String> {
        let mut keys = event
            .subject
            .user
            .as_ref()
            .map(|u| keys_for(u, &self.group))
            .unwrap_or_default();
        if let Some(sid) = event.subject.sid() {
            keys.extend(self.group.iter().map(|iss| session_key(iss, sid)));
        }
        keys
    }

    /// The journal entry of an event stepguard acts on (`None` for the others).
    fn entry(&self, event: &SecurityEvent) -> Option<String> {
        if matches!(event.kind, EventKind::Unknown | EventKind::Verification) {
            return None;
        }
        let recorded = Recorded {
            kind: event.kind.name().to_string(),
            time: event.time,
            jti: event.jti.clone(),
            sid: event.subject.sid().map(str::to_string),
            facts: event.event.facts.clone(),
        };
        serde_json::to_string(&recorded).ok()
    }

    /// Whether `entry` is in every one of `keys`' journals.
    async fn filed(
        &self,
        keys: &[String],
        entry: Option<&str>,
        now: i64,
    ) -> Result<bool, SetError> {
        let Some(entry) = entry else { return Ok(true) };
        let names: Vec<String> = keys.iter().map(|k| journal(k)).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let journals = self
            .store
            .journals(&names, now)
            .await
            .map_err(unavailable)?;
        Ok(journals.iter().all(|j| j.iter().any(|e| e == entry)))
    }

    /// Revokes the grants of the subject's `iss|sub` keys when the event calls for it.
    async fn revoke(&self, event: &SecurityEvent, keys: &[String]) -> Result<u32, SetError> {
        let revokes = match event.kind {
            EventKind::SessionRevoked | EventKind::CredentialChange => true,
            EventKind::AssuranceLevelChange => event.event.is_decrease(&self.ladder),
            kind => kind.locks_out(),
        };
        if !revokes {
            return Ok(0);
        }
        let mut revoked = 0;
        for subject in keys.iter().filter(|k| is_subject_key(k)) {
            revoked += self
                .store
                .revoke(Revoke::Subject(subject))
                .await
                .map_err(unavailable)?;
        }
        Ok(revoked)
    }
}

/// The journal of a subject, e-mail or session key (subjects are never written into keys).
pub fn journal(key: &str) -> String {
    format!("ssf:{}", subject_tag(key))
}

/// The key of a session (`sid`) of an issuer's tokens.
pub fn session_key(iss: &str, sid: &str) -> String {
    format!("sid:{iss}|{sid}")
}

/// The journals a token's events are read from: its subject, its verified e-mail address, its
/// session.
pub fn token_keys(iss: &str, sub: &str, email: Option<&str>, sid: Option<&str>) -> Vec<String> {
    let mut keys = vec![subject_key(iss, sub)];
    keys.extend(email.map(email_key));
    keys.extend(sid.map(|sid| session_key(iss, sid)));
    keys
}

/// An `iss|sub` key (the grants' binding key), not an e-mail or session key.
fn is_subject_key(key: &str) -> bool {
    !key.starts_with("email:") && !key.starts_with("sid:")
}

fn unavailable(e: crate::grant::GrantError) -> SetError {
    SetError::Unavailable(e.to_string())
}

/// A verification failure as RFC 8935 names it.
fn key_error(e: IdentityError) -> SetError {
    match e {
        IdentityError::InvalidToken("wrong issuer") => SetError::InvalidIssuer("iss".into()),
        IdentityError::InvalidToken(
            reason @ ("unknown key"
            | "bad signature"
            | "algorithm not allowed"
            | "signing keys expired"),
        ) => SetError::InvalidKey(reason.into()),
        other => SetError::InvalidRequest(other.to_string()),
    }
}

#[cfg(test)]
pub(crate) mod tests;
