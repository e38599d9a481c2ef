//! The real `stepguard serve` binary under load, killed with SIGKILL mid-flight twenty times and
//! restarted: after every restart the chain verifies, it is the same chain, and every approval a
//! client saw (by its `x-stepguard-decision-id`) has its record in the spool.
//!
//! What SIGKILL can and cannot prove: killing the process loses what it had not handed to the
//! kernel, so this shows an approval is never answered before its record was *written* and that
//! a torn tail is repaired on restart. The page cache survives a killed process, so it cannot
//! show the record reached the disk — that needs the machine to lose power, or `fdatasync` to
//! fail. Write failures are covered by `tests/it/evidence_unwritable.rs` and the spool's unit
//! tests (an unwritable spool), and at the syscall level by `tests/it/evidence_syscall_faults.rs`
//! (EIO injected into `fdatasync`, ENOSPC into `write`, with strace on the live process).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::binary::{Served, config_text, evidence_key, spool_records};
use crate::support::envoy::{TempDir, manifest_dir};
use crate::support::ports::free_port;
use crate::support::tokens::token;
use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use stepguard::evidence::PublicKey;
use stepguard::evidence::audit;

const ROUNDS: usize = 20;
const CLIENTS: usize = 8;

/// The quickstart config with absolute paths, its own ports, and the spool in `spool`.
fn config(dir: &Path, spool: &Path, grpc: u16, http: u16) -> PathBuf {
    let evidence = format!(
        "evidence:\n  spool:\n    dir: {}\n  signing_key_file: {}\n",
        spool.display(),
        evidence_key().display()
    );
    let path = dir.join("stepguard.yaml");
    std::fs::write(&path, config_text(grpc, http, &evidence)).unwrap();
    path
}

fn dev_key() -> PublicKey {
    PublicKey::load(&manifest_dir().join("deploy/local/evidence-signing-key.DEV-ONLY.pub")).unwrap()
}

fn transfer(amount: u64, bearer: &str) -> CheckRequest {
    let headers = [
        ("content-type", "application/json".to_string()),
        ("authorization", bearer.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "POST".into(),
                    host: "api.example.com".into(),
                    path: "/v1/accounts/A1/transfers".into(),
                    headers,
                    body: format!(r#"{{"amount": {amount}, "currency": "EUR", "payee": "bob"}}"#),
                    protocol: "HTTP/1.1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// Clients asking for approved transfers until `stop`; the decision ids of the approvals seen.
fn load(
    grpc: u16,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut tasks = Vec::new();
            for c in 0..CLIENTS as u64 {
                let (stop, seen) = (stop.clone(), seen.clone());
                tasks.push(tokio::spawn(async move {
                    let mut i = 0;
                    let mut bearer = String::new();
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(mut client) =
                            AuthorizationClient::connect(format!("http://127.0.0.1:{grpc}")).await
                        else {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        };
                        while !stop.load(Ordering::Relaxed) {
                            // A fresh subject every few requests: the shipped policy steps up a
                            // subject whose sensitive-request velocity is high.
                            if i % 5 == 0 {
                                let sub = format!("crash-{}-{c}-{i}", std::process::id());
                                bearer = format!("Bearer {}", token(&sub, "aal2", 5));
                            }
                            i += 1;
                            // Small amounts: approved on the fresh aal2 session.
                            let amount = 1 + (c * 1_000 + i) % 900;
                            let Ok(r) = client.check(transfer(amount, &bearer)).await else {
                                break;
                            };
                            if let Some(HttpResponse::OkResponse(ok)) = r.into_inner().http_response
                            {
                                let id = ok
                                    .headers
                                    .iter()
                                    .filter_map(|h| h.header.as_ref())
                                    .find(|h| h.key == "x-stepguard-decision-id");
                                seen.lock().unwrap().push(id.unwrap().value.clone());
                            }
                        }
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
    })
}

/// Every decision id in the spool.
fn recorded(spool: &Path) -> HashSet<String> {
    spool_records(spool)
        .iter()
        .filter_map(|r| r["decision_id"].as_str().map(str::to_string))
        .collect()
}

fn verify(spool: &Path) -> audit::Report {
    let report = audit::verify(&[spool.to_path_buf()], &[dev_key()]).unwrap();
    assert!(report.ok(), "{report}");
    assert_eq!(report.chains.len(), 1, "one chain, continued: {report}");
    report
}

#[test]
fn killed_mid_load_and_restarted_the_chain_holds_every_approval() {
    let tmp = TempDir::new("evidence-crash");
    let spool = tmp.path().join("spool");
    let log = tmp.path().join("stepguard.log");
    let (grpc, http) = (free_port(), free_port());
    let config = config(tmp.path(), &spool, grpc, http);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut served = Served::start(&config, &log, grpc, http);
    let mut last_seq = 0;
    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = load(grpc, stop.clone(), seen.clone());
        let before = seen.lock().unwrap().len();
        let deadline = Instant::now() + Duration::from_secs(20);
        // Kill mid-flight, once enough approvals have been answered.
        while seen.lock().unwrap().len() < before + 200 {
            assert!(
                Instant::now() < deadline,
                "round {round}: too few approvals"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        served.child.kill().unwrap(); // SIGKILL
        served.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        clients.join().unwrap();

        served = Served::start(&config, &log, grpc, http);
        let report = verify(&spool);
        let chain = &report.chains[0];
        assert!(chain.last_seq.unwrap() > last_seq, "the chain grows");
        last_seq = chain.last_seq.unwrap();
        assert_eq!(chain.last_checkpoint.as_ref().unwrap().1, "startup");
        // What the kill left after the last batch's checkpoint was cut at the restart.
        assert_eq!(chain.unsigned_tail, None, "round {round}");
        let recorded = recorded(&spool);
        let seen = seen.lock().unwrap();
        let missing: Vec<&String> = seen.iter().filter(|id| !recorded.contains(*id)).collect();
        assert!(
            missing.is_empty(),
            "round {round}: approvals without a record: {missing:?}"
        );
        eprintln!(
            "round {round}: {} approvals seen, {} records, chain at seq {last_seq}",
            seen.len(),
            chain.decisions
        );
    }
    // A clean stop closes the chain with a checkpoint.
    Command::new("kill")
        .args(["-TERM", &served.pid().to_string()])
        .status()
        .unwrap();
    assert!(served.child.wait().unwrap().success());
    let report = verify(&spool);
    assert_eq!(
        report.chains[0].last_checkpoint.as_ref().unwrap().1,
        "shutdown"
    );
    assert_eq!(report.chains[0].after_checkpoint(), 0);
}
