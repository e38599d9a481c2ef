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

mod istio;
mod security;

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
