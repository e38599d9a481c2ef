//! How each SET's delivery ended is recorded: delivered, refused by the receiver.

use std::sync::{Arc, Mutex};

use axum::routing::post;
use serde_json::Value;

use super::*;
use crate::ssf::config::SendReceiver;
use crate::testkit::evidence::Kept;

/// A receiver of SETs on loopback answering `status` to each, keeping their bodies; its URL.
pub(crate) async fn receiver(status: u16) -> (String, Arc<Mutex<Vec<String>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/events",
        post(move |body: String| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(body);
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

fn jti_of(token: &str) -> String {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["jti"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn every_delivery_is_recorded_with_how_it_ended() {
    let (accepting, accepted) = receiver(202).await;
    let (refusing, _) = receiver(400).await;
    let config = SendConfig {
        issuer: "https://stepguard.example".into(),
        signing_key_file: format!("{}/dev-signing-key.DEV-ONLY.pem", crate::testkit::DIR).into(),
        key_id: "k1".into(),
        jwks_path: "/ssf/jwks.json".into(),
        receivers: vec![
            SendReceiver {
                url: accepting,
                audience: "https://idp.example/ssf".into(),
                bearer_token_file: None,
            },
            SendReceiver {
                url: refusing,
                audience: "https://pam.example/ssf".into(),
                bearer_token_file: None,
            },
        ],
        max_attempts: 2,
        queue: 8,
    };
    let kept = Arc::new(Kept::default());
    let sender = Sender::start(&config, "aal1", Some(kept.clone())).unwrap();
    let about = About {
        iss: "https://idp.example",
        sub: "alice",
        sid: Some("s-1"),
        acr: Some("aal3"),
    };
    sender.notify(Notify::SessionRevoked, &about, "keys.export", 1_800_000_000);
    for _ in 0..100 {
        if kept.records().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let records = kept.records();
    assert_eq!(records.len(), 2, "{records:?}");
    let by_aud = |aud: &str| {
        records
            .iter()
            .find(|r| r["input"]["signal"]["aud"] == aud)
            .unwrap()
            .clone()
    };
    let delivered = by_aud("https://idp.example/ssf");
    assert_eq!(delivered["event"], "signal_sent");
    assert_eq!(delivered["result"]["outcome"], "delivered");
    assert_eq!(delivered["result"]["attempts"], 1);
    assert_eq!(delivered["input"]["action"], "keys.export");
    assert_eq!(
        delivered["input"]["subject"]["id"],
        "https://idp.example|alice"
    );
    assert_eq!(
        delivered["input"]["signal"]["iss"],
        "https://stepguard.example"
    );
    assert_eq!(
        delivered["input"]["signal"]["type"],
        "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
    );
    assert_eq!(
        delivered["input"]["signal"]["subject"]["session"]["id"],
        "s-1"
    );
    let sent = accepted.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(delivered["input"]["signal"]["jti"], jti_of(&sent[0]));
    let refused = by_aud("https://pam.example/ssf");
    assert_eq!(refused["result"]["outcome"], "refused");
    assert_eq!(refused["result"]["attempts"], 1, "a 4xx is final");
}
