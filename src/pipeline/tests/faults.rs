//! Policies that fail (slow, broken, panicking) fail closed within the budget; grants bound under a previous key.

use super::*;

struct Slow(u64);
impl PolicyEngine for Slow {
    fn evaluate(&self, _: serde_json::Value) -> Result<serde_json::Value, PolicyError> {
        std::thread::sleep(Duration::from_millis(self.0));
        Ok(json!({"result": "allow", "reason": "late"}))
    }
    fn revision(&self) -> &str {
        "slow"
    }
}

struct Broken;
impl PolicyEngine for Broken {
    fn evaluate(&self, _: serde_json::Value) -> Result<serde_json::Value, PolicyError> {
        Ok(json!({"result": "allow"}))
    }
    fn revision(&self) -> &str {
        "broken"
    }
}

struct Panics;
impl PolicyEngine for Panics {
    fn evaluate(&self, _: serde_json::Value) -> Result<serde_json::Value, PolicyError> {
        panic!("policy engine bug")
    }
    fn revision(&self) -> &str {
        "panics"
    }
}

async fn assert_policy_faults(slow_ms: u64) {
    for (engine, reason) in [
        (
            Arc::new(Slow(slow_ms)) as Arc<dyn PolicyEngine>,
            "policy_timeout",
        ),
        (Arc::new(Broken), "policy_contract_violation"),
        (Arc::new(Panics), "policy_panicked"),
    ] {
        let clock = Arc::new(ManualClock::new(NOW));
        let app = App::build_with_clock(&config(|t| t), clock).await.unwrap();
        let mut p = Arc::try_unwrap(app.into_pipeline()).ok().unwrap();
        p.policy = Arc::new(crate::policy::PolicyHandle::new(engine));
        let started = std::time::Instant::now();
        let d = p
            .decide(transfer(Some(&token("alice", "aal2", NOW, 10)), 100, "bob"))
            .await;
        assert_eq!(d.verdict, Verdict::Fault);
        // Capturing a panic's backtrace (RUST_BACKTRACE=1) can itself outlast the policy timeout,
        // and then the decision budget while its fault is recorded.
        let late_panic = reason == "policy_panicked"
            && matches!(
                d.reason.as_str(),
                "policy_timeout" | "decision_budget_exceeded"
            );
        assert!(
            d.reason == reason || late_panic,
            "{} instead of {reason}",
            d.reason
        );
        // (A panic's backtrace is printed by the panic hook, on the caller's time: not ours.)
        if reason != "policy_panicked" {
            assert!(started.elapsed() < p.budget, "answered inside the budget");
        }
    }
}

/// Current-thread runtime: the policy runs on the blocking pool, abandoned at its timeout.
#[tokio::test]
async fn policy_faults_fail_closed_within_budget() {
    assert_policy_faults(300).await;
}

/// Multi-threaded runtime (as served): the policy runs in place; a late answer is a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_faults_fail_closed_on_the_served_runtime() {
    assert_policy_faults(150).await;
}

/// A pipeline whose binding key was rotated: `dev2` active, `dev1` honoured until `until`.
async fn rotated(clock: Arc<ManualClock>, until: i64) -> Pipeline {
    let dir =
        std::env::temp_dir().join(format!("stepguard-rotation-{}-{until}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let new_key = dir.join("dev2.key");
    std::fs::write(&new_key, "a-new-binding-key-of-at-least-32-bytes!!").unwrap();
    let config = config(|t| {
        t.replace("active_key: dev1", "active_key: dev2").replace(
            "    - id: dev1\n      secret_file: txn-key.DEV-ONLY\n",
            &format!(
                "    - id: dev2\n      secret_file: {}\n    - id: dev1\n      secret_file: txn-key.DEV-ONLY\n      accept_until: {until}\n",
                new_key.display()
            ),
        )
    });
    let app = App::build_with_clock(&config, clock).await.unwrap();
    Arc::try_unwrap(app.into_pipeline()).ok().unwrap()
}

#[tokio::test]
async fn grants_bound_under_a_previous_key_are_honoured_only_during_the_overlap() {
    for (advance, honoured) in [(50, true), (101, false)] {
        let (before, clock) = pipeline().await;
        let t = token("alice", "aal2", NOW, 10);
        grant_for(&before, transfer(Some(&t), 25_000, "bob"), "aal3", Some(1)).await;
        let mut after = rotated(clock.clone(), NOW + 100).await;
        after.grants = before.grants.clone();
        clock.advance(advance);
        let t = token("alice", "aal2", NOW + advance, 10);
        let d = after.decide(transfer(Some(&t), 25_000, "bob")).await;
        assert!(
            d.transaction.as_deref().unwrap().starts_with("dev2:"),
            "new digests use the active key"
        );
        if honoured {
            assert_eq!(
                (d.verdict, d.reason.as_str()),
                (Verdict::Allow, "grant_satisfies")
            );
        } else {
            assert!(
                matches!(d.verdict, Verdict::Challenge { .. }),
                "after the overlap: {d:?}"
            );
        }
    }
}
