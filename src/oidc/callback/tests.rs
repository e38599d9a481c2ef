use super::*;

#[test]
fn cookies_are_found_by_exact_name() {
    let mut h = HeaderMap::new();
    h.append(
        header::COOKIE,
        HeaderValue::from_static("a=1; __Host-stepguard-abc=v1; __Host-stepguard-abcd=v2"),
    );
    h.append(header::COOKIE, HeaderValue::from_static("b=2"));
    assert_eq!(cookie(&h, "__Host-stepguard-abc"), Some("v1"));
    assert_eq!(cookie(&h, "__Host-stepguard-abcd"), Some("v2"));
    assert_eq!(cookie(&h, "b"), Some("2"));
    assert_eq!(cookie(&h, "__Host-stepguard-ab"), None);
}

#[test]
fn pages_escape_and_never_cache() {
    let r = page(StatusCode::FORBIDDEN, "x<y", "a & <b>");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let h = r.headers();
    assert_eq!(h[header::CACHE_CONTROL], "no-store");
    assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
    assert!(
        h[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
}

#[test]
fn the_redirect_goes_home_and_clears_the_cookie() {
    let r = redirect("state-1", "/v1/accounts/A1");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION], "/v1/accounts/A1");
    let clear = r.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(clear.starts_with(&format!("{}=;", cookie_name("state-1"))));
    assert!(clear.contains("Max-Age=0"));
}
