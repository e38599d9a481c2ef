//! Requests as Envoy's ext_authz filter sends them: CheckRequests, for tests that call the
//! sidecar over gRPC, and the `RawRequest`s the gRPC edge makes of them, for benches and tests
//! that call the pipeline.

use std::collections::HashMap;

use crate::request::RawRequest;

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

/// What Envoy's ext_authz filter sends for a request, as `grpc::raw_request` converts it.
pub fn raw_request(method: &str, path: &str, token: Option<&str>, body: &str) -> RawRequest {
    let mut headers: HashMap<String, String> = [
        (":authority", "127.0.0.1:10000"),
        (":method", method),
        (":path", path),
        (":scheme", "http"),
        ("user-agent", "h2load nghttp2/1.64.0"),
        ("accept", "*/*"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "6f1c9a2e-5d0b-4e59-9a57-2f0f4cf1d6a1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some(t) = token {
        headers.insert("authorization".into(), format!("Bearer {t}"));
    }
    if !body.is_empty() {
        headers.insert("content-type".into(), "application/json".into());
        headers.insert("content-length".into(), body.len().to_string());
    }
    RawRequest {
        id: "13873812612451390101".into(),
        method: method.into(),
        scheme: "http".into(),
        host: "127.0.0.1:10000".into(),
        path: path.into(),
        protocol: "HTTP/2".into(),
        headers,
        body: body.as_bytes().to_vec(),
        source_address: Some("127.0.0.1".into()),
        source_port: Some(51234),
        destination_address: Some("127.0.0.1".into()),
        destination_port: Some(10000),
        ..Default::default()
    }
}
