//! Project Wycheproof's JSON Web Signature vectors (`tests/fixtures/wycheproof/`) replayed against
//! the signature layer of token verification: header checks (`Jws::parse`) then the issuer's key
//! and signature check (`Issuer::check_signature`), with a JWKS holding the group's key. The
//! vectors sign payloads such as `foo`, not claim sets, so the full path (`Identity`) refuses all
//! of them before their signature matters; `tests/jws_vectors.rs` replays them there.
//!
//! Every `invalid` vector must be refused. Every `valid` one must be accepted, except the ones in
//! [`REFUSED_VALID`], which stepguard's stricter rules refuse: the test checks that they are
//! refused, and that the list names only `valid` vectors.

use std::path::Path;

use serde_json::{Value, json};

use super::jwks::Jwks;
use super::token::{Issuer, Jws};
use crate::config::{IssuerConfig, JwksConfig, JwksSource};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/wycheproof/json_web_signature_test.json"
);

/// Every asymmetric algorithm stepguard can be configured to accept.
const ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// `valid` vectors that stepguard refuses, and why.
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

/// An issuer accepting every asymmetric algorithm, keyed by a JWKS holding `key`.
async fn issuer(dir: &Path, group: usize, key: Option<&Value>) -> Issuer {
    let path = dir.join(format!("group-{group}.json"));
    let keys: Vec<&Value> = key.into_iter().collect();
    std::fs::write(&path, json!({ "keys": keys }).to_string()).unwrap();
    let config = IssuerConfig {
        issuer: "https://wycheproof.test".into(),
        audiences: vec!["stepguard".into()],
        algorithms: ALGORITHMS.iter().map(|a| a.to_string()).collect(),
        jwks: JwksConfig {
            file: Some(path.clone()),
            url: None,
            min_refresh_secs: 30,
            ttl_secs: 600,
        },
    };
    let jwks = Jwks::load(JwksSource::File(path)).await.unwrap();
    Issuer::new(&config, jwks)
}

async fn replay_all() -> Vec<Replay> {
    let file: Value = serde_json::from_str(&std::fs::read_to_string(VECTORS).unwrap()).unwrap();
    let dir = std::env::temp_dir().join(format!("stepguard-wycheproof-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut out = Vec::new();
    for (i, group) in file["testGroups"].as_array().unwrap().iter().enumerate() {
        // Symmetric groups have only a `private` key: put it in the JWKS too, to show that even
        // a configured secret is never used.
        let key = group.get("public").or_else(|| group.get("private"));
        let issuer = issuer(&dir, i, key).await;
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

#[tokio::test]
async fn wycheproof_jws_vectors_invalid_refused_valid_accepted_unless_listed() {
    let replays = replay_all().await;
    let refused_valid = |id: u64| REFUSED_VALID.iter().any(|(r, _)| *r == id);
    let mut accepted_invalid = Vec::new();
    let mut refused_unlisted = Vec::new();
    for r in &replays {
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
    let valid = replays.iter().filter(|r| r.expected_valid).count();
    let accepted = replays.iter().filter(|r| r.accepted).count();
    assert_eq!(replays.len(), 121, "every vector of the fixture replayed");
    assert_eq!(valid, 21);
    assert_eq!(accepted, valid - REFUSED_VALID.len());
    for (id, _) in REFUSED_VALID {
        assert!(replays.iter().any(|r| r.tc_id == id), "tcId {id} replayed");
    }
}
