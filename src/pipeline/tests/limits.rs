//! The issue limits: challenges per subject and per source IP, the loop guard, open challenges per subject.

use super::*;

async fn limited(per_subject: u64, per_ip: u64) -> (Arc<Pipeline>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(NOW));
    let limits = format!(
        "  ttl_secs: 300\n  limits:\n    per_subject: {{max: {per_subject}, window_secs: 60}}\n    per_source_ip: {{max: {per_ip}, window_secs: 60}}\n"
    );
    let app = App::build_with_clock(
        &config(|t| t.replace("  ttl_secs: 300\n", &limits)),
        clock.clone(),
    )
    .await
    .unwrap();
    (app.pipeline().clone(), clock)
}

#[tokio::test]
async fn challenges_are_rate_limited_per_subject() {
    let (p, clock) = limited(2, 100).await;
    let weak = token("alice", "aal1", NOW, 10);
    for _ in 0..2 {
        assert!(matches!(
            p.decide(transfer(Some(&weak), 100, "bob")).await.verdict,
            Verdict::Challenge { .. }
        ));
    }
    let d = p.decide(transfer(Some(&weak), 100, "bob")).await;
    assert_eq!(d.reason, "challenge_rate_limited_subject");
    assert_eq!((&d.verdict, status(&d)), (&Verdict::Refused, 429));
    let Some(retry_after) = d.fault.as_ref().and_then(Fault::retry_after) else {
        panic!("{d:?}")
    };
    assert!((1..=60).contains(&retry_after));
    let other = token("carol", "aal1", NOW, 10);
    assert!(
        matches!(
            p.decide(transfer(Some(&other), 100, "bob")).await.verdict,
            Verdict::Challenge { .. }
        ),
        "other subjects are not limited"
    );
    clock.advance(60);
    let weak = token("alice", "aal1", NOW + 60, 10);
    assert!(
        matches!(
            p.decide(transfer(Some(&weak), 100, "bob")).await.verdict,
            Verdict::Challenge { .. }
        ),
        "a new window"
    );
}

#[tokio::test]
async fn challenges_are_rate_limited_per_source_ip() {
    let (p, _) = limited(100, 3).await;
    for (i, user) in ["u1", "u2", "u3", "u4"].iter().enumerate() {
        let d = p
            .decide(transfer(Some(&token(user, "aal1", NOW, 10)), 100, "bob"))
            .await;
        if i < 3 {
            assert!(
                matches!(d.verdict, Verdict::Challenge { .. }),
                "{user}: {d:?}"
            );
        } else {
            assert_eq!(d.reason, "challenge_rate_limited_source_ip");
        }
    }
}

#[tokio::test]
async fn a_client_retrying_one_transaction_without_completing_gets_a_403() {
    let (p, _) = pipeline().await;
    let weak = token("alice", "aal1", NOW, 10);
    for n in 1..=5 {
        let d = p.decide(transfer(Some(&weak), 100, "bob")).await;
        let Verdict::Challenge { challenge_id, .. } = &d.verdict else {
            panic!("attempt {n}: {d:?}")
        };
        let c = p
            .grants
            .challenge(challenge_id, NOW)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.attempts, n, "the challenge records its attempt number");
    }
    let d = p.decide(transfer(Some(&weak), 100, "bob")).await;
    assert_eq!(d.reason, "step_up_not_completing");
    assert_eq!((&d.verdict, status(&d)), (&Verdict::Refused, 403), "{d:?}");
    assert!(
        matches!(
            p.decide(transfer(Some(&weak), 200, "bob")).await.verdict,
            Verdict::Challenge { .. }
        ),
        "another transaction is challenged as usual"
    );
}

#[tokio::test]
async fn a_grant_lifts_the_loop_guard() {
    let (p, _) = pipeline().await;
    let weak = token("alice", "aal1", NOW, 10);
    for _ in 1..=4 {
        p.decide(transfer(Some(&weak), 100, "bob")).await;
    }
    // The fifth challenge is completed: progress.
    grant_for(&p, transfer(Some(&weak), 100, "bob"), "aal2", Some(1)).await;
    assert!(p.decide(transfer(Some(&weak), 100, "bob")).await.is_allow());
    let d = p.decide(transfer(Some(&weak), 100, "bob")).await;
    let Verdict::Challenge { challenge_id, .. } = &d.verdict else {
        panic!("{d:?}")
    };
    let c = p
        .grants
        .challenge(challenge_id, NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.attempts, 1, "the guard started over");
}

#[tokio::test]
async fn open_challenges_per_subject_are_capped() {
    let (p, _) = pipeline().await;
    let weak = token("alice", "aal1", NOW, 10);
    for amount in 1..=5 {
        assert!(matches!(
            p.decide(transfer(Some(&weak), amount, "bob")).await.verdict,
            Verdict::Challenge { .. }
        ));
    }
    let d = p.decide(transfer(Some(&weak), 6, "bob")).await;
    assert_eq!(d.reason, "too_many_open_challenges");
    assert_eq!((&d.verdict, status(&d)), (&Verdict::Refused, 429));
    let Some(retry_after) = d.fault.as_ref().and_then(Fault::retry_after) else {
        panic!("{d:?}")
    };
    assert_eq!(retry_after, 300, "until the oldest challenge expires");
    assert!(
        matches!(
            p.decide(transfer(Some(&weak), 1, "bob")).await.verdict,
            Verdict::Challenge { .. }
        ),
        "an open transaction may be challenged again"
    );
    assert!(
        matches!(
            p.decide(transfer(Some(&token("carol", "aal1", NOW, 10)), 6, "bob"))
                .await
                .verdict,
            Verdict::Challenge { .. }
        ),
        "other subjects are not affected"
    );
}

#[tokio::test]
async fn ipv6_sources_share_one_source_ip_limit_per_64() {
    let limits = "  ttl_secs: 300\n  limits:\n    per_source_ip: {max: 3, window_secs: 60}\n";
    let cfg = config(|t| t.replacen("  ttl_secs: 300\n", limits, 1));
    let app = App::build_with_clock(&cfg, Arc::new(ManualClock::new(NOW)))
        .await
        .unwrap();
    let p = app.pipeline();
    // Four users, each from an address of their own in one /64 (an IPv4-mapped address counts
    // as its IPv4 address): the fourth challenge is over the /64's limit.
    let from = |user: &str, source: &str| {
        let mut raw = transfer(Some(&token(user, "aal1", NOW, 10)), 100, "bob");
        raw.source_address = Some(source.into());
        raw
    };
    for (user, source) in [
        ("u1", "2001:db8:1:2::1"),
        ("u2", "2001:db8:1:2:aaaa::2"),
        ("u3", "2001:db8:1:2:ffff:ffff:ffff:ffff"),
    ] {
        let d = p.decide(from(user, source)).await;
        assert!(matches!(d.verdict, Verdict::Challenge { .. }), "{d:?}");
    }
    let d = p.decide(from("u4", "2001:db8:1:2:1234::9")).await;
    assert_eq!(d.reason, "challenge_rate_limited_source_ip", "{d:?}");
    let d = p.decide(from("u5", "2001:db8:1:3::1")).await;
    assert!(
        matches!(d.verdict, Verdict::Challenge { .. }),
        "another /64: {d:?}"
    );
    for (user, source) in [("u6", "10.9.8.7"), ("u7", "10.9.8.7"), ("u8", "10.9.8.7")] {
        let d = p.decide(from(user, source)).await;
        assert!(matches!(d.verdict, Verdict::Challenge { .. }), "{d:?}");
    }
    let d = p.decide(from("u9", "::ffff:10.9.8.7")).await;
    assert_eq!(d.reason, "challenge_rate_limited_source_ip", "{d:?}");
}
