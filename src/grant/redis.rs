//! The Redis grant store, shared by every replica. Key schema, TTLs, the atomic consume and the
//! failure behaviour are documented in `docs/redis.md`.
//!
//! Every store operation runs under one time budget (`timeout_ms`); a timeout, a refused
//! connection or any Redis error is `GrantError::Unavailable`, which the pipeline turns into a
//! 503 on a sensitive route. A consume whose answer did not arrive is an error, never `Ok(true)`:
//! the pipeline treats it as spent.
//!
//! Commands go through [`Conn`] (`conn.rs`): one Redis URL, a Redis Cluster, or the primary of a
//! Sentinel-managed set. Every script touches keys of one hash-tagged slot on a cluster; issuing
//! a challenge is one script call on a single server and one per slot, in order, on a cluster.

mod conn;

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
use super::{
    Challenge, Grant, GrantError, GrantStore, IssueLimits, Issued, RateScope, subject_tag,
    window_of,
};
use crate::clock::Clock;

/// Consecutive timed-out operations after which the connection is replaced (a black-holed
/// connection never errors; it only stops answering).
const TIMEOUTS_BEFORE_RECONNECT: u32 = 3;

/// Spends one use of a grant, atomically. KEYS[1]: the grant key. ARGV[1]: the grant id the
/// caller holds. ARGV[2]: the caller's `now` (unix seconds; the injected clock, not Redis TIME).
/// Returns 1 if this call spent a use (or the grant is reusable), 0 otherwise.
///
/// The record is decoded only to check it; a counted grant is rewritten by replacing the
/// `"uses_left":N` member of the stored text (re-encoding with cjson would turn an empty `amr`
/// array into `{}`). The pattern cannot match inside a JSON string, where `"` is escaped.
const CONSUME_LUA: &str = r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, g = pcall(cjson.decode, raw)
if not ok or type(g) ~= 'table' then
  return redis.error_reply('stepguard: unreadable grant record')
end
if g.id ~= ARGV[1] then return 0 end
local now = tonumber(ARGV[2])
local expires = tonumber(g.expires_at)
if not now or not expires or expires <= now then return 0 end
local uses = g.uses_left
if uses == nil or uses == cjson.null then return 1 end
uses = tonumber(uses)
if not uses or uses < 1 then
  redis.call('DEL', KEYS[1])
  return 0
end
if uses == 1 then
  redis.call('DEL', KEYS[1])
  return 1
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then ttl = (expires - now) * 1000 end
local updated, n = string.gsub(raw, '"uses_left":%d+', '"uses_left":' .. string.format('%d', uses - 1), 1)
if n ~= 1 then
  return redis.error_reply('stepguard: grant record without uses_left')
end
redis.call('SET', KEYS[1], updated, 'PX', ttl)
return 1
"#;

/// Issues a challenge: checks the abuse limits and writes the challenge, atomically on one
/// server. The call is a list of operations, one per key (KEYS[k] goes with the k-th operation
/// in ARGV, after ARGV[1] = the caller's `now` in unix seconds). All checks run before any
/// write; a refusal writes nothing but the rate counters it counted.
///
/// - `rate max ttl_ms scope`: INCR a fixed-window counter (TTL set when created); over `max`
///   → `{'rate', scope, pttl}`.
/// - `loop max ttl_ms`: the transaction's attempts since its last grant; at `max` (0: no cap)
///   → `{'loop', n, ttl_ms}` (and the guard is extended), else it becomes n + 1.
/// - `open max digest expires_at ttl_ms`: the transactions with an open challenge for the
///   subject (a sorted set by expiry, expired members dropped); a new transaction when there
///   are `max` (0: no cap) → `{'open', 0, ms until the oldest expires}`, else the transaction
///   is added (or its expiry moved) and the set lives at least `ttl_ms`.
/// - `record value ttl_ms`: SET the challenge record, its `"attempts":N` member set to the
///   attempts counted by `loop` in the same call.
/// - `set value ttl_ms`: SET a plain value (the id → digest index).
///
/// Success → `{'ok', attempts, 0}` (attempts 0 when no `loop` ran in this call).
const ISSUE_LUA: &str = r#"
local now = tonumber(ARGV[1])
local a = 2
local writes = {}
local attempts = 0
for k = 1, #KEYS do
  local key, op = KEYS[k], ARGV[a]
  if op == 'rate' then
    local max, ttl, scope = tonumber(ARGV[a + 1]), ARGV[a + 2], tonumber(ARGV[a + 3])
    a = a + 4
    local n = redis.call('INCR', key)
    if n == 1 then redis.call('PEXPIRE', key, ttl) end
    if n > max then return {'rate', scope, redis.call('PTTL', key)} end
  elseif op == 'loop' then
    local max, ttl = tonumber(ARGV[a + 1]), ARGV[a + 2]
    a = a + 3
    local n = tonumber(redis.call('GET', key) or '0') or 0
    if max > 0 and n >= max then
      redis.call('PEXPIRE', key, ttl)
      return {'loop', n, tonumber(ttl)}
    end
    attempts = n + 1
    writes[#writes + 1] = {'SET', key, tostring(attempts), 'PX', ttl}
  elseif op == 'open' then
    local max, member, expires, ttl = tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3], tonumber(ARGV[a + 4])
    a = a + 5
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    if max > 0 and not redis.call('ZSCORE', key, member) and redis.call('ZCARD', key) >= max then
      local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      return {'open', 0, (tonumber(oldest[2]) - now) * 1000}
    end
    writes[#writes + 1] = {'ZADD', key, expires, member}
    writes[#writes + 1] = {'KEEP', key, ttl}
  elseif op == 'record' then
    writes[#writes + 1] = {'RECORD', key, ARGV[a + 1], ARGV[a + 2]}
    a = a + 3
  elseif op == 'set' then
    writes[#writes + 1] = {'SET', key, ARGV[a + 1], 'PX', ARGV[a + 2]}
    a = a + 3
  else
    return redis.error_reply('stepguard: unknown issue operation')
  end
end
for _, w in ipairs(writes) do
  if w[1] == 'KEEP' then
    if redis.call('PTTL', w[2]) < w[3] then redis.call('PEXPIRE', w[2], w[3]) end
  elseif w[1] == 'RECORD' then
    local value = w[3]
    if attempts > 0 then
      value = string.gsub(value, '"attempts":%d+', '"attempts":' .. string.format('%d', attempts), 1)
    end
    redis.call('SET', w[2], value, 'PX', w[4])
  else
    redis.call(unpack(w))
  end
end
return {'ok', attempts, 0}
"#;

/// Where an issue operation's key lives, in the order the operations run: the subject's rate
/// limit is checked before a source-IP counter is created, and every check before the writes
/// it guards. On a cluster each run of one slot's operations is one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    SubjectRate,
    SourceIp,
    Subject,
    Transaction,
    Index,
}

/// One operation of [`ISSUE_LUA`].
struct IssueOp {
    slot: Slot,
    key: String,
    args: Vec<String>,
}

/// Grants and challenges in Redis.
pub struct RedisStore {
    conn: ArcSwap<Conn>,
    keys: Keys,
    timeout: Duration,
    clock: Arc<dyn Clock>,
    consume: Script,
    issue: Script,
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
            issue: Script::new(ISSUE_LUA),
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
        let scripts = [self.consume.clone(), self.issue.clone()];
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

    /// Runs issue operations: in one call, or on a cluster one call per slot, in order,
    /// stopping at the first refusal. Returns the refusal or the attempts counted.
    async fn run_issue(&self, ops: &[IssueOp], now: i64) -> Result<(String, i64, i64), GrantError> {
        let mut conn = self.conn();
        let groups: Vec<&[IssueOp]> = if conn.is_cluster() {
            ops.chunk_by(|a, b| hash_tag(&a.key) == hash_tag(&b.key))
                .collect()
        } else {
            vec![ops]
        };
        let mut attempts = 0;
        for group in groups {
            let mut invocation = self.issue.prepare_invoke();
            invocation.arg(now);
            for op in group {
                invocation.key(&op.key);
                for arg in &op.args {
                    invocation.arg(arg);
                }
            }
            let (status, a, b): (String, i64, i64) = invocation
                .invoke_async(&mut conn)
                .await
                .map_err(redis_err("issue_challenge"))?;
            if status != "ok" {
                return Ok((status, a, b));
            }
            attempts = attempts.max(a);
        }
        Ok(("ok".into(), attempts, 0))
    }

    /// The issue operations for a challenge, in [`Slot`] order: the subject's counter, the source
    /// IP's counter, the subject's open set, the transaction's loop guard and record, the id
    /// index.
    fn issue_ops(
        &self,
        c: &Challenge,
        limits: &IssueLimits,
        now: i64,
    ) -> Result<Vec<IssueOp>, GrantError> {
        let bad =
            || GrantError::Unavailable("challenge id, digest or limit name is not a key".into());
        let ttl = self.ttl_ms("challenge", c.expires_at)?.to_string();
        let op = |slot, key: Option<String>, args: &[&str]| {
            Ok::<_, GrantError>(IssueOp {
                slot,
                key: key.ok_or_else(bad)?,
                args: args.iter().map(|a| a.to_string()).collect(),
            })
        };
        let mut ops = Vec::new();
        for rate in &limits.rates {
            let (index, end) = window_of(rate.window, now);
            let (slot, scope) = match rate.scope {
                RateScope::Subject => (Slot::SubjectRate, "0"),
                RateScope::SourceIp => (Slot::SourceIp, "1"),
            };
            let window_ttl = ttl_ms(end, now).unwrap_or(1000).to_string();
            let max = rate.max.to_string();
            ops.push(op(
                slot,
                self.keys.counter(&rate.name, index),
                &["rate", &max, &window_ttl, scope],
            )?);
        }
        let max_open = limits.max_open.unwrap_or(0).to_string();
        let max_attempts = limits.max_attempts.unwrap_or(0).to_string();
        let expires = c.expires_at.to_string();
        let record = encode("issue_challenge", c)?;
        ops.push(op(
            Slot::Subject,
            self.keys.open(&subject_tag(&c.subject)),
            &["open", &max_open, &c.digest, &expires, &ttl],
        )?);
        ops.push(op(
            Slot::Transaction,
            self.keys.attempts(&c.digest),
            &["loop", &max_attempts, &ttl],
        )?);
        ops.push(op(
            Slot::Transaction,
            self.keys.challenge(&c.digest, &c.id),
            &["record", &record, &ttl],
        )?);
        ops.push(op(
            Slot::Transaction,
            self.keys.latest(&c.digest),
            &["set", &c.id, &ttl],
        )?);
        ops.push(op(
            Slot::Index,
            self.keys.challenge_index(&c.id),
            &["set", &c.digest, &ttl],
        )?);
        // Stable: a slot's operations keep their order (checks before the writes they guard).
        ops.sort_by_key(|op| op.slot);
        Ok(ops)
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

#[tonic::async_trait]
impl GrantStore for RedisStore {
    async fn find_grant(&self, digest: &str, now: i64) -> Result<Option<Grant>, GrantError> {
        let Some(key) = self.keys.grant(digest) else {
            return Ok(None);
        };
        let mut conn = self.conn();
        self.bounded("find_grant", async move {
            let raw: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(redis_err("find_grant"))?;
            let Some(raw) = raw else { return Ok(None) };
            let grant: Grant = decode("find_grant", &raw)?;
            Ok((grant.digest == digest && grant.expires_at > now).then_some(grant))
        })
        .await
    }

    async fn consume(&self, grant: &Grant, now: i64) -> Result<bool, GrantError> {
        let Some(key) = self.keys.grant(&grant.digest) else {
            return Ok(false);
        };
        let mut conn = self.conn();
        if self.replica_acks == 0 {
            let mut invocation = self.consume.prepare_invoke();
            invocation.key(key).arg(&grant.id).arg(now);
            return self
                .bounded("consume", async move {
                    let spent: i64 = invocation
                        .invoke_async(&mut conn)
                        .await
                        .map_err(redis_err("consume"))?;
                    Ok(spent == 1)
                })
                .await;
        }
        // The consume and a WAIT for replicas in one round trip (EVAL, not EVALSHA: a pipeline
        // cannot fall back on NOSCRIPT). A consume not yet on enough replicas could come back
        // after a failover, so it does not count: it is ambiguous, and ambiguous means spent.
        // WAIT blocks the shared connection while it waits: short, and well inside the budget.
        // Healthy replicas acknowledge in about a network round trip.
        let wait_ms = (self.timeout.as_millis() as u64 / 2).clamp(1, 25);
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(CONSUME_LUA)
            .arg(1)
            .arg(&key)
            .arg(&grant.id)
            .arg(now)
            .cmd("WAIT")
            .arg(self.replica_acks)
            .arg(wait_ms);
        let replicas = self.replica_acks;
        self.bounded("consume", async move {
            let (spent, acked): (i64, u32) = pipe
                .query_async(&mut conn)
                .await
                .map_err(redis_err("consume"))?;
            if spent == 1 && acked < replicas {
                conn.suspect();
                return Err(GrantError::Unavailable(format!(
                    "redis consume: acknowledged by {acked} of {replicas} replicas"
                )));
            }
            Ok(spent == 1)
        })
        .await
    }

    async fn put_grant(&self, grant: Grant) -> Result<(), GrantError> {
        let (Some(key), Some(attempts), Some(index)) = (
            self.keys.grant(&grant.digest),
            self.keys.attempts(&grant.digest),
            self.keys.subject_grants(&subject_tag(&grant.subject)),
        ) else {
            return Err(GrantError::Unavailable(
                "grant digest is not a valid key".into(),
            ));
        };
        let ttl = self.ttl_ms("grant", grant.expires_at)?;
        let value = encode("put_grant", &grant)?;
        let now = self.clock.now();
        let mut conn = self.conn();
        // The grant, the loop guard reset (a grant is progress), and the subject's grant index
        // (expired members dropped; its TTL at least this grant's: NX sets a first TTL, GT only
        // raises one). One round trip on a single server, in MULTI: a write Redis refuses (out
        // of memory, a replica, too few replicas) discards all of it, so the loop guard is
        // never reset for a grant that was not stored. On a cluster the keys span two slots:
        // command by command, in order, the grant first.
        let mut pipe = redis::pipe();
        if !conn.is_cluster() {
            pipe.atomic();
        }
        pipe.add_command(set_px(&key, &value, ttl))
            .ignore()
            .cmd("DEL")
            .arg(&attempts)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&index)
            .arg("-inf")
            .arg(now)
            .ignore()
            .cmd("ZADD")
            .arg(&index)
            .arg(grant.expires_at)
            .arg(&grant.digest)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&index)
            .arg(ttl)
            .arg("NX")
            .ignore()
            .cmd("PEXPIRE")
            .arg(&index)
            .arg(ttl)
            .arg("GT")
            .ignore();
        self.bounded("put_grant", async move {
            pipe.exec_async(&mut conn)
                .await
                .map_err(redis_err("put_grant"))
        })
        .await
    }

    async fn issue_challenge(
        &self,
        challenge: Challenge,
        limits: &IssueLimits,
        now: i64,
    ) -> Result<Issued, GrantError> {
        let ops = self.issue_ops(&challenge, limits, now)?;
        let (status, a, b) = self
            .bounded("issue_challenge", self.run_issue(&ops, now))
            .await?;
        let secs = |ms: i64| ((ms + 999) / 1000).max(1);
        match status.as_str() {
            "ok" => Ok(Issued::Open {
                attempts: u32::try_from(a).unwrap_or(u32::MAX),
            }),
            "rate" => Ok(Issued::RateLimited {
                scope: if a == 1 {
                    RateScope::SourceIp
                } else {
                    RateScope::Subject
                },
                retry_after: secs(b),
            }),
            "open" => Ok(Issued::TooManyOpen {
                retry_after: secs(b),
            }),
            "loop" => {
                // (On a cluster the subject's open set was updated by an earlier call; the
                // transaction was in it already, with the challenges that make it loop.)
                Ok(Issued::Looping {
                    attempts: u32::try_from(a).unwrap_or(u32::MAX),
                    retry_after: secs(b),
                })
            }
            other => Err(GrantError::Unavailable(format!(
                "redis issue_challenge: unexpected answer {other:?}"
            ))),
        }
    }

    async fn challenge(&self, id: &str, now: i64) -> Result<Option<Challenge>, GrantError> {
        let Some(index) = self.keys.challenge_index(id) else {
            return Ok(None);
        };
        let mut conn = self.conn();
        self.bounded("challenge", async move {
            let digest: Option<String> = redis::cmd("GET")
                .arg(&index)
                .query_async(&mut conn)
                .await
                .map_err(redis_err("challenge"))?;
            let Some(record) = digest.and_then(|d| self.keys.challenge(&d, id)) else {
                return Ok(None);
            };
            let raw: Option<String> = redis::cmd("GET")
                .arg(&record)
                .query_async(&mut conn)
                .await
                .map_err(redis_err("challenge"))?;
            let Some(raw) = raw else { return Ok(None) };
            let challenge: Challenge = decode("challenge", &raw)?;
            Ok((challenge.id == id && challenge.expires_at > now).then_some(challenge))
        })
        .await
    }

    async fn open_challenge(
        &self,
        digest: &str,
        now: i64,
    ) -> Result<Option<Challenge>, GrantError> {
        let Some(latest) = self.keys.latest(digest) else {
            return Ok(None);
        };
        let mut conn = self.conn();
        self.bounded("open_challenge", async move {
            let id: Option<String> = redis::cmd("GET")
                .arg(&latest)
                .query_async(&mut conn)
                .await
                .map_err(redis_err("open_challenge"))?;
            let Some(record) = id.as_deref().and_then(|id| self.keys.challenge(digest, id)) else {
                return Ok(None);
            };
            let raw: Option<String> = redis::cmd("GET")
                .arg(&record)
                .query_async(&mut conn)
                .await
                .map_err(redis_err("open_challenge"))?;
            let Some(raw) = raw else { return Ok(None) };
            let challenge: Challenge = decode("open_challenge", &raw)?;
            Ok((challenge.digest == digest && challenge.expires_at > now).then_some(challenge))
        })
        .await
    }

    async fn signals(
        &self,
        velocity: &str,
        window: i64,
        seen: [&str; 2],
        now: i64,
    ) -> Result<(u64, [bool; 2]), GrantError> {
        let (index, end) = window_of(window, now);
        let (Some(counter), Some(first), Some(second)) = (
            self.keys.counter(velocity, index),
            self.keys.event(seen[0]),
            self.keys.event(seen[1]),
        ) else {
            return Err(GrantError::Unavailable(
                "signal name is not a valid key".into(),
            ));
        };
        let ttl = ttl_ms(end, now).unwrap_or(1000);
        let mut conn = self.conn();
        // One round trip on a single server (per slot, command by command, on a cluster). The
        // counter gets its TTL with NX: set once, when the window's first request creates it.
        let mut pipe = redis::pipe();
        pipe.cmd("INCR")
            .arg(&counter)
            .cmd("PEXPIRE")
            .arg(&counter)
            .arg(ttl)
            .arg("NX")
            .ignore()
            .cmd("EXISTS")
            .arg(&first)
            .cmd("EXISTS")
            .arg(&second);
        self.bounded("signals", async move {
            let (count, first, second): (u64, i64, i64) = pipe
                .query_async(&mut conn)
                .await
                .map_err(redis_err("signals"))?;
            Ok((count, [first == 1, second == 1]))
        })
        .await
    }

    async fn claim_once(&self, event: &str, until: i64, now: i64) -> Result<bool, GrantError> {
        let key = self
            .keys
            .event(event)
            .ok_or_else(|| GrantError::Unavailable("event is not a valid key".into()))?;
        let ttl = ttl_ms(until, now).unwrap_or(1000);
        let mut conn = self.conn();
        self.bounded("claim_once", async move {
            let set: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(ttl)
                .query_async(&mut conn)
                .await
                .map_err(redis_err("claim_once"))?;
            Ok(set.is_some())
        })
        .await
    }

    async fn remember(&self, mark: &str, until: i64, now: i64) -> Result<(), GrantError> {
        let key = self
            .keys
            .event(mark)
            .ok_or_else(|| GrantError::Unavailable("mark is not a valid key".into()))?;
        let ttl = ttl_ms(until, now).unwrap_or(1000);
        let mut conn = self.conn();
        // Set or refreshed (a mark is no claim: whoever writes it last wins).
        self.bounded("remember", async move {
            set_px(&key, "1", ttl)
                .query_async::<()>(&mut conn)
                .await
                .map_err(redis_err("remember"))
        })
        .await
    }

    async fn revoke_transaction(&self, digest: &str) -> Result<bool, GrantError> {
        let Some(key) = self.keys.grant(digest) else {
            return Ok(false);
        };
        let mut conn = self.conn();
        self.bounded("revoke_transaction", async move {
            let deleted: i64 = redis::cmd("DEL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(redis_err("revoke_transaction"))?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn revoke_subject(&self, subject: &str) -> Result<u32, GrantError> {
        let Some(index) = self.keys.subject_grants(&subject_tag(subject)) else {
            return Ok(0);
        };
        let mut conn = self.conn();
        self.bounded("revoke_subject", async move {
            let digests: Vec<String> = redis::cmd("ZRANGE")
                .arg(&index)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .map_err(redis_err("revoke_subject"))?;
            let mut pipe = redis::pipe();
            for key in digests.iter().filter_map(|d| self.keys.grant(d)) {
                pipe.cmd("DEL").arg(key);
            }
            pipe.cmd("DEL").arg(&index).ignore();
            let deleted: Vec<i64> = pipe
                .query_async(&mut conn)
                .await
                .map_err(redis_err("revoke_subject"))?;
            Ok(u32::try_from(deleted.iter().sum::<i64>()).unwrap_or(u32::MAX))
        })
        .await
    }

    async fn close_challenge(&self, challenge: &Challenge) -> Result<bool, GrantError> {
        let (Some(record), Some(index), Some(open)) = (
            self.keys.challenge(&challenge.digest, &challenge.id),
            self.keys.challenge_index(&challenge.id),
            self.keys.open(&subject_tag(&challenge.subject)),
        ) else {
            return Ok(false);
        };
        let mut conn = self.conn();
        // Whoever deletes the record closed the challenge; a concurrent close sees 0. Three
        // slots: pipelined, not MULTI (on a cluster, sent command by command).
        let mut pipe = redis::pipe();
        pipe.cmd("DEL")
            .arg(&record)
            .cmd("DEL")
            .arg(&index)
            .ignore()
            .cmd("ZREM")
            .arg(&open)
            .arg(&challenge.digest)
            .ignore();
        self.bounded("close_challenge", async move {
            let (deleted,): (i64,) = pipe
                .query_async(&mut conn)
                .await
                .map_err(redis_err("close_challenge"))?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn ping(&self) -> Result<(), GrantError> {
        let mut conn = self.conn();
        self.bounded("ping", async move {
            let pong: String = redis::cmd("PING")
                .query_async(&mut conn)
                .await
                .map_err(redis_err("ping"))?;
            if pong == "PONG" {
                Ok(())
            } else {
                Err(GrantError::Unavailable(format!(
                    "redis ping: unexpected answer {pong:?}"
                )))
            }
        })
        .await
    }
}

/// The key schema (see `docs/redis.md`). Everything about one transaction is hash-tagged on its
/// digest, so it shares one cluster slot.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    /// `<prefix>:{<digest>}:grant`
    fn grant(&self, digest: &str) -> Option<String> {
        key_part(digest).then(|| format!("{}:{{{digest}}}:grant", self.prefix))
    }

    /// `<prefix>:{<digest>}:challenge:<id>`
    fn challenge(&self, digest: &str, id: &str) -> Option<String> {
        (key_part(digest) && key_part(id))
            .then(|| format!("{}:{{{digest}}}:challenge:{id}", self.prefix))
    }

    /// `<prefix>:{<digest>}:attempts` → challenges issued for the transaction since its last
    /// grant (the loop guard).
    fn attempts(&self, digest: &str) -> Option<String> {
        key_part(digest).then(|| format!("{}:{{{digest}}}:attempts", self.prefix))
    }

    /// `<prefix>:event:{<name>}` → set once: an authentication event already used.
    fn event(&self, name: &str) -> Option<String> {
        key_part(name).then(|| format!("{}:event:{{{name}}}", self.prefix))
    }

    /// `<prefix>:{<digest>}:latest` → the id of the transaction's most recent challenge.
    fn latest(&self, digest: &str) -> Option<String> {
        key_part(digest).then(|| format!("{}:{{{digest}}}:latest", self.prefix))
    }

    /// `<prefix>:grants:{<subject tag>}` → the subject's transactions with a grant, scored by
    /// the grant's expiry (what revoking a subject's grants walks).
    fn subject_grants(&self, subject: &str) -> Option<String> {
        key_part(subject).then(|| format!("{}:grants:{{{subject}}}", self.prefix))
    }

    /// `<prefix>:open:{<subject tag>}` → the subject's transactions with an open challenge,
    /// scored by expiry.
    fn open(&self, subject: &str) -> Option<String> {
        key_part(subject).then(|| format!("{}:open:{{{subject}}}", self.prefix))
    }

    /// `<prefix>:count:{<name>}:<window index>` → events counted in that window.
    fn counter(&self, name: &str, index: i64) -> Option<String> {
        key_part(name).then(|| format!("{}:count:{{{name}}}:{index}", self.prefix))
    }

    /// `<prefix>:challenge:{<id>}` → the challenge's digest.
    fn challenge_index(&self, id: &str) -> Option<String> {
        key_part(id).then(|| format!("{}:challenge:{{{id}}}", self.prefix))
    }
}

/// The part of a key that decides its cluster slot: between the first `{` and the next `}`.
fn hash_tag(key: &str) -> &str {
    key.split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .map_or(key, |(tag, _)| tag)
}

/// Digests (`<key id>:<base64url>`) and challenge ids (base64url) are printable ASCII; anything
/// with a brace (which would move the hash tag), a space or a control byte is not ours.
fn key_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 512
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
}

#[cfg(test)]
mod tests;
