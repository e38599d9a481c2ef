//! The in-memory grant store: one process. Each map is bounded on its own, at `max_entries`
//! entries: when one is full its expired entries are swept; then marks (remembered networks) are
//! forgotten, soonest to expire first (a forgotten network is only new again: stricter), and any
//! other map still full refuses the one operation that needs room in it (`GrantError::Full`, a
//! 503) and nothing else. Marks, counters and other subjects' challenges never take the room of
//! the claims and grants a completion writes, and plain counters never that of counters with a
//! max (the limits).
//!
//! Expired entries are also swept before a map is full: once it has doubled since its last
//! sweep (and holds at least [`SWEEP_FLOOR`] entries), so the work is amortized over the
//! inserts and each map holds about twice what is live, not `max_entries` of what expired
//! (every token's claimed sign-in and every velocity window's counter would otherwise stay
//! until their map is full).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

use super::{
    Admitted, Caps, Challenge, ChallengeRef, Counter, Grant, GrantError, GrantStore, JOURNAL_MAX,
    Revoke, Tally, subject_tag, window_of,
};

/// Grants, challenges and what guards them, in maps capped at `max_entries` each.
pub struct MemoryStore {
    max_entries: usize,
    inner: Mutex<Inner>,
}

/// Counter name and window index → (count, window end).
type Counters = Swept<(String, i64), (u64, i64)>;

/// Below this many entries a map is swept only when full.
const SWEEP_FLOOR: usize = 1024;

/// A map and the size at which [`make_room`] next sweeps its expired entries.
struct Swept<K, V> {
    map: HashMap<K, V>,
    sweep_at: usize,
}

impl<K, V> Default for Swept<K, V> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            sweep_at: SWEEP_FLOOR,
        }
    }
}

impl<K, V> Deref for Swept<K, V> {
    type Target = HashMap<K, V>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl<K, V> DerefMut for Swept<K, V> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.map
    }
}

#[derive(Default)]
struct Inner {
    grants: Swept<String, Grant>,
    challenges: Swept<String, Challenge>,
    /// Fixed-window counters with a max ([`GrantStore::tally`]): limits, which plain counters
    /// never take the room of.
    limited: Counters,
    /// Fixed-window counters without a max.
    counters: Counters,
    /// Subject tag → its transactions with an open challenge (digest, expiry).
    open: Swept<String, Vec<(String, i64)>>,
    /// Transaction digest → (challenges issued since its last grant, until when that counts).
    attempts: Swept<String, (u32, i64)>,
    /// Transaction digest → its most recently issued challenge id.
    latest: Swept<String, String>,
    /// Single-use claims (authentication events, challenge outcomes, first uses) → until when.
    claims: Swept<String, i64>,
    /// Marks (`remember`, read by `tally`) → until when.
    marks: Swept<String, i64>,
    /// Journals (`append`) → their entries, each with until when.
    journals: Swept<String, Vec<(i64, String)>>,
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
/// no longer `live` are swept); `Full` if there is none. The entries no longer `live` are also
/// swept whenever the map has doubled since its last sweep.
fn make_room<K, Q, V>(
    map: &mut Swept<K, V>,
    key: &Q,
    max: usize,
    live: impl Fn(&V) -> bool,
) -> Result<(), GrantError>
where
    K: Borrow<Q> + Eq + Hash,
    Q: Eq + Hash + ?Sized,
{
    if map.contains_key(key) {
        return Ok(());
    }
    if map.len() >= map.sweep_at.min(max) {
        map.map.retain(|_, v| live(v));
        map.sweep_at = (2 * map.len()).max(SWEEP_FLOOR);
    }
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
    /// `TooManyOpen` if the subject has `max_open` other transactions with open challenges.
    fn open_refusal(&mut self, c: &Challenge, max_open: Option<u32>, now: i64) -> Option<Admitted> {
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
        Some(Admitted::TooManyOpen {
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
    ) -> Result<u32, Admitted> {
        match self.attempts.get_mut(digest) {
            Some((n, until)) if *until > now => {
                if max_attempts.is_some_and(|max| *n >= max) {
                    *until = now + ttl;
                    return Err(Admitted::Looping {
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

    async fn admit_challenge(
        &self,
        challenge: Challenge,
        caps: &Caps,
        now: i64,
    ) -> Result<Admitted, GrantError> {
        let mut inner = self.lock()?;
        let ttl = challenge.expires_at - now;
        if ttl <= 0 {
            return Err(GrantError::Unavailable(
                "refusing to store an already expired challenge".into(),
            ));
        }
        if let Some(refused) = inner.open_refusal(&challenge, caps.max_open, now) {
            return Ok(refused);
        }
        let attempts = match inner.next_attempt(&challenge.digest, caps.max_attempts, ttl, now) {
            Ok(attempts) => attempts,
            Err(refused) => return Ok(refused),
        };
        inner.store(challenge, attempts, self.max_entries, now)?;
        Ok(Admitted::Open { attempts })
    }

    async fn find_challenge(
        &self,
        which: ChallengeRef<'_>,
        now: i64,
    ) -> Result<Option<Challenge>, GrantError> {
        let inner = self.lock()?;
        let found = match which {
            ChallengeRef::Id(id) => inner.challenges.get(id),
            ChallengeRef::Latest(digest) => inner
                .latest
                .get(digest)
                .and_then(|id| inner.challenges.get(id))
                .filter(|c| c.digest == digest),
        };
        Ok(found.filter(|c| c.expires_at > now).cloned())
    }

    async fn tally(
        &self,
        counters: &[Counter<'_>],
        marks: &[&str],
        now: i64,
    ) -> Result<Tally, GrantError> {
        let mut inner = self.lock()?;
        let mut tally = Tally::default();
        for c in counters {
            let map = match c.max {
                Some(_) => &mut inner.limited,
                None => &mut inner.counters,
            };
            let (n, _) = count(map, self.max_entries, c.name, c.window, now)?;
            tally.counts.push(n);
            if c.max.is_some_and(|max| n > max) {
                tally.marks = vec![false; marks.len()];
                return Ok(tally);
            }
        }
        tally.marks = marks
            .iter()
            .map(|name| inner.marks.get(*name).is_some_and(|t| *t > now))
            .collect();
        Ok(tally)
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
        let marks = &mut inner.marks;
        if make_room(marks, mark, self.max_entries, |t| *t > now).is_err() {
            forget_soonest(marks, self.max_entries);
        }
        if marks.len() < self.max_entries || marks.contains_key(mark) {
            let kept = marks.entry(mark.to_string()).or_insert(until);
            *kept = (*kept).max(until);
        }
        Ok(())
    }

    async fn append(
        &self,
        name: &str,
        entry: &str,
        until: i64,
        now: i64,
    ) -> Result<(), GrantError> {
        let mut inner = self.lock()?;
        let journals = &mut inner.journals;
        make_room(journals, name, self.max_entries, |e| {
            e.iter().any(|(t, _)| *t > now)
        })?;
        let journal = journals.entry(name.to_string()).or_default();
        journal.retain(|(t, e)| *t > now && e != entry);
        journal.push((until, entry.to_string()));
        journal.sort_by_key(|(t, _)| *t);
        let over = journal.len().saturating_sub(JOURNAL_MAX);
        journal.drain(..over);
        Ok(())
    }

    async fn journals(&self, names: &[&str], now: i64) -> Result<Vec<Vec<String>>, GrantError> {
        let inner = self.lock()?;
        Ok(names
            .iter()
            .map(|name| {
                inner.journals.get(*name).map_or_else(Vec::new, |j| {
                    j.iter()
                        .filter(|(t, _)| *t > now)
                        .map(|(_, e)| e.clone())
                        .collect()
                })
            })
            .collect())
    }

    async fn revoke(&self, which: Revoke<'_>) -> Result<u32, GrantError> {
        let mut inner = self.lock()?;
        match which {
            Revoke::Transaction(digest) => Ok(u32::from(inner.grants.remove(digest).is_some())),
            Revoke::Subject(subject) => {
                let before = inner.grants.len();
                inner.grants.retain(|_, g| g.subject != subject);
                Ok(u32::try_from(before - inner.grants.len()).unwrap_or(u32::MAX))
            }
        }
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
