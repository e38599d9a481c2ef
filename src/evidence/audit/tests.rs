#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use super::*;
use crate::evidence::chain::{Head, Sealer};
use crate::evidence::key::SigningKey;
use crate::evidence::record::Recorder;
use crate::evidence::spool::tests::TempDir;
use crate::evidence::tests::body;

/// The key of every segment here (one per test binary), so the forgers' keys differ from it.
fn the_key() -> SigningKey {
    static PKCS8: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    SigningKey::from_pkcs8(PKCS8.get_or_init(|| SigningKey::generate_pkcs8().unwrap())).unwrap()
}

/// A segment of `n` decision records of format 1 (each signed, as before checkpoints per
/// batch), its lines and public key.
fn segment(dir: &std::path::Path, n: u64) -> (PathBuf, Vec<Vec<u8>>, PublicKey) {
    let key = the_key();
    let public = key.public_key();
    let sealer = Sealer::new("c1".into(), key);
    let mut head = Head::genesis();
    let mut lines = Vec::new();
    for i in 0..n {
        let (line, h) =
            sealer.seal_signed(v1(body(&Recorder::default(), &format!("d-{i}"))), &head);
        lines.push(line);
        head = h;
    }
    let path = dir.join("00000000000000000001.jsonl");
    std::fs::write(&path, lines.concat()).unwrap();
    (path, lines, public)
}

fn v1(mut body: serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    body.insert("v".into(), 1.into());
    body
}

/// A checkpoint body after `head`, covering `from..=head.seq` (none when `from` is past it).
fn checkpoint(reason: &str, head: &Head, from: u64) -> serde_json::Map<String, Value> {
    let mut cp =
        serde_json::json!({"reason": reason, "head": {"seq": head.seq, "hash": head.hash}});
    if from <= head.seq {
        cp["covers"] =
            serde_json::json!({"from": from, "to": head.seq, "count": head.seq + 1 - from});
    }
    let body = serde_json::json!({"v": 2, "kind": "checkpoint", "timestamp": "t", "unix": 1, "checkpoint": cp});
    body.as_object().unwrap().clone()
}

/// Format 2 as the writer seals it, after `head`: batches of `batch` unsigned records, each
/// closed by a signed checkpoint covering them. The lines and the new head.
fn batches(sealer: &Sealer, mut head: Head, batch: &[u64]) -> (Vec<Vec<u8>>, Head) {
    let mut lines = Vec::new();
    for (b, &n) in batch.iter().enumerate() {
        let from = head.seq + 1;
        for i in 0..n {
            let (line, h) = sealer.seal(body(&Recorder::default(), &format!("b{b}-{i}")), &head);
            lines.push(line);
            head = h;
        }
        let (line, h) = sealer.seal_signed(checkpoint("batch", &head, from), &head);
        lines.push(line);
        head = h;
    }
    (lines, head)
}

/// A segment of format 2: a genesis checkpoint, then batches of 3, 1 and 2 records. The key's
/// pkcs8 is the tests' `the_key()`.
fn segment_v2(dir: &std::path::Path) -> (PathBuf, Vec<Vec<u8>>, PublicKey, Sealer) {
    let sealer = Sealer::new("c1".into(), the_key());
    let (genesis, head) =
        sealer.seal_signed(checkpoint("genesis", &Head::genesis(), 1), &Head::genesis());
    let (mut lines, _) = batches(&sealer, head, &[3, 1, 2]);
    lines.insert(0, genesis);
    let path = dir.join("00000000000000000001.jsonl");
    std::fs::write(&path, lines.concat()).unwrap();
    (path, lines, the_key().public_key(), sealer)
}

fn head_of(line: &[u8]) -> Head {
    let r = chain::check(line.strip_suffix(b"\n").unwrap()).unwrap();
    Head {
        seq: r.seq,
        hash: r.hash,
    }
}

/// Line `i` changed by `change`, and the lines from `i` to `upto` (inclusive) re-sealed after
/// it — hashes and `prev` recomputed as a forger without the key can; checkpoints among them
/// keep their signature (now over other bytes) unless `key` re-signs them.
fn forge(
    lines: &mut [Vec<u8>],
    i: usize,
    upto: usize,
    change: impl Fn(&mut serde_json::Map<String, Value>),
    key: Option<&Sealer>,
) {
    let mut head = match i {
        0 => Head::genesis(),
        _ => head_of(&lines[i - 1]),
    };
    for (j, line) in lines.iter_mut().enumerate().take(upto + 1).skip(i) {
        let r = chain::check(line.strip_suffix(b"\n").unwrap()).unwrap();
        let mut rec = r.record.clone();
        if j == i {
            change(&mut rec);
        }
        rec.insert("prev".into(), head.hash.clone().into());
        if let Some(cp) = rec.get_mut("checkpoint").and_then(Value::as_object_mut) {
            cp.insert(
                "head".into(),
                serde_json::json!({"seq": head.seq, "hash": head.hash}),
            );
        }
        let sig = r.sig.clone();
        rec.remove("key_id");
        let unsigned = crate::evidence::canonical::canonical_object(&{
            let mut u = rec.clone();
            if let Some(id) = &r.key_id {
                u.insert("key_id".into(), id.clone().into());
            }
            u
        });
        let (new_line, h) = match (key, sig) {
            (Some(sealer), Some(_)) => sealer.seal_signed(rec, &head),
            (_, sig) => {
                if let Some(id) = &r.key_id {
                    rec.insert("key_id".into(), id.clone().into());
                }
                let hash = crate::evidence::canonical::sha256_hex(&unsigned);
                if let Some(sig) = sig {
                    rec.insert("sig".into(), sig.into());
                }
                rec.insert("hash".into(), hash.clone().into());
                let mut l = crate::evidence::canonical::canonical_object(&rec);
                l.push(b'\n');
                (l, Head { seq: r.seq, hash })
            }
        };
        *line = new_line;
        head = h;
    }
}

#[test]
fn format_2_verifies_with_one_signature_per_batch() {
    let tmp = TempDir::new("audit-v2");
    let (path, _, key, _) = segment_v2(tmp.path());
    let report = verify(std::slice::from_ref(&path), std::slice::from_ref(&key)).unwrap();
    assert!(report.ok(), "{report}");
    let c = &report.chains[0];
    assert_eq!((c.records, c.decisions, c.checkpoints), (10, 6, 4));
    assert_eq!((c.unsigned_tail, c.after_checkpoint()), (None, 0));
    // Another key: the checkpoints are what is signed, and they fail.
    let other = SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().unwrap()).unwrap();
    let p = first_problem(&path, &other.public_key());
    assert_eq!(
        (p.kind, p.line, p.seq),
        (ProblemKind::Signature, 1, Some(1)),
        "{p}"
    );
}

#[test]
fn a_chain_spanning_the_upgrade_verifies_both_formats() {
    let tmp = TempDir::new("audit-upgrade");
    let (path, mut lines, key) = segment(tmp.path(), 3);
    let sealer = Sealer::new("c1".into(), the_key());
    // The new version takes the chain over: a startup checkpoint, then its batches.
    let head = head_of(lines.last().unwrap());
    let (startup, head) = sealer.seal_signed(checkpoint("startup", &head, head.seq + 1), &head);
    lines.push(startup);
    lines.extend(batches(&sealer, head, &[2, 1]).0);
    std::fs::write(&path, lines.concat()).unwrap();
    let report = verify(std::slice::from_ref(&path), std::slice::from_ref(&key)).unwrap();
    assert!(report.ok(), "{report}");
    assert_eq!(
        (report.chains[0].decisions, report.chains[0].checkpoints),
        (6, 3)
    );

    // A format-1 record stripped of its signature is caught: its format says it had one.
    let mut stripped = lines.clone();
    let mut r = chain::check(stripped[1].strip_suffix(b"\n").unwrap())
        .unwrap()
        .record;
    r.insert("hash".into(), head_of(&lines[1]).hash.into());
    let mut l = crate::evidence::canonical::canonical_object(&r);
    l.push(b'\n');
    stripped[1] = l;
    std::fs::write(&path, stripped.concat()).unwrap();
    let p = first_problem(&path, &key);
    assert_eq!(
        (p.kind, p.line, p.seq),
        (ProblemKind::Signature, 2, Some(2)),
        "{p}"
    );
}

#[test]
fn tampering_with_format_2_is_named() {
    let tmp = TempDir::new("audit-v2-tamper");
    let (path, lines, key, _) = segment_v2(tmp.path());
    // Lines: 1 genesis, 2-4 records, 5 checkpoint, 6 record, 7 checkpoint, 8-9 records, 10 cp.
    let run = |lines: &[Vec<u8>]| {
        std::fs::write(&path, lines.concat()).unwrap();
        first_problem(&path, &key)
    };
    let named = |p: &Problem| (p.kind, p.line, p.seq);

    // A record's content changed: its hash no longer matches.
    let mut edited = lines.clone();
    let at = edited[2].len() / 2;
    edited[2][at] ^= 0x20;
    assert_eq!(named(&run(&edited)), (ProblemKind::Altered, 3, Some(3)));

    // A record changed with its hash recomputed: the next record's `prev` names it.
    let mut relinked = lines.clone();
    forge(
        &mut relinked,
        2,
        2,
        |r| {
            r.insert("decision_id".into(), "forged".into());
        },
        None,
    );
    assert_eq!(named(&run(&relinked)), (ProblemKind::Altered, 3, Some(3)));

    // …with the hashes of the rest of its batch recomputed too: the checkpoint's link breaks
    // at the batch's last record, and the batch is named.
    let mut batch = lines.clone();
    forge(
        &mut batch,
        1,
        3,
        |r| {
            r.insert("decision_id".into(), "forged".into());
        },
        None,
    );
    let p = run(&batch);
    assert_eq!(named(&p), (ProblemKind::Altered, 4, Some(4)));
    assert!(p.detail.contains("seq 2..4"), "{p}");

    // …and through the checkpoint (its signature is now over other bytes): the checkpoint's
    // signature fails, naming the records it covers.
    let mut through = lines.clone();
    forge(
        &mut through,
        1,
        9,
        |r| {
            r.insert("decision_id".into(), "forged".into());
        },
        None,
    );
    let p = run(&through);
    assert_eq!(named(&p), (ProblemKind::Signature, 5, Some(5)));
    assert!(p.detail.contains("seq 2..4"), "{p}");

    // …and re-signed with another key: not a given key.
    let forger = Sealer::new(
        "c1".into(),
        SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().unwrap()).unwrap(),
    );
    let mut resigned = lines.clone();
    forge(
        &mut resigned,
        1,
        9,
        |r| {
            r.insert("decision_id".into(), "forged".into());
        },
        Some(&forger),
    );
    let p = run(&resigned);
    assert_eq!(named(&p), (ProblemKind::Signature, 5, Some(5)));
    assert!(p.detail.contains("not a given key"), "{p}");

    // A record deleted, a checkpoint deleted: `seq` jumps.
    let mut deleted = lines.clone();
    deleted.remove(5);
    assert_eq!(named(&run(&deleted)), (ProblemKind::Removed, 6, Some(6)));
    let mut no_cp = lines.clone();
    no_cp.remove(4);
    assert_eq!(named(&run(&no_cp)), (ProblemKind::Removed, 5, Some(5)));

    // A checkpoint that (signed, with the right key) covers less than the batch before it.
    let sealer = Sealer::new("c1".into(), the_key());
    let mut short = lines.clone();
    let head = head_of(&lines[3]);
    short[4] = sealer.seal_signed(checkpoint("batch", &head, 3), &head).0;
    let p = run(&short);
    assert_eq!(named(&p), (ProblemKind::Altered, 5, Some(5)));
    assert!(p.detail.contains("seq 2..4"), "{p}");

    // The last checkpoint deleted: an unsigned tail, reported, not hidden.
    let tail = &lines[..9];
    std::fs::write(&path, tail.concat()).unwrap();
    let report = verify(std::slice::from_ref(&path), std::slice::from_ref(&key)).unwrap();
    assert_eq!(report.chains[0].unsigned_tail, Some((8, 9)), "{report}");
    assert!(
        report.to_string().contains("UNSIGNED TAIL: seq 8..9"),
        "{report}"
    );

    // Cut inside the last checkpoint.
    let mut cut = lines.concat();
    cut.truncate(cut.len() - 30);
    std::fs::write(&path, &cut).unwrap();
    let p = first_problem(&path, &key);
    assert_eq!(named(&p), (ProblemKind::Truncated, 10, Some(10)));
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
    lines[1] = forger.seal_signed(changed, &prev).0;
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
