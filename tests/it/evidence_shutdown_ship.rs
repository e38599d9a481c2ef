//! A replica that shuts down (a rollout, a node drain) ships its spool's last records to the
//! Redis Stream before it exits: with a poll interval far longer than the test, the background
//! shipper sees nothing after its first look, so every record in the stream at the end, the
//! shutdown checkpoint included, was shipped by the shutdown drain. The spool (an `emptyDir` in
//! Kubernetes) can then go with the pod without losing evidence.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::support::envoy::TempDir;
use crate::support::redis::RedisServer;
use crate::support::sidecar::{Sidecar, with_redis};
use crate::support::tokens::token;
use envoy_types::ext_authz::v3::pb::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

const KEY: &str = "test:shutdown";

/// The spool's records by seq, and the chain's id (one chain).
fn spool(dir: &Path) -> (String, BTreeMap<u64, String>) {
    let chain = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .expect("a chain directory");
    let mut lines = BTreeMap::new();
    for file in std::fs::read_dir(&chain).unwrap().flatten() {
        if file.path().extension().is_some_and(|e| e == "jsonl") {
            for line in std::fs::read_to_string(file.path()).unwrap().lines() {
                let record: serde_json::Value = serde_json::from_str(line).unwrap();
                lines.insert(record["seq"].as_u64().unwrap(), line.to_string());
            }
        }
    }
    let name = chain.file_name().unwrap().to_str().unwrap().to_string();
    (name, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ships_the_spools_last_records() {
    let redis = RedisServer::start();
    let dir = TempDir::new("shutdown-ship");
    let spool_dir = dir.path().join("spool");
    let spool_text = spool_dir.display().to_string();
    let url = redis.url();
    let store = with_redis(&url, 200);
    let mut sidecar = Sidecar::start(move |text| {
        let text = store(text);
        let start = text.find("\nevidence:\n").unwrap();
        format!(
            "{}evidence:\n  spool:\n    dir: {spool_text}\n  signing_key_file: evidence-signing-key.DEV-ONLY.pem\n  \
             stream:\n    key: {KEY}\n    poll_ms: 60000\n",
            &text[..start + 1]
        )
    });
    // Let the background shipper take its first look (and go to sleep for a minute).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut client = AuthorizationClient::connect(sidecar.grpc_url())
        .await
        .unwrap();
    let weak = format!("Bearer {}", token("alice", "aal1", 30));
    for key in ["K1", "K2", "K3"] {
        let request = support::check::request(
            "POST",
            &format!("/v1/keys/{key}/export"),
            &[
                ("authorization", &weak),
                ("content-type", "application/json"),
            ],
            "{}",
        );
        let answer = client.check(request).await.unwrap().into_inner();
        let Some(HttpResponse::DeniedResponse(denied)) = answer.http_response else {
            panic!("expected a challenge: {answer:?}");
        };
        assert_eq!(denied.status.unwrap().code, 401);
    }
    drop(client);
    sidecar.stop();

    let (chain, lines) = spool(&spool_dir);
    assert!(
        lines.len() >= 4,
        "three decisions and a checkpoint: {lines:?}"
    );
    let last = lines.values().last().unwrap();
    assert!(
        last.contains("checkpoint"),
        "the spool ends with the shutdown checkpoint: {last}"
    );
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(format!("{KEY}:{chain}"))
        .arg("-")
        .arg("+")
        .query(&mut redis.client())
        .unwrap();
    let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
    let expected: Vec<String> = lines.keys().map(|seq| format!("{seq}-0")).collect();
    assert_eq!(
        ids, expected,
        "every record of the spool is in the stream at exit"
    );
    for ((_, fields), line) in entries.iter().zip(lines.values()) {
        assert!(fields.contains(line), "shipped as stored");
    }
}
