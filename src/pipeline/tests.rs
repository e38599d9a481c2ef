use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;

use crate::app::App;
use crate::clock::ManualClock;
use crate::decision::Verdict;
use crate::grant::Grant;
use crate::policy::{PolicyEngine, PolicyError};
use crate::request::RawRequest;
use crate::response::status;
use crate::testkit::{config, token};

use super::*;

const NOW: i64 = 1_800_000_000;

async fn pipeline() -> (Arc<Pipeline>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(NOW));
    let app = App::build_with_clock(&config(|t| t), clock.clone())
        .await
        .unwrap();
    (app.pipeline().clone(), clock)
}

fn transfer(token: Option<&str>, amount: u64, payee: &str) -> RawRequest {
    let mut headers = HashMap::from([("content-type".to_string(), "application/json".to_string())]);
    if let Some(t) = token {
        headers.insert("authorization".into(), format!("Bearer {t}"));
    }
    RawRequest {
        method: "POST".into(),
        host: "api.example.com".into(),
        path: "/v1/accounts/A1/transfers".into(),
        headers,
        body: json!({"amount": amount, "currency": "EUR", "payee": payee})
            .to_string()
            .into_bytes(),
        source_address: Some("10.0.0.7".into()),
        ..Default::default()
    }
}

/// Mints the grant a completed step-up would leave for the request's transaction; its id.
pub(super) async fn grant_for(
    p: &Pipeline,
    raw: RawRequest,
    acr: &str,
    uses: Option<u32>,
) -> String {
    let decision = p.decide(raw).await;
    let Verdict::Challenge { challenge_id, .. } = &decision.verdict else {
        panic!("{decision:?}")
    };
    let c = p
        .grants
        .challenge(challenge_id, NOW)
        .await
        .unwrap()
        .unwrap();
    let id = format!("grant-{challenge_id}");
    p.grants
        .put_grant(Grant {
            id: id.clone(),
            digest: c.digest.clone(),
            subject: c.subject.clone(),
            action: c.action.clone(),
            acr: acr.into(),
            amr: vec!["hwk".into()],
            auth_time: NOW,
            method: "oidc".into(),
            challenge_id: Some(c.id.clone()),
            issued_at: NOW,
            expires_at: NOW + 120,
            uses_left: uses,
            policy_revision: None,
        })
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn public_routes_pass_and_lose_forged_headers() {
    let (p, _) = pipeline().await;
    let mut raw = RawRequest {
        method: "GET".into(),
        path: "/public/hello".into(),
        ..Default::default()
    };
    raw.headers
        .insert("x-stepguard-action".into(), "forged".into());
    let d = p.decide(raw).await;
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(d.reason, "not_sensitive");
    assert_eq!(d.remove_headers, ["x-stepguard-action"]);
}

#[tokio::test]
async fn sensitive_routes_need_a_valid_token() {
    let (p, _) = pipeline().await;
    let d = p.decide(transfer(None, 100, "bob")).await;
    assert!(
        matches!(d.verdict, Verdict::Unauthenticated { .. }),
        "{d:?}"
    );
    let d = p.decide(transfer(Some("not.a.jwt"), 100, "bob")).await;
    assert!(
        matches!(d.verdict, Verdict::Unauthenticated { .. }),
        "{d:?}"
    );
    assert_eq!(d.action.as_deref(), Some("payments.transfer"));
}

#[tokio::test]
async fn a_fresh_enough_session_approves_a_small_transfer() {
    let (p, _) = pipeline().await;
    let d = p
        .decide(transfer(Some(&token("alice", "aal2", NOW, 10)), 100, "bob"))
        .await;
    assert_eq!(d.verdict, Verdict::Allow, "{d:?}");
    assert_eq!(d.reason, "session_satisfies");
    assert!(d.transaction.as_deref().unwrap().starts_with("dev1:"));
    let d = p
        .decide(transfer(
            Some(&token("alice", "aal2", NOW, 3600)),
            100,
            "bob",
        ))
        .await;
    assert!(
        matches!(d.verdict, Verdict::Challenge { .. }),
        "old session: {d:?}"
    );
    assert_eq!(d.reason, "session_too_old");
}

#[tokio::test]
async fn browsers_get_a_redirect_and_api_clients_a_401() {
    let (p, _) = pipeline().await;
    let t = token("alice", "aal1", NOW, 10);
    let d = p.decide(transfer(Some(&t), 100, "bob")).await;
    let Verdict::Challenge {
        location: None,
        requirement,
        ..
    } = &d.verdict
    else {
        panic!("{d:?}")
    };
    assert_eq!(requirement.acr_values, ["aal2", "aal3"]);
    let mut raw = transfer(Some(&t), 100, "bob");
    raw.headers.insert("accept".into(), "text/html".into());
    let d = p.decide(raw).await;
    let Verdict::Challenge {
        location: Some(url),
        challenge_id,
        ..
    } = &d.verdict
    else {
        panic!("{d:?}")
    };
    assert!(url.contains(&format!("state={challenge_id}")), "{url}");
    assert!(
        p.grants
            .challenge(challenge_id, NOW)
            .await
            .unwrap()
            .is_some(),
        "challenge stored"
    );
}

#[tokio::test]
async fn a_grant_approves_its_transaction_once_and_no_other() {
    let (p, _) = pipeline().await;
    let t = token("alice", "aal2", NOW, 10);
    grant_for(&p, transfer(Some(&t), 25_000, "bob"), "aal3", Some(1)).await;
    for (amount, payee) in [(25_001, "bob"), (25_000, "mallory")] {
        let d = p.decide(transfer(Some(&t), amount, payee)).await;
        assert!(
            matches!(d.verdict, Verdict::Challenge { .. }),
            "{amount} {payee}: {d:?}"
        );
    }
    let other_user = token("mallory", "aal2", NOW, 10);
    let d = p.decide(transfer(Some(&other_user), 25_000, "bob")).await;
    assert!(
        matches!(d.verdict, Verdict::Challenge { .. }),
        "other subject: {d:?}"
    );
    let d = p.decide(transfer(Some(&t), 25_000, "bob")).await;
    assert_eq!(d.verdict, Verdict::Allow, "{d:?}");
    assert_eq!(d.reason, "grant_satisfies");
    assert!(d.grant_id.is_some());
    let d = p.decide(transfer(Some(&t), 25_000, "bob")).await;
    assert!(
        matches!(d.verdict, Verdict::Challenge { .. }),
        "single use: {d:?}"
    );
}

#[tokio::test]
async fn a_weaker_grant_does_not_satisfy() {
    let (p, _) = pipeline().await;
    let t = token("alice", "aal2", NOW, 10);
    grant_for(&p, transfer(Some(&t), 25_000, "bob"), "aal2", Some(1)).await;
    let d = p.decide(transfer(Some(&t), 25_000, "bob")).await;
    assert!(matches!(d.verdict, Verdict::Challenge { .. }), "{d:?}");
}

#[tokio::test]
async fn grants_expire_with_the_clock() {
    let (p, clock) = pipeline().await;
    let t = token("alice", "aal2", NOW, 10);
    grant_for(&p, transfer(Some(&t), 25_000, "bob"), "aal3", Some(1)).await;
    clock.advance(121);
    let t = token("alice", "aal2", NOW + 121, 10);
    let d = p.decide(transfer(Some(&t), 25_000, "bob")).await;
    assert!(matches!(d.verdict, Verdict::Challenge { .. }), "{d:?}");
}

#[tokio::test]
async fn workloads_are_never_prompted() {
    let (p, _) = pipeline().await;
    let mut raw = transfer(None, 100, "bob");
    raw.source_principal = Some("spiffe://stepguard.local/ns/pay/sa/batch".into());
    let d = p.decide(raw).await;
    assert_eq!(d.verdict, Verdict::Deny { status: 403 }, "{d:?}");
    assert_eq!(d.reason, "workload_requires_transaction_token");
}

#[tokio::test]
async fn malformed_requests_and_unknown_tags_are_refused() {
    let (p, _) = pipeline().await;
    let mut raw = transfer(None, 1, "bob");
    raw.path = "/v1/accounts/A1%2F..%2Fx/transfers".into();
    let d = p.decide(raw).await;
    assert_eq!((&d.verdict, status(&d)), (&Verdict::Refused, 400));
    let mut raw = transfer(None, 1, "bob");
    raw.context_extensions
        .insert("stepguard.action".into(), "nope".into());
    assert_eq!(p.decide(raw).await.verdict, Verdict::Fault);
    let mut raw = transfer(Some(&token("alice", "aal2", NOW, 10)), 1, "bob");
    raw.headers
        .insert("x-envoy-auth-partial-body".into(), "true".into());
    let d = p.decide(raw).await;
    assert_eq!(status(&d), 400);
    assert_eq!(
        (d.verdict, d.reason.as_str()),
        (Verdict::Refused, "body_unavailable")
    );
}

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

/// Answers what `answer` says for each input and keeps every input it was asked about.
type Answer = Box<dyn Fn(&serde_json::Value) -> serde_json::Value + Send + Sync>;
struct Recording {
    answer: Answer,
    inputs: std::sync::Mutex<Vec<serde_json::Value>>,
}
impl PolicyEngine for Recording {
    fn evaluate(&self, input: serde_json::Value) -> Result<serde_json::Value, PolicyError> {
        let answer = (self.answer)(&input);
        self.inputs.lock().unwrap().push(input);
        Ok(answer)
    }
    fn revision(&self) -> &str {
        "recording"
    }
}

async fn recording(edit: impl Fn(String) -> String, answer: Answer) -> (Pipeline, Arc<Recording>) {
    let clock = Arc::new(ManualClock::new(NOW));
    let app = App::build_with_clock(&config(edit), clock).await.unwrap();
    let mut p = Arc::try_unwrap(app.into_pipeline()).ok().unwrap();
    let engine = Arc::new(Recording {
        answer,
        inputs: Default::default(),
    });
    p.policy = Arc::new(crate::policy::PolicyHandle::new(engine.clone()));
    (p, engine)
}

fn allow() -> Answer {
    Box::new(
        |_| json!({"result": "allow", "reason": "session_satisfies", "reasons": ["session_satisfies"], "used_grant": false}),
    )
}

#[tokio::test]
async fn the_policy_sees_velocity_and_whether_the_network_is_new() {
    let (p, engine) = recording(|t| t, allow()).await;
    let t = token("alice", "aal2", NOW, 10);
    let from = |ip: &str| {
        let mut r = transfer(Some(&t), 100, "bob");
        r.source_address = Some(ip.into());
        r
    };
    assert!(p.decide(from("10.1.2.3")).await.is_allow());
    assert!(p.decide(from("10.1.2.99")).await.is_allow());
    assert!(p.decide(from("192.0.2.7")).await.is_allow());
    let inputs = engine.inputs.lock().unwrap();
    let ctx = |i: usize| inputs[i]["stepguard"]["context"].clone();
    assert_eq!(ctx(0)["network"], "10.1.2.0/24");
    assert_eq!(
        ctx(0)["new_network"],
        serde_json::Value::Null,
        "no baseline: never approved from anywhere"
    );
    assert_eq!(
        ctx(1)["new_network"],
        false,
        "approved from that /24 before"
    );
    assert_eq!(
        ctx(2)["new_network"],
        true,
        "approved before, never from there"
    );
    assert_eq!(ctx(0)["velocity"]["count"], 1);
    assert_eq!(ctx(2)["velocity"]["count"], 3);
    assert_eq!(ctx(2)["velocity"]["window_secs"], 600);
    assert_eq!(inputs[0]["stepguard"]["action"]["mode"], "enforce");
}

#[tokio::test]
async fn a_network_is_not_known_until_something_was_approved_from_it() {
    // Approves from 10.0.0.0/8, asks for step-up elsewhere.
    let answer: Answer = Box::new(|input| {
        let network = input["stepguard"]["context"]["network"]
            .as_str()
            .unwrap_or("");
        if network.starts_with("10.") {
            json!({"result": "allow", "reason": "session_satisfies", "reasons": [], "used_grant": false})
        } else {
            json!({"result": "step_up", "reason": "acr_too_low", "reasons": ["acr_too_low"],
                "requirement": {"acr_values": ["aal2"], "max_age": 300}, "grant": {"single_use": true, "ttl": 60}})
        }
    });
    let (p, engine) = recording(|t| t, answer).await;
    let t = token("alice", "aal1", NOW, 10);
    let from = |ip: &str| {
        let mut r = transfer(Some(&t), 100, "bob");
        r.source_address = Some(ip.into());
        r
    };
    assert!(p.decide(from("10.0.0.1")).await.is_allow());
    for _ in 0..2 {
        let d = p.decide(from("203.0.113.9")).await;
        assert!(matches!(d.verdict, Verdict::Challenge { .. }), "{d:?}");
    }
    let inputs = engine.inputs.lock().unwrap();
    assert_eq!(inputs[1]["stepguard"]["context"]["new_network"], true);
    assert_eq!(
        inputs[2]["stepguard"]["context"]["new_network"], true,
        "being challenged from a network does not make it known"
    );
}

#[tokio::test]
async fn device_trust_and_break_glass_justification_come_from_configured_headers() {
    let (p, engine) = recording(
        |t| format!("{t}\ncontext:\n  device_trust_header: x-device-posture\n"),
        allow(),
    )
    .await;
    let mut r = transfer(Some(&token("alice", "aal2", NOW, 10)), 100, "bob");
    r.headers
        .insert("x-device-posture".into(), "managed".into());
    r.headers.insert(
        "x-break-glass-justification".into(),
        "INC-4711 outage".into(),
    );
    p.decide(r).await;
    let inputs = engine.inputs.lock().unwrap();
    let ctx = &inputs[0]["stepguard"]["context"];
    assert_eq!(ctx["device_trust"], "managed");
    assert_eq!(ctx["break_glass_justification"], "INC-4711 outage");
}

#[tokio::test]
async fn a_shadow_action_is_allowed_and_recorded_as_what_it_would_have_been() {
    let shadowed = |t: String| {
        t.replace(
            "    value: body.amount\n",
            "    value: body.amount\n    mode: shadow\n",
        )
    };
    let (p, _) = pipeline_with(shadowed).await;
    let d = p
        .decide(transfer(Some(&token("alice", "aal1", NOW, 10)), 100, "bob"))
        .await;
    assert!(d.is_allow(), "{d:?}");
    assert_eq!(d.reason, "dry_run");
    assert!(
        d.reasons.contains(&"dry_run_would_step_up".to_string()),
        "{d:?}"
    );
    // Not for a break-glass request.
    let mut r = transfer(Some(&token("alice", "aal1", NOW, 10)), 100, "bob");
    r.headers
        .insert("x-break-glass-justification".into(), "INC-1".into());
    let d = p.decide(r).await;
    assert!(!d.is_allow(), "{d:?}");
}

async fn pipeline_with(edit: impl Fn(String) -> String) -> (Arc<Pipeline>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(NOW));
    let app = App::build_with_clock(&config(edit), clock.clone())
        .await
        .unwrap();
    (app.pipeline().clone(), clock)
}

#[tokio::test]
async fn an_mtls_peer_gets_its_device_posture_when_no_header_says_otherwise() {
    let (p, engine) = recording(
        |t| {
            format!(
                "{t}\ncontext:\n  device_trust_header: x-device-posture\n  device_trust_peers:\n    \
                 - principal_prefix: spiffe://devices.example.com/managed/\n      posture: managed\n"
            )
        },
        allow(),
    )
    .await;
    let t = token("alice", "aal2", NOW, 10);
    let mut from_peer = transfer(Some(&t), 100, "bob");
    from_peer.source_principal = Some("spiffe://devices.example.com/managed/laptop-7".into());
    p.decide(from_peer.clone()).await;
    let mut with_header = from_peer;
    with_header
        .headers
        .insert("x-device-posture".into(), "unmanaged".into());
    p.decide(with_header).await;
    p.decide(transfer(Some(&t), 100, "bob")).await;
    let inputs = engine.inputs.lock().unwrap();
    let trust = |i: usize| inputs[i]["stepguard"]["context"]["device_trust"].clone();
    assert_eq!(trust(0), "managed");
    assert_eq!(trust(1), "unmanaged", "the posture component's header wins");
    assert_eq!(trust(2), serde_json::Value::Null);
}

#[tokio::test]
async fn the_policys_severity_is_on_the_decision_whatever_the_answer() {
    let answer: Answer = Box::new(|input| {
        let justified = input["stepguard"]["context"]["break_glass_justification"].is_string();
        if justified {
            json!({"result": "step_up", "reason": "break_glass", "reasons": ["break_glass"],
                "severity": "high",
                "requirement": {"acr_values": ["aal3"], "max_age": 0}, "grant": {"single_use": true, "ttl": 60}})
        } else {
            json!({"result": "deny", "status": 403, "reason": "not_permitted", "reasons": [],
                "severity": "whatever"})
        }
    });
    let (p, _engine) = recording(|t| t, answer).await;
    let t = token("alice", "aal2", NOW, 10);
    let mut r = transfer(Some(&t), 100, "bob");
    r.headers.insert(
        "x-break-glass-justification".into(),
        "INC-4711 payments outage, approved by on-call lead".into(),
    );
    let d = p.decide(r).await;
    assert!(matches!(d.verdict, Verdict::Challenge { .. }), "{d:?}");
    assert_eq!(d.severity.as_deref(), Some("high"));
    let d = p.decide(transfer(Some(&t), 100, "bob")).await;
    assert_eq!(d.verdict, Verdict::Deny { status: 403 });
    assert_eq!(
        d.severity, None,
        "only low, medium, high and critical are taken"
    );
}

/// A directory of its own under the system's temporary directory, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(label: &str) -> Self {
        let path = std::env::temp_dir().join(format!("stepguard-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| match e.file_type().unwrap().is_dir() {
            true => dir_bytes(&e.path()),
            false => e.metadata().unwrap().len(),
        })
        .sum()
}

/// The text of every file under `dir` (the spool's segments are in one directory per chain).
fn spooled_text(dir: &std::path::Path) -> String {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|path| match path.is_dir() {
            true => spooled_text(&path),
            false => std::fs::read_to_string(path).unwrap_or_default(),
        })
        .collect()
}

/// The quickstart pipeline with its evidence spool in `spool`.
async fn pipeline_with_spool(spool: &std::path::Path) -> Arc<Pipeline> {
    let dir = format!("dir: {}", spool.display());
    let cfg = config(|t| t.replace("dir: stepguard-evidence", &dir));
    let clock = Arc::new(ManualClock::new(NOW));
    let app = App::build_with_clock(&cfg, clock).await.unwrap();
    let p = app.pipeline().clone();
    assert!(p.evidence.spool().is_some_and(|s| s.available), "no spool");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_refusals_grow_the_spool_by_less_than_64_kib() {
    let scratch = Scratch::new("intake-spool");
    let p = pipeline_with_spool(&scratch.0).await;
    let before = dir_bytes(&scratch.0);
    let forged = {
        let t = token("alice", "aal3", NOW, 0);
        format!("{}x", &t[..t.len() - 1])
    };
    let request = |i: usize| {
        let mut raw = match i % 4 {
            0 => transfer(None, 1, "bob"),
            1 => transfer(Some("not.a.jwt"), 1, "bob"),
            2 => transfer(Some(&forged), 1, "bob"),
            _ => transfer(None, 1, "bob"),
        };
        if i % 4 == 3 {
            raw.path = format!("/v1/accounts/A{i}%2F..%2Fx/transfers");
        }
        raw.source_address = Some(format!("10.{}.{}.{}", i % 7, i % 251, i % 13));
        raw
    };
    for round in 0..50 {
        let mut tasks = tokio::task::JoinSet::new();
        for i in round * 200..(round + 1) * 200 {
            let (p, raw) = (p.clone(), request(i));
            tasks.spawn(async move { p.decide(raw).await });
        }
        while let Some(d) = tasks.join_next().await {
            let d = d.unwrap();
            assert!(
                matches!(
                    (&d.verdict, d.reason.as_str()),
                    (Verdict::Unauthenticated { .. }, "invalid_token")
                        | (Verdict::Refused, "malformed_request")
                ),
                "{d:?}"
            );
        }
    }
    let grown = dir_bytes(&scratch.0).saturating_sub(before);
    assert!(
        grown < 64 << 10,
        "10,000 anonymous refusals grew the spool by {grown} bytes"
    );
}

#[tokio::test]
async fn an_authenticated_denial_is_still_recorded_durably() {
    let scratch = Scratch::new("authenticated-denial");
    let p = pipeline_with_spool(&scratch.0).await;
    // Identified, then refused: a body Envoy sent only part of cannot be bound.
    let mut raw = transfer(Some(&token("alice", "aal2", NOW, 10)), 1, "bob");
    raw.headers
        .insert("x-envoy-auth-partial-body".into(), "true".into());
    let d = p.decide(raw).await;
    assert_eq!(
        (&d.verdict, d.reason.as_str(), status(&d)),
        (&Verdict::Refused, "body_unavailable", 400)
    );
    // Answered only once durable: its record is on disk now.
    let spooled = spooled_text(&scratch.0);
    let record = spooled
        .lines()
        .find(|l| l.contains(&d.id))
        .unwrap_or_else(|| panic!("no record of {}", d.id));
    assert!(record.contains("\"body_unavailable\""), "{record}");
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

/// A pipeline on a one-file Rego policy (`package custom`, entrypoint `custom/decision`),
/// written to a directory of its own named `name`; generous time limits (these tests are about
/// what is spent, not about time, and run beside the whole suite).
async fn custom_policy(name: &str, rego: &str) -> (Arc<Pipeline>, Arc<ManualClock>) {
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
