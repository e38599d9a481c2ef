//! CheckRequests as Envoy's ext_authz filter builds them, for tests that call the sidecar over
//! gRPC directly.

use std::collections::HashMap;

use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};

/// A CheckRequest for `method path` on `api.example.com`, HTTP/1.1, with these headers (names
/// lower-case, as Envoy sends them) and body.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> CheckRequest {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    id: "req-1".into(),
                    method: method.into(),
                    host: "api.example.com".into(),
                    path: path.into(),
                    headers,
                    body: body.into(),
                    protocol: "HTTP/1.1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}
