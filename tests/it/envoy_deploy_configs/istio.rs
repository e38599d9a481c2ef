//! The Envoy parts of the Istio EnvoyFilters are real Envoy config too: apply
//! their patches to the generated bootstrap (roughly as istiod would) and let
//! Envoy validate the result, so a misspelt proto field fails here and not in a
//! cluster.

use super::security::*;
use super::*;

/// Every `EnvoyFilter` document in deploy/istio/, with its file name.
pub(super) fn istio_envoy_filters() -> Vec<(String, Value)> {
    use serde::Deserialize as _;
    let dir = manifest_dir().join("deploy/istio");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read istio yaml");
        for document in yaml_serde::Deserializer::from_str(&text) {
            let doc =
                Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", relative(&path)));
            if doc["kind"] == "EnvoyFilter" {
                out.push((relative(&path), doc));
            }
        }
    }
    out
}

/// Proto-style merge: objects merge recursively, lists append, scalars replace.
pub(super) fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (Value::Array(a), Value::Array(b)) => a.extend(b.iter().cloned()),
        (slot, v) => *slot = v.clone(),
    }
}

pub(super) fn static_cluster(name: &str, port: u16) -> Value {
    serde_json::json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "0.25s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": port}
            }}}]}]
        }
    })
}

/// The generated bootstrap with one EnvoyFilter's patches applied.
pub(super) fn apply_envoy_filter(filter: &Value) -> Result<Value, String> {
    let cfg = EnvoyConfig::new(free_port(), free_port(), free_port());
    let mut doc = parse(&bootstrap(&cfg));
    let patches = filter["spec"]["configPatches"]
        .as_array()
        .ok_or("spec.configPatches is not a list")?;
    let mut extra_clusters = Vec::new();
    for (i, patch) in patches.iter().enumerate() {
        let apply_to = patch["applyTo"].as_str().unwrap_or_default();
        let operation = patch["patch"]["operation"].as_str().unwrap_or_default();
        let value = &patch["patch"]["value"];
        let hcm = &mut doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0];
        match (apply_to, operation) {
            ("NETWORK_FILTER", "MERGE") => merge(hcm, value),
            ("HTTP_FILTER", "MERGE") => {
                let wanted =
                    patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"]
                        .as_str()
                        .ok_or(format!("configPatches[{i}]: MERGE without subFilter name"))?;
                let filters = hcm["typed_config"]["http_filters"].as_array_mut().unwrap();
                let target = filters
                    .iter_mut()
                    .find(|f| f["name"] == wanted)
                    .ok_or(format!("configPatches[{i}]: no filter {wanted}"))?;
                merge(target, value);
            }
            ("HTTP_FILTER", "INSERT_BEFORE" | "INSERT_FIRST") => {
                let filters = hcm["typed_config"]["http_filters"].as_array_mut().unwrap();
                filters.insert(0, value.clone());
            }
            ("HTTP_ROUTE", "MERGE") => {
                let routes = hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
                    .as_array_mut()
                    .unwrap();
                let mut route = serde_json::json!({
                    "name": patch["match"]["routeConfiguration"]["vhost"]["route"]["name"],
                    "match": {"prefix": "/istio-merge-target"},
                    "route": {"cluster": "upstream"},
                });
                merge(&mut route, value);
                routes.insert(0, route);
            }
            ("HTTP_ROUTE", "INSERT_FIRST" | "INSERT_BEFORE" | "INSERT_AFTER") => {
                if let Some(cluster) = value["route"]["cluster"].as_str() {
                    extra_clusters.push(cluster.to_owned());
                }
                let routes = hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
                    .as_array_mut()
                    .unwrap();
                routes.insert(0, value.clone());
            }
            other => {
                return Err(format!(
                    "configPatches[{i}]: unsupported {other:?} in this test"
                ));
            }
        }
    }
    let clusters = doc["static_resources"]["clusters"].as_array_mut().unwrap();
    for name in extra_clusters {
        clusters.push(static_cluster(&name, free_port()));
    }
    Ok(doc)
}

#[test]
pub(super) fn istio_envoy_filter_patches_are_valid_envoy_config() {
    let filters = istio_envoy_filters();
    assert!(
        filters.len() >= 2,
        "expected the route-tag and hardening EnvoyFilters under deploy/istio/, found {}",
        filters.len()
    );
    let mut failures = Vec::new();
    for (file, filter) in &filters {
        let name = filter["metadata"]["name"].as_str().unwrap_or("?");
        match apply_envoy_filter(filter) {
            Err(e) => failures.push(format!("{file} ({name}): {e}")),
            Ok(doc) => {
                let yaml = serde_json::to_string_pretty(&doc).unwrap();
                if let Err(output) = envoy::validate_yaml(&yaml) {
                    failures.push(format!(
                        "{file} ({name}):\n{output}\n--- config ---\n{yaml}"
                    ));
                } else {
                    // The patched config must still satisfy the invariants.
                    let problems = security_problems(&doc);
                    if !problems.is_empty() {
                        failures.push(format!("{file} ({name}): {}", problems.join("; ")));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
