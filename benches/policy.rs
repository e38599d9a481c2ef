//! Policy evaluation benchmarks (criterion), one decision per iteration:
//! `cargo bench --bench policy [-- --warm-up-time 1 --measurement-time 3]`.
//!
//! Groups:
//! - `wasm`: every OPA-compiled module of `tests/fixtures/opa-wasm/` (`$STEPGUARD_OPA_WASM_FIXTURES`
//!   overrides the folder) with a defined result (not `dotnet-abort`), on its first such input,
//!   preferring an entrypoint regorus compiles too, through `WasmPolicy::evaluate` (pooled
//!   instance, fuel and epoch deadline armed, result parsed back); `a2d24-memory` also on its
//!   large input.
//! - `rego_fixture`: the same decision through regorus (`RegoPolicy`) on the fixture's v1 Rego
//!   (`oracle_v1/` where upstream was v0), where the entrypoint is a rule: the engines side by side.
//! - `rego_shipped`: the shipped policy (`policies/`, `stepguard/authz/decision`) on a full
//!   stepguard input, for each worked example of docs/policy.md named by issue #13: an allow on
//!   the session, a step-up to aal3 for a 25 000 EUR transfer, a privileged step-up (a key
//!   export), a workload's transaction token, a break-glass step-up
//!   (`$STEPGUARD_BENCH_POLICIES` names another policy folder, for before/after comparisons:
//!   `tests/fixtures/policy-before` is the policy before issue #13).
//! - `rego_shipped_parts`: the pieces of one shipped-policy evaluation alone (input conversion
//!   to regorus's value type: from JSON by regorus's serde path and by stepguard's direct one,
//!   and from the typed document, as decisions do; the VM run; the result back to JSON) and
//!   regorus's interpreter on the same decision; `vm_only/*` is the VM run alone, on an input
//!   already converted.
//!
//! A filter naming only `rego_shipped…` groups skips loading the Wasm fixtures.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark: a broken fixture should stop it

/// The allocator `stepguard serve` runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput};
use serde_json::{Value, json};
use stepguard::policy::rego::{RegoPolicy, to_json, to_rego};
use stepguard::policy::wasm::{Limits, WasmPolicy};
use stepguard::policy::{PolicyEngine, PolicyInput};

const TIMEOUT: Duration = Duration::from_millis(100);

fn fixtures() -> PathBuf {
    let env = std::env::var_os("STEPGUARD_OPA_WASM_FIXTURES").map(PathBuf::from);
    env.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/opa-wasm"))
}

/// One benchmarked decision of a fixture.
struct Case {
    label: String,
    entrypoint: String,
    input: Value,
    /// The same decision in regorus, when `RegoPolicy` takes the entrypoint (a rule; package
    /// entrypoints are Wasm-only here).
    rego: Option<RegoPolicy>,
}

/// A fixture's first input with a defined Wasm result, preferring an entrypoint regorus can
/// compile too (and, for `a2d24-memory`, its large input as well).
fn cases(dir: &Path) -> Vec<Case> {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(dir.join("expected.jsonl")).unwrap();
    let rows: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &Value| r["opa_wasm"].as_array().is_some_and(|a| !a.is_empty()))
        .collect();
    let case = |row: &Value, rego: Option<RegoPolicy>| Case {
        label: format!(
            "{name}/{}#{}",
            row["entrypoint"].as_str().unwrap(),
            row["input_no"]
        ),
        entrypoint: row["entrypoint"].as_str().unwrap().to_string(),
        input: row["input"].clone(),
        rego,
    };
    let compiled = |row: &Value| {
        let entrypoint = row["entrypoint"].as_str().unwrap();
        RegoPolicy::from_modules(rego_modules(dir), &data(dir), false, entrypoint, TIMEOUT).ok()
    };
    let mut picked: Vec<Case> = match rows.iter().find_map(|r| compiled(r).map(|p| (r, p))) {
        Some((row, rego)) => vec![case(row, Some(rego))],
        None => rows
            .first()
            .map(|row| case(row, None))
            .into_iter()
            .collect(),
    };
    if name == "a2d24-memory" {
        picked.extend(
            rows.iter()
                .filter(|r| r["input_no"] == 3)
                .map(|r| case(r, None)),
        );
    }
    picked
}

fn data(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("data.json")).unwrap()).unwrap()
}

fn rego_modules(dir: &Path) -> Vec<(String, String)> {
    let v1 = dir.join("oracle_v1");
    let folder = if v1.is_dir() { v1 } else { dir.to_path_buf() };
    let mut modules: Vec<(String, String)> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rego"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    modules.sort();
    modules
}

fn bench_evaluate(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    label: &str,
    policy: &dyn PolicyEngine,
    input: &Value,
) {
    policy
        .evaluate(input.clone())
        .expect("the benchmarked input evaluates");
    g.bench_function(label, |b| {
        b.iter_batched(
            || input.clone(),
            |i| policy.evaluate(black_box(i)),
            BatchSize::SmallInput,
        )
    });
}

fn bench_fixtures(c: &mut Criterion) {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("policy.wasm").is_file())
        .collect();
    dirs.sort();
    let all: Vec<(PathBuf, Case)> = dirs
        .iter()
        .flat_map(|d| cases(d).into_iter().map(move |c| (d.clone(), c)))
        .collect();
    let mut g = c.benchmark_group("wasm");
    g.sample_size(30).throughput(Throughput::Elements(1));
    for (dir, case) in &all {
        let policy = WasmPolicy::load(
            &dir.join("policy.wasm"),
            Some(&dir.join("data.json")),
            &case.entrypoint,
            Limits::new(TIMEOUT),
        )
        .expect("the fixture module loads");
        bench_evaluate(&mut g, &case.label, &policy, &case.input);
    }
    g.finish();
    let mut g = c.benchmark_group("rego_fixture");
    g.sample_size(30).throughput(Throughput::Elements(1));
    for (_, case) in &all {
        if let Some(policy) = &case.rego {
            bench_evaluate(&mut g, &case.label, policy, &case.input);
        }
    }
    g.finish();
}

/// A full stepguard input (docs/policy.md, worked examples 1 and 2): a transfer of `value` EUR by
/// an aal2 session 100 s old.
fn shipped_input(value: i64) -> Value {
    let now = 1_700_000_000;
    json!({
        "attributes": {
            "source": {"address": {"socketAddress": {"address": "10.0.0.7", "portValue": 51000}}},
            "destination": {"address": {"socketAddress": {"address": "10.0.0.1", "portValue": 8080}}},
            "request": {"http": {"id": "r1", "method": "POST", "path": "/v1/accounts/A1/transfers",
                "host": "bank.example", "scheme": "https", "protocol": "HTTP/1.1",
                "headers": {"content-type": "application/json"}}},
            "contextExtensions": {}
        },
        "parsed_path": ["v1", "accounts", "A1", "transfers"],
        "parsed_query": {},
        "parsed_body": {"amount": value, "currency": "EUR", "payee": "bob"},
        "truncated_body": false,
        "version": {"encoding": "protojson", "ext_authz": "v3"},
        "stepguard": {
            "now": now,
            "acr_ladder": ["aal1", "aal2", "aal3"],
            "action": {"name": "payments.transfer", "risk": "high", "reversible": true,
                       "privileged": false, "value": value, "currency": "EUR", "mode": "enforce"},
            "subject": {"kind": "human", "id": "alice", "issuer": "https://idp.example",
                        "acr": "aal2", "acr_rank": 1, "amr": ["pwd", "otp"],
                        "auth_time": now - 100, "session_age": 100, "roles": [], "scopes": [],
                        "client_id": "web", "sid": "s1", "act": [], "workload": null,
                        "claims": {"sub": "alice"}},
            "transaction": {"digest": "k1:abc", "key_id": "k1",
                            "bound": {"path.account": "A1", "body.amount": value.to_string()}},
            "grant": null,
            "context": {"source_ip": "10.0.0.7", "peer_principal": null, "network": "10.0.0.0/24",
                        "new_network": false, "velocity": {"window_secs": 600, "count": 1},
                        "device_trust": null, "break_glass_justification": null}
        }
    })
}

/// docs/policy.md's other worked examples on the same input: a privileged key export by the
/// aal2 session (step-up to a fresh aal3), a workload with a transaction token for this transfer
/// (example 8) and a break-glass escalation with a justification (example 11).
fn privileged_input() -> Value {
    let mut input = shipped_input(500);
    input["stepguard"]["action"] = json!({"name": "keys.export", "risk": "critical",
        "reversible": false, "privileged": true, "value": null, "currency": null});
    input
}

fn workload_input() -> Value {
    let now = 1_700_000_000;
    let mut input = shipped_input(100);
    let id = "spiffe://bank.example/ns/batch/sa/payouts";
    input["stepguard"]["subject"] = json!({"kind": "workload", "id": id, "issuer": null,
        "acr": null, "acr_rank": -1, "amr": [], "auth_time": null, "session_age": null,
        "roles": [], "scopes": [], "client_id": null, "sid": null, "act": [],
        "workload": {"spiffe_id": id},
        "claims": {"sub": id, "txn": "txn-7c1d", "iat": now - 10, "exp": now + 50,
                   "tctx": {"action": "payments.transfer",
                            "fields": {"path.account": "A1", "body.amount": "100"}}}});
    input
}

fn break_glass_input() -> Value {
    let mut input = shipped_input(500);
    input["stepguard"]["action"] = json!({"name": "iam.escalate", "risk": "critical",
        "reversible": true, "privileged": true, "value": null, "currency": null});
    input["stepguard"]["subject"]["roles"] = json!(["sre", "break-glass"]);
    input["stepguard"]["context"]["break_glass_justification"] =
        json!("INC-4711: restore access for the payments on-call");
    input
}

fn bench_shipped(c: &mut Criterion) {
    // `STEPGUARD_BENCH_POLICIES` benchmarks another copy (e.g. an older revision) instead.
    let dir = std::env::var("STEPGUARD_BENCH_POLICIES").unwrap_or_else(|_| "policies".into());
    let policy = RegoPolicy::load(Path::new(&dir), "stepguard/authz/decision", TIMEOUT)
        .expect("the shipped policy loads");
    let allow = shipped_input(500);
    let step_up = shipped_input(25_000);
    assert_eq!(policy.evaluate(allow.clone()).unwrap()["result"], "allow");
    assert_eq!(
        policy.evaluate(step_up.clone()).unwrap()["result"],
        "step_up"
    );
    let mut g = c.benchmark_group("rego_shipped");
    g.sample_size(30).throughput(Throughput::Elements(1));
    bench_evaluate(&mut g, "allow_session_satisfies", &policy, &allow);
    bench_evaluate(&mut g, "step_up_value_tier", &policy, &step_up);
    let examples = [
        ("step_up_privileged", privileged_input(), "step_up"),
        ("allow_workload_token", workload_input(), "allow"),
        ("step_up_break_glass", break_glass_input(), "step_up"),
    ];
    for (label, input, result) in &examples {
        assert_eq!(
            policy.evaluate(input.clone()).unwrap()["result"],
            *result,
            "{label}"
        );
        bench_evaluate(&mut g, label, &policy, input);
    }
    g.finish();

    // Where a decision's time goes: each piece of `RegoPolicy::evaluate` alone, and the
    // interpreter for comparison.
    let mut g = c.benchmark_group("rego_shipped_parts");
    g.sample_size(30).throughput(Throughput::Elements(1));
    g.bench_function("input_to_regorus/serde_from", |b| {
        b.iter_batched(
            || step_up.clone(),
            |i| regorus::Value::from(black_box(i)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("input_to_regorus/direct", |b| {
        b.iter_batched(
            || step_up.clone(),
            |i| to_rego(black_box(i)),
            BatchSize::SmallInput,
        )
    });
    // The typed document (read from the same JSON outside the timing) made into regorus's
    // value type directly: what a decision's evaluation starts with.
    let typed = PolicyInput::from_json(&step_up).expect("the bench input follows the contract");
    g.bench_function("input_to_regorus/typed", |b| {
        b.iter(|| black_box(&typed).to_rego())
    });
    let converted = to_rego(step_up.clone());
    assert_eq!(
        policy.evaluate_input(&typed).unwrap(),
        policy.evaluate(step_up.clone()).unwrap()
    );
    g.bench_function("vm_only/step_up_value_tier", |b| {
        b.iter(|| policy.evaluate_value(black_box(converted.clone())))
    });
    let converted_allow = to_rego(allow.clone());
    g.bench_function("vm_only/allow_session_satisfies", |b| {
        b.iter(|| policy.evaluate_value(black_box(converted_allow.clone())))
    });
    let decision = policy.evaluate_value(converted.clone()).unwrap();
    g.bench_function("output_to_json/serde", |b| {
        b.iter(|| serde_json::to_value(black_box(&decision)))
    });
    g.bench_function("output_to_json/direct", |b| {
        b.iter(|| to_json(black_box(&decision)))
    });
    assert_eq!(
        policy.evaluate_interpreted(step_up.clone()).unwrap(),
        policy.evaluate(step_up.clone()).unwrap()
    );
    g.bench_function("interpreter/step_up_value_tier", |b| {
        b.iter_batched(
            || step_up.clone(),
            |i| policy.evaluate_interpreted(black_box(i)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    // The Wasm fixtures take a while to compile: skipped when a filter names only Rego groups.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if filter.is_empty() || filter.iter().any(|f| !f.starts_with("rego_shipped")) {
        bench_fixtures(&mut c);
    }
    bench_shipped(&mut c);
    c.final_summary();
}
