//! The challenge-issuing limits, composed from the store's primitives, against a store: run on
//! the memory store by this module's tests and on Redis, Cluster and Sentinel by the
//! integration tests (beside `grant::contract`). Built for tests and under the `testkit`
//! feature.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use super::{IssueLimits, Issued, Rate, RateScope};
use crate::grant::contract::{challenge, grant};
use crate::grant::{Challenge, GrantStore};

/// The abuse limits checked when a challenge is issued, the same on every store: the cap on a
/// subject's transactions with open challenges, the loop guard, and the per-subject and
/// per-IP rate limits. `tag` keeps this run's subjects and keys apart; `now` is the store's
/// clock.
pub async fn assert_issue_limits(store: &dyn GrantStore, tag: &str, now: i64) {
    let subject = format!("iss|{tag}");
    let make = |id: &str, txn: &str, at: i64| {
        let mut c = challenge(&format!("{tag}-{id}"), &format!("dev1:{tag}-{txn}"), at);
        c.subject = subject.clone();
        c
    };
    let issue = |c: Challenge, limits: IssueLimits, at: i64| async move {
        super::issue(store, c, &limits, at).await.unwrap()
    };

    // At most two transactions with open challenges; challenging one of them again is fine.
    let open = || IssueLimits {
        max_open: Some(2),
        ..Default::default()
    };
    let first = make("o1", "a", now);
    assert_eq!(
        issue(first.clone(), open(), now).await,
        Issued::Open { attempts: 1 }
    );
    assert_eq!(
        issue(make("o2", "b", now), open(), now).await,
        Issued::Open { attempts: 1 }
    );
    assert_eq!(
        issue(make("o2b", "b", now), open(), now).await,
        Issued::Open { attempts: 2 }
    );
    let third = make("o3", "c", now);
    assert_eq!(
        issue(third.clone(), open(), now).await,
        Issued::TooManyOpen { retry_after: 300 }
    );
    assert!(
        store.challenge(&third.id, now).await.unwrap().is_none(),
        "a refusal stores nothing"
    );
    assert!(
        store.close_challenge(&first).await.unwrap(),
        "closing frees a place"
    );
    assert_eq!(
        issue(third, open(), now).await,
        Issued::Open { attempts: 1 }
    );
    let later = now + 301;
    assert_eq!(
        issue(make("o4", "d", later), open(), later).await,
        Issued::Open { attempts: 1 },
        "expired challenges free their places"
    );

    // The loop guard: three challenges for one transaction without a grant, then refusals
    // until a grant is minted for it.
    let looping = || IssueLimits {
        max_attempts: Some(3),
        ..Default::default()
    };
    for n in 1..=3u32 {
        assert_eq!(
            issue(make(&format!("l{n}"), "loop", now), looping(), now).await,
            Issued::Open { attempts: n }
        );
    }
    let stored = store
        .challenge(&format!("{tag}-l2"), now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.attempts, 2, "the record carries its attempt number");
    let refused = make("l4", "loop", now);
    assert_eq!(
        issue(refused.clone(), looping(), now).await,
        Issued::Looping {
            attempts: 3,
            retry_after: 300
        }
    );
    assert!(store.challenge(&refused.id, now).await.unwrap().is_none());
    let mut g = grant(&format!("dev1:{tag}-loop"), Some(1), now);
    g.subject = subject.clone();
    store.put_grant(g).await.unwrap();
    assert_eq!(
        issue(make("l5", "loop", now), looping(), now).await,
        Issued::Open { attempts: 1 },
        "a grant is progress: the guard starts over"
    );

    // Rate limits in fixed windows: the subject is checked first, then the source IP counted.
    let t = now - now.rem_euclid(60) + 10;
    let rates = |who: &str| IssueLimits {
        rates: vec![
            Rate {
                scope: RateScope::Subject,
                name: format!("subject:{tag}-{who}"),
                window: 60,
                max: 2,
            },
            Rate {
                scope: RateScope::SourceIp,
                name: format!("ip:{tag}"),
                window: 60,
                max: 3,
            },
        ],
        ..Default::default()
    };
    for i in 1..=2 {
        assert!(matches!(
            issue(
                make(&format!("r{i}"), &format!("r{i}"), t),
                rates("alice"),
                t
            )
            .await,
            Issued::Open { .. }
        ));
    }
    assert_eq!(
        issue(make("r3", "r3", t), rates("alice"), t).await,
        Issued::RateLimited {
            scope: RateScope::Subject,
            retry_after: 50
        }
    );
    assert!(
        matches!(
            issue(make("r4", "r4", t), rates("carol"), t).await,
            Issued::Open { .. }
        ),
        "alice's refused third challenge did not count against the IP"
    );
    assert_eq!(
        issue(make("r4b", "r4b", t), rates("carol"), t).await,
        Issued::RateLimited {
            scope: RateScope::SourceIp,
            retry_after: 50
        },
        "the IP's fourth challenge is over its limit"
    );
    assert!(
        matches!(
            issue(make("r5", "r5", t + 60), rates("alice"), t + 60).await,
            Issued::Open { .. }
        ),
        "a new window"
    );
}

/// The subject's rate limit is checked before its source IP is counted, on every store: a
/// subject over its limit spends none of an IP's budget (and creates no counter for an IP it
/// has not used), from whatever address it comes. `tag` keeps this run's keys apart.
pub async fn assert_subject_checked_before_source_ip(store: &dyn GrantStore, tag: &str, now: i64) {
    let t = now - now.rem_euclid(60) + 10;
    // Names of their own: the other checks may have run on this store, in this window.
    let tag = format!("{tag}-sf");
    let tag = tag.as_str();
    let issue = |who: &str, ip: &str, n: usize| {
        let mut c = challenge(
            &format!("{tag}-{who}-{ip}-{n}"),
            &format!("dev1:{tag}-{who}-{ip}-{n}"),
            t,
        );
        c.subject = format!("iss|{tag}-{who}");
        let limits = IssueLimits {
            rates: vec![
                Rate {
                    scope: RateScope::Subject,
                    name: format!("subject:{tag}-{who}"),
                    window: 60,
                    max: 1,
                },
                Rate {
                    scope: RateScope::SourceIp,
                    name: format!("ip:{tag}-{ip}"),
                    window: 60,
                    max: 2,
                },
            ],
            ..Default::default()
        };
        async move { super::issue(store, c, &limits, t).await.unwrap() }
    };
    let subject_limited = Issued::RateLimited {
        scope: RateScope::Subject,
        retry_after: 50,
    };
    assert!(matches!(issue("alice", "x", 0).await, Issued::Open { .. }));
    for n in 1..=5 {
        assert_eq!(
            issue("alice", "x", n).await,
            subject_limited,
            "alice is over her own limit, not the IP's"
        );
        assert_eq!(issue("alice", "y", n).await, subject_limited);
    }
    // x counted alice's one challenge, y none of hers.
    assert!(matches!(issue("bob", "x", 0).await, Issued::Open { .. }));
    assert_eq!(
        issue("carol", "x", 0).await,
        Issued::RateLimited {
            scope: RateScope::SourceIp,
            retry_after: 50
        }
    );
    for who in ["dave", "erin"] {
        assert!(
            matches!(issue(who, "y", 0).await, Issued::Open { .. }),
            "{who} from y"
        );
    }
}
