//! The `stepguard` binary: config check, policy test, check, and serve with graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::envoy::manifest_dir;
use crate::support::ports::free_port;

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
fn policy_schema_prints_the_committed_input_schema() {
    let out = stepguard().args(["policy", "schema"]).output().unwrap();
    assert!(out.status.success());
    let committed = std::fs::read_to_string("policies/schema/input.json").unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), committed);
}

/// Runs `stepguard check` on the quickstart config for a CheckRequest carrying `token`.
fn check(path: &str, token: &str, extra: &[&str]) -> std::process::Output {
    let request = serde_json::json!({"attributes": {"request": {"http": {
        "method": "POST", "path": path, "host": "api",
        "headers": {"authorization": format!("Bearer {token}")}}}}});
    let file = std::env::temp_dir().join(format!(
        "stepguard-check-{}-{}.json",
        std::process::id(),
        extra.join("")
    ));
    std::fs::write(&file, request.to_string()).unwrap();
    let out = stepguard()
        .args([
            "check",
            "--config",
            "deploy/local/stepguard.yaml",
            "--request",
        ])
        .arg(&file)
        .args(extra)
        .output()
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn check_explains_a_step_up_as_json() {
    let token = support::tokens::token("alice", "aal1", 60);
    let out = check(
        "/v1/keys/k1/export",
        &token,
        &["--format", "json", "--input"],
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let decision = &doc["decision"];
    assert_eq!(decision["verdict"]["verdict"], "challenge");
    assert_eq!(decision["action"], "keys.export");
    assert_eq!(decision["verdict"]["requirement"]["max_age"], 0);
    let explanation = &doc["explanation"];
    assert_eq!(explanation["engine"], "rego");
    assert_eq!(explanation["consulted"], true);
    assert_eq!(
        explanation["requirement"]["acr_values"],
        serde_json::json!(["aal3"])
    );
    assert_eq!(explanation["result"]["result"], "step_up");
    let reasons = explanation["result"]["reasons"].as_array().unwrap();
    assert!(reasons.contains(&"acr_too_low".into()), "{explanation}");
    assert!(
        reasons.contains(&"fresh_step_up_required".into()),
        "{explanation}"
    );
    // The rules that fired, evaluated on the very input the pipeline built.
    let authz = explanation["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["package"] == "data.stepguard.authz")
        .unwrap();
    assert_eq!(authz["rules"]["privileged"], true);
    assert_eq!(authz["rules"]["required_rank"], 2);
    assert_eq!(authz["rules"]["decision"], explanation["result"]);
    assert!(
        authz["rules"]["human_verdict"]["reasons"]
            .as_array()
            .unwrap()
            .contains(&"acr_too_low".into()),
        "{authz}"
    );
    assert_eq!(
        explanation["input"]["stepguard"]["action"]["name"],
        "keys.export"
    );
    assert_eq!(explanation["input"]["stepguard"]["subject"]["acr"], "aal1");
}

#[test]
fn check_explains_a_denial_as_text() {
    let mut claims = support::tokens::claims("carol", "aal3", 5);
    claims["roles"] = serde_json::json!(["break-glass"]);
    let token = support::tokens::sign(&claims);
    let out = check("/v1/keys/k1/export", &token, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("decision:     deny (reason: break_glass_justification_required)"),
        "{text}"
    );
    assert!(
        text.contains("reasons:      break_glass_justification_required, break_glass"),
        "{text}"
    );
    assert!(
        text.contains("policy:       rego stepguard/authz/decision"),
        "{text}"
    );
    assert!(text.contains("  data.stepguard.authz\n"), "{text}");
    assert!(text.contains("    break_glass = true\n"), "{text}");
    assert!(
        text.contains("  data.stepguard.policy.break_glass\n    active = true\n"),
        "{text}"
    );
    assert!(
        text.contains("\"denies\":[\"break_glass_justification_required\"]"),
        "{text}"
    );
    assert!(
        text.contains("(--input prints the input document)"),
        "{text}"
    );
    assert!(
        !text.contains("\"stepguard\": {"),
        "input printed without --input: {text}"
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
