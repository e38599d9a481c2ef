//! The `transaction` section: the keys transaction digests are bound with, and its rules
//! ([`TransactionConfig::validate`]).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::section::{Invalid, Resolve, invalid, resolve_opt};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionConfig {
    /// The key id used for new digests.
    pub active_key: String,
    pub keys: Vec<TxnKeyConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnKeyConfig {
    pub id: String,
    /// A file holding the secret (at least 32 bytes).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// An environment variable holding the secret (at least 32 bytes).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// For a previous (not active) key: the end of its overlap, in unix seconds. Until then,
    /// grants bound under it still approve their transaction; after it, they never do.
    #[serde(default)]
    pub accept_until: Option<i64>,
}

impl Resolve for TransactionConfig {
    fn resolve(&mut self, base: &Path) {
        for key in &mut self.keys {
            resolve_opt(&mut key.secret_file, base);
        }
    }
}

impl TransactionConfig {
    /// The section's rules: the active key exists; each key has one secret source and an id
    /// usable in a tag; only previous keys have (and need) an end of overlap.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !self.keys.iter().any(|k| k.id == self.active_key) {
            return Err(invalid(
                "transaction.active_key",
                format!("no key with id `{}` in transaction.keys", self.active_key),
            ));
        }
        for (i, key) in self.keys.iter().enumerate() {
            if key.id.is_empty() || key.id.contains(':') {
                return Err(invalid(
                    format!("transaction.keys[{i}].id"),
                    "must be non-empty and contain no `:`",
                ));
            }
            if key.secret_file.is_some() == key.secret_env.is_some() {
                return Err(invalid(
                    format!("transaction.keys[{i}]"),
                    "set exactly one of secret_file or secret_env",
                ));
            }
            match (key.id == self.active_key, key.accept_until) {
                (true, Some(_)) => {
                    return Err(invalid(
                        format!("transaction.keys[{i}].accept_until"),
                        "the active key has no end of overlap",
                    ));
                }
                (false, None) => {
                    return Err(invalid(
                        format!("transaction.keys[{i}].accept_until"),
                        "a previous key needs the end of its overlap (unix seconds)",
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}
