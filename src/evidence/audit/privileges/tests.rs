#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::*;
use crate::decision::{ActionClass, Decision, Verdict};
use crate::evidence::chain::{Head, Sealer};
use crate::evidence::key::SigningKey;
use crate::evidence::record::{Recorder, Redaction};
use crate::evidence::spool::tests::TempDir;
use crate::evidence::tests::{origin, txn};
use crate::evidence::{EvidenceContext, Lifecycle};
use crate::grant::contract::{challenge, minted};
use crate::identity::Subject;

const T0: i64 = 1_800_000_000;
const ISS: &str = "https://idp";
const JUSTIFICATION: &str = "INC-4711: HSM key rotation failed, = on call";

fn key() -> SigningKey {
    static PKCS8: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    SigningKey::from_pkcs8(PKCS8.get_or_init(|| SigningKey::generate_pkcs8().unwrap())).unwrap()
}

fn token(sub: &str, roles: &[&str], scope: &str) -> Subject {
    Subject::from_claims(
        json!({"iss": ISS, "sub": sub, "acr": "aal2", "amr": ["pwd"], "auth_time": T0 - 60,
               "roles": roles, "scope": scope}),
        T0,
        None,
    )
}

/// What happened at `T0 + at`: a decision of `action` by `who`.
struct Event<'a> {
    at: i64,
    who: &'a Subject,
    action: &'a str,
    class: ActionClass,
    verdict: Verdict,
    reasons: &'a [&'a str],
    grant: Option<&'a str>,
    justification: Option<&'a str>,
}

/// An approval of `action` by `who` at `T0 + at`.
fn allow<'a>(
    at: i64,
    who: &'a Subject,
    action: &'a str,
    class: ActionClass,
    reasons: &'a [&'a str],
    grant: Option<&'a str>,
    justification: Option<&'a str>,
) -> Event<'a> {
    Event {
        at,
        who,
        action,
        class,
        verdict: Verdict::Allow,
        reasons,
        grant,
        justification,
    }
}

const PRIVILEGED: ActionClass = ActionClass {
    privileged: true,
    reversible: false,
};
const ORDINARY: ActionClass = ActionClass {
    privileged: false,
    reversible: true,
};

fn decision(recorder: &Recorder, e: &Event<'_>) -> Map<String, Value> {
    let mut d = Decision::new(format!("d-{}", e.at), e.verdict.clone(), e.reasons[0]);
    d.reasons = e.reasons.iter().map(|r| r.to_string()).collect();
    d.action = Some(e.action.into());
    d.subject = Some(e.who.binding_key());
    d.action_class = Some(e.class);
    d.grant_id = e.grant.map(str::to_string);
    d.justification = e.justification.map(str::to_string);
    let (txn, origin) = (txn(), origin());
    let ctx = EvidenceContext {
        decision: &d,
        txn: Some(&txn),
        subject: Some(e.who),
        origin: &origin,
    };
    recorder.decision(&ctx, at(e.at))
}

fn at(offset: i64) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_secs((T0 + offset) as u64)
}

/// Alice (admin) steps up and exports a key; bob (admin) only transfers; carol breaks the glass;
/// dave (customer) transfers. Records as the recorder builds them, sealed in one batch.
fn run(recorder: &Recorder) -> Vec<Map<String, Value>> {
    let alice = token("alice", &["admin"], "openid keys:admin");
    let bob = token("bob", &["admin"], "openid keys:admin");
    let carol = token("carol", &["break-glass"], "openid");
    let dave = token("dave", &["customer"], "openid payments");
    let mut c = challenge("ch-1", "k1:abc", T0 + 10);
    c.subject = alice.binding_key();
    c.action = "keys.export".into();
    let mut g = minted(&c, T0 + 20);
    g.method = "grant_api".into();
    g.amr = vec!["hwk".into(), "webauthn".into()];
    let completed = Lifecycle::Completed {
        challenge: &c,
        grant: &g,
        approver: Some("bob@example.com"),
    };
    let challenged = Verdict::Challenge {
        challenge_id: "ch-1".into(),
        requirement: crate::grant::Requirement {
            acr_values: vec!["aal3".into()],
            max_age: 0,
        },
        location: None,
        set_cookie: None,
    };
    vec![
        decision(
            recorder,
            &Event {
                verdict: challenged,
                ..allow(
                    10,
                    &alice,
                    "keys.export",
                    PRIVILEGED,
                    &["acr_too_low"],
                    None,
                    None,
                )
            },
        ),
        recorder.lifecycle(&completed, at(20)),
        decision(
            recorder,
            &allow(
                30,
                &alice,
                "keys.export",
                PRIVILEGED,
                &["grant_satisfies"],
                Some(g.id.as_str()),
                None,
            ),
        ),
        decision(
            recorder,
            &allow(
                40,
                &bob,
                "payments.transfer",
                ORDINARY,
                &["session_satisfies"],
                None,
                None,
            ),
        ),
        decision(
            recorder,
            &allow(
                50,
                &carol,
                "iam.escalate",
                PRIVILEGED,
                &["grant_satisfies", "break_glass"],
                Some("g-carol"),
                Some(JUSTIFICATION),
            ),
        ),
        decision(
            recorder,
            &allow(
                60,
                &dave,
                "payments.transfer",
                ORDINARY,
                &["session_satisfies"],
                None,
                None,
            ),
        ),
        decision(
            recorder,
            &Event {
                verdict: Verdict::Deny { status: 403 },
                ..allow(
                    70,
                    &dave,
                    "keys.export",
                    PRIVILEGED,
                    &["not_permitted"],
                    None,
                    None,
                )
            },
        ),
    ]
}

/// `records` sealed as format 2 into `dir`: one batch, closed by a signed checkpoint, then
/// `tail` records no checkpoint covers.
fn spool(dir: &Path, records: Vec<Map<String, Value>>, tail: Vec<Map<String, Value>>) -> PathBuf {
    let sealer = Sealer::new("c1".into(), key());
    let mut head = Head::genesis();
    let mut lines = Vec::new();
    let n = records.len() as u64;
    for r in records {
        let (line, h) = sealer.seal(r, &head);
        lines.push(line);
        head = h;
    }
    let cp = json!({"v": 2, "kind": "checkpoint", "timestamp": "t", "unix": T0 + 100,
                    "checkpoint": {"reason": "batch", "head": {"seq": head.seq, "hash": head.hash},
                                   "covers": {"from": 1, "to": n, "count": n}}});
    let (line, h) = sealer.seal_signed(cp.as_object().unwrap().clone(), &head);
    lines.push(line);
    head = h;
    for r in tail {
        let (line, h) = sealer.seal(r, &head);
        lines.push(line);
        head = h;
    }
    let path = dir.join("00000000000000000001.jsonl");
    std::fs::write(&path, lines.concat()).unwrap();
    path
}

fn query() -> Query {
    Query {
        keys: vec![key().public_key()],
        infer: true,
        ..Query::default()
    }
}

fn the<'a>(report: &'a PrivilegeReport, sub: &str) -> &'a SubjectPrivileges {
    report.subjects.iter().find(|s| s.sub == sub).unwrap()
}

#[test]
fn a_run_is_reported_per_subject_exactly() {
    let dir = TempDir::new("privileges");
    let recorder = Recorder::default();
    let path = spool(dir.path(), run(&recorder), Vec::new());
    let report = privileges(&[path], &query()).unwrap();
    assert!(report.verified);
    assert_eq!(report.records, 7);
    let subs: Vec<&str> = report.subjects.iter().map(|s| s.sub.as_str()).collect();
    assert_eq!(subs, ["alice", "bob", "carol", "dave"]);
    assert_eq!(
        report.privileged.inferred_roles,
        set(&["admin", "break-glass"])
    );
    assert_eq!(
        report.privileged.inferred_scopes,
        set(&["keys:admin"]),
        "openid is not inferred"
    );

    let alice = the(&report, "alice");
    assert_eq!(alice.issuer.as_deref(), Some(ISS));
    assert_eq!(alice.kind.as_deref(), Some("human"));
    assert_eq!(alice.privileged_roles, set(&["admin"]));
    assert_eq!(alice.privileged_scopes, set(&["keys:admin"]));
    assert_eq!(
        alice.privileged_actions.len(),
        1,
        "the challenge is not a use"
    );
    let used = &alice.privileged_actions[0];
    assert_eq!(
        (used.action.as_str(), used.when.unix),
        ("keys.export", T0 + 30)
    );
    assert_eq!(used.grant_id.as_deref(), Some("grant-ch-1"));
    assert!(!used.break_glass);
    assert_eq!(alice.last_privileged_use.as_ref().unwrap().unix, T0 + 30);
    assert_eq!(alice.first_seen.as_ref().unwrap().unix, T0 + 10);
    assert_eq!(alice.step_ups.len(), 1);
    let step = &alice.step_ups[0];
    assert_eq!(
        (step.method.as_str(), step.acr.as_str()),
        ("grant_api", "aal3")
    );
    assert_eq!(step.amr, ["hwk", "webauthn"]);
    assert_eq!((step.when.unix, step.auth_time), (T0 + 20, Some(T0 + 20)));
    assert_eq!(step.approver.as_deref(), Some("bob@example.com"));
    assert!(alice.break_glass.is_empty());

    let bob = the(&report, "bob");
    assert_eq!(bob.privileged_roles, set(&["admin"]));
    assert!(bob.privileged_actions.is_empty() && bob.step_ups.is_empty());

    let carol = the(&report, "carol");
    assert_eq!(carol.privileged_roles, set(&["break-glass"]));
    assert!(carol.privileged_scopes.is_empty());
    assert_eq!(carol.break_glass.len(), 1);
    assert_eq!(
        carol.break_glass[0].justification.as_deref(),
        Some(JUSTIFICATION)
    );
    assert_eq!(carol.break_glass[0].action, "iam.escalate");
    assert!(carol.privileged_actions[0].break_glass);

    let dave = the(&report, "dave");
    assert!(
        !dave.privileged(),
        "a denied privileged request is not a use: {dave:?}"
    );
    assert!(dave.privileged_actions.is_empty());
    assert_eq!(dave.roles, set(&["customer"]));
    assert_eq!(dave.last_seen.as_ref().unwrap().unix, T0 + 70);
    assert_eq!(report.unused_days, None);
    assert!(report.subjects.iter().all(|s| s.unused.is_none()));
}

#[test]
fn unused_is_measured_from_the_latest_record_or_now() {
    let dir = TempDir::new("privileges-unused");
    let path = spool(dir.path(), run(&Recorder::default()), Vec::new());
    let mut q = Query {
        unused_days: Some(1),
        ..query()
    };
    let report = privileges(std::slice::from_ref(&path), &q).unwrap();
    let reference = report.reference_time.as_ref().unwrap();
    assert_eq!(
        (reference.when.unix, reference.source),
        (T0 + 70, "latest_record")
    );
    assert_eq!(report.unused, [format!("{ISS}|bob")]);
    assert_eq!(
        the(&report, "dave").unused,
        Some(false),
        "holds no privilege"
    );

    // A day and a minute later, alice's and carol's uses are older than a day too.
    q.now = Some(T0 + 86_400 + 60);
    let report = privileges(std::slice::from_ref(&path), &q).unwrap();
    let ids: Vec<&str> = report.unused.iter().map(String::as_str).collect();
    assert_eq!(
        ids,
        [
            format!("{ISS}|alice"),
            format!("{ISS}|bob"),
            format!("{ISS}|carol")
        ]
    );
    assert_eq!(report.reference_time.unwrap().source, "now");
}

#[test]
fn listed_roles_and_actions_count_and_inference_can_be_turned_off() {
    let dir = TempDir::new("privileges-listed");
    let path = spool(dir.path(), run(&Recorder::default()), Vec::new());
    let q = Query {
        roles: vec!["customer".into()],
        actions: vec!["payments.transfer".into()],
        infer: false,
        ..query()
    };
    let report = privileges(&[path], &q).unwrap();
    assert_eq!(report.privileged.roles, set(&["customer"]));
    assert!(report.privileged.inferred_roles.is_empty());
    assert!(the(&report, "alice").privileged_roles.is_empty());
    let dave = the(&report, "dave");
    assert_eq!(dave.privileged_roles, set(&["customer"]));
    assert_eq!(
        dave.privileged_actions.len(),
        1,
        "payments.transfer is listed"
    );
    assert_eq!(the(&report, "bob").privileged_actions.len(), 1);
}

#[test]
fn irreversible_approvals_are_uses_but_infer_no_role() {
    let dir = TempDir::new("privileges-irreversible");
    let recorder = Recorder::default();
    let dave = token("dave", &["customer"], "payments");
    let irreversible = ActionClass {
        privileged: false,
        reversible: false,
    };
    let approve = allow(
        5,
        &dave,
        "payments.approve",
        irreversible,
        &["session_satisfies"],
        None,
        None,
    );
    let mut records = run(&recorder);
    records.push(decision(&recorder, &approve));
    let report = privileges(&[spool(dir.path(), records, Vec::new())], &query()).unwrap();
    let dave = the(&report, "dave");
    assert_eq!(dave.privileged_actions.len(), 1);
    assert_eq!(dave.privileged_actions[0].action, "payments.approve");
    assert!(!dave.privileged(), "{dave:?}");
    assert_eq!(report.privileged.roles, set(&["admin", "break-glass"]));
}

#[test]
fn evidence_that_does_not_verify_is_refused_unless_unverified() {
    let dir = TempDir::new("privileges-refused");
    let path = spool(dir.path(), run(&Recorder::default()), Vec::new());
    let no_key = Query {
        keys: Vec::new(),
        ..query()
    };
    let e = privileges(std::slice::from_ref(&path), &no_key).unwrap_err();
    assert!(e.contains("--key"), "{e}");
    let other = SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().unwrap()).unwrap();
    let wrong_key = Query {
        keys: vec![other.public_key()],
        ..query()
    };
    let e = privileges(std::slice::from_ref(&path), &wrong_key).unwrap_err();
    assert!(e.contains("BAD SIGNATURE"), "{e}");
    // Carol's justification rewritten: the chain no longer verifies.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("INC-4711", "INC-4712")).unwrap();
    let e = privileges(std::slice::from_ref(&path), &query()).unwrap_err();
    assert!(
        e.starts_with("the evidence does not verify: ALTERED"),
        "{e}"
    );
    let unverified = Query {
        unverified: true,
        ..no_key
    };
    let report = privileges(&[path], &unverified).unwrap();
    assert!(!report.verified);
    let carol = the(&report, "carol");
    assert!(
        carol.break_glass[0]
            .justification
            .as_deref()
            .unwrap()
            .starts_with("INC-4712")
    );
}

#[test]
fn records_no_signature_covers_are_left_out() {
    let dir = TempDir::new("privileges-tail");
    let recorder = Recorder::default();
    let mallory = token("mallory", &["admin"], "");
    let forged = decision(
        &recorder,
        &Event {
            at: 90,
            who: &mallory,
            action: "keys.export",
            class: PRIVILEGED,
            verdict: Verdict::Allow,
            reasons: &["grant_satisfies"],
            grant: None,
            justification: None,
        },
    );
    let path = spool(dir.path(), run(&recorder), vec![forged]);
    let report = privileges(std::slice::from_ref(&path), &query()).unwrap();
    assert!(report.subjects.iter().all(|s| s.sub != "mallory"));
    assert_eq!(report.records, 7);
    let unverified = Query {
        unverified: true,
        ..query()
    };
    let report = privileges(&[path], &unverified).unwrap();
    assert_eq!(the(&report, "mallory").privileged_actions.len(), 1);
}

fn set(items: &[&str]) -> std::collections::BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

mod output;
