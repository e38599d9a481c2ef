//! An SSF transmitter on loopback for the discovery, stream and app tests: its metadata at the
//! SSF well-known location of its issuer (`{base}/t1`), its key set (the dev JWKS), a stream
//! configuration endpoint holding streams in memory, a status endpoint, and a verification
//! endpoint that signs a verification SET of its `iss` with the dev key and pushes it to the
//! stream's `endpoint_url` with its `authorization_header` before answering 204. Every
//! management request must carry [`TOKEN`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::testkit::sign;
use crate::testkit::tokens::KID;

/// The management bearer token the transmitter expects.
pub(crate) const TOKEN: &str = "mgmt-token";
/// The audience of its streams (the receiver tests' `AUD`).
pub(crate) const AUD: &str = "https://stepguard.example/ssf";
pub(crate) const VERIFICATION: &str =
    "https://schemas.openid.net/secevent/ssf/event-type/verification";

/// What the transmitter holds and saw.
#[derive(Default)]
pub(crate) struct Held {
    /// Served at the well-known location (set by [`Transmitter::start`]; tests change it).
    pub metadata: Value,
    pub streams: Vec<Value>,
    /// The `iss` of the streams it creates.
    pub iss: String,
    /// `events_supported` of the streams it creates or updates.
    pub supported: Vec<String>,
    pub status: String,
    /// Management requests: method and body.
    pub requests: Vec<(String, Value)>,
    /// Status codes of the verification SETs it pushed.
    pub pushed: Vec<u16>,
}

#[derive(Clone)]
pub(crate) struct Transmitter {
    pub base: String,
    pub held: Arc<Mutex<Held>>,
}

impl Transmitter {
    /// Starts on a loopback port: its streams' `iss` is `iss`, it supports `supported`.
    pub async fn start(iss: &str, supported: &[&str]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let held = Arc::new(Mutex::new(Held {
            metadata: json!({
                "spec_version": "1_0",
                "issuer": format!("{base}/t1"),
                "jwks_uri": format!("{base}/jwks"),
                "delivery_methods_supported": ["urn:ietf:rfc:8935", "urn:ietf:rfc:8936"],
                "configuration_endpoint": format!("{base}/ssf/stream"),
                "status_endpoint": format!("{base}/ssf/status"),
                "verification_endpoint": format!("{base}/ssf/verify"),
            }),
            iss: iss.to_string(),
            supported: supported.iter().map(|s| s.to_string()).collect(),
            status: "enabled".into(),
            ..Held::default()
        }));
        let app = Router::new()
            .route("/.well-known/ssf-configuration/t1", get(metadata))
            .route("/big", get(big))
            .route("/moved", get(moved))
            .route("/jwks", get(jwks))
            .route("/ssf/stream", get(list).post(create).patch(update))
            .route("/ssf/status", get(status))
            .route("/ssf/verify", axum::routing::post(verify))
            .with_state(held.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base, held }
    }

    pub fn issuer(&self) -> String {
        format!("{}/t1", self.base)
    }

    pub fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap()
    }

    /// Pushes a verification SET for `stream_id` carrying `state` (none: unsolicited) to the
    /// stream's endpoint; the push endpoint's status.
    pub async fn push_verification(&self, stream_id: &str, state: Option<&str>) -> u16 {
        let stream = self
            .held()
            .streams
            .iter()
            .find(|s| s["stream_id"] == stream_id)
            .cloned()
            .unwrap();
        let iss = self.held().iss.clone();
        push_verification(&iss, &stream, state).await
    }
}

type Shared = State<Arc<Mutex<Held>>>;

fn authorized(headers: &HeaderMap) -> bool {
    let expected = format!("Bearer {TOKEN}");
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str())
}

async fn metadata(State(held): Shared) -> axum::Json<Value> {
    axum::Json(held.lock().unwrap().metadata.clone())
}

async fn big(State(held): Shared) -> axum::Json<Value> {
    let mut metadata = held.lock().unwrap().metadata.clone();
    metadata["padding"] = json!("x".repeat(80 << 10));
    axum::Json(metadata)
}

async fn moved() -> Response {
    (
        StatusCode::FOUND,
        [(header::LOCATION, "/.well-known/ssf-configuration/t1")],
    )
        .into_response()
}

async fn jwks() -> String {
    std::fs::read_to_string(format!("{}/dev-jwks.json", crate::testkit::DIR)).unwrap()
}

async fn list(State(held): Shared, headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mut held = held.lock().unwrap();
    held.requests.push(("GET".into(), Value::Null));
    axum::Json(Value::Array(held.streams.clone())).into_response()
}

/// `events_delivered`: the requested ones it supports.
fn delivered(held: &Held, requested: &Value) -> Value {
    let requested = requested.as_array().cloned().unwrap_or_default();
    Value::Array(
        requested
            .into_iter()
            .filter(|e| held.supported.iter().any(|s| e == s))
            .collect(),
    )
}

async fn create(State(held): Shared, headers: HeaderMap, body: String) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let body: Value = serde_json::from_str(&body).unwrap();
    let mut held = held.lock().unwrap();
    held.requests.push(("POST".into(), body.clone()));
    let stream = json!({
        // Unique across tests: verification is kept per stream id, process-wide.
        "stream_id": format!("stream-{}", crate::random::random_token(9).unwrap()),
        "iss": held.iss, "aud": AUD,
        "delivery": body["delivery"],
        "events_supported": held.supported,
        "events_requested": body["events_requested"],
        "events_delivered": delivered(&held, &body["events_requested"]),
        "description": body["description"],
    });
    held.streams.push(stream.clone());
    (StatusCode::CREATED, axum::Json(stream)).into_response()
}

async fn update(State(held): Shared, headers: HeaderMap, body: String) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let body: Value = serde_json::from_str(&body).unwrap();
    let mut held = held.lock().unwrap();
    held.requests.push(("PATCH".into(), body.clone()));
    let delivered = delivered(&held, &body["events_requested"]);
    let Some(stream) = held
        .streams
        .iter_mut()
        .find(|s| s["stream_id"] == body["stream_id"])
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    for field in ["delivery", "events_requested"] {
        if let Some(value) = body.get(field) {
            stream[field] = value.clone();
        }
    }
    stream["events_delivered"] = delivered;
    axum::Json(stream.clone()).into_response()
}

async fn status(
    State(held): Shared,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let held = held.lock().unwrap();
    let id = query.get("stream_id").cloned().unwrap_or_default();
    if !held.streams.iter().any(|s| s["stream_id"] == id.as_str()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    axum::Json(json!({"stream_id": id, "status": held.status})).into_response()
}

async fn verify(State(held): Shared, headers: HeaderMap, body: String) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let body: Value = serde_json::from_str(&body).unwrap();
    let (iss, stream) = {
        let mut held = held.lock().unwrap();
        held.requests.push(("VERIFY".into(), body.clone()));
        let stream = held
            .streams
            .iter()
            .find(|s| s["stream_id"] == body["stream_id"])
            .cloned();
        (held.iss.clone(), stream)
    };
    let Some(stream) = stream else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let pushed = push_verification(&iss, &stream, body["state"].as_str()).await;
    held.lock().unwrap().pushed.push(pushed);
    StatusCode::NO_CONTENT.into_response()
}

/// Signs a verification SET of `iss` for `stream` with the dev key (`iat` the receiver tests'
/// clock) and pushes it to the stream's endpoint (RFC 8935).
async fn push_verification(iss: &str, stream: &Value, state: Option<&str>) -> u16 {
    let stream_id = stream["stream_id"].as_str().unwrap();
    let payload = match state {
        Some(state) => json!({"state": state}),
        None => json!({}),
    };
    let token = sign(
        json!({"alg": "ES256", "kid": KID, "typ": "secevent+jwt"}),
        json!({"iss": iss, "aud": AUD, "iat": 1_800_000_000 - 5,
               "jti": crate::random::random_token(12).unwrap(),
               "sub_id": {"format": "opaque", "id": stream_id},
               "events": {VERIFICATION: payload}}),
    );
    let mut request = reqwest::Client::new()
        .post(stream["delivery"]["endpoint_url"].as_str().unwrap())
        .header("content-type", "application/secevent+jwt")
        .body(token);
    if let Some(authorization) = stream["delivery"]["authorization_header"].as_str() {
        request = request.header("authorization", authorization);
    }
    request.send().await.unwrap().status().as_u16()
}
