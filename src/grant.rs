//! Step-up grants and challenges. A grant is keyed by the transaction digest and records how it
//! was earned; a single-use grant is consumed atomically when it approves. A challenge is the
//! open request for step-up that a completion (OIDC callback, RFC 9470 retry, grant API) answers.
//!
//! `GrantStore` has an in-memory implementation (the embedded default); the Redis one, shared by
//! every replica, is configured the same way.

mod memory;
mod redis;

use serde::{Deserialize, Serialize};

pub use memory::MemoryStore;
pub use redis::RedisStore;

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
}

/// A fixed-window counter's state after counting one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Events counted in this window, this one included.
    pub count: u64,
    /// Seconds until the window ends.
    pub resets_in: i64,
}

/// The window of `window` seconds containing `now`: its index and its end.
pub fn window_of(window: i64, now: i64) -> (i64, i64) {
    let index = now.div_euclid(window.max(1));
    (index, (index + 1) * window.max(1))
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
    async fn put_grant(&self, grant: Grant) -> Result<(), GrantError>;
    async fn put_challenge(&self, challenge: Challenge) -> Result<(), GrantError>;
    async fn challenge(&self, id: &str, now: i64) -> Result<Option<Challenge>, GrantError>;
    /// Closes a challenge; true if it was open.
    async fn close_challenge(&self, id: &str) -> Result<bool, GrantError>;
    /// Whether the store answers now (for readiness); stores that cannot fail answer `Ok`.
    async fn ping(&self) -> Result<(), GrantError> {
        Ok(())
    }
    /// Counts one event under `name` (a key-safe name) in the fixed window of `window`
    /// seconds that contains `now`. Counters expire with their window.
    async fn count(&self, name: &str, window: i64, now: i64) -> Result<Window, GrantError>;
}
