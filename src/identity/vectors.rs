//! Project Wycheproof's JSON Web Signature and JSON Web Key vectors (`tests/fixtures/wycheproof/`)
//! replayed against the signature layer of token verification: header checks (`Jws::parse`) then
//! the issuer's key and signature check (`Issuer::check_signature`), with a JWKS holding the
//! group's key (JWS vectors) or key set (JWK vectors). The
//! vectors sign payloads such as `foo`, not claim sets, so the full path (`Identity`) refuses all
//! of them before their signature matters; `tests/it/jws_vectors.rs` replays them there.
//!
//! Every `invalid` vector must be refused. Every `valid` one must be accepted, except the ones in
//! [`REFUSED_VALID`], which stepguard's stricter rules refuse: the test checks that they are
//! refused, and that the list names only `valid` vectors. Reliability catalogue B1 (JWS part).

use std::path::Path;

use serde_json::{Value, json};

use super::jwks::Jwks;
use super::token::{Issuer, Jws};
use crate::identity::config::{
    IssuerConfig, JwksConfig, JwksSource, SigningAlgorithm, parse_algorithm,
};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/wycheproof");

/// Every asymmetric algorithm stepguard can be configured to accept.
const ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// `valid` JWK vectors that stepguard refuses, and why.
const REFUSED_VALID_JWK: [(u64, &str); 4] = [
    (2, "HS256: symmetric algorithms are never accepted"),
    (13, "HS256: symmetric algorithms are never accepted"),
    (14, "HS384: symmetric algorithms are never accepted"),
    (15, "HS512: symmetric algorithms are never accepted"),
];

/// `valid` JWS vectors that stepguard refuses, and why.
const REFUSED_VALID: [(u64, &str); 12] = [
    (1, "HS256: symmetric algorithms are never accepted"),
    (348, "HS256: symmetric algorithms are never accepted"),
    (357, "HS256: symmetric algorithms are never accepted"),
    (358, "HS256: symmetric algorithms are never accepted"),
    (359, "HS256: symmetric algorithms are never accepted"),
    (372, "HS256 (and a `?` inside the header's base64url)"),
    (373, "HS256 (and a `?` inside the payload's base64url)"),
    (376, "HS256: symmetric algorithms are never accepted"),
    (377, "HS256: symmetric algorithms are never accepted"),
    (
        346,
        "PS384 token, JWK declares `alg: PS256`: a key is used only for its own alg",
    ),
    (
        347,
        "ES512 (P-521) is not supported by the JWT library: refused",
    ),
    (
        351,
        "ES512 (P-521) is not supported by the JWT library: refused",
    ),
];

/// The outcome of one replayed vector.
struct Replay {
    tc_id: u64,
    expected_valid: bool,
    accepted: bool,
}

/// An issuer accepting every asymmetric algorithm, keyed by `jwks`.
async fn issuer(dir: &Path, group: usize, jwks: Value) -> Issuer {
    let path = dir.join(format!("group-{group}.json"));
    std::fs::write(&path, jwks.to_string()).unwrap();
    let config = IssuerConfig {
        issuer: "https://wycheproof.test".into(),
        audiences: vec!["stepguard".into()],
        algorithms: ALGORITHMS
            .iter()
            .map(|a| SigningAlgorithm(parse_algorithm(a).unwrap()))
            .collect(),
        jwks: JwksConfig {
            file: Some(path.clone()),
            url: None,
            min_refresh_secs: 30,
            ttl_secs: 600,
            max_stale_secs: 86_400,
            max_bytes: 256 << 10,
            timeout_ms: 5_000,
        },
    };
    let jwks = Jwks::load(JwksSource::File(path)).await.unwrap();
    Issuer::new(&config, jwks)
}

/// The group's key set: its `public` key (set), else its `private` one (symmetric groups have
/// only that: it goes in the JWKS too, to show that even a configured secret is never used).
fn jwks(group: &Value) -> Value {
    match group.get("public").or_else(|| group.get("private")) {
        Some(set) if set.get("keys").is_some() => set.clone(),
        Some(key) => json!({ "keys": [key] }),
        None => json!({ "keys": [] }),
    }
}

async fn replay_all(file: &str) -> Vec<Replay> {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{file}")).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    let dir = std::env::temp_dir().join(format!(
        "stepguard-wycheproof-{}-{}",
        std::process::id(),
        file["schema"].as_str().unwrap()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut out = Vec::new();
    for (i, group) in file["testGroups"].as_array().unwrap().iter().enumerate() {
        let issuer = issuer(&dir, i, jwks(group)).await;
        for test in group["tests"].as_array().unwrap() {
            let token = test["jws"].as_str().unwrap();
            let accepted = match Jws::parse(token) {
                Ok(jws) => issuer.check_signature(&jws).await.is_ok(),
                Err(_) => false,
            };
            out.push(Replay {
                tc_id: test["tcId"].as_u64().unwrap(),
                expected_valid: test["result"] == "valid",
                accepted,
            });
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    out
}

/// Checks the replays against the expected results; returns how many vectors were accepted.
fn judge(replays: &[Replay], refused: &[(u64, &str)]) -> usize {
    let refused_valid = |id: u64| refused.iter().any(|(r, _)| *r == id);
    let mut accepted_invalid = Vec::new();
    let mut refused_unlisted = Vec::new();
    for r in replays {
        if !r.expected_valid {
            assert!(!refused_valid(r.tc_id), "tcId {} is invalid", r.tc_id);
            if r.accepted {
                accepted_invalid.push(r.tc_id);
            }
        } else if refused_valid(r.tc_id) {
            assert!(!r.accepted, "tcId {} is accepted now: unlist it", r.tc_id);
        } else if !r.accepted {
            refused_unlisted.push(r.tc_id);
        }
    }
    assert!(
        accepted_invalid.is_empty(),
        "invalid accepted: {accepted_invalid:?}"
    );
    assert!(
        refused_unlisted.is_empty(),
        "valid refused: {refused_unlisted:?}"
    );
    for (id, _) in refused {
        assert!(replays.iter().any(|r| r.tc_id == *id), "tcId {id} replayed");
    }
    replays.iter().filter(|r| r.accepted).count()
}

#[tokio::test]
async fn wycheproof_jws_vectors_invalid_refused_valid_accepted_unless_listed() {
    let replays = replay_all("json_web_signature_test.json").await;
    assert_eq!(replays.len(), 121, "every vector of the fixture replayed");
    assert_eq!(replays.iter().filter(|r| r.expected_valid).count(), 21);
    assert_eq!(judge(&replays, &REFUSED_VALID), 21 - REFUSED_VALID.len());
}

#[tokio::test]
async fn wycheproof_jwk_vectors_invalid_refused_valid_accepted_unless_listed() {
    let replays = replay_all("json_web_key_test.json").await;
    assert_eq!(replays.len(), 26, "every vector of the fixture replayed");
    assert_eq!(replays.iter().filter(|r| r.expected_valid).count(), 5);
    assert_eq!(
        judge(&replays, &REFUSED_VALID_JWK),
        5 - REFUSED_VALID_JWK.len()
    );
}
