//! RFC 8935 over real HTTP on loopback: 202, the error JSON, the bearer token, the content type.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Push, router};
use crate::ssf::receiver::tests::{RISC, alice, receiver, set};

async fn serve(bearer: Option<&str>) -> String {
    let (receiver, _) = receiver().await;
    let push = Push {
        receiver: Arc::new(receiver),
        bearer: bearer.map(Arc::from),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router("/ssf/events", push))
            .await
            .unwrap();
    });
    format!("http://{addr}/ssf/events")
}

async fn post(url: &str, body: &str, content_type: &str, bearer: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body.to_string());
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_set_is_accepted_once_and_refusals_carry_the_rfc_error() {
    let url = serve(None).await;
    let event = format!("{RISC}account-disabled");
    let token = set("push-1", &event, json!({}), alice());
    let ct = "application/secevent+jwt";
    assert_eq!(post(&url, &token, ct, None).await, (202, Value::Null));
    let (status, body) = post(&url, &token, ct, None).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"err": "invalid_request", "description": "duplicate jti"})
    );
    let (status, body) = post(
        &url,
        &set("push-2", &event, json!({}), alice()),
        "application/jwt",
        None,
    )
    .await;
    assert_eq!(
        (status, body["err"].as_str()),
        (400, Some("invalid_request"))
    );
    let (message, _) = token.rsplit_once('.').unwrap();
    let (status, body) = post(&url, &format!("{message}.{}", "A".repeat(86)), ct, None).await;
    assert_eq!((status, body["err"].as_str()), (400, Some("invalid_key")));
}

#[tokio::test]
async fn a_configured_bearer_token_is_required() {
    let url = serve(Some("s3cret-token")).await;
    let token = set(
        "push-3",
        &format!("{RISC}account-disabled"),
        json!({}),
        alice(),
    );
    let ct = "application/secevent+jwt";
    let (status, body) = post(&url, &token, ct, None).await;
    assert_eq!(
        (status, body["err"].as_str()),
        (401, Some("authentication_failed"))
    );
    assert_eq!(post(&url, &token, ct, Some("wrong")).await.0, 401);
    assert_eq!(post(&url, &token, ct, Some("s3cret-token")).await.0, 202);
}
