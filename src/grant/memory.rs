//! The in-memory grant store: one process. Each map is bounded on its own, at `max_entries`
//! entries: when one is full its expired entries are swept; then remembered networks are
//! forgotten, soonest to expire first (a forgotten network is only new again: stricter), and any
//! other map still full refuses the one operation that needs room in it (`GrantError::Full`, a
//! 503) and nothing else. Network marks, counters and other subjects' challenges never take
//! the room of the claims and grants a completion writes.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use super::{
    Challenge, Grant, GrantError, GrantStore, IssueLimits, Issued, RateScope, subject_tag,
    window_of,
};

/// Grants, challenges and what guards them, in maps capped at `max_entries` each.
pub struct MemoryStore {
    max_entries: usize,
    inner: Mutex<Inner>,
}

/// Counter name and window index → (count, window end).
type Counters = HashMap<(String, i64), (u64, i64)>;

#[derive(Default)]
struct Inner {
    grants: HashMap<String, Grant>,
    challenges: HashMap<String, Challenge>,
    /// Challenge rate limits (per subject, per source IP).
    rates: Counters,
    /// The subjects' sensitive-request velocity.
    velocity: Counters,
    /// Subject tag → its transactions with an open challenge (digest, expiry).
    open: HashMap<String, Vec<(String, i64)>>,
    /// Transaction digest → (challenges issued since its last grant, until when that counts).
    attempts: HashMap<String, (u32, i64)>,
    /// Transaction digest → its most recently issued challenge id.
    latest: HashMap<String, String>,
    /// Single-use claims (authentication events, challenge outcomes, first uses) → until when.
    claims: HashMap<String, i64>,
    /// Remembered networks (the marks `signals` reads) → until when.
    networks: HashMap<String, i64>,
}

impl MemoryStore {
    pub fn new(max_entries: usize) -> Self {
        Self {
            max_entries,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, GrantError> {
        self.inner
            .lock()
            .map_err(|_| GrantError::Unavailable("memory store poisoned".into()))
    }

    /// Number of live grants and challenges (expired ones may still be counted until swept).
    pub fn len(&self) -> (usize, usize) {
        self.lock()
            .map(|i| (i.grants.len(), i.challenges.len()))
            .unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}

/// Makes room for `key` in `map` (already there, or fewer than `max` entries once the entries
/// no longer `live` are swept); `Full` if there is none.
fn make_room<K, Q, V>(
    map: &mut HashMap<K, V>,
    key: &Q,
    max: usize,
    live: impl Fn(&V) -> bool,
) -> Result<(), GrantError>
where
    K: Borrow<Q> + Eq + Hash,
    Q: Eq + Hash + ?Sized,
{
    if map.contains_key(key) || map.len() < max {
        return Ok(());
    }
    map.retain(|_, v| live(v));
    if map.len() >= max {
        return Err(GrantError::Full);
    }
    Ok(())
}

/// Counts one event under `name` in its fixed window; returns the window's count and end.
fn count(
    counters: &mut Counters,
    max: usize,
    name: &str,
    window: i64,
    now: i64,
) -> Result<(u64, i64), GrantError> {
    let (index, end) = window_of(window, now);
    let key = (name.to_string(), index);
    make_room(counters, &key, max, |(_, end)| *end > now)?;
    let counted = counters.entry(key).or_insert((0, end));
    counted.0 += 1;
    Ok(*counted)
}

/// Forgets the marks that expire soonest, so that an eighth of `max` (at least one) is free.
fn forget_soonest(marks: &mut HashMap<String, i64>, max: usize) {
    let keep = max.saturating_sub(max.div_ceil(8).max(1));
    if marks.len() <= keep {
        return;
    }
    let mut left = marks.len() - keep;
    let mut expiries: Vec<i64> = marks.values().copied().collect();
    let threshold = *expiries.select_nth_unstable(left - 1).1;
    marks.retain(|_, until| {
        let forget = *until < threshold;
        left -= usize::from(forget);
        !forget
    });
    marks.retain(|_, until| {
        let forget = left > 0 && *until == threshold;
        left -= usize::from(forget);
        !forget
    });
}

impl Inner {
    /// Counts the challenge against its rate limits, the subject's first: a subject over its
    /// limit creates and counts no source-IP counter. The first limit exceeded, if any.
    fn count_rates(
        &mut self,
        limits: &IssueLimits,
        max: usize,
        now: i64,
    ) -> Result<Option<Issued>, GrantError> {
        let of = |scope| limits.rates.iter().filter(move |r| r.scope == scope);
        for rate in of(RateScope::Subject).chain(of(RateScope::SourceIp)) {
            let (n, end) = count(&mut self.rates, max, &rate.name, rate.window, now)?;
            if n > rate.max {
                return Ok(Some(Issued::RateLimited {
                    scope: rate.scope,
                    retry_after: (end - now).max(1),
                }));
            }
        }
        Ok(None)
    }

    /// `TooManyOpen` if the subject has `max_open` other transactions with open challenges.
    fn open_refusal(&mut self, c: &Challenge, max_open: Option<u32>, now: i64) -> Option<Issued> {
        let max = max_open? as usize;
        let open: &[(String, i64)] = match self.open.get_mut(&subject_tag(&c.subject)) {
            Some(open) => {
                open.retain(|(_, expires)| *expires > now);
                open
            }
            None => &[],
        };
        if open.len() < max || open.iter().any(|(digest, _)| *digest == c.digest) {
            return None;
        }
        let oldest = open.iter().map(|(_, e)| *e).min().unwrap_or(now + 1);
        Some(Issued::TooManyOpen {
            retry_after: (oldest - now).max(1),
        })
    }

    /// The challenge's attempt number, or `Looping` (the guard then holds another `ttl`).
    fn next_attempt(
        &mut self,
        digest: &str,
        max_attempts: Option<u32>,
        ttl: i64,
        now: i64,
    ) -> Result<u32, Issued> {
        match self.attempts.get_mut(digest) {
            Some((n, until)) if *until > now => {
                if max_attempts.is_some_and(|max| *n >= max) {
                    *until = now + ttl;
                    return Err(Issued::Looping {
                        attempts: *n,
                        retry_after: ttl,
                    });
                }
                Ok(*n + 1)
            }
            _ => Ok(1),
        }
    }

    /// Stores an admitted challenge: room is made in every map it writes before any is written.
    fn store(
        &mut self,
        challenge: Challenge,
        attempts: u32,
        max: usize,
        now: i64,
    ) -> Result<(), GrantError> {
        let (tag, digest) = (subject_tag(&challenge.subject), challenge.digest.clone());
        make_room(&mut self.challenges, &challenge.id, max, |c| {
            c.expires_at > now
        })?;
        make_room(&mut self.open, &tag, max, |open| {
            open.iter().any(|(_, e)| *e > now)
        })?;
        make_room(&mut self.attempts, &digest, max, |(_, until)| *until > now)?;
        make_room(&mut self.latest, &digest, max, |id| {
            self.challenges.get(id).is_some_and(|c| c.expires_at > now)
        })?;
        let open = self.open.entry(tag).or_default();
        match open.iter_mut().find(|(d, _)| *d == digest) {
            Some((_, expires)) => *expires = (*expires).max(challenge.expires_at),
            None => open.push((digest.clone(), challenge.expires_at)),
        }
        self.attempts
            .insert(digest.clone(), (attempts, challenge.expires_at));
        self.latest.insert(digest, challenge.id.clone());
        let challenge = Challenge {
            attempts,
            ..challenge
        };
        self.challenges.insert(challenge.id.clone(), challenge);
        Ok(())
    }
}

#[tonic::async_trait]
impl GrantStore for MemoryStore {
    async fn find_grant(&self, digest: &str, now: i64) -> Result<Option<Grant>, GrantError> {
        let mut inner = self.lock()?;
        match inner.grants.get(digest) {
            Some(g) if g.expires_at <= now => {
                inner.grants.remove(digest);
                Ok(None)
            }
            found => Ok(found.cloned()),
        }
    }

    async fn consume(&self, grant: &Grant, now: i64) -> Result<bool, GrantError> {
        let mut inner = self.lock()?;
        let Some(stored) = inner.grants.get_mut(&grant.digest) else {
            return Ok(false);
        };
        if stored.id != grant.id || stored.expires_at <= now {
            return Ok(false);
        }
        match stored.uses_left {
            None => Ok(true),
            Some(n) if n > 1 => {
                stored.uses_left = Some(n - 1);
                Ok(true)
            }
            Some(_) => {
                inner.grants.remove(&grant.digest);
                Ok(true)
            }
        }
    }

    async fn put_grant(&self, grant: Grant) -> Result<(), GrantError> {
        let mut inner = self.lock()?;
        let now = grant.issued_at;
        make_room(&mut inner.grants, &grant.digest, self.max_entries, |g| {
            g.expires_at > now
        })?;
        inner.attempts.remove(&grant.digest);
        inner.grants.insert(grant.digest.clone(), grant);
        Ok(())
    }

    async fn issue_challenge(
        &self,
        challenge: Challenge,
        limits: &IssueLimits,
        now: i64,
    ) -> Result<Issued, GrantError> {
        let mut inner = self.lock()?;
        let ttl = challenge.expires_at - now;
        if ttl <= 0 {
            return Err(GrantError::Unavailable(
                "refusing to store an already expired challenge".into(),
            ));
        }
        if let Some(refused) = inner.count_rates(limits, self.max_entries, now)? {
            return Ok(refused);
        }
        if let Some(refused) = inner.open_refusal(&challenge, limits.max_open, now) {
            return Ok(refused);
        }
        let attempts = match inner.next_attempt(&challenge.digest, limits.max_attempts, ttl, now) {
            Ok(attempts) => attempts,
            Err(refused) => return Ok(refused),
        };
        inner.store(challenge, attempts, self.max_entries, now)?;
        Ok(Issued::Open { attempts })
    }

    async fn challenge(&self, id: &str, now: i64) -> Result<Option<Challenge>, GrantError> {
        let inner = self.lock()?;
        Ok(inner
            .challenges
            .get(id)
            .filter(|c| c.expires_at > now)
            .cloned())
    }

    async fn open_challenge(
        &self,
        digest: &str,
        now: i64,
    ) -> Result<Option<Challenge>, GrantError> {
        let inner = self.lock()?;
        Ok(inner
            .latest
            .get(digest)
            .and_then(|id| inner.challenges.get(id))
            .filter(|c| c.digest == digest && c.expires_at > now)
            .cloned())
    }

    async fn signals(
        &self,
        velocity: &str,
        window: i64,
        seen: [&str; 2],
        now: i64,
    ) -> Result<(u64, [bool; 2]), GrantError> {
        let mut inner = self.lock()?;
        let (count, _) = count(&mut inner.velocity, self.max_entries, velocity, window, now)?;
        let seen = seen.map(|name| inner.networks.get(name).is_some_and(|t| *t > now));
        Ok((count, seen))
    }

    async fn claim_once(&self, event: &str, until: i64, now: i64) -> Result<bool, GrantError> {
        let mut inner = self.lock()?;
        if inner.claims.get(event).is_some_and(|t| *t > now) {
            return Ok(false);
        }
        make_room(&mut inner.claims, event, self.max_entries, |t| *t > now)?;
        inner.claims.insert(event.to_string(), until);
        Ok(true)
    }

    async fn remember(&self, mark: &str, until: i64, now: i64) -> Result<(), GrantError> {
        let mut inner = self.lock()?;
        let networks = &mut inner.networks;
        if make_room(networks, mark, self.max_entries, |t| *t > now).is_err() {
            forget_soonest(networks, self.max_entries);
        }
        if networks.len() < self.max_entries || networks.contains_key(mark) {
            let kept = networks.entry(mark.to_string()).or_insert(until);
            *kept = (*kept).max(until);
        }
        Ok(())
    }

    async fn revoke_transaction(&self, digest: &str) -> Result<bool, GrantError> {
        Ok(self.lock()?.grants.remove(digest).is_some())
    }

    async fn revoke_subject(&self, subject: &str) -> Result<u32, GrantError> {
        let mut inner = self.lock()?;
        let before = inner.grants.len();
        inner.grants.retain(|_, g| g.subject != subject);
        Ok(u32::try_from(before - inner.grants.len()).unwrap_or(u32::MAX))
    }

    async fn close_challenge(&self, challenge: &Challenge) -> Result<bool, GrantError> {
        let mut inner = self.lock()?;
        if let Some(open) = inner.open.get_mut(&subject_tag(&challenge.subject)) {
            open.retain(|(digest, _)| *digest != challenge.digest);
        }
        match inner.challenges.get(&challenge.id) {
            Some(stored) if stored.digest == challenge.digest => {
                inner.challenges.remove(&challenge.id);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests;
