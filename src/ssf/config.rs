//! The `shared_signals` section: stepguard as an SSF receiver — the transmitter it trusts (its
//! issuer, key set, algorithms, and the issuers whose subjects are its), the audience that
//! names stepguard, how SETs arrive (push on the HTTP port, RFC 8935; poll, RFC 8936), and how
//! long events count; and its rules ([`SharedSignalsConfig::validate`]).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::identity::config::{IssuerConfig, JwksConfig, SigningAlgorithm};
use crate::section::{Invalid, Resolve, invalid, resolve_opt, secure_url};

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
    /// Its key set (`url`, or a `file`); SETs signed by any other key are refused.
    pub jwks: JwksConfig,
    /// Asymmetric algorithms accepted for SETs.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<SigningAlgorithm>,
    /// Token issuers whose `sub` values are the transmitter's (the same user directory): an
    /// `opaque` subject, or an `iss_sub` of one of these, is that `sub` under each.
    #[serde(default)]
    pub same_subjects_as: Vec<String>,
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
        }
        if let Some(send) = &mut self.send {
            crate::section::resolve_path(&mut send.signing_key_file, base);
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
        let issuer = transmitter.as_issuer(&self.audiences);
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
        if let Some(push) = &self.push
            && !safe_path(&push.path)
        {
            return Err(invalid(
                "shared_signals.push.path",
                "an absolute path of letters, digits and `/-._~`",
            ));
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
        if !safe_path(&self.jwks_path) {
            return Err(invalid(
                "shared_signals.send.jwks_path",
                "an absolute path of letters, digits and `/-._~`",
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

/// An absolute path of letters, digits and `/-._~`.
fn safe_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() > 1
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
}
