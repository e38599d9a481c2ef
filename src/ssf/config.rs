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
    /// The transmitter (an IdP, a PAM or risk system).
    pub transmitter: TransmitterConfig,
    /// `aud` values that name this receiver (a SET must carry one).
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
        resolve_opt(&mut self.transmitter.jwks.file, base);
        if let Some(push) = &mut self.push {
            resolve_opt(&mut push.bearer_token_file, base);
        }
        if let Some(poll) = &mut self.poll {
            resolve_opt(&mut poll.bearer_token_file, base);
        }
    }
}

impl SharedSignalsConfig {
    /// The section's rules: a transmitter that validates like a token issuer, audiences, at
    /// least one delivery method, sane paths, endpoints and lifetimes.
    pub fn validate(&self) -> Result<(), Invalid> {
        let issuer = self.transmitter.as_issuer(&self.audiences);
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
        if let Some(push) = &self.push {
            let safe = push.path.starts_with('/')
                && push.path.len() > 1
                && push
                    .path
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b));
            if !safe {
                return Err(invalid(
                    "shared_signals.push.path",
                    "an absolute path of letters, digits and `/-._~`",
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
