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
