//! Signatures already verified. A token seen again (the same bytes) skips the signature check,
//! never the claim checks: `exp`, `nbf`, `aud` and the rest are validated on every request. An
//! entry is only used while the issuer's key set is the one it was verified against, so a key
//! removed from the JWKS stops validating its tokens at the next refresh.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;
use serde_json::Value;

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
    entries: Mutex<HashMap<[u8; 32], Verified>>,
    max: usize,
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
            entries: Mutex::new(HashMap::new()),
            max,
        }
    }

    pub fn get(&self, key: &[u8; 32]) -> Option<Verified> {
        self.entries.lock().ok()?.get(key).cloned()
    }

    /// Remembers a verified token until it expires; when full, expired entries go first, then all.
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
        if entries.len() >= self.max {
            entries.retain(|_, v| v.exp >= now);
            if entries.len() >= self.max {
                entries.clear();
            }
        }
        entries.insert(
            key,
            Verified {
                issuer: issuer.to_string(),
                claims,
                key_generation,
                exp,
            },
        );
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or_default()
    }
}
