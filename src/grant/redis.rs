//! The Redis grant store, shared by every replica. Key schema, TTLs, the atomic consume and the
//! failure behaviour are documented in `docs/redis.md`.
//!
//! Every store operation runs under one time budget (`timeout_ms`); a timeout, a refused
//! connection or any Redis error is `GrantError::Unavailable`, which the pipeline turns into a
//! 503 on a sensitive route. A consume whose answer did not arrive is an error, never `Ok(true)`:
//! the pipeline treats it as spent.
//!
//! Commands go through [`Conn`] (`conn.rs`): one Redis URL, a Redis Cluster, or the primary of a
//! Sentinel-managed set. Every script touches keys of one hash-tagged slot on a cluster; storing
//! a challenge or counting limited counters is one script call on a single server and one per
//! slot, in order, on a cluster. The scripts are `redis/*.lua`; the key schema `keys.rs`; the
//! store's operations `store.rs` (challenges under caps: `admit.rs`).

mod admit;
mod conn;
mod keys;
mod store;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::cluster::ClusterClientBuilder;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{Cmd, Script};
use serde::Serialize;
use serde::de::DeserializeOwned;

use self::conn::Conn;
use self::keys::Keys;
use super::GrantError;
use crate::clock::Clock;

/// Consecutive timed-out operations after which the connection is replaced (a black-holed
/// connection never errors; it only stops answering).
const TIMEOUTS_BEFORE_RECONNECT: u32 = 3;

/// Spends one use of a grant, atomically (see the script's header).
const CONSUME_LUA: &str = include_str!("redis/consume.lua");
/// Stores a challenge if the store's caps admit it (see the script's header).
const ADMIT_LUA: &str = include_str!("redis/admit.lua");
/// Counts events in fixed-window counters, stopping at a max (see the script's header).
const COUNT_LUA: &str = include_str!("redis/count.lua");
/// Adds one journal entry (see the script).
const JOURNAL_LUA: &str = include_str!("redis/journal.lua");

/// Grants and challenges in Redis.
pub struct RedisStore {
    conn: ArcSwap<Conn>,
    keys: Keys,
    timeout: Duration,
    clock: Arc<dyn Clock>,
    consume: Script,
    admit: Script,
    count: Script,
    journal: Script,
    /// Replicas that must acknowledge a consume (`WAIT`) before it counts; 0: none.
    replica_acks: u32,
    /// Operations that timed out in a row (see [`TIMEOUTS_BEFORE_RECONNECT`]).
    timeouts: AtomicU32,
}

impl RedisStore {
    /// A store for one Redis URL (`redis://`, `rediss://` or `unix://`). Does not wait for
    /// Redis: the connection is made in the background and remade whenever it drops, so the
    /// sidecar starts (and public routes serve) while Redis is down. Fails only on a URL the
    /// client cannot use. Must be called inside a Tokio runtime.
    pub fn connect(
        url: &str,
        key_prefix: &str,
        timeout: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, GrantError> {
        let client = redis::Client::open(url)
            .map_err(|e| GrantError::Unavailable(format!("redis url rejected: {e}")))?;
        let conn = Conn::single(client)
            .map_err(|e| GrantError::Unavailable(format!("redis client: {e}")))?;
        Ok(Self::with_conn(conn, key_prefix, timeout, clock, 0))
    }

    /// A store for a Redis Cluster, given some of its nodes (`redis://` or `rediss://` URLs;
    /// the client discovers the rest and follows slot moves). Like [`RedisStore::connect`] it
    /// does not wait: the cluster connection is made in the background and repaired by the
    /// client (reconnects, slot-map refreshes on `MOVED`). Must be called inside a Tokio
    /// runtime.
    pub fn connect_cluster(
        nodes: &[String],
        key_prefix: &str,
        timeout: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, GrantError> {
        let client = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
            .connection_timeout(Duration::from_secs(1))
            // Few, quick retries (redirections, reconnects): the operation budget bounds them.
            .retries(4)
            .min_retry_wait(10)
            .max_retry_wait(200)
            // Per node: a hung node's requests fail (and its connection is remade by the
            // client) without touching the other nodes' connections.
            .response_timeout(timeout)
            .build()
            .map_err(|e| GrantError::Unavailable(format!("redis cluster nodes rejected: {e}")))?;
        Ok(Self::with_conn(
            Conn::cluster(client),
            key_prefix,
            timeout,
            clock,
            0,
        ))
    }

    /// A store for the primary of a Sentinel-managed set named `master_name`, found through
    /// `sentinels` (`redis://` URLs of Sentinel processes). The primary is resolved when a
    /// connection is made and again after an error shows it moved (failover). A consume counts
    /// only once `replica_acks` replicas acknowledged it (`WAIT`), so a failover cannot bring a
    /// spent grant back. Like [`RedisStore::connect`] it does not wait for Redis.
    pub fn connect_sentinel(
        sentinels: &[String],
        master_name: &str,
        replica_acks: u32,
        key_prefix: &str,
        timeout: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, GrantError> {
        let client = SentinelClient::build(
            sentinels.iter().map(String::as_str).collect(),
            master_name,
            None,
            SentinelServerType::Master,
        )
        .map_err(|e| GrantError::Unavailable(format!("redis sentinels rejected: {e}")))?;
        Ok(Self::with_conn(
            Conn::sentinel(client),
            key_prefix,
            timeout,
            clock,
            replica_acks,
        ))
    }

    fn with_conn(
        conn: Conn,
        key_prefix: &str,
        timeout: Duration,
        clock: Arc<dyn Clock>,
        replica_acks: u32,
    ) -> Self {
        let store = Self {
            conn: ArcSwap::from_pointee(conn),
            keys: Keys::new(key_prefix),
            timeout,
            clock,
            consume: Script::new(CONSUME_LUA),
            admit: Script::new(ADMIT_LUA),
            count: Script::new(COUNT_LUA),
            journal: Script::new(JOURNAL_LUA),
            replica_acks,
            timeouts: AtomicU32::new(0),
        };
        store.warm_up();
        store
    }

    fn conn(&self) -> Conn {
        self.conn.load().as_ref().clone()
    }

    /// A connection of its own to the same deployment (the evidence shipper's), so bulk writes
    /// never queue in front of the store's operations. On a cluster, the client's shared one.
    pub fn side_connection(&self) -> Result<RedisConnection, GrantError> {
        let conn = self.conn();
        let fresh = conn
            .fresh()
            .map_err(|e| GrantError::Unavailable(format!("redis client: {e}")))?;
        Ok(RedisConnection(fresh.unwrap_or(conn)))
    }

    /// Starts connecting (and loads the scripts) without making anyone wait for it.
    fn warm_up(&self) {
        let mut conn = self.conn();
        let scripts = [self.consume.clone(), self.admit.clone(), self.count.clone()];
        tokio::spawn(async move {
            for script in scripts {
                let loaded =
                    tokio::time::timeout(Duration::from_secs(5), script.load_async(&mut conn))
                        .await;
                if !matches!(loaded, Ok(Ok(_))) {
                    tracing::warn!(
                        "redis grant store not reachable yet; sensitive checks answer 503"
                    );
                    return;
                }
            }
        });
    }

    /// Runs one store operation under the time budget. A streak of timeouts replaces the
    /// connection: one that stopped answering without closing is not waited on forever.
    async fn bounded<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, GrantError>>,
    ) -> Result<T, GrantError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(result) => {
                self.timeouts.store(0, Ordering::Relaxed);
                result
            }
            Err(_) => {
                crate::telemetry::metrics::store_connected(self.conn.load().kind(), false);
                if self.timeouts.fetch_add(1, Ordering::Relaxed) + 1 >= TIMEOUTS_BEFORE_RECONNECT {
                    self.timeouts.store(0, Ordering::Relaxed);
                    match self.conn.load().fresh() {
                        Ok(Some(fresh)) => {
                            tracing::warn!("redis not answering; replacing the connection");
                            self.conn.store(Arc::new(fresh));
                        }
                        Ok(None) => {}
                        Err(e) => tracing::error!(error = %e, "redis reconnect failed"),
                    }
                }
                Err(GrantError::Unavailable(format!(
                    "redis {op}: no answer within {} ms",
                    self.timeout.as_millis()
                )))
            }
        }
    }

    /// Milliseconds until `expires_at`, refusing a record that is already expired.
    fn ttl_ms(&self, kind: &str, expires_at: i64) -> Result<i64, GrantError> {
        ttl_ms(expires_at, self.clock.now()).ok_or_else(|| {
            GrantError::Unavailable(format!("refusing to store an already expired {kind}"))
        })
    }
}

/// A connection to the grant store's Redis deployment (single, cluster or Sentinel) for other
/// writers ([`RedisStore::side_connection`]). Reconnects by itself; callers bound their waits.
#[derive(Clone)]
pub struct RedisConnection(Conn);

impl redis::aio::ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> redis::RedisFuture<'a, redis::Value> {
        self.0.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        self.0.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

/// Milliseconds from `now` to `expires_at`, if that is in the future.
fn ttl_ms(expires_at: i64, now: i64) -> Option<i64> {
    expires_at
        .checked_sub(now)
        .filter(|s| *s > 0)
        .and_then(|s| s.checked_mul(1000))
}

fn redis_err(op: &'static str) -> impl Fn(redis::RedisError) -> GrantError {
    move |e| GrantError::Unavailable(format!("redis {op}: {e}"))
}

fn encode(op: &'static str, value: &impl Serialize) -> Result<String, GrantError> {
    serde_json::to_string(value)
        .map_err(|e| GrantError::Unavailable(format!("redis {op}: encoding: {e}")))
}

fn decode<T: DeserializeOwned>(op: &'static str, raw: &str) -> Result<T, GrantError> {
    serde_json::from_str(raw)
        .map_err(|e| GrantError::Unavailable(format!("redis {op}: unreadable record: {e}")))
}

fn set_px(key: &str, value: &str, ttl_ms: i64) -> Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value).arg("PX").arg(ttl_ms);
    cmd
}

#[cfg(test)]
mod tests;
