//! Dev-key tokens for integration tests (the quickstart issuer and audience).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use super::envoy::manifest_dir;

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims of `sub`, authenticated at `acr` `age` seconds ago.
pub fn claims(sub: &str, acr: &str, age: i64) -> Value {
    let now = now();
    json!({"iss": "https://idp.stepguard.local", "aud": "stepguard-demo", "sub": sub,
           "exp": now + 300, "iat": now - 5, "auth_time": now - age, "acr": acr, "amr": ["pwd", "otp"]})
}

pub fn sign(claims: &Value) -> String {
    let pem =
        std::fs::read(manifest_dir().join("deploy/local/dev-signing-key.DEV-ONLY.pem")).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("dev-es256-1".into());
    encode(&header, claims, &EncodingKey::from_ec_pem(&pem).unwrap()).unwrap()
}

pub fn token(sub: &str, acr: &str, age: i64) -> String {
    sign(&claims(sub, acr, age))
}

/// `sub`'s token at `acr`, signed in at `auth_time` (unix seconds).
pub fn signed_in_at(sub: &str, acr: &str, auth_time: i64) -> String {
    let mut claims = claims(sub, acr, 0);
    claims["auth_time"] = serde_json::json!(auth_time);
    sign(&claims)
}
