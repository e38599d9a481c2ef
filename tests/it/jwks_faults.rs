//! A JWKS URL that fails after its keys are cached, through the public `Identity` and the
//! in-process pipeline: an unknown `kid` against a JWKS that hangs is answered `invalid_token`
//! within the decision budget while the one fetch goes on, a flood of unknown `kid`s makes one
//! fetch, and keys past `max_stale_secs` verify nothing (not even a token verified before)
//! until a fetch succeeds. Reliability catalogue A2, B4 and B5.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use stepguard::decision::Verdict;
use stepguard::identity::{Identity, IdentityError};

use crate::support::envoy::manifest_dir;
use crate::support::load::{transfer, unlimited};
use crate::support::sidecar::quickstart;
use crate::support::tokens::{claims, token};

/// What the JWKS endpoint answers: the body after a delay, or an error status.
#[derive(Clone)]
enum Answer {
    Body(Duration),
    Status(StatusCode),
}

struct Jwks {
    answer: Mutex<Answer>,
    hits: AtomicUsize,
}

impl Jwks {
    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn dev_jwks() -> String {
    std::fs::read_to_string(manifest_dir().join("deploy/local/dev-jwks.json")).unwrap()
}

async fn answer(State(jwks): State<Arc<Jwks>>) -> Response {
    jwks.hits.fetch_add(1, Ordering::SeqCst);
    let answer = jwks.answer.lock().unwrap().clone();
    match answer {
        Answer::Body(delay) => {
            tokio::time::sleep(delay).await;
            dev_jwks().into_response()
        }
        Answer::Status(status) => status.into_response(),
    }
}

/// The quickstart's keys served on loopback, and a config edit pointing the issuer at them with
/// `settings` (more `jwks` fields).
async fn serve(settings: &str) -> (Arc<Jwks>, impl Fn(String) -> String) {
    let jwks = Arc::new(Jwks {
        answer: Mutex::new(Answer::Body(Duration::ZERO)),
        hits: AtomicUsize::new(0),
    });
    let app = Router::new()
        .route("/jwks", get(answer))
        .with_state(jwks.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (
        jwks,
        pointing_at(format!("jwks:\n        url: {url}\n        {settings}")),
    )
}

/// A config edit replacing the quickstart issuer's key file with `section`.
fn pointing_at(section: String) -> impl Fn(String) -> String {
    const FILE: &str = "jwks:\n        file: dev-jwks.json";
    move |text: String| {
        assert!(text.contains(FILE), "quickstart identity section changed");
        text.replace(FILE, &section)
    }
}

/// A dev-key token whose header names a `kid` the JWKS does not have (yet).
fn rotated_token() -> String {
    let pem =
        std::fs::read(manifest_dir().join("deploy/local/dev-signing-key.DEV-ONLY.pem")).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("dev-es256-2".into());
    let key = EncodingKey::from_ec_pem(&pem).unwrap();
    jsonwebtoken::encode(&header, &claims("alice", "aal2", 5), &key).unwrap()
}

async fn verify(id: &Identity, token: &str) -> Result<Option<String>, IdentityError> {
    let now = support::tokens::now();
    id.verify_bearer(&format!("Bearer {token}"), now)
        .await
        .map(|s| s.id)
}

#[tokio::test]
async fn an_unknown_kid_against_a_hanging_jwks_is_answered_within_the_decision_budget() {
    let (jwks, edit) = serve("min_refresh_secs: 0").await;
    let pipeline = unlimited(edit).await;
    jwks.set(Answer::Body(Duration::from_secs(5)));
    let started = Instant::now();
    let decision = pipeline.decide(transfer(&rotated_token(), 100)).await;
    let elapsed = started.elapsed();
    assert_eq!(decision.reason, "invalid_token", "{decision:?}");
    assert!(matches!(decision.verdict, Verdict::Unauthenticated { .. }));
    // The budget is 250 ms; the JWKS answers after 5 s.
    assert!(
        elapsed < Duration::from_secs(2),
        "answered after {elapsed:?}"
    );
    let known = pipeline
        .decide(transfer(&token("alice", "aal2", 5), 101))
        .await;
    assert_ne!(
        known.reason, "invalid_token",
        "a cached kid stopped verifying"
    );
    assert_eq!(jwks.hits(), 2, "the load and the one fetch still in flight");
}

#[tokio::test]
async fn fifty_concurrent_unknown_kid_verifications_make_one_fetch() {
    let (jwks, edit) = serve("min_refresh_secs: 0").await;
    let config = quickstart(edit);
    let id = Arc::new(
        Identity::load(&config.identity, config.jwks_wait())
            .await
            .unwrap(),
    );
    jwks.set(Answer::Body(Duration::from_secs(2)));
    let token = rotated_token();
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (id, token) = (id.clone(), token.clone());
        flood.spawn(async move { verify(&id, &token).await });
    }
    while let Some(verified) = flood.join_next().await {
        assert_eq!(
            verified.unwrap(),
            Err(IdentityError::InvalidToken("unknown key"))
        );
    }
    assert_eq!(jwks.hits(), 2, "the load and one shared fetch");
}

#[tokio::test]
async fn a_verified_token_is_refused_once_the_keys_pass_max_stale_until_a_fetch_succeeds() {
    let settings = "min_refresh_secs: 0\n        ttl_secs: 1\n        max_stale_secs: 2";
    let (jwks, edit) = serve(settings).await;
    let config = quickstart(edit);
    let id = Identity::load(&config.identity, config.jwks_wait())
        .await
        .unwrap();
    let token = token("alice", "aal2", 5);
    assert_eq!(verify(&id, &token).await, Ok(Some("alice".into())));
    jwks.set(Answer::Status(StatusCode::INTERNAL_SERVER_ERROR));
    for set in id.jwks() {
        set.refresh(true).await;
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        verify(&id, &token).await,
        Err(IdentityError::InvalidToken("signing keys expired"))
    );
    jwks.set(Answer::Body(Duration::ZERO));
    assert_eq!(verify(&id, &token).await, Ok(Some("alice".into())));
}

/// A dev-key token naming `kid`, which the JWKS does not have.
fn token_with_kid(kid: &str) -> String {
    let header = serde_json::json!({"alg": "ES256", "kid": kid, "typ": "JWT"});
    stepguard::testkit::sign(header, claims("mallory", "aal2", 5))
}

/// Reliability B4, sustained: ~1,000 unknown-`kid` requests a second for 10 s through the
/// pipeline, 200 different `kid`s, with a 2 s refresh cooldown. Every one is answered
/// `invalid_token` within the decision budget, the JWKS is fetched at most once per cooldown,
/// and a known key keeps verifying throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sustained_unknown_kid_flood_is_refused_in_budget_and_fetches_once_per_cooldown() {
    const COOLDOWN_SECS: u64 = 2;
    const FLOOD: Duration = Duration::from_secs(10);
    let settings = format!("min_refresh_secs: {COOLDOWN_SECS}");
    let (jwks, edit) = serve(&settings).await;
    let pipeline = unlimited(edit).await;
    let hostile: Arc<Vec<String>> = Arc::new(
        (0..200)
            .map(|i| token_with_kid(&format!("rotated-{i}")))
            .collect(),
    );
    let before = jwks.hits();
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..8u64 {
        let (pipeline, hostile) = (pipeline.clone(), hostile.clone());
        workers.spawn(async move {
            // 8 workers, each a request every 8 ms: about 1,000 a second in all.
            let mut tick = tokio::time::interval(Duration::from_millis(8));
            let (mut sent, mut slowest) = (0u64, Duration::ZERO);
            while started.elapsed() < FLOOD {
                tick.tick().await;
                let token = &hostile[((sent * 8 + w) % 200) as usize];
                let asked = Instant::now();
                let d = pipeline.decide(transfer(token, 100 + w)).await;
                slowest = slowest.max(asked.elapsed());
                assert_eq!(d.reason, "invalid_token", "{d:?}");
                sent += 1;
            }
            (sent, slowest)
        });
    }
    let known = token("alice", "aal2", 5);
    let mut known_checks = 0;
    while started.elapsed() < FLOOD {
        let d = pipeline.decide(transfer(&known, 7)).await;
        assert_ne!(
            d.reason, "invalid_token",
            "a known key stopped verifying: {d:?}"
        );
        known_checks += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (mut sent, mut slowest) = (0, Duration::ZERO);
    while let Some(done) = workers.join_next().await {
        let (n, s) = done.unwrap();
        sent += n;
        slowest = slowest.max(s);
    }
    let fetches = jwks.hits() - before;
    let allowed = (FLOOD.as_secs() / COOLDOWN_SECS + 1) as usize;
    eprintln!(
        "flood: {sent} unknown-kid requests in {FLOOD:?}, slowest {slowest:?}, {fetches} JWKS \
         fetches, {known_checks} known-key checks"
    );
    assert!(
        sent > 5_000,
        "the flood was too thin to mean anything: {sent}"
    );
    // The budget is 250 ms; slack for a loaded test machine.
    assert!(
        slowest < Duration::from_millis(500),
        "slowest answer {slowest:?}"
    );
    assert!(
        fetches <= allowed,
        "{fetches} fetches in {FLOOD:?} with a {COOLDOWN_SECS} s cooldown (at most {allowed})"
    );
}
