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

fn find<'a>(docs: &'a [Value], kind: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d["kind"] == kind)
}

fn deployment(docs: &[Value]) -> &Value {
    find(docs, "Deployment").expect("a Deployment")
}

/// The stepguard config in the rendered ConfigMap.
fn stepguard_config(docs: &[Value]) -> String {
    docs.iter()
        .filter(|d| d["kind"] == "ConfigMap")
        .find(|d| {
            d["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("stepguard-config"))
        })
        .and_then(|d| d["data"]["config.yaml"].as_str())
        .expect("ConfigMap stepguard-config with config.yaml")
        .to_string()
}

fn container_port(deployment: &Value, name: &str) -> Option<u64> {
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)?["containerPort"]
        .as_u64()
}

/// What every rendered overlay must hold, whatever its size.
fn pod_problems(docs: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |ok: bool, what: &str| {
        if !ok {
            problems.push(what.to_string());
        }
    };
    let d = deployment(docs);
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let text = serde_json::to_string(docs).unwrap();
    check(
        !text.contains("\"subPath\""),
        "a volume is mounted with subPath (never updated by the kubelet)",
    );
    check(
        pod["securityContext"]["runAsNonRoot"] == true,
        "pod runAsNonRoot",
    );
    check(
        pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault",
        "pod seccomp RuntimeDefault",
    );
    let sc = &c["securityContext"];
    check(
        sc["allowPrivilegeEscalation"] == false,
        "allowPrivilegeEscalation: false",
    );
    check(
        sc["readOnlyRootFilesystem"] == true,
        "readOnlyRootFilesystem: true",
    );
    check(
        sc["capabilities"]["drop"] == serde_json::json!(["ALL"]),
        "capabilities drop ALL",
    );
    check(
        pod["automountServiceAccountToken"] == false,
        "no service account token",
    );
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        check(
            c[probe]["httpGet"]["port"] == "http-admin",
            &format!("{probe} on the admin port"),
        );
    }
    check(
        c["readinessProbe"]["httpGet"]["path"] == "/readyz",
        "readinessProbe /readyz",
    );
    check(
        c["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .is_some(),
        "preStop sleep",
    );
    check(
        c["resources"]["requests"]["cpu"].is_string(),
        "a CPU request (HPA, scheduling)",
    );
    check(
        c["resources"]["limits"]["memory"].is_string(),
        "a memory limit",
    );
    check(
        c["resources"]["limits"]["cpu"].is_null(),
        "no CPU limit (throttling becomes 503s)",
    );

    // The config agrees with the pod: ports, mounts, the writable spool.
    let config: Value = yaml_serde::from_str(&stepguard_config(docs)).unwrap();
    let port = |field: &str| {
        config["listen"][field]
            .as_str()
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, p)| p.parse::<u64>().ok())
    };
    check(
        port("grpc") == container_port(d, "grpc-authz"),
        "listen.grpc is the grpc-authz port",
    );
    check(
        port("http") == container_port(d, "http-callback"),
        "listen.http is the http-callback port",
    );
    check(
        port("admin").is_some() && port("admin") == container_port(d, "http-admin"),
        "listen.admin is the http-admin port",
    );
    let mounts: Vec<(&str, bool)> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["mountPath"].as_str().unwrap(), m["readOnly"] == true))
        .collect();
    let mounted_rw = |path: &str| mounts.iter().any(|(m, ro)| !ro && path.starts_with(m));
    let mounted = |path: &str| mounts.iter().any(|(m, _)| path.starts_with(m));
    let spool = config["evidence"]["spool"]["dir"].as_str().unwrap_or("");
    check(
        !spool.is_empty() && mounted_rw(spool),
        "the evidence spool is on a writable volume",
    );
    for file in [
        config["policy"]["source"].as_str(),
        config["transaction"]["keys"][0]["secret_file"].as_str(),
        config["evidence"]["signing_key_file"].as_str(),
        config["challenge"]["oidc"]["client_secret_file"].as_str(),
    ] {
        check(
            file.is_some_and(|f| f.starts_with('/') && mounted(f)),
            &format!("{file:?} is mounted"),
        );
    }
    let args = c["args"].as_array().unwrap();
    check(
        args.iter().any(|a| a == "--config")
            && args.last().and_then(Value::as_str).is_some_and(mounted),
        "serve --config names the mounted config",
    );
    // Every port the Service exposes is a named container port.
    let service = find(docs, "Service").expect("a Service");
    for p in service["spec"]["ports"].as_array().unwrap() {
        let target = p["targetPort"].as_str().unwrap_or("");
        check(
            container_port(d, target).is_some(),
            &format!("Service targetPort {target}"),
        );
    }
    problems
}

/// What the HA overlay promises.
fn ha_problems(docs: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |ok: bool, what: &str| {
        if !ok {
            problems.push(what.to_string());
        }
    };
    let d = deployment(docs);
    let labels = &d["spec"]["selector"]["matchLabels"];
    check(d["spec"]["replicas"].as_u64() >= Some(3), "replicas >= 3");
    let strategy = &d["spec"]["strategy"];
    check(strategy["type"] == "RollingUpdate", "RollingUpdate");
    check(
        strategy["rollingUpdate"]["maxUnavailable"] == 0,
        "maxUnavailable: 0",
    );
    check(
        strategy["rollingUpdate"]["maxSurge"].as_u64() >= Some(1),
        "maxSurge >= 1",
    );
    let spread = d["spec"]["template"]["spec"]["topologySpreadConstraints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for key in ["topology.kubernetes.io/zone", "kubernetes.io/hostname"] {
        check(
            spread
                .iter()
                .any(|s| s["topologyKey"] == key && s["labelSelector"]["matchLabels"] == *labels),
            &format!("topology spread over {key}"),
        );
    }
    match find(docs, "PodDisruptionBudget") {
        Some(pdb) => {
            check(
                pdb["spec"]["selector"]["matchLabels"] == *labels,
                "PDB selects the pods",
            );
            check(
                pdb["spec"]["maxUnavailable"] == 1
                    || pdb["spec"]["minAvailable"].as_u64() >= Some(2),
                "PDB keeps >= 2",
            );
        }
        None => check(false, "a PodDisruptionBudget"),
    }
    match find(docs, "HorizontalPodAutoscaler") {
        Some(hpa) => {
            check(
                hpa["spec"]["scaleTargetRef"]["name"] == d["metadata"]["name"],
                "HPA scales the Deployment",
            );
            check(
                hpa["spec"]["minReplicas"].as_u64() >= Some(3),
                "HPA minReplicas >= 3",
            );
            check(
                hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu",
                "HPA on CPU",
            );
        }
        None => check(false, "a HorizontalPodAutoscaler"),
    }
    match find(docs, "NetworkPolicy") {
        Some(np) => {
            check(
                np["spec"]["podSelector"]["matchLabels"] == *labels,
                "NetworkPolicy selects the pods",
            );
            let types = &np["spec"]["policyTypes"];
            check(
                *types == serde_json::json!(["Ingress", "Egress"]),
                "NetworkPolicy restricts ingress and egress",
            );
            let rules = np["spec"]["ingress"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for port in [9191, 9192, 9193] {
                let for_port: Vec<&Value> = rules
                    .iter()
                    .filter(|r| {
                        r["ports"]
                            .as_array()
                            .is_some_and(|ps| ps.iter().any(|p| p["port"] == port))
                    })
                    .collect();
                check(
                    !for_port.is_empty()
                        && for_port
                            .iter()
                            .all(|r| r["from"].as_array().is_some_and(|f| !f.is_empty())),
                    &format!("port {port}: only named sources"),
                );
            }
            let egress = serde_json::to_string(&np["spec"]["egress"]).unwrap();
            for port in ["53", "6379", "26379", "4317", "443"] {
                check(
                    egress.contains(&format!("\"port\":{port}")),
                    &format!("egress to port {port}"),
                );
            }
        }
        None => check(false, "a NetworkPolicy"),
    }
    let config: Value = yaml_serde::from_str(&stepguard_config(docs)).unwrap();
    let store = config["grants"]["store"].as_str().unwrap_or("memory");
    check(store != "memory", "a grant store shared by the replicas");
    if store == "redis_sentinel" {
        check(
            config["grants"]["replica_acks"].as_u64() >= Some(1),
            "replica_acks >= 1",
        );
    }
    check(
        config["evidence"]["stream"].is_object(),
        "evidence shipped to Redis Streams",
    );
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        check(find(docs, kind).is_some(), kind);
    }
    if let (Some(sm), Some(svc)) = (find(docs, "ServiceMonitor"), find(docs, "Service")) {
        let port = &sm["spec"]["endpoints"][0]["port"];
        check(
            svc["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == *port)
                && *port == "http-admin",
            "ServiceMonitor scrapes the admin port",
        );
    }
    problems
}

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
    for file in ["data.json", "stepguard/authz.rego", "stepguard/lib.rego"] {
        let shipped = std::fs::read(manifest_dir().join("policies").join(file)).unwrap();
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

/// The docs/deployment.md walkthrough, run in a scratch copy of the repository. Commands that
/// need no cluster run for real; `kubectl apply -k` renders the overlay instead, `kubectl
/// create` runs with `--dry-run=client`, and commands that need a cluster or a registry
/// (`kubectl apply -f -`, `label`, `rollout`, `docker`) are recorded after their file or
/// directory arguments are checked.
#[test]
fn deployment_walkthrough_runs() {
    let doc = std::fs::read_to_string(manifest_dir().join("docs/deployment.md")).unwrap();
    let section = doc
        .split_once("<!-- walkthrough:start -->")
        .and_then(|(_, rest)| rest.split_once("<!-- walkthrough:end -->"))
        .map(|(section, _)| section)
        .expect("docs/deployment.md has a walkthrough section");
    let blocks: Vec<&str> = section
        .split("```sh\n")
        .skip(1)
        .filter_map(|b| b.split_once("```").map(|(code, _)| code))
        .collect();
    assert!(blocks.len() >= 5, "walkthrough blocks: {blocks:?}");

    let dir = TempDir::new("walkthrough");
    let repo = dir.path().join("repo");
    for part in ["deploy", "policies"] {
        copy_dir(&manifest_dir().join(part), &repo.join(part));
    }
    std::fs::copy(manifest_dir().join("Dockerfile"), repo.join("Dockerfile")).unwrap();
    let _ = std::fs::remove_dir_all(repo.join("deploy/kubernetes/overlays/dev/secrets"));
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.path().join("cluster-commands.log");
    shim(&bin, "kubectl", KUBECTL_SHIM);
    shim(&bin, "docker", DOCKER_SHIM);
    shim(&bin, "stepguard", "exec \"$STEPGUARD_BIN\" \"$@\"\n");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = format!("set -euo pipefail\n{}", blocks.join("\n"));
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&repo)
        .env("PATH", path)
        .env("REAL_KUBECTL", kubectl())
        .env("STEPGUARD_BIN", env!("CARGO_BIN_EXE_stepguard"))
        .env("SHIM_LOG", &log)
        .env_remove("STEPGUARD_CLIENT_SECRET")
        .output()
        .unwrap();
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        output.status.success(),
        "the walkthrough failed:\n--- script ---\n{script}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- cluster commands ---\n{logged}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    // What it left behind: the rendered overlays, the public evidence key, no secrets.
    let ha = std::fs::read_to_string(repo.join("stepguard-ha.yaml")).unwrap();
    assert!(ha_problems(&yaml_documents(&ha)).is_empty());
    assert!(repo.join("stepguard-dev.yaml").is_file());
    assert!(repo.join("evidence-signing.pub").is_file());
    for secret in ["k1", "signing.pem", "client-secret"] {
        assert!(
            !repo.join(secret).exists(),
            "the walkthrough leaves {secret} behind"
        );
    }
    for expected in [
        "apply -k deploy/kubernetes/overlays/ha",
        "label namespace payments",
        "rollout status",
        "docker build",
    ] {
        assert!(
            logged.contains(expected),
            "{expected:?} not reached:\n{logged}"
        );
    }
}

fn shim(bin: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    let path = bin.join(name);
    std::fs::write(
        &path,
        format!("#!/usr/bin/env bash\nset -euo pipefail\n{body}"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

const KUBECTL_SHIM: &str = r#"
record() { echo "$*" >> "$SHIM_LOG"; }
args=("$@")
verb=""
skip=0
for a in "$@"; do
  if [ "$skip" = 1 ]; then skip=0; continue; fi
  case "$a" in -n|--namespace) skip=1 ;; -*) ;; *) verb="$a"; break ;; esac
done
case "$verb" in
  kustomize) exec "$REAL_KUBECTL" "$@" ;;
  create) exec "$REAL_KUBECTL" "$@" --dry-run=client -o yaml ;;
  apply)
    for ((i = 0; i < ${#args[@]}; i++)); do
      if [ "${args[$i]}" = "-k" ]; then "$REAL_KUBECTL" kustomize "${args[$((i + 1))]}" > /dev/null; fi
      if [ "${args[$i]}" = "-f" ] && [ "${args[$((i + 1))]}" = "-" ]; then cat > /dev/null; fi
    done
    record "$@" ;;
  label|rollout|get|wait) record "$@" ;;
  *) echo "kubectl shim: not expected in the walkthrough: $*" >&2; exit 1 ;;
esac
"#;

const DOCKER_SHIM: &str = r#"
case "$1" in
  build) [ -f Dockerfile ] || { echo "docker shim: no Dockerfile in $PWD" >&2; exit 1; } ;;
  push) ;;
  *) echo "docker shim: not expected: $*" >&2; exit 1 ;;
esac
echo "docker $*" >> "$SHIM_LOG"
"#;
