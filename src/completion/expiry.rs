//! Challenges and grants that expire unused: those this process issued or minted are awaited
//! until they expire, and the sweeper records each one nobody completed or spent (see the
//! module documentation of [`crate::completion`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::{Completer, EXPIRY_GRACE_SECS};
use crate::clock::Clock;
use crate::evidence::Lifecycle;
use crate::grant::{Challenge, Grant};

/// Most issued challenges awaited at once; past it the soonest to expire is no longer awaited.
const MAX_PENDING: usize = 100_000;

/// What may expire unused: a challenge issued here, or a grant minted here.
#[derive(Clone)]
pub(super) enum Awaited {
    Challenge(Challenge),
    Grant(Grant),
}

impl Awaited {
    fn key(&self) -> (i64, String) {
        match self {
            Self::Challenge(c) => (c.expires_at, c.id.clone()),
            Self::Grant(g) => (g.expires_at, g.id.clone()),
        }
    }

    /// The store name claimed once by whoever settles it first.
    fn outcome(&self) -> (String, i64) {
        match self {
            Self::Challenge(c) => (outcome_name(c), outcome_until(c)),
            Self::Grant(g) => (used_name(g), used_until(g)),
        }
    }

    fn event(&self) -> Lifecycle<'_> {
        match self {
            Self::Challenge(challenge) => Lifecycle::Expired { challenge },
            Self::Grant(grant) => Lifecycle::GrantExpired { grant },
        }
    }
}

/// Awaited challenges and grants by (expiry, id); `true` once their outcome was claimed as
/// expired (the record is still to be written).
#[derive(Default)]
pub(super) struct Pending(Mutex<BTreeMap<(i64, String), (Awaited, bool)>>);

impl Pending {
    pub(super) fn insert(&self, awaited: Awaited, claimed: bool) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= MAX_PENDING
                && let Some((key, _)) = map.pop_first()
            {
                tracing::warn!(id = %key.1, "too many challenges and grants awaited: its expiry will not be recorded");
            }
            map.insert(awaited.key(), (awaited, claimed));
        }
    }

    pub(super) fn remove(&self, challenge: &Challenge) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(&(challenge.expires_at, challenge.id.clone()));
        }
    }

    /// Those expired at `before` or earlier, removed.
    fn due(&self, before: i64) -> Vec<(Awaited, bool)> {
        let Ok(mut map) = self.0.lock() else {
            return Vec::new();
        };
        let later = map.split_off(&(before + 1, String::new()));
        std::mem::replace(&mut *map, later).into_values().collect()
    }

    fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// The store name of a challenge's outcome (completed, or expired unused): claimed once.
pub(super) fn outcome_name(challenge: &Challenge) -> String {
    format!("outcome:{}", challenge.id)
}

/// How long a challenge's outcome claim is kept.
pub(super) fn outcome_until(challenge: &Challenge) -> i64 {
    challenge.expires_at + EXPIRY_GRACE_SECS + 60
}

/// The store name claimed by the first use of a grant (or by its expiry unused).
fn used_name(grant: &Grant) -> String {
    format!("used:{}", grant.id)
}

/// How long a grant's first-use claim is kept: long past its expiry, so a sweeper that is late
/// (a store outage) still finds it.
fn used_until(grant: &Grant) -> i64 {
    grant.expires_at + EXPIRY_GRACE_SECS + 3_600
}

impl Completer {
    /// Awaits `challenge` (just issued): if nobody completes it, its expiry is recorded.
    pub fn issued(&self, challenge: &Challenge) {
        self.pending
            .insert(Awaited::Challenge(challenge.clone()), false);
    }

    /// `grant` was spent: claims its first use, so the sweeper never records it expired unused.
    /// Off the approval's path (the claim lands long before the grant's expiry plus the grace);
    /// a claim that fails is logged, and the grant may then be recorded expired unused as well as
    /// consumed (both records exist; the consumption is the decision record).
    pub fn used(&self, grant: &Grant, now: i64) {
        let grants = self.grants.clone();
        let (name, until, id) = (used_name(grant), used_until(grant), grant.id.clone());
        tokio::spawn(async move {
            if let Err(e) = grants.claim_once(&name, until, now).await {
                tracing::warn!(grant_id = %id, error = %e, "first use of the grant not claimed");
            }
        });
    }

    /// Issued challenges still awaited.
    pub fn awaited(&self) -> usize {
        self.pending.len()
    }

    /// Records the challenges that expired unused by `now` (minus the grace); how many were
    /// recorded. A challenge whose outcome cannot be claimed or recorded now is tried again.
    pub async fn sweep(&self, now: i64) -> usize {
        let mut recorded = 0;
        for (awaited, claimed) in self.pending.due(now - EXPIRY_GRACE_SECS) {
            let id = awaited.key().1;
            if !claimed {
                let (name, until) = awaited.outcome();
                match self.grants.claim_once(&name, until, now).await {
                    Ok(true) => {}
                    // Completed or spent (here or on another replica).
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::warn!(id = %id, error = %e, "expiry not claimed; retrying");
                        self.pending.insert(awaited, false);
                        continue;
                    }
                }
            }
            match self.evidence.lifecycle(&awaited.event()).await {
                Ok(()) => recorded += 1,
                Err(e) => {
                    tracing::warn!(id = %id, error = %e, "expiry not recorded; retrying");
                    self.pending.insert(awaited, true);
                }
            }
        }
        recorded
    }

    /// Sweeps every `period` until every clone of this completer is dropped.
    pub fn spawn_expiry_sweeper(&self, clock: Arc<dyn Clock>, period: Duration) {
        let weak: Weak<Pending> = Arc::downgrade(&self.pending);
        let (grants, evidence) = (self.grants.clone(), self.evidence.clone());
        let (ladder, skew, signals) = (self.ladder.clone(), self.skew, self.signals);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(pending) = weak.upgrade() else {
                    return;
                };
                let completer = Completer {
                    grants: grants.clone(),
                    evidence: evidence.clone(),
                    ladder: ladder.clone(),
                    skew,
                    pending,
                    signals,
                };
                completer.sweep(clock.now()).await;
            }
        });
    }
}
