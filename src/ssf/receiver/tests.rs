//! One transmitter (the dev key and issuer), the memory store: SETs applied, replays and forgeries
//! refused with their RFC 8935 codes, and what a later token of the subject meets.

use serde_json::{Value, json};

use super::*;
use crate::clock::ManualClock;
use crate::grant::{MemoryStore, contract};
use crate::ssf::event::{Presented, assess};
use crate::testkit::tokens::KID;
use crate::testkit::{ISSUER, sign};

const NOW: i64 = 1_800_000_000;
const AUD: &str = "https://stepguard.example/ssf";
const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
pub(crate) const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";

/// A receiver of the dev issuer's SETs for [`AUD`], over a fresh memory store.
pub(crate) async fn receiver() -> (Receiver, Arc<MemoryStore>) {
    let text = std::fs::read_to_string(format!("{}/stepguard.yaml", crate::testkit::DIR)).unwrap();
    let section = format!(
        "shared_signals:\n  transmitter:\n    issuer: {ISSUER}\n    jwks: {{file: dev-jwks.json}}\n  \
         audiences: [{AUD}]\n  push: {{}}\n"
    );
    let config = crate::config::Config::parse(
        &format!("{text}\n{section}"),
        std::path::Path::new(crate::testkit::DIR),
    )
    .unwrap();
    let store = Arc::new(MemoryStore::new(1_000));
    let receiver = receiver_for(&config, store.clone(), Arc::new(ManualClock::new(NOW))).await;
    (receiver, store)
}

/// The receiver `config`'s `shared_signals` section describes, over `store`.
pub(crate) async fn receiver_for(
    config: &crate::config::Config,
    store: Arc<dyn GrantStore>,
    clock: Arc<dyn Clock>,
) -> Receiver {
    let ssf = config.shared_signals.as_ref().unwrap();
    let transmitter = ssf.transmitter.as_ref().unwrap();
    let ladder = &config.challenge.acr_ladder;
    let wait = std::time::Duration::from_secs(1);
    Receiver::new(transmitter, ssf, ladder, store, clock, wait)
        .await
        .unwrap()
}

/// A SET of the dev issuer for [`AUD`] carrying one `event`.
pub(crate) fn set(jti: &str, event: &str, payload: Value, sub_id: Value) -> String {
    sign(
        json!({"alg": "ES256", "kid": KID, "typ": "secevent+jwt"}),
        json!({"iss": ISSUER, "aud": AUD, "iat": NOW - 5, "jti": jti,
               "sub_id": sub_id, "events": {event: payload}}),
    )
}

pub(crate) fn alice() -> Value {
    json!({"format": "iss_sub", "iss": ISSUER, "sub": "alice"})
}

async fn events_of(store: &MemoryStore, keys: &[String]) -> Vec<Recorded> {
    let names: Vec<String> = keys.iter().map(|k| journal(k)).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let journals = store.journals(&names, NOW).await.unwrap();
    journals
        .into_iter()
        .flatten()
        .map(|e| serde_json::from_str(&e).unwrap())
        .collect()
}

#[tokio::test]
async fn a_session_revoked_event_revokes_grants_and_refuses_the_sessions_tokens() {
    let (receiver, store) = receiver().await;
    let mut grant = contract::grant("dev1:alice-pay", Some(1), NOW);
    grant.subject = format!("{ISSUER}|alice");
    store.put_grant(grant.clone()).await.unwrap();
    let mut other = contract::grant("dev1:bob-pay", Some(1), NOW);
    other.subject = format!("{ISSUER}|bob");
    store.put_grant(other.clone()).await.unwrap();

    let complex = json!({"user": alice(), "session": {"format": "opaque", "id": "s-1"}});
    let token = set(
        "j-1",
        &format!("{CAEP}session-revoked"),
        json!({"event_timestamp": NOW - 10}),
        complex,
    );
    let applied = receiver.receive(&token).await.unwrap();
    assert_eq!(applied.revoked, 1);
    assert!(!applied.ignored);
    assert!(
        store
            .find_grant(&grant.digest, NOW)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .find_grant(&other.digest, NOW)
            .await
            .unwrap()
            .is_some(),
        "bob untouched"
    );

    // The same SET again is a replay: refused, nothing applied twice.
    assert_eq!(
        receiver.receive(&token).await.unwrap_err(),
        SetError::Replayed
    );

    // What a later request of alice reads: her subject's and her session's journals.
    let keys = token_keys(ISSUER, "alice", None, Some("s-1"));
    let events = events_of(&store, &keys).await;
    assert_eq!(events.len(), 2, "filed under the subject and the session");
    let session_token = Presented {
        sid: Some("s-1"),
        iat: Some(NOW - 100),
        auth_time: Some(NOW - 100),
    };
    assert_eq!(
        assess(&events, session_token).refused,
        Some("session_revoked")
    );
    let new_session = Presented {
        sid: Some("s-2"),
        ..session_token
    };
    assert_eq!(assess(&events, new_session).refused, None);
}

#[tokio::test]
async fn forgeries_and_strangers_are_refused_with_their_codes() {
    let (receiver, _) = receiver().await;
    let good = set(
        "j-2",
        &format!("{RISC}account-disabled"),
        json!({}),
        alice(),
    );
    let (message, _) = good.rsplit_once('.').unwrap();
    let forged = format!("{message}.{}", "A".repeat(86));
    assert_eq!(
        receiver.receive(&forged).await.unwrap_err().code(),
        "invalid_key"
    );

    let wrong_iss = sign(
        json!({"alg": "ES256", "kid": KID, "typ": "secevent+jwt"}),
        json!({"iss": "https://evil", "aud": AUD, "iat": NOW, "jti": "j-3", "sub_id": alice(),
               "events": {format!("{RISC}account-disabled"): {}}}),
    );
    assert_eq!(
        receiver.receive(&wrong_iss).await.unwrap_err().code(),
        "invalid_issuer"
    );

    let wrong_aud = sign(
        json!({"alg": "ES256", "kid": KID, "typ": "secevent+jwt"}),
        json!({"iss": ISSUER, "aud": "https://someone-else", "iat": NOW, "jti": "j-4",
               "sub_id": alice(), "events": {format!("{RISC}account-disabled"): {}}}),
    );
    assert_eq!(
        receiver.receive(&wrong_aud).await.unwrap_err().code(),
        "invalid_audience"
    );

    let access_token = crate::testkit::token("alice", "aal2", NOW, 10);
    assert_eq!(
        receiver.receive(&access_token).await.unwrap_err().code(),
        "invalid_request"
    );
}

#[tokio::test]
async fn unknown_events_are_ignored_and_account_events_hold_until_a_new_sign_in() {
    let (receiver, store) = receiver().await;
    let unknown = set(
        "j-5",
        &format!("{CAEP}device-compliance-change"),
        json!({"current_status": "not-compliant"}),
        alice(),
    );
    let applied = receiver.receive(&unknown).await.unwrap();
    assert!(applied.ignored && applied.keys.is_empty());
    assert_eq!(
        receiver.receive(&unknown).await.unwrap_err(),
        SetError::Replayed
    );

    let disabled = set(
        "j-6",
        &format!("{RISC}account-disabled"),
        json!({"reason": "hijacking"}),
        alice(),
    );
    receiver.receive(&disabled).await.unwrap();
    let events = events_of(&store, &token_keys(ISSUER, "alice", None, None)).await;
    let before = Presented {
        sid: None,
        iat: Some(NOW - 1),
        auth_time: Some(NOW - 6),
    };
    assert_eq!(assess(&events, before).refused, Some("account_event"));
    let after = Presented {
        auth_time: Some(NOW - 4),
        ..before
    };
    assert_eq!(assess(&events, after).refused, None);
    // An e-mail subject is filed under the address a token's verified `email` carries.
    let by_mail = set(
        "j-7",
        &format!("{RISC}credential-compromise"),
        json!({}),
        json!({"format": "email", "email": "Alice@Example.com"}),
    );
    receiver.receive(&by_mail).await.unwrap();
    let events = events_of(
        &store,
        &token_keys(ISSUER, "carol", Some("alice@example.com"), None),
    )
    .await;
    assert_eq!(events.len(), 1);
}

#[tokio::test]
async fn applied_sets_are_recorded_before_they_count_and_forgeries_never() {
    let (receiver, store) = receiver().await;
    let kept = Arc::new(crate::testkit::evidence::Kept::default());
    let receiver = receiver.with_evidence(kept.clone());
    let mut grant = contract::grant("dev1:alice-ev", Some(1), NOW);
    grant.subject = format!("{ISSUER}|alice");
    store.put_grant(grant).await.unwrap();
    let complex = json!({"user": alice(), "session": {"format": "opaque", "id": "s-9"}});
    let revoked = set(
        "j-ev-1",
        &format!("{CAEP}session-revoked"),
        json!({"event_timestamp": NOW - 10}),
        complex.clone(),
    );

    // No record, no effect that counts: the SET is not acknowledged and nothing is filed.
    kept.fail(true);
    let refused = receiver.receive(&revoked).await.unwrap_err();
    assert_eq!(refused.code(), "temporarily_unavailable", "{refused:?}");
    let keys = token_keys(ISSUER, "alice", None, Some("s-9"));
    assert!(events_of(&store, &keys).await.is_empty(), "not filed");

    // Its retry is applied and recorded, not taken for a replay.
    kept.fail(false);
    let applied = receiver.receive(&revoked).await.unwrap();
    assert_eq!(events_of(&store, &keys).await.len(), 2);
    let records = kept.records();
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(
        (&r["kind"], &r["event"]),
        (&json!("signal"), &json!("signal_received"))
    );
    assert_eq!(r["input"]["subject"]["id"], format!("{ISSUER}|alice"));
    assert_eq!(r["input"]["signal"]["jti"], "j-ev-1");
    assert_eq!(r["input"]["signal"]["iss"], ISSUER);
    assert_eq!(
        r["input"]["signal"]["type"],
        format!("{CAEP}session-revoked")
    );
    assert_eq!(r["input"]["signal"]["time"], NOW - 10);
    assert_eq!(r["input"]["signal"]["subject"], complex);
    assert_eq!(r["result"]["outcome"], "applied");
    assert_eq!(r["result"]["journals"], applied.keys.len());
    assert_eq!(r["result"]["journals"], 2);

    // A replay, a forgery and a stranger's SET are refused and leave no record.
    receiver.receive(&revoked).await.unwrap_err();
    let (message, _) = revoked.rsplit_once('.').unwrap();
    receiver
        .receive(&format!("{message}.{}", "A".repeat(86)))
        .await
        .unwrap_err();
    let stranger = sign(
        json!({"alg": "ES256", "kid": KID, "typ": "secevent+jwt"}),
        json!({"iss": ISSUER, "aud": "https://someone-else", "iat": NOW, "jti": "j-ev-2",
               "sub_id": alice(), "events": {format!("{RISC}account-disabled"): {}}}),
    );
    receiver.receive(&stranger).await.unwrap_err();
    assert_eq!(kept.records().len(), 1);

    // An event stepguard does not act on is recorded as ignored.
    let unknown = set(
        "j-ev-3",
        &format!("{CAEP}device-compliance-change"),
        json!({"current_status": "not-compliant"}),
        alice(),
    );
    receiver.receive(&unknown).await.unwrap();
    let records = kept.records();
    assert_eq!(records[1]["result"]["outcome"], "ignored");
    assert_eq!(records[1]["result"]["journals"], 0);
}

#[tokio::test]
async fn another_set_under_an_applied_jti_is_a_duplicate() {
    let (receiver, store) = receiver().await;
    let first = set(
        "j-dup",
        &format!("{CAEP}session-revoked"),
        json!({"event_timestamp": NOW - 10}),
        json!({"user": alice(), "session": {"format": "opaque", "id": "s-1"}}),
    );
    receiver.receive(&first).await.unwrap();
    // Validly signed, another event, the same `jti`: refused, nothing filed for it.
    let other = set(
        "j-dup",
        &format!("{RISC}account-disabled"),
        json!({}),
        json!({"format": "iss_sub", "iss": ISSUER, "sub": "bob"}),
    );
    assert_eq!(
        receiver.receive(&other).await.unwrap_err(),
        SetError::Replayed
    );
    let bob = token_keys(ISSUER, "bob", None, None);
    assert!(events_of(&store, &bob).await.is_empty());
}
