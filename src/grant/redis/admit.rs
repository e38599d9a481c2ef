//! Storing a challenge under the store's caps ([`ADMIT_LUA`](super::ADMIT_LUA)) and counting
//! fixed-window counters that stop at a max ([`COUNT_LUA`](super::COUNT_LUA)): one script call
//! on a single server, one per hash slot, in order, on a cluster.

use super::keys::hash_tag;
use super::{RedisStore, encode, redis_err, ttl_ms};
use crate::grant::{Admitted, Caps, Challenge, Counter, GrantError, subject_tag, window_of};

/// Where an admit operation's key lives, in the order the operations run: every check before
/// the writes it guards. On a cluster each run of one slot's operations is one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Subject,
    Transaction,
    Index,
}

/// One operation of the admit script.
struct AdmitOp {
    slot: Slot,
    key: String,
    args: Vec<String>,
}

impl RedisStore {
    /// Stores `c` if `caps` admit it. Concurrent issuers: the subject's open set is checked and
    /// added to inside one script on its slot, so no two issuers both take its last place; the
    /// loop guard is read and raised inside one script on the transaction's slot.
    pub(super) async fn admit(
        &self,
        c: &Challenge,
        caps: &Caps,
        now: i64,
    ) -> Result<Admitted, GrantError> {
        let ops = self.admit_ops(c, caps)?;
        let (status, a, b) = self
            .bounded("admit_challenge", self.run_admit(&ops, now))
            .await?;
        let secs = |ms: i64| ((ms + 999) / 1000).max(1);
        let attempts = u32::try_from(a).unwrap_or(u32::MAX);
        match status.as_str() {
            "ok" => Ok(Admitted::Open { attempts }),
            "open" => Ok(Admitted::TooManyOpen {
                retry_after: secs(b),
            }),
            // (On a cluster the subject's open set was updated by an earlier call; the
            // transaction was in it already, with the challenges that make it loop.)
            "loop" => Ok(Admitted::Looping {
                attempts,
                retry_after: secs(b),
            }),
            other => Err(GrantError::Unavailable(format!(
                "redis admit_challenge: unexpected answer {other:?}"
            ))),
        }
    }

    /// Runs admit operations: in one call, or on a cluster one call per slot, in order,
    /// stopping at the first refusal. Returns the refusal or the attempts counted.
    async fn run_admit(&self, ops: &[AdmitOp], now: i64) -> Result<(String, i64, i64), GrantError> {
        let mut conn = self.conn();
        let groups: Vec<&[AdmitOp]> = if conn.is_cluster() {
            ops.chunk_by(|a, b| hash_tag(&a.key) == hash_tag(&b.key))
                .collect()
        } else {
            vec![ops]
        };
        let mut attempts = 0;
        for group in groups {
            let mut invocation = self.admit.prepare_invoke();
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
                .map_err(redis_err("admit_challenge"))?;
            if status != "ok" {
                return Ok((status, a, b));
            }
            attempts = attempts.max(a);
        }
        Ok(("ok".into(), attempts, 0))
    }

    /// The admit operations for a challenge, in [`Slot`] order: the subject's open set, the
    /// transaction's loop guard, record and latest id, the id index.
    fn admit_ops(&self, c: &Challenge, caps: &Caps) -> Result<Vec<AdmitOp>, GrantError> {
        let bad = || GrantError::Unavailable("challenge id or digest is not a key".into());
        let ttl = self.ttl_ms("challenge", c.expires_at)?.to_string();
        let op = |slot, key: Option<String>, args: &[&str]| {
            Ok::<_, GrantError>(AdmitOp {
                slot,
                key: key.ok_or_else(bad)?,
                args: args.iter().map(|a| a.to_string()).collect(),
            })
        };
        let max_open = caps.max_open.unwrap_or(0).to_string();
        let max_attempts = caps.max_attempts.unwrap_or(0).to_string();
        let expires = c.expires_at.to_string();
        let record = encode("admit_challenge", c)?;
        let ops = vec![
            op(
                Slot::Subject,
                self.keys.open(&subject_tag(&c.subject)),
                &["open", &max_open, &c.digest, &expires, &ttl],
            )?,
            op(
                Slot::Transaction,
                self.keys.attempts(&c.digest),
                &["loop", &max_attempts, &ttl],
            )?,
            op(
                Slot::Transaction,
                self.keys.challenge(&c.digest, &c.id),
                &["record", &record, &ttl],
            )?,
            op(
                Slot::Transaction,
                self.keys.latest(&c.digest),
                &["set", &c.id, &ttl],
            )?,
            op(
                Slot::Index,
                self.keys.challenge_index(&c.id),
                &["set", &c.digest, &ttl],
            )?,
        ];
        debug_assert!(ops.is_sorted_by_key(|op| op.slot));
        Ok(ops)
    }

    /// Counts `counters` (some with a max) with the count script: one call on a single server,
    /// on a cluster one per slot, in order, stopping after a counter over its max. The counts,
    /// and whether counting stopped at a max.
    pub(super) async fn count_limited(
        &self,
        counters: &[Counter<'_>],
        now: i64,
    ) -> Result<(Vec<u64>, bool), GrantError> {
        let mut keyed = Vec::with_capacity(counters.len());
        for c in counters {
            let (index, end) = window_of(c.window, now);
            let key = self
                .keys
                .counter(c.name, index)
                .ok_or_else(|| GrantError::Unavailable("counter name is not a valid key".into()))?;
            let max = c.max.map_or(-1, |m| i64::try_from(m).unwrap_or(i64::MAX));
            keyed.push((key, max, ttl_ms(end, now).unwrap_or(1000)));
        }
        let mut conn = self.conn();
        self.bounded("tally", async move {
            let groups: Vec<&[(String, i64, i64)]> = if conn.is_cluster() {
                keyed
                    .chunk_by(|a, b| hash_tag(&a.0) == hash_tag(&b.0))
                    .collect()
            } else {
                vec![&keyed[..]]
            };
            let mut counts = Vec::with_capacity(keyed.len());
            let mut stopped = false;
            for group in groups {
                let mut invocation = self.count.prepare_invoke();
                for (key, max, ttl) in group {
                    invocation.key(key).arg(max).arg(ttl);
                }
                let got: Vec<u64> = invocation
                    .invoke_async(&mut conn)
                    .await
                    .map_err(redis_err("tally"))?;
                stopped = got.len() < group.len()
                    || got.iter().zip(group).any(|(n, (_, max, _))| {
                        *max >= 0 && *n > u64::try_from(*max).unwrap_or(u64::MAX)
                    });
                counts.extend(got);
                if stopped {
                    break;
                }
            }
            Ok((counts, stopped))
        })
        .await
    }
}
