#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use super::*;
use crate::evidence::chain::{Head, Sealer};
use crate::evidence::key::SigningKey;
use crate::evidence::record::Recorder;
use crate::evidence::spool::tests::TempDir;
use crate::evidence::tests::{body, key};

/// A segment of `n` decision records (checkpoint every 4th), its lines and public key.
fn segment(dir: &std::path::Path, n: u64) -> (PathBuf, Vec<Vec<u8>>, PublicKey) {
    let key = key();
    let public = key.public_key();
    let sealer = Sealer::new("c1".into(), key);
    let mut head = Head::genesis();
    let mut lines = Vec::new();
    for i in 0..n {
        let (line, h) = sealer.seal(body(&Recorder::default(), &format!("d-{i}")), &head);
        lines.push(line);
        head = h;
    }
    let path = dir.join("00000000000000000001.jsonl");
    std::fs::write(&path, lines.concat()).unwrap();
    (path, lines, public)
}

fn first_problem(path: &std::path::Path, key: &PublicKey) -> Problem {
    let report = verify(&[path.to_path_buf()], std::slice::from_ref(key)).unwrap();
    report.first_problem().cloned().expect("a problem")
}

#[test]
fn an_intact_segment_verifies() {
    let tmp = TempDir::new("audit-ok");
    let (path, _, key) = segment(tmp.path(), 6);
    let report = verify(std::slice::from_ref(&path), std::slice::from_ref(&key)).unwrap();
    assert!(report.ok(), "{report}");
    assert_eq!(
        (report.chains[0].records, report.chains[0].decisions),
        (6, 6)
    );
    let unsigned = verify(&[path], &[]).unwrap();
    assert!(unsigned.ok() && !unsigned.chains[0].signatures_checked);
    assert!(unsigned.to_string().contains("NOT checked"));
}

#[test]
fn each_kind_of_tampering_is_named_at_its_record() {
    let tmp = TempDir::new("audit-tamper");
    let (path, lines, key) = segment(tmp.path(), 6);
    let write = |lines: &[Vec<u8>]| std::fs::write(&path, lines.concat()).unwrap();

    // A record removed from the middle.
    let mut removed = lines.clone();
    removed.remove(2);
    write(&removed);
    let p = first_problem(&path, &key);
    assert_eq!(
        (p.kind, p.line, p.seq),
        (ProblemKind::Removed, 3, Some(3)),
        "{p}"
    );

    // Two records swapped.
    let mut swapped = lines.clone();
    swapped.swap(3, 4);
    write(&swapped);
    let p = first_problem(&path, &key);
    assert_eq!(
        (p.kind, p.line, p.seq),
        (ProblemKind::Reordered, 4, Some(5)),
        "{p}"
    );

    // The first record removed: the segment's name says where it starts.
    write(&lines[1..]);
    let p = first_problem(&path, &key);
    assert_eq!(
        (p.kind, p.line, p.seq),
        (ProblemKind::Removed, 1, Some(1)),
        "{p}"
    );

    // Cut inside the last record.
    let mut cut = lines.concat();
    cut.truncate(cut.len() - 30);
    std::fs::write(&path, &cut).unwrap();
    let p = first_problem(&path, &key);
    assert_eq!(
        (p.kind, p.line, p.seq),
        (ProblemKind::Truncated, 6, Some(6)),
        "{p}"
    );

    // A byte changed.
    let mut flipped = lines.clone();
    let i = flipped[1].len() / 2;
    flipped[1][i] ^= 0x20;
    write(&flipped);
    let p = first_problem(&path, &key);
    assert_eq!((p.kind, p.line), (ProblemKind::Altered, 2), "{p}");
}

#[test]
fn a_record_re_sealed_with_another_key_is_caught_with_and_without_keys() {
    let tmp = TempDir::new("audit-resign");
    let (path, mut lines, key) = segment(tmp.path(), 4);
    // Record 2's content changed, its hash recomputed and signed by another key.
    let rec = chain::check(lines[1].strip_suffix(b"\n").unwrap()).unwrap();
    let mut changed = rec.record.clone();
    changed.insert("decision_id".into(), "forged".into());
    changed.insert("chain".into(), "c1".into());
    let forger = Sealer::new(
        "c1".into(),
        SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().unwrap()).unwrap(),
    );
    let prev = Head {
        seq: 1,
        hash: chain::check(lines[0].strip_suffix(b"\n").unwrap())
            .unwrap()
            .hash,
    };
    lines[1] = forger.seal(changed, &prev).0;
    std::fs::write(&path, lines.concat()).unwrap();
    let p = first_problem(&path, &key);
    assert_eq!(
        (p.kind, p.line, p.seq),
        (ProblemKind::Signature, 2, Some(2)),
        "{p}"
    );
    assert_eq!(p.decision_id.as_deref(), Some("forged"));
    // Without keys the chain still breaks right after it.
    let report = verify(&[path], &[]).unwrap();
    let p = report.first_problem().unwrap();
    assert_eq!(
        (p.kind, p.line, p.seq),
        (ProblemKind::Altered, 2, Some(2)),
        "{p}"
    );
}

#[test]
fn export_filters_decisions() {
    let tmp = TempDir::new("audit-export");
    let (path, _, _) = segment(tmp.path(), 3);
    let run = |filter: Filter| {
        let mut out = Vec::new();
        export(std::slice::from_ref(&path), &filter, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    assert_eq!(run(Filter::default()).lines().count(), 3);
    let by_sub = run(Filter {
        subject: Some("alice".into()),
        ..Filter::default()
    });
    assert_eq!(by_sub.lines().count(), 3);
    let by_full = run(Filter {
        subject: Some("https://idp|alice".into()),
        transaction: Some("k1:abc".into()),
        ..Filter::default()
    });
    assert_eq!(by_full.lines().count(), 3);
    for filter in [
        Filter {
            subject: Some("bob".into()),
            ..Filter::default()
        },
        Filter {
            transaction: Some("k1:other".into()),
            ..Filter::default()
        },
        Filter {
            from: Some(1_700_000_001),
            ..Filter::default()
        },
        Filter {
            to: Some(1_700_000_000),
            ..Filter::default()
        },
    ] {
        assert_eq!(run(filter.clone()), "", "{filter:?}");
    }
    let inside = run(Filter {
        from: Some(1_700_000_000),
        to: Some(1_700_000_001),
        ..Filter::default()
    });
    assert_eq!(inside.lines().count(), 3);
}
