//! Grant and challenge records for store tests.

use stepguard::grant::{Challenge, Grant, GrantTerms, Requirement};

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

/// `rounds` times: a single-use grant, 64 concurrent consumers, exactly one of them spends it.
pub async fn assert_consumed_exactly_once<S: stepguard::grant::GrantStore>(
    store: std::sync::Arc<S>,
    rounds: usize,
    now: i64,
) {
    for round in 0..rounds {
        let digest = format!("dev1:race-{round}");
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

/// The abuse limits checked when a challenge is issued, the same on every store: the cap on a
/// subject's transactions with open challenges, the loop guard, and the per-subject and
/// per-IP rate limits. `tag` keeps this run's subjects and keys apart; `now` is the store's
/// clock.
pub async fn assert_issue_limits<S: stepguard::grant::GrantStore + ?Sized>(
    store: &S,
    tag: &str,
    now: i64,
) {
    use stepguard::grant::{IssueLimits, Issued, Rate, RateScope};
    let subject = format!("iss|{tag}");
    let make = |id: &str, txn: &str, at: i64| {
        let mut c = challenge(&format!("{tag}-{id}"), &format!("dev1:{tag}-{txn}"), at);
        c.subject = subject.clone();
        c
    };
    let issue = |c: Challenge, limits: IssueLimits, at: i64| async move {
        store.issue_challenge(c, &limits, at).await.unwrap()
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

/// What the step-up completions need from every store: the transaction's open challenge (the
/// latest one issued, gone once closed or expired) and revocation by transaction and by
/// subject.
pub async fn assert_completion_lookups<S: stepguard::grant::GrantStore + ?Sized>(
    store: &S,
    tag: &str,
    now: i64,
) {
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
    assert!(store.revoke_transaction(&mine[0].digest).await.unwrap());
    assert!(!store.revoke_transaction(&mine[0].digest).await.unwrap());
    assert_eq!(store.revoke_subject(&subject).await.unwrap(), 2);
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

/// The subject's rate limit is checked before its source IP is counted, on every store: a
/// subject over its limit spends none of an IP's budget (and creates no counter for an IP it
/// has not used), from whatever address it comes. `tag` keeps this run's keys apart.
pub async fn assert_subject_checked_before_source_ip<S: stepguard::grant::GrantStore + ?Sized>(
    store: &S,
    tag: &str,
    now: i64,
) {
    use stepguard::grant::{IssueLimits, Issued, Rate, RateScope};
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
        async move { store.issue_challenge(c, &limits, t).await.unwrap() }
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
