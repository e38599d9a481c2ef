use std::sync::Arc;

use super::*;

pub(crate) use crate::grant::contract::grant;

/// A challenge for digest `d` as the memory store's own tests want it (no attempts counted yet).
fn challenge(id: &str, now: i64) -> Challenge {
    Challenge {
        attempts: 0,
        ..crate::grant::contract::challenge(id, "d", now)
    }
}

#[tokio::test]
async fn single_use_grant_is_spent_once() {
    let store = MemoryStore::new(10);
    store.put_grant(grant("d1", Some(1), 100)).await.unwrap();
    let g = store.find_grant("d1", 100).await.unwrap().unwrap();
    assert!(store.consume(&g, 100).await.unwrap());
    assert!(!store.consume(&g, 100).await.unwrap());
    assert!(store.find_grant("d1", 100).await.unwrap().is_none());
}

#[tokio::test]
async fn counted_and_reusable_grants() {
    let store = MemoryStore::new(10);
    store.put_grant(grant("d2", Some(2), 100)).await.unwrap();
    store.put_grant(grant("d3", None, 100)).await.unwrap();
    let g2 = store.find_grant("d2", 100).await.unwrap().unwrap();
    assert!(store.consume(&g2, 100).await.unwrap());
    assert!(store.consume(&g2, 100).await.unwrap());
    assert!(!store.consume(&g2, 100).await.unwrap());
    let g3 = store.find_grant("d3", 100).await.unwrap().unwrap();
    for _ in 0..5 {
        assert!(store.consume(&g3, 100).await.unwrap());
    }
}

#[tokio::test]
async fn expired_grants_and_challenges_are_gone() {
    let store = MemoryStore::new(10);
    let g = grant("d4", Some(1), 100);
    store.put_grant(g.clone()).await.unwrap();
    assert!(store.find_grant("d4", 160).await.unwrap().is_none());
    assert!(!store.consume(&g, 160).await.unwrap());
    store.put_challenge(challenge("c1", 100)).await.unwrap();
    assert!(store.challenge("c1", 399).await.unwrap().is_some());
    assert!(store.challenge("c1", 400).await.unwrap().is_none());
    let c = challenge("c1", 100);
    assert!(store.close_challenge(&c).await.unwrap());
    assert!(!store.close_challenge(&c).await.unwrap());
}

#[tokio::test]
async fn a_replaced_grant_is_not_spent_by_the_old_holder() {
    let store = MemoryStore::new(10);
    let old = grant("d5", Some(1), 100);
    store.put_grant(old.clone()).await.unwrap();
    let mut new = grant("d5", Some(1), 100);
    new.id = "g-new".into();
    store.put_grant(new).await.unwrap();
    assert!(!store.consume(&old, 100).await.unwrap());
}

#[tokio::test]
async fn the_store_is_bounded() {
    let store = MemoryStore::new(2);
    store.put_grant(grant("a", Some(1), 100)).await.unwrap();
    store.put_grant(grant("b", Some(1), 100)).await.unwrap();
    assert_eq!(
        store.put_grant(grant("c", Some(1), 100)).await,
        Err(GrantError::Full)
    );
    // Once the first two expire they are swept to make room.
    store.put_grant(grant("c", Some(1), 200)).await.unwrap();
    assert_eq!(store.len().0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_consumers_spend_a_single_use_grant_exactly_once() {
    let store = Arc::new(MemoryStore::new(10));
    for round in 0..50 {
        let digest = format!("race-{round}");
        store.put_grant(grant(&digest, Some(1), 100)).await.unwrap();
        let g = store.find_grant(&digest, 100).await.unwrap().unwrap();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (store, g) = (store.clone(), g.clone());
                tokio::spawn(async move { store.consume(&g, 100).await.unwrap() })
            })
            .collect();
        let mut spent = 0;
        for t in tasks {
            spent += usize::from(t.await.unwrap());
        }
        assert_eq!(spent, 1, "round {round}");
    }
}

/// What the check path fills from outside — remembered networks, velocity and rate counters,
/// other subjects' challenges, open lists and loop guards — past the cap: a challenge issued
/// before is still completed once, and its grant found and spent.
#[tokio::test]
async fn completions_work_when_every_other_map_is_full() {
    use crate::challenge::limits::{IssueLimits, Rate, RateScope, issue};
    use crate::completion::{Assurance, Completer, CompletionError};
    use crate::config::ContextConfig;
    use crate::context::{Signals, Velocity};
    use crate::grant::Counter;

    const CAP: usize = 4;
    let now = 1_000;
    let store = Arc::new(MemoryStore::new(CAP));
    let mine = challenge("mine", now);
    store.put_challenge(mine.clone()).await.unwrap();
    for i in 0..3 * CAP {
        // Approved from a new network: two marks each (the network, the subject's baseline).
        let signals = Signals {
            network: Some(format!("10.0.{i}.0/24")),
            new_network: None,
            velocity: Velocity {
                window_secs: 60,
                count: 1,
            },
            device_trust: None,
            break_glass_justification: None,
        };
        let subject = format!("iss|user{i}");
        let _ = signals
            .remember(store.as_ref(), &ContextConfig::default(), &subject, now)
            .await;
        let velocity = format!("velocity:{i}");
        let counter = Counter {
            name: &velocity,
            window: 60,
            max: None,
        };
        let _ = store.tally(&[counter], &["seen:a", "seen:b"], now).await;
        let mut other = challenge(&format!("other-{i}"), now);
        other.subject = subject;
        other.digest = format!("d-{i}");
        let limits = IssueLimits {
            rates: vec![Rate {
                scope: RateScope::SourceIp,
                name: format!("ip:10.0.{i}.1"),
                window: 60,
                max: 10,
            }],
            max_open: Some(5),
            max_attempts: Some(5),
        };
        let _ = issue(store.as_ref(), other, &limits, now).await;
    }
    {
        let inner = store.inner.lock().unwrap();
        // Every map the loop wrote to is at its cap (later writes were refused, or forgot the
        // soonest network marks); the completion's own maps are untouched.
        let full = [
            ("challenges", inner.challenges.len()),
            ("limited", inner.limited.len()),
            ("counters", inner.counters.len()),
            ("open", inner.open.len()),
            ("attempts", inner.attempts.len()),
            ("latest", inner.latest.len()),
            ("marks", inner.marks.len()),
        ];
        for (map, len) in full {
            assert_eq!(len, CAP, "{map}");
        }
        assert!(inner.grants.is_empty());
        assert!(inner.claims.is_empty(), "network marks are no claims");
    }
    let completer = Completer::new(
        store.clone(),
        Arc::new(crate::evidence::LogEvidence::default()),
        ["aal1", "aal2", "aal3"].map(String::from).to_vec(),
        5,
    );
    let assurance = Assurance {
        subject: "iss|alice".into(),
        acr: "aal2".into(),
        amr: vec!["otp".into()],
        auth_time: now + 1,
        method: "rfc9470".into(),
        approver: None,
        event: crate::completion::AuthEvent::SignIn {
            subject: "iss|alice".into(),
            auth_time: now + 1,
            sid: None,
        },
    };
    let grant = completer
        .complete_once(&mine, &assurance, now + 2, now + 300)
        .await
        .unwrap();
    let found = store.find_grant("d", now + 2).await.unwrap().unwrap();
    assert_eq!(found.id, grant.id);
    assert!(store.consume(&found, now + 2).await.unwrap());
    assert_eq!(
        completer
            .complete_once(&mine, &assurance, now + 3, now + 300)
            .await,
        Err(CompletionError::AlreadyUsed),
        "one sign-in, one completion"
    );
}

#[tokio::test]
async fn network_marks_are_forgotten_soonest_first_and_never_refused() {
    let store = MemoryStore::new(16);
    for i in 0..16 {
        store
            .remember(&format!("seen:n{i}"), 2_000 + i, 1_000)
            .await
            .unwrap();
    }
    // Full: the two soonest to expire (an eighth of the cap) make room for the new mark.
    store.remember("seen:new", 5_000, 1_000).await.unwrap();
    let seen = |name: &'static str| {
        let store = &store;
        async move { store.tally(&[], &[name], 1_000).await.unwrap().marks[0] }
    };
    assert!(seen("seen:new").await);
    assert!(!seen("seen:n0").await && !seen("seen:n1").await);
    assert!(seen("seen:n2").await && seen("seen:n15").await);
    assert_eq!(store.inner.lock().unwrap().marks.len(), 15);
    // Remembering a known mark again refreshes it and takes no room.
    store.remember("seen:n2", 9_000, 1_000).await.unwrap();
    assert_eq!(store.inner.lock().unwrap().marks["seen:n2"], 9_000);
}

#[tokio::test]
async fn a_subject_over_its_limit_creates_no_source_ip_counter() {
    use crate::challenge::limits::{IssueLimits, Issued, Rate, RateScope, issue};
    let store = MemoryStore::new(1_000);
    let limits = |ip: usize| IssueLimits {
        rates: vec![
            Rate {
                scope: RateScope::SourceIp,
                name: format!("ip:10.0.0.{ip}"),
                window: 60,
                max: 10,
            },
            Rate {
                scope: RateScope::Subject,
                name: "subject:alice".into(),
                window: 60,
                max: 1,
            },
        ],
        ..Default::default()
    };
    let mut first = challenge("c0", 1_000);
    first.digest = "d0".into();
    let issued = issue(&store, first, &limits(0), 1_000).await;
    assert_eq!(issued, Ok(Issued::Open { attempts: 1 }));
    for ip in 1..100 {
        let mut c = challenge(&format!("c{ip}"), 1_000);
        c.digest = format!("d{ip}");
        let issued = issue(&store, c, &limits(ip), 1_000).await.unwrap();
        assert!(
            matches!(
                issued,
                Issued::RateLimited {
                    scope: RateScope::Subject,
                    ..
                }
            ),
            "{issued:?}"
        );
    }
    assert_eq!(
        store.inner.lock().unwrap().limited.len(),
        2,
        "the subject's counter and its first IP's"
    );
}

#[tokio::test]
async fn a_refused_challenge_takes_no_place_in_any_map() {
    let store = MemoryStore::new(2);
    for (id, digest, subject) in [("c1", "d1", "iss|a"), ("c2", "d2", "iss|b")] {
        let mut c = challenge(id, 1_000);
        (c.digest, c.subject) = (digest.into(), subject.into());
        store.put_challenge(c).await.unwrap();
    }
    for i in 0..10 {
        let mut c = challenge(&format!("x{i}"), 1_000);
        (c.digest, c.subject) = (format!("dx{i}"), format!("iss|x{i}"));
        assert_eq!(store.put_challenge(c).await, Err(GrantError::Full));
    }
    let inner = store.inner.lock().unwrap();
    let sizes = [inner.open.len(), inner.attempts.len(), inner.latest.len()];
    assert_eq!(sizes, [2, 2, 2]);
}

/// A sign-in claimed per token and a velocity counter per subject (of a thousand) and 20 s
/// window, a hundred a second, each claim live 20 s: the maps hold about what is live, not `max_entries` of what expired,
/// and nothing live is swept.
#[tokio::test]
async fn expired_claims_and_counters_are_swept_before_their_map_is_full() {
    const SUBJECTS: i64 = 1_000;
    let store = MemoryStore::new(100_000);
    let (per_second, live_secs) = (100, 20);
    let mut now = 1_000;
    for i in 0..30_000i64 {
        now = 1_000 + i / per_second;
        assert!(
            store
                .claim_once(&format!("event-{i}"), now + live_secs, now)
                .await
                .unwrap()
        );
        let name = format!("velocity:subject-{}", i % SUBJECTS);
        let counter = Counter {
            name: &name,
            window: live_secs,
            max: None,
        };
        store.tally(&[counter], &[], now).await.unwrap();
    }
    let live = (per_second * live_secs) as usize;
    let (claims, counters) = {
        let inner = store.inner.lock().unwrap();
        (inner.claims.len(), inner.counters.len())
    };
    let bound = 2 * (live + per_second as usize) + SWEEP_FLOOR;
    assert!(
        claims <= bound,
        "{claims} claims for about {live} live ones"
    );
    assert!(
        counters <= bound,
        "{counters} counters for {SUBJECTS} subjects"
    );
    for i in 30_000 - live as i64..30_000 {
        assert!(
            !store
                .claim_once(&format!("event-{i}"), now + live_secs, now)
                .await
                .unwrap(),
            "event-{i} is still claimed"
        );
    }
}
