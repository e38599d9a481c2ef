//! A CheckRequest in Envoy's proto3 JSON form (as OPA-Envoy users know it: `attributes.request
//! .http…`, camelCase or snake_case field names) read into a [`RawRequest`], for
//! `stepguard check`.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::RawRequest;

/// A field by its proto3 JSON name or its original proto name.
fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake))
}

fn string(v: &Value, camel: &str, snake: &str) -> String {
    field(v, camel, snake)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn string_map(v: Option<&Value>) -> HashMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn socket(peer: Option<&Value>) -> (Option<String>, Option<u32>) {
    let Some(addr) = peer
        .and_then(|p| p.get("address"))
        .and_then(|a| field(a, "socketAddress", "socket_address"))
    else {
        return (None, None);
    };
    let port = field(addr, "portValue", "port_value").and_then(Value::as_u64);
    (
        addr.get("address")
            .and_then(Value::as_str)
            .map(str::to_string),
        port.and_then(|p| u32::try_from(p).ok()),
    )
}

impl RawRequest {
    /// Reads the proto3 JSON form of a CheckRequest.
    pub fn from_check_json(check: &Value) -> Result<Self, String> {
        let attrs = check
            .get("attributes")
            .ok_or("no `attributes` in the CheckRequest")?;
        let http = attrs
            .get("request")
            .and_then(|r| r.get("http"))
            .ok_or("no `attributes.request.http` in the CheckRequest")?;
        let source = attrs.get("source");
        let (source_address, source_port) = socket(source);
        let (destination_address, destination_port) = socket(attrs.get("destination"));
        let raw_body = string(http, "rawBody", "raw_body");
        let body = if raw_body.is_empty() {
            string(http, "body", "body").into_bytes()
        } else {
            STANDARD
                .decode(raw_body)
                .map_err(|_| "`rawBody` is not base64")?
        };
        let filter_metadata = field(attrs, "metadataContext", "metadata_context")
            .and_then(|m| field(m, "filterMetadata", "filter_metadata"))
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        Ok(Self {
            id: string(http, "id", "id"),
            method: string(http, "method", "method"),
            scheme: string(http, "scheme", "scheme"),
            host: string(http, "host", "host"),
            path: string(http, "path", "path"),
            protocol: string(http, "protocol", "protocol"),
            headers: string_map(http.get("headers"))
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            body,
            source_address,
            source_port,
            source_principal: source
                .and_then(|s| s.get("principal"))
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
                .map(str::to_string),
            destination_address,
            destination_port,
            context_extensions: string_map(field(attrs, "contextExtensions", "context_extensions")),
            filter_metadata,
            trace_context: HashMap::new(),
        })
    }
}
