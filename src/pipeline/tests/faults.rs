//! Policies that fail (slow, broken, panicking, looping) fail closed within the budget; where an
//! evaluation runs (inline or handed off); grants bound under a previous key.

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

/// A Rego policy whose decision never ends in reasonable time (81 million iterations).
fn looping_policy(timeout: Duration) -> Arc<dyn PolicyEngine> {
    let dir = std::env::temp_dir().join(format!(
        "stepguard-looping-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("p.rego"),
        "package p\n\ndecision := {\"result\": \"allow\", \"reason\": sprintf(\"%d\", [n])} if {\n\
         \tn := count([1 | some i in numbers.range(1, 9000); some j in numbers.range(1, 9000)])\n}\n",
    )
    .unwrap();
    let policy = crate::policy::rego::RegoPolicy::load(&dir, "p/decision", timeout).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    Arc::new(policy)
}

/// The Rego engine runs on the decision's own task (no hand-off): a runaway custom policy is
/// stopped by the VM's own limits and the request denied, inside the budget, on either runtime.
async fn assert_looping_policy_denied_within_budget() {
    let clock = Arc::new(ManualClock::new(NOW));
    // A short policy timeout: the rest of a debug-build decision on a busy machine takes its
    // share of the budget too.
    let short = |t: String| t.replace("timeout_ms: 100", "timeout_ms: 20");
    let app = App::build_with_clock(&config(short), clock).await.unwrap();
    let mut p = Arc::try_unwrap(app.into_pipeline()).ok().unwrap();
    assert_eq!(p.policy_timeout, Duration::from_millis(20));
    let policy = looping_policy(p.policy_timeout);
    assert!(policy.inline(), "the Rego engine bounds itself");
    p.policy = Arc::new(crate::policy::PolicyHandle::new(policy));
    let started = std::time::Instant::now();
    let d = p
        .decide(transfer(Some(&token("alice", "aal2", NOW, 10)), 100, "bob"))
        .await;
    let elapsed = started.elapsed();
    assert_eq!(d.verdict, Verdict::Fault, "{d:?}");
    // Cut off by the execution timer (policy_timeout) or the instruction limit (policy_error).
    assert!(
        matches!(d.reason.as_str(), "policy_timeout" | "policy_error"),
        "{}",
        d.reason
    );
    assert!(
        elapsed < p.budget,
        "answered inside the budget: {elapsed:?} ({})",
        d.reason
    );
}

#[tokio::test]
async fn a_looping_rego_policy_is_cut_off_inline_and_denied_within_budget() {
    assert_looping_policy_denied_within_budget().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_rego_policy_is_cut_off_inline_on_the_served_runtime() {
    assert_looping_policy_denied_within_budget().await;
}

/// Records the thread each evaluation ran on; `inline` as told.
struct Where {
    inline: bool,
    threads: std::sync::Mutex<Vec<std::thread::ThreadId>>,
}
impl PolicyEngine for Where {
    fn evaluate(&self, _: serde_json::Value) -> Result<serde_json::Value, PolicyError> {
        self.threads
            .lock()
            .unwrap()
            .push(std::thread::current().id());
        Ok(json!({"result": "deny", "reason": "recorded", "status": 403}))
    }
    fn inline(&self) -> bool {
        self.inline
    }
    fn revision(&self) -> &str {
        "where"
    }
}

/// On a current-thread runtime the deciding task runs on the test's thread: an engine that
/// bounds itself is evaluated right there; any other on a blocking-pool thread.
#[tokio::test]
async fn a_self_bounded_engine_runs_on_the_deciding_thread_and_any_other_is_handed_off() {
    for inline in [true, false] {
        let clock = Arc::new(ManualClock::new(NOW));
        let app = App::build_with_clock(&config(|t| t), clock).await.unwrap();
        let mut p = Arc::try_unwrap(app.into_pipeline()).ok().unwrap();
        let engine = Arc::new(Where {
            inline,
            threads: Default::default(),
        });
        p.policy = Arc::new(crate::policy::PolicyHandle::new(engine.clone()));
        let d = p
            .decide(transfer(Some(&token("alice", "aal2", NOW, 10)), 100, "bob"))
            .await;
        assert_eq!(d.reason, "recorded");
        let threads = engine.threads.lock().unwrap().clone();
        assert_eq!(threads.len(), 1);
        assert_eq!(
            threads[0] == std::thread::current().id(),
            inline,
            "inline: {inline}"
        );
    }
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
