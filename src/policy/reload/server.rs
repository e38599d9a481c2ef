//! Downloading a bundle from a bundle server, as OPA's bundle plugin does: `GET` the bundle's
//! URL with `If-None-Match: <the last ETag>`; `304 Not Modified` means unchanged, `200` carries
//! the new `.tar.gz` (read up to `max_bytes`). Redirects are not followed; the request (body
//! included) is bounded by `timeout_ms`.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, ETAG, HeaderMap, HeaderName, HeaderValue, IF_NONE_MATCH};

use crate::capped::CappedError;
use crate::policy::PolicyError;
use crate::policy::config::BundleServerConfig;

/// A bundle server's client; remembers the ETag of the last bundle it received.
pub struct BundleClient {
    http: reqwest::Client,
    url: String,
    max_bytes: u64,
    etag: Option<HeaderValue>,
}

/// What a download came to.
#[derive(Debug)]
pub enum Fetched {
    /// `304`: the bundle has not changed since the last one received.
    NotModified,
    /// `200`: the bundle's bytes.
    Bundle(Vec<u8>),
}

impl BundleClient {
    /// A client for `bundle`; a bearer token is read from its file or variable now.
    pub fn new(bundle: &BundleServerConfig) -> Result<Self, PolicyError> {
        let bad = |m: String| PolicyError::Load(format!("policy.bundle: {m}"));
        let mut headers = HeaderMap::new();
        for (name, value) in &bundle.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(e.to_string()))?;
            let value = HeaderValue::from_str(value).map_err(|e| bad(e.to_string()))?;
            headers.insert(name, value);
        }
        if let Some(token) = bearer_token(bundle).map_err(bad)? {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| bad("the bearer token is not a valid header value".into()))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(bundle.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(headers)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            http,
            url: bundle.url.clone(),
            max_bytes: bundle.max_bytes,
            etag: None,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Downloads the bundle unless it is unchanged.
    pub async fn fetch(&mut self) -> Result<Fetched, PolicyError> {
        let failed =
            |m: String| PolicyError::Load(format!("bundle download from {}: {m}", self.url));
        let mut request = self.http.get(&self.url);
        if let Some(etag) = &self.etag {
            request = request.header(IF_NONE_MATCH, etag.clone());
        }
        let response = request.send().await.map_err(|e| failed(e.to_string()))?;
        match response.status() {
            StatusCode::NOT_MODIFIED => return Ok(Fetched::NotModified),
            StatusCode::OK => {}
            status => return Err(failed(format!("status {status}"))),
        }
        let etag = response.headers().get(ETAG).cloned();
        let bytes = crate::capped::read(response, self.max_bytes)
            .await
            .map_err(|e| match e {
                CappedError::TooLarge(max) => failed(format!("over the {max}-byte limit")),
                CappedError::Read(e) => failed(e.to_string()),
            })?;
        self.etag = etag;
        Ok(Fetched::Bundle(bytes))
    }
}

fn bearer_token(bundle: &BundleServerConfig) -> Result<Option<String>, String> {
    let token = match (&bundle.bearer_token_file, &bundle.bearer_token_env) {
        (Some(path), _) => {
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?
        }
        (None, Some(var)) => {
            std::env::var(var).map_err(|_| format!("environment variable {var} unset"))?
        }
        (None, None) => return Ok(None),
    };
    let token = token.trim();
    if token.is_empty() {
        return Err("the bearer token is empty".into());
    }
    Ok(Some(token.to_string()))
}
