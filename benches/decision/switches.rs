//! Context switches per decision on the served (multi-threaded) runtime: with
//! `STEPGUARD_BENCH_SWITCHES=N`, `N` sensitive decisions (a stepped-up transfer, allowed on the
//! session) run one after another inside one task on a 2-worker runtime, as `stepguard serve`
//! runs each check in a task; the process's voluntary and involuntary context switches (every
//! thread's, from `/proc/self/task/*/status`) are counted around them. Evidence is off, so what
//! is left is the decision itself (and, where the policy is handed off, the hand-off). Twice:
//! the Rego policy in place, as decisions run it now, and handed off as before (the same engine
//! wrapped so that it does not declare itself `inline`).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use stepguard::app::App;
use stepguard::config::Config;
use stepguard::policy::{PolicyEngine, PolicyError};

/// The live engine, declared not [`PolicyEngine::inline`]: the pipeline hands each evaluation
/// off the reactor as it did for every engine before issue #13 (`block_in_place` here).
struct HandedOff(Arc<dyn PolicyEngine>);

impl PolicyEngine for HandedOff {
    fn evaluate(&self, input: Value) -> Result<Value, PolicyError> {
        self.0.evaluate(input)
    }
    fn revision(&self) -> &str {
        self.0.revision()
    }
}

/// Every thread's `(voluntary, nonvoluntary)` context switches so far.
fn switches() -> (u64, u64) {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (0, 0);
    };
    let mut total = (0, 0);
    for status in tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
    {
        for line in status.lines() {
            let count = |prefix: &str| {
                line.strip_prefix(prefix)
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            if let Some(n) = count("voluntary_ctxt_switches:") {
                total.0 += n;
            } else if let Some(n) = count("nonvoluntary_ctxt_switches:") {
                total.1 += n;
            }
        }
    }
    total
}

/// Runs and prints the count when `STEPGUARD_BENCH_SWITCHES` names a number of decisions.
pub fn count_switches(config_path: &str, token: &str, body: &str) {
    let Some(n) = std::env::var("STEPGUARD_BENCH_SWITCHES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut config = Config::load(Path::new(config_path)).expect("quickstart config loads");
    config.evidence = None;
    config.grant_api = None;
    for handed_off in [false, true] {
        let app = rt.block_on(App::build(&config)).expect("app builds");
        let pipeline = app.pipeline().clone();
        if handed_off {
            let live = pipeline.policy.current().expect("a policy is active");
            pipeline.policy.activate(Arc::new(HandedOff(live)));
        }
        let label = if handed_off {
            "handed off (block_in_place, JSON input: as before)"
        } else {
            "in place (typed input)"
        };
        run(&rt, pipeline, n, token, body, label);
    }
}

fn run(
    rt: &tokio::runtime::Runtime,
    pipeline: Arc<stepguard::pipeline::Pipeline>,
    n: u64,
    token: &str,
    body: &str,
    label: &str,
) {
    let request = || {
        stepguard::testkit::check::raw_request(
            "POST",
            "/v1/accounts/A1/transfers",
            Some(token),
            body,
        )
    };
    let task = {
        let pipeline = pipeline.clone();
        let reqs: Vec<_> = (0..n + 100).map(|_| request()).collect();
        rt.spawn(async move {
            let mut reqs = reqs.into_iter();
            // Warm-up: the VM pool, the token cache. (Later decisions of the one subject meet
            // the policy's velocity signal and become step-ups, then rate-limited ones: the
            // policy is evaluated for every one of them, in both runs alike.)
            for raw in reqs.by_ref().take(100) {
                std::hint::black_box(pipeline.decide(raw).await);
            }
            let mut reasons = std::collections::BTreeMap::<String, u64>::new();
            let (before, started) = (switches(), Instant::now());
            for raw in reqs {
                *reasons
                    .entry(pipeline.decide(raw).await.reason)
                    .or_default() += 1;
            }
            (before, switches(), started.elapsed(), reasons)
        })
    };
    let (before, after, elapsed, reasons) = rt.block_on(task).expect("decisions run");
    let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / n as f64;
    eprintln!(
        "{label}: context switches per decision over {n} decisions (2-worker runtime, \
         evidence off): voluntary {:.3}, involuntary {:.3}; {:.1} µs a decision",
        per(before.0, after.0),
        per(before.1, after.1),
        elapsed.as_secs_f64() * 1e6 / n as f64
    );
    eprintln!("  reasons: {reasons:?}");
}
