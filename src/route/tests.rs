use super::*;
use crate::config::Config;
use crate::request::RawRequest;

fn table(yaml_actions: &str) -> RouteTable {
    let configs: Vec<ActionConfig> = yaml_serde::from_str(yaml_actions).unwrap();
    RouteTable::new(&configs)
}

fn req(method: &str, host: &str, path: &str, tag: Option<&str>) -> AuthzRequest {
    let mut raw = RawRequest {
        method: method.into(),
        host: host.into(),
        path: path.into(),
        ..Default::default()
    };
    if let Some(tag) = tag {
        raw.context_extensions.insert(ACTION_TAG.into(), tag.into());
    }
    AuthzRequest::new(raw, 64).unwrap()
}

const ACTIONS: &str = r#"
- name: accounts.any
  match: {path: "/v1/accounts/**"}
  risk: low
- name: payments.transfer
  match: {methods: [POST], path: "/v1/accounts/{account}/transfers"}
  risk: high
- name: payments.transfer_internal
  match: {methods: [POST], path: "/v1/accounts/internal/transfers"}
  risk: medium
- name: admin.all
  match: {host: "*.admin.example.com", path: "/**"}
  risk: critical
- name: payments.approve
  risk: high
- name: reports.view
  risk: low
"#;

fn name(c: Classification) -> Option<String> {
    match c {
        Classification::Public => None,
        Classification::Sensitive { action, .. } => Some(action.name.clone()),
    }
}

#[test]
fn templates_parse_and_reject_bad_forms() {
    assert!(PathTemplate::parse("/a/{b}/c/**").is_ok());
    for bad in ["a/b", "/a/**/b", "/{}", "/{a}/{a}", "/a{b}", "/a*"] {
        assert!(PathTemplate::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn most_specific_match_wins() {
    let t = table(ACTIONS);
    let c = t
        .classify(&req("POST", "api", "/v1/accounts/internal/transfers", None))
        .unwrap();
    assert_eq!(name(c).as_deref(), Some("payments.transfer_internal"));
    let c = t
        .classify(&req("POST", "api", "/v1/accounts/A1/transfers", None))
        .unwrap();
    let Classification::Sensitive { action, params } = c else {
        panic!()
    };
    assert_eq!(action.name, "payments.transfer");
    assert_eq!(params["account"], "A1");
    let c = t
        .classify(&req("GET", "api", "/v1/accounts/A1/transfers", None))
        .unwrap();
    assert_eq!(
        name(c).as_deref(),
        Some("accounts.any"),
        "method filter falls back to prefix"
    );
}

#[test]
fn unmatched_routes_are_public() {
    let t = table(ACTIONS);
    assert!(name(t.classify(&req("GET", "api", "/public/x", None)).unwrap()).is_none());
    assert!(name(t.classify(&req("GET", "api", "/v1/account", None)).unwrap()).is_none());
}

#[test]
fn prefix_matches_whole_segments_and_trailing_slashes_do_not_evade() {
    let t = table(ACTIONS);
    assert!(
        name(
            t.classify(&req("GET", "api", "/v1/accountsX/1", None))
                .unwrap()
        )
        .is_none()
    );
    let c = t
        .classify(&req("POST", "api", "/v1//accounts/A1/transfers/", None))
        .unwrap();
    assert_eq!(name(c).as_deref(), Some("payments.transfer"));
}

#[test]
fn host_wildcards_match_subdomains_only() {
    let t = table(ACTIONS);
    let c = t
        .classify(&req("GET", "Ops.Admin.Example.com:443", "/x", None))
        .unwrap();
    assert_eq!(name(c).as_deref(), Some("admin.all"));
    assert!(
        name(
            t.classify(&req("GET", "admin.example.com", "/x", None))
                .unwrap()
        )
        .is_none()
    );
    assert!(
        name(
            t.classify(&req("GET", "evil-admin.example.com", "/x", None))
                .unwrap()
        )
        .is_none()
    );
}

#[test]
fn route_tags_add_sensitivity_but_never_lower_it() {
    let t = table(ACTIONS);
    let c = t
        .classify(&req(
            "POST",
            "api",
            "/v1/payments/9/approve",
            Some("payments.approve"),
        ))
        .unwrap();
    assert_eq!(name(c).as_deref(), Some("payments.approve"));
    let c = t
        .classify(&req(
            "POST",
            "api",
            "/v1/accounts/A1/transfers",
            Some("reports.view"),
        ))
        .unwrap();
    assert_eq!(
        name(c).as_deref(),
        Some("payments.transfer"),
        "lower-risk tag ignored"
    );
    let c = t
        .classify(&req(
            "GET",
            "api",
            "/v1/accounts/A1",
            Some("payments.approve"),
        ))
        .unwrap();
    assert_eq!(
        name(c).as_deref(),
        Some("payments.approve"),
        "higher-risk tag wins"
    );
}

#[test]
fn unknown_tag_is_an_error() {
    let t = table(ACTIONS);
    let err = t
        .classify(&req("GET", "api", "/x", Some("nope")))
        .unwrap_err();
    assert_eq!(err, RouteError::UnknownTag("nope".into()));
}

#[test]
fn bind_fields_parse() {
    assert_eq!(
        BindField::parse("body.payee.iban"),
        Ok(BindField::Body(vec!["payee".into(), "iban".into()]))
    );
    assert_eq!(
        BindField::parse("header.x-id").unwrap().name(),
        "header.x-id"
    );
    assert!(BindField::parse("cookie.x").is_err());
    assert!(BindField::parse("header.X-Id").is_err());
    assert!(BindField::parse("query.").is_err());
    let _ = Config::parse; // the table is built only from validated config
}

const EDGES: &str = r#"
- name: payments.view
  match: {methods: [GET], host: "api.example.com", path: "/v1/payments/{payment}"}
  risk: low
  bind: [path.payment]
- name: payments.cancel
  match: {methods: [DELETE], host: "api.example.com", path: "/v1/payments/{payment}"}
  risk: critical
  bind: [path.payment]
- name: payments.approve
  match: {methods: [POST], path: "/v1/payments/{payment}/approve"}
  risk: critical
  bind: [path.payment]
"#;

fn params(c: &Classification) -> HashMap<String, String> {
    match c {
        Classification::Public => HashMap::new(),
        Classification::Sensitive { params, .. } => params.clone(),
    }
}

#[test]
fn host_is_compared_without_trailing_dot_and_case() {
    let t = table(EDGES);
    for host in [
        "api.example.com",
        "API.Example.COM",
        "api.example.com.",
        "api.example.com.:443",
    ] {
        let c = t
            .classify(&req("GET", host, "/v1/payments/p1", None))
            .unwrap();
        assert_eq!(name(c).as_deref(), Some("payments.view"), "{host}");
    }
    let c = t.classify(&req("GET", "api.example.com.evil", "/v1/payments/p1", None));
    assert_eq!(name(c.unwrap()), None);
    let wild = table(ACTIONS);
    let c = wild
        .classify(&req("GET", "X.Admin.Example.Com.", "/x", None))
        .unwrap();
    assert_eq!(name(c).as_deref(), Some("admin.all"));
}

#[test]
fn head_matches_actions_declared_for_get() {
    let t = table(EDGES);
    let c = t
        .classify(&req("HEAD", "api.example.com", "/v1/payments/p1", None))
        .unwrap();
    assert_eq!(name(c).as_deref(), Some("payments.view"));
}

#[test]
fn a_method_override_is_classified_and_the_riskier_wins() {
    let t = table(EDGES);
    for header in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        let mut r = req("GET", "api.example.com", "/v1/payments/p1", None);
        r.raw.headers.insert(header.into(), "delete".into());
        let c = t.classify(&r).unwrap();
        assert_eq!(params(&c)["payment"], "p1");
        assert_eq!(name(c).as_deref(), Some("payments.cancel"), "{header}");
    }
    // A POST to a route only declared for DELETE, overridden to DELETE, is sensitive.
    let mut r = req("POST", "api.example.com", "/v1/payments/p1", None);
    r.raw
        .headers
        .insert("x-http-method-override".into(), "DELETE".into());
    assert_eq!(
        name(t.classify(&r).unwrap()).as_deref(),
        Some("payments.cancel")
    );
    // An override to a less risky method does not lower the request's own match.
    let mut r = req("DELETE", "api.example.com", "/v1/payments/p1", None);
    r.raw
        .headers
        .insert("x-http-method-override".into(), "GET".into());
    assert_eq!(
        name(t.classify(&r).unwrap()).as_deref(),
        Some("payments.cancel")
    );
}

#[test]
fn a_deciding_tag_binds_its_own_path_parameters() {
    let t = table(EDGES);
    // Tag alone: its own template gives the parameters.
    let c = t
        .classify(&req(
            "POST",
            "h",
            "/v1/payments/p7/approve",
            Some("payments.approve"),
        ))
        .unwrap();
    assert_eq!(params(&c)["payment"], "p7");
    // The table matches a low-risk action; the tag names a riskier one with its own template.
    let c = t
        .classify(&req(
            "GET",
            "api.example.com",
            "/v1/payments/p9",
            Some("payments.cancel"),
        ))
        .unwrap();
    assert_eq!(params(&c)["payment"], "p9");
    assert_eq!(name(c).as_deref(), Some("payments.cancel"));
    // A request the tagged action's template does not fit has no parameters (binding refuses).
    let c = t
        .classify(&req("POST", "h", "/other/route", Some("payments.approve")))
        .unwrap();
    assert!(params(&c).is_empty());
    assert_eq!(name(c).as_deref(), Some("payments.approve"));
}
