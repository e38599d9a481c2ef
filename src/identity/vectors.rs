//! Project Wycheproof's JSON Web Signature and JSON Web Key vectors (`tests/fixtures/wycheproof/`,
//! every test case of both files) replayed against the signature layer of token verification:
//! header checks (`Jws::parse`) then the issuer's key and signature check
//! (`Issuer::check_signature`), with a JWKS holding the group's key (JWS vectors) or key set (JWK
//! vectors). The vectors sign payloads such as `foo`, not claim sets, so the full path
//! (`Identity`) refuses all of them before their signature matters; `tests/it/jws_vectors.rs`
//! replays them there.
//!
//! Each vector's expected verdict comes from its `result`: `invalid` must be refused; `valid` must
//! be accepted, except the ones in [`REFUSED_VALID`] / [`REFUSED_VALID_JWK`], which stepguard's
//! stricter rules refuse by design (the test checks that they are refused, and that the lists name
//! only `valid` vectors); `acceptable` (neither file has one today) must be refused: stepguard takes
//! the strict reading. Nothing is skipped: the test fails unless every test case of the file is
//! replayed and their number is the file's `numberOfTests`. Reliability catalogue B1 (JWS part).

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

const SYMMETRIC: &str = "HS*: symmetric algorithms are never accepted";

/// `valid` JWK vectors that stepguard refuses by design, and why.
const REFUSED_VALID_JWK: [(u64, &str); 4] = [
    (2, SYMMETRIC),
    (13, SYMMETRIC),
    (14, SYMMETRIC),
    (15, SYMMETRIC),
];

/// `valid` JWS vectors that stepguard refuses by design, and why.
const REFUSED_VALID: [(u64, &str); 14] = [
    (1, SYMMETRIC),
    (348, SYMMETRIC),
    (352, SYMMETRIC),
    (357, SYMMETRIC),
    (358, SYMMETRIC),
    (359, SYMMETRIC),
    (372, "HS256 (and a `?` inside the header's base64url)"),
    (373, "HS256 (and a `?` inside the payload's base64url)"),
    (376, SYMMETRIC),
    (377, SYMMETRIC),
    (
        346,
        "PS384 token, JWK declares `alg: PS256`: a key is used only for its own alg",
    ),
    (
        350,
        "PS384 token, JWK declares `alg: PS256`: a key is used only for its own alg",
    ),
    (347, "ES512 (P-521) is not supported by the JWT library"),
    (351, "ES512 (P-521) is not supported by the JWT library"),
];

/// A vector's `result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    Valid,
    Invalid,
    Acceptable,
}

impl Expected {
    fn of(test: &Value) -> Self {
        match test["result"].as_str() {
            Some("valid") => Self::Valid,
            Some("invalid") => Self::Invalid,
            Some("acceptable") => Self::Acceptable,
            other => panic!("tcId {}: unknown result {other:?}", test["tcId"]),
        }
    }
}

/// The outcome of one replayed vector.
struct Replay {
    tc_id: u64,
    expected: Expected,
    accepted: bool,
}

/// One file's replay: the vectors, and how many the file says it holds.
struct FileReplay {
    replays: Vec<Replay>,
    number_of_tests: u64,
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

async fn replay_all(file: &str) -> FileReplay {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{file}")).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    let dir = std::env::temp_dir().join(format!(
        "stepguard-wycheproof-{}-{}",
        std::process::id(),
        file["schema"].as_str().unwrap()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut replays = Vec::new();
    for (i, group) in file["testGroups"].as_array().unwrap().iter().enumerate() {
        let issuer = issuer(&dir, i, jwks(group)).await;
        for test in group["tests"].as_array().unwrap() {
            let token = test["jws"].as_str().unwrap();
            let accepted = match Jws::parse(token) {
                Ok(jws) => issuer.check_signature(&jws).await.is_ok(),
                Err(_) => false,
            };
            replays.push(Replay {
                tc_id: test["tcId"].as_u64().unwrap(),
                expected: Expected::of(test),
                accepted,
            });
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    FileReplay {
        replays,
        number_of_tests: file["numberOfTests"].as_u64().unwrap(),
    }
}

/// How many vectors of each kind were replayed, and what became of them.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    total: usize,
    valid: usize,
    invalid: usize,
    acceptable: usize,
    accepted: usize,
    refused_by_design: usize,
}

/// Checks every replay against its expected verdict and returns the tally.
fn judge(file: &FileReplay, refused: &[(u64, &str)]) -> Tally {
    let replays = &file.replays;
    let listed = |id: u64| refused.iter().any(|(r, _)| *r == id);
    let mut wrong = Vec::new();
    for r in replays {
        let ok = match r.expected {
            Expected::Invalid | Expected::Acceptable => !r.accepted,
            Expected::Valid => r.accepted != listed(r.tc_id),
        };
        if !ok {
            wrong.push((r.tc_id, r.expected, r.accepted));
        }
    }
    assert!(
        wrong.is_empty(),
        "(tcId, result, accepted) against the expected verdict: {wrong:?}"
    );
    for (id, why) in refused {
        let r = replays.iter().find(|r| r.tc_id == *id);
        assert!(
            r.is_some_and(|r| r.expected == Expected::Valid),
            "tcId {id} ({why}) is listed but is not a replayed `valid` vector"
        );
    }
    let count = |e| replays.iter().filter(|r| r.expected == e).count();
    let tally = Tally {
        total: replays.len(),
        valid: count(Expected::Valid),
        invalid: count(Expected::Invalid),
        acceptable: count(Expected::Acceptable),
        accepted: replays.iter().filter(|r| r.accepted).count(),
        refused_by_design: refused.len(),
    };
    println!("{tally:?}");
    assert_eq!(
        tally.total as u64, file.number_of_tests,
        "every vector of the file replayed (none skipped)"
    );
    let mut ids: Vec<u64> = replays.iter().map(|r| r.tc_id).collect();
    ids.sort_unstable();
    assert!(
        ids.iter().copied().eq(1..=file.number_of_tests),
        "tcIds are 1..=numberOfTests, each once"
    );
    tally
}

#[tokio::test]
async fn wycheproof_jws_vectors_invalid_refused_valid_accepted_unless_listed() {
    let tally = judge(
        &replay_all("json_web_signature_test.json").await,
        &REFUSED_VALID,
    );
    let expected = Tally {
        total: 401,
        valid: 46,
        invalid: 355,
        acceptable: 0,
        accepted: 46 - REFUSED_VALID.len(),
        refused_by_design: REFUSED_VALID.len(),
    };
    assert_eq!(tally, expected);
}

#[tokio::test]
async fn wycheproof_jwk_vectors_invalid_refused_valid_accepted_unless_listed() {
    let tally = judge(
        &replay_all("json_web_key_test.json").await,
        &REFUSED_VALID_JWK,
    );
    let expected = Tally {
        total: 26,
        valid: 5,
        invalid: 21,
        acceptable: 0,
        accepted: 5 - REFUSED_VALID_JWK.len(),
        refused_by_design: REFUSED_VALID_JWK.len(),
    };
    assert_eq!(tally, expected);
}
