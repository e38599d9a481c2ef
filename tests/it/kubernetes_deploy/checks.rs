//! The invariants a rendered overlay must hold: every pod locked down (`pod_problems`), and the
//! HA overlay highly available (`ha_problems`); plus lookups into rendered documents.

use serde_json::Value;

pub fn find<'a>(docs: &'a [Value], kind: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d["kind"] == kind)
}

pub fn deployment(docs: &[Value]) -> &Value {
    find(docs, "Deployment").expect("a Deployment")
}

/// The stepguard config in the rendered ConfigMap.
pub fn stepguard_config(docs: &[Value]) -> String {
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

pub fn container_port(deployment: &Value, name: &str) -> Option<u64> {
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)?["containerPort"]
        .as_u64()
}

/// What every rendered overlay must hold, whatever its size.
pub fn pod_problems(docs: &[Value]) -> Vec<String> {
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
pub fn ha_problems(docs: &[Value]) -> Vec<String> {
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
