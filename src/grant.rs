//! Step-up grants and challenges. A grant is keyed by the transaction digest and records how it
//! was earned; a single-use grant is consumed atomically when it approves. A challenge is the
//! open request for step-up that a completion (OIDC callback, RFC 9470 retry, grant API) answers.
//!
//! `GrantStore` has an in-memory implementation (the embedded default); the Redis one, shared by
//! every replica, is configured the same way.

mod memory;
mod redis;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use memory::MemoryStore;
pub use redis::{RedisConnection, RedisStore};

/// A store fault. On a sensitive route every one of these becomes an explicit deny.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("grant store is full")]
    Full,
    #[error("grant store unavailable: {0}")]
    Unavailable(String),
}

/// What a step-up must achieve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    /// Acceptable `acr` values in preference order, weakest acceptable first.
    pub acr_values: Vec<String>,
    /// Greatest age of the authentication event in seconds; 0 = fresh, for this transaction.
    pub max_age: i64,
}

/// How the grant minted by completing a challenge behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantTerms {
    pub single_use: bool,
    pub ttl: i64,
}

/// A step-up grant for one transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub digest: String,
    /// The subject's binding key (issuer|sub).
    pub subject: String,
    pub action: String,
    pub acr: String,
    pub amr: Vec<String>,
    pub auth_time: i64,
    /// `oidc`, `rfc9470` or `grant_api`.
    pub method: String,
    pub challenge_id: Option<String>,
    pub issued_at: i64,
    pub expires_at: i64,
    /// `None`: reusable until it expires.
    pub uses_left: Option<u32>,
    /// The policy revision the step-up was required under (its challenge's).
    #[serde(default)]
    pub policy_revision: Option<String>,
}

/// An open step-up challenge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Challenge {
    pub id: String,
    pub digest: String,
    pub subject: String,
    pub action: String,
    pub requirement: Requirement,
    pub terms: GrantTerms,
    pub issued_at: i64,
    pub expires_at: i64,
    pub return_to: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub attempts: u32,
    /// SHA-256 (base64url) of the value of the `__Host-` cookie set on the browser that was
    /// sent to the IdP; the OIDC callback must present it. `None` for API clients.
    #[serde(default)]
    pub browser_binding: Option<String>,
    /// RFC 9396 `authorization_details` shown to the IdP, when the action asks for it.
    #[serde(default)]
    pub authorization_details: Option<serde_json::Value>,
    /// The policy revision that required the step-up; its grant records it too.
    #[serde(default)]
    pub policy_revision: Option<String>,
}

/// Abuse limits checked when a challenge is issued, in the same store operation that writes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IssueLimits {
    /// Fixed-window rate limits on issuing challenges (per subject, per source IP).
    pub rates: Vec<Rate>,
    /// Cap on the transactions with an open (unexpired, not closed) challenge for the subject;
    /// `None`: no cap. Challenging a transaction again does not take another place.
    pub max_open: Option<u32>,
    /// Cap on challenges issued for one transaction without a grant being minted for it (the
    /// loop guard); `None`: no cap.
    pub max_attempts: Option<u32>,
}

/// At most `max` challenges per fixed window of `window` seconds under a key-safe `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    pub scope: RateScope,
    pub name: String,
    pub window: i64,
    pub max: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateScope {
    Subject,
    SourceIp,
}

/// What issuing a challenge came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issued {
    /// Stored; this is challenge number `attempts` for its transaction since its last grant.
    Open { attempts: u32 },
    /// A rate limit is exhausted until `retry_after` seconds from now.
    RateLimited { scope: RateScope, retry_after: i64 },
    /// The subject has `max_open` transactions with open challenges; the oldest expires in
    /// `retry_after` seconds.
    TooManyOpen { retry_after: i64 },
    /// The transaction was challenged `attempts` times without a grant being minted: the
    /// client is looping. The guard lifts `retry_after` seconds after the last attempt.
    Looping { attempts: u32, retry_after: i64 },
}

/// The window of `window` seconds containing `now`: its index and its end.
pub fn window_of(window: i64, now: i64) -> (i64, i64) {
    let index = now.div_euclid(window.max(1));
    (index, (index + 1) * window.max(1))
}

/// A short, key-safe digest of a subject's binding key (subjects are never written into keys).
pub fn subject_tag(subject: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, subject.as_bytes());
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("subject:{hex}")
}

/// The key-safe name a source address is rate-limited under: `ip:<address>` for IPv4 (an
/// IPv4-mapped IPv6 address counts as its IPv4 address), `ip:<prefix>::/64` for IPv6 — one
/// client holds a whole /64 — and `ip:<as given>` for anything that is not an address.
pub fn source_tag(address: &str) -> String {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => format!("ip:{v4}"),
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let s = v6.segments();
                format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Err(_) => format!("ip:{address}"),
    }
}

/// Where grants and challenges live.
#[tonic::async_trait]
pub trait GrantStore: Send + Sync + 'static {
    /// The live grant for a transaction digest, if any.
    async fn find_grant(&self, digest: &str, now: i64) -> Result<Option<Grant>, GrantError>;
    /// The first live grant among one transaction's digests (the active key's first, then
    /// those under previous binding keys still inside their overlap).
    async fn find_any(&self, digests: &[&str], now: i64) -> Result<Option<Grant>, GrantError> {
        for digest in digests {
            if let Some(grant) = self.find_grant(digest, now).await? {
                return Ok(Some(grant));
            }
        }
        Ok(None)
    }
    /// Spends one use of `grant` atomically: true only if this call spent it (the grant still
    /// exists under the same digest and id, and has not expired).
    async fn consume(&self, grant: &Grant, now: i64) -> Result<bool, GrantError>;
    /// Stores a grant (replacing the transaction's previous one) and resets the transaction's
    /// loop guard: minting a grant is progress.
    async fn put_grant(&self, grant: Grant) -> Result<(), GrantError>;
    /// Checks `limits` and, if they allow it, stores the challenge with its `attempts` set.
    /// Order: the subject's rates, source-IP rates, the open-challenge cap, the loop guard — a
    /// subject over its limit creates and counts no source-IP counter. Refusals leave no
    /// challenge behind; rate-limit events counted before one stay counted.
    async fn issue_challenge(
        &self,
        challenge: Challenge,
        limits: &IssueLimits,
        now: i64,
    ) -> Result<Issued, GrantError>;
    /// Stores a challenge without limits (completions' tests, tools).
    async fn put_challenge(&self, challenge: Challenge) -> Result<(), GrantError> {
        let now = challenge.issued_at;
        match self
            .issue_challenge(challenge, &IssueLimits::default(), now)
            .await?
        {
            Issued::Open { .. } => Ok(()),
            refused => Err(GrantError::Unavailable(format!(
                "challenge refused without limits: {refused:?}"
            ))),
        }
    }
    async fn challenge(&self, id: &str, now: i64) -> Result<Option<Challenge>, GrantError>;
    /// The transaction's most recently issued challenge, if it is still open (what an RFC 9470
    /// retry, which carries no challenge id, answers).
    async fn open_challenge(&self, digest: &str, now: i64)
    -> Result<Option<Challenge>, GrantError>;
    /// Closes a challenge (and frees its place among the subject's open ones); true if this
    /// call closed it.
    async fn close_challenge(&self, challenge: &Challenge) -> Result<bool, GrantError>;
    /// Context signals for one sensitive request, in one round trip where the store allows:
    /// counts it in the subject's velocity window (`velocity`, a key-safe name; `window`
    /// seconds, fixed windows) and says, for each name in `seen`, whether it was claimed
    /// before (with [`GrantStore::claim_once`]). Returns (requests in this window, seen).
    async fn signals(
        &self,
        velocity: &str,
        window: i64,
        seen: [&str; 2],
        now: i64,
    ) -> Result<(u64, [bool; 2]), GrantError>;
    /// Records that `event` (a key-safe name) has been used, until `until`; true only for the
    /// first caller (what makes one authentication complete one challenge).
    async fn claim_once(&self, event: &str, until: i64, now: i64) -> Result<bool, GrantError>;
    /// Remembers `mark` (a key-safe name [`GrantStore::signals`] reads back in `seen`: a known
    /// network) until `until`, setting or refreshing it. Marks are the first thing a store short
    /// of room forgets — a forgotten network is only new again, which is stricter — and never
    /// take the room of a [`GrantStore::claim_once`] claim.
    async fn remember(&self, mark: &str, until: i64, now: i64) -> Result<(), GrantError>;
    /// Deletes the transaction's grant; true if there was one.
    async fn revoke_transaction(&self, digest: &str) -> Result<bool, GrantError>;
    /// Deletes every grant of a subject (its binding key, `iss|sub`); returns how many.
    async fn revoke_subject(&self, subject: &str) -> Result<u32, GrantError>;
    /// Whether the store answers now (for readiness); stores that cannot fail answer `Ok`.
    async fn ping(&self) -> Result<(), GrantError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
