//! What a platform team deploys from deploy/kubernetes, deploy/prometheus and deploy/istio:
//! the overlays render (`kubectl kustomize`) into what they promise (the HA overlay is highly
//! available, every pod locked down, no `subPath`), their stepguard configs pass `stepguard
//! config check` and agree with the Deployment's ports, the base's policies are the shipped
//! ones, the PrometheusRule is the plain rules file, every alert has a firing unit test and a
//! runbook section, the Istio callers policy admits the gateway and waypoint callers, and the
//! docs/deployment.md walkthrough runs (cluster-only commands checked, not run).
//!
//! Schema validation (kubernetes-validate --strict), hadolint and promtool run in
//! scripts/check-deploy. Needs `kubectl` with kustomize v5: `STEPGUARD_KUBECTL`, else `kubectl`
//! on PATH, else `.tools/venv/bin/kubectl` (scripts/test installs one), and `openssl` (the dev
//! overlay's documented secrets command).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::envoy::{TempDir, manifest_dir};
use serde::Deserialize as _;
use serde_json::Value;

fn kubectl() -> PathBuf {
    if let Some(path) = std::env::var_os("STEPGUARD_KUBECTL") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("kubectl"))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| manifest_dir().join(".tools/venv/bin/kubectl"))
}

/// Copies `from` into `to` recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn yaml_documents(text: &str) -> Vec<Value> {
    yaml_serde::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

/// An overlay rendered by `kubectl kustomize`, in a scratch copy of deploy/kubernetes (the dev
/// overlay's secrets made by its documented command).
fn render(overlay: &str) -> Vec<Value> {
    let dir = TempDir::new("kustomize");
    let root = dir.path().join("kubernetes");
    copy_dir(&manifest_dir().join("deploy/kubernetes"), &root);
    if overlay == "dev" {
        run(&mut Command::new(
            root.join("overlays/dev/gen-dev-secrets.sh"),
        ));
    }
    let text = run(Command::new(kubectl())
        .arg("kustomize")
        .arg(root.join("overlays").join(overlay)));
    yaml_documents(&text)
}

mod checks;
mod walkthrough;

use checks::{deployment, find, ha_problems, pod_problems, stepguard_config};

#[test]
fn ha_overlay_is_highly_available_and_locked_down() {
    let docs = render("ha");
    let mut problems = pod_problems(&docs);
    problems.extend(ha_problems(&docs));
    assert!(
        problems.is_empty(),
        "overlays/ha:\n  {}",
        problems.join("\n  ")
    );
}

/// An edit of a rendered overlay that breaks one of its promises.
type Weakening = Box<dyn Fn(&mut Vec<Value>)>;

#[test]
fn ha_checks_catch_a_weakened_overlay() {
    let docs = render("ha");
    let weaken = |f: &dyn Fn(&mut Vec<Value>)| {
        let mut docs = docs.clone();
        f(&mut docs);
        let mut problems = pod_problems(&docs);
        problems.extend(ha_problems(&docs));
        problems
    };
    let cases: Vec<(&str, Weakening)> = vec![
        (
            "maxUnavailable: 0",
            Box::new(|docs| {
                let d = docs.iter_mut().find(|d| d["kind"] == "Deployment").unwrap();
                d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = 1.into();
            }),
        ),
        (
            "replicas >= 3",
            Box::new(|docs| {
                let d = docs.iter_mut().find(|d| d["kind"] == "Deployment").unwrap();
                d["spec"]["replicas"] = 1.into();
            }),
        ),
        (
            "a PodDisruptionBudget",
            Box::new(|docs| docs.retain(|d| d["kind"] != "PodDisruptionBudget")),
        ),
        (
            "subPath",
            Box::new(|docs| {
                let d = docs.iter_mut().find(|d| d["kind"] == "Deployment").unwrap();
                d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["subPath"] =
                    "config.yaml".into();
            }),
        ),
        (
            "startupProbe",
            Box::new(|docs| {
                let d = docs.iter_mut().find(|d| d["kind"] == "Deployment").unwrap();
                d["spec"]["template"]["spec"]["containers"][0]["startupProbe"] = Value::Null;
            }),
        ),
        (
            "topology spread over topology.kubernetes.io/zone",
            Box::new(|docs| {
                let d = docs.iter_mut().find(|d| d["kind"] == "Deployment").unwrap();
                d["spec"]["template"]["spec"]["topologySpreadConstraints"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|s| s["topologyKey"] != "topology.kubernetes.io/zone");
            }),
        ),
        (
            "port 9193: only named sources",
            Box::new(|docs| {
                let np = docs
                    .iter_mut()
                    .find(|d| d["kind"] == "NetworkPolicy")
                    .unwrap();
                np["spec"]["ingress"][2]["from"] = serde_json::json!([]);
            }),
        ),
        (
            "a grant store shared by the replicas",
            Box::new(|docs| {
                let cm = docs
                    .iter_mut()
                    .find(|d| {
                        d["metadata"]["name"]
                            .as_str()
                            .is_some_and(|n| n.starts_with("stepguard-config"))
                    })
                    .unwrap();
                let text = cm["data"]["config.yaml"].as_str().unwrap();
                let start = text.find("grants:").unwrap();
                let end = start + text[start..].find("\nevidence:").unwrap();
                let text = format!("{}grants:\n  store: memory{}", &text[..start], &text[end..]);
                cm["data"]["config.yaml"] = text.into();
            }),
        ),
    ];
    for (want, f) in cases {
        let problems = weaken(&*f);
        assert!(
            problems.iter().any(|p| p.contains(want)),
            "weakening ({want}) not reported: {problems:?}"
        );
    }
}

#[test]
fn dev_overlay_is_one_replica_with_the_memory_store() {
    let docs = render("dev");
    let problems = pod_problems(&docs);
    assert!(
        problems.is_empty(),
        "overlays/dev:\n  {}",
        problems.join("\n  ")
    );
    let d = deployment(&docs);
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
    let config: Value = yaml_serde::from_str(&stepguard_config(&docs)).unwrap();
    assert_eq!(config["grants"]["store"], "memory");
    // The secrets the Deployment mounts are the ones the overlay generates.
    let pod = &d["spec"]["template"]["spec"];
    for volume in pod["volumes"].as_array().unwrap() {
        if let Some(secret) = volume["secret"]["secretName"].as_str() {
            assert!(
                docs.iter()
                    .any(|s| s["kind"] == "Secret" && s["metadata"]["name"] == secret),
                "dev does not generate Secret {secret}"
            );
        }
    }
}

/// Every stepguard config under deploy/kubernetes is one stepguard accepts.
#[test]
fn kubernetes_configs_pass_stepguard_config_check() {
    for overlay in ["dev", "ha"] {
        let dir = TempDir::new("k8s-config");
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, stepguard_config(&render(overlay))).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_stepguard"))
            .args(["config", "check"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "overlays/{overlay}: stepguard config check failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The base's policies ConfigMap is built from copies (kustomize reads files under its own
/// directory only): they must be the shipped policies, byte for byte.
#[test]
fn base_policies_are_the_shipped_policies() {
    let base = manifest_dir().join("deploy/kubernetes/base/policies");
    let shipped_dir = manifest_dir().join("policies");
    let files: Vec<String> = stepguard::policy::rego::source_files(&shipped_dir)
        .unwrap()
        .iter()
        .map(|p| p.strip_prefix(&shipped_dir).unwrap().display().to_string())
        .collect();
    assert!(files.len() > 3, "{files:?}");
    for file in &files {
        let shipped = std::fs::read(shipped_dir.join(file)).unwrap();
        let copy = std::fs::read(base.join(file)).unwrap();
        assert!(
            shipped == copy,
            "deploy/kubernetes/base/policies/{file} differs from policies/{file}: cp policies/{file} deploy/kubernetes/base/policies/{file}"
        );
    }
}

fn rules_file() -> Value {
    let text =
        std::fs::read_to_string(manifest_dir().join("deploy/prometheus/stepguard-rules.yaml"))
            .unwrap();
    yaml_serde::from_str(&text).unwrap()
}

fn alert_names(rules: &Value) -> Vec<String> {
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn prometheus_rule_is_the_plain_rules_file() {
    let path = manifest_dir().join("deploy/kubernetes/components/monitoring/prometheusrule.yaml");
    let rule: Value = yaml_serde::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(rule["kind"], "PrometheusRule");
    assert!(
        rule["spec"]["groups"] == rules_file()["groups"],
        "the PrometheusRule's groups differ from deploy/prometheus/stepguard-rules.yaml"
    );
}

#[test]
fn every_alert_has_a_firing_test_and_a_runbook_section() {
    let tests: Value = yaml_serde::from_str(
        &std::fs::read_to_string(
            manifest_dir().join("deploy/prometheus/stepguard-rules.test.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    let firing: Vec<&str> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
        .filter(|a| a["exp_alerts"].as_array().is_some_and(|e| !e.is_empty()))
        .filter_map(|a| a["alertname"].as_str())
        .collect();
    let runbook = std::fs::read_to_string(manifest_dir().join("docs/runbook.md")).unwrap();
    let rules = rules_file();
    let names = alert_names(&rules);
    assert!(names.len() >= 15, "{names:?}");
    for name in &names {
        assert!(firing.contains(&name.as_str()), "no unit test fires {name}");
        let anchor = format!("docs/runbook.md#{}", name.to_lowercase());
        let mentioned =
            runbook.contains(&format!("### {name}\n")) || runbook.contains(&format!("**{name}**"));
        assert!(mentioned, "docs/runbook.md has no section for {name}");
        let rule = rules["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .find(|r| r["alert"] == name.as_str())
            .unwrap();
        let url = rule["annotations"]["runbook_url"].as_str().unwrap_or("");
        let target = url.split_once('#').map(|(_, a)| a).unwrap_or("");
        assert!(
            url.starts_with("docs/runbook.md#")
                && runbook.to_lowercase().contains(&format!("### {target}\n")),
            "{name}: runbook_url {url:?} names no section (expected like {anchor})"
        );
        assert!(
            rule["labels"]["severity"].is_string(),
            "{name}: no severity label"
        );
    }
}

#[test]
fn istio_callers_policy_admits_the_gateway_and_the_waypoint() {
    let istio = manifest_dir().join("deploy/istio");
    let docs = |file: &str| yaml_documents(&std::fs::read_to_string(istio.join(file)).unwrap());
    let callers = docs("stepguard-callers.yaml");
    let callers = find(&callers, "AuthorizationPolicy").unwrap();
    assert_eq!(callers["spec"]["action"], "ALLOW");
    let check_rules: Vec<&Value> = callers["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["to"][0]["operation"]["ports"] == serde_json::json!(["9191"]))
        .collect();
    let sources = serde_json::to_string(&check_rules).unwrap();
    // Gateway mode: the caller is the ingress gateway, in its own namespace.
    let gateway = docs("authorization-policy-gateway.yaml");
    let gateway = find(&gateway, "AuthorizationPolicy").unwrap();
    assert_eq!(gateway["spec"]["action"], "CUSTOM");
    let gateway_ns = gateway["metadata"]["namespace"].as_str().unwrap();
    assert!(
        sources.contains(&format!(
            "cluster.local/ns/{gateway_ns}/sa/istio-ingressgateway-service-account"
        )),
        "stepguard-callers does not admit the ingress gateway of {gateway_ns}: {sources}"
    );
    // Ambient mode: the caller is the waypoint the CUSTOM policy attaches to.
    let ambient = docs("ambient-waypoint.yaml");
    let waypoint = find(&ambient, "Gateway").unwrap();
    assert_eq!(waypoint["spec"]["gatewayClassName"], "istio-waypoint");
    let policy = find(&ambient, "AuthorizationPolicy").unwrap();
    assert_eq!(policy["spec"]["action"], "CUSTOM");
    assert_eq!(
        policy["spec"]["targetRefs"][0]["name"],
        waypoint["metadata"]["name"]
    );
    assert!(
        policy["spec"]["selector"].is_null(),
        "a selector would target ztunnel"
    );
    let principal = format!(
        "cluster.local/ns/{}/sa/{}",
        waypoint["metadata"]["namespace"].as_str().unwrap(),
        waypoint["metadata"]["name"].as_str().unwrap()
    );
    assert!(
        sources.contains(&principal),
        "stepguard-callers does not admit {principal}"
    );
    // Sidecar mode: the protected namespace of authorization-policy.yaml.
    let sidecar = docs("authorization-policy.yaml");
    let ns = find(&sidecar, "AuthorizationPolicy").unwrap()["metadata"]["namespace"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        sources.contains(&format!("\"{ns}\"")),
        "stepguard-callers does not admit {ns}"
    );
}
