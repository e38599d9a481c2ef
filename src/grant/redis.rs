//! The Redis grant store, shared by every replica. Key schema, TTLs, the atomic consume and the
//! failure behaviour are documented in `docs/redis.md`.
//!
//! Every store operation runs under one time budget (`timeout_ms`); a timeout, a refused
//! connection or any Redis error is `GrantError::Unavailable`, which the pipeline turns into a
//! 503 on a sensitive route. A consume whose answer did not arrive is an error, never `Ok(true)`:
//! the pipeline treats it as spent.
//!
//! Commands go through [`Conn`], a `redis::aio::ConnectionLike`: one auto-reconnecting
//! `ConnectionManager` for a single Redis URL, or a Redis Cluster connection. Every multi-key
//! command here touches one hash-tagged slot; the only cross-slot writes (a challenge and its id
//! index) are pipelined, not transactional, and on a cluster sent command by command. Sentinel
//! would be a further variant (see `docs/redis.md`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisFuture, Script, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Challenge, Grant, GrantError, GrantStore, Window, window_of};
use crate::clock::Clock;

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

/// Counts one event in a fixed window. KEYS[1]: the window's counter. ARGV[1]: milliseconds
/// until the window ends. The counter gets its TTL when it is created, in the same script.
const COUNT_LUA: &str = r#"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"#;

/// Grants and challenges in Redis.
pub struct RedisStore {
    conn: Conn,
    keys: Keys,
    timeout: Duration,
    clock: Arc<dyn Clock>,
    consume: Script,
    count: Script,
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
        let config = ConnectionManagerConfig::new()
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_connection_timeout(Some(Duration::from_secs(1)))
            // Each operation's budget is enforced here, not by the client.
            .set_response_timeout(None);
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| GrantError::Unavailable(format!("redis client: {e}")))?;
        Ok(Self::with_conn(
            Conn::Single(manager),
            key_prefix,
            timeout,
            clock,
        ))
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
            .build()
            .map_err(|e| GrantError::Unavailable(format!("redis cluster nodes rejected: {e}")))?;
        let cluster = client.get_pending_async_connection_with_config(
            ClusterConfig::new().set_connection_timeout(Duration::from_secs(1)),
        );
        Ok(Self::with_conn(
            Conn::Cluster(cluster),
            key_prefix,
            timeout,
            clock,
        ))
    }

    fn with_conn(conn: Conn, key_prefix: &str, timeout: Duration, clock: Arc<dyn Clock>) -> Self {
        let store = Self {
            conn,
            keys: Keys::new(key_prefix),
            timeout,
            clock,
            consume: Script::new(CONSUME_LUA),
            count: Script::new(COUNT_LUA),
        };
        store.warm_up();
        store
    }

    /// Starts connecting (and loads the consume script) without making anyone wait for it.
    fn warm_up(&self) {
        let mut conn = self.conn.clone();
        let script = self.consume.clone();
        tokio::spawn(async move {
            let loaded =
                tokio::time::timeout(Duration::from_secs(5), script.load_async(&mut conn)).await;
            if !matches!(loaded, Ok(Ok(_))) {
                tracing::warn!("redis grant store not reachable yet; sensitive checks answer 503");
            }
        });
    }

    /// Runs one store operation under the time budget.
    async fn bounded<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, GrantError>>,
    ) -> Result<T, GrantError> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(GrantError::Unavailable(format!(
                    "redis {op}: no answer within {} ms",
                    self.timeout.as_millis()
                )))
            })
    }

    /// Milliseconds until `expires_at`, refusing a record that is already expired.
    fn ttl_ms(&self, kind: &str, expires_at: i64) -> Result<i64, GrantError> {
        ttl_ms(expires_at, self.clock.now()).ok_or_else(|| {
            GrantError::Unavailable(format!("refusing to store an already expired {kind}"))
        })
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
        let mut conn = self.conn.clone();
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
        let mut conn = self.conn.clone();
        let mut invocation = self.consume.prepare_invoke();
        invocation.key(key).arg(&grant.id).arg(now);
        self.bounded("consume", async move {
            let spent: i64 = invocation
                .invoke_async(&mut conn)
                .await
                .map_err(redis_err("consume"))?;
            Ok(spent == 1)
        })
        .await
    }

    async fn put_grant(&self, grant: Grant) -> Result<(), GrantError> {
        let key = self
            .keys
            .grant(&grant.digest)
            .ok_or_else(|| GrantError::Unavailable("grant digest is not a valid key".into()))?;
        let ttl = self.ttl_ms("grant", grant.expires_at)?;
        let value = encode("put_grant", &grant)?;
        let mut conn = self.conn.clone();
        self.bounded("put_grant", async move {
            set_px(&key, &value, ttl)
                .exec_async(&mut conn)
                .await
                .map_err(redis_err("put_grant"))
        })
        .await
    }

    async fn put_challenge(&self, challenge: Challenge) -> Result<(), GrantError> {
        let (Some(record), Some(index)) = (
            self.keys.challenge(&challenge.digest, &challenge.id),
            self.keys.challenge_index(&challenge.id),
        ) else {
            return Err(GrantError::Unavailable(
                "challenge id or digest is not a valid key".into(),
            ));
        };
        let ttl = self.ttl_ms("challenge", challenge.expires_at)?;
        let value = encode("put_challenge", &challenge)?;
        let mut conn = self.conn.clone();
        // One round trip; not MULTI, so that it also works when the two keys live in different
        // cluster slots. The record is written first: an index never names a missing record
        // for longer than the record's own TTL.
        let mut pipe = redis::pipe();
        pipe.add_command(set_px(&record, &value, ttl)).ignore();
        pipe.add_command(set_px(&index, &challenge.digest, ttl))
            .ignore();
        self.bounded("put_challenge", async move {
            pipe.exec_async(&mut conn)
                .await
                .map_err(redis_err("put_challenge"))
        })
        .await
    }

    async fn challenge(&self, id: &str, now: i64) -> Result<Option<Challenge>, GrantError> {
        let Some(index) = self.keys.challenge_index(id) else {
            return Ok(None);
        };
        let mut conn = self.conn.clone();
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

    async fn close_challenge(&self, id: &str) -> Result<bool, GrantError> {
        let Some(index) = self.keys.challenge_index(id) else {
            return Ok(false);
        };
        let mut conn = self.conn.clone();
        self.bounded("close_challenge", async move {
            let digest: Option<String> = redis::cmd("GET")
                .arg(&index)
                .query_async(&mut conn)
                .await
                .map_err(redis_err("close_challenge"))?;
            let Some(record) = digest.and_then(|d| self.keys.challenge(&d, id)) else {
                return Ok(false);
            };
            // Whoever deletes the record closed the challenge; a concurrent close sees 0.
            let mut pipe = redis::pipe();
            pipe.cmd("DEL").arg(&record).cmd("DEL").arg(&index).ignore();
            let (deleted,): (i64,) = pipe
                .query_async(&mut conn)
                .await
                .map_err(redis_err("close_challenge"))?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn ping(&self) -> Result<(), GrantError> {
        let mut conn = self.conn.clone();
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

    async fn count(&self, name: &str, window: i64, now: i64) -> Result<Window, GrantError> {
        let (index, end) = window_of(window, now);
        let key = self
            .keys
            .counter(name, index)
            .ok_or_else(|| GrantError::Unavailable("counter name is not a valid key".into()))?;
        let ttl = ttl_ms(end, now).unwrap_or(1000);
        let mut conn = self.conn.clone();
        let mut invocation = self.count.prepare_invoke();
        invocation.key(key).arg(ttl);
        self.bounded("count", async move {
            let count: u64 = invocation
                .invoke_async(&mut conn)
                .await
                .map_err(redis_err("count"))?;
            Ok(Window {
                count,
                resets_in: end - now,
            })
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

    /// `<prefix>:count:{<name>}:<window index>` → events counted in that window.
    fn counter(&self, name: &str, index: i64) -> Option<String> {
        key_part(name).then(|| format!("{}:count:{{{name}}}:{index}", self.prefix))
    }

    /// `<prefix>:challenge:{<id>}` → the challenge's digest.
    fn challenge_index(&self, id: &str) -> Option<String> {
        key_part(id).then(|| format!("{}:challenge:{{{id}}}", self.prefix))
    }
}

/// Digests (`<key id>:<base64url>`) and challenge ids (base64url) are printable ASCII; anything
/// with a brace (which would move the hash tag), a space or a control byte is not ours.
fn key_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 512
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
}

/// How commands reach Redis: a `ConnectionLike` the operations are written against.
#[derive(Clone)]
enum Conn {
    /// One Redis URL, through an auto-reconnecting `ConnectionManager`.
    Single(ConnectionManager),
    /// A Redis Cluster. Each command is routed to its slot's primary by the client (`PING` to
    /// a random node). A pipeline is *not* sent as one batch: the client sends a batch to one
    /// node only and refuses one whose keys span slots (our challenge write and close touch two
    /// slots by design), so the commands of a pipeline are sent one after another, in order,
    /// each to its own slot. Transactions (`MULTI`) are passed through (one slot only).
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => {
                let mut c = c.clone();
                Box::pin(async move {
                    if pipeline.is_transaction() {
                        return c.req_packed_commands(pipeline, offset, count).await;
                    }
                    // A non-transactional pipeline's replies are one per command, in order; the
                    // caller asks for `count` of them from `offset` (0 and all of them in practice).
                    let mut replies = Vec::with_capacity(pipeline.len());
                    for cmd in pipeline.cmd_iter().take(offset.saturating_add(count)) {
                        replies.push(c.req_packed_command(cmd).await?);
                    }
                    Ok(replies.into_iter().skip(offset).collect())
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests;
