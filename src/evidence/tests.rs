#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};

use super::canonical::{canonical_object, sanitize, sha256_hex};
use super::chain::{self, GENESIS, Head, LineError, Sealer};
use super::*;
use crate::decision::Verdict;
use crate::grant::Requirement;

pub(crate) fn key() -> SigningKey {
    SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().unwrap()).unwrap()
}

pub(crate) fn txn() -> Transaction {
    Transaction {
        digest: "k1:abc".into(),
        key_id: "k1".into(),
        previous_digests: Vec::new(),
        bound: BTreeMap::from([
            ("body.amount".to_string(), Some("n:100".to_string())),
            ("body.payee".to_string(), Some("s:bob".to_string())),
            ("path.account".to_string(), None),
        ]),
        value: Some(100.0),
        currency: None,
    }
}

pub(crate) fn subject() -> Subject {
    Subject::from_claims(
        json!({"iss": "https://idp", "sub": "alice", "acr": "aal2", "amr": ["pwd", "otp"],
               "auth_time": 1_700_000_000, "act": {"sub": "agent-7", "iss": "https://idp"}}),
        1_700_000_010,
        None,
    )
}

pub(crate) fn origin() -> Origin {
    Origin {
        source_address: Some("10.0.0.7".into()),
        method: "POST".into(),
        host: "api.example.com".into(),
        trace: TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    }
}

/// A decision record body for `id` (an allow with a grant).
pub(crate) fn body(recorder: &Recorder, id: &str) -> serde_json::Map<String, Value> {
    let mut decision = Decision::new(id.into(), Verdict::Allow, "grant_for_transaction");
    decision.action = Some("payments.transfer".into());
    decision.subject = Some("https://idp|alice".into());
    decision.grant_id = Some("g-1".into());
    decision.policy_revision = Some("rev-1".into());
    let (txn, subject, origin) = (txn(), subject(), origin());
    let ctx = EvidenceContext {
        decision: &decision,
        txn: Some(&txn),
        subject: Some(&subject),
        origin: &origin,
    };
    recorder.decision(
        &ctx,
        UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
    )
}

#[test]
fn traceparent_is_read_strictly() {
    let t = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(t.span_id, "00f067aa0ba902b7");
    for bad in [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    ] {
        assert_eq!(TraceContext::parse(bad), None, "{bad}");
    }
    // A later version may append fields.
    assert!(
        TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x").is_some()
    );
}

#[test]
fn origin_takes_traceparent_in_any_case() {
    let raw = RawRequest {
        method: "POST".into(),
        host: "h".into(),
        source_address: Some("192.0.2.1".into()),
        headers: [(
            "TraceParent".to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
        )]
        .into(),
        ..RawRequest::default()
    };
    let o = Origin::of(&raw);
    assert_eq!(o.source_address.as_deref(), Some("192.0.2.1"));
    assert_eq!(o.trace.unwrap().span_id, "00f067aa0ba902b7");
}

#[test]
fn record_has_the_opa_decision_log_fields() {
    let recorder = Recorder::new(
        "data.stepguard.authz.decision",
        &BTreeMap::from([("cluster".to_string(), "eu-1".to_string())]),
        Redaction::default(),
    );
    let r = Value::Object(body(&recorder, "d-1"));
    assert_eq!(r["v"], 2);
    assert_eq!(r["kind"], "decision");
    assert_eq!(r["decision_id"], "d-1");
    assert_eq!(r["timestamp"], "2023-11-14T22:13:20.123456789Z");
    assert_eq!(r["unix"], 1_700_000_000);
    assert_eq!(r["path"], "stepguard/authz/decision");
    assert_eq!(r["labels"]["app"], "stepguard");
    assert_eq!(r["labels"]["cluster"], "eu-1");
    assert_eq!(r["bundles"]["stepguard"]["revision"], "rev-1");
    assert_eq!(r["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(r["span_id"], "00f067aa0ba902b7");
    let input = &r["input"];
    assert_eq!(input["action"], "payments.transfer");
    assert_eq!(input["subject"]["id"], "https://idp|alice");
    assert_eq!(input["subject"]["kind"], "human");
    assert_eq!(input["subject"]["acr"], "aal2");
    assert_eq!(input["subject"]["auth_time"], 1_700_000_000);
    assert_eq!(input["subject"]["act"][0]["sub"], "agent-7");
    assert_eq!(input["source"]["address"], "10.0.0.7");
    assert_eq!(input["request"]["method"], "POST");
    assert_eq!(input["transaction"]["digest"], "k1:abc");
    assert_eq!(input["transaction"]["bound"]["body.payee"], "s:bob");
    assert_eq!(input["transaction"]["bound"]["path.account"], Value::Null);
    assert_eq!(r["result"]["outcome"], "allow");
    assert_eq!(r["result"]["status"], 200);
    assert_eq!(r["result"]["grant_id"], "g-1");
    assert_eq!(r["result"]["reasons"], json!(["grant_for_transaction"]));
    assert!(r.get("masked").is_none());
}

#[test]
fn challenge_records_its_requirement() {
    let verdict = Verdict::Challenge {
        challenge_id: "c-1".into(),
        requirement: Requirement {
            acr_values: vec!["aal3".into()],
            max_age: 0,
        },
        location: None,
        set_cookie: None,
    };
    let decision = Decision::new("d-2".into(), verdict, "step_up_required");
    let origin = Origin::default();
    let ctx = EvidenceContext {
        decision: &decision,
        txn: None,
        subject: None,
        origin: &origin,
    };
    let r = Value::Object(Recorder::default().decision(&ctx, UNIX_EPOCH));
    assert_eq!(r["result"]["outcome"], "challenge");
    assert_eq!(r["result"]["status"], 401);
    assert_eq!(r["result"]["challenge_id"], "c-1");
    assert_eq!(
        r["result"]["requirement"],
        json!({"acr_values": ["aal3"], "max_age": 0})
    );
    assert!(r.get("trace_id").is_none() && r["input"].get("source").is_none());
    assert!(r["result"].get("severity").is_none());

    // A break-glass decision: the policy's severity is in the record.
    let mut decision = decision;
    decision.severity = Some("high".into());
    decision.reasons.push("break_glass".into());
    let ctx = EvidenceContext {
        decision: &decision,
        txn: None,
        subject: None,
        origin: &origin,
    };
    let r = Value::Object(Recorder::default().decision(&ctx, UNIX_EPOCH));
    assert_eq!(r["result"]["severity"], "high");
}

#[test]
fn redaction_by_action_hides_every_bound_value_of_it() {
    let by_action = |action: &str| {
        let redaction = Redaction::new(Vec::new(), Some(&[9u8; 32])).with_actions([action.into()]);
        let rec = Recorder::new("p", &BTreeMap::new(), redaction);
        Value::Object(body(&rec, "d"))
    };
    let r = by_action("payments.transfer");
    let bound = r["input"]["transaction"]["bound"].as_object().unwrap();
    assert!(!bound.is_empty());
    // Absent fields (null) stay null: there is nothing to hide.
    let present: Vec<_> = bound.iter().filter(|(_, v)| !v.is_null()).collect();
    assert!(!present.is_empty());
    for (field, value) in &present {
        assert!(
            value.as_str().unwrap().starts_with("hmac-sha256:"),
            "{field}: {value}"
        );
    }
    assert_eq!(r["masked"].as_array().unwrap().len(), present.len());
    let other = by_action("keys.export");
    assert_eq!(
        other["input"]["transaction"]["bound"]["body.amount"],
        "n:100"
    );
    assert!(other.get("masked").is_none());
}

#[test]
fn redaction_hides_listed_bound_values() {
    let fields = || vec!["body.payee".to_string()];
    let plain = Recorder::new("p", &BTreeMap::new(), Redaction::new(fields(), None));
    let r = Value::Object(body(&plain, "d"));
    assert_eq!(
        r["input"]["transaction"]["bound"]["body.payee"],
        "[redacted]"
    );
    assert_eq!(r["input"]["transaction"]["bound"]["body.amount"], "n:100");
    assert_eq!(r["masked"], json!(["/input/transaction/bound/body.payee"]));
    let keyed = |k: &[u8]| {
        let rec = Recorder::new("p", &BTreeMap::new(), Redaction::new(fields(), Some(k)));
        Value::Object(body(&rec, "d"))["input"]["transaction"]["bound"]["body.payee"].clone()
    };
    let a = keyed(&[7u8; 32]);
    assert!(a.as_str().unwrap().starts_with("hmac-sha256:"), "{a}");
    assert_eq!(
        a,
        keyed(&[7u8; 32]),
        "equal values stay equal under one key"
    );
    assert_ne!(a, keyed(&[8u8; 32]));
    assert!(!a.as_str().unwrap().contains("bob"));
}

#[test]
fn canonical_form_is_rfc8785_for_records() {
    // Members sorted by UTF-16 code units: U+1F600 (the surrogate pair D83D DE00) sorts before
    // U+E000, unlike in code point or UTF-8 order.
    let value = json!({"b": 1, "a": [true, null, "x\u{1}\n\"\\/é"], "\u{1F600}": 0, "\u{E000}": 0});
    let Value::Object(map) = value else { panic!() };
    assert_eq!(
        String::from_utf8(canonical_object(&map)).unwrap(),
        "{\"a\":[true,null,\"x\\u0001\\n\\\"\\\\/é\"],\"b\":1,\"\u{1F600}\":0,\"\u{E000}\":0}"
    );
    let mut v = json!({"f": 1.5, "big": 9_007_199_254_740_993u64, "ok": -9_007_199_254_740_991i64});
    sanitize(&mut v);
    assert_eq!(
        v,
        json!({"f": "1.5", "big": "9007199254740993", "ok": -9_007_199_254_740_991i64})
    );
}

#[test]
fn sealed_records_chain_and_verify() {
    let key = key();
    let public = key.public_key();
    let sealer = Sealer::new("c1".into(), key);
    let recorder = Recorder::default();
    let (line1, head1) = sealer.seal(body(&recorder, "d1"), &Head::genesis());
    let (line2, head2) = sealer.seal(body(&recorder, "d2"), &head1);
    assert_eq!((head1.seq, head2.seq), (1, 2));
    let r1 = chain::check(line1.strip_suffix(b"\n").unwrap()).unwrap();
    let r2 = chain::check(line2.strip_suffix(b"\n").unwrap()).unwrap();
    assert_eq!(r1.prev, GENESIS);
    assert_eq!(r2.prev, r1.hash);
    assert_eq!(r1.chain, "c1");
    // Records are not signed one by one: the checkpoint after them is, and links to them.
    assert!(r1.sig.is_none() && r1.key_id.is_none() && !r1.signed_by(&public));
    let (line3, _) = sealer.seal_signed(body(&recorder, "cp"), &head2);
    let r3 = chain::check(line3.strip_suffix(b"\n").unwrap()).unwrap();
    assert_eq!(r3.prev, r2.hash);
    assert_eq!(r3.key_id.as_deref(), Some(public.id()));
    assert!(r3.signed_by(&public));
    assert!(!r3.signed_by(&super::tests::key().public_key()));
    // The hash is over the canonical bytes without `hash` and `sig`.
    let mut unsigned = r1.record.clone();
    unsigned.remove("hash");
    assert_eq!(sha256_hex(&canonical_object(&unsigned)), r1.hash);
}

#[test]
fn any_changed_byte_is_caught() {
    let key = key();
    let public = key.public_key();
    let sealer = Sealer::new("c1".into(), key);
    let (line, _) = sealer.seal_signed(body(&Recorder::default(), "d1"), &Head::genesis());
    let line = line.strip_suffix(b"\n").unwrap().to_vec();
    let text = String::from_utf8(line.clone()).unwrap();
    let changed = text.replace("\"outcome\":\"allow\"", "\"outcome\":\"allaw\"");
    assert_eq!(
        chain::check(changed.as_bytes()).unwrap_err(),
        LineError::HashMismatch
    );
    let spaced = text.replacen(',', ", ", 1);
    assert_eq!(
        chain::check(spaced.as_bytes()).unwrap_err(),
        LineError::NotCanonical
    );
    for i in 0..line.len() {
        let mut flipped = line.clone();
        flipped[i] ^= 0x01;
        let caught = match chain::check(&flipped) {
            Err(_) => true,
            // A flip inside the signature leaves the hash intact: the signature catches it.
            Ok(r) => !r.signed_by(&public),
        };
        assert!(caught, "byte {i} flipped unnoticed");
    }
}

#[test]
fn keys_load_from_openssl_pem() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local"));
    let key = SigningKey::load(&dir.join("evidence-signing-key.DEV-ONLY.pem")).unwrap();
    let public = PublicKey::load(&dir.join("evidence-signing-key.DEV-ONLY.pub")).unwrap();
    assert_eq!(key.public_key(), public);
    assert_eq!(key.id().len(), 16);
    assert_eq!(
        PublicKey::parse(public.to_pem().as_bytes()).unwrap(),
        public
    );
    assert_eq!(PublicKey::parse(public.hex().as_bytes()).ok(), None);
    assert!(
        SigningKey::load(&dir.join("dev-signing-key.DEV-ONLY.pem")).is_err(),
        "ES256 key"
    );
}

#[test]
fn time_round_trips() {
    let (text, unix) = time::stamp(UNIX_EPOCH + Duration::from_secs(951_782_400));
    assert_eq!(text, "2000-02-29T00:00:00.000000000Z");
    assert_eq!(time::parse(&text).unwrap(), unix);
    assert_eq!(time::parse("2000-02-29").unwrap(), 951_782_400);
    assert_eq!(
        time::parse("2000-02-29T01:00:00+01:00").unwrap(),
        951_782_400
    );
    assert_eq!(time::parse("1700000000").unwrap(), 1_700_000_000);
    for bad in [
        "2000-13-01",
        "yesterday",
        "2000-02-29T00:00",
        "2000-02-29T00:00:00+0100",
    ] {
        assert!(time::parse(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn log_sink_always_records() {
    let decision = Decision::new("d".into(), Verdict::Fault, "x");
    let origin = Origin::default();
    let ctx = EvidenceContext {
        decision: &decision,
        txn: None,
        subject: None,
        origin: &origin,
    };
    assert!(LogEvidence::default().record(&ctx).await.is_ok());
    assert!(LogEvidence::default().spool().is_none());
}

mod config;
