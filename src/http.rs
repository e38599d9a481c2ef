//! The HTTP ports. Admin endpoints: `/healthz` (the process is up), `/metrics` (Prometheus text
//! exposition, [`crate::telemetry::metrics`]) and `/readyz`: 200 `ready`, 200 `degraded`
//! while the grant store does not answer (public routes still pass; sensitive routes answer
//! 503), 503 `starting` until a policy is active (a bundle server's first bundle), 503
//! `draining` after SIGTERM. Degraded stays 200 on purpose: taking the pod out of
//! service would also stop the routes that do not need the store. With `challenge.oidc`, the
//! OIDC callback at `redirect_uri`'s path ([`crate::oidc::callback`]). With `listen.admin`, the
//! admin endpoints are served there and the `listen.http` port serves the callback (and the
//! Shared Signals push endpoint and key set, when configured) only (it is
//! the internet-facing one); without it, one port serves both ([`Endpoints`]). With
//! `shared_signals.send`, stepguard's SET key set and transmitter metadata
//! ([`crate::ssf::metadata`]) are served beside the callback.

pub mod config;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::oidc::callback::{CallbackState, callback, start};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::evidence::Evidence;
use crate::grant::GrantStore;
use crate::policy::PolicyHandle;
use crate::telemetry::metrics;

/// What the HTTP endpoints read.
#[derive(Clone)]
pub struct HttpState {
    pub ready: Arc<AtomicBool>,
    pub grants: Arc<dyn GrantStore>,
    /// Not ready until a policy is active (a bundle server's first bundle).
    pub policy: Arc<PolicyHandle>,
    /// The evidence sink (its spool's size is a gauge).
    pub evidence: Arc<dyn Evidence>,
    /// The OIDC callback's path and state, when configured.
    pub callback: Option<(String, CallbackState)>,
    /// The Shared Signals push endpoint's path and state, when configured (RFC 8935).
    pub ssf_push: Option<(String, crate::ssf::push::Push)>,
    /// stepguard's own SET key set and transmitter metadata, when it sends events.
    pub ssf_published: Option<crate::ssf::metadata::Published>,
}

/// Which endpoints one listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoints {
    /// `/healthz`, `/readyz`, `/metrics` and the callback (no `listen.admin`).
    All,
    /// The callback (and Shared Signals push and key set) only (`listen.http` beside a
    /// `listen.admin`).
    Callback,
    /// `/healthz`, `/readyz`, `/metrics` only (`listen.admin`).
    Admin,
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    endpoints: Endpoints,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut app = Router::new();
    if endpoints != Endpoints::Callback {
        app = app
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(render_metrics));
    }
    let served_callback = state
        .callback
        .clone()
        .filter(|_| endpoints != Endpoints::Admin);
    if let Some((path, callback_state)) = served_callback {
        let start_path = callback_state.oidc.start_path();
        app = app.merge(
            Router::new()
                .route(&path, get(callback))
                .route(&start_path, get(start))
                .with_state(callback_state),
        );
    }
    if let Some((path, push)) = state
        .ssf_push
        .clone()
        .filter(|_| endpoints != Endpoints::Admin)
    {
        app = app.merge(crate::ssf::push::router(&path, push));
    }
    if let Some(published) = state
        .ssf_published
        .clone()
        .filter(|_| endpoints != Endpoints::Admin)
    {
        app = app.merge(crate::ssf::metadata::router(published));
    }
    let app = app.with_state(state);
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
    if !state.policy.is_active() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting", "policy": "not activated"})),
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

/// Prometheus text exposition format 0.0.4.
async fn render_metrics(State(state): State<HttpState>) -> impl IntoResponse {
    if let Some(spool) = state.evidence.spool() {
        metrics::spool_bytes(spool.bytes);
    }
    let content_type = [(
        header::CONTENT_TYPE,
        "text/plain; version=0.0.4; charset=utf-8",
    )];
    match metrics::render() {
        Some(text) => (StatusCode::OK, content_type, text),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            content_type,
            "# another metrics recorder is installed in this process\n".to_string(),
        ),
    }
}
