use super::*;

fn hcm(doc: &Value) -> &Value {
    &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
}

#[test]
fn the_test_bootstrap_keeps_the_templates_settings_and_takes_the_ports() {
    let cfg = EnvoyConfig {
        listener_port: 1001,
        admin_port: 1002,
        authz_grpc_port: 1003,
        authz_http_port: 1004,
        upstream_port: 1005,
        timeout_ms: 1250,
    };
    let doc = Bootstrap::from(&cfg).value();
    let template = template();
    for key in [
        "normalize_path",
        "merge_slashes",
        "path_with_escaped_slashes_action",
    ] {
        assert_eq!(hcm(&doc)[key], hcm(&template)[key], "{key}");
    }
    let authz = &hcm(&doc)["http_filters"][0];
    assert_eq!(authz["name"], EXT_AUTHZ);
    assert_eq!(authz["typed_config"]["failure_mode_allow"], false);
    assert_eq!(authz["typed_config"]["grpc_service"]["timeout"], "1.250s");
    let ports: Vec<(String, u64)> = doc["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let addr = &c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
                ["address"]["socket_address"];
            (c["name"].as_str().unwrap().to_string(), addr["port_value"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("stepguard".into(), 1003),
            ("stepguard_http".into(), 1004),
            ("upstream".into(), 1005)
        ]
    );
    let routes = hcm(&doc)["route_config"]["virtual_hosts"][0]["routes"]
        .as_array()
        .unwrap();
    assert_eq!(routes[0]["match"]["prefix"], "/.stepguard/");
    assert_eq!(
        routes[1]["typed_per_filter_config"][EXT_AUTHZ]["check_settings"]["context_extensions"]["stepguard.action"],
        "payments.approve"
    );
    assert_eq!(routes.len(), 5);
}

#[test]
fn a_baseline_has_no_ext_authz_anywhere() {
    let b = Bootstrap {
        listener_port: 1,
        admin_port: 2,
        authz: None,
        routes: Routes::Demo,
        otlp_port: None,
    };
    let yaml = b.yaml();
    assert!(!yaml.contains("ext_authz"), "{yaml}");
    assert!(!yaml.contains("stepguard_http"), "{yaml}");
    assert!(
        yaml.contains("transferred"),
        "the quickstart's direct responses stay: {yaml}"
    );
}
