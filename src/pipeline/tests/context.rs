//! What the policy sees (context signals), dry runs, device posture and severity.

use super::*;

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
