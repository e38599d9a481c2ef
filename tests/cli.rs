//! The `stepguard` binary: config check, policy test, check, and serve with graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::envoy::manifest_dir;
use support::ports::free_port;

fn stepguard() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stepguard"));
    cmd.current_dir(manifest_dir());
    cmd
}

fn temp_config(name: &str, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    let dir = manifest_dir().join("deploy/local");
    let text = std::fs::read_to_string(dir.join("stepguard.yaml")).unwrap();
    // Written beside the quickstart so relative paths resolve the same way.
    let path = dir.join(format!(".test-{name}-{}.yaml", std::process::id()));
    std::fs::write(&path, edit(text)).unwrap();
    path
}

#[test]
fn config_check_accepts_the_quickstart_and_names_bad_fields() {
    let ok = stepguard()
        .args(["config", "check", "deploy/local/stepguard.yaml"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = temp_config("bad", |t| t.replace("budget_ms: 250", "budget_ms: 1"));
    let out = stepguard()
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    std::fs::remove_file(&bad).unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("decision.budget_ms"));
}

#[test]
fn serve_refuses_a_bad_config_before_binding() {
    let bad = temp_config("unknown", |t| {
        t.replace("listen:", "listen:\n  metrics: 127.0.0.1:1")
    });
    let out = stepguard()
        .args(["serve", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    std::fs::remove_file(&bad).unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("metrics"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn policy_test_reports_each_rego_test() {
    let out = stepguard()
        .args(["policy", "test", "policies"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.lines().filter(|l| l.contains(": PASS (")).count() >= 20,
        "{stdout}"
    );
    assert!(stdout.contains("PASS: "));
}

#[test]
fn check_explains_a_decision() {
    let token = support::tokens::token("alice", "aal1", 60);
    let request = serde_json::json!({"attributes": {"request": {"http": {
        "method": "POST", "path": "/v1/keys/k1/export", "host": "api",
        "headers": {"authorization": format!("Bearer {token}")}}}}});
    let path = std::env::temp_dir().join(format!("stepguard-check-{}.json", std::process::id()));
    std::fs::write(&path, request.to_string()).unwrap();
    let out = stepguard()
        .args([
            "check",
            "--config",
            "deploy/local/stepguard.yaml",
            "--request",
        ])
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decision: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(decision["verdict"]["verdict"], "challenge");
    assert_eq!(decision["action"], "keys.export");
    assert_eq!(decision["verdict"]["requirement"]["max_age"], 0);
    assert!(
        decision["reasons"].as_array().unwrap().len() >= 2,
        "{decision}"
    );
}

#[test]
fn serve_drains_and_exits_on_sigterm() {
    let (grpc, http) = (free_port(), free_port());
    let config = temp_config("serve", |t| {
        t.replace("127.0.0.1:9191", &format!("127.0.0.1:{grpc}"))
            .replace("127.0.0.1:9192", &format!("127.0.0.1:{http}"))
    });
    let mut child = stepguard()
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while support::envoy::http_get(http, "/readyz", Duration::from_millis(200)).map(|r| r.0)
        != Ok(200)
    {
        assert!(Instant::now() < deadline, "sidecar never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    std::fs::remove_file(&config).unwrap();
    assert!(status.success(), "{status:?}");
}
