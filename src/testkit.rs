//! Test helpers shared by the unit tests: the quickstart config and dev-key token minting.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use crate::config::Config;

pub const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local");
pub const ISSUER: &str = "https://idp.stepguard.local";

/// The quickstart config, with `edit` applied to its text.
pub fn config(edit: impl Fn(String) -> String) -> Config {
    let text = std::fs::read_to_string(format!("{DIR}/stepguard.yaml")).unwrap();
    Config::parse(&edit(text), Path::new(DIR)).unwrap()
}

/// Signs `claims` under `header` with the dev ES256 key.
pub fn sign(header: Value, claims: Value) -> String {
    sign_text(&header.to_string(), &claims.to_string())
}

/// Signs a header and claims given as JSON text, as written (e.g. with a duplicate member).
pub fn sign_text(header: &str, claims: &str) -> String {
    let pem = std::fs::read(format!("{DIR}/dev-signing-key.DEV-ONLY.pem")).unwrap();
    let key = EncodingKey::from_ec_pem(&pem).unwrap();
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::ES256).unwrap();
    format!("{message}.{sig}")
}

pub fn header() -> Value {
    json!({"alg": "ES256", "kid": "dev-es256-1", "typ": "JWT"})
}

/// Claims of a user `sub` who authenticated at `acr` `age` seconds before `now`.
pub fn claims(sub: &str, acr: &str, now: i64, age: i64) -> Value {
    json!({"iss": ISSUER, "aud": "stepguard-demo", "sub": sub, "exp": now + 300, "iat": now - 10,
           "auth_time": now - age, "acr": acr, "amr": ["pwd", "otp"]})
}

pub fn token(sub: &str, acr: &str, now: i64, age: i64) -> String {
    sign(header(), claims(sub, acr, now, age))
}
