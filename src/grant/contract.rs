//! The contract every grant store keeps, as one suite run against each backend: the memory
//! store in this crate's unit tests, standalone Redis, Cluster and Sentinel from the integration
//! tests (`tests/redis_store.rs`, `tests/redis_cluster.rs`, `tests/redis_sentinel.rs`). Built
//! for tests and under the `testkit` feature.
//!
//! Every check takes the store, a `tag` that keeps its keys apart from other checks' on a shared
//! store (key-safe: letters, digits, `-`), and `now`, the store's clock (a Redis store sets TTLs
//! from its own clock). [`assert_all`] runs them all.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::sync::Arc;

use super::{
    Admitted, Caps, Challenge, Counter, Grant, GrantStore, GrantTerms, JOURNAL_MAX, Requirement,
    Revoke, Tally,
};

/// A grant for `digest` with `uses` uses left, issued at `now`, valid 60 s.
pub fn grant(digest: &str, uses: Option<u32>, now: i64) -> Grant {
    Grant {
        id: format!("g-{digest}"),
        digest: digest.into(),
        subject: "iss|alice".into(),
        action: "payments.transfer".into(),
        acr: "aal2".into(),
        amr: vec!["otp".into()],
        auth_time: now,
        method: "oidc".into(),
        challenge_id: Some("c1".into()),
        issued_at: now,
        expires_at: now + 60,
        uses_left: uses,
        policy_revision: None,
    }
}

/// The grant a completion mints for challenge `c` at `now` (its terms, `aal3` with a hardware
/// key): what a store test writes to stand for a user who stepped up.
pub fn minted(c: &Challenge, now: i64) -> Grant {
    Grant {
        id: format!("grant-{}", c.id),
        digest: c.digest.clone(),
        subject: c.subject.clone(),
        action: c.action.clone(),
        acr: "aal3".into(),
        amr: vec!["hwk".into()],
        auth_time: now,
        method: "oidc".into(),
        challenge_id: Some(c.id.clone()),
        issued_at: now,
        expires_at: now + c.terms.ttl,
        uses_left: c.terms.single_use.then_some(1),
        policy_revision: None,
    }
}

/// An open challenge `id` for `digest`, issued at `now`, valid 300 s.
pub fn challenge(id: &str, digest: &str, now: i64) -> Challenge {
    Challenge {
        id: id.into(),
        digest: digest.into(),
        subject: "iss|alice".into(),
        action: "payments.transfer".into(),
        requirement: Requirement {
            acr_values: vec!["aal2".into()],
            max_age: 0,
        },
        terms: GrantTerms {
            single_use: true,
            ttl: 60,
        },
        issued_at: now,
        expires_at: now + 300,
        return_to: "/".into(),
        nonce: "n".into(),
        pkce_verifier: "v".into(),
        // What the store records for a transaction's first challenge.
        attempts: 1,
        browser_binding: None,
        authorization_details: None,
        policy_revision: None,
    }
}

/// Every check of this suite, in turn, under `<tag>-store` (apart from the limits contract's
/// keys under `tag` on the same store).
pub async fn assert_all(store: Arc<dyn GrantStore>, tag: &str, now: i64) {
    let tag = &format!("{tag}-store");
    assert_grant_lifecycle(&*store, tag, now).await;
    assert_consumed_exactly_once(store.clone(), tag, 20, now).await;
    assert_open_cap(&*store, tag, now).await;
    assert_loop_guard(&*store, tag, now).await;
    assert_counters(&*store, tag, now).await;
    assert_counters_stop_at_a_max(&*store, tag, now).await;
    assert_marks(&*store, tag, now).await;
    assert_completion_lookups(&*store, tag, now).await;
    assert_journals(&*store, tag, now).await;
    store.ping().await.unwrap();
}

/// Journals keep what was appended until it expires, each entry once, the latest-expiring
/// [`JOURNAL_MAX`] at most, and read back in the order asked.
pub async fn assert_journals(store: &dyn GrantStore, tag: &str, now: i64) {
    let (a, b) = (format!("{tag}-journal-a"), format!("{tag}-journal-b"));
    let none = format!("{tag}-journal-none");
    store.append(&a, "first", now + 100, now).await.unwrap();
    store.append(&a, "short", now + 10, now).await.unwrap();
    store.append(&a, "first", now + 100, now).await.unwrap();
    store.append(&b, "other", now + 100, now).await.unwrap();
    let read = store.journals(&[&a, &none, &b], now).await.unwrap();
    assert_eq!(read, [vec!["short", "first"], vec![], vec!["other"]]);
    let later = store.journals(&[&a], now + 10).await.unwrap();
    assert_eq!(later, [vec!["first"]], "an expired entry is not read");
    for i in 0..JOURNAL_MAX + 5 {
        let until = now + 200 + i as i64;
        store
            .append(&b, &format!("e{i}"), until, now)
            .await
            .unwrap();
    }
    let full = store.journals(&[&b], now).await.unwrap().remove(0);
    assert_eq!(full.len(), JOURNAL_MAX);
    assert_eq!(
        full.first().map(String::as_str),
        Some("e5"),
        "the soonest to expire went first"
    );
    assert_eq!(
        full.last().map(String::as_str),
        Some(format!("e{}", JOURNAL_MAX + 4).as_str())
    );
}

/// Single-use, counted and reusable grants; a replaced grant is not spent by its old holder;
/// an expired grant is neither found nor spent.
pub async fn assert_grant_lifecycle(store: &dyn GrantStore, tag: &str, now: i64) {
    let single = grant(&format!("dev1:{tag}-single"), Some(1), now);
    store.put_grant(single.clone()).await.unwrap();
    let found = store.find_grant(&single.digest, now).await.unwrap();
    assert_eq!(found.as_ref(), Some(&single));
    assert!(store.consume(&single, now).await.unwrap());
    assert!(!store.consume(&single, now).await.unwrap(), "spent");
    assert!(
        store
            .find_grant(&single.digest, now)
            .await
            .unwrap()
            .is_none()
    );

    let counted = grant(&format!("dev1:{tag}-counted"), Some(2), now);
    store.put_grant(counted.clone()).await.unwrap();
    assert!(store.consume(&counted, now).await.unwrap());
    let left = store.find_grant(&counted.digest, now).await.unwrap();
    assert_eq!(left.and_then(|g| g.uses_left), Some(1));
    assert!(store.consume(&counted, now).await.unwrap());
    assert!(!store.consume(&counted, now).await.unwrap());

    let reusable = grant(&format!("dev1:{tag}-reusable"), None, now);
    store.put_grant(reusable.clone()).await.unwrap();
    for _ in 0..3 {
        assert!(store.consume(&reusable, now).await.unwrap());
    }
    assert!(
        store
            .find_grant(&reusable.digest, now + 59)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .find_grant(&reusable.digest, now + 60)
            .await
            .unwrap()
            .is_none(),
        "expired"
    );
    assert!(
        !store.consume(&reusable, now + 60).await.unwrap(),
        "expired"
    );

    let digest = format!("dev1:{tag}-replaced");
    let old = grant(&digest, Some(1), now);
    store.put_grant(old.clone()).await.unwrap();
    let new = Grant {
        id: format!("g-{tag}-new"),
        ..old.clone()
    };
    store.put_grant(new.clone()).await.unwrap();
    assert!(!store.consume(&old, now).await.unwrap(), "the old holder");
    assert!(store.consume(&new, now).await.unwrap());
}

/// `rounds` times: a single-use grant, 64 concurrent consumers, exactly one of them spends it.
pub async fn assert_consumed_exactly_once(
    store: Arc<dyn GrantStore>,
    tag: &str,
    rounds: usize,
    now: i64,
) {
    for round in 0..rounds {
        let digest = format!("dev1:{tag}-race-{round}");
        store.put_grant(grant(&digest, Some(1), now)).await.unwrap();
        let g = store.find_grant(&digest, now).await.unwrap().unwrap();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (store, g) = (store.clone(), g.clone());
                tokio::spawn(async move { store.consume(&g, now).await })
            })
            .collect();
        let mut spent = 0;
        for t in tasks {
            spent += usize::from(t.await.unwrap().unwrap());
        }
        assert_eq!(spent, 1, "round {round}");
    }
}

/// A challenge of `tag`'s subject for transaction `txn`.
fn subjects_challenge(tag: &str, id: &str, txn: &str, at: i64) -> Challenge {
    let mut c = challenge(&format!("{tag}-{id}"), &format!("dev1:{tag}-{txn}"), at);
    c.subject = format!("iss|{tag}");
    c
}

/// The cap on a subject's transactions with open challenges: challenging one of them again
/// takes no other place; a refusal stores nothing; closing or expiring frees a place.
pub async fn assert_open_cap(store: &dyn GrantStore, tag: &str, now: i64) {
    let caps = Caps {
        max_open: Some(2),
        max_attempts: None,
    };
    let make = |id: &str, txn: &str, at: i64| subjects_challenge(tag, id, txn, at);
    let admit =
        |c: Challenge, at: i64| async move { store.admit_challenge(c, &caps, at).await.unwrap() };
    let first = make("o1", "a", now);
    assert_eq!(
        admit(first.clone(), now).await,
        Admitted::Open { attempts: 1 }
    );
    assert_eq!(
        admit(make("o2", "b", now), now).await,
        Admitted::Open { attempts: 1 }
    );
    assert_eq!(
        admit(make("o2b", "b", now), now).await,
        Admitted::Open { attempts: 2 }
    );
    let third = make("o3", "c", now);
    assert_eq!(
        admit(third.clone(), now).await,
        Admitted::TooManyOpen { retry_after: 300 }
    );
    assert!(
        store.challenge(&third.id, now).await.unwrap().is_none(),
        "a refusal stores nothing"
    );
    assert!(
        store.close_challenge(&first).await.unwrap(),
        "closing frees a place"
    );
    assert!(!store.close_challenge(&first).await.unwrap(), "once");
    assert_eq!(admit(third, now).await, Admitted::Open { attempts: 1 });
    let later = now + 301;
    assert_eq!(
        admit(make("o4", "d", later), later).await,
        Admitted::Open { attempts: 1 },
        "expired challenges free their places"
    );
}

/// The loop guard: three challenges for one transaction without a grant, then refusals until
/// a grant is minted for it. The record carries its attempt number.
pub async fn assert_loop_guard(store: &dyn GrantStore, tag: &str, now: i64) {
    let caps = Caps {
        max_open: None,
        max_attempts: Some(3),
    };
    let make = |id: &str| subjects_challenge(tag, id, "loop", now);
    for n in 1..=3u32 {
        assert_eq!(
            store
                .admit_challenge(make(&format!("l{n}")), &caps, now)
                .await
                .unwrap(),
            Admitted::Open { attempts: n }
        );
    }
    let stored = store
        .challenge(&format!("{tag}-l2"), now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.attempts, 2, "the record carries its attempt number");
    let refused = make("l4");
    assert_eq!(
        store
            .admit_challenge(refused.clone(), &caps, now)
            .await
            .unwrap(),
        Admitted::Looping {
            attempts: 3,
            retry_after: 300
        }
    );
    assert!(store.challenge(&refused.id, now).await.unwrap().is_none());
    let mut g = grant(&format!("dev1:{tag}-loop"), Some(1), now);
    g.subject = format!("iss|{tag}");
    store.put_grant(g).await.unwrap();
    assert_eq!(
        store.admit_challenge(make("l5"), &caps, now).await.unwrap(),
        Admitted::Open { attempts: 1 },
        "a grant is progress: the guard starts over"
    );
}

/// Counters without a max count every event in fixed windows; a new window starts over.
pub async fn assert_counters(store: &dyn GrantStore, tag: &str, now: i64) {
    let t = now - now.rem_euclid(60) + 10;
    let name = format!("velocity:{tag}");
    let counter = [Counter {
        name: &name,
        window: 60,
        max: None,
    }];
    for n in 1..=5 {
        let tally = store.tally(&counter, &[], t).await.unwrap();
        assert_eq!(tally.counts, vec![n]);
    }
    let tally = store.tally(&counter, &[], t + 49).await.unwrap();
    assert_eq!(tally.counts, vec![6], "the same window");
    let tally = store.tally(&counter, &[], t + 60).await.unwrap();
    assert_eq!(tally.counts, vec![1], "a new window");
}

/// Counters with a max, counted in order: the first one over its max is the last one counted —
/// the counters after it are neither created nor counted. (What checks a subject's rate before
/// a source IP is counted.)
pub async fn assert_counters_stop_at_a_max(store: &dyn GrantStore, tag: &str, now: i64) {
    let t = now - now.rem_euclid(60) + 10;
    let names = |who: &str, ip: &str| (format!("subject:{tag}-{who}"), format!("ip:{tag}-{ip}"));
    let tally = |who: &str, ip: &str| {
        let (subject, ip) = names(who, ip);
        async move {
            let counters = [
                Counter {
                    name: &subject,
                    window: 60,
                    max: Some(1),
                },
                Counter {
                    name: &ip,
                    window: 60,
                    max: Some(2),
                },
            ];
            store.tally(&counters, &["-"], t).await.unwrap()
        }
    };
    assert_eq!(
        tally("alice", "x").await,
        Tally {
            counts: vec![1, 1],
            marks: vec![false]
        }
    );
    for i in 1..=5 {
        let over = |n| Tally {
            counts: vec![n],
            marks: vec![false],
        };
        assert_eq!(
            tally("alice", "x").await,
            over(2 * i),
            "alice is over her own limit, not the IP's"
        );
        assert_eq!(tally("alice", "y").await, over(2 * i + 1));
    }
    // x counted alice's one event, y none of hers.
    assert_eq!(tally("bob", "x").await.counts, vec![1, 2]);
    assert_eq!(
        tally("carol", "x").await.counts,
        vec![1, 3],
        "over the IP's"
    );
    assert_eq!(tally("dave", "y").await.counts, vec![1, 1]);
    assert_eq!(tally("erin", "y").await.counts, vec![1, 2]);
}

/// Marks: unset until remembered; remembering again refreshes; read beside a counter in one
/// call, or alone.
pub async fn assert_marks(store: &dyn GrantStore, tag: &str, now: i64) {
    let (known, other) = (format!("seen:{tag}-a"), format!("seen:{tag}-b"));
    let name = format!("velocity:{tag}-marks");
    let counter = [Counter {
        name: &name,
        window: 60,
        max: None,
    }];
    let read = || async {
        let tally = store.tally(&counter, &[&known, &other], now).await.unwrap();
        tally.marks
    };
    assert_eq!(read().await, vec![false, false]);
    store.remember(&known, now + 600, now).await.unwrap();
    assert_eq!(read().await, vec![true, false]);
    store.remember(&known, now + 900, now).await.unwrap();
    assert_eq!(read().await, vec![true, false], "refreshed");
    let marks_only = store.tally(&[], &[&other, &known], now).await.unwrap();
    assert_eq!(marks_only.marks, vec![false, true]);
    assert!(marks_only.counts.is_empty());
}

/// What the step-up completions need from every store: the transaction's open challenge (the
/// latest one stored, gone once closed or expired), revocation by transaction and by subject,
/// and single-use claims.
pub async fn assert_completion_lookups(store: &dyn GrantStore, tag: &str, now: i64) {
    let digest = format!("dev1:{tag}-open");
    assert!(store.open_challenge(&digest, now).await.unwrap().is_none());
    let first = challenge(&format!("{tag}-c1"), &digest, now);
    store.put_challenge(first).await.unwrap();
    let second = challenge(&format!("{tag}-c2"), &digest, now + 5);
    store.put_challenge(second.clone()).await.unwrap();
    let open = store
        .open_challenge(&digest, now + 5)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(open.id, second.id, "the latest challenge answers");
    assert!(
        store
            .open_challenge(&digest, now + 305)
            .await
            .unwrap()
            .is_none(),
        "expired"
    );
    assert!(store.close_challenge(&second).await.unwrap());
    assert!(
        store
            .open_challenge(&digest, now + 5)
            .await
            .unwrap()
            .is_none(),
        "closed"
    );

    let subject = format!("iss|{tag}-revoked");
    let mine: Vec<Grant> = (0..3)
        .map(|i| {
            let mut g = grant(&format!("dev1:{tag}-r{i}"), Some(1), now);
            g.subject = subject.clone();
            g
        })
        .collect();
    for g in &mine {
        store.put_grant(g.clone()).await.unwrap();
    }
    let other = grant(&format!("dev1:{tag}-other"), Some(1), now);
    store.put_grant(other.clone()).await.unwrap();
    assert_eq!(
        store
            .revoke(Revoke::Transaction(&mine[0].digest))
            .await
            .unwrap(),
        1
    );
    assert!(!store.revoke_transaction(&mine[0].digest).await.unwrap());
    assert_eq!(store.revoke(Revoke::Subject(&subject)).await.unwrap(), 2);
    for g in &mine {
        assert!(store.find_grant(&g.digest, now).await.unwrap().is_none());
    }
    assert_eq!(store.revoke_subject(&subject).await.unwrap(), 0);
    assert!(
        store
            .find_grant(&other.digest, now)
            .await
            .unwrap()
            .is_some(),
        "another subject's grant stays"
    );

    let event = format!("auth:{tag}");
    assert!(store.claim_once(&event, now + 60, now).await.unwrap());
    assert!(
        !store.claim_once(&event, now + 60, now + 1).await.unwrap(),
        "once"
    );
    assert!(
        store
            .claim_once(&format!("{event}-2"), now + 60, now)
            .await
            .unwrap()
    );
}
