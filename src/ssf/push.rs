//! Push delivery (RFC 8935): the transmitter `POST`s one SET (`Content-Type:
//! application/secevent+jwt`) to the configured path on the HTTP port. `202 Accepted` when it was
//! applied (or is an event stepguard ignores); `400` with `{"err": …, "description": …}` and the
//! RFC's error code when it is refused (a replayed `jti` is `invalid_request`, "duplicate jti",
//! after the first delivery was applied); `401` without the configured bearer token; `503` when
//! the grant store cannot record it, so the transmitter retries.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use super::receiver::Receiver;
use super::set::SetError;
use crate::identity::signed::MAX_SIGNED_BYTES;

/// What the push endpoint needs.
#[derive(Clone)]
pub struct Push {
    pub receiver: Arc<Receiver>,
    /// The bearer token the transmitter must present; `None`: none asked.
    pub bearer: Option<Arc<str>>,
}

impl Push {
    /// The endpoint for `config` over `receiver`, its bearer token read now (a file whose
    /// content is trimmed).
    pub fn new(
        receiver: Arc<Receiver>,
        config: &super::config::PushConfig,
    ) -> std::io::Result<Self> {
        let bearer = match &config.bearer_token_file {
            Some(path) => Some(Arc::from(
                super::read_token(path).map_err(std::io::Error::other)?,
            )),
            None => None,
        };
        Ok(Self { receiver, bearer })
    }
}

/// The push endpoint at `path`.
pub fn router<S: Clone + Send + Sync + 'static>(path: &str, push: Push) -> Router<S> {
    Router::new().route(path, post(receive)).with_state(push)
}

async fn receive(State(push): State<Push>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(expected) = &push.bearer {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok = presented.is_some_and(|p| {
            aws_lc_rs::constant_time::verify_slices_are_equal(p.as_bytes(), expected.as_bytes())
                .is_ok()
        });
        if !ok {
            super::counted("push", "authentication_failed");
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(json!({"err": "authentication_failed",
                                  "description": "a valid bearer token is required"})),
            )
                .into_response();
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_ascii_lowercase());
    if content_type.as_deref() != Some("application/secevent+jwt") {
        return refused(&SetError::InvalidRequest(
            "Content-Type must be application/secevent+jwt".into(),
        ));
    }
    if body.len() > MAX_SIGNED_BYTES {
        return refused(&SetError::InvalidRequest("too large".into()));
    }
    let Ok(token) = std::str::from_utf8(&body) else {
        return refused(&SetError::InvalidRequest("not a compact JWS".into()));
    };
    match push.receiver.receive(token.trim()).await {
        Ok(applied) => {
            super::applied("push", &applied);
            StatusCode::ACCEPTED.into_response()
        }
        Err(e) => refused(&e),
    }
}

fn refused(e: &SetError) -> Response {
    super::counted("push", e.label());
    tracing::warn!(error = %e, "security event token refused");
    if let SetError::Unavailable(_) = e {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            axum::Json(json!({"err": "temporarily_unavailable",
                              "description": "the event could not be recorded; retry"})),
        )
            .into_response();
    }
    let description = match e {
        SetError::Replayed => "duplicate jti".to_string(),
        other => other.to_string(),
    };
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"err": e.code(), "description": description})),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
