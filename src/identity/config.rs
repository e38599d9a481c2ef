//! The `identity` section: the token issuers, their key sets, `jwt_authn` metadata and SPIFFE workloads.
//! Its types are composed into the whole file by [`crate::config`], which validates them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// Trust claims that Envoy's jwt_authn filter verified and put in dynamic metadata.
    #[serde(default)]
    pub jwt_authn: Option<JwtAuthnConfig>,
    #[serde(default)]
    pub workloads: WorkloadConfig,
}

pub(crate) fn default_leeway() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    pub jwks: JwksConfig,
}

/// Where an issuer's keys come from: exactly one of `file` or `url`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    #[serde(default)]
    pub file: Option<PathBuf>,
    #[serde(default)]
    pub url: Option<String>,
    /// Least time between two fetches triggered by unknown `kid`s.
    #[serde(default = "default_refresh_secs")]
    pub min_refresh_secs: u64,
    /// URL keys are refetched in the background after this long.
    #[serde(default = "default_jwks_ttl")]
    pub ttl_secs: u64,
    /// URL keys are used at most this long after the last successful fetch (stale-if-error).
    #[serde(default = "default_jwks_max_stale")]
    pub max_stale_secs: u64,
    /// Largest JWKS body read from the URL; a larger one is refused as it streams in.
    #[serde(default = "default_jwks_max_bytes")]
    pub max_bytes: usize,
    /// Time allowed for one fetch of the URL (connection, answer and body).
    #[serde(default = "default_jwks_timeout")]
    pub timeout_ms: u64,
}

/// A resolved key source.
#[derive(Debug, Clone)]
pub enum JwksSource {
    File(PathBuf),
    Url(JwksUrl),
}

/// A key set fetched over HTTP(S), and the limits of its fetches.
#[derive(Debug, Clone)]
pub struct JwksUrl {
    pub url: String,
    /// Least time between two fetches triggered by unknown `kid`s.
    pub min_refresh: Duration,
    /// Period of the background refresh.
    pub ttl: Duration,
    /// Keys expire this long after the last successful fetch.
    pub max_stale: Duration,
    pub max_bytes: usize,
    pub timeout: Duration,
    /// How long a verification with an unknown `kid` waits for the fetch it started or joined
    /// (the fetch itself goes on).
    pub wait: Duration,
}

impl JwksUrl {
    /// `url` with the defaults of a `jwks` section; a verification waits for the whole fetch.
    pub fn new(url: impl Into<String>) -> Self {
        let timeout = Duration::from_millis(default_jwks_timeout());
        Self {
            url: url.into(),
            min_refresh: Duration::from_secs(default_refresh_secs()),
            ttl: Duration::from_secs(default_jwks_ttl()),
            max_stale: Duration::from_secs(default_jwks_max_stale()),
            max_bytes: default_jwks_max_bytes(),
            timeout,
            wait: timeout,
        }
    }
}

pub(crate) fn default_refresh_secs() -> u64 {
    30
}

pub(crate) fn default_jwks_ttl() -> u64 {
    600
}

pub(crate) fn default_jwks_max_stale() -> u64 {
    86_400
}

pub(crate) fn default_jwks_max_bytes() -> usize {
    256 << 10
}

pub(crate) fn default_jwks_timeout() -> u64 {
    5_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtAuthnConfig {
    /// The `payload_in_metadata` name used in Envoy's jwt_authn provider.
    pub payload_key: String,
    /// Issuers (from `identity.issuers`) whose jwt_authn-verified payloads are trusted.
    pub issuers: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadConfig {
    /// SPIFFE trust domains whose mTLS peers are workloads.
    #[serde(default)]
    pub trust_domains: Vec<String>,
}

impl JwksConfig {
    /// The source, with a file path resolved against `base_dir`; an unknown `kid` waits for a
    /// URL fetch at most `wait`.
    pub fn source_in(&self, base_dir: &Path, wait: Duration) -> JwksSource {
        match (&self.file, &self.url) {
            (Some(file), _) if file.is_absolute() => JwksSource::File(file.clone()),
            (Some(file), _) => JwksSource::File(base_dir.join(file)),
            (None, url) => JwksSource::Url(JwksUrl {
                url: url.clone().unwrap_or_default(),
                min_refresh: Duration::from_secs(self.min_refresh_secs),
                ttl: Duration::from_secs(self.ttl_secs),
                max_stale: Duration::from_secs(self.max_stale_secs),
                max_bytes: self.max_bytes,
                timeout: Duration::from_millis(self.timeout_ms),
                wait,
            }),
        }
    }
}
