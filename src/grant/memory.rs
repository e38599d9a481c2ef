//! The in-memory grant store: one process, bounded, expired entries swept when it fills.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Challenge, Grant, GrantError, GrantStore, Window, window_of};

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
        inner.grants.insert(grant.digest.clone(), grant);
        Ok(())
    }

    async fn put_challenge(&self, challenge: Challenge) -> Result<(), GrantError> {
        let mut inner = self.lock()?;
        let now = challenge.issued_at;
        make_room(&mut inner.challenges, self.max_entries, |c| {
            c.expires_at <= now
        })?;
        inner.challenges.insert(challenge.id.clone(), challenge);
        Ok(())
    }

    async fn challenge(&self, id: &str, now: i64) -> Result<Option<Challenge>, GrantError> {
        let inner = self.lock()?;
        Ok(inner
            .challenges
            .get(id)
            .filter(|c| c.expires_at > now)
            .cloned())
    }

    async fn close_challenge(&self, id: &str) -> Result<bool, GrantError> {
        Ok(self.lock()?.challenges.remove(id).is_some())
    }

    async fn count(&self, name: &str, window: i64, now: i64) -> Result<Window, GrantError> {
        let (index, end) = window_of(window, now);
        let mut inner = self.lock()?;
        if inner.counters.len() >= self.max_entries {
            inner.counters.retain(|_, (_, end)| *end > now);
            if inner.counters.len() >= self.max_entries {
                return Err(GrantError::Full);
            }
        }
        let entry = inner
            .counters
            .entry((name.to_string(), index))
            .or_insert((0, end));
        entry.0 += 1;
        Ok(Window {
            count: entry.0,
            resets_in: end - now,
        })
    }
}

#[cfg(test)]
mod tests;
