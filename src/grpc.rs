//! The Envoy edge: `envoy.service.auth.v3.Authorization/Check`. The only place (with `response`)
//! that sees Envoy protobufs: a CheckRequest becomes a [`RawRequest`] once, the pipeline decides
//! in its own task (a panic there is a 503, not a gRPC error), and the decision is rendered.
//! It never answers with a gRPC error, which Envoy would map through `failure_mode_allow`.
//! The call's own W3C trace context (gRPC metadata) is kept for the check's span.

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{Address, Authorization, CheckRequest, CheckResponse};
use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
use serde_json::Value;
use tonic::{Request, Response, Status};

use crate::decision::Decision;
use crate::fault::Fault;
use crate::pipeline::Pipeline;
use crate::request::RawRequest;
use crate::response::render;

/// The Authorization service.
pub struct CheckService {
    pipeline: Arc<Pipeline>,
}

impl CheckService {
    pub fn new(pipeline: Arc<Pipeline>) -> Self {
        Self { pipeline }
    }
}

#[tonic::async_trait]
impl Authorization for CheckService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let trace_context = trace_context(request.metadata());
        let mut raw = raw_request(request.into_inner());
        raw.trace_context = trace_context;
        let pipeline = self.pipeline.clone();
        let decision = match tokio::spawn(async move { pipeline.decide(raw).await }).await {
            Ok(decision) => decision,
            Err(e) => {
                tracing::error!(error = %e, "decision task failed");
                Decision::refuse("panic".into(), Fault::InternalError)
            }
        };
        Ok(Response::new(render(&decision)))
    }
}

/// Converts Envoy's CheckRequest into plain owned data.
pub fn raw_request(check: CheckRequest) -> RawRequest {
    let Some(attrs) = check.attributes else {
        return RawRequest::default();
    };
    let mut raw = RawRequest {
        context_extensions: attrs.context_extensions,
        ..Default::default()
    };
    if let Some(source) = attrs.source {
        (raw.source_address, raw.source_port) = socket(source.address.and_then(|a| a.address));
        raw.source_principal = Some(source.principal).filter(|p| !p.is_empty());
    }
    if let Some(destination) = attrs.destination {
        (raw.destination_address, raw.destination_port) =
            socket(destination.address.and_then(|a| a.address));
    }
    if let Some(meta) = attrs.metadata_context {
        raw.filter_metadata = meta
            .filter_metadata
            .into_iter()
            .map(|(ns, s)| (ns, struct_to_json(s)))
            .collect();
    }
    if let Some(http) = attrs.request.and_then(|r| r.http) {
        raw.id = http.id;
        raw.method = http.method;
        raw.scheme = http.scheme;
        raw.host = http.host;
        raw.path = http.path;
        raw.protocol = http.protocol;
        raw.headers = lower_case(http.headers);
        raw.body = if http.raw_body.is_empty() {
            http.body.into_bytes()
        } else {
            http.raw_body
        };
    }
    raw
}

/// The W3C trace context Envoy's gRPC client injected into the Check call's metadata (the
/// span of its ext_authz call, when Envoy traces the request).
fn trace_context(metadata: &tonic::metadata::MetadataMap) -> HashMap<String, String> {
    ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|name| {
            let value = metadata.get(name)?.to_str().ok()?;
            Some((name.to_string(), value.to_string()))
        })
        .collect()
}

fn socket(address: Option<Address>) -> (Option<String>, Option<u32>) {
    match address {
        Some(Address::SocketAddress(s)) => {
            let port = match s.port_specifier {
                Some(envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(p)) => Some(p),
                _ => None,
            };
            (Some(s.address), port)
        }
        _ => (None, None),
    }
}

fn lower_case(headers: HashMap<String, String>) -> HashMap<String, String> {
    headers
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect()
}

fn struct_to_json(s: Struct) -> Value {
    Value::Object(
        s.fields
            .into_iter()
            .map(|(k, v)| (k, value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: PbValue) -> Value {
    match v.kind {
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(n).map_or(Value::Null, |n| {
            // Integral numbers (exp, auth_time) stay integers.
            if n.as_f64()
                .is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            {
                Value::from(n.as_f64().unwrap_or_default() as i64)
            } else {
                Value::Number(n)
            }
        }),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(value_to_json).collect()),
        Some(Kind::NullValue(_)) | None => Value::Null,
    }
}
