//! Decision benchmarks (criterion): `cargo bench --features testkit --bench decision`.
//!
//! Groups:
//! - `route_classify`: `RouteTable::classify` on a 20-action table, public and sensitive paths.
//! - `policy_eval`: the shipped Rego policy (`policies/`, `stepguard/authz/decision`) on the
//!   input `build_input` makes for a stepped-up transfer (allow) and an aal1 one (step_up).
//! - `decide`: the whole sensitive decision through `Pipeline::decide` (ES256 token verified
//!   against the dev JWKS, transaction binding, memory grant lookup, policy evaluated in place,
//!   evidence), the pipeline built by `App::build` from `deploy/local/stepguard.yaml`. Wall time.
//! - `decide_cpu`: the same decision measured in CPU time of the whole process (every thread's
//!   `sum_exec_runtime` from `/proc/self/task/*/schedstat`), so the blocking-pool hand-off is
//!   counted as the CPU it burns, not the time spent waiting for a wake-up.
//! - `stage`: each stage of that decision on its own, to see where the time goes.
//! - with `STEPGUARD_BENCH_SWITCHES=N`, only: context switches per decision on a 2-worker
//!   runtime (`decision/switches.rs`).
//!
//! A JSON `tracing` subscriber writing to a sink is installed, as `stepguard serve` installs one
//! writing to stderr: the per-decision evidence record is formatted exactly as in production.
//!
//! Everything runs from the crate root (cargo bench does that), on a current-thread tokio
//! runtime driven by `block_on` over a whole batch of iterations (`iter_custom`).

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark: a broken fixture should stop it

/// The allocator `stepguard serve` runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::measurement::Measurement;
use criterion::{BatchSize, Criterion, Throughput};
use serde_json::json;
use stepguard::app::App;
use stepguard::config::Config;
use stepguard::decision::Verdict;
use stepguard::pipeline::Pipeline;
use stepguard::policy::rego::RegoPolicy;
use stepguard::policy::{InputParts, Outcome, PolicyEngine, PolicyInput, build_input};
use stepguard::request::{AuthzRequest, RawRequest};
use stepguard::route::Classification;
use stepguard::testkit::check::raw_request as raw;
use stepguard::testkit::tokens::{fresh_claims, now, sign_claims};

const CONFIG: &str = "deploy/local/stepguard.yaml";
const BODY: &str = r#"{"amount":100,"currency":"EUR","payee":"bob"}"#;

/// A dev token for alice, valid for the whole run.
fn token(acr: &str, auth_age: i64) -> String {
    let mut claims = fresh_claims("alice", acr, auth_age);
    claims["exp"] = json!(now() + 3600);
    claims["sid"] = json!("dev-session");
    sign_claims(&claims)
}

/// A stepped-up dev token that no other call returns (distinct `jti`).
fn unique_token(i: u64) -> String {
    let mut claims = fresh_claims("alice", "aal2", 5);
    claims["exp"] = json!(now() + 3600);
    claims["jti"] = json!(format!("bench-{}-{i}", now()));
    sign_claims(&claims)
}

fn transfer(token: &str) -> RawRequest {
    raw("POST", "/v1/accounts/A1/transfers", Some(token), BODY)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Installs a JSON subscriber like `stepguard serve`'s, writing to a sink.
fn install_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::sink)
        .json()
        .flatten_event(true)
        .try_init();
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    pipeline: Arc<Pipeline>,
    stepped_up: String,
    aal1: String,
}

fn fixture() -> Fixture {
    install_logging();
    let rt = runtime();
    let config = Config::load(Path::new(CONFIG)).expect("quickstart config loads");
    let app = rt
        .block_on(App::build(&config))
        .expect("quickstart app builds");
    let fixture = Fixture {
        pipeline: app.pipeline().clone(),
        rt,
        stepped_up: token("aal2", 5),
        aal1: token("aal1", 3600),
    };
    // A benchmark of refusals would be worthless: check the decisions first.
    let d = fixture
        .rt
        .block_on(fixture.pipeline.decide(transfer(&fixture.stepped_up)));
    assert!(
        matches!(d.verdict, Verdict::Allow) && d.reason == "session_satisfies",
        "stepped-up transfer must be allowed by session, got {:?} / {}",
        d.verdict,
        d.reason
    );
    let d = fixture
        .rt
        .block_on(fixture.pipeline.decide(transfer(&fixture.aal1)));
    assert!(
        matches!(d.verdict, Verdict::Challenge { .. }),
        "aal1 transfer must be challenged, got {:?} / {}",
        d.verdict,
        d.reason
    );
    let d = fixture.rt.block_on(
        fixture
            .pipeline
            .decide(raw("GET", "/public/hello", None, "")),
    );
    assert!(d.reason == "not_sensitive", "public GET: {}", d.reason);
    fixture
}

fn configure<M: Measurement>(g: &mut criterion::BenchmarkGroup<'_, M>) {
    g.warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .throughput(Throughput::Elements(1));
}

/// The policy input `Pipeline` builds for a transfer with this token (no grant stored).
fn policy_input(f: &Fixture, token: &str) -> serde_json::Value {
    let p = &f.pipeline;
    let req = AuthzRequest::new(transfer(token), p.max_segments).expect("normalizes");
    let Ok(Classification::Sensitive { action, params }) = p.routes.classify(&req) else {
        panic!("transfer is sensitive")
    };
    let now = now();
    let subject =
        f.rt.block_on(p.identity.resolve(&req, now))
            .expect("token verifies");
    let txn = p
        .binder
        .bind(&action, &subject, &req, &params, now)
        .expect("binds");
    build_input(&InputParts {
        req: &req,
        action: &action,
        subject: &subject,
        txn: &txn,
        grant: None,
        now,
        ladder: p.challenger.ladder(),
        signals: None,
        events: &[],
    })
}

fn bench_policy(c: &mut Criterion, f: &Fixture) {
    let policy = RegoPolicy::load(
        Path::new("policies"),
        "stepguard/authz/decision",
        Duration::from_millis(100),
    )
    .expect("shipped policy loads");
    let ladder = f.pipeline.challenger.ladder().to_vec();
    let allow = policy_input(f, &f.stepped_up);
    let step_up = policy_input(f, &f.aal1);
    let out = policy.evaluate(allow.clone()).expect("evaluates");
    assert!(matches!(
        Outcome::from_value(&out, &ladder),
        Ok(Outcome::Allow { .. })
    ));
    let out = policy.evaluate(step_up.clone()).expect("evaluates");
    assert!(matches!(
        Outcome::from_value(&out, &ladder),
        Ok(Outcome::StepUp { .. })
    ));
    if std::env::var_os("STEPGUARD_BENCH_PRINT_INPUT").is_some() {
        eprintln!(
            "{}",
            serde_json::to_string_pretty(&allow).unwrap_or_default()
        );
    }
    let mut g = c.benchmark_group("policy_eval");
    configure(&mut g);
    g.bench_function("rego_allow_session_satisfies", |b| {
        b.iter_batched(
            || allow.clone(),
            |i| policy.evaluate(black_box(i)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("rego_step_up_aal1", |b| {
        b.iter_batched(
            || step_up.clone(),
            |i| policy.evaluate(black_box(i)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// `iters` sensitive decisions in one `block_on`; returns the wall time.
fn decide_batch(f: &Fixture, iters: u64) -> Duration {
    let p = &f.pipeline;
    let reqs: Vec<RawRequest> = (0..iters).map(|_| transfer(&f.stepped_up)).collect();
    f.rt.block_on(async {
        let start = Instant::now();
        for raw in reqs {
            black_box(p.decide(raw).await);
        }
        start.elapsed()
    })
}

fn bench_decide(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("decide");
    configure(&mut g);
    g.bench_function("sensitive_transfer_allow", |b| {
        b.iter_custom(|iters| decide_batch(f, iters))
    });
    g.bench_function("sensitive_transfer_step_up", |b| {
        b.iter_custom(|iters| {
            let p = &f.pipeline;
            let reqs: Vec<RawRequest> = (0..iters).map(|_| transfer(&f.aal1)).collect();
            f.rt.block_on(async {
                let start = Instant::now();
                for raw in reqs {
                    black_box(p.decide(raw).await);
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("public_get", |b| {
        b.iter_custom(|iters| {
            let p = &f.pipeline;
            let reqs: Vec<RawRequest> = (0..iters)
                .map(|_| raw("GET", "/public/hello", None, ""))
                .collect();
            f.rt.block_on(async {
                let start = Instant::now();
                for raw in reqs {
                    black_box(p.decide(raw).await);
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

/// Every stage of the sensitive decision on its own, in the order `Pipeline::decide` runs them.
fn bench_stages(c: &mut Criterion, f: &Fixture) {
    let p = &f.pipeline;
    let rt = &f.rt;
    let raw_req = transfer(&f.stepped_up);
    let req = AuthzRequest::new(raw_req.clone(), p.max_segments).expect("normalizes");
    let Ok(Classification::Sensitive { action, params }) = p.routes.classify(&req) else {
        panic!("transfer is sensitive")
    };
    let now = now();
    let subject = rt
        .block_on(p.identity.resolve(&req, now))
        .expect("token verifies");
    let txn = p
        .binder
        .bind(&action, &subject, &req, &params, now)
        .expect("binds");
    let ladder = p.challenger.ladder();
    let parts = InputParts {
        req: &req,
        action: &action,
        subject: &subject,
        txn: &txn,
        grant: None,
        now,
        ladder,
        signals: None,
        events: &[],
    };
    let input = build_input(&parts);
    let typed = PolicyInput::build(&parts);
    let live = p.policy.current().expect("a policy is active");
    let output = live.evaluate_input(&typed).expect("evaluates");
    assert_eq!(output, live.evaluate(input.clone()).expect("evaluates"));
    let decision = rt.block_on(p.decide(raw_req.clone()));
    let origin = stepguard::evidence::Origin::of(&raw_req);

    let mut g = c.benchmark_group("stage");
    configure(&mut g);
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.bench_function("0_raw_request_clone", |b| {
        b.iter(|| black_box(raw_req.clone()))
    });
    g.bench_function("1_normalize_incl_clone", |b| {
        b.iter(|| AuthzRequest::new(black_box(raw_req.clone()), p.max_segments))
    });
    g.bench_function("2_classify", |b| {
        b.iter(|| p.routes.classify(black_box(&req)))
    });
    // The same token again: its signature was verified once and is cached (claims re-checked).
    g.bench_function("3_identity_repeated_token", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(p.identity.resolve(black_box(&req), now).await.is_ok());
                }
                start.elapsed()
            })
        })
    });
    // A token never seen before: full ES256 verification (tokens minted outside the timing).
    g.bench_function("3b_identity_first_seen_token", |b| {
        b.iter_custom(|iters| {
            let reqs: Vec<AuthzRequest> = (0..iters)
                .map(|i| {
                    let token = unique_token(i);
                    AuthzRequest::new(transfer(&token), p.max_segments).expect("normalizes")
                })
                .collect();
            rt.block_on(async {
                let start = Instant::now();
                for req in &reqs {
                    black_box(p.identity.resolve(black_box(req), now).await.is_ok());
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("4_bind_hmac", |b| {
        b.iter(|| {
            p.binder
                .bind(&action, &subject, black_box(&req), &params, now)
        })
    });
    g.bench_function("5_grant_lookup_memory", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(
                        p.grants
                            .find_grant(black_box(&txn.digest), now)
                            .await
                            .is_ok(),
                    );
                }
                start.elapsed()
            })
        })
    });
    // The typed document, borrowing from the decision's values (what `decide` builds).
    g.bench_function("6_build_input", |b| {
        b.iter(|| PolicyInput::build(black_box(&parts)))
    });
    // ... and made into regorus's value type: what the Rego engine evaluates.
    g.bench_function("6b_build_input_to_regorus", |b| {
        b.iter(|| PolicyInput::build(black_box(&parts)).to_rego())
    });
    // Before the document was typed: a `serde_json::Value` built with `json!`, then converted.
    g.bench_function("6_legacy_build_input_json", |b| {
        b.iter(|| stepguard::testkit::legacy_input::legacy_input(black_box(&parts)))
    });
    g.bench_function("6b_legacy_build_input_json_to_regorus", |b| {
        b.iter(|| {
            stepguard::policy::rego::to_rego(stepguard::testkit::legacy_input::legacy_input(
                black_box(&parts),
            ))
        })
    });
    // ... or as a `serde_json::Value` (tools, the trial, engines without their own path).
    g.bench_function("6c_build_input_json", |b| {
        b.iter(|| build_input(black_box(&parts)))
    });
    // What `decide` calls: conversion to regorus, VM run, result back to JSON.
    g.bench_function("7_policy_eval_inline", |b| {
        b.iter(|| live.evaluate_input(black_box(&typed)))
    });
    g.bench_function("7b_policy_eval_spawn_blocking", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let policy = live.clone();
                    let input = input.clone();
                    black_box(
                        tokio::task::spawn_blocking(move || policy.evaluate(input))
                            .await
                            .is_ok(),
                    );
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("8_outcome_parse", |b| {
        b.iter(|| Outcome::from_value(black_box(&output), ladder))
    });
    g.bench_function("9_evidence_json_log", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let ctx = stepguard::evidence::EvidenceContext {
                        decision: &decision,
                        txn: Some(&txn),
                        subject: Some(&subject),
                        origin: &origin,
                    };
                    black_box(p.evidence.record(&ctx).await.is_ok());
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

fn bench_decide_cpu(c: &mut Criterion<ProcessCpu>, f: &Fixture) {
    let mut g = c.benchmark_group("decide_cpu");
    configure(&mut g);
    g.bench_function("sensitive_transfer_allow", |b| {
        b.iter_custom(|iters| {
            let p = &f.pipeline;
            let reqs: Vec<RawRequest> = (0..iters).map(|_| transfer(&f.stepped_up)).collect();
            f.rt.block_on(async {
                let start = process_cpu_ns();
                for raw in reqs {
                    black_box(p.decide(raw).await);
                }
                process_cpu_ns().saturating_sub(start)
            })
        })
    });
    g.finish();
}

#[path = "decision/cpu.rs"]
mod cpu;
#[path = "decision/route.rs"]
mod route;
#[path = "decision/switches.rs"]
mod switches;
use cpu::{ProcessCpu, process_cpu_ns};
use route::bench_route;

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let config = Config::load(Path::new(CONFIG)).expect("quickstart config loads");
    let f = fixture();
    if std::env::var_os("STEPGUARD_BENCH_SWITCHES").is_some() {
        switches::count_switches(CONFIG, &f.stepped_up, BODY);
        return;
    }
    bench_route(&mut c, &config);
    bench_policy(&mut c, &f);
    bench_decide(&mut c, &f);
    bench_stages(&mut c, &f);
    if process_cpu_ns() > 0 {
        let mut cpu = Criterion::default()
            .with_measurement(ProcessCpu)
            .configure_from_args();
        bench_decide_cpu(&mut cpu, &f);
        cpu.final_summary();
    } else {
        eprintln!("decide_cpu skipped: /proc/self/task/*/schedstat is not readable here");
    }
    c.final_summary();
}
