//! stepguard as a transmitter: `keys.export` (privileged, `after_approval: {notify:
//! session-revoked}`) approved after a real step-up — the challenge completed through the grant
//! API by an approval service — makes replica A push one SET about the approving session to a
//! receiver written in the tests, which verifies it.

use std::time::Duration;

use serde_json::{Value, json};

use super::cluster::{
    Cluster, IDP, Options, RECEIVER_AUDIENCE, RECEIVER_TOKEN, SEND_ISSUER, SEND_JWKS_PATH,
    SEND_KID, eventually,
};
use super::receiver::Delivery;
use crate::support::approvals;
use crate::support::tokens::{claims, now, sign};
use crate::support::transmitter::{CAEP, decode, iss_sub, verify_es256};

/// Completes challenge `id` at aal3 through the grant API on the replica's gRPC port.
async fn complete(grpc: u16, id: &str) {
    let url = format!("http://127.0.0.1:{grpc}");
    approvals::complete(url, id, now(), "security-officer@example.com").await;
}

/// `sub` (aal1 session `sid`) exports a key through A's Envoy: challenged, the challenge
/// completed, the export approved; the one delivery A's receiver then gets.
async fn approved_export(c: &Cluster, sub: &str, sid: &str) -> Delivery {
    let receiver = &c.sending.as_ref().unwrap().receiver;
    let mut token = claims(sub, "aal1", 60);
    token["sid"] = json!(sid);
    let token = sign(&token);
    let (status, body) = c.a.export("k1", &token).await;
    assert_eq!(
        (status, &body["error"]),
        (401, &json!("insufficient_user_authentication")),
        "{body}"
    );
    complete(c.a.served.grpc, body["challenge_id"].as_str().unwrap()).await;
    assert!(
        receiver.deliveries().is_empty(),
        "a SET before any approval"
    );

    let hits = c.upstream.hits();
    let (status, body) = c.a.export("k1", &token).await;
    assert_eq!(status, 200, "the export approved on its grant: {body}");
    assert_eq!(c.upstream.hits(), hits + 1);
    eventually(Duration::from_secs(10), "a SET delivered", || {
        !receiver.deliveries().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), 1, "one SET per approval: {deliveries:?}");
    deliveries.remove(0)
}

/// The delivery's SET, checked against what was sent for whom; verified with `jwk`.
fn check(delivery: &Delivery, jwk: &Value, sub: &str, sid: &str) {
    assert_eq!(
        delivery.content_type.as_deref(),
        Some("application/secevent+jwt")
    );
    assert_eq!(
        delivery.authorization,
        Some(format!("Bearer {RECEIVER_TOKEN}"))
    );
    let set = delivery.body.trim();
    let (header, claims) = decode(set);
    assert_eq!(
        (&header["typ"], &header["alg"], &header["kid"]),
        (&json!("secevent+jwt"), &json!("ES256"), &json!(SEND_KID)),
        "{header}"
    );
    assert!(verify_es256(set, jwk), "the signature does not verify");
    assert_eq!(claims["iss"], SEND_ISSUER);
    assert_eq!(claims["aud"], RECEIVER_AUDIENCE);
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert!(
        (claims["iat"].as_i64().unwrap() - now()).abs() < 60,
        "{claims}"
    );
    let events = claims["events"].as_object().unwrap();
    assert_eq!(events.len(), 1, "{claims}");
    let event = &events[&format!("{CAEP}session-revoked")];
    assert_eq!(event["initiating_entity"], "policy", "{claims}");
    assert_eq!(
        claims["sub_id"],
        json!({"user": iss_sub(IDP, sub), "session": {"format": "opaque", "id": sid}}),
        "the approving subject's session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_privileged_approval_sends_one_session_revoked_set_signed_with_the_send_key() {
    let c = Cluster::start(Options {
        send: true,
        ..Options::default()
    });
    let delivery = approved_export(&c, "judy", "judy-s1").await;
    let key = &c.sending.as_ref().unwrap().key;
    check(&delivery, &key.jwk(), "judy", "judy-s1");
    // The check can tell keys apart: another P-256 key does not verify it.
    assert!(!verify_es256(delivery.body.trim(), &c.transmitter.jwk()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_set_sent_after_a_privileged_approval_verifies_with_stepguards_published_jwks() {
    let c = Cluster::start(Options {
        send: true,
        ..Options::default()
    });
    let delivery = approved_export(&c, "kim", "kim-s1").await;
    let r = reqwest::get(c.a.http_url(SEND_JWKS_PATH)).await.unwrap();
    assert_eq!(r.status(), 200, "stepguard's JWKS at {SEND_JWKS_PATH}");
    let jwks: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let published = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == SEND_KID)
        .unwrap_or_else(|| panic!("no key {SEND_KID} in {jwks}"))
        .clone();
    check(&delivery, &published, "kim", "kim-s1");
    // It is the public half of the configured key, and nothing private is published.
    let own = c.sending.as_ref().unwrap().key.jwk();
    assert_eq!((&published["x"], &published["y"]), (&own["x"], &own["y"]));
    assert!(published.get("d").is_none(), "{published}");
}
