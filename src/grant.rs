//! Step-up grants and challenges. A grant is keyed by the transaction digest and records how it
//! was earned; a single-use grant is consumed atomically when it approves. A challenge is the
//! open request for step-up that a completion (OIDC callback, RFC 9470 retry, grant API) answers.
//!
//! [`GrantStore`] is narrow: put/find/consume for grants and challenges, fixed-window counters
//! and set-once marks read in one call ([`GrantStore::tally`]), single-use claims and a ping.
//! What the counters and marks mean lives with their users: the challenge-issuing limits in
//! `challenge::limits`, the context signals in `context::signals`. The store keeps only the
//! bookkeeping its own records need (a subject's open challenges, a transaction's attempts).
//!
//! Backends: in memory (`memory.rs`, the embedded default) and Redis (`redis.rs`: one server,
//! Cluster or Sentinel), chosen by the `grants` config section (`config.rs`). Every backend passes
//! the same contract suite (`contract.rs`, behind the `testkit` feature).

pub mod config;
#[cfg(any(test, feature = "testkit"))]
pub mod contract;
mod memory;
mod redis;

use serde::{Deserialize, Serialize};

pub use config::GrantsConfig;
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

/// The window of `window` seconds containing `now`: its index and its end.
pub fn window_of(window: i64, now: i64) -> (i64, i64) {
    let index = now.div_euclid(window.max(1));
    (index, (index + 1) * window.max(1))
}

/// Most live entries one journal keeps ([`GrantStore::append`]).
pub const JOURNAL_MAX: usize = 64;

/// A short, key-safe digest of a subject's binding key (subjects are never written into keys).
pub fn subject_tag(subject: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, subject.as_bytes());
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("subject:{hex}")
}

/// One fixed-window counter to count an event under: `name` is key-safe, `window` in seconds;
/// with a `max`, counting stops at it (see [`GrantStore::tally`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter<'a> {
    pub name: &'a str,
    pub window: i64,
    pub max: Option<u64>,
}

/// What [`GrantStore::tally`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Each counter's count in its current window, this event included, in the order asked;
    /// shorter than the counters asked when one went over its `max` (it is the last one).
    pub counts: Vec<u64>,
    /// Whether each mark asked for is set (remembered and unexpired), in the order asked; all
    /// `false` when counting stopped at a `max`.
    pub marks: Vec<bool>,
}

/// The store's own caps on storing a challenge (see [`GrantStore::admit_challenge`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    /// Cap on the subject's transactions with an open (unexpired, not closed) challenge;
    /// challenging one of them again takes no other place. `None`: no cap.
    pub max_open: Option<u32>,
    /// Cap on the challenges stored for one transaction since its last grant (the loop guard).
    /// `None`: no cap.
    pub max_attempts: Option<u32>,
}

/// What storing a challenge under [`Caps`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// Stored; challenge number `attempts` for its transaction since its last grant.
    Open { attempts: u32 },
    /// The subject has `max_open` transactions with open challenges; the oldest expires in
    /// `retry_after` seconds.
    TooManyOpen { retry_after: i64 },
    /// The transaction has `attempts` challenges without a grant; the guard (extended by the
    /// challenge's lifetime) lifts in `retry_after` seconds.
    Looping { attempts: u32, retry_after: i64 },
}

/// Which grants to revoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoke<'a> {
    /// The grant of one transaction digest.
    Transaction(&'a str),
    /// Every grant of a subject (its binding key, `iss|sub`).
    Subject(&'a str),
}

/// Which challenge to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeRef<'a> {
    /// By its id (the OIDC `state`).
    Id(&'a str),
    /// The transaction's (digest's) most recently stored challenge.
    Latest(&'a str),
}

/// Where grants and challenges live. The required methods are what a backend implements; the
/// provided ones are conveniences over them.
#[tonic::async_trait]
pub trait GrantStore: Send + Sync + 'static {
    /// Stores a grant (replacing the transaction's previous one) and resets the transaction's
    /// loop guard: minting a grant is progress.
    async fn put_grant(&self, grant: Grant) -> Result<(), GrantError>;
    /// The live grant for a transaction digest, if any.
    async fn find_grant(&self, digest: &str, now: i64) -> Result<Option<Grant>, GrantError>;
    /// Spends one use of `grant` atomically: true only if this call spent it (the grant still
    /// exists under the same digest and id, and has not expired). Exactly once under races; an
    /// answer that may not hold (a lost reply, too few replica acknowledgements) is an error.
    async fn consume(&self, grant: &Grant, now: i64) -> Result<bool, GrantError>;
    /// Deletes grants; returns how many.
    async fn revoke(&self, which: Revoke<'_>) -> Result<u32, GrantError>;

    /// Stores a challenge, with its `attempts` set, if `caps` admit it — checked and written in
    /// one atomic step per record owner (subject, transaction): the open-challenge cap first,
    /// then the loop guard. A refusal leaves no challenge behind.
    async fn admit_challenge(
        &self,
        challenge: Challenge,
        caps: &Caps,
        now: i64,
    ) -> Result<Admitted, GrantError>;
    /// A live challenge.
    async fn find_challenge(
        &self,
        which: ChallengeRef<'_>,
        now: i64,
    ) -> Result<Option<Challenge>, GrantError>;
    /// Closes a challenge (and frees its place among the subject's open ones); true if this
    /// call closed it.
    async fn close_challenge(&self, challenge: &Challenge) -> Result<bool, GrantError>;

    /// Counts one event in each counter, in order, and reads marks — one round trip where the
    /// store allows. A counter whose count goes over its `max` is the last one counted: the
    /// counters after it are neither created nor counted (and the marks not read). Counters
    /// without a `max` are counted without a stop.
    async fn tally(
        &self,
        counters: &[Counter<'_>],
        marks: &[&str],
        now: i64,
    ) -> Result<Tally, GrantError>;
    /// Remembers `mark` (a key-safe name [`GrantStore::tally`] reads back) until `until`,
    /// setting or refreshing it. Marks are the first thing a store short of room forgets — a
    /// mark's user must read a forgotten one as the stricter answer — and never take the room
    /// of a [`GrantStore::claim_once`] claim.
    async fn remember(&self, mark: &str, until: i64, now: i64) -> Result<(), GrantError>;
    /// Records that `event` (a key-safe name) has been used, until `until`; true only for the
    /// first caller (what makes one authentication complete one challenge).
    async fn claim_once(&self, event: &str, until: i64, now: i64) -> Result<bool, GrantError>;
    /// Adds `entry` to the journal `name` (a key-safe name), kept until `until`. A journal keeps
    /// at most [`JOURNAL_MAX`] live entries (those expiring soonest go first); a journal is never
    /// forgotten to make room — a store short of room refuses the entry (`Full`).
    async fn append(&self, name: &str, entry: &str, until: i64, now: i64)
    -> Result<(), GrantError>;
    /// The live entries of each journal in `names` (in that order), each journal's soonest to
    /// expire first.
    async fn journals(&self, names: &[&str], now: i64) -> Result<Vec<Vec<String>>, GrantError>;
    /// Whether the store answers now (for readiness); stores that cannot fail answer `Ok`.
    async fn ping(&self) -> Result<(), GrantError> {
        Ok(())
    }

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
    /// Stores a challenge without caps (completions' tests, tools).
    async fn put_challenge(&self, challenge: Challenge) -> Result<(), GrantError> {
        let now = challenge.issued_at;
        match self
            .admit_challenge(challenge, &Caps::default(), now)
            .await?
        {
            Admitted::Open { .. } => Ok(()),
            refused => Err(GrantError::Unavailable(format!(
                "challenge refused without caps: {refused:?}"
            ))),
        }
    }
    /// A live challenge by id.
    async fn challenge(&self, id: &str, now: i64) -> Result<Option<Challenge>, GrantError> {
        self.find_challenge(ChallengeRef::Id(id), now).await
    }
    /// The transaction's most recently issued challenge, if it is still open (what an RFC 9470
    /// retry, which carries no challenge id, answers).
    async fn open_challenge(
        &self,
        digest: &str,
        now: i64,
    ) -> Result<Option<Challenge>, GrantError> {
        self.find_challenge(ChallengeRef::Latest(digest), now).await
    }
    /// Deletes the transaction's grant; true if there was one.
    async fn revoke_transaction(&self, digest: &str) -> Result<bool, GrantError> {
        Ok(self.revoke(Revoke::Transaction(digest)).await? > 0)
    }
    /// Deletes every grant of a subject (its binding key, `iss|sub`); returns how many.
    async fn revoke_subject(&self, subject: &str) -> Result<u32, GrantError> {
        self.revoke(Revoke::Subject(subject)).await
    }
}

#[cfg(test)]
mod tests;
