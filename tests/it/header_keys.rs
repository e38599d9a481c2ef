//! Key material named or carried by a token's header is never used or fetched: `jwk`, `jku`,
//! `x5u` and `x5c` (pointing at a loopback listener that counts requests) do not verify an
//! attacker's signature, hostile `kid`s find no key, an HS256 MAC keyed with the issuer's public
//! key bytes is refused, and so is any `crit` header. Tokens go through the public
//! `Identity::verify_bearer` of the quickstart issuer (ES256, keys from `dev-jwks.json`).
//! Reliability catalogue B2, B3 and B8.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use axum::Router;
use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use stepguard::identity::{Identity, IdentityError};

use crate::support::envoy::manifest_dir;
use crate::support::tokens::{claims, now};

const KID: &str = "dev-es256-1";

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

async fn identity() -> Identity {
    let config = support::sidecar::quickstart(|t| t);
    Identity::load(&config.identity, config.jwks_wait())
        .await
        .unwrap()
}

async fn verify(id: &Identity, token: &str) -> Result<Option<String>, IdentityError> {
    id.verify_bearer(&format!("Bearer {token}"), now())
        .await
        .map(|s| s.id)
}

/// `header.payload` signed with the issuer's real (dev) key.
fn issuer_signed(header: &Value, payload: &str) -> String {
    let message = format!("{}.{payload}", b64(header.to_string()));
    let pem =
        std::fs::read(manifest_dir().join("deploy/local/dev-signing-key.DEV-ONLY.pem")).unwrap();
    let key = EncodingKey::from_ec_pem(&pem).unwrap();
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::ES256).unwrap();
    format!("{message}.{sig}")
}

/// An attacker's own P-256 key.
struct Attacker(EcdsaKeyPair);

impl Attacker {
    fn new() -> Self {
        Self(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap())
    }

    /// The public key as a JWK (uncompressed point: 0x04 || x || y).
    fn jwk(&self, kid: &str) -> Value {
        let point = self.0.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
               "x": b64(&point[1..33]), "y": b64(&point[33..65])})
    }

    fn sign(&self, header: &Value) -> String {
        let message = format!(
            "{}.{}",
            b64(header.to_string()),
            b64(claims("mallory", "aal3", 5).to_string())
        );
        let sig = self
            .0
            .sign(&SystemRandom::new(), message.as_bytes())
            .unwrap();
        format!("{message}.{}", b64(sig.as_ref()))
    }
}

/// A loopback HTTP server that answers every request with `body` and counts them.
async fn listener(body: String) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .fallback(
            |State((hits, body)): State<(Arc<AtomicUsize>, String)>| async move {
                hits.fetch_add(1, Ordering::SeqCst);
                body
            },
        )
        .with_state((hits.clone(), body));
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", socket.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(socket, app).await.unwrap() });
    (base, hits)
}

#[tokio::test]
async fn header_borne_keys_are_never_used_or_fetched() {
    let id = identity().await;
    let attacker = Attacker::new();
    let (base, hits) = listener(json!({"keys": [attacker.jwk(KID)]}).to_string()).await;
    let baseline = issuer_signed(
        &json!({"alg": "ES256", "kid": KID}),
        &b64(claims("alice", "aal2", 5).to_string()),
    );
    assert_eq!(verify(&id, &baseline).await, Ok(Some("alice".into())));
    let spki = STANDARD.encode(attacker.0.public_key().as_ref());
    let carriers = [
        ("jwk", attacker.jwk(KID)),
        ("jku", json!(format!("{base}/jwks.json"))),
        ("x5u", json!(format!("{base}/cert.pem"))),
        ("x5c", json!([spki])),
    ];
    for (name, value) in carriers {
        for kid in [Some(KID), Some("attacker-1"), None] {
            let mut header = json!({"alg": "ES256", name: value.clone()});
            if let Some(kid) = kid {
                header["kid"] = json!(kid);
            }
            let expected = match kid {
                Some("attacker-1") => "unknown key",
                _ => "bad signature",
            };
            assert_eq!(
                verify(&id, &attacker.sign(&header)).await,
                Err(IdentityError::InvalidToken(expected)),
                "{name} with kid {kid:?}"
            );
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 0, "header URLs were fetched");
}

#[tokio::test]
async fn hostile_kids_find_no_key_and_do_not_flood_the_jwks_source() {
    let id = identity().await;
    let attacker = Attacker::new();
    let payload = b64(claims("mallory", "aal3", 5).to_string());
    for kid in [
        "../../dev/null".to_string(),
        "/etc/passwd".to_string(),
        "' OR 1=1 --".to_string(),
        "x".repeat(10 * 1024),
    ] {
        let header = json!({"alg": "ES256", "kid": kid});
        for token in [issuer_signed(&header, &payload), attacker.sign(&header)] {
            let started = std::time::Instant::now();
            assert_eq!(
                verify(&id, &token).await,
                Err(IdentityError::InvalidToken("unknown key")),
                "kid {:.40}",
                kid
            );
            assert!(started.elapsed() < std::time::Duration::from_secs(1));
        }
    }
    // Read once at load; an unknown kid may re-read the configured source only after
    // `min_refresh` (5 s for files), and a kid never names what is read.
    let fetches: u64 = id.jwks().map(|j| j.fetches()).sum();
    assert_eq!(fetches, 1, "JWKS read again for unknown kids");
}

#[tokio::test]
async fn hs256_maced_with_the_issuer_public_key_bytes_is_refused() {
    let id = identity().await;
    let jwks_text = std::fs::read(manifest_dir().join("deploy/local/dev-jwks.json")).unwrap();
    let jwks: Value = serde_json::from_slice(&jwks_text).unwrap();
    let jwk = &jwks["keys"][0];
    let coordinate = |c: &str| URL_SAFE_NO_PAD.decode(jwk[c].as_str().unwrap()).unwrap();
    let point = [vec![4u8], coordinate("x"), coordinate("y")].concat();
    let secrets: [(&str, Vec<u8>); 4] = [
        ("the JWKS file", jwks_text.clone()),
        ("the JWK", jwk.to_string().into_bytes()),
        ("the uncompressed point", point),
        ("x", coordinate("x")),
    ];
    let payload = b64(claims("mallory", "aal3", 5).to_string());
    for (name, secret) in secrets {
        let message = format!(
            "{}.{payload}",
            b64(json!({"alg": "HS256", "kid": KID}).to_string())
        );
        let mac = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(&secret),
            Algorithm::HS256,
        )
        .unwrap();
        assert_eq!(
            verify(&id, &format!("{message}.{mac}")).await,
            Err(IdentityError::InvalidToken("algorithm not allowed")),
            "HS256 keyed with {name}"
        );
    }
}

#[tokio::test]
async fn crit_headers_are_refused_even_when_the_signature_is_good() {
    let id = identity().await;
    let claims = claims("alice", "aal2", 5).to_string();
    let headers = [
        json!({"alg": "ES256", "kid": KID, "b64": false, "crit": ["b64"]}),
        json!({"alg": "ES256", "kid": KID, "urn:x": 1, "crit": ["urn:x"]}),
        json!({"alg": "ES256", "kid": KID, "crit": []}),
    ];
    for header in &headers {
        assert_eq!(
            verify(&id, &issuer_signed(header, &b64(&claims))).await,
            Err(IdentityError::InvalidToken("crit header not supported")),
            "{header}"
        );
    }
    // RFC 7797 proper: the payload travels unencoded.
    let unencoded = issuer_signed(&headers[0], &claims);
    assert!(matches!(
        verify(&id, &unencoded).await,
        Err(IdentityError::InvalidToken(_))
    ));
}
