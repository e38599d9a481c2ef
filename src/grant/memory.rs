//! The in-memory grant store: one process, bounded, expired entries swept when it fills.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{
    Challenge, Grant, GrantError, GrantStore, IssueLimits, Issued, subject_tag, window_of,
};

/// Grants and challenges in a map, capped at `max_entries` of each.
pub struct MemoryStore {
    max_entries: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    grants: HashMap<String, Grant>,
    challenges: HashMap<String, Challenge>,
    /// Counter name and window index → (count, window end).
    counters: HashMap<(String, i64), (u64, i64)>,
    /// Subject tag → its transactions with an open challenge (digest, expiry).
    open: HashMap<String, Vec<(String, i64)>>,
    /// Transaction digest → (challenges issued since its last grant, until when that counts).
    attempts: HashMap<String, (u32, i64)>,
    /// Transaction digest → its most recently issued challenge id.
    latest: HashMap<String, String>,
    /// Claimed events → until when.
    claimed: HashMap<String, i64>,
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

fn make_room<V>(
    map: &mut HashMap<String, V>,
    max: usize,
    expired: impl Fn(&V) -> bool,
) -> Result<(), GrantError> {
    if map.len() >= max {
        map.retain(|_, v| !expired(v));
    }
    if map.len() >= max {
        return Err(GrantError::Full);
    }
    Ok(())
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
        make_room(&mut inner.grants, self.max_entries, |g| g.expires_at <= now)?;
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
        let inner = &mut *inner;
        let ttl = challenge.expires_at - now;
        if ttl <= 0 {
            return Err(GrantError::Unavailable(
                "refusing to store an already expired challenge".into(),
            ));
        }
        let by_ip = |r: &&super::Rate| r.scope == super::RateScope::SourceIp;
        let rates = limits.rates.iter();
        for rate in rates
            .clone()
            .filter(by_ip)
            .chain(rates.filter(|r| !by_ip(r)))
        {
            let (index, end) = window_of(rate.window, now);
            if inner.counters.len() >= self.max_entries {
                inner.counters.retain(|_, (_, end)| *end > now);
            }
            if inner.counters.len() >= self.max_entries {
                return Err(GrantError::Full);
            }
            let count = inner
                .counters
                .entry((rate.name.clone(), index))
                .or_insert((0, end));
            count.0 += 1;
            if count.0 > rate.max {
                return Ok(Issued::RateLimited {
                    scope: rate.scope,
                    retry_after: (end - now).max(1),
                });
            }
        }
        let tag = subject_tag(&challenge.subject);
        let open = inner.open.entry(tag).or_default();
        open.retain(|(_, expires)| *expires > now);
        let known = open.iter().any(|(digest, _)| *digest == challenge.digest);
        if let Some(max) = limits.max_open
            && !known
            && open.len() >= max as usize
        {
            let oldest = open.iter().map(|(_, e)| *e).min().unwrap_or(now + 1);
            return Ok(Issued::TooManyOpen {
                retry_after: (oldest - now).max(1),
            });
        }
        let attempts = match inner.attempts.get_mut(&challenge.digest) {
            Some((n, until)) if *until > now => {
                if limits.max_attempts.is_some_and(|max| *n >= max) {
                    // Still looping: the guard holds for another challenge lifetime.
                    *until = now + ttl;
                    return Ok(Issued::Looping {
                        attempts: *n,
                        retry_after: ttl,
                    });
                }
                *n + 1
            }
            _ => 1,
        };
        make_room(&mut inner.challenges, self.max_entries, |c| {
            c.expires_at <= now
        })?;
        if inner.attempts.len() >= self.max_entries {
            inner.attempts.retain(|_, (_, until)| *until > now);
        }
        if inner.open.len() >= self.max_entries {
            inner
                .open
                .retain(|_, list| list.iter().any(|(_, e)| *e > now));
        }
        let open = inner
            .open
            .entry(subject_tag(&challenge.subject))
            .or_default();
        match open
            .iter_mut()
            .find(|(digest, _)| *digest == challenge.digest)
        {
            Some((_, expires)) => *expires = (*expires).max(challenge.expires_at),
            None => open.push((challenge.digest.clone(), challenge.expires_at)),
        }
        inner
            .attempts
            .insert(challenge.digest.clone(), (attempts, now + ttl));
        if inner.latest.len() >= self.max_entries {
            let live = &inner.challenges;
            inner.latest.retain(|_, id| live.contains_key(id));
        }
        inner
            .latest
            .insert(challenge.digest.clone(), challenge.id.clone());
        let challenge = Challenge {
            attempts,
            ..challenge
        };
        inner.challenges.insert(challenge.id.clone(), challenge);
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
        let (index, end) = window_of(window, now);
        let mut inner = self.lock()?;
        if inner.counters.len() >= self.max_entries {
            inner.counters.retain(|_, (_, end)| *end > now);
            if inner.counters.len() >= self.max_entries {
                return Err(GrantError::Full);
            }
        }
        let count = inner
            .counters
            .entry((velocity.to_string(), index))
            .or_insert((0, end));
        count.0 += 1;
        let count = count.0;
        let seen = seen.map(|name| inner.claimed.get(name).is_some_and(|t| *t > now));
        Ok((count, seen))
    }

    async fn claim_once(&self, event: &str, until: i64, now: i64) -> Result<bool, GrantError> {
        let mut inner = self.lock()?;
        if inner.claimed.get(event).is_some_and(|t| *t > now) {
            return Ok(false);
        }
        if inner.claimed.len() >= self.max_entries {
            inner.claimed.retain(|_, t| *t > now);
            if inner.claimed.len() >= self.max_entries {
                return Err(GrantError::Full);
            }
        }
        inner.claimed.insert(event.to_string(), until);
        Ok(true)
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
