//! Project Wycheproof's JSON Web Signature and JSON Web Key vectors (`tests/fixtures/wycheproof/`,
//! every test case of both files) through the public API: an `Identity` whose issuer's JWKS holds
//! the group's key (set) and which accepts every asymmetric algorithm. None of the vectors carries
//! a claim set (their payloads are strings such as `foo`), so stepguard must refuse every one of
//! them, `valid` or not, promptly and without panicking; which of them pass the signature layer is
//! judged in `src/identity/vectors.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stepguard::identity::{Identity, IdentityError};

const NOW: i64 = 1_800_000_000;

/// The quickstart identity, its one issuer keyed by `jwks` and accepting every asymmetric alg.
async fn identity(jwks: &std::path::Path) -> Identity {
    let config = support::sidecar::quickstart(|t| {
        t.replace(
            "algorithms: [ES256]",
            "algorithms: [RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA]",
        )
        .replace("file: dev-jwks.json", &format!("file: {}", jwks.display()))
    });
    Identity::load(&config.identity, config.jwks_wait())
        .await
        .unwrap()
}

/// The group's key set (`public`; symmetric groups have only `private`).
fn jwks(group: &Value) -> Value {
    match group.get("public").or_else(|| group.get("private")) {
        Some(set) if set.get("keys").is_some() => set.clone(),
        Some(key) => json!({ "keys": [key] }),
        None => json!({ "keys": [] }),
    }
}

/// Replays one vector file; returns how many vectors were replayed and how many the file says it
/// holds (`numberOfTests`).
async fn replay(name: &str) -> (u64, u64) {
    let path = support::envoy::manifest_dir()
        .join("tests/fixtures/wycheproof")
        .join(name);
    let file: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let dir = std::env::temp_dir().join(format!("stepguard-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut replayed: u64 = 0;
    for (i, group) in file["testGroups"].as_array().unwrap().iter().enumerate() {
        let path = dir.join(format!("group-{i}.json"));
        std::fs::write(&path, jwks(group).to_string()).unwrap();
        let id = identity(&path).await;
        for test in group["tests"].as_array().unwrap() {
            let tc = &test["tcId"];
            let started = Instant::now();
            let result = id
                .verify_bearer(&format!("Bearer {}", test["jws"].as_str().unwrap()), NOW)
                .await;
            assert!(
                matches!(result, Err(IdentityError::InvalidToken(_))),
                "{name} tcId {tc}: {:?}",
                result.map(|s| s.id)
            );
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{name} tcId {tc}"
            );
            replayed += 1;
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    (replayed, file["numberOfTests"].as_u64().unwrap())
}

#[tokio::test]
async fn wycheproof_tokens_without_claims_are_refused_promptly_and_without_panic() {
    assert_eq!(replay("json_web_signature_test.json").await, (401, 401));
    assert_eq!(replay("json_web_key_test.json").await, (26, 26));
}
