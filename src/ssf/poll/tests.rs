//! RFC 8936 against a transmitter written here (real HTTP on loopback): SETs received and
//! applied, the next poll acknowledging them and reporting the refused one with its error.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

use super::*;
use crate::grant::GrantStore;
use crate::ssf::config::PollConfig;
use crate::ssf::receiver::tests::{RISC, alice, receiver, set};

/// The transmitter's queue (jti → SET) and every poll body it received.
#[derive(Clone, Default)]
struct Transmitter {
    queue: Arc<Mutex<Vec<(String, String)>>>,
    polls: Arc<Mutex<Vec<Value>>>,
}

async fn poll_endpoint(State(t): State<Transmitter>, body: String) -> axum::Json<Value> {
    let body: Value = serde_json::from_str(&body).unwrap();
    let acked: Vec<String> = body["ack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j.as_str().unwrap().to_string())
        .collect();
    let errored: Vec<String> = body["setErrs"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    t.polls.lock().unwrap().push(body);
    let mut queue = t.queue.lock().unwrap();
    queue.retain(|(jti, _)| !acked.contains(jti) && !errored.contains(jti));
    let sets: serde_json::Map<String, Value> =
        queue.iter().map(|(j, s)| (j.clone(), json!(s))).collect();
    axum::Json(json!({"sets": sets, "moreAvailable": false}))
}

#[tokio::test]
async fn polled_sets_are_applied_then_acknowledged_and_refusals_reported() {
    let transmitter = Transmitter::default();
    let good = set(
        "poll-1",
        &format!("{RISC}account-disabled"),
        json!({}),
        alice(),
    );
    let (message, _) = good.rsplit_once('.').unwrap();
    let forged = format!("{message}.{}", "A".repeat(86));
    transmitter.queue.lock().unwrap().extend([
        ("poll-1".to_string(), good),
        ("poll-bad".to_string(), forged),
    ]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/poll", post(poll_endpoint))
        .with_state(transmitter.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (receiver, store) = receiver().await;
    let config = PollConfig {
        endpoint: format!("http://{addr}/poll"),
        interval_ms: 100,
        max_events: 10,
        bearer_token_file: None,
    };
    let poller = Poller::new(&config, Arc::new(receiver)).unwrap();
    let first = poller.poll_once(&Report::default()).await.unwrap();
    assert_eq!(first.ack, ["poll-1"]);
    assert_eq!(first.errors["poll-bad"].0, "invalid_key");
    let second = poller.poll_once(&first).await.unwrap();
    assert_eq!(second, Report::default(), "nothing left");
    let polls = transmitter.polls.lock().unwrap().clone();
    assert_eq!(polls[0]["ack"], json!([]));
    assert_eq!(polls[0]["maxEvents"], 10);
    assert_eq!(polls[1]["ack"], json!(["poll-1"]));
    assert_eq!(polls[1]["setErrs"]["poll-bad"]["err"], "invalid_key");
    // The applied event is in the subject's journal.
    let keys = crate::ssf::receiver::token_keys(crate::testkit::ISSUER, "alice", None, None);
    let name = crate::ssf::receiver::journal(&keys[0]);
    let journals = store
        .journals(&[name.as_str()], 1_800_000_000)
        .await
        .unwrap();
    assert_eq!(journals[0].len(), 1);
}
