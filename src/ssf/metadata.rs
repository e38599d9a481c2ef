//! stepguard's own transmitter side on the HTTP port, when it sends SETs (`shared_signals.send`):
//! its key set at `send.jwks_path`, and its transmitter configuration metadata (SSF 1.0 §6) at
//! the SSF well-known location of `send.issuer` (`/.well-known/ssf-configuration`, then the
//! issuer's path), so a receiver configured with stepguard's issuer finds its keys.
//!
//! The metadata names `issuer`, `jwks_uri` (the issuer's origin — scheme, host, port — with
//! `jwks_path`: the issuer's host must reach stepguard's HTTP port, as a receiver assumes when it
//! reads the metadata there), `delivery_methods_supported` (push, RFC 8935: stepguard pushes to
//! its configured receivers and offers no stream management) and `spec_version`. An issuer that
//! is not an https URL (plain http on loopback) has no well-known location: then only the key
//! set is served.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use super::config::{SendConfig, WELL_KNOWN_SSF, safe_path};
use super::discovery::PUSH;
use crate::section::secure_url;

/// The SSF version the metadata follows.
pub const SPEC_VERSION: &str = "1_0";

/// What stepguard publishes as a transmitter.
#[derive(Debug, Clone)]
pub struct Published {
    pub jwks_path: String,
    pub jwks: Value,
    /// The metadata's path and document, when the issuer has a well-known location.
    pub metadata: Option<(String, Value)>,
}

impl Published {
    /// The key set `jwks` at `send.jwks_path`, and the metadata of `send.issuer`.
    pub fn new(send: &SendConfig, jwks: Value) -> Self {
        let metadata = document(send);
        match &metadata {
            Some((path, _)) => tracing::info!(path, "SSF transmitter metadata served"),
            None => tracing::info!(
                issuer = %send.issuer,
                "no SSF transmitter metadata served: the issuer is not an https URL"
            ),
        }
        Self {
            jwks_path: send.jwks_path.clone(),
            jwks,
            metadata,
        }
    }
}

/// The metadata of `send` and where it is served; `None` when the issuer is not an https URL
/// (plain http on loopback) or its path is not one the HTTP port can serve.
pub fn document(send: &SendConfig) -> Option<(String, Value)> {
    if !secure_url(&send.issuer) {
        return None;
    }
    let issuer = url::Url::parse(&send.issuer).ok()?;
    let path = format!("{WELL_KNOWN_SSF}{}", issuer.path().trim_end_matches('/'));
    if !safe_path(&path) || issuer.query().is_some() || issuer.fragment().is_some() {
        return None;
    }
    let origin = issuer.origin().ascii_serialization();
    let metadata = json!({
        "spec_version": SPEC_VERSION,
        "issuer": send.issuer,
        "jwks_uri": format!("{origin}{}", send.jwks_path),
        "delivery_methods_supported": [PUSH],
    });
    Some((path, metadata))
}

/// The key set's and the metadata's routes.
pub fn router<S: Clone + Send + Sync + 'static>(published: Published) -> Router<S> {
    let jwks = published.jwks;
    let mut router = Router::new().route(&published.jwks_path, get(move || serve(jwks.clone())));
    if let Some((path, metadata)) = published.metadata {
        router = router.route(&path, get(move || serve(metadata.clone())));
    }
    router
}

async fn serve(document: Value) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        document.to_string(),
    )
}

#[cfg(test)]
mod tests;
