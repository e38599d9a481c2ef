//! A JWKS, from a file or an HTTPS URL, cached. Reads are single-flight: one fetch at a time
//! per key set, run in a task of its own that every waiting verification joins, and an unknown
//! `kid` starts one at most once per `min_refresh_secs`, so a flood of forged `kid`s cannot
//! hammer the IdP. A verification waits for that fetch at most its `wait` (half the decision
//! budget) and then answers "unknown key" while the fetch goes on. A failed fetch (an error
//! status, a redirect, a timeout, bad JSON, a body over `max_bytes`) keeps the cached keys, until
//! `max_stale_secs` after the last successful one: then they expire and verify nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use tokio::sync::watch;

use crate::identity::config::JwksSource;

/// Least time between two reads of a key file triggered by unknown `kid`s.
const FILE_MIN_REFRESH: Duration = Duration::from_secs(5);
/// How long a verification waits for a key file to be read again.
const FILE_WAIT: Duration = Duration::from_secs(1);

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

/// Why no key verifies a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMiss {
    /// No usable key has the token's `kid` (or, without one, the set is ambiguous).
    Unknown,
    /// The keys were last fetched more than `max_stale_secs` ago.
    Expired,
}

#[derive(Clone)]
struct Key {
    decoding: DecodingKey,
    alg: Option<Algorithm>,
}

/// Keys as one read of the source left them.
#[derive(Default)]
struct KeySet {
    keys: HashMap<String, Key>,
    /// When they were read; `None` before any successful read.
    fetched: Option<Instant>,
}

/// The single-flight state: when the last read started, and the one in flight.
#[derive(Default)]
struct Flights {
    last: Option<Instant>,
    /// Turns `true` when the read in flight is over.
    in_flight: Option<watch::Receiver<bool>>,
}

/// A cached key set.
#[derive(Clone)]
pub struct Jwks {
    inner: Arc<Inner>,
}

struct Inner {
    source: JwksSource,
    /// For a URL source.
    client: Option<reqwest::Client>,
    keys: ArcSwap<KeySet>,
    flights: std::sync::Mutex<Flights>,
    fetches: AtomicU64,
    /// Bumped whenever a new key set is stored.
    generation: AtomicU64,
    /// Whether the current keys' expiry was reported (logged and counted once).
    expiry_reported: AtomicBool,
}

/// Ends a read in flight, also if its task is dropped: later callers start their own.
struct Flight {
    jwks: Jwks,
    done: watch::Sender<bool>,
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.jwks.flights().in_flight = None;
        self.done.send_replace(true);
    }
}

impl Jwks {
    /// Loads a file now; a URL is fetched now too, but a failure leaves the set empty (it is
    /// fetched again on the first unknown `kid`).
    pub async fn load(source: JwksSource) -> Result<Self, JwksError> {
        let client = match &source {
            JwksSource::Url(url) => Some(fetch::client(url)?),
            JwksSource::File(_) => None,
        };
        let jwks = Self {
            inner: Arc::new(Inner {
                source,
                client,
                keys: ArcSwap::from_pointee(KeySet::default()),
                flights: std::sync::Mutex::new(Flights::default()),
                fetches: 0.into(),
                generation: 0.into(),
                expiry_reported: false.into(),
            }),
        };
        jwks.flights().last = Some(Instant::now());
        match (&jwks.inner.source, jwks.fetch().await) {
            (_, Ok(keys)) => jwks.store(keys),
            (JwksSource::File(_), Err(e)) => return Err(e),
            (JwksSource::Url(_), Err(e)) => tracing::warn!(error = %e, "JWKS not loaded yet"),
        }
        Ok(jwks)
    }

    fn flights(&self) -> MutexGuard<'_, Flights> {
        self.inner
            .flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn store(&self, keys: HashMap<String, Key>) {
        let fetched = Some(Instant::now());
        self.inner.keys.store(Arc::new(KeySet { keys, fetched }));
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        self.inner.expiry_reported.store(false, Ordering::SeqCst);
    }

    /// Which key set is current; changes whenever a refresh stores keys.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    /// How many times the source was read.
    pub fn fetches(&self) -> u64 {
        self.inner.fetches.load(Ordering::Relaxed)
    }

    /// The refresh period configured for URL sources.
    pub fn ttl(&self) -> Option<Duration> {
        match &self.inner.source {
            JwksSource::Url(url) => Some(url.ttl),
            JwksSource::File(_) => None,
        }
    }

    /// Whether the keys passed their maximum staleness (URL sources only): they verify nothing
    /// until a fetch succeeds.
    pub fn expired(&self) -> bool {
        let max_stale = match &self.inner.source {
            JwksSource::Url(url) => url.max_stale,
            JwksSource::File(_) => return false,
        };
        let expired = self
            .inner
            .keys
            .load()
            .fetched
            .is_some_and(|at| at.elapsed() > max_stale);
        if expired && !self.inner.expiry_reported.swap(true, Ordering::SeqCst) {
            tracing::warn!(jwks = %self.name(), "JWKS keys expired (no successful refresh for \
                max_stale_secs); tokens are refused until one succeeds");
            crate::telemetry::metrics::jwks_expired(&self.name());
        }
        expired
    }

    /// The key for `kid` usable with `alg`. When there is none (or the keys expired) a refresh
    /// is started (rate-limited) or joined, and waited for at most the source's `wait`.
    pub async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, KeyMiss> {
        if let Ok(key) = self.lookup(kid, alg) {
            return Ok(key);
        }
        if let Some(done) = self.start_refresh(false) {
            let _ = tokio::time::timeout(self.wait(), finished(done)).await;
        }
        self.lookup(kid, alg)
    }

    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, KeyMiss> {
        if self.expired() {
            return Err(KeyMiss::Expired);
        }
        let set = self.inner.keys.load();
        let key = match kid {
            Some(kid) => set.keys.get(kid),
            // Without a kid, only an unambiguous set is usable.
            None if set.keys.len() == 1 => set.keys.values().next(),
            None => None,
        }
        .ok_or(KeyMiss::Unknown)?;
        let alg_ok = key.alg.is_none_or(|a| a == alg);
        (alg_ok && key.decoding.family() == alg.family())
            .then(|| key.decoding.clone())
            .ok_or(KeyMiss::Unknown)
    }

    /// Re-reads the source and waits until that read is over: joins the read in flight, or
    /// starts one unless the last started less than `min_refresh` ago (`force` ignores that).
    pub async fn refresh(&self, force: bool) {
        if let Some(done) = self.start_refresh(force) {
            finished(done).await;
        }
    }

    /// The read in flight, or a new one in a task of its own; `None` when rate-limited.
    fn start_refresh(&self, force: bool) -> Option<watch::Receiver<bool>> {
        let (flight, receiver) = self.take_off(force)?;
        let Some(flight) = flight else {
            return Some(receiver);
        };
        tokio::spawn(async move {
            flight.jwks.fetch_and_store().await;
            drop(flight);
        });
        Some(receiver)
    }

    /// Under the lock: the read in flight to join (no new [`Flight`]), a new one, or `None`
    /// when rate-limited.
    fn take_off(&self, force: bool) -> Option<(Option<Flight>, watch::Receiver<bool>)> {
        let mut flights = self.flights();
        if let Some(done) = &flights.in_flight {
            return Some((None, done.clone()));
        }
        if !force
            && flights
                .last
                .is_some_and(|t| t.elapsed() < self.min_refresh())
        {
            return None;
        }
        flights.last = Some(Instant::now());
        let (done, receiver) = watch::channel(false);
        flights.in_flight = Some(receiver.clone());
        let flight = Flight {
            jwks: self.clone(),
            done,
        };
        Some((Some(flight), receiver))
    }

    async fn fetch_and_store(&self) {
        match self.fetch().await {
            Ok(keys) => self.store(keys),
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refresh failed; keeping the cached keys");
                self.expired();
            }
        }
    }

    fn min_refresh(&self) -> Duration {
        match &self.inner.source {
            JwksSource::Url(url) => url.min_refresh,
            JwksSource::File(_) => FILE_MIN_REFRESH,
        }
    }

    fn wait(&self) -> Duration {
        match &self.inner.source {
            JwksSource::Url(url) => url.wait,
            JwksSource::File(_) => FILE_WAIT,
        }
    }

    /// The source's URL or file, as metrics and logs name it.
    fn name(&self) -> String {
        match &self.inner.source {
            JwksSource::File(path) => path.display().to_string(),
            JwksSource::Url(url) => url.url.clone(),
        }
    }

    /// Reads the source, counted in `stepguard_jwks_refresh_total` by its URL or file.
    async fn fetch(&self) -> Result<HashMap<String, Key>, JwksError> {
        let keys = self.read_source().await;
        crate::telemetry::metrics::jwks_refresh(&self.name(), keys.is_ok());
        keys
    }

    async fn read_source(&self) -> Result<HashMap<String, Key>, JwksError> {
        self.inner.fetches.fetch_add(1, Ordering::Relaxed);
        let text = match (&self.inner.source, &self.inner.client) {
            (JwksSource::File(path), _) => {
                tokio::fs::read_to_string(path)
                    .await
                    .map_err(|source| JwksError::Read {
                        path: path.clone(),
                        source,
                    })?
            }
            (JwksSource::Url(url), Some(client)) => fetch::body(client, url).await?,
            (JwksSource::Url(url), None) => fetch::body(&fetch::client(url)?, url).await?,
        };
        parse(&text)
    }
}

/// Until the read behind `done` is over.
async fn finished(mut done: watch::Receiver<bool>) {
    let _ = done.wait_for(|over| *over).await;
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

mod fetch;
#[cfg(test)]
mod tests;
mod weak;
