//! Signatures already verified. A token seen again (the same bytes) skips the signature check,
//! never the claim checks: `exp`, `nbf`, `aud` and the rest are validated on every request. An
//! entry is only used while the issuer's key set is the one it was verified against, so a key
//! removed from the JWKS stops validating its tokens at the next refresh.
//!
//! Expired entries are swept as the cache grows, not only when it is full: each sweep happens
//! once the cache has doubled since the last one (and holds at least [`SWEEP_FLOOR`] entries),
//! so the work is amortized over the inserts and the cache holds at most about twice the tokens
//! still valid (plus the floor), never `max` entries of long-expired tokens. Each entry keeps
//! the token's claims, about 1.2 KB for a small token: filling a 50 000-entry cache with
//! expired tokens (clients that sign in often, tokens that live a minute) held about 60 MiB.
//! Its size after each insert is the gauge `stepguard_identity_cache_entries`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;
use serde_json::Value;

/// Below this many entries the cache is not swept (a sweep would cost more than it frees).
pub(super) const SWEEP_FLOOR: usize = 1024;

/// A verified token's claims.
#[derive(Clone)]
pub(super) struct Verified {
    pub issuer: String,
    pub claims: Arc<Value>,
    pub key_generation: u64,
    exp: i64,
}

/// Bounded map from a token's SHA-256 to its verified claims.
pub(super) struct VerifiedCache {
    entries: Mutex<Entries>,
    max: usize,
}

struct Entries {
    map: HashMap<[u8; 32], Verified>,
    /// The next sweep happens when the map holds this many entries.
    sweep_at: usize,
}

/// The cache key of a token.
pub(super) fn key(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    out
}

impl VerifiedCache {
    pub fn new(max: usize) -> Self {
        Self {
            entries: Mutex::new(Entries {
                map: HashMap::new(),
                sweep_at: SWEEP_FLOOR.min(max),
            }),
            max,
        }
    }

    pub fn get(&self, key: &[u8; 32]) -> Option<Verified> {
        self.entries.lock().ok()?.map.get(key).cloned()
    }

    /// Remembers a verified token until it expires. Expired entries are swept once the cache
    /// has doubled since the last sweep; when it is full of valid ones, all go.
    pub fn insert(
        &self,
        key: [u8; 32],
        issuer: &str,
        claims: Arc<Value>,
        key_generation: u64,
        now: i64,
    ) {
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(now);
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.map.len() >= entries.sweep_at {
            entries.sweep(now, self.max);
        }
        entries.map.insert(
            key,
            Verified {
                issuer: issuer.to_string(),
                claims,
                key_generation,
                exp,
            },
        );
        metrics::gauge!("stepguard_identity_cache_entries").set(entries.map.len() as f64);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.map.len()).unwrap_or_default()
    }
}

impl Entries {
    /// Drops the expired entries (all of them if the rest still fill the cache), gives back
    /// the table's spare room, and sets the next sweep at twice what is left.
    fn sweep(&mut self, now: i64, max: usize) {
        self.map.retain(|_, v| v.exp >= now);
        if self.map.len() >= max {
            self.map.clear();
        }
        self.sweep_at = (2 * self.map.len()).clamp(SWEEP_FLOOR.min(max), max);
        if self.map.capacity() > 2 * self.sweep_at {
            self.map.shrink_to(self.sweep_at);
        }
    }
}
