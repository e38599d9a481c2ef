//! Stream management against a transmitter on loopback ([`transmitter`]), whose verification
//! endpoint pushes a real signed verification SET to stepguard's push endpoint: a missing stream
//! created, a right one left alone, a differing one updated, what cannot be fixed refused; the
//! verification state matched, unknown and missing states accepted and told apart.

mod app;
pub(crate) mod transmitter;

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::ssf::config::SharedSignalsConfig;
use crate::ssf::push::{Push, router};
use crate::ssf::receiver::tests::receiver;
use crate::ssf::verification::{self, Outcome};
use crate::testkit::ISSUER;
use transmitter::{AUD, TOKEN, Transmitter, VERIFICATION};

const PUSH_TOKEN: &str = "push-token";

/// A file holding `content`, unique to this process and call.
pub(crate) fn token_file(content: &str) -> std::path::PathBuf {
    let name = format!(
        "stepguard-ssf-{}-{}",
        std::process::id(),
        crate::random::random_token(9).unwrap()
    );
    let path = std::env::temp_dir().join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// stepguard's push endpoint on loopback (the receiver tests' receiver, [`PUSH_TOKEN`]).
async fn push_endpoint() -> String {
    let (receiver, _) = receiver().await;
    let push = Push {
        receiver: Arc::new(receiver),
        bearer: Some(Arc::from(PUSH_TOKEN)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router("/ssf/events", push))
            .await
            .unwrap()
    });
    format!("http://{addr}/ssf/events")
}

/// The section receiving by `delivery` (a YAML mapping of `push` or `poll`), managed.
fn section(delivery: &str, verify: bool) -> SharedSignalsConfig {
    let yaml = format!(
        "transmitter:\n  issuer: {ISSUER}\n  management:\n    bearer_token_file: {}\n    \
         verify: {verify}\n    recheck_secs: 0\naudiences: [{AUD}]\n{delivery}",
        token_file(TOKEN).display()
    );
    let config: SharedSignalsConfig = yaml_serde::from_str(&yaml).unwrap();
    config.validate().unwrap();
    config
}

fn pushing(push_url: &str, verify: bool) -> SharedSignalsConfig {
    section(
        &format!(
            "push:\n  endpoint_url: {push_url}\n  bearer_token_file: {}\n",
            token_file(PUSH_TOKEN).display()
        ),
        verify,
    )
}

fn management(t: &Transmitter, config: &SharedSignalsConfig) -> Management {
    let metadata: Metadata = serde_json::from_value(t.held().metadata.clone()).unwrap();
    Management::new(config, &metadata).unwrap().unwrap()
}

fn methods(t: &Transmitter) -> Vec<String> {
    t.held().requests.iter().map(|(m, _)| m.clone()).collect()
}

#[tokio::test]
async fn a_missing_stream_is_created_verified_then_left_alone() {
    let t = Transmitter::start(ISSUER, &EVENTS).await;
    let push_url = push_endpoint().await;
    let m = management(&t, &pushing(&push_url, true));
    let first = m.check().await.unwrap();
    assert_eq!(first.setup, Setup::Created);
    assert!(first.undelivered.is_empty());
    assert_eq!(first.status, Some(("enabled".to_string(), None)));
    let created = t.held().requests[1].1.clone();
    assert_eq!(
        created["delivery"],
        json!({"method": PUSH, "endpoint_url": push_url,
               "authorization_header": format!("Bearer {PUSH_TOKEN}")})
    );
    assert_eq!(created["events_requested"], json!(EVENTS));
    // The transmitter pushed a signed verification SET with our state; stepguard took it.
    let state = first.verification.clone().unwrap();
    assert_eq!(t.held().requests[2].1["state"], json!(state));
    assert_eq!(t.held().pushed, vec![202]);
    assert!(verification::verified(&first.stream_id));

    let second = m.check().await.unwrap();
    assert_eq!(second.setup, Setup::Unchanged);
    assert_eq!(second.stream_id, first.stream_id);
    assert_eq!(methods(&t), ["GET", "POST", "VERIFY", "GET", "VERIFY"]);
}

#[tokio::test]
async fn a_stream_that_differs_is_updated() {
    let t = Transmitter::start(ISSUER, &EVENTS).await;
    let push_url = push_endpoint().await;
    let id = format!("stream-{}", crate::random::random_token(9).unwrap());
    t.held().streams.push(json!({
        "stream_id": id, "iss": ISSUER, "aud": [AUD, "https://other.example"],
        "delivery": {"method": PUSH, "endpoint_url": "https://old.example/events"},
        "events_requested": [EVENTS[0]], "events_delivered": [EVENTS[0]],
    }));
    let m = management(&t, &pushing(&push_url, false));
    let checked = m.check().await.unwrap();
    assert_eq!(checked.setup, Setup::Updated);
    assert_eq!(checked.stream_id, id);
    assert!(checked.undelivered.is_empty());
    assert_eq!(checked.verification, None);
    let patch = t.held().requests[1].clone();
    assert_eq!(patch.0, "PATCH");
    assert_eq!(patch.1["stream_id"], json!(id));
    assert_eq!(patch.1["delivery"]["endpoint_url"], json!(push_url));
    assert_eq!(patch.1["events_requested"], json!(EVENTS));
    assert_eq!(methods(&t), ["GET", "PATCH"]);
}

#[tokio::test]
async fn undelivered_events_are_reported_and_foreign_streams_refused() {
    let caep_only = &EVENTS[..4];
    let t = Transmitter::start(ISSUER, caep_only).await;
    let push_url = push_endpoint().await;
    let m = management(&t, &pushing(&push_url, false));
    let checked = m.check().await.unwrap();
    assert_eq!(checked.undelivered, EVENTS[4..].to_vec());

    t.held().streams[0]["aud"] = json!("https://someone-else.example");
    let refused = m.check().await.unwrap_err().to_string();
    assert!(
        refused.contains("none of shared_signals.audiences"),
        "{refused}"
    );

    let other = Transmitter::start("https://another-issuer.example", &EVENTS).await;
    let refused = management(&other, &pushing(&push_url, false))
        .check()
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("is issued by"), "{refused}");
}

#[tokio::test]
async fn a_poll_stream_is_created_and_one_polled_elsewhere_refused() {
    let t = Transmitter::start(ISSUER, &EVENTS).await;
    let config = section("poll:\n  endpoint: http://127.0.0.1:9/poll\n", false);
    let m = management(&t, &config);
    assert_eq!(m.check().await.unwrap().setup, Setup::Created);
    assert_eq!(t.held().requests[1].1["delivery"], json!({"method": POLL}));

    t.held().streams[0]["delivery"]["endpoint_url"] = json!(format!("{}/poll", t.base));
    let refused = m.check().await.unwrap_err().to_string();
    assert!(
        refused.contains("set shared_signals.poll.endpoint"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_wrong_management_token_fails_the_check() {
    let t = Transmitter::start(ISSUER, &EVENTS).await;
    let push_url = push_endpoint().await;
    let mut config = pushing(&push_url, true);
    if let Some(m) = config
        .transmitter
        .as_mut()
        .and_then(|t| t.management.as_mut())
    {
        m.bearer_token_file = token_file("not-the-token");
    }
    let failed = management(&t, &config).check().await.unwrap_err();
    assert!(failed.to_string().contains("status 401"), "{failed}");
    assert!(t.held().streams.is_empty());
}

#[tokio::test]
async fn verification_events_with_unknown_or_no_state_are_accepted_but_do_not_verify() {
    let t = Transmitter::start(ISSUER, &EVENTS).await;
    let push_url = push_endpoint().await;
    let checked = management(&t, &pushing(&push_url, false))
        .check()
        .await
        .unwrap();
    let id = checked.stream_id;
    assert_eq!(t.push_verification(&id, Some("forged.c3RhdGU")).await, 202);
    assert_eq!(t.push_verification(&id, None).await, 202);
    assert!(!verification::verified(&id));
    let state = verification::state(&id).unwrap();
    assert_eq!(t.push_verification(&id, Some(&state)).await, 202);
    assert!(verification::verified(&id));
}

/// The verification event for `stream_id` with `payload`, read as the receiver reads it.
fn verification_event(stream_id: &str, payload: Value) -> crate::ssf::set::SecurityEvent {
    let claims = json!({
        "iss": ISSUER, "aud": AUD, "iat": 1_000, "jti": "v-1",
        "sub_id": {"format": "opaque", "id": stream_id},
        "events": {VERIFICATION: payload},
    });
    let audiences = vec![AUD.to_string()];
    let expect = crate::ssf::set::Expect {
        audiences: &audiences,
        max_age: 60,
        leeway: 60,
    };
    crate::ssf::set::read(Some("secevent+jwt"), &claims, &expect, 1_000).unwrap()
}

#[test]
fn verification_outcomes_are_told_apart() {
    let id = format!("s-{}", crate::random::random_token(9).unwrap());
    verification::watch(&id, TOKEN);
    let state = verification::state(&id).unwrap();
    let answered =
        |stream: &str, payload: Value| verification::answered(&verification_event(stream, payload));
    assert_eq!(answered(&id, json!({})), Some(Outcome::Unsolicited));
    assert_eq!(
        answered(&id, json!({"state": "x.eHl6"})),
        Some(Outcome::UnknownState)
    );
    // A state of this stream is not one of another stream's, nor of another deployment's.
    let other = format!("s-{}", crate::random::random_token(9).unwrap());
    verification::watch(&other, "another-token");
    assert_eq!(
        answered(&other, json!({"state": state})),
        Some(Outcome::UnknownState)
    );
    assert!(!verification::verified(&id));
    assert_eq!(
        answered(&id, json!({"state": state})),
        Some(Outcome::Matched)
    );
    assert!(verification::verified(&id));
    // Any other event is not a verification.
    let mut revoked = verification_event(&id, json!({}));
    revoked.kind = crate::ssf::event::EventKind::SessionRevoked;
    assert_eq!(verification::answered(&revoked), None);
}

#[test]
fn the_requested_events_are_the_ones_stepguard_acts_on() {
    use crate::ssf::event::EventKind;
    let kinds: Vec<EventKind> = EVENTS.iter().map(|e| EventKind::of(e)).collect();
    for kind in [
        EventKind::SessionRevoked,
        EventKind::AssuranceLevelChange,
        EventKind::CredentialChange,
        EventKind::TokenClaimsChange,
        EventKind::AccountDisabled,
        EventKind::AccountPurged,
        EventKind::CredentialCompromise,
        EventKind::SessionsRevoked,
    ] {
        assert!(kinds.contains(&kind), "{kind:?} not requested");
    }
    assert!(!kinds.contains(&EventKind::Unknown));
}
