//! The shipped policy (`policies/`) decides exactly as the policy it replaced
//! (`tests/fixtures/policy-before/`, the single-file `authz.rego` that validated input and data on
//! every request), on regorus's VM as `stepguard serve` runs them.
//!
//! Inputs: the benchmark's full stepguard input (a 500 EUR transfer by an aal2 session), and the
//! same as an administrator, as a break-glass engineer exporting a key, as a workload with a
//! matching transaction token, through a delegation chain and with risk signals; each with every
//! one of 23 fields replaced by each of 34 values (of any type) or removed, and each with every
//! one of 18 fields replaced by each of its meaningful values of the right type; and 3,000
//! inputs with three such typed fields changed at once. For every input: when the new
//! `input_errors` is not empty (stepguard never builds such an input: it is typed), the old
//! decision was a deny for `invalid_input`; when the new `misconfiguration` is not empty (such a
//! ladder is refused when the policy loads), the old decision denied for `policy_misconfigured`;
//! otherwise the two decisions are equal. `misconfiguration` is compared on the shipped data and
//! on broken data documents too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use stepguard::policy::rego::RegoPolicy;
use stepguard::policy::{PolicyEngine, PolicyError};

use crate::support::envoy::manifest_dir;

const TIMEOUT: Duration = Duration::from_secs(5);
const NOW: i64 = 1_700_000_000;

mod inputs;

use inputs::{bases, bench_input, inputs};

fn before() -> PathBuf {
    manifest_dir().join("tests/fixtures/policy-before")
}

fn after() -> PathBuf {
    manifest_dir().join("policies")
}

fn load(dir: &Path, entrypoint: &str) -> RegoPolicy {
    RegoPolicy::load(dir, entrypoint, TIMEOUT).expect("the policy loads")
}

/// The non-test `.rego` modules under `dir`, for compiling them over another data document.
fn modules(dir: &Path) -> Vec<(String, String)> {
    stepguard::policy::rego::source_files(dir)
        .unwrap()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "rego"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

/// A set-valued rule's members (undefined: none).
fn set(policy: &RegoPolicy, input: &Value) -> Vec<Value> {
    match policy.evaluate(input.clone()) {
        Ok(Value::Array(items)) => items,
        Ok(other) => panic!("not a set: {other}"),
        Err(PolicyError::Undefined) => Vec::new(),
        Err(e) => panic!("{e}: {input}"),
    }
}

#[test]
fn the_rewritten_policy_decides_as_the_one_it_replaced() {
    let old = load(&before(), "stepguard/authz/decision");
    let new = load(&after(), "stepguard/authz/decision");
    let new_input_errors = load(&after(), "data.stepguard.validate.input_errors");
    let new_misconfiguration = load(&after(), "data.stepguard.validate.misconfiguration");
    let old_misconfiguration = load(&before(), "data.stepguard.authz.misconfiguration");
    let (mut equal, mut invalid, mut misconfigured) = (0, 0, 0);
    let mut results = std::collections::BTreeMap::<String, usize>::new();
    let inputs = inputs();
    for input in &inputs {
        let was = old
            .evaluate(input.clone())
            .unwrap_or_else(|e| panic!("the old policy fails ({e}) on {input}"));
        let misconfiguration = set(&new_misconfiguration, input);
        assert_eq!(
            misconfiguration,
            set(&old_misconfiguration, input),
            "misconfiguration differs for {input}"
        );
        if !set(&new_input_errors, input).is_empty() {
            assert_eq!(was["reason"], "invalid_input", "{input}");
            invalid += 1;
            continue;
        }
        // Any well-typed input, even with a ladder the policy refuses: the decision evaluates
        // (no evaluation error, no VM loop stopped by the instruction limit).
        let is = new
            .evaluate(input.clone())
            .unwrap_or_else(|e| panic!("the new policy fails ({e}) on {input}"));
        if !misconfiguration.is_empty() {
            assert_eq!(was["result"], "deny", "{input}");
            assert!(
                was["reasons"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("policy_misconfigured")),
                "{was} for {input}"
            );
            misconfigured += 1;
            continue;
        }
        assert_eq!(is, was, "the decisions differ for {input}");
        *results
            .entry(format!("{}/{}", is["result"], is["reason"]))
            .or_default() += 1;
        equal += 1;
    }
    println!(
        "{} inputs: {equal} identical decisions, {invalid} invalid inputs (old: invalid_input), \
         {misconfigured} refused at load (old: policy_misconfigured)",
        inputs.len()
    );
    println!("identical decisions by outcome: {results:?}");
    assert!(inputs.len() >= 3_000, "{} inputs", inputs.len());
    // The comparison must cover every kind of outcome, not only the easy ones.
    for outcome in [
        "\"allow\"/\"session_satisfies\"",
        "\"allow\"/\"grant_satisfies\"",
        "\"allow\"/\"transaction_token_satisfies\"",
        "\"step_up\"/\"acr_too_low\"",
        "\"step_up\"/\"session_too_old\"",
        "\"step_up\"/\"fresh_step_up_required\"",
        "\"deny\"/\"authentication_required\"",
        "\"deny\"/\"transaction_token_mismatch\"",
        "\"deny\"/\"delegation_actor_not_allowed\"",
        "\"deny\"/\"break_glass_justification_required\"",
    ] {
        assert!(results.contains_key(outcome), "no input decided {outcome}");
    }
    assert!(equal > 3_000 && invalid > 1_000 && misconfigured > 0);
}

#[test]
fn misconfiguration_is_reported_as_before_on_broken_data() {
    let shipped: Value =
        serde_json::from_slice(&std::fs::read(after().join("data.json")).unwrap()).unwrap();
    let mut broken = Vec::new();
    let mut edit = |f: &dyn Fn(&mut Value)| {
        let mut d = shipped.clone();
        f(&mut d);
        broken.push(d);
    };
    edit(&|d| d["stepguard"]["requirements"]["default"]["acr"] = json!("aal9"));
    edit(&|d| d["stepguard"]["requirements"]["actions"]["payments.transfer"]["tiers"] = json!([]));
    edit(&|d| {
        d["stepguard"]["requirements"]["actions"]["payments.transfer"]["tiers"]["eur"] = json!([])
    });
    edit(&|d| {
        d["stepguard"]["requirements"]["actions"]["payments.transfer"]["tiers"]["GBP"][0]["acr"] =
            json!("aal9")
    });
    edit(&|d| {
        d["stepguard"]["requirements"]["actions"]["payments.transfer"]["max_age"] = json!(-1)
    });
    edit(&|d| d["stepguard"]["requirements"]["default"]["admin"] = json!(true));
    edit(&|d| d["stepguard"]["signals"]["velocity_max"] = json!("ten"));
    edit(&|d| d["stepguard"]["signals"]["raise_steps"] = json!(0));
    edit(&|d| d["stepguard"]["workloads"]["max_token_lifetime"] = json!("5m"));
    edit(&|d| {
        d["stepguard"]["delegation"]["allowed_actors"] = json!({"keys.export": [{"sub": "bob"}]})
    });
    edit(&|d| d["stepguard"]["break_glass"]["roles"] = json!("break-glass"));
    edit(&|d| d["stepguard"]["break_glass"]["grant_ttl"] = json!(0));
    edit(&|d| d["stepguard"]["requirements"]["max_clock_skew"] = json!(1.5));
    let cases: Vec<(Value, bool)> = std::iter::once((shipped.clone(), false))
        .chain(broken.into_iter().map(|d| (d, true)))
        .collect();
    let (old_modules, new_modules) = (modules(&before()), modules(&after()));
    let mut compared = 0;
    for (data, is_broken) in &cases {
        let compile = |modules: &Vec<(String, String)>, entrypoint: &str| {
            RegoPolicy::from_modules(modules.clone(), data, false, entrypoint, TIMEOUT).unwrap()
        };
        let old = compile(&old_modules, "data.stepguard.authz.misconfiguration");
        let new = compile(&new_modules, "data.stepguard.validate.misconfiguration");
        let mut any = false;
        let mut unlisted = bench_input();
        unlisted["stepguard"]["action"]["name"] = json!("reports.export");
        let inputs = bases().into_iter().map(|(_, i)| i).chain([unlisted]);
        for input in inputs {
            let (was, is) = (set(&old, &input), set(&new, &input));
            assert_eq!(is, was, "misconfiguration differs on {data}");
            any |= !is.is_empty();
            compared += 1;
        }
        assert_eq!(any, *is_broken, "{data}");
    }
    println!("misconfiguration identical on {compared} (data, input) pairs");
}
