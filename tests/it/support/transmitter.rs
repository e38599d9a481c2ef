//! A Shared Signals transmitter for tests (OpenID SSF 1.0), on a free loopback port: an ES256 key
//! generated at start (and an impostor key under the same `kid`, for bad signatures), the
//! transmitter's `/.well-known/ssf-configuration`, its key set (`/jwks.json`), an RFC 8936 poll
//! endpoint (a queue of SETs that records the acknowledgements and errors it gets), minimal
//! stream configuration, status and verification endpoints, and RFC 8935 [`push`].
//!
//! SETs are built with [`Set`] and the CAEP/RISC builders of [`set`] ([`session_revoked`],
//! [`account_disabled`], [`set::assurance_level_change`], [`unknown_event`]), with knobs for a
//! wrong `aud`, a bad signature and a reused `jti`; [`Transmitter::sign`] signs them.
//! [`SigningKey`] and [`verify_es256`] also serve the tests that receive stepguard's own SETs.

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

pub mod set;
pub use set::{Set, account_disabled, iss_sub, session_revoked, unknown_event};

/// The audience the test receivers are configured with (`shared_signals.audiences`).
pub const AUDIENCE: &str = "https://stepguard.test/ssf";
/// The `kid` of the transmitter's key (and of the impostor's).
pub const KID: &str = "transmitter-es256-1";

pub const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
pub const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";
pub const SSF: &str = "https://schemas.openid.net/secevent/ssf/event-type/";
/// SSF delivery method URNs.
pub const PUSH: &str = "urn:ietf:rfc:8935";
pub const POLL: &str = "urn:ietf:rfc:8936";

/// An ES256 key pair generated for the test.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    pub kid: String,
}

impl SigningKey {
    pub fn generate(kid: &str) -> SigningKey {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap()
                .as_ref()
                .to_vec();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8).unwrap();
        SigningKey {
            pair,
            pkcs8,
            kid: kid.to_string(),
        }
    }

    /// The private key as PKCS#8 PEM (`PRIVATE KEY`), as `send.signing_key_file` takes it.
    pub fn pkcs8_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PRIVATE KEY", self.pkcs8.clone()))
    }

    /// The public key as a JWK (`kty` `EC`, `crv` `P-256`).
    pub fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        let (x, y) = point[1..].split_at(32);
        json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
               "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)})
    }

    /// A compact JWS of `claims` under `header`.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .pair
            .sign(&SystemRandom::new(), message.as_bytes())
            .unwrap();
        format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }
}

/// Whether the compact JWS `token` carries a valid ES256 signature by the EC P-256 `jwk`
/// (jsonwebtoken's verifier, not stepguard's).
pub fn verify_es256(token: &str, jwk: &Value) -> bool {
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    let Some((message, signature)) = token.rsplit_once('.') else {
        return false;
    };
    jsonwebtoken::crypto::verify(
        signature,
        message.as_bytes(),
        &key,
        jsonwebtoken::Algorithm::ES256,
    )
    .unwrap_or(false)
}

/// The header and claims of a compact JWS, unverified.
pub fn decode(token: &str) -> (Value, Value) {
    let part =
        |s: &str| -> Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap() };
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        panic!("not a compact JWS: {token}");
    };
    (part(header), part(claims))
}

/// An axum router served on its own thread and runtime, on a free loopback port; stopped on drop.
pub struct HttpServer {
    pub port: u16,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds a free port, then serves what `app` builds for `http://127.0.0.1:<port>`.
    pub fn start(app: impl FnOnce(String) -> Router) -> HttpServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let router = app(format!("http://127.0.0.1:{port}"));
        let (shutdown, stop) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    _ = axum::serve(listener, router).into_future() => {}
                    _ = stop => {}
                }
            });
        });
        HttpServer {
            port,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the transmitter holds and records.
struct Shared {
    issuer: String,
    key: SigningKey,
    impostor: SigningKey,
    /// The token its management and poll endpoints require.
    bearer: String,
    /// SETs waiting for a poll: `(jti, SET)`, oldest first, until acknowledged or refused.
    queue: Mutex<Vec<(String, String)>>,
    acks: Mutex<Vec<String>>,
    errs: Mutex<BTreeMap<String, Value>>,
    polls: AtomicUsize,
    refused_polls: AtomicUsize,
}

impl Shared {
    fn sign(&self, set: &Set) -> String {
        let key = if set.forged {
            &self.impostor
        } else {
            &self.key
        };
        let header = json!({"alg": "ES256", "kid": KID, "typ": "secevent+jwt"});
        key.sign(&header, &set.claims(&self.issuer))
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            == Some(self.bearer.as_str())
    }
}

/// The test transmitter; stopped on drop.
pub struct Transmitter {
    shared: Arc<Shared>,
    server: HttpServer,
}

impl Transmitter {
    /// Starts it; its poll and management endpoints require `Bearer <bearer>`.
    pub fn start(bearer: &str) -> Transmitter {
        let (key, impostor) = (SigningKey::generate(KID), SigningKey::generate(KID));
        let bearer = bearer.to_string();
        let mut shared = None;
        let server = HttpServer::start(|issuer| {
            let state = Arc::new(Shared {
                issuer,
                key,
                impostor,
                bearer,
                queue: Mutex::default(),
                acks: Mutex::default(),
                errs: Mutex::default(),
                polls: AtomicUsize::new(0),
                refused_polls: AtomicUsize::new(0),
            });
            shared = Some(state.clone());
            Router::new()
                .route("/.well-known/ssf-configuration", get(configuration))
                .route("/jwks.json", get(jwks))
                .route("/ssf/poll", post(poll))
                .route("/ssf/stream", get(stream))
                .route("/ssf/status", get(status))
                .route("/ssf/verify", post(verify))
                .with_state(state)
        });
        Transmitter {
            shared: shared.unwrap(),
            server,
        }
    }

    /// Its issuer identifier (`iss` of its SETs): its base URL, where its metadata is.
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.server.port
    }

    pub fn jwks_url(&self) -> String {
        self.server.url("/jwks.json")
    }

    pub fn poll_url(&self) -> String {
        self.server.url("/ssf/poll")
    }

    /// Its public key (as in its JWKS).
    pub fn jwk(&self) -> Value {
        self.shared.key.jwk()
    }

    /// `set` signed (by the impostor key if it is [`Set::forged`]), `iss` this transmitter.
    pub fn sign(&self, set: &Set) -> String {
        self.shared.sign(set)
    }

    /// Queues `set` for polling; its SET as signed.
    pub fn enqueue(&self, set: &Set) -> String {
        let token = self.sign(set);
        let mut queue = self.shared.queue.lock().unwrap();
        queue.push((set.jti.clone(), token.clone()));
        token
    }

    /// `jti`s acknowledged by pollers so far.
    pub fn acked(&self) -> Vec<String> {
        self.shared.acks.lock().unwrap().clone()
    }

    /// Errors reported by pollers (`setErrs`) so far, by `jti`.
    pub fn set_errs(&self) -> BTreeMap<String, Value> {
        self.shared.errs.lock().unwrap().clone()
    }

    /// SETs still waiting for a poll.
    pub fn queued(&self) -> usize {
        self.shared.queue.lock().unwrap().len()
    }

    /// Polls answered, and polls refused for a missing or wrong bearer token.
    pub fn polls(&self) -> (usize, usize) {
        (
            self.shared.polls.load(Ordering::SeqCst),
            self.shared.refused_polls.load(Ordering::SeqCst),
        )
    }
}

/// SSF 1.0 §7.1 transmitter configuration metadata.
async fn configuration(State(s): State<Arc<Shared>>) -> axum::Json<Value> {
    let iss = &s.issuer;
    axum::Json(json!({
        "spec_version": "1_0",
        "issuer": iss,
        "jwks_uri": format!("{iss}/jwks.json"),
        "delivery_methods_supported": [PUSH, POLL],
        "configuration_endpoint": format!("{iss}/ssf/stream"),
        "status_endpoint": format!("{iss}/ssf/status"),
        "verification_endpoint": format!("{iss}/ssf/verify"),
        "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6750"}],
    }))
}

async fn jwks(State(s): State<Arc<Shared>>) -> axum::Json<Value> {
    axum::Json(json!({"keys": [s.key.jwk()]}))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
    )
        .into_response()
}

/// RFC 8936: records `ack` and `setErrs` (both end a SET's delivery), answers the oldest
/// `maxEvents` waiting SETs.
async fn poll(State(s): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    if !s.authorized(&headers) {
        s.refused_polls.fetch_add(1, Ordering::SeqCst);
        return unauthorized();
    }
    s.polls.fetch_add(1, Ordering::SeqCst);
    let Ok(request) = serde_json::from_str::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let acks: Vec<String> = request["ack"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let errs = request["setErrs"].as_object().cloned().unwrap_or_default();
    let mut queue = s.queue.lock().unwrap();
    queue.retain(|(jti, _)| !acks.contains(jti) && !errs.contains_key(jti));
    s.acks.lock().unwrap().extend(acks);
    s.errs.lock().unwrap().extend(errs);
    let max = request["maxEvents"].as_u64().unwrap_or(u64::MAX) as usize;
    let sets: Map<String, Value> = queue
        .iter()
        .take(max)
        .map(|(jti, set)| (jti.clone(), json!(set)))
        .collect();
    axum::Json(json!({"sets": sets, "moreAvailable": queue.len() > max})).into_response()
}

/// The one stream (SSF 1.0 §8.1.1): poll delivery to [`AUDIENCE`].
async fn stream(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !s.authorized(&headers) {
        return unauthorized();
    }
    let events: Vec<String> = ["session-revoked", "assurance-level-change"]
        .iter()
        .map(|e| format!("{CAEP}{e}"))
        .chain(std::iter::once(format!("{RISC}account-disabled")))
        .collect();
    axum::Json(json!({
        "stream_id": "stream-1", "iss": s.issuer, "aud": AUDIENCE,
        "delivery": {"method": POLL, "endpoint_url": format!("{}/ssf/poll", s.issuer)},
        "events_supported": events, "events_requested": events, "events_delivered": events,
    }))
    .into_response()
}

async fn status(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !s.authorized(&headers) {
        return unauthorized();
    }
    axum::Json(json!({"stream_id": "stream-1", "status": "enabled"})).into_response()
}

/// SSF 1.0 §8.1.4: queues a `verification` SET carrying the receiver's `state`.
async fn verify(State(s): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    if !s.authorized(&headers) {
        return unauthorized();
    }
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut event = json!({});
    if let Some(state) = request["state"].as_str() {
        event["state"] = json!(state);
    }
    let set = Set::new(
        &format!("{SSF}verification"),
        json!({"format": "opaque", "id": "stream-1"}),
        event,
    );
    let token = s.sign(&set);
    s.queue.lock().unwrap().push((set.jti, token));
    StatusCode::NO_CONTENT.into_response()
}

/// RFC 8935 push of one SET to `url`: the status and the JSON body (`Null` when empty).
pub async fn push(url: &str, set: &str, bearer: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/secevent+jwt")
        .header("accept", "application/json")
        .timeout(std::time::Duration::from_secs(10))
        .body(set.to_string());
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}
