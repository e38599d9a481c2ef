//! The `grants` config section: which store, its settings and their validation, and
//! [`GrantsConfig::build`], the one place a store is made from its section. Adding a backend:
//! its file beside `memory.rs` and `redis.rs`, one variant here (validated, built).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{GrantError, GrantStore, MemoryStore, RedisConnection, RedisStore};
use crate::clock::Clock;
use crate::section::{Invalid, invalid};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "store", rename_all = "lowercase")]
pub enum GrantsConfig {
    Memory {
        /// Cap on each of the store's maps on its own (grants, challenges, single-use claims,
        /// rate and velocity counters, open-challenge lists, loop guards, latest challenges,
        /// remembered networks). Remembered networks are forgotten first when theirs fills.
        #[serde(default = "default_max_entries")]
        max_entries: usize,
    },
    /// One Redis shared by every replica (see `docs/redis.md`).
    Redis {
        /// `redis://[user:pass@]host:port/db`, `rediss://…` (TLS) or `unix:///path.sock`.
        url: String,
        /// Budget for each store operation; past it the operation fails (503 on the route).
        #[serde(default = "default_redis_timeout")]
        timeout_ms: u64,
        /// Prefix of every key this store writes.
        #[serde(default = "default_key_prefix")]
        key_prefix: String,
    },
    /// A Redis Cluster shared by every replica (see `docs/redis.md`).
    #[serde(rename = "redis_cluster")]
    RedisCluster {
        /// Some of the cluster's nodes (`redis://` or `rediss://` URLs); the rest are discovered.
        nodes: Vec<String>,
        /// Budget for each store operation; past it the operation fails (503 on the route).
        #[serde(default = "default_redis_timeout")]
        timeout_ms: u64,
        /// Prefix of every key this store writes.
        #[serde(default = "default_key_prefix")]
        key_prefix: String,
    },
    /// The primary of a Sentinel-managed Redis set, followed across failovers (see
    /// `docs/redis.md`).
    #[serde(rename = "redis_sentinel")]
    RedisSentinel {
        /// The Sentinel processes (`redis://host:26379` URLs).
        sentinels: Vec<String>,
        /// The monitored set's name (`sentinel monitor <name> …`).
        master_name: String,
        /// Replicas that must acknowledge a grant's consumption (`WAIT`) before it approves.
        /// Required, no default: only the number of replicas the sentinels may promote (all of
        /// them) guarantees a failover cannot bring a spent grant back; fewer trades that for
        /// availability, 0 gives it up.
        replica_acks: u32,
        /// Budget for each store operation; past it the operation fails (503 on the route).
        #[serde(default = "default_redis_timeout")]
        timeout_ms: u64,
        /// Prefix of every key this store writes.
        #[serde(default = "default_key_prefix")]
        key_prefix: String,
    },
}

impl Default for GrantsConfig {
    fn default() -> Self {
        Self::Memory {
            max_entries: default_max_entries(),
        }
    }
}

fn default_max_entries() -> usize {
    100_000
}
fn default_redis_timeout() -> u64 {
    50
}
fn default_key_prefix() -> String {
    "sg".into()
}

impl GrantsConfig {
    /// Checks the section on its own.
    pub fn validate(&self) -> Result<(), Invalid> {
        match self {
            GrantsConfig::Memory { max_entries } => match *max_entries {
                0 => Err(invalid("grants.max_entries", "at least 1")),
                _ => Ok(()),
            },
            GrantsConfig::Redis {
                url,
                timeout_ms,
                key_prefix,
            } => {
                // The URL may hold a password: never echo it back.
                if !redis_url_ok(url, &["redis://", "rediss://", "unix://"]) {
                    return Err(invalid(
                        "grants.url",
                        "must be a redis://, rediss:// or unix:// URL",
                    ));
                }
                validate_redis_common(*timeout_ms, key_prefix)
            }
            GrantsConfig::RedisCluster {
                nodes,
                timeout_ms,
                key_prefix,
            } => {
                validate_url_list("grants.nodes", nodes, "list at least one cluster node")?;
                validate_redis_common(*timeout_ms, key_prefix)
            }
            GrantsConfig::RedisSentinel {
                sentinels,
                master_name,
                replica_acks,
                timeout_ms,
                key_prefix,
            } => {
                validate_url_list("grants.sentinels", sentinels, "list at least one sentinel")?;
                if master_name.is_empty() || master_name.chars().any(char::is_whitespace) {
                    return Err(invalid(
                        "grants.master_name",
                        "must be the monitored set's name",
                    ));
                }
                if *replica_acks > 16 {
                    return Err(invalid("grants.replica_acks", "must be at most 16"));
                }
                validate_redis_common(*timeout_ms, key_prefix)
            }
        }
    }
}

impl GrantsConfig {
    /// The store this section configures. A Redis store does not wait for Redis (it connects
    /// in the background); this fails only on settings the client cannot use. Must be called
    /// inside a Tokio runtime.
    pub fn build(&self, clock: Arc<dyn Clock>) -> Result<Arc<dyn GrantStore>, GrantError> {
        Ok(self.build_with_side(clock, false)?.0)
    }

    /// [`GrantsConfig::build`], and with `side` a connection of its own to the store's Redis
    /// deployment (the evidence shipper's; `None` for a store that is not Redis).
    pub fn build_with_side(
        &self,
        clock: Arc<dyn Clock>,
        side: bool,
    ) -> Result<(Arc<dyn GrantStore>, Option<RedisConnection>), GrantError> {
        let redis = match self {
            GrantsConfig::Memory { max_entries } => {
                return Ok((Arc::new(MemoryStore::new(*max_entries)), None));
            }
            GrantsConfig::Redis {
                url,
                timeout_ms,
                key_prefix,
            } => RedisStore::connect(url, key_prefix, Duration::from_millis(*timeout_ms), clock)?,
            GrantsConfig::RedisCluster {
                nodes,
                timeout_ms,
                key_prefix,
            } => RedisStore::connect_cluster(
                nodes,
                key_prefix,
                Duration::from_millis(*timeout_ms),
                clock,
            )?,
            GrantsConfig::RedisSentinel {
                sentinels,
                master_name,
                replica_acks,
                timeout_ms,
                key_prefix,
            } => RedisStore::connect_sentinel(
                sentinels,
                master_name,
                *replica_acks,
                key_prefix,
                Duration::from_millis(*timeout_ms),
                clock,
            )?,
        };
        let side = match side {
            true => Some(redis.side_connection()?),
            false => None,
        };
        Ok((Arc::new(redis), side))
    }
}

fn redis_url_ok(url: &str, schemes: &[&str]) -> bool {
    schemes
        .iter()
        .any(|scheme| url.starts_with(scheme) && url.len() > scheme.len())
}

/// A non-empty list of `redis://` or `rediss://` URLs (cluster nodes, sentinels). A URL may hold
/// a password: the error names its index, never the URL.
fn validate_url_list(field: &str, urls: &[String], empty: &str) -> Result<(), Invalid> {
    if urls.is_empty() {
        return Err(invalid(field, empty));
    }
    for (i, url) in urls.iter().enumerate() {
        if !redis_url_ok(url, &["redis://", "rediss://"]) {
            return Err(invalid(
                format!("{field}[{i}]"),
                "must be a redis:// or rediss:// URL",
            ));
        }
    }
    Ok(())
}

fn validate_redis_common(timeout_ms: u64, key_prefix: &str) -> Result<(), Invalid> {
    if !(1..=1_000).contains(&timeout_ms) {
        return Err(invalid("grants.timeout_ms", "must be between 1 and 1000"));
    }
    if key_prefix.is_empty()
        || key_prefix.len() > 64
        || !key_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b))
    {
        return Err(invalid(
            "grants.key_prefix",
            "1 to 64 letters, digits, `.`, `_`, `-` or `:`",
        ));
    }
    Ok(())
}
