//! When a grant is spent, and RFC 9470 retries.

use super::*;

/// A pipeline on a one-file Rego policy (`package custom`, entrypoint `custom/decision`),
/// written to a directory of its own named `name`; generous time limits (these tests are about
/// what is spent, not about time, and run beside the whole suite).
pub(super) async fn custom_policy(name: &str, rego: &str) -> (Arc<Pipeline>, Arc<ManualClock>) {
    let dir = std::env::temp_dir().join(format!("stepguard-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("custom.rego"), rego).unwrap();
    let source = dir.display().to_string();
    pipeline_with(move |t| {
        t.replace("source: ../../policies", &format!("source: {source}"))
            .replace(
                "entrypoint: stepguard/authz/decision",
                "entrypoint: custom/decision",
            )
            .replace("budget_ms: 250", "budget_ms: 5000")
            .replace("timeout_ms: 100", "timeout_ms: 2000")
    })
    .await
}

/// Allows whenever the transaction has a grant, saying `used_grant: <used>` (or nothing).
fn allow_on_any_grant(used: &str) -> String {
    format!(
        r#"package custom

import rego.v1

decision := {{"result": "allow", "reason": "grant_present"{used}}} if input.stepguard.grant != null

decision := {{"result": "step_up", "reason": "no_grant",
             "requirement": {{"acr_values": ["aal2"], "max_age": 0}}}} if input.stepguard.grant == null
"#
    )
}

#[tokio::test]
async fn a_single_use_grant_is_spent_when_the_policy_does_not_say_it_allowed_without_it() {
    let (p, _) = custom_policy("undeclared", &allow_on_any_grant("")).await;
    let t = token("alice", "aal1", NOW, 10);
    grant_for(&p, transfer(Some(&t), 100, "bob"), "aal2", Some(1)).await;
    let d = p.decide(transfer(Some(&t), 100, "bob")).await;
    assert_eq!(d.verdict, Verdict::Allow, "{d:?}");
    assert!(d.grant_id.is_some(), "the approval spent the grant: {d:?}");
    let d = p.decide(transfer(Some(&t), 100, "bob")).await;
    assert!(
        matches!(d.verdict, Verdict::Challenge { .. }),
        "the single-use grant never approves twice: {d:?}"
    );
}

#[tokio::test]
async fn a_policy_that_allows_on_the_session_alone_says_so_and_keeps_the_grant() {
    let (p, _) = custom_policy("session", &allow_on_any_grant(r#", "used_grant": false"#)).await;
    let t = token("alice", "aal1", NOW, 10);
    grant_for(&p, transfer(Some(&t), 100, "bob"), "aal2", Some(1)).await;
    for _ in 0..2 {
        let d = p.decide(transfer(Some(&t), 100, "bob")).await;
        assert_eq!(d.verdict, Verdict::Allow, "{d:?}");
        assert_eq!(d.grant_id, None, "not spent: {d:?}");
    }
}

#[tokio::test]
async fn an_rfc9470_retry_signed_in_before_the_challenge_never_approves_a_max_age_0_action() {
    // The quickstart's identity.leeway_secs is 30; the completion skew is 5.
    let (p, _) = pipeline().await;
    let weak = token("alice", "aal1", NOW, 600);
    let d = p.decide(transfer(Some(&weak), 5_000, "bob")).await;
    let Verdict::Challenge { requirement, .. } = &d.verdict else {
        panic!("{d:?}")
    };
    assert_eq!(requirement.max_age, 0, "{d:?}");
    let before = token("alice", "aal3", NOW, 20);
    let d = p.decide(transfer(Some(&before), 5_000, "bob")).await;
    assert!(
        matches!(d.verdict, Verdict::Challenge { .. }),
        "a sign-in 20 s before the challenge: {d:?}"
    );
    let skewed = token("alice", "aal3", NOW, 3);
    let d = p.decide(transfer(Some(&skewed), 5_000, "bob")).await;
    assert_eq!(d.verdict, Verdict::Allow, "3 s of clock skew: {d:?}");
    assert!(
        d.reasons.iter().any(|r| r == "step_up_completed_rfc9470"),
        "{d:?}"
    );
}
