//! `stepguard audit privileges` on the spool of a scripted run of the real `stepguard serve`
//! binary (memory store, a spool, the grant API): alice (`admin`) exports a key after a step-up an
//! approval service completes through the grant API; bob (`admin`) only makes an ordinary
//! transfer; carol (`break-glass`) escalates a role under break-glass with a written
//! justification, after her step-up; dave (`customer`) makes a transfer and is refused a key
//! export. The binary's report — JSON, CSV, table, `--unused-days` — lists exactly that: the
//! decision ids, grant ids and times clients saw, the step-up methods, the justification, and
//! nothing else. A spool altered afterwards, or given without its key, is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::approvals::{complete, spool_and_grant_api};
use crate::support::binary::{Served, evidence_public_key, spool_records};
use crate::support::check::{answer, request};
use crate::support::envoy::TempDir;
use crate::support::tokens::{claims, now, sign};
use envoy_types::ext_authz::v3::pb::CheckRequest;
use serde_json::{Value, json};

const ISS: &str = "https://idp.stepguard.local";
const JUSTIFICATION: &str = "INC-20261205: production signing key compromised, rotating";

/// The binary's config: memory store, a spool, the grant API, a decision budget a loaded
/// machine keeps to.
fn config(dir: &Path, spool: &Path, grpc: u16, http: u16) -> PathBuf {
    let text = spool_and_grant_api(spool, grpc, http)
        .replacen("  budget_ms: 250\n", "  budget_ms: 3000\n", 1)
        .replacen("  timeout_ms: 100\n", "  timeout_ms: 1000\n", 1);
    let path = dir.join("stepguard.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `sub`'s bearer token at `acr`, signed in `age` seconds ago, with these roles and scope.
fn bearer(sub: &str, roles: &[&str], scope: &str, acr: &str, age: i64) -> String {
    let mut c = claims(sub, acr, age);
    c["roles"] = json!(roles);
    c["scope"] = json!(scope);
    format!("Bearer {}", sign(&c))
}

fn export(key: &str, bearer: &str, justification: Option<&str>) -> CheckRequest {
    let mut headers = vec![("authorization", bearer)];
    if let Some(j) = justification {
        headers.push(("x-break-glass-justification", j));
    }
    request("POST", &format!("/v1/keys/{key}/export"), &headers, "")
}

fn escalate(role: &str, bearer: &str, justification: Option<&str>) -> CheckRequest {
    let mut headers = vec![
        ("authorization", bearer),
        ("content-type", "application/json"),
    ];
    if let Some(j) = justification {
        headers.push(("x-break-glass-justification", j));
    }
    let body = r#"{"member": "carol"}"#;
    request(
        "POST",
        &format!("/v1/iam/roles/{role}/grants"),
        &headers,
        body,
    )
}

fn transfer(bearer: &str) -> CheckRequest {
    let headers = [
        ("authorization", bearer),
        ("content-type", "application/json"),
    ];
    let body = r#"{"amount": 100, "currency": "EUR", "payee": "bob"}"#;
    request("POST", "/v1/accounts/A1/transfers", &headers, body)
}

/// The status and, for an approval, its decision id (else the denial's body).
async fn check(served: &Served, req: CheckRequest) -> (u16, String) {
    answer(served.grpc_url(), req).await
}

/// The challenge `req` is answered with (RFC 9470 401).
async fn challenged(served: &Served, req: CheckRequest) -> String {
    let (status, body) = check(served, req).await;
    assert_eq!(status, 401, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    body["challenge_id"].as_str().unwrap().to_string()
}

/// The approval service completes challenge `id` (webauthn, a hardware key) for a sign-in at
/// `auth_time`: the grant's id.
async fn approve(served: &Served, id: &str, auth_time: i64) -> String {
    complete(served.grpc_url(), id, auth_time, "oncall-lead@example.com").await
}

/// What the run did, as clients saw it.
struct Run {
    start: i64,
    end: i64,
    alice_export: String,
    alice_grant: String,
    alice_auth_time: i64,
    carol_escalate: String,
    carol_grant: String,
}

async fn script(served: &Served) -> Run {
    let start = now();
    let alice = bearer("alice", &["admin"], "openid keys:admin", "aal1", 60);
    let id = challenged(served, export("k-7", &alice, None)).await;
    let alice_auth_time = now();
    let alice_grant = approve(served, &id, alice_auth_time).await;
    let (status, alice_export) = check(served, export("k-7", &alice, None)).await;
    assert_eq!(status, 200, "{alice_export}");

    let bob = bearer("bob", &["admin"], "openid keys:admin", "aal3", 5);
    assert_eq!(check(served, transfer(&bob)).await.0, 200);

    let carol = bearer("carol", &["break-glass"], "openid", "aal2", 10);
    let glass = Some(JUSTIFICATION);
    let id = challenged(served, escalate("owner", &carol, glass)).await;
    let carol_grant = approve(served, &id, now()).await;
    let (status, carol_escalate) = check(served, escalate("owner", &carol, glass)).await;
    assert_eq!(status, 200, "{carol_escalate}");

    let dave = bearer("dave", &["customer"], "openid payments", "aal2", 5);
    assert_eq!(check(served, transfer(&dave)).await.0, 200);
    let (status, body) = check(served, export("k-9", &dave, None)).await;
    assert_eq!(status, 401, "dave is challenged, never approved: {body}");
    Run {
        start,
        end: now(),
        alice_export,
        alice_grant,
        alice_auth_time,
        carol_escalate,
        carol_grant,
    }
}

/// `stepguard audit privileges <spool> --key <dev key> <args>`: exit status, stdout, stderr.
fn privileges(spool: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stepguard"))
        .args(["audit", "privileges"])
        .arg(spool)
        .arg("--key")
        .arg(evidence_public_key())
        .args(args)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn report(spool: &Path, args: &[&str]) -> Value {
    let (ok, out, err) = privileges(spool, &[&["--format", "json"][..], args].concat());
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn id(sub: &str) -> String {
    format!("{ISS}|{sub}")
}

fn subject<'a>(report: &'a Value, sub: &str) -> &'a Value {
    let all = report["subjects"].as_array().unwrap();
    all.iter().find(|s| s["id"] == id(sub).as_str()).unwrap()
}

fn within(run: &Run, v: &Value) {
    let unix = v["unix"].as_i64().unwrap();
    assert!(
        run.start <= unix && unix <= run.end,
        "{v} not within the run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_lists_exactly_what_a_scripted_run_did() {
    let dir = TempDir::new("audit-privileges");
    let spool = dir.path().join("spool");
    let (grpc, http) = Served::ports();
    let path = config(dir.path(), &spool, grpc, http);
    let mut served = Served::start(&path, &dir.path().join("stepguard.log"), grpc, http);
    let run = script(&served).await;
    served.stop();

    let r = report(&spool, &[]);
    assert_eq!(r["verified"], true);
    let written = spool_records(&spool)
        .iter()
        .filter(|r| r["kind"] != "checkpoint")
        .count();
    assert_eq!(r["records"], written as u64);
    let ids: Vec<&str> = r["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id("alice"), id("bob"), id("carol"), id("dave")]);
    assert_eq!(r["privileged"]["roles"], json!(["admin", "break-glass"]));
    assert_eq!(r["privileged"]["scopes"], json!(["keys:admin"]));

    let alice = subject(&r, "alice");
    assert_eq!(alice["issuer"], ISS);
    assert_eq!(alice["privileged_roles"], json!(["admin"]));
    assert_eq!(alice["privileged_scopes"], json!(["keys:admin"]));
    let uses = alice["privileged_actions"].as_array().unwrap();
    assert_eq!(uses.len(), 1, "{uses:?}");
    assert_eq!(uses[0]["action"], "keys.export");
    assert_eq!(uses[0]["decision_id"], run.alice_export.as_str());
    assert_eq!(uses[0]["grant_id"], run.alice_grant.as_str());
    assert_eq!(uses[0]["break_glass"], false);
    within(&run, &uses[0]);
    assert_eq!(alice["last_privileged_use"]["at"], uses[0]["at"]);
    let steps = alice["step_ups"].as_array().unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0]["method"], "grant_api");
    assert_eq!(steps[0]["acr"], "aal3");
    assert_eq!(steps[0]["amr"], json!(["hwk", "webauthn"]));
    assert_eq!(steps[0]["auth_time"], run.alice_auth_time);
    assert_eq!(steps[0]["grant_id"], run.alice_grant.as_str());
    assert_eq!(steps[0]["action"], "keys.export");
    within(&run, &steps[0]);
    assert!(steps[0]["unix"].as_i64() <= uses[0]["unix"].as_i64());
    assert_eq!(alice["break_glass"], json!([]));

    let bob = subject(&r, "bob");
    assert_eq!(bob["privileged_roles"], json!(["admin"]));
    assert_eq!(bob["privileged_scopes"], json!(["keys:admin"]));
    for none in ["privileged_actions", "step_ups", "break_glass"] {
        assert_eq!(bob[none], json!([]), "bob's {none}");
    }
    assert_eq!(bob["last_privileged_use"], Value::Null);

    let carol = subject(&r, "carol");
    assert_eq!(carol["privileged_roles"], json!(["break-glass"]));
    assert_eq!(carol["privileged_scopes"], json!([]));
    let uses = carol["privileged_actions"].as_array().unwrap();
    assert_eq!(uses.len(), 1, "{uses:?}");
    assert_eq!(uses[0]["action"], "iam.escalate");
    assert_eq!(uses[0]["decision_id"], run.carol_escalate.as_str());
    assert_eq!(uses[0]["grant_id"], run.carol_grant.as_str());
    assert_eq!(uses[0]["break_glass"], true);
    let glass = carol["break_glass"].as_array().unwrap();
    assert_eq!(glass.len(), 1);
    assert_eq!(glass[0]["justification"], JUSTIFICATION);
    assert_eq!(glass[0]["decision_id"], run.carol_escalate.as_str());
    within(&run, &glass[0]);
    assert_eq!(carol["step_ups"].as_array().unwrap().len(), 1);
    assert_eq!(carol["step_ups"][0]["method"], "grant_api");

    let dave = subject(&r, "dave");
    assert_eq!(dave["roles"], json!(["customer"]));
    for none in [
        "privileged_roles",
        "privileged_scopes",
        "privileged_actions",
        "step_ups",
    ] {
        assert_eq!(dave[none], json!([]), "dave's {none}");
    }
    assert_eq!(r["unused"], json!([]), "not asked");

    unused(&spool, &run);
    csv_and_table(&spool, &run);
    refusals(dir.path(), &spool);
}

/// Within a day of the run only bob's privilege went unused; a month on, everyone's did.
fn unused(spool: &Path, run: &Run) {
    let r = report(spool, &["--unused-days", "1"]);
    assert_eq!(r["unused"], json!([id("bob")]));
    assert_eq!(r["reference_time"]["source"], "latest_record");
    within(run, &r["reference_time"]);
    assert_eq!(
        subject(&r, "dave")["unused"],
        false,
        "dave holds no privilege"
    );

    let later = (run.end + 31 * 86_400).to_string();
    let r = report(spool, &["--unused-days", "30", "--now", &later]);
    assert_eq!(r["unused"], json!([id("alice"), id("bob"), id("carol")]));
    let r = report(
        spool,
        &["--unused-days", "30", "--now", &later, "--role", "customer"],
    );
    assert_eq!(
        r["unused"],
        json!([id("alice"), id("bob"), id("carol"), id("dave")])
    );
}

fn csv_and_table(spool: &Path, run: &Run) {
    let (ok, csv, err) = privileges(spool, &["--format", "csv", "--unused-days", "1"]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 5, "{csv}");
    assert!(rows[0].starts_with("subject,issuer,sub,kind,first_seen,last_seen,roles,"));
    assert!(rows[1].starts_with(&format!("{},{ISS},alice,human,", id("alice"))));
    assert!(
        rows[1].contains(",admin,keys:admin,1,keys.export,"),
        "{}",
        rows[1]
    );
    assert!(
        rows[1].ends_with(",1,grant_api,hwk;webauthn,0,,false"),
        "{}",
        rows[1]
    );
    assert!(rows[2].ends_with(",0,,,0,,,0,,true"), "bob: {}", rows[2]);
    assert!(
        rows[3].ends_with(&format!(",1,\"{JUSTIFICATION}\",false")),
        "{}",
        rows[3]
    );
    assert!(rows[4].starts_with(&format!("{},", id("dave"))));

    let (ok, table, err) = privileges(spool, &["--unused-days", "1"]);
    assert!(ok, "{err}");
    assert!(
        table.starts_with("evidence: verified, 1 chain(s), "),
        "{table}"
    );
    let row = |sub: &str| {
        let prefix = format!("{} ", id(sub));
        table.lines().find(|l| l.starts_with(&prefix)).unwrap()
    };
    assert!(row("bob").ends_with("yes"), "{table}");
    assert!(row("alice").ends_with("no"), "{table}");
    let decision = format!("keys.export  decision {}", run.alice_export);
    assert!(table.contains(&decision), "{table}");
    assert!(
        table.contains(&format!("justification {JUSTIFICATION:?}")),
        "{table}"
    );
    assert!(
        table.contains("method grant_api  acr aal3  amr hwk,webauthn"),
        "{table}"
    );
    assert!(
        table.contains(&format!("unused (1):\n  {}\n", id("bob"))),
        "{table}"
    );
}

/// Without its key, or altered, the evidence is refused.
fn refusals(dir: &Path, spool: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_stepguard"))
        .args(["audit", "privileges"])
        .arg(spool)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--key"));

    let copy = dir.join("altered");
    for file in stepguard::evidence::audit::expand(&[spool.to_path_buf()]).unwrap() {
        let chain = copy.join(file.parent().unwrap().file_name().unwrap());
        std::fs::create_dir_all(&chain).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let text = text.replace("production signing key", "routine signing key");
        std::fs::write(chain.join(file.file_name().unwrap()), text).unwrap();
    }
    let (ok, out, err) = privileges(&copy, &[]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("the evidence does not verify: ALTERED"),
        "{err}"
    );
}
