//! The HTTP port: `/healthz` (the process is up) and `/readyz`: 200 `ready`, 200 `degraded`
//! while the grant store does not answer (public routes still pass; sensitive routes answer
//! 503), 503 `draining` after SIGTERM. Degraded stays 200 on purpose: taking the pod out of
//! service would also stop the routes that do not need the store.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::grant::GrantStore;

/// What the HTTP endpoints read.
#[derive(Clone)]
pub struct HttpState {
    pub ready: Arc<AtomicBool>,
    pub grants: Arc<dyn GrantStore>,
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, Json<Value>) {
    if !state.ready.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        );
    }
    match state.grants.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "grant_store": "ok"})),
        ),
        Err(e) => (
            StatusCode::OK,
            Json(json!({"status": "degraded", "grant_store": e.to_string()})),
        ),
    }
}
