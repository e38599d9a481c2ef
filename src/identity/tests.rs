use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use super::*;
use crate::request::RawRequest;

const NOW: i64 = 1_800_000_000;
const DIR: &str = crate::testkit::DIR;

async fn identity(extra: &str) -> Identity {
    let config =
        crate::testkit::config(|t| t.replace("  workloads:\n", &format!("{extra}  workloads:\n")));
    Identity::load(&config.identity, config.jwks_wait())
        .await
        .unwrap()
}

fn header() -> Value {
    crate::testkit::header()
}

fn sign(header: Value, claims: Value) -> String {
    crate::testkit::sign(header, claims)
}

fn claims() -> Value {
    crate::testkit::claims("alice", "aal2", NOW, 60)
}

fn request(authorization: Option<&str>) -> AuthzRequest {
    let mut raw = RawRequest {
        method: "GET".into(),
        path: "/".into(),
        ..Default::default()
    };
    if let Some(a) = authorization {
        raw.headers.insert("authorization".into(), a.into());
    }
    AuthzRequest::new(raw, 8).unwrap()
}

async fn resolve(id: &Identity, token: &str) -> Result<Subject, IdentityError> {
    id.resolve(&request(Some(&format!("Bearer {token}"))), NOW)
        .await
}

#[tokio::test]
async fn a_valid_token_gives_a_human_subject() {
    let id = identity("").await;
    let s = resolve(&id, &sign(header(), claims())).await.unwrap();
    assert_eq!(s.kind, SubjectKind::Human);
    assert_eq!(s.id.as_deref(), Some("alice"));
    assert_eq!(s.acr.as_deref(), Some("aal2"));
    assert_eq!(s.amr, ["pwd", "otp"]);
    assert_eq!(s.session_age, Some(60));
    assert_eq!(s.binding_key(), "https://idp.stepguard.local|alice");
}

#[tokio::test]
async fn malformed_tokens_are_invalid() {
    let id = identity("").await;
    let good = sign(header(), claims());
    let (h, rest) = good.split_once('.').unwrap();
    let (p, _) = rest.split_once('.').unwrap();
    let none = format!(
        "{}.{p}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none"}).to_string())
    );
    let jwks = std::fs::read(format!("{DIR}/dev-jwks.json")).unwrap();
    let hs_message = format!(
        "{}.{p}",
        URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "kid": "dev-es256-1"}).to_string())
    );
    let hs_sig = jsonwebtoken::crypto::sign(
        hs_message.as_bytes(),
        &EncodingKey::from_secret(&jwks),
        Algorithm::HS256,
    )
    .unwrap();
    let with = |k: &str, v: Value| {
        let mut c = claims();
        c[k] = v;
        sign(header(), c)
    };
    let cases: Vec<(&str, String)> = vec![
        ("alg none", none),
        (
            "HS256 with the public key",
            format!("{hs_message}.{hs_sig}"),
        ),
        (
            "unknown kid",
            sign(json!({"alg": "ES256", "kid": "other"}), claims()),
        ),
        (
            "crit",
            sign(
                json!({"alg": "ES256", "kid": "dev-es256-1", "crit": ["exp"]}),
                claims(),
            ),
        ),
        ("expired", with("exp", json!(NOW - 31))),
        ("future nbf", with("nbf", json!(NOW + 31))),
        ("wrong aud", with("aud", json!("other"))),
        ("wrong iss", with("iss", json!("https://evil"))),
        ("string exp", with("exp", json!((NOW + 300).to_string()))),
        ("no exp", {
            let mut c = claims();
            c.as_object_mut().unwrap().remove("exp");
            sign(header(), c)
        }),
        (
            "tampered payload",
            format!(
                "{h}.{}.{}",
                URL_SAFE_NO_PAD.encode(with("sub", json!("mallory"))),
                good.rsplit('.').next().unwrap()
            ),
        ),
        ("two parts", format!("{h}.{p}")),
        ("garbage", "a.b.c".into()),
        ("huge", "a".repeat(1 << 20)),
    ];
    for (name, token) in cases {
        let started = std::time::Instant::now();
        assert!(
            matches!(
                resolve(&id, &token).await,
                Err(IdentityError::InvalidToken(_))
            ),
            "{name}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{name}"
        );
    }
}

#[tokio::test]
async fn leeway_and_audience_lists() {
    let id = identity("").await;
    let mut c = claims();
    c["exp"] = json!(NOW - 20);
    c["aud"] = json!(["x", "stepguard-demo"]);
    assert!(resolve(&id, &sign(header(), c)).await.is_ok());
}

#[tokio::test]
async fn duplicate_or_non_bearer_authorization_is_invalid() {
    let id = identity("").await;
    let t = sign(header(), claims());
    for value in [
        format!("Bearer {t}, Bearer {t}"),
        format!("Basic {t}"),
        "Bearer".into(),
    ] {
        let err = id.resolve(&request(Some(&value)), NOW).await.unwrap_err();
        assert!(matches!(err, IdentityError::InvalidToken(_)), "{value}");
    }
    assert_eq!(
        id.resolve(&request(None), NOW).await.unwrap_err(),
        IdentityError::Missing
    );
}

#[tokio::test]
async fn delegation_chains_and_workload_tokens() {
    let id = identity("").await;
    let mut c = claims();
    c["act"] = json!({"sub": "agent-7", "act": {"sub": "scheduler"}});
    let s = resolve(&id, &sign(header(), c)).await.unwrap();
    assert_eq!(
        s.act
            .iter()
            .map(|a| a.sub.clone().unwrap())
            .collect::<Vec<_>>(),
        ["agent-7", "scheduler"]
    );
    let mut c = claims();
    c["sub"] = json!("billing-svc");
    c["client_id"] = json!("billing-svc");
    c.as_object_mut().unwrap().remove("auth_time");
    assert_eq!(
        resolve(&id, &sign(header(), c)).await.unwrap().kind,
        SubjectKind::Workload
    );
}

#[tokio::test]
async fn mtls_spiffe_peers_in_trusted_domains_are_workloads() {
    let id = identity("").await;
    let mut raw = RawRequest {
        method: "GET".into(),
        path: "/".into(),
        ..Default::default()
    };
    raw.source_principal = Some("spiffe://stepguard.local/ns/pay/sa/batch".into());
    let s = id
        .resolve(&AuthzRequest::new(raw.clone(), 8).unwrap(), NOW)
        .await
        .unwrap();
    assert_eq!(s.kind, SubjectKind::Workload);
    assert_eq!(
        s.workload.as_deref(),
        Some("spiffe://stepguard.local/ns/pay/sa/batch")
    );
    raw.source_principal = Some("spiffe://elsewhere/ns/x".into());
    assert_eq!(
        id.resolve(&AuthzRequest::new(raw, 8).unwrap(), NOW)
            .await
            .unwrap_err(),
        IdentityError::Missing
    );
}

#[tokio::test]
async fn jwt_authn_metadata_is_used_only_when_trusted() {
    let mut raw = RawRequest {
        method: "GET".into(),
        path: "/".into(),
        ..Default::default()
    };
    raw.filter_metadata.insert(
        "envoy.filters.http.jwt_authn".into(),
        json!({"jwt_payload": claims()}),
    );
    let req = AuthzRequest::new(raw, 8).unwrap();
    assert_eq!(
        identity("").await.resolve(&req, NOW).await.unwrap_err(),
        IdentityError::Missing
    );
    let trusted = identity(
        "  jwt_authn:\n    payload_key: jwt_payload\n    issuers: [https://idp.stepguard.local]\n",
    )
    .await;
    assert_eq!(
        trusted.resolve(&req, NOW).await.unwrap().id.as_deref(),
        Some("alice")
    );
    assert!(
        trusted.resolve(&req, NOW + 400).await.is_err(),
        "expiry still checked"
    );
}

/// The classic algorithm confusion: an RS256 issuer, a token "signed" with HS256 using the RSA
/// public key (PEM, as published) as the HMAC secret.
#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let config = crate::testkit::config(|t| {
        t.replace("algorithms: [ES256]", "algorithms: [RS256]")
            .replace(
                "file: dev-jwks.json",
                &format!("file: {fixtures}/rsa-test-jwks.json"),
            )
    });
    let id = Identity::load(&config.identity, config.jwks_wait())
        .await
        .unwrap();
    let claims = claims();
    let rs_key = EncodingKey::from_rsa_pem(
        &std::fs::read(format!("{fixtures}/rsa-test-key.TEST-ONLY.pem")).unwrap(),
    )
    .unwrap();
    let mut rs_header = jsonwebtoken::Header::new(Algorithm::RS256);
    rs_header.kid = Some("rsa-test-1".into());
    let good = jsonwebtoken::encode(&rs_header, &claims, &rs_key).unwrap();
    assert!(
        resolve(&id, &good).await.is_ok(),
        "a real RS256 token verifies"
    );
    let public_pem = std::fs::read(format!("{fixtures}/rsa-test-public.pem")).unwrap();
    let mut hs_header = jsonwebtoken::Header::new(Algorithm::HS256);
    hs_header.kid = Some("rsa-test-1".into());
    let forged =
        jsonwebtoken::encode(&hs_header, &claims, &EncodingKey::from_secret(&public_pem)).unwrap();
    assert_eq!(
        resolve(&id, &forged).await.unwrap_err(),
        IdentityError::InvalidToken("algorithm not allowed")
    );
}

#[tokio::test]
async fn cached_tokens_still_have_their_claims_checked() {
    let id = identity("").await;
    let t = sign(header(), claims());
    assert!(resolve(&id, &t).await.is_ok());
    assert_eq!(id.verified.len(), 1);
    let later = id
        .resolve(&request(Some(&format!("Bearer {t}"))), NOW + 400)
        .await;
    assert_eq!(later.unwrap_err(), IdentityError::InvalidToken("expired"));
}

#[tokio::test]
async fn a_key_removed_from_the_jwks_stops_validating_cached_tokens() {
    let dir = std::env::temp_dir().join(format!("stepguard-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = dir.join("jwks.json");
    std::fs::copy(format!("{DIR}/dev-jwks.json"), &jwks).unwrap();
    let config = crate::testkit::config(|t| {
        t.replace("file: dev-jwks.json", &format!("file: {}", jwks.display()))
    });
    let id = Identity::load(&config.identity, config.jwks_wait())
        .await
        .unwrap();
    let t = sign(header(), claims());
    assert!(resolve(&id, &t).await.is_ok());
    std::fs::write(&jwks, r#"{"keys": []}"#).unwrap();
    for set in id.jwks() {
        set.refresh(true).await;
    }
    assert_eq!(
        resolve(&id, &t).await.unwrap_err(),
        IdentityError::InvalidToken("unknown key")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_verified_cache_is_bounded() {
    let cache = cache::VerifiedCache::new(2);
    let claims = std::sync::Arc::new(json!({"exp": NOW + 10}));
    for i in 0..5 {
        cache.insert(cache::key(&format!("t{i}")), "iss", claims.clone(), 1, NOW);
        assert!(cache.len() <= 2);
    }
    assert!(cache.get(&cache::key("t4")).is_some());
}

/// Tokens that live a minute, a hundred new ones a second (the soak's clients): the cache
/// holds about what is still valid, not its maximum of expired ones, and keeps every valid one.
#[test]
fn expired_tokens_are_swept_before_the_cache_is_full() {
    let cache = cache::VerifiedCache::new(50_000);
    let (per_second, lifetime) = (100, 60);
    let mut now = NOW;
    for i in 0..30_000 {
        now = NOW + i / per_second;
        let claims = std::sync::Arc::new(json!({"exp": now + lifetime}));
        cache.insert(cache::key(&format!("t{i}")), "iss", claims, 1, now);
    }
    let valid = (per_second * lifetime) as usize;
    assert!(
        cache.len() <= 2 * (valid + per_second as usize) + cache::SWEEP_FLOOR,
        "{} entries for about {valid} valid tokens",
        cache.len()
    );
    for i in 30_000 - valid as i64..30_000 {
        assert!(
            cache.get(&cache::key(&format!("t{i}"))).is_some(),
            "t{i} is valid until {} (now {now})",
            NOW + i / per_second + lifetime
        );
    }
}

/// `claims()` as JSON text with `extra` spliced in before its last `}`.
fn claims_with(extra: &str) -> String {
    let text = claims().to_string();
    format!("{},{extra}}}", &text[..text.len() - 1])
}

#[tokio::test]
async fn a_duplicate_header_member_makes_the_token_invalid() {
    let id = identity("").await;
    let claims = claims().to_string();
    let good = crate::testkit::sign_text(&header().to_string(), &claims);
    assert!(resolve(&id, &good).await.is_ok());
    for header in [
        r#"{"alg":"ES256","kid":"dev-es256-1","kid":"dev-es256-1"}"#,
        r#"{"alg":"ES256","kid":"other","kid":"dev-es256-1"}"#,
        r#"{"alg":"ES256","kid":"dev-es256-1","typ":"JWT","t\u0079p":"at+jwt"}"#,
    ] {
        let token = crate::testkit::sign_text(header, &claims);
        assert_eq!(
            resolve(&id, &token).await.unwrap_err(),
            IdentityError::InvalidToken("duplicate JSON member name"),
            "{header}"
        );
    }
}

#[tokio::test]
async fn a_duplicate_payload_member_makes_the_token_invalid() {
    let id = identity("").await;
    let header = header().to_string();
    for extra in [
        r#""sub":"admin""#,
        r#""s\u0075b":"admin""#,
        r#""acr":"aal3""#,
        r#""act":{"sub":"agent-7","sub":"admin"}"#,
        r#""realm_access":{"roles":["user"],"roles":["admin"]}"#,
    ] {
        let token = crate::testkit::sign_text(&header, &claims_with(extra));
        assert_eq!(
            resolve(&id, &token).await.unwrap_err(),
            IdentityError::InvalidToken("duplicate JSON member name"),
            "{extra}"
        );
    }
    let deep = format!(r#""nested":{}1{}"#, r#"{"a":"#.repeat(40), "}".repeat(40));
    let token = crate::testkit::sign_text(&header, &claims_with(&deep));
    assert_eq!(
        resolve(&id, &token).await.unwrap_err(),
        IdentityError::InvalidToken("JSON nested too deeply")
    );
}

#[tokio::test]
async fn a_human_token_without_sub_is_invalid() {
    let id = identity("").await;
    for sub in [None, Some(json!("")), Some(json!(42))] {
        let mut c = claims();
        match &sub {
            None => {
                c.as_object_mut().unwrap().remove("sub");
            }
            Some(v) => c["sub"] = v.clone(),
        }
        let token = sign(header(), c);
        assert_eq!(
            resolve(&id, &token).await.unwrap_err(),
            IdentityError::InvalidToken("missing sub"),
            "{sub:?}"
        );
        assert_eq!(
            id.verify_bearer(&format!("Bearer {token}"), NOW)
                .await
                .unwrap_err(),
            IdentityError::InvalidToken("missing sub"),
            "{sub:?}"
        );
    }
    // Nor does a token without `sub` from a SPIFFE peer become that workload, or a human.
    let mut c = claims();
    c.as_object_mut().unwrap().remove("sub");
    c["client_id"] = json!("billing-svc");
    c.as_object_mut().unwrap().remove("auth_time");
    let mut req = request(Some(&format!("Bearer {}", sign(header(), c))));
    req.raw.source_principal = Some("spiffe://stepguard.local/ns/pay/sa/batch".into());
    assert_eq!(
        id.resolve(&req, NOW).await.unwrap_err(),
        IdentityError::InvalidToken("missing sub")
    );
}

#[tokio::test]
async fn a_jwt_authn_payload_without_sub_is_invalid() {
    let trusted = identity(
        "  jwt_authn:\n    payload_key: jwt_payload\n    issuers: [https://idp.stepguard.local]\n",
    )
    .await;
    let mut payload = claims();
    payload.as_object_mut().unwrap().remove("sub");
    let mut raw = RawRequest {
        method: "GET".into(),
        path: "/".into(),
        ..Default::default()
    };
    raw.filter_metadata.insert(
        "envoy.filters.http.jwt_authn".into(),
        json!({"jwt_payload": payload}),
    );
    let req = AuthzRequest::new(raw, 8).unwrap();
    assert_eq!(
        trusted.resolve(&req, NOW).await.unwrap_err(),
        IdentityError::InvalidToken("missing sub")
    );
}

#[tokio::test]
async fn workloads_are_still_known_by_their_sub_or_their_mtls_peer() {
    let id = identity("").await;
    let mut c = claims();
    c["sub"] = json!("spiffe://stepguard.local/ns/pay/sa/batch");
    assert_eq!(
        resolve(&id, &sign(header(), c)).await.unwrap().kind,
        SubjectKind::Workload
    );
    let mut raw = RawRequest {
        method: "GET".into(),
        path: "/".into(),
        ..Default::default()
    };
    raw.source_principal = Some("spiffe://stepguard.local/ns/pay/sa/batch".into());
    let s = id
        .resolve(&AuthzRequest::new(raw, 8).unwrap(), NOW)
        .await
        .unwrap();
    assert_eq!(
        (s.kind, s.id.as_deref()),
        (
            SubjectKind::Workload,
            Some("spiffe://stepguard.local/ns/pay/sa/batch")
        )
    );
}

/// Found while writing the `jwt` fuzz harness (its inputs: tests/fuzz-corpus/jwt/crash-*): the
/// extreme integers of a signed token's time claims overflowed the expiry check and the session age (a panic in debug
/// builds; in release a wrapped, negative session age read as a fresh sign-in).
#[tokio::test]
async fn extreme_time_claims_neither_overflow_nor_make_a_session_fresh() {
    let id = identity("").await;
    let mut c = claims();
    c["exp"] = json!(i64::MAX);
    let s = resolve(&id, &sign(header(), c)).await.unwrap();
    assert_eq!(s.session_age, Some(60));
    let mut c = claims();
    c["exp"] = json!(1e300);
    assert!(resolve(&id, &sign(header(), c)).await.is_ok());
    let mut c = claims();
    c["auth_time"] = json!(i64::MIN);
    let s = resolve(&id, &sign(header(), c)).await.unwrap();
    assert_eq!(s.session_age, Some(i64::MAX), "the oldest possible session");
}
