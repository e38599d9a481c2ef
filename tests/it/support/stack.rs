//! The whole stack for end-to-end tests: real Envoy (the harness bootstrap) in front of the real
//! stepguard (the quickstart config) in front of an echo upstream, and an HTTP client that does
//! not follow redirects (so a 302 to the IdP is seen as such).

use reqwest::redirect::Policy;

use super::envoy::{Envoy, EnvoyConfig, RouteTag};
use super::sidecar::Sidecar;
use super::upstream::EchoUpstream;

/// The quickstart transfer body.
pub const TRANSFER: &str = r#"{"amount": 100, "currency": "EUR", "payee": "bob"}"#;

pub struct Stack {
    // Field order is drop order: Envoy first, then its backends.
    pub envoy: Envoy,
    pub upstream: EchoUpstream,
    pub sidecar: Sidecar,
    pub client: reqwest::Client,
}

impl Stack {
    /// The stack with the harness's default route tags.
    pub fn start() -> Stack {
        Self::start_with_tags(None)
    }

    /// The stack with `tags` instead of the default route tags.
    pub fn start_with_tags(tags: Option<&[RouteTag]>) -> Stack {
        let sidecar = Sidecar::start(|t| t);
        let upstream = EchoUpstream::start();
        let cfg = EnvoyConfig::new(sidecar.grpc.port(), sidecar.http.port(), upstream.port());
        let envoy = match tags {
            Some(tags) => Envoy::start_with_tags(&cfg, tags),
            None => Envoy::start(&cfg),
        };
        let client = reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap();
        Stack {
            envoy,
            upstream,
            sidecar,
            client,
        }
    }

    /// `POST /v1/accounts/A1/transfers` with the quickstart body, optionally with a token.
    pub fn transfer(&self, bearer: Option<&str>) -> reqwest::RequestBuilder {
        let req = self
            .client
            .post(self.envoy.url("/v1/accounts/A1/transfers"))
            .header("content-type", "application/json")
            .body(TRANSFER);
        match bearer {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }
}

/// A response header as a string ("" when absent).
pub fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}
