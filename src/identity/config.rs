//! The `identity` section: the token issuers, their key sets, `jwt_authn` metadata and SPIFFE
//! workloads, and its rules ([`IdentityConfig::validate`], [`IssuerConfig::validate`], also used
//! for `grant_api.token`). Algorithms are typed when the file is read ([`SigningAlgorithm`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::Deserialize;

use crate::section::{Invalid, Resolve, invalid, resolve_opt, secure_url};

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
    pub algorithms: Vec<SigningAlgorithm>,
    pub jwks: JwksConfig,
}

/// An allow-listed JWS algorithm: asymmetric only (`none` and HMAC are refused when the file is
/// read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SigningAlgorithm(pub Algorithm);

impl TryFrom<String> for SigningAlgorithm {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        parse_algorithm(&name).map(Self)
    }
}

/// Parses an allow-listed algorithm name; `none` and HMAC are refused.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    let alg: Algorithm = name
        .parse()
        .map_err(|_| format!("unknown algorithm `{name}`"))?;
    if alg.family() == AlgorithmFamily::Hmac {
        return Err(format!("`{name}`: symmetric algorithms are not accepted"));
    }
    Ok(alg)
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
    /// The source (a file path was resolved when the file was loaded); an unknown `kid` waits
    /// for a URL fetch at most `wait`.
    pub fn source(&self, wait: Duration) -> JwksSource {
        match (&self.file, &self.url) {
            (Some(file), _) => JwksSource::File(file.clone()),
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

impl IdentityConfig {
    /// The section's rules: a bounded leeway, valid issuers, `jwt_authn` naming known issuers.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.leeway_secs > 300 {
            return Err(invalid("identity.leeway_secs", "at most 300 seconds"));
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            issuer.validate(&format!("identity.issuers[{i}]"))?;
        }
        if let Some(jwt_authn) = &self.jwt_authn
            && let Some(iss) = jwt_authn
                .issuers
                .iter()
                .find(|iss| !self.issuers.iter().any(|i| &i.issuer == *iss))
        {
            return Err(invalid(
                "identity.jwt_authn.issuers",
                format!("`{iss}` is not in identity.issuers"),
            ));
        }
        Ok(())
    }
}

impl Resolve for IdentityConfig {
    fn resolve(&mut self, base: &Path) {
        for issuer in &mut self.issuers {
            issuer.resolve(base);
        }
    }
}

impl Resolve for IssuerConfig {
    fn resolve(&mut self, base: &Path) {
        resolve_opt(&mut self.jwks.file, base);
    }
}

impl IssuerConfig {
    /// One trusted token issuer's rules, under `field` (`identity.issuers[0]`, `grant_api.token`).
    pub fn validate(&self, field: &str) -> Result<(), Invalid> {
        let field = |f: &str| format!("{field}.{f}");
        if self.issuer.is_empty() {
            return Err(invalid(field("issuer"), "must not be empty"));
        }
        if self.audiences.is_empty() {
            return Err(invalid(field("audiences"), "list at least one audience"));
        }
        if self.algorithms.is_empty() {
            return Err(invalid(field("algorithms"), "list at least one algorithm"));
        }
        if self.jwks.file.is_some() == self.jwks.url.is_some() {
            return Err(invalid(field("jwks"), "set exactly one of file or url"));
        }
        if let Some(url) = &self.jwks.url
            && !secure_url(url)
        {
            return Err(invalid(
                field("jwks.url"),
                "must be https:// (plain http only on loopback)",
            ));
        }
        self.jwks.validate(|f| field(&format!("jwks.{f}")))
    }
}

impl JwksConfig {
    /// The limits of a URL fetch, under `field` (`….jwks`).
    fn validate(&self, field: impl Fn(&str) -> String) -> Result<(), Invalid> {
        if self.ttl_secs == 0 {
            return Err(invalid(field("ttl_secs"), "must be at least 1"));
        }
        if self.max_stale_secs < self.ttl_secs {
            return Err(invalid(
                field("max_stale_secs"),
                "must be at least ttl_secs",
            ));
        }
        if !(1_024..=16 << 20).contains(&self.max_bytes) {
            return Err(invalid(
                field("max_bytes"),
                "must be between 1024 and 16777216",
            ));
        }
        if !(100..=60_000).contains(&self.timeout_ms) {
            return Err(invalid(
                field("timeout_ms"),
                "must be between 100 and 60000",
            ));
        }
        Ok(())
    }
}
