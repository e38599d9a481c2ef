//! The Envoy configs under deploy/ and the generated test bootstrap are valid
//! for the real Envoy, keep the settings stepguard's security depends on, and
//! the harness's Envoy fails closed when stepguard is absent.
//!
//! Needs the Envoy binary (see `support::envoy::envoy_bin`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use crate::support::envoy::{
    self, Envoy, EnvoyConfig, RouteTag, bootstrap, bootstrap_with_tags, manifest_dir,
};
use crate::support::ports::free_port;
use crate::support::upstream::EchoUpstream;
use serde_json::Value;

/// Where deploy configs point at TLS files; validation substitutes test certs.
const PROD_TLS_DIR: &str = "/etc/stepguard/tls/";
const TEST_TLS_DIR: &str = "deploy/envoy/testdata/";

/// Envoy bootstraps the repository must ship (a rename must not silently
/// drop one from validation).
const REQUIRED: &[&str] = &["deploy/local/envoy.yaml", "deploy/envoy/sidecar.yaml"];

/// Every `*.yaml`/`*.yml` under deploy/ that is an Envoy bootstrap: it has a
/// top-level `static_resources:`, `dynamic_resources:` or `admin:` key.
/// Kubernetes/Istio manifests (deploy/istio/, anything with `apiVersion:`)
/// and stepguard's own config files are not.
fn envoy_bootstraps() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|entry| entry.expect("dir entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                if path.file_name().is_some_and(|name| name == "istio") {
                    continue;
                }
                walk(&path, out);
            } else if path
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
            {
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                let top_level = |key: &str| text.lines().any(|line| line.starts_with(key));
                if top_level("apiVersion:") {
                    continue;
                }
                if top_level("static_resources:")
                    || top_level("dynamic_resources:")
                    || top_level("admin:")
                {
                    out.push(path);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&manifest_dir().join("deploy"), &mut out);
    for required in REQUIRED {
        assert!(
            out.contains(&manifest_dir().join(required)),
            "{required} is missing or no longer looks like an Envoy bootstrap; found {out:?}"
        );
    }
    out
}

/// The file's text with production TLS paths pointed at the test certs.
fn with_test_tls(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read deploy config");
    let test_dir = format!("{}/", manifest_dir().join(TEST_TLS_DIR).display());
    text.replace(PROD_TLS_DIR, &test_dir)
}

fn relative(path: &Path) -> String {
    path.strip_prefix(manifest_dir())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn deploy_envoy_configs_pass_envoy_validate() {
    let mut failures = Vec::new();
    let files = envoy_bootstraps();
    for path in &files {
        if let Err(output) = envoy::validate_yaml(&with_test_tls(path)) {
            failures.push(format!("== {} ==\n{output}", relative(path)));
        }
    }
    assert!(
        failures.is_empty(),
        "envoy --mode validate rejected {} of {} deploy configs:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn generated_test_bootstrap_passes_envoy_validate() {
    let cfg = EnvoyConfig {
        listener_port: free_port(),
        admin_port: free_port(),
        authz_grpc_port: free_port(),
        authz_http_port: free_port(),
        upstream_port: free_port(),
        timeout_ms: 500,
    };
    if let Err(output) = envoy::validate_yaml(&bootstrap(&cfg)) {
        panic!(
            "generated bootstrap is invalid:\n{output}\n--- yaml ---\n{}",
            bootstrap(&cfg)
        );
    }

    let tags = [
        RouteTag::new("/v1/payments/[^/]+/approve", "payments.approve"),
        RouteTag::new("/v1/reports/export", "data.export"),
        RouteTag::new("/v1/tagged/\"quoted\"", "no.such.action"),
    ];
    let cfg = EnvoyConfig {
        timeout_ms: 1250,
        ..cfg
    };
    let yaml = bootstrap_with_tags(&cfg, &tags);
    if let Err(output) = envoy::validate_yaml(&yaml) {
        panic!("generated bootstrap with tags is invalid:\n{output}\n--- yaml ---\n{yaml}");
    }
    assert!(yaml.contains("timeout: 1.250s"), "{yaml}");
}

// ---------------------------------------------------------------------------
// The settings that keep classification un-evadable and the filter fail-closed.

fn parse(yaml: &str) -> Value {
    yaml_serde::from_str::<Value>(yaml).expect("parse YAML")
}

/// Every JSON object anywhere in `value` whose `@type` ends with `suffix`.
fn typed<'a>(value: &'a Value, suffix: &str, out: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            if map
                .get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with(suffix))
            {
                out.push(value);
            }
            map.values().for_each(|v| typed(v, suffix, out));
        }
        Value::Array(items) => items.iter().for_each(|v| typed(v, suffix, out)),
        _ => {}
    }
}

fn all_typed<'a>(value: &'a Value, suffix: &str) -> Vec<&'a Value> {
    let mut out = Vec::new();
    typed(value, suffix, &mut out);
    out
}

fn duration_ms(text: &str) -> f64 {
    let secs: f64 = text
        .strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a protobuf duration: {text}"));
    secs * 1000.0
}

/// Problems with one parsed bootstrap, as readable strings.
fn security_problems(doc: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };

    let hcms = all_typed(doc, ".HttpConnectionManager");
    check(!hcms.is_empty(), "no HttpConnectionManager".into());
    for hcm in &hcms {
        let name = hcm["stat_prefix"].as_str().unwrap_or("?").to_owned();
        check(
            hcm["normalize_path"] == true,
            format!("{name}: normalize_path must be true"),
        );
        check(
            hcm["merge_slashes"] == true,
            format!("{name}: merge_slashes must be true"),
        );
        check(
            hcm["path_with_escaped_slashes_action"] == "REJECT_REQUEST",
            format!("{name}: path_with_escaped_slashes_action must be REJECT_REQUEST"),
        );

        let filters: Vec<&str> = hcm["http_filters"]
            .as_array()
            .map(|f| f.iter().filter_map(|f| f["name"].as_str()).collect())
            .unwrap_or_default();
        let pos = |n: &str| filters.iter().position(|f| *f == n);
        let authz = pos("envoy.filters.http.ext_authz");
        check(authz.is_some(), format!("{name}: no ext_authz filter"));
        check(
            pos("envoy.filters.http.router") == Some(filters.len().saturating_sub(1)),
            format!("{name}: router must be the last filter: {filters:?}"),
        );
        if let (Some(jwt), Some(authz)) = (pos("envoy.filters.http.jwt_authn"), authz) {
            check(
                jwt < authz,
                format!("{name}: jwt_authn must run before ext_authz"),
            );
        }

        // The callback route is never itself behind ext_authz (it completes step-up).
        for route in all_routes(hcm) {
            if route["match"]["prefix"] == "/.stepguard/" {
                let per_route = &route["typed_per_filter_config"]["envoy.filters.http.ext_authz"];
                check(
                    per_route["disabled"] == true,
                    format!("{name}: /.stepguard/ route must disable ext_authz"),
                );
            }
        }
    }

    let authzs = all_typed(doc, ".ext_authz.v3.ExtAuthz");
    check(!authzs.is_empty(), "no ExtAuthz filter config".into());
    for authz in authzs {
        check(
            authz["transport_api_version"] == "V3",
            "ext_authz: transport_api_version V3".into(),
        );
        check(
            authz["failure_mode_allow"] == false,
            "ext_authz: failure_mode_allow must be explicitly false".into(),
        );
        check(
            authz["status_on_error"]["code"] == "ServiceUnavailable",
            "ext_authz: status_on_error must be ServiceUnavailable".into(),
        );
        check(
            authz["grpc_service"]["envoy_grpc"]["cluster_name"].is_string(),
            "ext_authz: grpc_service.envoy_grpc.cluster_name".into(),
        );
        match authz["grpc_service"]["timeout"].as_str().map(duration_ms) {
            Some(ms) => check(
                ms > 250.0 && ms <= 2000.0,
                format!(
                    "ext_authz: timeout {ms} ms must exceed stepguard's 250 ms budget (and stay small)"
                ),
            ),
            None => check(false, "ext_authz: grpc_service.timeout must be set".into()),
        }
        let body = &authz["with_request_body"];
        check(
            body["max_request_bytes"]
                .as_u64()
                .is_some_and(|n| n >= 8192)
                && body["allow_partial_message"] == true,
            "ext_authz: with_request_body {max_request_bytes >= 8192, allow_partial_message: true}"
                .into(),
        );
        check(
            authz["include_peer_certificate"] == true,
            "ext_authz: include_peer_certificate".into(),
        );
        check(
            authz["metadata_context_namespaces"]
                .as_array()
                .is_some_and(|ns| ns.iter().any(|n| n == "envoy.filters.http.jwt_authn")),
            "ext_authz: metadata_context_namespaces must include envoy.filters.http.jwt_authn"
                .into(),
        );
    }

    // The stepguard gRPC cluster speaks HTTP/2.
    let clusters = doc["static_resources"]["clusters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let stepguard = clusters.iter().find(|c| c["name"] == "stepguard");
    check(
        stepguard.is_some_and(|c| {
            !c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
                ["explicit_http_config"]["http2_protocol_options"]
                .is_null()
        }),
        "cluster stepguard must use HTTP/2 (explicit_http_config.http2_protocol_options)".into(),
    );
    // A gRPC health check of stepguard names the Authorization service: the empty name only
    // says the process answers, not that a policy is active or that it is not draining.
    for health in stepguard
        .and_then(|c| c["health_checks"].as_array())
        .into_iter()
        .flatten()
    {
        if !health["grpc_health_check"].is_null() {
            check(
                health["grpc_health_check"]["service_name"] == AUTHZ_SERVICE,
                format!(
                    "cluster stepguard: grpc_health_check.service_name must be {AUTHZ_SERVICE}"
                ),
            );
        }
    }
    problems
}

/// The gRPC service (and health service name) Envoy calls.
const AUTHZ_SERVICE: &str = "envoy.service.auth.v3.Authorization";

#[test]
fn health_check_must_name_the_authorization_service() {
    let path = manifest_dir().join("deploy/envoy/sidecar.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let named = format!("service_name: {AUTHZ_SERVICE}");
    assert!(text.contains(&named), "sidecar.yaml health check drifted");
    assert!(security_problems(&parse(&text)).is_empty());
    for weakened in [
        text.replace(&named, "service_name: \"\""),
        text.replace(&named, "{}"),
    ] {
        let problems = security_problems(&parse(&weakened));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("grpc_health_check.service_name")),
            "a health check of service \"\" not reported: {problems:?}"
        );
    }
}

fn all_routes(hcm: &Value) -> Vec<&Value> {
    hcm["route_config"]["virtual_hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|vh| vh["routes"].as_array().into_iter().flatten())
        .collect()
}

#[test]
fn deploy_envoy_configs_keep_security_settings() {
    let mut failures = Vec::new();
    for path in envoy_bootstraps() {
        let problems = security_problems(&parse(&std::fs::read_to_string(&path).unwrap()));
        if !problems.is_empty() {
            failures.push(format!("{}:\n  {}", relative(&path), problems.join("\n  ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn generated_test_bootstrap_keeps_security_settings() {
    let cfg = EnvoyConfig::new(free_port(), free_port(), free_port());
    let problems = security_problems(&parse(&bootstrap(&cfg)));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn security_checks_catch_weakened_configs() {
    let cfg = EnvoyConfig::new(free_port(), free_port(), free_port());
    let good = bootstrap(&cfg);
    for (from, to, expect) in [
        (
            "failure_mode_allow: false",
            "failure_mode_allow: true",
            "failure_mode_allow",
        ),
        (
            "normalize_path: true",
            "normalize_path: false",
            "normalize_path",
        ),
        (
            "merge_slashes: true",
            "merge_slashes: false",
            "merge_slashes",
        ),
        (
            "path_with_escaped_slashes_action: REJECT_REQUEST",
            "path_with_escaped_slashes_action: KEEP_UNCHANGED",
            "escaped_slashes",
        ),
        ("timeout: 0.500s", "timeout: 0.200s", "250 ms"),
        (
            "allow_partial_message: true",
            "allow_partial_message: false",
            "with_request_body",
        ),
        (
            "code: ServiceUnavailable",
            "code: Forbidden",
            "status_on_error",
        ),
        ("disabled: true", "disabled: false", "/.stepguard/"),
        (
            "- envoy.filters.http.jwt_authn",
            "- some.other.namespace",
            "metadata_context",
        ),
        (
            "http2_protocol_options: {}",
            "http_protocol_options: {}",
            "HTTP/2",
        ),
    ] {
        assert!(good.contains(from), "test fixture drifted: {from}");
        let problems = security_problems(&parse(&good.replacen(from, to, 1)));
        assert!(
            problems.iter().any(|p| p.contains(expect)),
            "weakening `{from}` → `{to}` not reported (wanted {expect:?}): {problems:?}"
        );
    }
}

#[test]
fn route_tags_become_context_extensions() {
    for path in REQUIRED {
        let doc = parse(&std::fs::read_to_string(manifest_dir().join(path)).unwrap());
        let tagged = all_typed(&doc, ".ExtAuthzPerRoute")
            .into_iter()
            .filter_map(|c| c["check_settings"]["context_extensions"]["stepguard.action"].as_str())
            .collect::<Vec<_>>();
        assert_eq!(tagged, ["payments.approve"], "{path}");
    }
    let cfg = EnvoyConfig::new(free_port(), free_port(), free_port());
    let doc = parse(&bootstrap_with_tags(
        &cfg,
        &[RouteTag::new("/a", "x.y"), RouteTag::new("/b", "z")],
    ));
    let tagged = all_typed(&doc, ".ExtAuthzPerRoute")
        .into_iter()
        .filter_map(|c| c["check_settings"]["context_extensions"]["stepguard.action"].as_str())
        .collect::<Vec<_>>();
    assert_eq!(tagged, ["x.y", "z"]);
}

// ---------------------------------------------------------------------------
// The Envoy parts of the Istio EnvoyFilters are real Envoy config too: apply
// their patches to the generated bootstrap (roughly as istiod would) and let
// Envoy validate the result, so a misspelt proto field fails here and not in a
// cluster.

/// Every `EnvoyFilter` document in deploy/istio/, with its file name.
fn istio_envoy_filters() -> Vec<(String, Value)> {
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
fn merge(into: &mut Value, from: &Value) {
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

fn static_cluster(name: &str, port: u16) -> Value {
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
fn apply_envoy_filter(filter: &Value) -> Result<Value, String> {
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
fn istio_envoy_filter_patches_are_valid_envoy_config() {
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

// ---------------------------------------------------------------------------
// The harness itself, against the real Envoy, with no stepguard running.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_envoy_fails_closed_without_stepguard() {
    let upstream = EchoUpstream::start();
    // Stands in for stepguard's HTTP port, to see the callback route bypass ext_authz.
    let authz_http = EchoUpstream::start();
    // Nothing listens on the gRPC port: every Check fails to connect.
    let cfg = EnvoyConfig::new(free_port(), authz_http.port(), upstream.port());
    let envoy = Envoy::start(&cfg);
    let client = reqwest::Client::new();

    // Sanity: the echo upstream answers directly.
    let direct = client
        .get(format!("{}/v1/x?y=1", upstream.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 200);
    let echoed: Value = serde_json::from_str(&direct.text().await.unwrap()).unwrap();
    assert_eq!(echoed["method"], "GET");
    assert_eq!(echoed["path"], "/v1/x");
    assert_eq!(echoed["query"], "y=1");
    assert!(echoed["headers"]["host"].is_string(), "{echoed}");
    assert_eq!(upstream.hits(), 1);

    // ext_authz unreachable → 503, nothing reaches the app (fail closed).
    for (method, path) in [
        ("GET", "/public/index.html"),
        ("POST", "/v1/accounts/a1/transfers"),
        ("POST", "/v1/payments/p1/approve"),
        ("GET", "/elsewhere"),
    ] {
        let response = client
            .request(method.parse().unwrap(), envoy.url(path))
            .body("{\"amount\":\"10.00\"}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503, "{method} {path}");
    }
    assert_eq!(
        upstream.hits(),
        1,
        "a request reached the app although stepguard was down"
    );
    assert!(envoy.stat("http.ingress_http.ext_authz.error").unwrap_or(0) >= 4);
    // The same counters as Prometheus sees them, under the names the alert rules use.
    let exposition = envoy.admin_get("/stats/prometheus");
    let errors = exposition
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "envoy_http_ext_authz_error{envoy_http_conn_manager_prefix=\"ingress_http\"} ",
            )
        })
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(errors >= Some(4), "{exposition}");
    let rules: Value = yaml_serde::from_str(
        &std::fs::read_to_string(manifest_dir().join("deploy/prometheus/stepguard-rules.yaml"))
            .unwrap(),
    )
    .unwrap();
    let exprs: Vec<&str> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r["expr"].as_str())
        .collect();
    let used: std::collections::BTreeSet<&str> = exprs
        .iter()
        .flat_map(|e| e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|w| w.starts_with("envoy_"))
        .collect();
    assert!(used.len() >= 4, "{used:?}");
    for name in used {
        assert!(
            exposition.contains(&format!("# TYPE {name} ")),
            "the alert rules use {name}, which Envoy does not export"
        );
    }

    // Escaped slashes are refused before any filter runs.
    let response = client
        .get(envoy.url("/v1/payments%2Fp1/approve"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // The callback route bypasses ext_authz and reaches stepguard's HTTP port.
    let response = client
        .get(envoy.url("/.stepguard/callback?code=abc&state=xyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echoed: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(echoed["path"], "/.stepguard/callback");
    assert_eq!(authz_http.hits(), 1);
    assert_eq!(upstream.hits(), 1);
}

/// The load driver's bootstraps (`examples/harness.rs envoy`, used by `scripts/load.sh`): the
/// quickstart's direct responses behind stepguard, behind any ext_authz server, and behind none.
#[test]
fn load_driver_bootstraps_pass_envoy_validate() {
    use stepguard::testkit::envoy::{Authz, Bootstrap, Routes};
    for (authz, http) in [(false, false), (true, false), (true, true)] {
        let yaml = Bootstrap {
            listener_port: free_port(),
            admin_port: free_port(),
            authz: authz.then(|| Authz {
                grpc_port: free_port(),
                http_port: http.then(free_port),
                timeout_ms: 500,
            }),
            routes: Routes::Demo,
            otlp_port: None,
        }
        .yaml();
        if let Err(output) = envoy::validate_yaml(&yaml) {
            panic!("load bootstrap (authz {authz}, http {http}) is invalid:\n{output}\n{yaml}");
        }
    }
}
