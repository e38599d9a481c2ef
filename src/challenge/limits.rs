//! The abuse limits on issuing challenges, and what they mean: per-subject and per-source-IP
//! rates in fixed windows (429 with `Retry-After`), the subject's open challenges (429), and
//! challenges for one transaction without a grant in between (the loop guard, 403).
//!
//! [`issue`] composes them from the store's primitives: the rates are counters
//! ([`GrantStore::tally`], the subject's counted first, so a subject over its limit creates and
//! counts no source-IP counter), then the open-challenge cap and the loop guard are checked as
//! the challenge is stored ([`GrantStore::admit_challenge`]).
//!
//! Concurrency: each counter is incremented atomically by the store, so concurrent issuers
//! never both see the last free count. The open-challenge cap and the loop guard are checked
//! and written in the same atomic store step as the challenge (one script per slot on Redis,
//! one lock on memory), so concurrent issuers cannot exceed the cap — as before the split. What
//! the split changes: a challenge refused by the cap or the guard has still counted against the
//! rates, which is what the single step did too (rate events counted before a refusal stayed
//! counted); on a single Redis server it costs one round trip more (two calls, not one).

use std::net::IpAddr;

use crate::grant::{Admitted, Caps, Challenge, Counter, GrantError, GrantStore, window_of};

/// Abuse limits checked when a challenge is issued.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IssueLimits {
    /// Fixed-window rate limits on issuing challenges (per subject, per source IP).
    pub rates: Vec<Rate>,
    /// Cap on the transactions with an open (unexpired, not closed) challenge for the subject;
    /// `None`: no cap. Challenging a transaction again does not take another place.
    pub max_open: Option<u32>,
    /// Cap on challenges issued for one transaction without a grant being minted for it (the
    /// loop guard); `None`: no cap.
    pub max_attempts: Option<u32>,
}

/// At most `max` challenges per fixed window of `window` seconds under a key-safe `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    pub scope: RateScope,
    pub name: String,
    pub window: i64,
    pub max: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateScope {
    Subject,
    SourceIp,
}

/// What issuing a challenge came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issued {
    /// Stored; this is challenge number `attempts` for its transaction since its last grant.
    Open { attempts: u32 },
    /// A rate limit is exhausted until `retry_after` seconds from now.
    RateLimited { scope: RateScope, retry_after: i64 },
    /// The subject has `max_open` transactions with open challenges; the oldest expires in
    /// `retry_after` seconds.
    TooManyOpen { retry_after: i64 },
    /// The transaction was challenged `attempts` times without a grant being minted: the
    /// client is looping. The guard lifts `retry_after` seconds after the last attempt.
    Looping { attempts: u32, retry_after: i64 },
}

/// Checks `limits` and, if they allow it, stores the challenge with its `attempts` set.
/// Order: the subject's rates, source-IP rates, the open-challenge cap, the loop guard — a
/// subject over its limit creates and counts no source-IP counter. Refusals leave no
/// challenge behind; rate-limit events counted before one stay counted.
pub async fn issue(
    store: &dyn GrantStore,
    challenge: Challenge,
    limits: &IssueLimits,
    now: i64,
) -> Result<Issued, GrantError> {
    if challenge.expires_at <= now {
        return Err(GrantError::Unavailable(
            "refusing to store an already expired challenge".into(),
        ));
    }
    let of = |scope| limits.rates.iter().filter(move |r| r.scope == scope);
    let rates: Vec<&Rate> = of(RateScope::Subject)
        .chain(of(RateScope::SourceIp))
        .collect();
    if !rates.is_empty() {
        let counters: Vec<Counter<'_>> = rates
            .iter()
            .map(|r| Counter {
                name: &r.name,
                window: r.window,
                max: Some(r.max),
            })
            .collect();
        let tally = store.tally(&counters, &[], now).await?;
        for (rate, n) in rates.iter().zip(&tally.counts) {
            if *n > rate.max {
                let (_, end) = window_of(rate.window, now);
                return Ok(Issued::RateLimited {
                    scope: rate.scope,
                    retry_after: (end - now).max(1),
                });
            }
        }
    }
    let caps = Caps {
        max_open: limits.max_open,
        max_attempts: limits.max_attempts,
    };
    Ok(match store.admit_challenge(challenge, &caps, now).await? {
        Admitted::Open { attempts } => Issued::Open { attempts },
        Admitted::TooManyOpen { retry_after } => Issued::TooManyOpen { retry_after },
        Admitted::Looping {
            attempts,
            retry_after,
        } => Issued::Looping {
            attempts,
            retry_after,
        },
    })
}

/// The key-safe name a source address is rate-limited under: `ip:<address>` for IPv4 (an
/// IPv4-mapped IPv6 address counts as its IPv4 address), `ip:<prefix>::/64` for IPv6 — one
/// client holds a whole /64 — and `ip:<as given>` for anything that is not an address.
pub fn source_tag(address: &str) -> String {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => format!("ip:{v4}"),
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let s = v6.segments();
                format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Err(_) => format!("ip:{address}"),
    }
}

#[cfg(any(test, feature = "testkit"))]
pub mod contract;
#[cfg(test)]
mod tests;
