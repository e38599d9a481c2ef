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
        attempts: 0,
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
