//! stepguard as the OIDC relying party of the step-up IdP: discovery
//! (`/.well-known/openid-configuration`), the authorization-code exchange with PKCE and the
//! configured client authentication, and the ID token checks (signature by the IdP's JWKS,
//! `iss`, `aud`, `azp`, `exp`, `nonce`; `acr`, `amr` and `auth_time` read as *achieved*, for
//! [`crate::completion`] to judge). The browser-facing callback is [`callback`].

pub mod callback;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::Value;

use crate::challenge::Endpoint;
use crate::challenge::config::{ChallengeConfig, ClientAuth, OidcConfig, callback_path};
use crate::identity::config::{JwksSource, JwksUrl};
use crate::identity::{Jwks, KeyMiss};

/// Time allowed for one request to the IdP (discovery, token endpoint).
const IDP_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response read from the IdP.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// Why talking to the IdP, or believing it, failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    #[error("the IdP's configuration is not known yet")]
    NotDiscovered,
    #[error("discovery: {0}")]
    Discovery(String),
    #[error("the IdP refused the code: {0}")]
    CodeRefused(String),
    #[error("token endpoint: {0}")]
    TokenEndpoint(String),
    #[error("ID token rejected: {0}")]
    IdToken(String),
    #[error("pushed authorization request: {0}")]
    Push(String),
    #[error("client secret: {0}")]
    Secret(String),
}

/// The parts of the IdP's discovery document stepguard uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub pushed_authorization_request_endpoint: Option<String>,
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

/// What an ID token says was achieved, after every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdToken {
    pub issuer: String,
    pub subject: String,
    pub acr: Option<String>,
    pub amr: Vec<String>,
    pub auth_time: Option<i64>,
    /// The IdP's session id (`sid`), when the ID token names one.
    pub sid: Option<String>,
}

/// The relying party.
pub struct Oidc {
    config: OidcConfig,
    client_id: String,
    redirect_uri: String,
    secret: Option<String>,
    algorithms: Vec<Algorithm>,
    leeway: u64,
    http: reqwest::Client,
    metadata: ArcSwapOption<Metadata>,
    jwks: ArcSwapOption<Jwks>,
    /// Where the challenger sends browsers, set by discovery.
    endpoint: Arc<ArcSwapOption<Endpoint>>,
}

impl Oidc {
    /// Reads the client secret (file or environment) now; discovery happens later
    /// ([`Oidc::discover`], [`Oidc::spawn_discovery`]).
    pub fn new(
        challenge: &ChallengeConfig,
        oidc: &OidcConfig,
        leeway_secs: u64,
        endpoint: Arc<ArcSwapOption<Endpoint>>,
    ) -> Result<Self, OidcError> {
        let secret = match (&oidc.client_secret_file, &oidc.client_secret_env) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| OidcError::Secret(format!("{}: {e}", path.display())))?;
                Some(text.trim().to_string())
            }
            (None, Some(var)) => Some(
                std::env::var(var)
                    .map_err(|_| OidcError::Secret(format!("environment variable {var} unset")))?,
            ),
            (None, None) => None,
        };
        let http = reqwest::Client::builder()
            .timeout(IDP_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OidcError::Discovery(e.to_string()))?;
        Ok(Self {
            config: oidc.clone(),
            client_id: challenge.client_id.clone(),
            redirect_uri: challenge.redirect_uri.clone(),
            secret,
            algorithms: oidc.id_token_algorithms.iter().map(|a| a.0).collect(),
            leeway: leeway_secs,
            http,
            metadata: ArcSwapOption::empty(),
            jwks: ArcSwapOption::empty(),
            endpoint,
        })
    }

    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    pub fn metadata(&self) -> Option<Arc<Metadata>> {
        self.metadata.load_full()
    }

    /// Reads the discovery document; its `issuer` must be the configured one, exactly
    /// (OIDC Discovery §4.3). Then the challenger may send browsers to the IdP.
    pub async fn discover(&self) -> Result<(), OidcError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| OidcError::Discovery(format!("{url}: {e}")))?;
        if !response.status().is_success() {
            return Err(OidcError::Discovery(format!(
                "{url}: status {}",
                response.status()
            )));
        }
        let body = read_limited(response)
            .await
            .map_err(|e| OidcError::Discovery(format!("{url}: {e}")))?;
        let metadata: Metadata = serde_json::from_slice(&body)
            .map_err(|e| OidcError::Discovery(format!("{url}: {e}")))?;
        if metadata.issuer != self.config.issuer {
            return Err(OidcError::Discovery(format!(
                "issuer mismatch: the document says {:?}",
                metadata.issuer
            )));
        }
        // The discovered endpoints are held to the configured issuer's rule: https, or plain
        // http on loopback only.
        for (name, endpoint) in [
            (
                "authorization_endpoint",
                Some(&metadata.authorization_endpoint),
            ),
            ("token_endpoint", Some(&metadata.token_endpoint)),
            ("jwks_uri", Some(&metadata.jwks_uri)),
            (
                "pushed_authorization_request_endpoint",
                metadata.pushed_authorization_request_endpoint.as_ref(),
            ),
        ] {
            if let Some(endpoint) = endpoint.filter(|e| !crate::section::secure_url(e)) {
                return Err(OidcError::Discovery(format!(
                    "{name} {endpoint:?} is not https:// (plain http only on loopback)"
                )));
            }
        }
        let jwks = Jwks::load(JwksSource::Url(JwksUrl {
            ttl: Duration::from_secs(3600),
            ..JwksUrl::new(metadata.jwks_uri.clone())
        }))
        .await
        .map_err(|e| OidcError::Discovery(e.to_string()))?;
        self.jwks.store(Some(Arc::new(jwks)));
        let front = match (
            self.config.pushed_authorization_requests,
            &metadata.pushed_authorization_request_endpoint,
        ) {
            (true, Some(_)) => Endpoint::Pushed {
                start: self.start_path(),
            },
            _ => Endpoint::Direct(metadata.authorization_endpoint.clone()),
        };
        self.endpoint.store(Some(Arc::new(front)));
        self.metadata.store(Some(Arc::new(metadata)));
        Ok(())
    }

    /// Discovers in the background, retrying with backoff (1 s doubling to 60 s) until it
    /// succeeds; until then browser step-ups answer 503 and the callback refuses.
    pub fn spawn_discovery(self: &Arc<Self>) {
        let oidc = self.clone();
        tokio::spawn(async move {
            let mut wait = Duration::from_secs(1);
            loop {
                let discovered = oidc.discover().await;
                crate::telemetry::metrics::idp_discovery(discovered.is_ok());
                match discovered {
                    Ok(()) => {
                        tracing::info!(issuer = %oidc.config.issuer, "IdP discovered");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_s = wait.as_secs(), "IdP discovery failed");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(60));
                    }
                }
            }
        });
    }

    /// The start path for pushed requests: beside the callback (`/.stepguard/callback` →
    /// `/.stepguard/authorize`), so the shipped Envoy routes reach it too.
    pub fn start_path(&self) -> String {
        let callback = callback_path(&self.redirect_uri).unwrap_or("/.stepguard/callback");
        let dir = callback.rsplit_once('/').map_or("", |(dir, _)| dir);
        format!("{dir}/authorize")
    }

    /// Exchanges an authorization code (with its PKCE verifier) for the ID token.
    pub async fn exchange(&self, code: &str, verifier: &str) -> Result<String, OidcError> {
        let metadata = self.metadata().ok_or(OidcError::NotDiscovered)?;
        let pairs = [
            ("grant_type", "authorization_code".to_string()),
            ("code", code.to_string()),
            ("redirect_uri", self.redirect_uri.clone()),
            ("code_verifier", verifier.to_string()),
        ];
        let (status, json) = self
            .post_authenticated(&metadata.token_endpoint, &pairs)
            .await
            .map_err(OidcError::TokenEndpoint)?;
        if !status.is_success() {
            let error = json.get("error").and_then(Value::as_str).unwrap_or("error");
            return Err(if status.as_u16() == 400 {
                OidcError::CodeRefused(error.to_string())
            } else {
                OidcError::TokenEndpoint(format!("status {status}: {error}"))
            });
        }
        json.get("id_token")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| OidcError::TokenEndpoint("no id_token in the response".into()))
    }

    /// Pushes an authorization request (RFC 9126) and returns the URL to send the browser to:
    /// the authorization endpoint with `client_id` and the `request_uri` only.
    pub async fn push(&self, params: &[(&str, String)]) -> Result<String, OidcError> {
        let metadata = self.metadata().ok_or(OidcError::NotDiscovered)?;
        let endpoint = metadata
            .pushed_authorization_request_endpoint
            .as_ref()
            .ok_or_else(|| OidcError::Push("the IdP has no PAR endpoint".into()))?;
        let (status, json) = self
            .post_authenticated(endpoint, params)
            .await
            .map_err(OidcError::Push)?;
        let request_uri = json.get("request_uri").and_then(Value::as_str);
        let Some(request_uri) = request_uri.filter(|_| status.is_success()) else {
            let error = json.get("error").and_then(Value::as_str).unwrap_or("error");
            return Err(OidcError::Push(format!("status {status}: {error}")));
        };
        let query = crate::challenge::encode(&[
            ("client_id", self.client_id.clone()),
            ("request_uri", request_uri.to_string()),
        ]);
        let sep = if metadata.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(format!("{}{sep}{query}", metadata.authorization_endpoint))
    }

    /// POSTs a form to an IdP endpoint with the configured client authentication; returns the
    /// status and the JSON body.
    async fn post_authenticated(
        &self,
        url: &str,
        pairs: &[(&str, String)],
    ) -> Result<(reqwest::StatusCode, Value), String> {
        let mut pairs = pairs.to_vec();
        let mut request = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json");
        match (self.config.client_auth, &self.secret) {
            (ClientAuth::ClientSecretBasic, Some(secret)) => {
                // RFC 6749 §2.3.1: each part form-encoded before base64.
                let user: String =
                    form_urlencoded::byte_serialize(self.client_id.as_bytes()).collect();
                let pass: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
                request = request.header(
                    "authorization",
                    format!("Basic {}", STANDARD.encode(format!("{user}:{pass}"))),
                );
            }
            (ClientAuth::ClientSecretPost, Some(secret)) => {
                pairs.push(("client_id", self.client_id.clone()));
                pairs.push(("client_secret", secret.clone()));
            }
            (_, None) => pairs.push(("client_id", self.client_id.clone())),
        }
        let response = request
            .body(crate::challenge::encode(&pairs))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = read_limited(response).await?;
        let json: Value =
            serde_json::from_slice(&body).map_err(|_| format!("status {status}, not JSON"))?;
        Ok((status, json))
    }

    /// Verifies an ID token (OIDC Core §3.1.3.7): header and payload read once ([`crate::jose`]:
    /// a duplicate member name is a rejection), signature by the IdP's JWKS with an allowed
    /// algorithm, `iss` = the IdP, `aud` containing our client id, `azp` = our client id when
    /// present (and required with several audiences), `exp`, `iat`, and `nonce` = the
    /// challenge's. `acr`, `amr` and `auth_time` are returned as achieved, not judged here.
    pub async fn verify_id_token(
        &self,
        token: &str,
        nonce: &str,
        now: i64,
    ) -> Result<IdToken, OidcError> {
        let reject = |why: &str| OidcError::IdToken(why.to_string());
        let jwks = self.jwks.load_full().ok_or(OidcError::NotDiscovered)?;
        // Read once, strictly (no duplicate member names), before the library reads it again.
        crate::jose::compact(token).map_err(|e| reject(e.reason()))?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| reject("malformed"))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(reject("algorithm not allowed"));
        }
        let key = jwks
            .key(header.kid.as_deref(), header.alg)
            .await
            .map_err(|miss| match miss {
                KeyMiss::Unknown => reject("unknown signing key"),
                KeyMiss::Expired => reject("signing keys expired"),
            })?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.client_id]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = self.leeway;
        // Time is the injected clock's, checked below; the library's would be the system's.
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| OidcError::IdToken(e.to_string()))?;
        let claims = data.claims;
        let int = |name: &str| claims.get(name).and_then(Value::as_i64);
        let leeway = self.leeway as i64;
        let exp = int("exp").ok_or_else(|| reject("exp is not a number"))?;
        if now > exp.saturating_add(leeway) {
            return Err(reject("expired"));
        }
        if int("iat").is_none_or(|iat| iat > now + leeway) {
            return Err(reject("iat missing or in the future"));
        }
        if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return Err(reject("nonce does not match the challenge"));
        }
        let several_audiences = claims
            .get("aud")
            .and_then(Value::as_array)
            .is_some_and(|a| a.len() > 1);
        match claims.get("azp").and_then(Value::as_str) {
            Some(azp) if azp != self.client_id => return Err(reject("azp is another client")),
            None if several_audiences => return Err(reject("azp missing with several audiences")),
            _ => {}
        }
        let auth_time = match claims.get("auth_time") {
            None => None,
            Some(v) => Some(
                v.as_i64()
                    .ok_or_else(|| reject("auth_time is not a number"))?,
            ),
        };
        if auth_time.is_some_and(|t| t > now + leeway) {
            return Err(reject("auth_time in the future"));
        }
        Ok(IdToken {
            issuer: self.config.issuer.clone(),
            subject: claims
                .get("sub")
                .and_then(Value::as_str)
                .ok_or_else(|| reject("sub is not a string"))?
                .to_string(),
            acr: claims
                .get("acr")
                .and_then(Value::as_str)
                .map(str::to_string),
            amr: claims
                .get("amr")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            auth_time,
            sid: claims
                .get("sid")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    /// The binding keys (`iss|sub`) an ID token's subject stands for: the IdP's own, and the
    /// same `sub` under each access-token issuer that shares the IdP's user directory.
    pub fn subject_keys(&self, id: &IdToken) -> Vec<String> {
        std::iter::once(&id.issuer)
            .chain(&self.config.same_subjects_as)
            .map(|iss| format!("{iss}|{}", id.subject))
            .collect()
    }
}

/// Reads a response body, refusing one larger than [`MAX_RESPONSE_BYTES`].
async fn read_limited(response: reqwest::Response) -> Result<Vec<u8>, String> {
    crate::capped::read(response, MAX_RESPONSE_BYTES as u64)
        .await
        .map_err(|e| match e {
            crate::capped::CappedError::TooLarge(_) => "response too large".to_string(),
            crate::capped::CappedError::Read(e) => e.to_string(),
        })
}

/// A base64url SHA-256 of a value, for logs that must not carry it.
pub fn fingerprint(value: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, value.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest.as_ref()[..9])
}

#[cfg(test)]
mod tests;
