//! The `jwt` harness: bearer-token verification through [`Identity::verify_bearer`] (compact
//! form, [`crate::jose`]'s strict JSON, algorithm allow-list, the dev JWKS, claim rules).
//!
//! The first byte picks the mode:
//! - even: the rest is an `Authorization` header value, verified as is. The fuzzer cannot sign,
//!   so a token that verifies must carry a valid signature of the dev key over its first two
//!   parts (checked independently with the JWT library).
//! - odd: the rest is `HEADER-JSON\nCLAIMS-JSON`, signed with the dev key by the harness and
//!   verified, so the claim rules are reached. A token that verifies must satisfy them, checked
//!   here independently: `alg` ES256, `iss` the dev IdP, an `aud` of ours, `exp` not passed,
//!   `nbf`/`iat`/`auth_time` not in the future (30 s leeway), a non-empty string `sub`.

use serde_json::Value;

use super::world::{self, ISSUER, NOW};
use crate::identity::Identity;

const LEEWAY: f64 = 30.0;

pub fn jwt(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    if mode % 2 == 0 {
        let _ = crate::jose::compact(&text);
        super::with_world(|w| async move {
            if w.pipeline.identity.verify_bearer(&text, NOW).await.is_ok() {
                assert_signed(&text);
            }
        });
        return;
    }
    let (header, claims) = text.split_once('\n').unwrap_or((&text, "{}"));
    let Some(token) = world::sign_text(header, claims) else {
        return;
    };
    super::with_world(|w| async move {
        let identity: &Identity = &w.pipeline.identity;
        if let Ok(subject) = identity
            .verify_bearer(&format!("Bearer {token}"), NOW)
            .await
        {
            assert_valid(header, claims);
            assert!(subject.id.as_deref().is_some_and(|s| !s.is_empty()));
        }
    });
}

/// A verified `Authorization` value carries the dev key's signature over its first two parts.
fn assert_signed(authorization: &str) {
    let token = authorization.split_once(' ').map_or("", |(_, t)| t.trim());
    let mut parts = token.rsplitn(2, '.');
    let (Some(signature), Some(message)) = (parts.next(), parts.next()) else {
        panic!("verified a token that is not compact: {authorization:?}");
    };
    assert!(
        world::verify_dev_signature(message, signature),
        "verified a token the dev key did not sign: {authorization:?}"
    );
}

/// The claim rules, checked independently of the identity module.
fn assert_valid(header: &str, claims: &str) {
    let header = crate::jose::object(header.as_bytes());
    let claims = crate::jose::object(claims.as_bytes());
    let (Ok(header), Ok(claims)) = (header, claims) else {
        panic!("verified a token whose parts are not strict JSON objects");
    };
    assert_eq!(header.get("alg"), Some(&Value::from("ES256")), "{header}");
    assert!(header.get("crit").is_none(), "{header}");
    assert_eq!(claims.get("iss"), Some(&Value::from(ISSUER)), "{claims}");
    let ours = |a: &Value| a.as_str() == Some("stepguard-demo");
    let aud_ok = match claims.get("aud") {
        Some(Value::Array(list)) => list.iter().any(ours),
        Some(a) => ours(a),
        None => false,
    };
    assert!(aud_ok, "{claims}");
    let time = |name: &str| claims.get(name).map(|v| v.as_f64());
    let now = NOW as f64;
    match time("exp") {
        Some(Some(exp)) => assert!(now <= exp + LEEWAY + 1.0, "expired: {claims}"),
        _ => panic!("verified without a numeric exp: {claims}"),
    }
    for name in ["nbf", "iat", "auth_time"] {
        match time(name) {
            None => {}
            Some(Some(t)) => assert!(t <= now + LEEWAY + 1.0, "{name} in the future: {claims}"),
            Some(None) => panic!("verified with a non-numeric {name}: {claims}"),
        }
    }
    assert!(
        claims
            .get("sub")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty()),
        "{claims}"
    );
}
