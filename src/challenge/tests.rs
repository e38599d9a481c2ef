use super::*;
use crate::request::RawRequest;

fn config() -> ChallengeConfig {
    ChallengeConfig {
        authorization_endpoint: Some("https://idp.example.com/authorize".into()),
        oidc: None,
        client_id: "stepguard".into(),
        redirect_uri: "https://app.example.com/.stepguard/callback".into(),
        acr_ladder: vec!["aal1".into(), "aal2".into(), "aal3".into()],
        ttl_secs: 300,
        completion_skew_secs: 5,
        scope: "openid".into(),
        limits: Default::default(),
    }
}

fn challenge_with(max_age: i64) -> Challenge {
    Challenge {
        id: "state-1".into(),
        digest: "d".into(),
        subject: "s".into(),
        action: "a".into(),
        requirement: Requirement {
            acr_values: vec!["aal2".into(), "aal3".into()],
            max_age,
        },
        terms: GrantTerms {
            single_use: true,
            ttl: 60,
        },
        issued_at: 0,
        expires_at: 300,
        return_to: "/".into(),
        nonce: "nonce-1".into(),
        pkce_verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
        attempts: 0,
        browser_binding: None,
        authorization_details: None,
        policy_revision: None,
    }
}

fn query(url: &str) -> Vec<(String, String)> {
    let (_, q) = url.split_once('?').unwrap();
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

#[test]
fn pkce_matches_rfc7636_appendix_b() {
    assert_eq!(
        pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
}

#[test]
fn authorization_url_carries_the_oidc_parameters() {
    let url = Challenger::new(config())
        .authorization_url(&challenge_with(300))
        .unwrap();
    assert!(url.starts_with("https://idp.example.com/authorize?"));
    let q = query(&url);
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("response_type"), Some("code"));
    assert_eq!(get("client_id"), Some("stepguard"));
    assert_eq!(
        get("redirect_uri"),
        Some("https://app.example.com/.stepguard/callback")
    );
    assert_eq!(get("scope"), Some("openid"));
    assert_eq!(get("acr_values"), Some("aal2 aal3"));
    assert_eq!(get("max_age"), Some("300"));
    assert_eq!(get("state"), Some("state-1"));
    assert_eq!(get("nonce"), Some("nonce-1"));
    assert_eq!(
        get("code_challenge"),
        Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
    );
    assert_eq!(get("code_challenge_method"), Some("S256"));
    assert_eq!(get("prompt"), None);
    let fresh = Challenger::new(config())
        .authorization_url(&challenge_with(0))
        .unwrap();
    assert!(query(&fresh).contains(&("prompt".into(), "login".into())));
}

#[test]
fn rfc9470_header_is_exact() {
    let r = Requirement {
        acr_values: vec!["aal2".into(), "aal3".into()],
        max_age: 0,
    };
    assert_eq!(
        insufficient_authentication(&r, "Step-up \"needed\""),
        r#"Bearer error="insufficient_user_authentication", error_description="Step-up needed", acr_values="aal2 aal3", max_age="0""#
    );
    assert_eq!(
        invalid_token("expired"),
        r#"Bearer error="invalid_token", error_description="expired""#
    );
}

#[test]
fn tokens_are_random_and_url_safe() {
    let a = random_token(16).unwrap();
    assert_ne!(a, random_token(16).unwrap());
    assert_eq!(a.len(), 22);
    assert!(
        a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
}

#[test]
fn return_to_is_always_a_same_origin_path() {
    for bad in [
        "//evil.com",
        "/\\evil.com",
        "https://evil.com",
        "javascript:alert(1)",
        "/a%2F%2Fevil",
        "/a%5Cb",
        "/a\r\nSet-Cookie: x",
        "evil",
        "//user@evil.com",
        "/\t/evil.com",
        "/%2f%2fevil.com",
        "/%5C%5Cevil.com",
        "\\evil.com",
        "",
    ] {
        assert_eq!(safe_path(bad), None, "{bad:?}");
    }
    assert_eq!(safe_path("/v1/accounts?x=1"), Some("/v1/accounts?x=1"));
    let mut raw = RawRequest {
        method: "POST".into(),
        host: "app.example.com".into(),
        path: "/v1/pay".into(),
        ..Default::default()
    };
    raw.headers.insert(
        "referer".into(),
        "https://app.example.com/checkout?id=7".into(),
    );
    assert_eq!(
        return_to(&AuthzRequest::new(raw.clone(), 8).unwrap()),
        "/checkout?id=7"
    );
    raw.headers.insert(
        "referer".into(),
        "https://app.example.com.evil.com/x".into(),
    );
    assert_eq!(return_to(&AuthzRequest::new(raw.clone(), 8).unwrap()), "/");
    for referer in [
        "https://app.example.com@evil.com/x",
        "https://app.example.com//evil.com/x",
        "https://app.example.com/\\evil.com",
        "https://app.example.com/%2F%2Fevil.com",
        "javascript:alert(1)",
        "https://evil.com/app.example.com/x",
    ] {
        raw.headers.insert("referer".into(), referer.into());
        assert_eq!(
            return_to(&AuthzRequest::new(raw.clone(), 8).unwrap()),
            "/",
            "{referer}"
        );
    }
    raw.method = "GET".into();
    assert_eq!(return_to(&AuthzRequest::new(raw, 8).unwrap()), "/v1/pay");
}

#[test]
fn browsers_are_bound_by_a_host_cookie_per_challenge() {
    let challenger = Challenger::new(config());
    let mut c = challenge_with(0);
    let set_cookie = challenger.bind_browser(&mut c).unwrap();
    let (pair, attributes) = set_cookie.split_once("; ").unwrap();
    let (name, value) = pair.split_once('=').unwrap();
    assert_eq!(name, cookie_name("state-1"));
    assert!(name.starts_with("__Host-stepguard-"));
    assert_ne!(name, cookie_name("state-2"), "one cookie per challenge");
    assert_eq!(
        attributes,
        "Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=300"
    );
    assert!(value.len() >= 43, "256 bits");
    assert_eq!(c.browser_binding, Some(browser_binding(value)));
    assert_ne!(
        c.browser_binding.as_deref(),
        Some(value),
        "only a hash is stored"
    );
}

#[test]
fn without_an_endpoint_there_is_no_redirect() {
    let mut c = config();
    c.authorization_endpoint = None;
    let challenger = Challenger::new(c);
    assert!(challenger.authorization_url(&challenge_with(0)).is_none());
    challenger
        .endpoint()
        .store(Some(std::sync::Arc::new(Endpoint::Direct(
            "https://idp.example.com/auth".into(),
        ))));
    assert!(challenger.authorization_url(&challenge_with(0)).is_some());
}

#[test]
fn with_pushed_requests_the_browser_goes_to_the_start_path_with_the_state_only() {
    let mut c = config();
    c.authorization_endpoint = None;
    let challenger = Challenger::new(c);
    challenger
        .endpoint()
        .store(Some(std::sync::Arc::new(Endpoint::Pushed {
            start: "/.stepguard/authorize".into(),
        })));
    assert_eq!(
        challenger.authorization_url(&challenge_with(0)).unwrap(),
        "/.stepguard/authorize?state=state-1"
    );
}
