//! What the alert rules (deploy/prometheus/stepguard-rules.yaml) and the Grafana dashboard
//! (deploy/grafana/stepguard.json) query: every `stepguard_*` and `process_*` metric name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::envoy::manifest_dir;

/// Every `stepguard_*` and `process_*` name in the queries of the alert rules
/// (deploy/prometheus/stepguard-rules.yaml).
pub fn alert_rule_metrics() -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(manifest_dir().join("deploy/prometheus/stepguard-rules.yaml"))
            .unwrap();
    let rules: Value = yaml_serde::from_str(&text).unwrap();
    let exprs: Vec<String> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(exprs.len() >= 15, "few alert rules: {exprs:?}");
    metric_names(&exprs, &["stepguard_", "process_"])
}

/// The metric names starting with one of `prefixes` in PromQL expressions.
fn metric_names(exprs: &[String], prefixes: &[&str]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for e in exprs {
        for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if prefixes.iter().any(|p| word.starts_with(p)) {
                names.insert(word.to_string());
            }
        }
    }
    names
}

/// Every `stepguard_*` and `process_*` name in the dashboard's queries.
pub fn dashboard_metrics() -> BTreeSet<String> {
    fn exprs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", Value::String(e)) => out.push(e.clone()),
                        ("query", Value::String(e)) => out.push(e.clone()),
                        _ => exprs(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }
    let text =
        std::fs::read_to_string(manifest_dir().join("deploy/grafana/stepguard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    assert!(all.len() > 10, "dashboard has few queries: {all:?}");
    metric_names(&all, &["stepguard_", "process_"])
}
