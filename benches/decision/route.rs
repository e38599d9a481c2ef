//! `route_classify`: `RouteTable::classify` on a 20-action table, public and sensitive paths.

use std::hint::black_box;

use criterion::Criterion;
use stepguard::config::{ActionConfig, BindSpec, Config, MatchConfig, Risk};
use stepguard::request::AuthzRequest;
use stepguard::route::{BindField, Classification, PathTemplate, RouteTable};

use super::{configure, raw, transfer};

/// The quickstart's 4 actions plus 16 more of the same shapes: a 20-action table.
fn twenty_actions(config: &Config) -> Vec<ActionConfig> {
    let mut actions = config.actions.clone();
    let methods = ["POST", "PUT", "DELETE", "PATCH"];
    let mut i = 0;
    while actions.len() < 20 {
        actions.push(ActionConfig {
            name: format!("svc{i}.op"),
            matcher: Some(MatchConfig {
                methods: vec![methods[i % methods.len()].to_string()],
                host: None,
                path: PathTemplate::parse(&match i % 4 {
                    0 => format!("/v1/svc{i}/{{id}}/op"),
                    1 => format!("/v2/accounts/{{account}}/svc{i}/{{item}}"),
                    2 => format!("/v1/accounts/{{account}}/svc{i}"),
                    _ => format!("/admin/svc{i}/**"),
                })
                .unwrap(),
            }),
            risk: if i % 3 == 0 {
                Risk::Critical
            } else {
                Risk::High
            },
            reversible: true,
            privileged: false,
            bind: vec![BindSpec::Declared {
                field: BindField::parse("path.id").unwrap(),
                optional: true,
            }],
            body: Default::default(),
            value: None,
            currency: None,
            authorization_details_type: None,
            after_approval: Default::default(),
            mode: Default::default(),
        });
        i += 1;
    }
    actions
}

pub fn bench_route(c: &mut Criterion, config: &Config) {
    let table = RouteTable::new(&twenty_actions(config));
    let public = AuthzRequest::new(raw("GET", "/public/hello", None, ""), 128).expect("public");
    let sensitive = AuthzRequest::new(transfer("t"), 128).expect("sensitive request normalizes");
    assert!(matches!(
        table.classify(&public),
        Ok(Classification::Public)
    ));
    assert!(matches!(
        table.classify(&sensitive),
        Ok(Classification::Sensitive { ref action, .. }) if action.name == "payments.transfer"
    ));
    let mut g = c.benchmark_group("route_classify");
    configure(&mut g);
    g.bench_function("public_get_20_actions", |b| {
        b.iter(|| table.classify(black_box(&public)))
    });
    g.bench_function("sensitive_post_20_actions", |b| {
        b.iter(|| table.classify(black_box(&sensitive)))
    });
    g.finish();
}
