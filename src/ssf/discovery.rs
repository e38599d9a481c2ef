//! Discovery of the transmitter (SSF 1.0 §6): its configuration metadata, read once at start
//! from `transmitter.metadata_url` or the SSF well-known location of its issuer
//! (`/.well-known/ssf-configuration` inserted between the host and the issuer's path). Read as
//! a JWKS is ([`crate::identity`]): https only (plain http on loopback), redirects never
//! followed, one time limit, a body refused once it passes [`MAX_BYTES`]. The document's
//! `issuer` must be the configured one exactly, and every endpoint it names held to the same
//! https rule.
//!
//! What stepguard takes from it: `jwks_uri` (the key source, unless `transmitter.jwks` names
//! one), `delivery_methods_supported` (a configured push or poll the transmitter does not list
//! is refused), and the stream management endpoints ([`super::stream`]).
//!
//! A failed discovery refuses to start: a receiver without its transmitter's keys would drop
//! every revocation while still allowing requests, which is worse than not starting (the
//! orchestrator's restarts are the retries). An explicit `transmitter.jwks` without
//! `metadata_url` or `management` needs no discovery at all.

use std::time::Duration;

use serde::Deserialize;

use super::config::{SharedSignalsConfig, TransmitterConfig, WELL_KNOWN_SSF};
use crate::capped::CappedError;
use crate::section::secure_url;

/// Largest metadata document read.
pub const MAX_BYTES: u64 = 64 << 10;
/// Time allowed for the whole read (connection, answer, body).
const TIMEOUT: Duration = Duration::from_secs(10);

/// Push delivery (RFC 8935) as SSF 1.0 names it.
pub const PUSH: &str = "urn:ietf:rfc:8935";
/// Poll delivery (RFC 8936).
pub const POLL: &str = "urn:ietf:rfc:8936";
/// The names of the RISC drafts, still listed by older transmitters.
const LEGACY_PUSH: &str = "https://schemas.openid.net/secevent/risc/delivery-method/push";
const LEGACY_POLL: &str = "https://schemas.openid.net/secevent/risc/delivery-method/poll";

/// Why the transmitter could not be discovered.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The document could not be read (network, status, redirect, size, JSON).
    #[error("SSF transmitter metadata {url}: {message}")]
    Fetch { url: String, message: String },
    /// The document was read but is not acceptable.
    #[error("SSF transmitter metadata {url}: {message}")]
    Refused { url: String, message: String },
}

/// The parts of the transmitter configuration metadata stepguard uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    #[serde(default)]
    pub spec_version: Option<String>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Absent (an empty list is omitted, §6.1): not known, nothing refused.
    #[serde(default)]
    pub delivery_methods_supported: Vec<String>,
    #[serde(default)]
    pub configuration_endpoint: Option<String>,
    #[serde(default)]
    pub status_endpoint: Option<String>,
    #[serde(default)]
    pub verification_endpoint: Option<String>,
}

/// The SSF well-known location of `issuer`: `/.well-known/ssf-configuration` inserted between
/// the host and the path (without its trailing `/`).
pub fn well_known(issuer: &str) -> Result<String, String> {
    let mut url = url::Url::parse(issuer).map_err(|e| format!("issuer {issuer:?}: {e}"))?;
    let path = format!("{WELL_KNOWN_SSF}{}", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(None);
    url.set_fragment(None);
    Ok(url.to_string())
}

/// Reads the metadata of `transmitter` when it is discovered (see
/// [`TransmitterConfig::discovers`]), checked against `config`; `None` when it is not.
pub async fn discover(
    transmitter: &TransmitterConfig,
    config: &SharedSignalsConfig,
) -> Result<Option<Metadata>, DiscoveryError> {
    if !transmitter.discovers() {
        return Ok(None);
    }
    let url = match &transmitter.metadata_url {
        Some(url) => url.clone(),
        None => well_known(&transmitter.issuer).map_err(|message| DiscoveryError::Fetch {
            url: transmitter.issuer.clone(),
            message,
        })?,
    };
    let metadata = fetch(&url, &transmitter.issuer).await?;
    supports(&metadata, config).map_err(|message| DiscoveryError::Refused {
        url: url.clone(),
        message,
    })?;
    if transmitter.jwks.file.is_none() && transmitter.jwks.url.is_none() {
        metadata
            .jwks_uri
            .as_ref()
            .ok_or_else(|| DiscoveryError::Refused {
                url: url.clone(),
                message: "no jwks_uri, and transmitter.jwks names no key set".into(),
            })?;
    }
    tracing::info!(
        url = %url,
        issuer = %metadata.issuer,
        jwks_uri = metadata.jwks_uri.as_deref().unwrap_or("-"),
        configuration_endpoint = metadata.configuration_endpoint.as_deref().unwrap_or("-"),
        verification_endpoint = metadata.verification_endpoint.as_deref().unwrap_or("-"),
        "SSF transmitter discovered"
    );
    Ok(Some(metadata))
}

/// The transmitter as receiving needs it: its key set the discovered `jwks_uri` when the
/// configuration names none.
pub fn keyed(transmitter: &TransmitterConfig, metadata: Option<&Metadata>) -> TransmitterConfig {
    let mut keyed = transmitter.clone();
    if keyed.jwks.file.is_none() && keyed.jwks.url.is_none() {
        keyed.jwks.url = metadata.and_then(|m| m.jwks_uri.clone());
    }
    keyed
}

/// Reads and checks the document at `url`: a 2xx JSON object within [`MAX_BYTES`], `issuer`
/// equal to `issuer`, every endpoint https (plain http on loopback).
pub async fn fetch(url: &str, issuer: &str) -> Result<Metadata, DiscoveryError> {
    let failed = |message: String| DiscoveryError::Fetch {
        url: url.to_string(),
        message,
    };
    let refused = |message: String| DiscoveryError::Refused {
        url: url.to_string(),
        message,
    };
    if !secure_url(url) {
        return Err(refused("not https:// (plain http only on loopback)".into()));
    }
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let response = client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    if status.is_redirection() {
        return Err(failed(format!(
            "status {status}: redirects are not followed"
        )));
    }
    if !status.is_success() {
        return Err(failed(format!("status {status}")));
    }
    let body = crate::capped::read(response, MAX_BYTES)
        .await
        .map_err(|e| match e {
            CappedError::TooLarge(max) => failed(format!("body over {max} bytes")),
            CappedError::Read(e) => failed(e.to_string()),
        })?;
    let metadata: Metadata =
        serde_json::from_slice(&body).map_err(|e| failed(format!("not the metadata: {e}")))?;
    if metadata.issuer != issuer {
        return Err(refused(format!(
            "issuer {:?} is not the configured {issuer:?}",
            metadata.issuer
        )));
    }
    for (name, endpoint) in [
        ("jwks_uri", &metadata.jwks_uri),
        ("configuration_endpoint", &metadata.configuration_endpoint),
        ("status_endpoint", &metadata.status_endpoint),
        ("verification_endpoint", &metadata.verification_endpoint),
    ] {
        if let Some(endpoint) = endpoint.as_ref().filter(|e| !secure_url(e)) {
            return Err(refused(format!(
                "{name} {endpoint:?} is not https:// (plain http only on loopback)"
            )));
        }
    }
    Ok(metadata)
}

/// A configured delivery method the transmitter does not list is refused (when it lists any).
fn supports(metadata: &Metadata, config: &SharedSignalsConfig) -> Result<(), String> {
    let listed = &metadata.delivery_methods_supported;
    if listed.is_empty() {
        return Ok(());
    }
    let offers = |method: &str, legacy: &str| listed.iter().any(|m| m == method || m == legacy);
    if config.push.is_some() && !offers(PUSH, LEGACY_PUSH) {
        return Err(format!(
            "shared_signals.push is configured but the transmitter does not deliver by push \
             ({PUSH}); it lists {listed:?}: configure shared_signals.poll instead"
        ));
    }
    if config.poll.is_some() && !offers(POLL, LEGACY_POLL) {
        return Err(format!(
            "shared_signals.poll is configured but the transmitter does not deliver by poll \
             ({POLL}); it lists {listed:?}: configure shared_signals.push instead"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
