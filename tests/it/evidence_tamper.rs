//! A real spool, written through the `Evidence` implementation, then tampered with: a flipped
//! byte, a deleted record, a deleted checkpoint, two lines swapped, a truncated file, a record
//! changed and its checkpoint forged with another key. `audit verify` names each at the right
//! record — the library, and the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::envoy::{TempDir, manifest_dir};
use serde_json::{Value, json};
use stepguard::decision::{Decision, Verdict};
use stepguard::evidence::audit::{self, ProblemKind};
use stepguard::evidence::{
    Evidence, EvidenceContext, Origin, PublicKey, Recorder, SigningKey, SpoolEvidence,
    SpoolSettings,
};
use stepguard::identity::Subject;
use stepguard::txn::Transaction;

const RECORDS: usize = 8;

/// A tampering: its name, the tampered lines, and what verify must report (kind, line, seq).
type Case = (&'static str, Vec<Vec<u8>>, ProblemKind, usize, u64);

/// Writes `RECORDS` decisions through the spool and closes it; the segment and the public key.
async fn spool(dir: &Path) -> (PathBuf, PublicKey, Vec<Vec<u8>>) {
    let key = SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().unwrap()).unwrap();
    let public = key.public_key();
    let settings = SpoolSettings::new(dir.join("spool"));
    let spool = SpoolEvidence::open(settings, key, Recorder::default(), false);
    let subject = Subject::from_claims(
        json!({"iss": "https://idp", "sub": "alice", "acr": "aal2", "auth_time": 1}),
        10,
        None,
    );
    let origin = Origin::default();
    for i in 0..RECORDS {
        let mut decision = Decision::new(format!("d-{i}"), Verdict::Allow, "fresh_session");
        decision.subject = Some("https://idp|alice".into());
        let txn = Transaction {
            digest: format!("k1:txn-{i}"),
            key_id: "k1".into(),
            previous_digests: Vec::new(),
            bound: BTreeMap::from([("body.amount".to_string(), Some(format!("n:{i}")))]),
            value: None,
            currency: None,
        };
        let ctx = EvidenceContext {
            decision: &decision,
            txn: Some(&txn),
            subject: Some(&subject),
            origin: &origin,
        };
        spool.record(&ctx).await.unwrap();
    }
    spool.close().await;
    let files = audit::expand(&[dir.join("spool")]).unwrap();
    assert_eq!(files.len(), 1);
    let text = std::fs::read(&files[0]).unwrap();
    let lines = text
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    (files[0].clone(), public, lines)
}

/// `lines` written as a segment with the original's name in a fresh directory.
fn tampered(dir: &Path, name: &str, segment: &Path, lines: &[Vec<u8>]) -> PathBuf {
    let path = dir.join(name).join(segment.file_name().unwrap());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, lines.concat()).unwrap();
    path
}

fn seq_at(lines: &[Vec<u8>], i: usize) -> u64 {
    serde_json::from_slice::<Value>(&lines[i]).unwrap()["seq"]
        .as_u64()
        .unwrap()
}

/// The index of the `n`th decision line (checkpoints are between them).
fn decision_line(lines: &[Vec<u8>], n: usize) -> usize {
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| serde_json::from_slice::<Value>(l).unwrap()["kind"] == "decision")
        .nth(n)
        .unwrap()
        .0
}

/// `line` changed, linked after `prev` and re-sealed by hand exactly as the spool seals:
/// canonical form (the record's own bytes are canonical, so a parse and re-serialize with sorted
/// keys is it), signed by `signer` when given (a checkpoint). The line and its hash.
fn reseal(
    line: &[u8],
    prev: &str,
    change: impl Fn(&mut serde_json::Map<String, Value>),
    signer: Option<&SigningKey>,
) -> (Vec<u8>, String) {
    let Value::Object(mut record) = serde_json::from_slice::<Value>(line).unwrap() else {
        panic!()
    };
    change(&mut record);
    record.insert("prev".into(), prev.into());
    if let Some(head) = record.get_mut("checkpoint").and_then(|c| c.get_mut("head")) {
        head["hash"] = prev.into();
    }
    record.remove("hash");
    record.remove("sig");
    record.remove("key_id");
    if let Some(key) = signer {
        record.insert("key_id".into(), key.id().into());
    }
    let unsigned = serde_json::to_vec(&record).unwrap(); // BTreeMap: sorted, ASCII keys
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &unsigned);
    let hex: String = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    if let Some(key) = signer {
        record.insert("sig".into(), key.sign(&unsigned).into());
    }
    record.insert("hash".into(), hex.clone().into());
    let mut out = serde_json::to_vec(&record).unwrap();
    out.push(b'\n');
    (out, hex)
}

/// Record `k` changed (its hash recomputed) and the checkpoint after it re-sealed over it and
/// signed with another key: what someone without the signing key can do at best.
fn forged(lines: &[Vec<u8>], k: usize) -> Vec<Vec<u8>> {
    let other = SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().unwrap()).unwrap();
    let prev = serde_json::from_slice::<Value>(&lines[k - 1]).unwrap()["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let mut l = lines.to_vec();
    let (record, hash) = reseal(
        &l[k],
        &prev,
        |r| {
            r.insert("decision_id".into(), "forged".into());
        },
        None,
    );
    l[k] = record;
    l[k + 1] = reseal(&l[k + 1], &hash, |_| {}, Some(&other)).0;
    l
}

#[tokio::test]
async fn verify_names_the_first_tampered_record() {
    let tmp = TempDir::new("evidence-tamper");
    let (segment, key, lines) = spool(tmp.path()).await;
    let keys = std::slice::from_ref(&key);
    let report = audit::verify(std::slice::from_ref(&segment), keys).unwrap();
    assert!(report.ok(), "{report}");
    assert_eq!(report.chains[0].decisions, RECORDS as u64);
    // One batch per record here (each waited for): genesis, one each, shutdown.
    assert_eq!(report.chains[0].checkpoints, RECORDS as u64 + 2, "{report}");
    assert_eq!(report.chains[0].unsigned_tail, None);

    let k = decision_line(&lines, 4);
    assert_eq!(
        serde_json::from_slice::<Value>(&lines[k + 1]).unwrap()["checkpoint"]["covers"]["from"],
        seq_at(&lines, k),
        "the line after a record is the checkpoint covering it"
    );
    let cases: Vec<Case> = vec![
        (
            "flip",
            {
                let mut l = lines.clone();
                let at = l[k].len() / 3;
                l[k][at] ^= 0x04;
                l
            },
            ProblemKind::Altered,
            k + 1,
            seq_at(&lines, k),
        ),
        (
            "delete",
            {
                let mut l = lines.clone();
                l.remove(k);
                l
            },
            ProblemKind::Removed,
            k + 1,
            seq_at(&lines, k),
        ),
        (
            "delete-checkpoint",
            {
                let mut l = lines.clone();
                l.remove(k + 1);
                l
            },
            ProblemKind::Removed,
            k + 2,
            seq_at(&lines, k + 1),
        ),
        (
            "reorder",
            {
                let mut l = lines.clone();
                l.swap(k, k + 1);
                l
            },
            ProblemKind::Reordered,
            k + 1,
            seq_at(&lines, k + 1),
        ),
        (
            "truncate",
            {
                let mut l = lines.clone();
                let last = l.len() - 1;
                let half = l[last].len() / 2;
                l[last].truncate(half);
                l
            },
            ProblemKind::Truncated,
            lines.len(),
            seq_at(&lines, lines.len() - 1),
        ),
        (
            "forge",
            forged(&lines, k),
            ProblemKind::Signature,
            k + 2,
            seq_at(&lines, k + 1),
        ),
    ];
    for (name, lines, kind, line, seq) in cases {
        let path = tampered(tmp.path(), name, &segment, &lines);
        let report = audit::verify(&[path], keys).unwrap();
        let problem = report
            .first_problem()
            .unwrap_or_else(|| panic!("{name}: not caught"));
        assert_eq!(
            (problem.kind, problem.line, problem.seq),
            (kind, line, Some(seq)),
            "{name}: {problem}"
        );
    }

    // The forged checkpoint, checked without keys: the chain breaks right after it.
    let path = tmp.path().join("forge").join(segment.file_name().unwrap());
    let problem = audit::verify(&[path], &[])
        .unwrap()
        .first_problem()
        .cloned()
        .unwrap();
    assert_eq!(
        (problem.kind, problem.line),
        (ProblemKind::Altered, k + 2),
        "{problem}"
    );

    // The last batch's checkpoint and the shutdown one deleted: verify reports the records
    // after the last checkpoint as an unsigned tail.
    let cut = &lines[..lines.len() - 2];
    let path = tampered(tmp.path(), "tail", &segment, cut);
    let report = audit::verify(&[path], keys).unwrap();
    let last = seq_at(&lines, lines.len() - 3);
    assert_eq!(
        report.chains[0].unsigned_tail,
        Some((last, last)),
        "{report}"
    );
}

#[tokio::test]
async fn the_binary_verifies_and_exports() {
    let tmp = TempDir::new("evidence-tamper-cli");
    let (segment, key, lines) = spool(tmp.path()).await;
    let pem = tmp.path().join("key.pub");
    std::fs::write(&pem, key.to_pem()).unwrap();
    let stepguard = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stepguard"));
        cmd.current_dir(manifest_dir());
        cmd
    };

    let ok = stepguard()
        .args(["audit", "verify"])
        .arg(tmp.path().join("spool"))
        .arg("--key")
        .arg(&pem)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        stdout.contains("signatures: verified") && stdout.contains("OK"),
        "{stdout}"
    );

    let k = decision_line(&lines, 2);
    let mut removed = lines.clone();
    removed.remove(k);
    let path = tampered(tmp.path(), "delete", &segment, &removed);
    let bad = stepguard()
        .args(["audit", "verify", "--key"])
        .arg(&pem)
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    let expected = format!(
        "REMOVED: {}:{} seq {}",
        path.display(),
        k + 1,
        seq_at(&lines, k)
    );
    assert!(stderr.contains(&expected), "{stderr}");

    let export = stepguard()
        .args([
            "audit",
            "export",
            "--subject",
            "alice",
            "--transaction",
            "k1:txn-3",
        ])
        .arg(&segment)
        .output()
        .unwrap();
    assert!(export.status.success());
    let out = String::from_utf8_lossy(&export.stdout);
    let records: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "{out}");
    assert_eq!(records[0]["decision_id"], "d-3");

    let public = stepguard()
        .args(["audit", "public-key"])
        .arg(manifest_dir().join("deploy/local/evidence-signing-key.DEV-ONLY.pem"))
        .output()
        .unwrap();
    let shipped = std::fs::read_to_string(
        manifest_dir().join("deploy/local/evidence-signing-key.DEV-ONLY.pub"),
    )
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&public.stdout), shipped);
}
