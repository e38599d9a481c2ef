//! The Redis store's operations (the [`GrantStore`] implementation).

use super::{CONSUME_LUA, RedisStore, decode, encode, redis_err, set_px, ttl_ms};
use crate::grant::{
    Admitted, Caps, Challenge, ChallengeRef, Counter, Grant, GrantError, GrantStore, JOURNAL_MAX,
    Revoke, Tally, subject_tag, window_of,
};

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

    async fn admit_challenge(
        &self,
        challenge: Challenge,
        caps: &Caps,
        now: i64,
    ) -> Result<Admitted, GrantError> {
        self.admit(&challenge, caps, now).await
    }

    async fn find_challenge(
        &self,
        which: ChallengeRef<'_>,
        now: i64,
    ) -> Result<Option<Challenge>, GrantError> {
        // Two reads: the index (id → digest, or digest → latest id), then the record.
        let index = match which {
            ChallengeRef::Id(id) => self.keys.challenge_index(id),
            ChallengeRef::Latest(digest) => self.keys.latest(digest),
        };
        let Some(index) = index else {
            return Ok(None);
        };
        let mut conn = self.conn();
        self.bounded("find_challenge", async move {
            let found: Option<String> = redis::cmd("GET")
                .arg(&index)
                .query_async(&mut conn)
                .await
                .map_err(redis_err("find_challenge"))?;
            let Some(found) = found else { return Ok(None) };
            let record = match which {
                ChallengeRef::Id(id) => self.keys.challenge(&found, id),
                ChallengeRef::Latest(digest) => self.keys.challenge(digest, &found),
            };
            let Some(record) = record else {
                return Ok(None);
            };
            let raw: Option<String> = redis::cmd("GET")
                .arg(&record)
                .query_async(&mut conn)
                .await
                .map_err(redis_err("find_challenge"))?;
            let Some(raw) = raw else { return Ok(None) };
            let challenge: Challenge = decode("find_challenge", &raw)?;
            let matches = match which {
                ChallengeRef::Id(id) => challenge.id == id,
                ChallengeRef::Latest(digest) => challenge.digest == digest,
            };
            Ok((matches && challenge.expires_at > now).then_some(challenge))
        })
        .await
    }

    async fn tally(
        &self,
        counters: &[Counter<'_>],
        marks: &[&str],
        now: i64,
    ) -> Result<Tally, GrantError> {
        if counters.is_empty() && marks.is_empty() {
            return Ok(Tally::default());
        }
        let unlimited = counters.iter().all(|c| c.max.is_none());
        let mut counts = Vec::new();
        if !unlimited {
            let stopped;
            (counts, stopped) = self.count_limited(counters, now).await?;
            if stopped || marks.is_empty() {
                let marks = vec![false; marks.len()];
                return Ok(Tally { counts, marks });
            }
        }
        let bad = || GrantError::Unavailable("counter or mark name is not a valid key".into());
        // Counters without a max and the marks: one pipeline, one round trip on a single server
        // (per slot, command by command, on a cluster). A counter gets its TTL with NX: set
        // once, when the window's first event creates it.
        let mut pipe = redis::pipe();
        if unlimited {
            for c in counters {
                let (index, end) = window_of(c.window, now);
                let key = self.keys.counter(c.name, index).ok_or_else(bad)?;
                let ttl = ttl_ms(end, now).unwrap_or(1000);
                pipe.cmd("INCR")
                    .arg(&key)
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(ttl)
                    .arg("NX")
                    .ignore();
            }
        }
        for mark in marks {
            pipe.cmd("EXISTS")
                .arg(self.keys.event(mark).ok_or_else(bad)?);
        }
        let mut conn = self.conn();
        let read: Vec<u64> = self
            .bounded("tally", async move {
                pipe.query_async(&mut conn)
                    .await
                    .map_err(redis_err("tally"))
            })
            .await?;
        let (counted, seen) = read
            .split_at_checked(if unlimited { counters.len() } else { 0 })
            .filter(|(_, seen)| seen.len() == marks.len())
            .ok_or_else(|| GrantError::Unavailable("redis tally: short answer".into()))?;
        if unlimited {
            counts = counted.to_vec();
        }
        let marks = seen.iter().map(|n| *n == 1).collect();
        Ok(Tally { counts, marks })
    }

    async fn append(
        &self,
        name: &str,
        entry: &str,
        until: i64,
        now: i64,
    ) -> Result<(), GrantError> {
        let key = self
            .keys
            .journal(name)
            .ok_or_else(|| GrantError::Unavailable("journal is not a valid key".into()))?;
        let mut invocation = self.journal.prepare_invoke();
        invocation
            .key(key)
            .arg(until.saturating_mul(1000))
            .arg(entry)
            .arg(now.saturating_mul(1000))
            .arg(JOURNAL_MAX);
        let mut conn = self.conn();
        self.bounded("append", async move {
            let _: i64 = invocation
                .invoke_async(&mut conn)
                .await
                .map_err(redis_err("append"))?;
            Ok(())
        })
        .await
    }

    async fn journals(&self, names: &[&str], now: i64) -> Result<Vec<Vec<String>>, GrantError> {
        // One pipeline: one round trip on a single server (per slot, command by command, on a
        // cluster), as `tally`.
        let since = format!("({}", now.saturating_mul(1000));
        let mut pipe = redis::pipe();
        for name in names {
            let key = self
                .keys
                .journal(name)
                .ok_or_else(|| GrantError::Unavailable("journal is not a valid key".into()))?;
            pipe.cmd("ZRANGEBYSCORE").arg(key).arg(&since).arg("+inf");
        }
        let mut conn = self.conn();
        let read: Vec<Vec<String>> = self
            .bounded("journals", async move {
                pipe.query_async(&mut conn)
                    .await
                    .map_err(redis_err("journals"))
            })
            .await?;
        if read.len() != names.len() {
            return Err(GrantError::Unavailable(
                "redis journals: short answer".into(),
            ));
        }
        Ok(read)
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

    async fn revoke(&self, which: Revoke<'_>) -> Result<u32, GrantError> {
        match which {
            Revoke::Transaction(digest) => self.revoke_one(digest).await.map(u32::from),
            Revoke::Subject(subject) => self.revoke_all(subject).await,
        }
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

impl RedisStore {
    async fn revoke_one(&self, digest: &str) -> Result<bool, GrantError> {
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

    async fn revoke_all(&self, subject: &str) -> Result<u32, GrantError> {
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
}
