use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::app::App;
use crate::challenge::Challenger;
use crate::clock::{Clock, ManualClock};
use crate::completion::Completer;
use crate::decision::Verdict;
use crate::evidence::{EvidenceError, Lifecycle};
use crate::identity::Identity;
use crate::pipeline::Pipeline;
use crate::request::RawRequest;
use crate::route::RouteTable;
use crate::testkit::{config, token};
use crate::txn::Binder;

const NOW: i64 = 1_800_000_000;

/// Evidence that keeps every decision record and takes `delay` to record an approval.
#[derive(Default)]
struct SlowApprovals {
    delay: Duration,
    records: Mutex<Vec<Decision>>,
}

#[tonic::async_trait]
impl Evidence for SlowApprovals {
    async fn record(&self, ctx: &EvidenceContext<'_>) -> Result<(), EvidenceError> {
        if ctx.decision.is_allow() {
            tokio::time::sleep(self.delay).await;
        }
        self.records.lock().unwrap().push(ctx.decision.clone());
        Ok(())
    }

    async fn lifecycle(&self, _: &Lifecycle<'_>) -> Result<(), EvidenceError> {
        Ok(())
    }
}

/// The quickstart pipeline (memory store, 250 ms budget) over `evidence`.
async fn pipeline(evidence: Arc<SlowApprovals>) -> Pipeline {
    let cfg = config(|t| t);
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(NOW));
    let app = App::build_with_clock(&cfg, clock.clone()).await.unwrap();
    let base = app.pipeline();
    let evidence: Arc<dyn Evidence> = evidence;
    Pipeline {
        routes: RouteTable::new(&cfg.actions),
        identity: Identity::load(&cfg.identity, cfg.jwks_wait())
            .await
            .unwrap(),
        binder: Binder::new(&cfg.transaction).unwrap(),
        grants: base.grants.clone(),
        policy: base.policy.clone(),
        challenger: Challenger::new(cfg.challenge.clone()),
        completer: Completer::new(
            base.grants.clone(),
            evidence.clone(),
            cfg.challenge.acr_ladder.clone(),
            5,
        ),
        context: cfg.context.clone(),
        evidence,
        clock,
        budget: base.budget,
        policy_timeout: base.policy_timeout,
        max_segments: base.max_segments,
        standing: None,
        notifier: None,
    }
}

fn export(bearer: &str) -> RawRequest {
    RawRequest {
        method: "POST".into(),
        host: "api.example.com".into(),
        path: "/v1/keys/k1/export".into(),
        headers: [("authorization".to_string(), format!("Bearer {bearer}"))].into(),
        source_address: Some("10.0.0.7".into()),
        ..Default::default()
    }
}

#[test]
fn the_fault_carries_what_was_known_and_the_spent_grant() {
    let progress = Progress::default();
    let bare = progress.fault("d1".into());
    assert_eq!(bare.reason, "decision_budget_exceeded");
    assert_eq!(bare.subject, None);
    progress.bound("keys.export", "iss|alice".into(), "k:abc", "rev-1");
    let grant = Grant {
        id: "g1".into(),
        digest: "k:abc".into(),
        subject: "iss|alice".into(),
        action: "keys.export".into(),
        acr: "aal3".into(),
        amr: vec![],
        auth_time: NOW,
        method: "oidc".into(),
        challenge_id: None,
        issued_at: NOW,
        expires_at: NOW + 60,
        uses_left: Some(1),
        policy_revision: None,
    };
    progress.spent(&grant);
    let fault = progress.fault("d2".into());
    assert_eq!(fault.verdict, Verdict::Fault);
    assert_eq!(fault.subject.as_deref(), Some("iss|alice"));
    assert_eq!(fault.transaction.as_deref(), Some("k:abc"));
    assert_eq!(fault.grant_id.as_deref(), Some("g1"));
    assert!(fault.reasons.iter().any(|r| r == GRANT_SPENT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_spent_just_before_the_deadline_has_its_spending_recorded() {
    let evidence = Arc::new(SlowApprovals {
        delay: Duration::from_secs(2),
        ..Default::default()
    });
    let p = pipeline(evidence.clone()).await;
    // keys.export: a fresh aal3 step-up for this transaction; the grant the step-up left.
    let weak = token("alice", "aal1", NOW, 10);
    let id = crate::pipeline::tests::grant_for(&p, export(&weak), "aal3", Some(1)).await;

    // The retry spends the grant; its approval's record takes longer than the budget.
    let d = p.decide(export(&weak)).await;
    assert_eq!(d.verdict, Verdict::Fault, "{d:?}");
    assert_eq!(d.reason, "decision_budget_exceeded");
    assert_eq!(d.grant_id.as_deref(), Some(id.as_str()));

    // Recorded (in the background, not on the answer's path): the overrun, its subject, its
    // transaction and the grant it burnt.
    let mut recorded = None;
    for _ in 0..100 {
        recorded = evidence
            .records
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.id == d.id && r.verdict == Verdict::Fault)
            .cloned();
        if recorded.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recorded = recorded.expect("the overrun has a record");
    assert_eq!(recorded.grant_id.as_deref(), Some(id.as_str()));
    assert_eq!(recorded.transaction, d.transaction);
    assert!(recorded.transaction.is_some());
    assert!(
        recorded.reasons.iter().any(|r| r == GRANT_SPENT),
        "{recorded:?}"
    );
    // And the grant is gone: the transaction needs a new step-up.
    let again = p.decide(export(&weak)).await;
    assert!(
        matches!(again.verdict, Verdict::Challenge { .. }),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overrun_before_identification_is_counted_not_recorded() {
    let evidence = Arc::new(SlowApprovals::default());
    let decision = Progress::default().fault("d3".into());
    let origin = Origin::of(&export("x"));
    let as_dyn: Arc<dyn Evidence> = evidence.clone();
    record(&as_dyn, &decision, origin, NOW);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(evidence.records.lock().unwrap().is_empty());
}
