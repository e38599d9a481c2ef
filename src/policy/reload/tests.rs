use std::path::PathBuf;

use serde_json::json;

use super::*;
use crate::clock::ManualClock;
use crate::policy::Outcome;
use crate::testkit::config;
use trial::TRIAL_TRIES;

const NOW: i64 = 1_800_000_000;

fn deny(reason: &str) -> String {
    format!(
        "package stepguard.authz\n\ndecision := {{\"result\": \"deny\", \"status\": 403, \"reason\": \"{reason}\"}}\n"
    )
}

/// A policy directory of its own, holding `text` as `policy.rego`.
fn policy_dir(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stepguard-reload-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("policy.rego"), text).unwrap();
    dir
}

async fn reloader(dir: &std::path::Path) -> Result<Reloader, PolicyError> {
    let source = format!("source: {}", dir.display());
    let config = config(|t| t.replace("source: ../../policies", &source));
    let trial = Trial::for_actions(
        &config.actions,
        &config.challenge.acr_ladder,
        Arc::new(ManualClock::new(NOW)),
    )?;
    Reloader::new(&config.policy, trial).await
}

fn revision(handle: &PolicyHandle) -> String {
    handle.current().unwrap().revision().to_string()
}

/// The reason the live policy gives (every test policy answers the same for any input).
fn reason(handle: &PolicyHandle) -> String {
    let value = handle.current().unwrap().evaluate(json!({})).unwrap();
    value["reason"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_directory_reloads_when_its_content_changes() {
    let dir = policy_dir("local", &deny("rev_a"));
    let mut r = reloader(&dir).await.unwrap();
    let handle = r.handle().clone();
    let first = revision(&handle);
    assert_eq!(reason(&handle), "rev_a");
    assert!(matches!(r.poll().await, Reload::Unchanged));

    // A test file and hidden entries are not what `load` reads: no change.
    std::fs::write(dir.join("policy_test.rego"), "package x\n").unwrap();
    assert!(matches!(r.poll().await, Reload::Unchanged));

    std::fs::write(dir.join("policy.rego"), deny("rev_b")).unwrap();
    let Reload::Activated { revision: second } = r.poll().await else {
        panic!("not activated")
    };
    assert_ne!(second, first);
    assert_eq!(revision(&handle), second);
    assert_eq!(reason(&handle), "rev_b");

    // A data file is part of the content.
    std::fs::write(dir.join("data.json"), r#"{"limits": {"x": 1}}"#).unwrap();
    assert!(matches!(r.poll().await, Reload::Activated { .. }));
    assert_ne!(revision(&handle), second);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_local_policy_is_rejected_and_the_old_one_keeps_serving() {
    let dir = policy_dir("broken", &deny("good"));
    let mut r = reloader(&dir).await.unwrap();
    let handle = r.handle().clone();
    let good = revision(&handle);
    let broken = [
        (
            "expecting expression",
            "package stepguard.authz\n\ndecision := {\n".to_string(),
        ),
        (
            "entrypoint",
            "package stepguard.authz\n\nother := 1\n".to_string(),
        ),
        (
            "`result` must be",
            "package stepguard.authz\n\ndecision := {\"result\": \"maybe\", \"reason\": \"x\"}\n"
                .to_string(),
        ),
        (
            "acr ladder",
            "package stepguard.authz\n\ndecision := {\"result\": \"step_up\", \"reason\": \"x\", \
             \"requirement\": {\"acr_values\": [\"aal9\"], \"max_age\": 0}}\n"
                .to_string(),
        ),
    ];
    for (what, text) in broken {
        std::fs::write(dir.join("policy.rego"), text).unwrap();
        let Reload::Rejected(e) = r.poll().await else {
            panic!("{what}: not rejected")
        };
        let message = e.to_string().to_lowercase();
        assert!(message.contains(&what.to_lowercase()), "{what}: {e}");
        assert_eq!(revision(&handle), good, "{what}");
        assert_eq!(reason(&handle), "good", "{what}");
        // The same broken content is reported once, not on every poll.
        assert!(matches!(r.poll().await, Reload::Unchanged), "{what}");
    }
    std::fs::write(dir.join("policy.rego"), deny("fixed")).unwrap();
    assert!(matches!(r.poll().await, Reload::Activated { .. }));
    assert_eq!(reason(&handle), "fixed");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_that_fails_its_trial_does_not_start() {
    let dir = policy_dir(
        "trial",
        "package stepguard.authz\n\ndecision := {\"result\": \"allow\"}\n",
    );
    let err = reloader(&dir).await.err().unwrap().to_string();
    assert!(
        err.contains("trial evaluation") && err.contains("reason"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_policy_passes_its_trial() {
    let config = config(|t| t);
    let trial = Trial::for_actions(
        &config.actions,
        &config.challenge.acr_ladder,
        Arc::new(ManualClock::new(NOW)),
    )
    .unwrap();
    let engine = crate::policy::load(&config.policy_source().unwrap()).unwrap();
    // The trial is the first action (a transfer) by an aal1 user without a grant.
    assert!(matches!(
        trial.check(engine.as_ref()).unwrap(),
        Outcome::StepUp { .. } | Outcome::Deny { .. }
    ));
}

/// Fails its first `failures` evaluations with a time limit, then denies.
struct Starved {
    failures: u32,
    calls: std::sync::atomic::AtomicU32,
}

impl PolicyEngine for Starved {
    fn evaluate(&self, _: serde_json::Value) -> Result<serde_json::Value, PolicyError> {
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if call < self.failures {
            return Err(PolicyError::Eval("Execution exceeded time limit".into()));
        }
        Ok(json!({"result": "deny", "reason": "trial"}))
    }
    fn revision(&self) -> &str {
        "starved"
    }
}

#[test]
fn a_trial_evaluation_starved_once_is_tried_again_and_one_failing_every_time_is_refused() {
    let config = config(|t| t);
    let trial = Trial::for_actions(
        &config.actions,
        &config.challenge.acr_ladder,
        Arc::new(ManualClock::new(NOW)),
    )
    .unwrap();
    let cold = Starved {
        failures: TRIAL_TRIES - 1,
        calls: Default::default(),
    };
    assert!(matches!(trial.check(&cold), Ok(Outcome::Deny { .. })));
    let slow = Starved {
        failures: u32::MAX,
        calls: Default::default(),
    };
    assert!(matches!(trial.check(&slow), Err(PolicyError::Eval(_))));
    assert_eq!(slow.calls.into_inner(), TRIAL_TRIES, "tried, then refused");
}

#[test]
fn a_handle_swaps_and_keeps_snapshots_whole() {
    struct Fixed(&'static str);
    impl PolicyEngine for Fixed {
        fn evaluate(&self, _: serde_json::Value) -> Result<serde_json::Value, PolicyError> {
            Ok(json!({"result": "deny", "reason": self.0}))
        }
        fn revision(&self) -> &str {
            self.0
        }
    }
    let handle = PolicyHandle::pending();
    assert!(handle.current().is_none() && !handle.is_active());
    assert!(handle.activate(Arc::new(Fixed("a"))).is_none());
    let snapshot = handle.current().unwrap();
    let previous = handle.activate(Arc::new(Fixed("b"))).unwrap();
    assert_eq!(previous.revision(), "a");
    // A decision that took its snapshot before the swap finishes under it.
    assert_eq!(snapshot.revision(), "a");
    assert_eq!(handle.current().unwrap().revision(), "b");
    assert!(handle.is_active());
}

#[test]
fn fingerprints_cover_exactly_what_load_reads() {
    let dir = policy_dir("fingerprint", &deny("x"));
    let source = PolicySource {
        path: dir.clone(),
        data: None,
        entrypoint: "stepguard/authz/decision".into(),
        timeout: Duration::from_millis(100),
    };
    let a = fingerprint(&source).unwrap();
    std::fs::write(dir.join("README.md"), "not read").unwrap();
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    std::fs::write(dir.join(".git/x.rego"), "hidden").unwrap();
    assert_eq!(fingerprint(&source).unwrap(), a);
    std::fs::write(dir.join("more.rego"), "package more\n").unwrap();
    assert_ne!(fingerprint(&source).unwrap(), a);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(fingerprint(&source).is_err());
}

/// The shipped policy (its non-test `.rego` files) with `data.json` edited by `edit`, in a
/// directory of its own.
fn shipped_with(name: &str, edit: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let dir = policy_dir(name, "");
    std::fs::remove_file(dir.join("policy.rego")).unwrap();
    for file in crate::policy::rego::source_files(&from).unwrap() {
        let to = dir.join(file.strip_prefix(&from).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&file, &to).unwrap();
    }
    let path = dir.join("data.json");
    let mut data: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut data);
    std::fs::write(&path, data.to_string()).unwrap();
    dir
}

fn bad_gbp_tier(data: &mut serde_json::Value) {
    data["stepguard"]["requirements"]["actions"]["payments.transfer"]["tiers"]["GBP"][0]["acr"] =
        json!("aal9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misconfigured_data_refuses_to_start_naming_the_action_and_the_problem() {
    // A tier of another currency than any request's: the decision never reads it, validation does.
    let dir = shipped_with("misconfigured", bad_gbp_tier);
    let err = reloader(&dir).await.err().unwrap().to_string();
    assert!(
        err.contains("payments.transfer") && err.contains("tier acr is not on the acr ladder"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    // The same data, well-formed, starts.
    let dir = shipped_with("well-formed", |_| {});
    assert!(reloader(&dir).await.is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ladder_without_an_acr_the_data_requires_refuses_to_start() {
    // keys.export (a configured action) requires aal3: checked for every action, not the first.
    let config =
        config(|t| t.replace("acr_ladder: [aal1, aal2, aal3]", "acr_ladder: [aal1, aal2]"));
    let trial = Trial::for_actions(
        &config.actions,
        &config.challenge.acr_ladder,
        Arc::new(ManualClock::new(NOW)),
    )
    .unwrap();
    let err = Reloader::new(&config.policy, trial)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("keys.export") && err.contains("requirement acr is not on the acr ladder"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misconfigured_reload_is_rejected_and_the_old_policy_keeps_serving() {
    let dir = shipped_with("misconfigured-reload", |_| {});
    let mut r = reloader(&dir).await.unwrap();
    let handle = r.handle().clone();
    let before = revision(&handle);
    let mut data: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("data.json")).unwrap()).unwrap();
    data["stepguard"]["signals"]["raise_steps"] = json!(0);
    std::fs::write(dir.join("data.json"), data.to_string()).unwrap();
    let Reload::Rejected(e) = r.poll().await else {
        panic!("a misconfigured reload was not rejected")
    };
    assert!(e.to_string().contains("signals.raise_steps"), "{e}");
    assert_eq!(revision(&handle), before);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_policy_without_validation_rules_has_nothing_to_check() {
    let dir = policy_dir("no-validation", &deny("custom"));
    let engine = crate::policy::rego::RegoPolicy::load(
        &dir,
        "stepguard/authz/decision",
        std::time::Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!(engine.misconfiguration(json!({})).unwrap(), None);
    let quickstart = config(|t| t);
    let trial = Trial::for_actions(
        &quickstart.actions,
        &quickstart.challenge.acr_ladder,
        Arc::new(ManualClock::new(NOW)),
    )
    .unwrap();
    assert!(trial.check(&engine).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}
