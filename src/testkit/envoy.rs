//! Envoy bootstraps for tests and the load driver, all from one template: the quickstart's own
//! `deploy/local/envoy.yaml`. Every generated bootstrap keeps its path handling (normalised,
//! merged slashes, escaped slashes refused) and its ext_authz settings (fail closed, 503 on
//! error, the body for binding); a run changes only ports, the ext_authz timeout, where requests
//! go (the quickstart's direct responses, or a real upstream with route tags), and extras such
//! as Envoy's OpenTelemetry tracer.

use serde_json::{Value, json};

use super::config::DIR;
use super::ports::free_port;

const EXT_AUTHZ: &str = "envoy.filters.http.ext_authz";

/// Ports and timeout of one generated bootstrap in front of stepguard and a real upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvoyConfig {
    /// Plain-HTTP listener on 127.0.0.1 that tests send requests to.
    pub listener_port: u16,
    /// Envoy admin on 127.0.0.1 (`/ready`, `/stats`, ...).
    pub admin_port: u16,
    /// stepguard's gRPC port (ext_authz `Check`, HTTP/2).
    pub authz_grpc_port: u16,
    /// stepguard's HTTP port (`/.stepguard/callback`, health, metrics).
    pub authz_http_port: u16,
    /// The application upstream (e.g. an echo server).
    pub upstream_port: u16,
    /// ext_authz gRPC timeout in milliseconds (500 in the deploy configs).
    pub timeout_ms: u64,
}

impl EnvoyConfig {
    /// Fresh free listener and admin ports, a 500 ms ext_authz timeout.
    pub fn new(authz_grpc_port: u16, authz_http_port: u16, upstream_port: u16) -> Self {
        Self {
            listener_port: free_port(),
            admin_port: free_port(),
            authz_grpc_port,
            authz_http_port,
            upstream_port,
            timeout_ms: 500,
        }
    }
}

/// A route tagged with `context_extensions`, the way a service owner tags a route in
/// Envoy/Istio (`stepguard.action: <action>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTag {
    /// RE2 regex matched against the whole path (query excluded).
    pub path_regex: String,
    /// Value of the `stepguard.action` context extension.
    pub action: String,
}

impl RouteTag {
    pub fn new(path_regex: impl Into<String>, action: impl Into<String>) -> Self {
        Self {
            path_regex: path_regex.into(),
            action: action.into(),
        }
    }
}

/// The route tags every generated test bootstrap has.
pub fn default_route_tags() -> Vec<RouteTag> {
    vec![RouteTag::new(
        "/v1/payments/[^/]+/approve",
        "payments.approve",
    )]
}

/// Where the listener's requests go.
#[derive(Debug, Clone)]
pub enum Routes {
    /// The quickstart's direct responses (what the load driver measures).
    Demo,
    /// A real upstream on 127.0.0.1:`port`; `tags` become tagged routes after `/.stepguard/`
    /// and before the untagged `/public`, `/v1/` and `/` (first match wins).
    Upstream { port: u16, tags: Vec<RouteTag> },
}

/// The ext_authz server a bootstrap calls.
#[derive(Debug, Clone, Copy)]
pub struct Authz {
    /// Its gRPC port (stepguard's, or any ext_authz server's).
    pub grpc_port: u16,
    /// stepguard's HTTP port, routed at `/.stepguard/` (None: no such route).
    pub http_port: Option<u16>,
    /// The ext_authz gRPC timeout in milliseconds.
    pub timeout_ms: u64,
}

/// One bootstrap: the template with these changes.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub listener_port: u16,
    pub admin_port: u16,
    /// None: no ext_authz filter at all (a baseline).
    pub authz: Option<Authz>,
    pub routes: Routes,
    /// Envoy's OpenTelemetry tracer exporting every request's span to 127.0.0.1:`port`.
    pub otlp_port: Option<u16>,
}

/// The template, parsed (its YAML aliases resolved).
pub fn template() -> Value {
    let text = std::fs::read_to_string(format!("{DIR}/envoy.yaml")).unwrap();
    yaml_serde::from_str(&text).unwrap()
}

impl Bootstrap {
    /// The bootstrap as a document.
    pub fn value(&self) -> Value {
        let mut doc = template();
        doc["admin"]["address"]["socket_address"]["port_value"] = json!(self.admin_port);
        let listener = &mut doc["static_resources"]["listeners"][0];
        listener["address"]["socket_address"]["port_value"] = json!(self.listener_port);
        let hcm = &mut listener["filter_chains"][0]["filters"][0]["typed_config"];
        let filters = hcm["http_filters"].as_array_mut().unwrap();
        match self.authz {
            Some(authz) => {
                let filter = filters.iter_mut().find(|f| f["name"] == EXT_AUTHZ).unwrap();
                filter["typed_config"]["grpc_service"]["timeout"] = json!(format!(
                    "{}.{:03}s",
                    authz.timeout_ms / 1000,
                    authz.timeout_ms % 1000
                ));
            }
            None => filters.retain(|f| f["name"] != EXT_AUTHZ),
        }
        let routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
            .as_array_mut()
            .unwrap();
        let own = routes.remove(0);
        assert_eq!(
            own["match"]["prefix"], "/.stepguard/",
            "the template's first route"
        );
        if let Routes::Upstream { tags, .. } = &self.routes {
            routes.clear();
            for tag in tags {
                routes.push(json!({
                    "match": {"safe_regex": {"regex": tag.path_regex}},
                    "route": {"cluster": "upstream"},
                    "typed_per_filter_config": {EXT_AUTHZ: {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
                        "check_settings": {"context_extensions": {"stepguard.action": tag.action}},
                    }},
                }));
            }
            for prefix in ["/public", "/v1/", "/"] {
                routes.push(json!({"match": {"prefix": prefix}, "route": {"cluster": "upstream"}}));
            }
        }
        let with_http = matches!(
            self.authz,
            Some(Authz {
                http_port: Some(_),
                ..
            })
        );
        if with_http {
            routes.insert(0, own);
        }
        if self.authz.is_none() {
            for route in routes.iter_mut() {
                if let Some(per_filter) = route["typed_per_filter_config"].as_object_mut() {
                    per_filter.remove(EXT_AUTHZ);
                    if per_filter.is_empty() {
                        route
                            .as_object_mut()
                            .unwrap()
                            .remove("typed_per_filter_config");
                    }
                }
            }
        }
        if self.otlp_port.is_some() {
            hcm["tracing"] = json!({
                "random_sampling": {"value": 100},
                "provider": {
                    "name": "envoy.tracers.opentelemetry",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                        "service_name": "envoy-test",
                        "grpc_service": {"envoy_grpc": {"cluster_name": "otel_collector"}, "timeout": "1s"},
                    },
                },
            });
            doc["layered_runtime"] = json!({"layers": [{"name": "otel", "static_layer": {
                "tracing.opentelemetry.min_flush_spans": 1,
                "tracing.opentelemetry.flush_interval_ms": 100,
            }}]});
        }
        self.clusters(doc["static_resources"]["clusters"].as_array_mut().unwrap());
        doc
    }

    fn clusters(&self, clusters: &mut Vec<Value>) {
        let h2 = clusters
            .iter()
            .find(|c| c["name"] == "stepguard")
            .unwrap()
            .clone();
        let plain = clusters
            .iter()
            .find(|c| c["name"] == "stepguard_http")
            .unwrap()
            .clone();
        clusters.clear();
        let mut add = |template: &Value, name: &str, port: u16| {
            let mut cluster = template.clone();
            cluster["name"] = json!(name);
            cluster["load_assignment"]["cluster_name"] = json!(name);
            cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"]["port_value"] = json!(port);
            clusters.push(cluster);
        };
        if let Some(authz) = self.authz {
            add(&h2, "stepguard", authz.grpc_port);
            if let Some(http) = authz.http_port {
                add(&plain, "stepguard_http", http);
            }
        }
        if let Routes::Upstream { port, .. } = self.routes {
            add(&plain, "upstream", port);
        }
        if let Some(port) = self.otlp_port {
            add(&h2, "otel_collector", port);
        }
    }

    /// The bootstrap as YAML text.
    pub fn yaml(&self) -> String {
        format!(
            "# Generated by stepguard's testkit (src/testkit/envoy.rs) from deploy/local/envoy.yaml.\n{}",
            yaml_serde::to_string(&self.value()).unwrap()
        )
    }
}

impl From<&EnvoyConfig> for Bootstrap {
    fn from(cfg: &EnvoyConfig) -> Self {
        Bootstrap {
            listener_port: cfg.listener_port,
            admin_port: cfg.admin_port,
            authz: Some(Authz {
                grpc_port: cfg.authz_grpc_port,
                http_port: Some(cfg.authz_http_port),
                timeout_ms: cfg.timeout_ms,
            }),
            routes: Routes::Upstream {
                port: cfg.upstream_port,
                tags: default_route_tags(),
            },
            otlp_port: None,
        }
    }
}

/// The test bootstrap for `cfg`, with the default route tags.
pub fn bootstrap(cfg: &EnvoyConfig) -> String {
    Bootstrap::from(cfg).yaml()
}

/// The test bootstrap for `cfg`; `tags` become tagged routes, in the given order.
pub fn bootstrap_with_tags(cfg: &EnvoyConfig, tags: &[RouteTag]) -> String {
    let mut b = Bootstrap::from(cfg);
    if let Routes::Upstream { tags: t, .. } = &mut b.routes {
        *t = tags.to_vec();
    }
    b.yaml()
}

/// The test bootstrap for `cfg` with Envoy's OpenTelemetry tracer exporting to `otlp_port`
/// (every request sampled, spans flushed one by one).
pub fn traced_bootstrap(cfg: &EnvoyConfig, otlp_port: u16) -> String {
    let mut b = Bootstrap::from(cfg);
    b.otlp_port = Some(otlp_port);
    b.yaml()
}

#[cfg(test)]
mod tests;
