//! Fixture checks, not product tests: they prove the test harness's IdP (the real
//! `oidc-provider` in tests/idp) behaves as the product tests assume, and exercise no stepguard
//! code. The IdP harness against the real oidc-provider, without stepguard: discovery, the
//! authorization-code flow with PKCE through the non-interactive login (at the acr, user and
//! auth_time the test sets), code replay, PAR with RAR, and both client authentication methods.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::idp::{Idp, IdpClient, IdpConfig};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::redirect::Policy;
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};

/// Never listened on: the flow stops at the redirect to it.
const REDIRECT_URI: &str = "http://127.0.0.1:9/.stepguard/callback";

fn idp() -> Idp {
    Idp::start(
        IdpConfig::default()
            .client(IdpClient::basic("rp-basic", "basic-secret", REDIRECT_URI))
            .client(IdpClient::post("rp-post", "post-secret", REDIRECT_URI)),
    )
}

/// A browser: keeps cookies, follows no redirects by itself.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

fn random() -> String {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// One authorization request's secrets and the code it got.
struct Flow {
    client_id: &'static str,
    state: String,
    nonce: String,
    verifier: String,
}

impl Flow {
    fn new(client_id: &'static str) -> Flow {
        Flow {
            client_id,
            state: random(),
            nonce: random(),
            verifier: random(),
        }
    }

    fn challenge(&self) -> String {
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.verifier.as_bytes());
        URL_SAFE_NO_PAD.encode(digest.as_ref())
    }

    /// The authorization request parameters, plus `extra`.
    fn params(&self, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        let mut p = vec![
            ("response_type", "code".to_string()),
            ("client_id", self.client_id.to_string()),
            ("redirect_uri", REDIRECT_URI.to_string()),
            ("scope", "openid".to_string()),
            ("state", self.state.clone()),
            ("nonce", self.nonce.clone()),
            ("code_challenge", self.challenge()),
            ("code_challenge_method", "S256".to_string()),
        ];
        p.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        p
    }

    fn authorize_url(&self, idp: &Idp, extra: &[(&'static str, &str)]) -> String {
        let params = self.params(extra);
        let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        format!("{}?{}", idp.url("/auth"), form(&pairs))
    }
}

/// Follows the provider's redirects from `url` until one goes to [`REDIRECT_URI`]; returns
/// that callback URL's query parameters.
async fn follow_to_callback(
    idp: &Idp,
    browser: &reqwest::Client,
    url: &str,
) -> Vec<(String, String)> {
    let mut url = Url::parse(url).unwrap();
    for _ in 0..10 {
        if url.as_str().starts_with(REDIRECT_URI) {
            return url.query_pairs().into_owned().collect();
        }
        let r = browser.get(url.clone()).send().await.unwrap();
        let status = r.status();
        let Some(location) = r.headers().get("location") else {
            let body = r.text().await.unwrap();
            panic!(
                "GET {url}: {status} without Location\n{body}\n{}",
                idp.stderr()
            );
        };
        assert!(status.is_redirection(), "GET {url}: {status}");
        url = url.join(location.to_str().unwrap()).unwrap();
    }
    panic!("more than 10 redirects, last {url}");
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The callback's `code`, after checking `state` and RFC 9207 `iss`.
fn code(idp: &Idp, flow: &Flow, callback: &[(String, String)]) -> String {
    assert_eq!(param(callback, "error"), None, "{callback:?}");
    assert_eq!(
        param(callback, "state"),
        Some(flow.state.as_str()),
        "{callback:?}"
    );
    assert_eq!(param(callback, "iss"), Some(idp.issuer()), "{callback:?}");
    param(callback, "code")
        .unwrap_or_else(|| panic!("no code: {callback:?}"))
        .to_string()
}

/// POSTs to the token endpoint with the flow's client authentication; status and JSON body.
async fn token_request(idp: &Idp, flow: &Flow, code: &str) -> (StatusCode, Value) {
    let mut pairs = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", flow.verifier.as_str()),
    ];
    let mut req = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(idp.url("/token"));
    match flow.client_id {
        "rp-basic" => req = req.basic_auth("rp-basic", Some("basic-secret")),
        "rp-post" => pairs.extend([("client_id", "rp-post"), ("client_secret", "post-secret")]),
        other => panic!("unknown client {other}"),
    }
    let r = req
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&pairs))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

/// Header and payload of a JWS, signature unchecked.
fn decode_jwt(jwt: &str) -> (Value, Value) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    let part =
        |s: &str| serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap();
    (part(parts[0]), part(parts[1]))
}

/// Exchanges `code` and returns the ID token's payload, after checking the envelope: signed
/// (RS256) with a key from the JWKS, issued by this provider to this client for this nonce.
async fn id_token(idp: &Idp, flow: &Flow, code: &str) -> Value {
    let (status, body) = token_request(idp, flow, code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer", "{body}");
    let (header, claims) = decode_jwt(body["id_token"].as_str().expect("id_token"));
    assert_eq!(header["alg"], "RS256", "{header}");
    let kids: Vec<Value> = idp.jwks().await["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].clone())
        .collect();
    assert!(
        kids.contains(&header["kid"]),
        "kid {} not in {kids:?}",
        header["kid"]
    );
    assert_eq!(claims["iss"], idp.issuer());
    assert_eq!(claims["aud"], flow.client_id, "{claims}");
    if let Some(azp) = claims.get("azp") {
        assert_eq!(azp, flow.client_id);
    }
    assert_eq!(claims["nonce"], flow.nonce.as_str());
    claims
}

fn assert_recent(auth_time: &Value, offset: i64) {
    let t = auth_time
        .as_i64()
        .unwrap_or_else(|| panic!("auth_time {auth_time}"));
    let expected = now() + offset;
    assert!(
        (t - expected).abs() <= 5,
        "auth_time {t}, expected about {expected}"
    );
}

const STEP_UP: &[(&str, &str)] = &[
    ("acr_values", "aal3"),
    ("max_age", "0"),
    ("prompt", "login"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_idp_discovery_and_code_flow_at_the_acr_the_test_sets() {
    let idp = idp();
    let d = idp.discovery().await;
    assert_eq!(d["issuer"], idp.issuer());
    assert_eq!(d["authorization_endpoint"], idp.url("/auth"));
    assert_eq!(d["token_endpoint"], idp.url("/token"));
    assert_eq!(d["jwks_uri"], idp.url("/jwks"));
    assert_eq!(
        d["pushed_authorization_request_endpoint"],
        idp.url("/request")
    );
    assert_eq!(d["acr_values_supported"], json!(["aal1", "aal2", "aal3"]));
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        d["authorization_details_types_supported"],
        json!(["payment_initiation", "stepguard_transaction"])
    );
    assert_eq!(idp.last_authorization().await, Value::Null);

    // Step-up at aal3 with a forced fresh login.
    let browser = browser();
    let flow = Flow::new("rp-basic");
    idp.set_next_login("alice", "aal3", &["pwd", "hwk"], 0)
        .await;
    let callback = follow_to_callback(&idp, &browser, &flow.authorize_url(&idp, STEP_UP)).await;
    let code1 = code(&idp, &flow, &callback);
    let asked = idp.last_authorization().await;
    for (name, value) in [
        ("client_id", "rp-basic"),
        ("redirect_uri", REDIRECT_URI),
        ("acr_values", "aal3"),
        ("max_age", "0"),
        ("prompt", "login"),
        ("nonce", flow.nonce.as_str()),
        ("state", flow.state.as_str()),
        ("code_challenge", flow.challenge().as_str()),
        ("code_challenge_method", "S256"),
    ] {
        assert_eq!(asked[name], value, "{name} in {asked}");
    }
    assert_eq!(asked["pushed"], false);
    let claims = id_token(&idp, &flow, &code1).await;
    assert_eq!(claims["sub"], "alice", "{claims}");
    assert_eq!(claims["acr"], "aal3", "{claims}");
    assert_eq!(claims["amr"], json!(["pwd", "hwk"]), "{claims}");
    assert_recent(&claims["auth_time"], 0);

    // A code is good once.
    let (status, body) = token_request(&idp, &flow, &code1).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");

    // Another user, a weaker acr than asked and a stale login, in the same browser.
    idp.set_next_login("bob", "aal1", &["pwd"], -3600).await;
    let flow = Flow::new("rp-basic");
    let callback = follow_to_callback(&idp, &browser, &flow.authorize_url(&idp, STEP_UP)).await;
    let claims = id_token(&idp, &flow, &code(&idp, &flow, &callback)).await;
    assert_eq!(claims["sub"], "bob", "{claims}");
    assert_eq!(claims["acr"], "aal1", "{claims}");
    assert_eq!(claims["amr"], json!(["pwd"]), "{claims}");
    assert_recent(&claims["auth_time"], -3600);

    // One-shot: the next login is the default one again (alice, aal2, pwd+otp).
    let flow = Flow::new("rp-basic");
    let callback = follow_to_callback(&idp, &browser, &flow.authorize_url(&idp, STEP_UP)).await;
    let claims = id_token(&idp, &flow, &code(&idp, &flow, &callback)).await;
    assert_eq!(claims["sub"], "alice", "{claims}");
    assert_eq!(claims["acr"], "aal2", "{claims}");
    assert_eq!(claims["amr"], json!(["pwd", "otp"]), "{claims}");
    assert_recent(&claims["auth_time"], 0);

    // The session satisfies aal2 and is fresh enough: no new login, same auth_time.
    idp.set_next_login("carol", "aal3", &["hwk"], 0).await;
    let flow = Flow::new("rp-basic");
    let url = flow.authorize_url(&idp, &[("acr_values", "aal2 aal3"), ("max_age", "300")]);
    let callback = follow_to_callback(&idp, &browser, &url).await;
    let again = id_token(&idp, &flow, &code(&idp, &flow, &callback)).await;
    assert_eq!(again["sub"], "alice", "{again}");
    assert_eq!(again["auth_time"], claims["auth_time"]);

    // Asking for more than the session has (aal3 only) is a step-up: a new login, as carol.
    let flow = Flow::new("rp-basic");
    let url = flow.authorize_url(&idp, &[("acr_values", "aal3")]);
    let callback = follow_to_callback(&idp, &browser, &url).await;
    let stepped = id_token(&idp, &flow, &code(&idp, &flow, &callback)).await;
    assert_eq!(stepped["sub"], "carol", "{stepped}");
    assert_eq!(stepped["acr"], "aal3", "{stepped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_idp_pushed_authorization_request_with_authorization_details() {
    let idp = idp();
    let flow = Flow::new("rp-basic");
    let details = json!([{
        "type": "stepguard_transaction",
        "actions": ["approve"],
        "identifier": "tx-42",
        "amount": "100.00",
        "currency": "EUR"
    }])
    .to_string();
    let params = flow.params(&[("acr_values", "aal2"), ("authorization_details", &details)]);
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(idp.url("/request"))
        .basic_auth("rp-basic", Some("basic-secret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&pairs))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let request_uri = body["request_uri"].as_str().unwrap().to_string();
    assert!(
        request_uri.starts_with("urn:ietf:params:oauth:request_uri:"),
        "{request_uri}"
    );

    let url = format!(
        "{}?{}",
        idp.url("/auth"),
        form(&[("client_id", "rp-basic"), ("request_uri", &request_uri)])
    );
    let callback = follow_to_callback(&idp, &browser(), &url).await;
    let code = code(&idp, &flow, &callback);

    let asked = idp.last_authorization().await;
    assert_eq!(asked["pushed"], true, "{asked}");
    assert_eq!(asked["request_uri"], request_uri.as_str());
    assert_eq!(asked["acr_values"], "aal2");
    assert_eq!(asked["state"], flow.state.as_str());
    assert_eq!(asked["code_challenge"], flow.challenge().as_str());
    assert_eq!(asked["authorization_details"][0]["identifier"], "tx-42");

    let (status, body) = token_request(&idp, &flow, &code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["authorization_details"][0]["type"], "stepguard_transaction",
        "{body}"
    );
    let (_, claims) = decode_jwt(body["id_token"].as_str().expect("id_token"));
    assert_eq!(claims["acr"], "aal2", "{claims}");
    assert_eq!(claims["nonce"], flow.nonce.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_idp_client_secret_post_client() {
    let idp = idp();
    let flow = Flow::new("rp-post");
    let callback = follow_to_callback(&idp, &browser(), &flow.authorize_url(&idp, &[])).await;
    let claims = id_token(&idp, &flow, &code(&idp, &flow, &callback)).await;
    assert_eq!(claims["sub"], "alice", "{claims}");
    assert_eq!(claims["acr"], "aal2", "{claims}");
    assert_eq!(claims["amr"], json!(["pwd", "otp"]), "{claims}");
    assert_recent(&claims["auth_time"], 0);

    // Without PKCE the provider refuses the request (back to the client with an error).
    let url = format!(
        "{}?{}",
        idp.url("/auth"),
        form(&[
            ("response_type", "code"),
            ("client_id", "rp-post"),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "openid"),
            ("state", "s"),
        ])
    );
    let callback = follow_to_callback(&idp, &browser(), &url).await;
    assert_eq!(
        param(&callback, "error"),
        Some("invalid_request"),
        "{callback:?}"
    );
    assert_eq!(param(&callback, "iss"), Some(idp.issuer()));
}
