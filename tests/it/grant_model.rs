//! The grant lifecycle against a reference model (issue #15, catalogue F4): proptest generates
//! sequences of sensitive requests, step-up completions (grants minted for a transaction's open
//! challenge), clock moves and injected store faults, and runs them through the real
//! `Pipeline::decide` — the shipped policy, the real binder and evidence path — over the
//! in-memory store and over a real `redis-server`, each wrapped in a store that injects faults:
//! an error before the operation, an ambiguous reply (the operation done, an error returned),
//! or a hang past the decision budget.
//!
//! After every request the invariants are checked against the model:
//! - at most one approval per single-use grant, and only while it lives;
//! - an approval spends the grant of its own transaction, never another's;
//! - every approval has its evidence record;
//! - every injected store fault on the request's path is a deny;
//! - liveness: with no fault, a transaction holding a live grant is approved.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::redis::RedisServer;
use crate::support::sidecar::quickstart;
use proptest::prelude::*;
use serde_json::json;
use stepguard::challenge::Challenger;
use stepguard::clock::{Clock, ManualClock};
use stepguard::completion::Completer;
use stepguard::decision::{Decision, Verdict};
use stepguard::evidence::{Evidence, EvidenceContext, EvidenceError, Lifecycle};
use stepguard::grant::{
    Admitted, Caps, Challenge, ChallengeRef, Counter, Grant, GrantError, GrantStore, MemoryStore,
    RedisStore, Revoke, Tally,
};
use stepguard::identity::Identity;
use stepguard::pipeline::Pipeline;
use stepguard::request::RawRequest;
use stepguard::route::RouteTable;
use stepguard::txn::Binder;

/// Transactions: exports of these keys (each needs a fresh aal3 step-up of its own).
const KEYS: [&str; 3] = ["k0", "k1", "k2"];
const GRANT_TTL: i64 = 60;

/// How an injected fault behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Fails before doing anything.
    Error,
    /// Does the operation, then reports a failure (a reply lost on the way back).
    Ambiguous,
    /// Hangs past the decision budget (the decision is dropped before the operation runs).
    Hang,
}

/// The store operations a fault can hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Find,
    Consume,
    Signals,
    Issue,
    Open,
    Claim,
}

/// A fault armed for the next call of `op`.
#[derive(Debug, Default)]
struct Faults {
    armed: Option<(Op, Kind)>,
    fired: Option<(Op, Kind)>,
}

/// A grant store that injects the armed fault into the next matching call.
struct Faulty {
    inner: Arc<dyn GrantStore>,
    faults: Mutex<Faults>,
}

impl Faulty {
    fn take(&self, op: Op) -> Option<Kind> {
        let mut f = self.faults.lock().unwrap();
        match f.armed {
            Some((o, kind)) if o == op => {
                f.armed = None;
                f.fired = Some((op, kind));
                Some(kind)
            }
            _ => None,
        }
    }

    async fn around<T>(
        &self,
        op: Op,
        call: impl std::future::Future<Output = Result<T, GrantError>>,
    ) -> Result<T, GrantError> {
        let injected = || Err(GrantError::Unavailable(format!("injected {op:?}")));
        match self.take(op) {
            None => call.await,
            Some(Kind::Error) => injected(),
            Some(Kind::Ambiguous) => {
                let _ = call.await;
                injected()
            }
            Some(Kind::Hang) => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                call.await
            }
        }
    }
}

#[tonic::async_trait]
impl GrantStore for Faulty {
    async fn find_grant(&self, digest: &str, now: i64) -> Result<Option<Grant>, GrantError> {
        self.around(Op::Find, self.inner.find_grant(digest, now))
            .await
    }
    async fn find_any(&self, digests: &[&str], now: i64) -> Result<Option<Grant>, GrantError> {
        self.around(Op::Find, self.inner.find_any(digests, now))
            .await
    }
    async fn consume(&self, grant: &Grant, now: i64) -> Result<bool, GrantError> {
        self.around(Op::Consume, self.inner.consume(grant, now))
            .await
    }
    async fn put_grant(&self, grant: Grant) -> Result<(), GrantError> {
        self.inner.put_grant(grant).await
    }
    async fn admit_challenge(
        &self,
        challenge: Challenge,
        caps: &Caps,
        now: i64,
    ) -> Result<Admitted, GrantError> {
        let call = self.inner.admit_challenge(challenge, caps, now);
        self.around(Op::Issue, call).await
    }
    async fn find_challenge(
        &self,
        which: ChallengeRef<'_>,
        now: i64,
    ) -> Result<Option<Challenge>, GrantError> {
        let call = self.inner.find_challenge(which, now);
        match which {
            ChallengeRef::Id(_) => call.await,
            ChallengeRef::Latest(_) => self.around(Op::Open, call).await,
        }
    }
    async fn close_challenge(&self, challenge: &Challenge) -> Result<bool, GrantError> {
        self.inner.close_challenge(challenge).await
    }
    async fn tally(
        &self,
        counters: &[Counter<'_>],
        marks: &[&str],
        now: i64,
    ) -> Result<Tally, GrantError> {
        // Counters with a max are the challenge-issuing rate limits; without, the context
        // signals (velocity and known networks).
        let op = match counters.iter().any(|c| c.max.is_some()) {
            true => Op::Issue,
            false => Op::Signals,
        };
        self.around(op, self.inner.tally(counters, marks, now))
            .await
    }
    async fn claim_once(&self, event: &str, until: i64, now: i64) -> Result<bool, GrantError> {
        // A spent grant's first-use claim (`used:…`) is made off the approval's path, for the
        // expiry records only; faults are injected into the claims approvals depend on.
        if event.starts_with("used:") {
            return self.inner.claim_once(event, until, now).await;
        }
        self.around(Op::Claim, self.inner.claim_once(event, until, now))
            .await
    }
    async fn remember(&self, mark: &str, until: i64, now: i64) -> Result<(), GrantError> {
        self.inner.remember(mark, until, now).await
    }
    async fn append(
        &self,
        name: &str,
        entry: &str,
        until: i64,
        now: i64,
    ) -> Result<(), GrantError> {
        self.inner.append(name, entry, until, now).await
    }
    async fn journals(&self, names: &[&str], now: i64) -> Result<Vec<Vec<String>>, GrantError> {
        self.inner.journals(names, now).await
    }
    async fn revoke(&self, which: Revoke<'_>) -> Result<u32, GrantError> {
        self.inner.revoke(which).await
    }
}

/// Evidence that keeps the ids of the decisions it recorded.
#[derive(Default)]
struct Recorded(Mutex<Vec<String>>);

#[tonic::async_trait]
impl Evidence for Recorded {
    async fn record(&self, ctx: &EvidenceContext<'_>) -> Result<(), EvidenceError> {
        self.0.lock().unwrap().push(ctx.decision.id.clone());
        Ok(())
    }
    async fn lifecycle(&self, _: &Lifecycle<'_>) -> Result<(), EvidenceError> {
        Ok(())
    }
}

/// One step of a generated history.
#[derive(Debug, Clone)]
enum Step {
    /// alice exports `KEYS[k]` with her aal1 session.
    Request(usize),
    /// The transaction's open challenge is completed: a single-use aal3 grant is minted.
    Complete(usize),
    Advance(i64),
    Arm(Op, Kind),
}

fn step() -> impl Strategy<Value = Step> {
    let op = prop_oneof![
        Just(Op::Find),
        Just(Op::Consume),
        Just(Op::Signals),
        Just(Op::Issue),
        Just(Op::Open),
        Just(Op::Claim),
    ];
    let kind =
        prop_oneof![4 => Just(Kind::Error), 4 => Just(Kind::Ambiguous), 1 => Just(Kind::Hang)];
    prop_oneof![
        6 => (0..KEYS.len()).prop_map(Step::Request),
        3 => (0..KEYS.len()).prop_map(Step::Complete),
        1 => prop_oneof![Just(7i64), Just(29), Just(61)].prop_map(Step::Advance),
        2 => (op, kind).prop_map(|(o, k)| Step::Arm(o, k)),
    ]
}

/// The reference model: per transaction, its digest once known and its minted grant.
#[derive(Debug, Default)]
struct Model {
    digests: HashMap<usize, String>,
    /// Transaction → (grant id, expires_at, spent).
    grants: HashMap<usize, (String, i64, bool)>,
    minted: u32,
}

struct World {
    pipeline: Pipeline,
    store: Arc<Faulty>,
    evidence: Arc<Recorded>,
    clock: Arc<ManualClock>,
    model: Model,
}

async fn world(inner: impl FnOnce(Arc<dyn Clock>) -> Arc<dyn GrantStore>) -> World {
    // Generous limits: the history, not the abuse limits, is under test.
    // A budget and policy time limit wider than the quickstart's 250/100 ms, still under a
    // hang's 2 s: the history is under test, not the speed of a loaded machine (a starved policy
    // timing out would read as a live grant that did not approve).
    let config = quickstart(|t| {
        t.replace("  budget_ms: 250\n", "  budget_ms: 1000\n")
            .replace(
                "  entrypoint: stepguard/authz/decision\n  timeout_ms: 100\n",
                "  entrypoint: stepguard/authz/decision\n  timeout_ms: 800\n",
            )
            .replace(
            "  ttl_secs: 300\n",
            "  ttl_secs: 300\n  limits:\n    per_subject: {max: 100000, window_secs: 60}\n    per_source_ip: {max: 100000, window_secs: 60}\n    max_open_per_subject: 100000\n    max_attempts_per_transaction: 100000\n",
        )
    });
    let clock = Arc::new(ManualClock::new(support::tokens::now()));
    let store = Arc::new(Faulty {
        inner: inner(clock.clone()),
        faults: Mutex::default(),
    });
    let evidence = Arc::new(Recorded::default());
    let (grants, ev, time): (Arc<dyn GrantStore>, Arc<dyn Evidence>, Arc<dyn Clock>) =
        (store.clone(), evidence.clone(), clock.clone());
    let app = stepguard::app::App::build_with_clock(&config, time.clone())
        .await
        .unwrap();
    let pipeline = Pipeline {
        routes: RouteTable::new(&config.actions),
        identity: Identity::load(&config.identity, config.jwks_wait())
            .await
            .unwrap(),
        binder: Binder::new(&config.transaction).unwrap(),
        grants: grants.clone(),
        policy: app.pipeline().policy.clone(),
        challenger: Challenger::new(config.challenge.clone()),
        completer: Completer::new(grants, ev.clone(), config.challenge.acr_ladder.clone(), 5),
        context: config.context.clone(),
        evidence: ev,
        clock: time,
        budget: Duration::from_millis(config.decision.budget_ms),
        policy_timeout: Duration::from_millis(config.policy.timeout_ms),
        max_segments: config.decision.max_path_segments,
        standing: None,
        notifier: None,
    };
    World {
        pipeline,
        store,
        evidence,
        clock,
        model: Model::default(),
    }
}

/// alice's aal1 token, signed in an hour before `now`.
fn weak(now: i64) -> String {
    crate::support::tokens::sign(&json!({
        "iss": "https://idp.stepguard.local", "aud": "stepguard-demo", "sub": "alice",
        "exp": now + 600, "iat": now - 5, "auth_time": now - 3600, "acr": "aal1", "amr": ["pwd"]
    }))
}

fn export(key: &str, bearer: &str) -> RawRequest {
    RawRequest {
        method: "POST".into(),
        host: "api.example.com".into(),
        path: format!("/v1/keys/{key}/export"),
        headers: [("authorization".to_string(), format!("Bearer {bearer}"))].into(),
        source_address: Some("10.0.0.7".into()),
        ..Default::default()
    }
}

impl World {
    async fn run(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match step {
            Step::Request(k) => self.request(*k).await?,
            Step::Complete(k) => self.complete(*k).await,
            Step::Advance(secs) => self.clock.advance(*secs),
            Step::Arm(op, kind) => self.store.faults.lock().unwrap().armed = Some((*op, *kind)),
        }
        Ok(())
    }

    /// Mints a single-use aal3 grant for the transaction's open challenge, as a completion does.
    async fn complete(&mut self, k: usize) {
        let now = self.clock.now();
        let Some(digest) = self.model.digests.get(&k) else {
            return;
        };
        let Ok(Some(open)) = self.store.inner.open_challenge(digest, now).await else {
            return;
        };
        self.model.minted += 1;
        let id = format!("g{}", self.model.minted);
        let grant = Grant {
            id: id.clone(),
            digest: open.digest.clone(),
            subject: open.subject.clone(),
            action: open.action.clone(),
            acr: "aal3".into(),
            amr: vec!["pwd".into(), "hwk".into()],
            auth_time: now,
            method: "oidc".into(),
            challenge_id: Some(open.id.clone()),
            issued_at: now,
            expires_at: now + GRANT_TTL,
            uses_left: Some(1),
            policy_revision: None,
        };
        self.store.inner.put_grant(grant).await.unwrap();
        self.store.inner.close_challenge(&open).await.unwrap();
        self.model.grants.insert(k, (id, now + GRANT_TTL, false));
    }

    async fn request(&mut self, k: usize) -> Result<(), TestCaseError> {
        let now = self.clock.now();
        self.store.faults.lock().unwrap().fired = None;
        let d: Decision = self.pipeline.decide(export(KEYS[k], &weak(now))).await;
        let fired = self.store.faults.lock().unwrap().fired;
        if let Some(t) = &d.transaction {
            self.model.digests.entry(k).or_insert_with(|| t.clone());
        }
        let grant = self.model.grants.get(&k).cloned();
        let live = |g: &(String, i64, bool)| !g.2 && now < g.1;
        if d.verdict == Verdict::Allow {
            // Safety: a live, unspent grant of this very transaction, spent by this approval.
            let g = grant.clone();
            prop_assert!(
                g.as_ref().is_some_and(live),
                "approved without a live grant: {d:?} {g:?}"
            );
            let (id, ..) = g.unwrap_or_default();
            prop_assert_eq!(d.grant_id.as_deref(), Some(id.as_str()), "{:?}", d);
            prop_assert_eq!(d.transaction.as_ref(), self.model.digests.get(&k));
            prop_assert!(fired.is_none(), "a store fault ({fired:?}) approved: {d:?}");
            prop_assert!(
                self.evidence.0.lock().unwrap().contains(&d.id),
                "an approval without evidence: {d:?}"
            );
            if let Some(g) = self.model.grants.get_mut(&k) {
                g.2 = true;
            }
            return Ok(());
        }
        // Liveness: no fault, a grant well inside its life: approved.
        if fired.is_none() && grant.as_ref().is_some_and(|g| !g.2 && now + 1 < g.1) {
            prop_assert!(false, "a live grant did not approve: {d:?} {grant:?}");
        }
        // A consume done but answered with an error spent the grant all the same.
        if fired == Some((Op::Consume, Kind::Ambiguous))
            && let Some(g) = self.model.grants.get_mut(&k)
        {
            g.2 = true;
        }
        Ok(())
    }
}

fn check(
    history: &[Step],
    inner: impl FnOnce(Arc<dyn Clock>) -> Arc<dyn GrantStore>,
) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut world = world(inner).await;
        for step in history {
            world.run(step).await?;
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_grant_lifecycle_holds_its_invariants_over_the_memory_store(
        history in proptest::collection::vec(step(), 1..40)
    ) {
        check(&history, |_| Arc::new(MemoryStore::new(100_000)))?;
    }
}

#[test]
fn the_grant_lifecycle_holds_its_invariants_over_redis() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    });
    let case = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(&proptest::collection::vec(step(), 1..40), |history| {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let prefix = format!("model{n}:");
            let url = url.clone();
            check(&history, move |clock| {
                let store = RedisStore::connect(&url, &prefix, Duration::from_millis(200), clock);
                Arc::new(store.unwrap())
            })
        })
        .unwrap();
}
