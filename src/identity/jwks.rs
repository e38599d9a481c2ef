//! A JWKS, from a file or an HTTPS URL, cached. An unknown `kid` triggers a refresh, at most
//! once per `min_refresh_secs` (single-flight), so a flood of forged `kid`s cannot hammer the IdP.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::config::JwksSource;

/// Why a key set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("reading JWKS {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("fetching JWKS {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("JWKS is not a JSON object with a `keys` array")]
    Shape,
}

#[derive(Clone)]
struct Key {
    decoding: DecodingKey,
    alg: Option<Algorithm>,
}

/// A cached key set.
#[derive(Clone)]
pub struct Jwks {
    inner: Arc<Inner>,
}

struct Inner {
    source: JwksSource,
    keys: ArcSwap<HashMap<String, Key>>,
    last_refresh: Mutex<Option<Instant>>,
    min_refresh: Duration,
    fetches: std::sync::atomic::AtomicU64,
    /// Bumped whenever a new key set is stored.
    generation: std::sync::atomic::AtomicU64,
}

impl Jwks {
    /// Loads a file now; a URL is fetched now too, but a failure leaves the set empty (it is
    /// fetched again on the first unknown `kid`).
    pub async fn load(source: JwksSource) -> Result<Self, JwksError> {
        let min_refresh = match &source {
            JwksSource::Url {
                min_refresh_secs, ..
            } => Duration::from_secs(*min_refresh_secs),
            JwksSource::File(_) => Duration::from_secs(5),
        };
        let jwks = Self {
            inner: Arc::new(Inner {
                source,
                keys: ArcSwap::from_pointee(HashMap::new()),
                last_refresh: Mutex::new(None),
                min_refresh,
                fetches: 0.into(),
                generation: 0.into(),
            }),
        };
        match (&jwks.inner.source, jwks.fetch().await) {
            (_, Ok(keys)) => jwks.store(keys),
            (JwksSource::File(_), Err(e)) => return Err(e),
            (JwksSource::Url { .. }, Err(e)) => tracing::warn!(error = %e, "JWKS not loaded yet"),
        }
        *jwks.inner.last_refresh.lock().await = Some(Instant::now());
        Ok(jwks)
    }

    fn store(&self, keys: HashMap<String, Key>) {
        self.inner.keys.store(Arc::new(keys));
        self.inner
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Which key set is current; changes whenever a refresh stores keys.
    pub fn generation(&self) -> u64 {
        self.inner
            .generation
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many times the source was read.
    pub fn fetches(&self) -> u64 {
        self.inner
            .fetches
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The refresh period configured for URL sources.
    pub fn ttl(&self) -> Option<Duration> {
        match &self.inner.source {
            JwksSource::Url { ttl_secs, .. } => Some(Duration::from_secs(*ttl_secs)),
            JwksSource::File(_) => None,
        }
    }

    /// The key for `kid` usable with `alg`, refreshing once (rate-limited) when unknown.
    pub async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
        if let Some(key) = self.lookup(kid, alg) {
            return Some(key);
        }
        self.refresh(false).await;
        self.lookup(kid, alg)
    }

    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
        let keys = self.inner.keys.load();
        let key = match kid {
            Some(kid) => keys.get(kid)?,
            // Without a kid, only an unambiguous set is usable.
            None if keys.len() == 1 => keys.values().next()?,
            None => return None,
        };
        let alg_ok = key.alg.is_none_or(|a| a == alg);
        (alg_ok && key.decoding.family() == alg.family()).then(|| key.decoding.clone())
    }

    /// Re-reads the source unless it was read less than `min_refresh` ago (`force` ignores that).
    pub async fn refresh(&self, force: bool) {
        let mut last = self.inner.last_refresh.lock().await;
        if !force && last.is_some_and(|t| t.elapsed() < self.inner.min_refresh) {
            return;
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => self.store(keys),
            Err(e) => tracing::warn!(error = %e, "JWKS refresh failed; keeping the cached keys"),
        }
    }

    /// Reads the source, counted in `stepguard_jwks_refresh_total` by its URL or file.
    async fn fetch(&self) -> Result<HashMap<String, Key>, JwksError> {
        let keys = self.read_source().await;
        let source = match &self.inner.source {
            JwksSource::File(path) => path.display().to_string(),
            JwksSource::Url { url, .. } => url.clone(),
        };
        crate::telemetry::metrics::jwks_refresh(&source, keys.is_ok());
        keys
    }

    async fn read_source(&self) -> Result<HashMap<String, Key>, JwksError> {
        self.inner
            .fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let text = match &self.inner.source {
            JwksSource::File(path) => {
                tokio::fs::read_to_string(path)
                    .await
                    .map_err(|source| JwksError::Read {
                        path: path.clone(),
                        source,
                    })?
            }
            JwksSource::Url { url, .. } => fetch_url(url).await?,
        };
        parse(&text)
    }
}

async fn fetch_url(url: &str) -> Result<String, JwksError> {
    let error = |message: String| JwksError::Fetch {
        url: url.to_string(),
        message,
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| error(e.to_string()))?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| error(e.to_string()))?;
    if !response.status().is_success() {
        return Err(error(format!("status {}", response.status())));
    }
    response.text().await.map_err(|e| error(e.to_string()))
}

/// Whether a JWK's `key_ops` (RFC 7517 §4.3) allows verifying signatures.
fn verifies(ops: &Value) -> bool {
    ops.as_array()
        .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")))
}

/// Parses a JWKS, keeping the asymmetric signing keys it can use (`use` absent or `sig`,
/// `key_ops` absent or listing `verify`, an EC curve that fits the key's `alg`, no ROCA
/// modulus) and skipping the rest.
fn parse(text: &str) -> Result<HashMap<String, Key>, JwksError> {
    let value: Value = serde_json::from_str(text).map_err(|_| JwksError::Shape)?;
    let keys = value
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(JwksError::Shape)?;
    let mut out = HashMap::new();
    for (i, raw) in keys.iter().enumerate() {
        if raw.get("kty").and_then(Value::as_str) == Some("oct")
            || raw
                .get("use")
                .and_then(Value::as_str)
                .is_some_and(|u| u != "sig")
            || raw.get("key_ops").is_some_and(|ops| !verifies(ops))
        {
            continue;
        }
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
            continue;
        };
        let Ok(decoding) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let kid = jwk.common.key_id.clone().unwrap_or_else(|| format!("#{i}"));
        let alg = match raw.get("alg").and_then(Value::as_str) {
            Some(name) => match name.parse::<Algorithm>() {
                Ok(alg) => Some(alg),
                Err(_) => continue,
            },
            None => None,
        };
        // An EC key verifies only its curve's algorithm (jsonwebtoken reads x and y alone).
        let alg = match raw.get("kty").and_then(Value::as_str) {
            Some("EC") => match (weak::ec_algorithm(raw), alg) {
                (Some(curve), Some(declared)) if curve != declared => continue,
                (Some(curve), _) => Some(curve),
                (None, _) => continue,
            },
            Some("RSA") if weak::roca(raw) => continue,
            _ => alg,
        };
        out.insert(kid, Key { decoding, alg });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
mod weak;
