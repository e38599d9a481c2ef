//! The normalized, owned request every stage works on. Built once per check from Envoy's
//! CheckRequest (see `grpc`) or from its proto3 JSON form (`stepguard check`), so nothing past
//! the edge sees protobuf types.
//!
//! Normalization is fail-closed: a path whose decoded segments could be read two ways (encoded
//! `/` or `\`, `;` path parameters, dot segments, NUL, invalid UTF-8) or that is longer than the configured number of
//! segments is a [`RequestError`], which the pipeline answers with 400 before classification.

mod json;

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

use crate::ijson::{self, JsonProblem};

/// Client headers with this prefix are never identity: ignored, and removed before the upstream.
pub const RESERVED_PREFIX: &str = "x-stepguard-";
/// Envoy sets this header when `with_request_body` sent only part of the body.
const PARTIAL_BODY_HEADER: &str = "x-envoy-auth-partial-body";
/// Largest body stepguard parses.
const MAX_BODY_BYTES: usize = 256 * 1024;

/// What Envoy sent, as plain owned data.
#[derive(Debug, Clone, Default)]
pub struct RawRequest {
    pub id: String,
    pub method: String,
    pub scheme: String,
    pub host: String,
    /// Path including the query string, as Envoy reports it.
    pub path: String,
    pub protocol: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub source_address: Option<String>,
    pub source_port: Option<u32>,
    pub source_principal: Option<String>,
    pub destination_address: Option<String>,
    pub destination_port: Option<u32>,
    pub context_extensions: HashMap<String, String>,
    /// `metadata_context.filter_metadata`, as JSON objects per namespace.
    pub filter_metadata: HashMap<String, Value>,
    /// W3C trace context (`traceparent`, `tracestate`) of the Check call itself: Envoy's
    /// ext_authz client span, from the gRPC metadata. Telemetry only; never policy input.
    pub trace_context: HashMap<String, String>,
}

/// A request that cannot be classified safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("ambiguous path: {0}")]
    AmbiguousPath(&'static str),
    #[error("path has more than {0} segments")]
    PathTooLong(usize),
    #[error("request is not an HTTP request")]
    NotHttp,
}

/// Headers that make some frameworks route a request under another method.
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The parsed request body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Empty,
    /// A JSON body with one reading (see [`crate::ijson`]).
    Json(Value),
    Form(Vec<(String, String)>),
    /// A content type stepguard does not read (neither JSON nor a form).
    OtherType,
    /// A JSON body without one reading: a repeated member name, not UTF-8, not JSON.
    Invalid(JsonProblem),
    /// Larger than stepguard reads.
    TooLarge,
    /// Envoy sent only part of the body.
    Truncated,
}

/// The normalized request.
#[derive(Debug, Clone)]
pub struct AuthzRequest {
    pub raw: RawRequest,
    /// Upper-case method.
    pub method: String,
    /// Lower-case host, port kept.
    pub host: String,
    /// Percent-decoded, non-empty path segments.
    pub segments: Vec<String>,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// The body, parsed on first use: public routes never pay for it.
    parsed: OnceLock<ParsedBody>,
    pub context_extensions: HashMap<String, String>,
}

/// The parsed body and the paths of its numbers no double holds exactly.
#[derive(Debug, Clone)]
struct ParsedBody {
    body: Body,
    inexact: Vec<Vec<String>>,
}

impl AuthzRequest {
    /// Normalizes a raw request.
    pub fn new(mut raw: RawRequest, max_segments: usize) -> Result<Self, RequestError> {
        if raw.method.is_empty() {
            return Err(RequestError::NotHttp);
        }
        for name in reserved_names(&raw.headers) {
            raw.headers.remove(&name);
        }
        let (path, query) = raw.path.split_once('?').unwrap_or((&raw.path, ""));
        let segments = decode_segments(path, max_segments)?;
        let query = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        Ok(Self {
            method: raw.method.to_ascii_uppercase(),
            host: raw.host.to_ascii_lowercase(),
            segments,
            query,
            parsed: OnceLock::new(),
            context_extensions: raw.context_extensions.clone(),
            raw,
        })
    }

    /// The parsed body (parsed once, on first use).
    pub fn body(&self) -> &Body {
        &self.parsed().body
    }

    /// Paths of the JSON body's numbers that no double holds exactly (binding one is refused).
    pub fn inexact_numbers(&self) -> &[Vec<String>] {
        &self.parsed().inexact
    }

    fn parsed(&self) -> &ParsedBody {
        self.parsed.get_or_init(|| {
            let (body, inexact) = parse_body(&self.raw);
            ParsedBody { body, inexact }
        })
    }

    /// A header by lower-case name (client `x-stepguard-*` headers are never returned).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.raw.headers.get(name).map(String::as_str)
    }

    /// The first value of a query parameter.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The methods named by method-override headers (upper case, other than the request's).
    pub fn method_overrides(&self) -> Vec<String> {
        let mut methods: Vec<String> = METHOD_OVERRIDE_HEADERS
            .iter()
            .filter_map(|h| self.header(h))
            .flat_map(|v| v.split(','))
            .map(|m| m.trim().to_ascii_uppercase())
            .filter(|m| !m.is_empty() && *m != self.method)
            .collect();
        methods.sort();
        methods.dedup();
        methods
    }

    /// The method as bound into a transaction: the request's, and any override it carries
    /// (`POST;override=DELETE`), since the application acts on the override.
    pub fn bound_method(&self) -> String {
        let overrides = self.method_overrides();
        if overrides.is_empty() {
            return self.method.clone();
        }
        format!("{};override={}", self.method, overrides.join(","))
    }

    /// The path without its query string.
    pub fn path_only(&self) -> &str {
        self.raw.path.split('?').next().unwrap_or_default()
    }

    /// True for a browser navigation (it can follow a redirect to the IdP).
    pub fn is_browser(&self) -> bool {
        self.header("sec-fetch-mode") == Some("navigate")
            || self
                .header("accept")
                .is_some_and(|a| a.contains("text/html"))
    }
}

/// Names of client-sent `x-stepguard-*` headers.
pub fn reserved_names(headers: &HashMap<String, String>) -> Vec<String> {
    headers
        .keys()
        .filter(|k| k.to_ascii_lowercase().starts_with(RESERVED_PREFIX))
        .cloned()
        .collect()
}

fn decode_segments(path: &str, max: usize) -> Result<Vec<String>, RequestError> {
    let mut segments = Vec::new();
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        if segments.len() == max {
            return Err(RequestError::PathTooLong(max));
        }
        let bytes: Vec<u8> = percent_decode(raw.as_bytes());
        let segment =
            String::from_utf8(bytes).map_err(|_| RequestError::AmbiguousPath("invalid UTF-8"))?;
        if segment.contains(['/', '\\', '\0']) {
            return Err(RequestError::AmbiguousPath("encoded separator"));
        }
        // Servlet-style `;params` are stripped by some upstreams: `/transfers;x` would be read
        // as `/transfers` there but classified differently here.
        if segment.contains(';') {
            return Err(RequestError::AmbiguousPath("path parameter"));
        }
        if segment == "." || segment == ".." {
            return Err(RequestError::AmbiguousPath("dot segment"));
        }
        segments.push(segment);
    }
    Ok(segments)
}

fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if input[i] == b'%'
            && let (Some(h), Some(l)) = (
                input.get(i + 1).copied().and_then(hex),
                input.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

fn parse_body(raw: &RawRequest) -> (Body, Vec<Vec<String>>) {
    // Envoy marks a partial body; a declared length longer than what arrived is partial too,
    // whatever the client put in that header.
    let declared = raw
        .headers
        .get("content-length")
        .and_then(|l| l.trim().parse::<usize>().ok());
    if raw.headers.get(PARTIAL_BODY_HEADER).map(String::as_str) == Some("true")
        || declared.is_some_and(|len| len > raw.body.len())
    {
        return (Body::Truncated, Vec::new());
    }
    if raw.body.is_empty() {
        return (Body::Empty, Vec::new());
    }
    if raw.body.len() > MAX_BODY_BYTES {
        return (Body::TooLarge, Vec::new());
    }
    let content_type = raw
        .headers
        .get("content-type")
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if content_type == "application/json" || content_type.ends_with("+json") {
        match ijson::read(&raw.body, ijson::MAX_DEPTH) {
            Ok(json) => (Body::Json(json.value), json.inexact),
            Err(problem) => (Body::Invalid(problem), Vec::new()),
        }
    } else if content_type == "application/x-www-form-urlencoded" {
        let pairs = form_urlencoded::parse(&raw.body).into_owned().collect();
        (Body::Form(pairs), Vec::new())
    } else {
        (Body::OtherType, Vec::new())
    }
}

#[cfg(test)]
mod tests;
