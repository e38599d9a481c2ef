//! A minimal OpenID provider on loopback for the `callback` harness: discovery, the dev JWKS,
//! and a token endpoint whose ID token is the dev key's signature over the authorization
//! `code` itself (the fuzzer writes the ID token's claims as the code). A code of `refused` is
//! answered `invalid_grant` (400), as a replayed code is.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::json;

use super::world::{DIR, HEADER, sign_text};

/// Serves the provider on a loopback port of the current runtime; its issuer URL.
pub async fn start() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("fuzz setup: binding the test IdP: {e}"));
    let issuer = match listener.local_addr() {
        Ok(addr) => format!("http://{addr}"),
        Err(e) => panic!("fuzz setup: the test IdP's address: {e}"),
    };
    let discovery = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
    });
    let jwks = std::fs::read_to_string(format!("{DIR}/dev-jwks.json"))
        .unwrap_or_else(|e| panic!("fuzz setup: dev JWKS: {e}"));
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { axum::Json(discovery) }),
        )
        .route(
            "/jwks",
            get(move || async move { ([("content-type", "application/json")], jwks) }),
        )
        .route("/token", post(token));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    issuer
}

async fn token(body: String) -> (StatusCode, axum::Json<serde_json::Value>) {
    let code = form_urlencoded::parse(body.as_bytes())
        .find(|(name, _)| name == "code")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    match (code.as_str(), sign_text(HEADER, &code)) {
        ("refused", _) | (_, None) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant"})),
        ),
        (_, Some(id_token)) => (
            StatusCode::OK,
            axum::Json(
                json!({"id_token": id_token, "access_token": "fuzz", "token_type": "Bearer"}),
            ),
        ),
    }
}
