//! The `transaction` section: the keys transaction digests are bound with.
//! Its types are composed into the whole file by [`crate::config`], which validates them.

use std::path::PathBuf;

use serde::Deserialize;

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
