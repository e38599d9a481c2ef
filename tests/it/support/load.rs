//! Load for fault tests: an in-process pipeline whose challenge limits are out of the way, the
//! requests it is driven with (a large transfer, a public page), and workers that keep asking
//! while the grant store underneath is broken, checking every answer as it comes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use stepguard::app::App;
use stepguard::decision::{Decision, Verdict};
use stepguard::pipeline::Pipeline;
use stepguard::request::RawRequest;

use super::sidecar::quickstart;
use super::tokens::token;

/// The quickstart's challenge lifetime line, which the limits are inserted after.
const TTL_LINE: &str = "  ttl_secs: 300\n";

/// Limits a load test cannot reach: no 429 or loop-guard 403 hides what the store answers.
const UNLIMITED: &str = "  ttl_secs: 300\n  limits:\n    per_subject: {max: 1000000, window_secs: 60}\n    per_source_ip: {max: 1000000, window_secs: 60}\n    max_open_per_subject: 1000000\n    max_attempts_per_transaction: 1000000\n";

/// A pipeline from the quickstart config edited by `edit` (e.g. a grant store section), with
/// the challenge rate limits out of the way of a load test.
pub async fn unlimited(edit: impl Fn(String) -> String) -> Arc<Pipeline> {
    let config = quickstart(|t| {
        let text = edit(t);
        assert!(
            text.contains(TTL_LINE),
            "quickstart challenge section changed"
        );
        text.replace(TTL_LINE, UNLIMITED)
    });
    App::build(&config).await.unwrap().into_pipeline()
}

/// A sensitive request: a transfer of `amount` (each amount is its own transaction), as
/// `token`'s subject, from 10.0.0.7.
pub fn transfer(token: &str, amount: u64) -> RawRequest {
    RawRequest {
        method: "POST".into(),
        host: "api.example.com".into(),
        path: "/v1/accounts/A1/transfers".into(),
        headers: HashMap::from([
            ("content-type".to_string(), "application/json".to_string()),
            ("authorization".to_string(), format!("Bearer {token}")),
        ]),
        body: json!({"amount": amount, "currency": "EUR", "payee": "mallory"})
            .to_string()
            .into_bytes(),
        source_address: Some("10.0.0.7".into()),
        ..Default::default()
    }
}

/// A request to a public route: allowed without touching the grant store.
pub fn public() -> RawRequest {
    RawRequest {
        method: "GET".into(),
        host: "api.example.com".into(),
        path: "/public/hello".into(),
        ..Default::default()
    }
}

/// Decides, retrying while the store is still connecting (the first seconds after start).
pub async fn decide(p: &Pipeline, raw: RawRequest) -> Decision {
    decide_within(p, raw, Duration::from_secs(5)).await
}

/// Decides, retrying for up to `within` while the answer is a Fault.
pub async fn decide_within(p: &Pipeline, raw: RawRequest, within: Duration) -> Decision {
    let started = Instant::now();
    loop {
        let d = p.decide(raw.clone()).await;
        if d.verdict != Verdict::Fault || started.elapsed() > within {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One sensitive check made under load.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was asked.
    pub asked: Instant,
    /// How long the answer took.
    pub took: Duration,
    /// The transfer's amount.
    pub amount: u64,
    /// The transaction digest the pipeline computed.
    pub transaction: Option<String>,
    /// A 503 (`Verdict::Fault`); otherwise a challenge.
    pub fault: bool,
}

impl Sample {
    /// Whether the check was asked at or after `from` and answered by `until`.
    pub fn within(&self, from: Instant, until: Instant) -> bool {
        self.asked >= from && self.asked + self.took <= until
    }
}

/// Drives public and sensitive checks concurrently for `duration` from `workers` tasks; worker
/// `w`'s `n`-th transfer is of `amount(w, n)`. Every sensitive answer must be a challenge or a
/// 503 (no grant exists, so an allow would be a hole), within the budget plus `slack`, and every
/// public check must pass. Returns every sensitive check made.
pub async fn drive(
    p: &Arc<Pipeline>,
    duration: Duration,
    workers: u64,
    amount: impl Fn(u64, u64) -> u64 + Clone + Send + 'static,
    slack: Duration,
) -> Vec<Sample> {
    let t = token("alice", "aal2", 5);
    let started = Instant::now();
    let workers: Vec<_> = (0..workers)
        .map(|w| {
            let (p, t, amount) = (p.clone(), t.clone(), amount.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut n = 0;
                while started.elapsed() < duration {
                    let amount = amount(w, n);
                    n += 1;
                    let asked = Instant::now();
                    let d = p.decide(transfer(&t, amount)).await;
                    let took = asked.elapsed();
                    assert!(took < p.budget + slack, "answered late: {took:?}");
                    assert!(
                        matches!(d.verdict, Verdict::Challenge { .. } | Verdict::Fault),
                        "{d:?}"
                    );
                    samples.push(Sample {
                        asked,
                        took,
                        amount,
                        transaction: d.transaction.clone(),
                        fault: d.verdict == Verdict::Fault,
                    });
                    assert_eq!(
                        p.decide(public()).await.verdict,
                        Verdict::Allow,
                        "public routes keep passing"
                    );
                }
                samples
            })
        })
        .collect();
    let mut samples = Vec::new();
    for w in workers {
        samples.extend(w.await.unwrap());
    }
    samples
}

/// [`drive`] with 8 workers, each on its own transaction (amounts 50 000 to 50 007), answers
/// within the budget plus 50 ms. Returns (503s, sensitive checks).
pub async fn load(p: &Arc<Pipeline>, duration: Duration) -> (usize, usize) {
    let samples = drive(p, duration, 8, |w, _| 50_000 + w, Duration::from_millis(50)).await;
    (samples.iter().filter(|s| s.fault).count(), samples.len())
}
