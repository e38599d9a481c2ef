//! No memory growth over many decisions with tokens that come and go, as a soak's (and a real
//! deployment's) clients make them: every request carries a token no request carried before
//! (ES256 signatures are randomized), each valid 20 s, a hundred new ones per second of
//! the pipeline's (manual) clock, for a pool of subjects; and the live policy replaced by a
//! freshly compiled one every round, as a reload does. Resident memory is read from
//! `/proc/self/statm` after warm-up rounds (which fill every cache to its steady state: about
//! 20 s of tokens, of velocity windows, of claimed sign-ins) and after each later round, on the
//! system allocator (see
//! `tests/policy_alloc.rs` for why not mimalloc).
//!
//! What it catches: state kept per token, per subject beyond the pool, or per policy revision —
//! the verified-signature cache once kept every token until 50 000 of them (about 60 MiB) had
//! piled up, expired or not, and the memory grant store every claimed sign-in and velocity
//! counter until 100 000 of them had; both grew in every round here.
//!
//! `STEPGUARD_ALLOC_DECISIONS` sets the decisions per round (default 2 000: 20 s of the
//! clock). One of the last three rounds must add at most 64 B per decision, the measured
//! rounds together at most 8 MiB.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use stepguard::app::App;
use stepguard::clock::{Clock, ManualClock};
use stepguard::config::Config;
use stepguard::decision::Verdict;
use stepguard::policy::rego::RegoPolicy;
use stepguard::testkit::check::raw_request;
use stepguard::testkit::config::{Standalone, manifest_dir};
use stepguard::testkit::tokens::{claims, now, sign_claims};

/// Resident set size in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

const SUBJECTS: u64 = 400;
/// New tokens per second of the clock, and how long each is valid.
const PER_SECOND: u64 = 100;
const LIFETIME: i64 = 20;
const WARM_UP_ROUNDS: usize = 2;
const ROUNDS: usize = 5;

#[test]
fn decisions_with_ever_new_tokens_and_reloads_do_not_grow_memory() {
    let decisions: u64 = std::env::var("STEPGUARD_ALLOC_DECISIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let text = Standalone {
        no_evidence: true,
        ..Standalone::default()
    }
    .render()
    // A debug build on a busy machine: no decision may fail on time here.
    .replacen("  budget_ms: 250\n", "  budget_ms: 5000\n", 1)
    .replacen("  timeout_ms: 100\n\ngrants", "  timeout_ms: 4000\n\ngrants", 1)
    // Each subject signs in every 4 s of the clock: the soak's velocity window, not a step-up.
        + "\ncontext:\n  velocity_window_secs: 10\n";
    assert!(text.contains("budget_ms: 5000") && text.contains("timeout_ms: 4000\n\ngrants"));
    let config = Config::parse(&text, Path::new("/")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clock = Arc::new(ManualClock::new(now()));
    let app = rt
        .block_on(App::build_with_clock(&config, clock.clone()))
        .unwrap();
    let pipeline = app.pipeline().clone();
    let mut n = 0u64;
    let mut round = || {
        // The policy replaced, as a reload replaces it: the old engine must go.
        let policy = RegoPolicy::load(
            &manifest_dir().join("policies"),
            &config.policy.entrypoint,
            Duration::from_millis(config.policy.timeout_ms),
        )
        .unwrap();
        pipeline.policy.activate(Arc::new(policy));
        for _ in 0..decisions {
            n += 1;
            if n.is_multiple_of(PER_SECOND) {
                clock.advance(1);
            }
            let at = clock.now();
            let mut c = claims(&format!("alloc-{}", n % SUBJECTS), "aal2", at, 5);
            c["exp"] = json!(at + LIFETIME);
            let body = json!({"amount": 1 + n % 900, "currency": "EUR", "payee": "bob"});
            let raw = raw_request(
                "POST",
                "/v1/accounts/A1/transfers",
                Some(&sign_claims(&c)),
                &body.to_string(),
            );
            let d = rt.block_on(pipeline.decide(raw));
            assert!(
                matches!(d.verdict, Verdict::Allow) && d.reason == "session_satisfies",
                "a fresh aal2 session approves a small transfer: {:?} {}",
                d.verdict,
                d.reason
            );
        }
    };
    for _ in 0..WARM_UP_ROUNDS {
        round();
    }
    let mut marks = vec![rss()];
    for _ in 0..ROUNDS {
        round();
        marks.push(rss());
    }
    let steps: Vec<u64> = marks
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect();
    let quietest = steps[steps.len() - 3..].iter().copied().min().unwrap();
    let total = marks[marks.len() - 1].saturating_sub(marks[0]);
    println!(
        "{decisions} decisions per round; RSS after warm-up and each round (B): {marks:?}; \
         growth per round {steps:?}; quietest of the last three +{quietest} B \
         ({:.2} B per decision); total +{total} B",
        quietest as f64 / decisions as f64
    );
    let per_round = decisions * 64;
    assert!(
        quietest <= per_round,
        "memory grew in every one of the last three rounds (>{per_round} B each): {marks:?}"
    );
    assert!(total <= 8 << 20, "memory grew by {total} B: {marks:?}");
}
