//! The settings that keep classification un-evadable and the filter fail-closed.

use super::*;

pub(super) fn parse(yaml: &str) -> Value {
    yaml_serde::from_str::<Value>(yaml).expect("parse YAML")
}

/// Every JSON object anywhere in `value` whose `@type` ends with `suffix`.
pub(super) fn typed<'a>(value: &'a Value, suffix: &str, out: &mut Vec<&'a Value>) {
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

pub(super) fn all_typed<'a>(value: &'a Value, suffix: &str) -> Vec<&'a Value> {
    let mut out = Vec::new();
    typed(value, suffix, &mut out);
    out
}

pub(super) fn duration_ms(text: &str) -> f64 {
    let secs: f64 = text
        .strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a protobuf duration: {text}"));
    secs * 1000.0
}

/// Problems with one parsed bootstrap, as readable strings.
pub(super) fn security_problems(doc: &Value) -> Vec<String> {
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
pub(super) const AUTHZ_SERVICE: &str = "envoy.service.auth.v3.Authorization";

#[test]
pub(super) fn health_check_must_name_the_authorization_service() {
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

pub(super) fn all_routes(hcm: &Value) -> Vec<&Value> {
    hcm["route_config"]["virtual_hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|vh| vh["routes"].as_array().into_iter().flatten())
        .collect()
}

#[test]
pub(super) fn deploy_envoy_configs_keep_security_settings() {
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
pub(super) fn generated_test_bootstrap_keeps_security_settings() {
    let cfg = EnvoyConfig::new(free_port(), free_port(), free_port());
    let problems = security_problems(&parse(&bootstrap(&cfg)));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
pub(super) fn security_checks_catch_weakened_configs() {
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
pub(super) fn route_tags_become_context_extensions() {
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
