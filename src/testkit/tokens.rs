//! DEVELOPMENT tokens: signed with the quickstart's dev key (`deploy/local/dev-signing-key.DEV-ONLY.pem`,
//! ES256, `kid` `dev-es256-1`) for its issuer and audience.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use super::config::DIR;

/// The quickstart's issuer.
pub const ISSUER: &str = "https://idp.stepguard.local";
/// The quickstart's audience.
pub const AUDIENCE: &str = "stepguard-demo";
/// The dev key's id in `deploy/local/dev-jwks.json`.
pub const KID: &str = "dev-es256-1";

/// The wall clock in unix seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Signs `claims` under `header` with the dev ES256 key.
pub fn sign(header: Value, claims: Value) -> String {
    sign_text(&header.to_string(), &claims.to_string())
}

/// Signs a header and claims given as JSON text, as written (e.g. with a duplicate member).
pub fn sign_text(header: &str, claims: &str) -> String {
    static DEV_KEY: OnceLock<EncodingKey> = OnceLock::new();
    let key = DEV_KEY.get_or_init(|| read_key(&format!("{DIR}/dev-signing-key.DEV-ONLY.pem")));
    sign_text_by(header, claims, key)
}

/// Signs a header and claims given as JSON text with the ES256 key in the PEM file `key`.
pub fn sign_text_with(header: &str, claims: &str, key: &str) -> String {
    sign_text_by(header, claims, &read_key(key))
}

fn read_key(pem_file: &str) -> EncodingKey {
    EncodingKey::from_ec_pem(&std::fs::read(pem_file).unwrap()).unwrap()
}

fn sign_text_by(header: &str, claims: &str, key: &EncodingKey) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), key, Algorithm::ES256).unwrap();
    format!("{message}.{sig}")
}

/// The dev key's JWS header.
pub fn header() -> Value {
    json!({"alg": "ES256", "kid": KID, "typ": "JWT"})
}

/// Claims of a user `sub` who authenticated at `acr` `age` seconds before `now`.
pub fn claims(sub: &str, acr: &str, now: i64, age: i64) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "exp": now + 300, "iat": now - 10,
           "auth_time": now.saturating_sub(age), "acr": acr, "amr": ["pwd", "otp"]})
}

/// `sub`'s token at `acr`, authenticated `age` seconds before `now`.
pub fn token(sub: &str, acr: &str, now: i64, age: i64) -> String {
    sign(header(), claims(sub, acr, now, age))
}

/// Claims of `sub`, authenticated at `acr` `age` seconds ago (wall clock).
pub fn fresh_claims(sub: &str, acr: &str, age: i64) -> Value {
    claims(sub, acr, now(), age)
}

/// `sub`'s token at `acr`, authenticated `age` seconds ago (wall clock).
pub fn fresh_token(sub: &str, acr: &str, age: i64) -> String {
    token(sub, acr, now(), age)
}

/// Signs `claims` with the dev key under its usual header.
pub fn sign_claims(claims: &Value) -> String {
    sign(header(), claims.clone())
}

/// `sub`'s token at `acr`, signed in at `auth_time` (unix seconds).
pub fn signed_in_at(sub: &str, acr: &str, auth_time: i64) -> String {
    let mut claims = fresh_claims(sub, acr, 0);
    claims["auth_time"] = json!(auth_time);
    sign_claims(&claims)
}
