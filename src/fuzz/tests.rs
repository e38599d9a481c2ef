//! Replays every file of `tests/fuzz-corpus/<target>/` through its harness (the seeds, and the
//! crashing or new-coverage inputs the fuzzer found): none may panic. Each harness asserts its
//! invariants (see its module), so a replay also checks that no corpus input is, say, approved
//! without a credential. Plus checks that the harnesses reach what they claim to, so a corpus
//! that no longer gets past the first branch fails here rather than fuzzing nothing.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use super::world::{NOW, World};
use super::*;
use crate::decision::Verdict;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz-corpus")).join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no corpus", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

fn replay(target: &str) {
    let harness = super::target(target).unwrap();
    let failed: Vec<String> = corpus(target)
        .into_iter()
        .filter_map(|(path, bytes)| {
            catch_unwind(AssertUnwindSafe(|| harness(&bytes)))
                .is_err()
                .then(|| path.display().to_string())
        })
        .collect();
    assert!(failed.is_empty(), "{target}: panicked on {failed:#?}");
}

#[test]
fn every_target_has_a_corpus_and_a_replay() {
    let dirs: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz-corpus"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    for (name, _) in TARGETS {
        assert!(dirs.iter().any(|d| d == name), "no corpus for {name}");
    }
    for dir in &dirs {
        assert!(target(dir).is_some(), "corpus {dir} has no target");
    }
}

#[test]
fn replay_pipeline() {
    replay("pipeline");
}

#[test]
fn replay_check_request() {
    replay("check_request");
}

#[test]
fn replay_jwt() {
    replay("jwt");
}

#[test]
fn replay_callback() {
    replay("callback");
}

#[test]
fn replay_config() {
    replay("config");
}

#[test]
fn replay_bundle() {
    replay("bundle");
}

/// Decides a `pipeline` input on the harness's world; its verdicts (first, then after the grant).
fn decide(input: &str) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    let out = &mut verdicts;
    with_world(|world: &'static World| async move {
        let input = request::decode(input.as_bytes());
        let d = world.pipeline.decide(input.raw.clone()).await;
        out.push(d.verdict.clone());
        if let (Some((acr, uses)), Verdict::Challenge { challenge_id, .. }) =
            (input.grant, &d.verdict)
        {
            request::mint_grant(world, challenge_id, &acr, uses).await;
            out.push(world.pipeline.decide(input.raw).await.verdict);
        }
    });
    verdicts
}

#[test]
fn the_pipeline_encoding_reaches_approvals_challenges_and_grants() {
    let transfer = "POST\n/v1/accounts/A1/transfers\nmint alice aal2 10\n-\ncontent-type: application/json\n\n{\"amount\":100,\"currency\":\"EUR\",\"payee\":\"bob\"}";
    assert_eq!(decide(transfer), [Verdict::Allow]);
    let export = "POST\n/v1/keys/k1/export\nmint alice aal1 3600\ngrant aal3 1\n\n";
    let verdicts = decide(export);
    assert!(
        matches!(verdicts[0], Verdict::Challenge { .. }),
        "{verdicts:?}"
    );
    assert_eq!(verdicts[1], Verdict::Allow);
    let forged = "POST\n/v1/keys/k1/export\nbearer e30.e30.AAAA\n-\n\n";
    assert!(matches!(decide(forged)[0], Verdict::Unauthenticated { .. }));
}

#[test]
fn the_pipeline_harness_catches_an_approval_without_a_credential() {
    // The invariant itself: a forged credential on a sensitive action that was approved.
    let harness_check = catch_unwind(|| {
        with_world(|world| async move {
            let mut d = world
                .pipeline
                .decide(request::decode(b"POST\n/v1/keys/k1/export\n-\n-\n\n").raw)
                .await;
            d.verdict = Verdict::Allow;
            request::check(world, &d, &request::Credential::None);
        })
    });
    assert!(harness_check.is_err());
}

#[test]
fn the_jwt_harness_verifies_minted_tokens_and_catches_unsigned_ones() {
    let token = world::token("alice", "aal2", 10).unwrap();
    let bearer = format!("Bearer {token}");
    let bearer = &bearer;
    with_world(|world| async move {
        let identity = &world.pipeline.identity;
        assert!(identity.verify_bearer(bearer, NOW).await.is_ok());
    });
    let (message, signature) = token.rsplit_once('.').unwrap();
    assert!(world::verify_dev_signature(message, signature));
    assert!(!world::verify_dev_signature(
        &format!("{message}x"),
        signature
    ));
}

#[test]
fn the_callback_seeds_reach_completion_and_each_refusal() {
    let status = |name: &str| {
        let path = format!(
            "{}/tests/fuzz-corpus/callback/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        callback::outcome(&std::fs::read(path).unwrap()).map(|s| s.as_u16())
    };
    assert_eq!(status("seed-complete"), Some(303));
    assert_eq!(status("seed-no-cookie"), Some(403));
    assert_eq!(status("seed-idp-error"), Some(400));
    assert_eq!(status("seed-refused-code"), Some(400));
    assert_eq!(status("seed-wrong-iss"), Some(400));
    assert_eq!(status("seed-bad-nonce"), Some(403));
    assert_eq!(status("seed-weak-acr"), Some(403));
    assert_eq!(status("seed-unknown-state"), Some(400));
}
