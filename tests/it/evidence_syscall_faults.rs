//! Evidence write failures injected into the running `stepguard serve` process at the syscall
//! level with `strace` (ptrace; `-e inject=…`): `fdatasync` failing with EIO (how the spool makes
//! a batch durable: `File::sync_data`) and `write` to the spool's segment failing with ENOSPC.
//! strace is attached to the live process for the fault and detached to clear it.
//!
//! While the fault lasts: every approval — a session approval and a grant-based one — is a 503
//! `evidence_unavailable`; public routes pass; challenges are still answered. The grant is not
//! burnt: once the fault clears it approves its transaction once, and only once. Afterwards the
//! chain verifies as one chain, every approval a client saw has its record, and no record says
//! "allow" for an approval the client was refused.
//!
//! What this proves that SIGKILL (`evidence_crash.rs`) cannot: an approval is never answered
//! when the kernel reports its record did not reach the disk, and the spool does not treat the
//! failed batch as durable (it is cut, and the chain continues after the last durable record).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::approvals::complete;
use crate::support::binary::{Served, evidence_public_key, spool_records};
use crate::support::envoy::TempDir;
use crate::support::tokens::{now, token};
use envoy_types::ext_authz::v3::pb::CheckRequest;
use serde_json::Value;
use stepguard::evidence::{PublicKey, audit};

/// The binary's config: memory store, a spool in `spool`, the grant API for an approval service.
fn config(dir: &Path, spool: &Path, grpc: u16, http: u16) -> PathBuf {
    let path = dir.join("stepguard.yaml");
    let text = crate::support::approvals::spool_and_grant_api(spool, grpc, http);
    std::fs::write(&path, text).unwrap();
    path
}

/// What a client saw: the status, the decision id of an approval, the body of a denial.
async fn check(served: &Served, req: CheckRequest) -> (u16, String) {
    crate::support::check::answer(served.grpc_url(), req).await
}

fn transfer(sub: &str, acr: &str) -> CheckRequest {
    let bearer = format!("Bearer {}", token(sub, acr, 5));
    let headers = [
        ("content-type", "application/json"),
        ("authorization", bearer.as_str()),
    ];
    let body = r#"{"amount": 100, "currency": "EUR", "payee": "bob"}"#;
    crate::support::check::request("POST", "/v1/accounts/A1/transfers", &headers, body)
}

fn export(key: &str) -> CheckRequest {
    let bearer = format!("Bearer {}", token("alice", "aal1", 60));
    let headers = [("authorization", bearer.as_str())];
    crate::support::check::request("POST", &format!("/v1/keys/{key}/export"), &headers, "")
}

fn public() -> CheckRequest {
    crate::support::check::request("GET", "/public/hello", &[], "")
}

/// An approval service completes alice's challenge for exporting `key` with her sign-in at
/// `auth_time` (one sign-in completes one challenge): a grant for it.
async fn grant_for(served: &Served, key: &str, auth_time: i64) {
    let (status, body) = check(served, export(key)).await;
    assert_eq!(status, 401, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    let id = body["challenge_id"].as_str().unwrap();
    complete(served.grpc_url(), id, auth_time, "bob@example.com").await;
}

/// strace attached to every thread of `pid`, injecting `inject` into the syscalls `trace`
/// (limited to `path` when given). Returns once every thread is traced.
fn inject(pid: u32, trace: &str, inject: &str, path: Option<&Path>) -> Child {
    let mut cmd = Command::new(std::env::var("STEPGUARD_STRACE").unwrap_or("strace".into()));
    cmd.args(["-f", "-qq", "-o", "/dev/null", "-p", &pid.to_string()])
        .args([
            "-e",
            &format!("trace={trace}"),
            "-e",
            &format!("inject={inject}"),
        ]);
    if let Some(path) = path {
        cmd.arg("-P").arg(path);
    }
    let child = cmd.stdout(Stdio::null()).spawn().unwrap_or_else(|e| {
        panic!("strace not found ({e}): these tests need it (Debian: apt-get install strace)")
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !traced(pid) {
        assert!(Instant::now() < deadline, "strace did not attach");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Whether every thread of `pid` is being traced.
fn traced(pid: u32) -> bool {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("status"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("TracerPid:") && l.trim_end() != "TracerPid:\t0")
    })
}

/// Detaches strace (it detaches on SIGTERM) and waits until no thread is traced.
fn clear(mut strace: Child, pid: u32) {
    Command::new("kill")
        .args(["-TERM", &strace.id().to_string()])
        .status()
        .unwrap();
    strace.wait().unwrap();
    let untraced = |t: std::fs::DirEntry| {
        std::fs::read_to_string(t.path().join("status"))
            .unwrap_or_default()
            .contains("TracerPid:\t0")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .all(untraced)
    {
        assert!(Instant::now() < deadline, "strace did not detach");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Retries a session approval until it is approved again (the spool reopens within a second).
async fn approvals_resume(served: &Served, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, id) = check(served, transfer(&format!("resume-{}", seen.len()), "aal2")).await;
        if status == 200 {
            seen.push(id);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "approvals did not resume: {status} {id}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// While the fault lasts: approvals refused, public routes and challenges answered.
async fn during_fault(served: &Served, label: &str, grant_key: &str) {
    for i in 0..3 {
        let (status, body) = check(served, transfer(&format!("{label}-{i}"), "aal2")).await;
        assert_eq!(status, 503, "{label}: a session approval: {body}");
        assert!(body.contains("evidence_unavailable"), "{body}");
    }
    let (status, body) = check(served, export(grant_key)).await;
    assert_eq!(status, 503, "{label}: a grant approval: {body}");
    assert!(body.contains("evidence_unavailable"), "{body}");
    assert_eq!(check(served, public()).await.0, 200, "{label}: public");
    let (status, body) = check(served, transfer(&format!("{label}-weak"), "aal1")).await;
    assert_eq!(status, 401, "{label}: a challenge: {body}");
}

/// Once the fault is cleared the grant approves its export once, then never again.
async fn grant_approves_exactly_once(served: &Served, key: &str, seen: &mut Vec<String>) {
    let (status, id) = check(served, export(key)).await;
    assert_eq!(
        status, 200,
        "the grant was burnt by the refused approval: {id}"
    );
    seen.push(id);
    let (status, body) = check(served, export(key)).await;
    assert_eq!(status, 401, "a single-use grant approves once: {body}");
}

/// Every decision id recorded as an approval in the spool.
fn recorded_allows(spool: &Path) -> HashSet<String> {
    spool_records(spool)
        .iter()
        .filter(|r| r["result"]["outcome"] == "allow")
        .filter_map(|r| r["decision_id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eio_on_fdatasync_and_enospc_on_write_refuse_approvals_and_burn_nothing() {
    let tmp = TempDir::new("evidence-syscall");
    let spool = tmp.path().join("spool");
    let (grpc, http) = Served::ports();
    let config = config(tmp.path(), &spool, grpc, http);
    let mut served = Served::start(&config, &tmp.path().join("stepguard.log"), grpc, http);
    let pid = served.pid();
    let mut seen = Vec::new();
    approvals_resume(&served, &mut seen).await;
    // Two approvals, two auth_times (one approval completes one challenge), whatever second the
    // clock ticks in between.
    let t = now();
    grant_for(&served, "k-eio", t).await;
    grant_for(&served, "k-enospc", t - 1).await;

    // EIO from fdatasync, every time, until strace is detached.
    let strace = inject(pid, "fdatasync", "fdatasync:error=EIO", None);
    during_fault(&served, "eio", "k-eio").await;
    clear(strace, pid);
    approvals_resume(&served, &mut seen).await;
    grant_approves_exactly_once(&served, "k-eio", &mut seen).await;

    // ENOSPC from write(2) on the segment being written.
    let chain = audit::expand(std::slice::from_ref(&spool)).unwrap();
    let segment = chain.iter().max().unwrap().clone();
    let strace = inject(pid, "write", "write:error=ENOSPC", Some(&segment));
    during_fault(&served, "enospc", "k-enospc").await;
    clear(strace, pid);
    approvals_resume(&served, &mut seen).await;
    grant_approves_exactly_once(&served, "k-enospc", &mut seen).await;

    served.stop();
    let key = PublicKey::load(&evidence_public_key()).unwrap();
    let report = audit::verify(std::slice::from_ref(&spool), &[key]).unwrap();
    assert!(report.ok(), "{report}");
    assert_eq!(report.chains.len(), 1, "one chain, continued: {report}");
    let allows = recorded_allows(&spool);
    for id in &seen {
        assert!(allows.contains(id), "approval {id} has no record");
    }
    assert_eq!(
        allows.len(),
        seen.len(),
        "every approval recorded is one a client saw (none of the refused ones)"
    );
}
