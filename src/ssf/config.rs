//! The `shared_signals` section: stepguard as an SSF receiver — the transmitter it trusts (its
//! issuer, key set or the metadata it is discovered from, algorithms, the issuers whose
//! subjects are its, and the stream management stepguard may do there), the audience that
//! names stepguard, how SETs arrive (push on the HTTP port, RFC 8935; poll, RFC 8936), and how
//! long events count; and its rules ([`SharedSignalsConfig::validate`]).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::identity::config::{
    IssuerConfig, JwksConfig, SigningAlgorithm, default_jwks_max_bytes, default_jwks_max_stale,
    default_jwks_timeout, default_jwks_ttl, default_refresh_secs,
};
use crate::section::{Invalid, Resolve, invalid, resolve_opt, resolve_path, secure_url};

/// The section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedSignalsConfig {
    /// The transmitter stepguard receives from (an IdP, a PAM or risk system); absent: nothing
    /// is received.
    #[serde(default)]
    pub transmitter: Option<TransmitterConfig>,
    /// `aud` values that name this receiver (a SET must carry one).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Push delivery (RFC 8935): SETs `POST`ed to this path on the HTTP port.
    #[serde(default)]
    pub push: Option<PushConfig>,
    /// Poll delivery (RFC 8936) from the transmitter's endpoint.
    #[serde(default)]
    pub poll: Option<PollConfig>,
    /// Oldest `iat` accepted; each `jti` is remembered this long (plus leeway) against replay.
    #[serde(default = "default_max_age")]
    pub max_age_secs: u64,
    /// How long a subject's events count for its tokens: at least the longest access-token
    /// lifetime, so a revoked session's tokens stay refused until they expire.
    #[serde(default = "default_remember")]
    pub remember_secs: u64,
    /// stepguard as a transmitter: SETs sent after privileged approvals (`after_approval`).
    #[serde(default)]
    pub send: Option<SendConfig>,
}

/// Sending SETs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendConfig {
    /// stepguard's issuer identifier (`iss` of its SETs).
    pub issuer: String,
    /// An unencrypted PKCS#8 P-256 key (PEM or DER) signing the SETs (ES256).
    pub signing_key_file: PathBuf,
    /// The key's id in the published JWKS.
    #[serde(default = "default_key_id")]
    pub key_id: String,
    /// Where the JWKS is served on the HTTP port.
    #[serde(default = "default_jwks_path")]
    pub jwks_path: String,
    /// Receivers pushed to (RFC 8935).
    pub receivers: Vec<SendReceiver>,
    /// Tries per SET before it is given up (backoff 0.5 s doubling to 30 s).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// SETs waiting per receiver; past it new ones are dropped (counted).
    #[serde(default = "default_queue")]
    pub queue: usize,
}

/// One receiver of stepguard's SETs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendReceiver {
    /// Its push endpoint.
    pub url: String,
    /// The `aud` of SETs sent to it.
    pub audience: String,
    /// A file holding the bearer token presented to it.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
}

/// The transmitter stepguard trusts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransmitterConfig {
    /// Its issuer (`iss` of its SETs, exact).
    pub issuer: String,
    /// Its key set (`url`, or a `file`); SETs signed by any other key are refused. Without
    /// `url` or `file`, the key set is the discovered metadata's `jwks_uri` (the other fields,
    /// the fetch limits, still apply).
    #[serde(default = "default_jwks")]
    pub jwks: JwksConfig,
    /// Where its SSF transmitter metadata is read; without it, the SSF well-known location of
    /// `issuer` (`/.well-known/ssf-configuration` inserted before the issuer's path). Discovery
    /// happens when this is set, when `jwks` names no key set, or with `management`.
    #[serde(default)]
    pub metadata_url: Option<String>,
    /// Stream management (SSF 1.0 §8) at the transmitter, when its metadata offers it.
    #[serde(default)]
    pub management: Option<ManagementConfig>,
    /// Asymmetric algorithms accepted for SETs.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<SigningAlgorithm>,
    /// Token issuers whose `sub` values are the transmitter's (the same user directory): an
    /// `opaque` subject, or an `iss_sub` of one of these, is that `sub` under each.
    #[serde(default)]
    pub same_subjects_as: Vec<String>,
}

/// Stream management: stepguard reads its stream at the transmitter, creates it when absent,
/// updates it when it differs from what stepguard needs, reads its status, and asks for a
/// verification event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagementConfig {
    /// A file holding the bearer token presented to the transmitter's management endpoints.
    pub bearer_token_file: PathBuf,
    /// Ask for a verification event after each check of the stream (when the transmitter
    /// offers a `verification_endpoint`).
    #[serde(default = "default_true")]
    pub verify: bool,
    /// Time between checks of the stream (configuration, status, verification) after the first
    /// successful one; 0: checked once, at start.
    #[serde(default = "default_recheck")]
    pub recheck_secs: u64,
}

/// Push delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// The path SETs are `POST`ed to on the HTTP port.
    #[serde(default = "default_push_path")]
    pub path: String,
    /// A file holding the token the transmitter sends as `Authorization: Bearer …` (the SSF
    /// stream's `authorization_header`); without it, any caller may post (the SET's signature
    /// is what is trusted either way).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// The public URL of `path` as the transmitter reaches it (the stream's
    /// `delivery.endpoint_url`): needed by stream management.
    #[serde(default)]
    pub endpoint_url: Option<String>,
}

/// Poll delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    /// The transmitter's poll endpoint (the stream's `delivery.endpoint_url`).
    pub endpoint: String,
    /// Time between polls when nothing more is available.
    #[serde(default = "default_poll_interval")]
    pub interval_ms: u64,
    /// Most SETs asked for in one poll (`maxEvents`).
    #[serde(default = "default_max_events")]
    pub max_events: u32,
    /// A file holding the bearer token stepguard presents to the poll endpoint.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
}

fn default_jwks() -> JwksConfig {
    JwksConfig {
        file: None,
        url: None,
        min_refresh_secs: default_refresh_secs(),
        ttl_secs: default_jwks_ttl(),
        max_stale_secs: default_jwks_max_stale(),
        max_bytes: default_jwks_max_bytes(),
        timeout_ms: default_jwks_timeout(),
    }
}
fn default_true() -> bool {
    true
}
fn default_recheck() -> u64 {
    3_600
}
fn default_max_age() -> u64 {
    86_400
}
fn default_remember() -> u64 {
    86_400
}
fn default_algorithms() -> Vec<SigningAlgorithm> {
    use jsonwebtoken::Algorithm;
    vec![
        SigningAlgorithm(Algorithm::RS256),
        SigningAlgorithm(Algorithm::ES256),
    ]
}
fn default_push_path() -> String {
    "/ssf/events".into()
}
fn default_poll_interval() -> u64 {
    5_000
}
fn default_max_events() -> u32 {
    100
}
fn default_key_id() -> String {
    "stepguard-ssf-1".into()
}
fn default_jwks_path() -> String {
    "/ssf/jwks.json".into()
}
fn default_max_attempts() -> u32 {
    8
}
fn default_queue() -> usize {
    1024
}

impl TransmitterConfig {
    /// The transmitter as an [`IssuerConfig`] (what `identity::signed::SignedBy` takes).
    pub fn as_issuer(&self, audiences: &[String]) -> IssuerConfig {
        IssuerConfig {
            issuer: self.issuer.clone(),
            audiences: audiences.to_vec(),
            algorithms: self.algorithms.clone(),
            jwks: self.jwks.clone(),
        }
    }

    /// Whether its metadata is discovered: `metadata_url` set, no key set named, or stream
    /// management configured.
    pub fn discovers(&self) -> bool {
        self.metadata_url.is_some()
            || (self.jwks.file.is_none() && self.jwks.url.is_none())
            || self.management.is_some()
    }

    /// The issuers whose subjects are the transmitter's: itself and `same_subjects_as`.
    pub fn subject_group(&self) -> Vec<String> {
        let mut group = vec![self.issuer.clone()];
        group.extend(self.same_subjects_as.iter().cloned());
        group
    }
}

impl Resolve for SharedSignalsConfig {
    fn resolve(&mut self, base: &Path) {
        if let Some(transmitter) = &mut self.transmitter {
            resolve_opt(&mut transmitter.jwks.file, base);
            if let Some(management) = &mut transmitter.management {
                resolve_path(&mut management.bearer_token_file, base);
            }
        }
        if let Some(send) = &mut self.send {
            resolve_path(&mut send.signing_key_file, base);
            for receiver in &mut send.receivers {
                resolve_opt(&mut receiver.bearer_token_file, base);
            }
        }
        if let Some(push) = &mut self.push {
            resolve_opt(&mut push.bearer_token_file, base);
        }
        if let Some(poll) = &mut self.poll {
            resolve_opt(&mut poll.bearer_token_file, base);
        }
    }
}

impl SharedSignalsConfig {
    /// The section's rules: receiving, sending or both; see [`Self::validate_receiving`] and
    /// [`SendConfig::validate`].
    pub fn validate(&self) -> Result<(), Invalid> {
        if let Some(send) = &self.send {
            send.validate()?;
            if self.push.as_ref().is_some_and(|p| p.path == send.jwks_path) {
                return Err(invalid(
                    "shared_signals.send.jwks_path",
                    "is the push endpoint's path (shared_signals.push.path)",
                ));
            }
        }
        match &self.transmitter {
            Some(transmitter) => self.validate_receiving(transmitter),
            None if self.send.is_none() => Err(invalid(
                "shared_signals",
                "set transmitter (receive events), send (send them), or both",
            )),
            None if self.push.is_some() || self.poll.is_some() || !self.audiences.is_empty() => {
                Err(invalid(
                    "shared_signals.transmitter",
                    "audiences, push and poll are for receiving from a transmitter",
                ))
            }
            None => Ok(()),
        }
    }

    /// Receiving: a transmitter that validates like a token issuer, audiences, at least one
    /// delivery method, sane paths, endpoints and lifetimes.
    fn validate_receiving(&self, transmitter: &TransmitterConfig) -> Result<(), Invalid> {
        let mut issuer = transmitter.as_issuer(&self.audiences);
        if issuer.jwks.file.is_none() && issuer.jwks.url.is_none() {
            // The key set is discovered: its limits are checked here, its URL when read.
            issuer.jwks.url = Some("https://discovered.invalid/jwks".into());
        }
        issuer
            .validate("shared_signals.transmitter")
            .map_err(|e| match e.field.as_str() {
                "shared_signals.transmitter.audiences" => {
                    invalid("shared_signals.audiences", "list at least one audience")
                }
                _ => e,
            })?;
        if self.audiences.iter().any(|a| a.is_empty()) {
            return Err(invalid("shared_signals.audiences", "must not be empty"));
        }
        if self.push.is_none() && self.poll.is_none() {
            return Err(invalid(
                "shared_signals",
                "set push (the transmitter posts SETs) or poll (stepguard fetches them)",
            ));
        }
        self.validate_discovery(transmitter)?;
        if let Some(push) = &self.push {
            if !servable(&push.path) {
                return Err(invalid(
                    "shared_signals.push.path",
                    "an absolute path of letters, digits and `/-._~` (not an admin or a \
                     well-known one)",
                ));
            }
            if push.endpoint_url.as_deref().is_some_and(|u| !secure_url(u)) {
                return Err(invalid(
                    "shared_signals.push.endpoint_url",
                    "must be https:// (plain http only on loopback)",
                ));
            }
        }
        if let Some(poll) = &self.poll {
            if !secure_url(&poll.endpoint) {
                return Err(invalid(
                    "shared_signals.poll.endpoint",
                    "must be https:// (plain http only on loopback)",
                ));
            }
            if !(100..=3_600_000).contains(&poll.interval_ms) {
                return Err(invalid(
                    "shared_signals.poll.interval_ms",
                    "between 100 and 3600000",
                ));
            }
            if !(1..=1_000).contains(&poll.max_events) {
                return Err(invalid(
                    "shared_signals.poll.max_events",
                    "between 1 and 1000",
                ));
            }
        }
        if !(60..=30 * 86_400).contains(&self.max_age_secs) {
            return Err(invalid(
                "shared_signals.max_age_secs",
                "between 60 and 2592000",
            ));
        }
        if !(60..=365 * 86_400).contains(&self.remember_secs) {
            return Err(invalid(
                "shared_signals.remember_secs",
                "between 60 and 31536000",
            ));
        }
        Ok(())
    }
}

impl SharedSignalsConfig {
    /// Discovery and stream management: somewhere to read the metadata from, a sane re-check
    /// period, and the push endpoint's public URL when the stream delivers by push.
    fn validate_discovery(&self, transmitter: &TransmitterConfig) -> Result<(), Invalid> {
        let field = "shared_signals.transmitter";
        match &transmitter.metadata_url {
            Some(url) if !secure_url(url) => {
                return Err(invalid(
                    format!("{field}.metadata_url"),
                    "must be https:// (plain http only on loopback)",
                ));
            }
            None if transmitter.discovers() && !secure_url(&transmitter.issuer) => {
                return Err(invalid(
                    format!("{field}.issuer"),
                    "discovery reads the metadata at the issuer's well-known location: an \
                     https:// issuer (plain http only on loopback), or set metadata_url or jwks",
                ));
            }
            _ => {}
        }
        let Some(management) = &transmitter.management else {
            return Ok(());
        };
        if management.recheck_secs != 0 && !(60..=86_400).contains(&management.recheck_secs) {
            return Err(invalid(
                format!("{field}.management.recheck_secs"),
                "0 (at start only) or between 60 and 86400",
            ));
        }
        if self.push.as_ref().is_some_and(|p| p.endpoint_url.is_none()) {
            return Err(invalid(
                "shared_signals.push.endpoint_url",
                "stream management needs the push endpoint's public URL",
            ));
        }
        Ok(())
    }
}

impl SendConfig {
    /// Sending: an issuer, receivers with safe URLs and an audience, a servable JWKS path.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.issuer.is_empty() {
            return Err(invalid("shared_signals.send.issuer", "must not be empty"));
        }
        if self.receivers.is_empty() {
            return Err(invalid(
                "shared_signals.send.receivers",
                "list at least one",
            ));
        }
        for (i, r) in self.receivers.iter().enumerate() {
            if !secure_url(&r.url) {
                return Err(invalid(
                    format!("shared_signals.send.receivers[{i}].url"),
                    "must be https:// (plain http only on loopback)",
                ));
            }
            if r.audience.is_empty() {
                return Err(invalid(
                    format!("shared_signals.send.receivers[{i}].audience"),
                    "must not be empty",
                ));
            }
        }
        if !servable(&self.jwks_path) {
            return Err(invalid(
                "shared_signals.send.jwks_path",
                "an absolute path of letters, digits and `/-._~` (not an admin or a well-known \
                 one)",
            ));
        }
        if !(1..=50).contains(&self.max_attempts) || !(1..=100_000).contains(&self.queue) {
            return Err(invalid(
                "shared_signals.send.max_attempts",
                "max_attempts between 1 and 50, queue between 1 and 100000",
            ));
        }
        Ok(())
    }
}

/// Where SSF transmitter metadata is served (SSF 1.0 §6.2); no other path may start with it.
pub const WELL_KNOWN_SSF: &str = "/.well-known/ssf-configuration";

/// Whether `path` can be served beside the others on the HTTP port: an absolute path of
/// letters, digits and `/-._~`, not an admin endpoint's, not under the SSF well-known location.
fn servable(path: &str) -> bool {
    safe_path(path)
        && !["/healthz", "/readyz", "/metrics"].contains(&path)
        && !path.starts_with(WELL_KNOWN_SSF)
}

/// An absolute path of letters, digits and `/-._~`.
pub(crate) fn safe_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() > 1
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
}

#[cfg(test)]
mod tests;
