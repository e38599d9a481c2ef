use super::*;

fn raw(path: &str) -> RawRequest {
    RawRequest {
        method: "POST".into(),
        host: "API.example.com".into(),
        path: path.into(),
        ..Default::default()
    }
}

#[test]
fn normalizes_method_host_segments_and_query() {
    let mut r = raw("/v1/a%20b//c?x=1&y=%2F&x=2");
    r.method = "post".into();
    let req = AuthzRequest::new(r, 16).unwrap();
    assert_eq!(req.method, "POST");
    assert_eq!(req.host, "api.example.com");
    assert_eq!(req.segments, ["v1", "a b", "c"]);
    assert_eq!(req.query_param("x"), Some("1"));
    assert_eq!(req.query_param("y"), Some("/"));
    assert_eq!(req.path_only(), "/v1/a%20b//c");
}

#[test]
fn reserved_headers_are_never_visible() {
    let mut r = raw("/");
    r.headers
        .insert("x-stepguard-subject".into(), "admin".into());
    r.headers.insert("accept".into(), "text/html".into());
    assert_eq!(reserved_names(&r.headers), ["x-stepguard-subject"]);
    let req = AuthzRequest::new(r, 16).unwrap();
    assert_eq!(req.header("x-stepguard-subject"), None);
    assert!(req.is_browser());
}

#[test]
fn ambiguous_paths_are_refused() {
    for path in [
        "/v1/a%2Fb",
        "/v1/a%5cb",
        "/v1/%2e%2e/x",
        "/v1/../x",
        "/v1/./x",
        "/a%00b",
        "/a%ff",
    ] {
        assert!(
            matches!(
                AuthzRequest::new(raw(path), 16),
                Err(RequestError::AmbiguousPath(_))
            ),
            "{path}"
        );
    }
}

#[test]
fn long_paths_are_refused_in_bounded_time() {
    let path = "/a".repeat(10_000);
    let started = std::time::Instant::now();
    assert_eq!(
        AuthzRequest::new(raw(&path), 128).unwrap_err(),
        RequestError::PathTooLong(128)
    );
    assert!(started.elapsed() < std::time::Duration::from_millis(50));
}

#[test]
fn non_http_requests_are_refused() {
    assert_eq!(
        AuthzRequest::new(RawRequest::default(), 8).unwrap_err(),
        RequestError::NotHttp
    );
}

#[test]
fn bodies_parse_by_content_type() {
    let mut r = raw("/");
    r.headers.insert(
        "content-type".into(),
        "application/json; charset=utf-8".into(),
    );
    r.body = br#"{"amount": 10}"#.to_vec();
    assert_eq!(
        AuthzRequest::new(r.clone(), 8).unwrap().body().clone(),
        Body::Json(serde_json::json!({"amount": 10}))
    );
    r.body = b"{not json".to_vec();
    assert!(matches!(
        AuthzRequest::new(r.clone(), 8).unwrap().body().clone(),
        Body::Invalid(JsonProblem::Syntax(_))
    ));
    r.headers.insert(
        "content-type".into(),
        "application/x-www-form-urlencoded".into(),
    );
    r.body = b"amount=10&payee=bob".to_vec();
    let Body::Form(pairs) = AuthzRequest::new(r.clone(), 8).unwrap().body().clone() else {
        panic!()
    };
    assert_eq!(pairs[1], ("payee".into(), "bob".into()));
    r.headers.insert("content-length".into(), "19".into());
    assert!(matches!(
        AuthzRequest::new(r.clone(), 8).unwrap().body().clone(),
        Body::Form(_)
    ));
    r.headers.insert("content-length".into(), "70000".into());
    assert_eq!(
        AuthzRequest::new(r.clone(), 8).unwrap().body().clone(),
        Body::Truncated,
        "declared longer than received"
    );
    r.headers.insert("content-length".into(), "19".into());
    r.headers
        .insert("x-envoy-auth-partial-body".into(), "true".into());
    assert_eq!(
        AuthzRequest::new(r, 8).unwrap().body().clone(),
        Body::Truncated
    );
}

#[test]
fn check_request_json_is_read_in_both_spellings() {
    let camel = serde_json::json!({"attributes": {
        "source": {"address": {"socketAddress": {"address": "10.0.0.1", "portValue": 4000}}, "principal": "spiffe://d/w"},
        "request": {"http": {"method": "POST", "path": "/p", "host": "h", "headers": {"Accept": "x"}, "body": "{}"}},
        "contextExtensions": {"stepguard.action": "a"},
        "metadataContext": {"filterMetadata": {"envoy.filters.http.jwt_authn": {"jwt_payload": {"sub": "s"}}}}
    }});
    let r = RawRequest::from_check_json(&camel).unwrap();
    assert_eq!(r.source_address.as_deref(), Some("10.0.0.1"));
    assert_eq!(r.source_port, Some(4000));
    assert_eq!(r.source_principal.as_deref(), Some("spiffe://d/w"));
    assert_eq!(r.headers["accept"], "x");
    assert_eq!(r.context_extensions["stepguard.action"], "a");
    assert_eq!(
        r.filter_metadata["envoy.filters.http.jwt_authn"]["jwt_payload"]["sub"],
        "s"
    );
    let snake = serde_json::json!({"attributes": {"request": {"http": {"method": "GET", "path": "/"}}, "context_extensions": {"k": "v"}}});
    assert_eq!(
        RawRequest::from_check_json(&snake)
            .unwrap()
            .context_extensions["k"],
        "v"
    );
    assert!(RawRequest::from_check_json(&serde_json::json!({})).is_err());
}
