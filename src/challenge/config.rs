//! The `challenge` section: the `acr` ladder, challenge lifetime and limits, and the IdP (OIDC)
//! the challenges send browsers to; and its rules ([`ChallengeConfig::validate`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::identity::config::SigningAlgorithm;
use crate::section::{Invalid, Resolve, invalid, resolve_opt, secure_url};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeConfig {
    /// The IdP's authorization endpoint, when it is not discovered (`oidc` absent): browsers are
    /// sent there, and nothing completes their step-up but the grant API.
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    /// The OIDC client that completes browser step-ups: discovery, the callback at
    /// `redirect_uri`'s path, the code exchange and the ID token checks.
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
    pub client_id: String,
    pub redirect_uri: String,
    /// Ordered `acr` values, weakest first.
    pub acr_ladder: Vec<String>,
    #[serde(default = "default_challenge_ttl")]
    pub ttl_secs: u64,
    /// Clock skew allowed between the IdP (or approval system) and stepguard when judging
    /// whether a completion's `auth_time` is after the challenge was issued, and within
    /// `max_age`. Separate from `identity.leeway_secs` (token expiry): a sign-in more than this
    /// before the challenge never completes it. At most 30.
    #[serde(default = "default_completion_skew")]
    pub completion_skew_secs: u64,
    #[serde(default = "default_scope")]
    pub scope: String,
    /// Abuse limits on issuing challenges.
    #[serde(default)]
    pub limits: ChallengeLimits,
}

/// stepguard as the OIDC client (relying party) of the step-up IdP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The IdP's issuer identifier; its configuration is read from
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// A file holding the client secret (relative to this file).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// An environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// How the client authenticates at the token endpoint.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Issuers of the access tokens the sidecar verifies whose `sub` values are this IdP's
    /// (the same user directory). A step-up completes only for the same `sub` of one of these
    /// issuers, or of the IdP itself.
    #[serde(default)]
    pub same_subjects_as: Vec<String>,
    /// Algorithms accepted for ID tokens (never `none` or HMAC).
    #[serde(default = "default_id_token_algorithms")]
    pub id_token_algorithms: Vec<SigningAlgorithm>,
    /// Push authorization requests (RFC 9126) when the IdP advertises a PAR endpoint.
    #[serde(default)]
    pub pushed_authorization_requests: bool,
    /// Where the callback sends the browser when the challenged page cannot be returned to.
    #[serde(default = "default_return_path")]
    pub default_return: String,
}

/// Client authentication at the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
}

pub(crate) fn default_id_token_algorithms() -> Vec<SigningAlgorithm> {
    use jsonwebtoken::Algorithm;
    vec![
        SigningAlgorithm(Algorithm::RS256),
        SigningAlgorithm(Algorithm::ES256),
    ]
}

pub(crate) fn default_return_path() -> String {
    "/".into()
}

/// How many challenges may be issued per subject and per source IP in a window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChallengeLimits {
    pub per_subject: RateLimit,
    pub per_source_ip: RateLimit,
    /// Open (unexpired, not completed) challenges one subject may have at once.
    pub max_open_per_subject: u32,
    /// Challenges issued for one transaction without a grant being minted in between; past it
    /// the client is looping and gets a 403 until it stops for a challenge lifetime.
    pub max_attempts_per_transaction: u32,
}

impl Default for ChallengeLimits {
    fn default() -> Self {
        Self {
            per_subject: RateLimit {
                max: 10,
                window_secs: 60,
            },
            per_source_ip: RateLimit {
                max: 60,
                window_secs: 60,
            },
            max_open_per_subject: 5,
            max_attempts_per_transaction: 5,
        }
    }
}

/// At most `max` events per fixed window of `window_secs`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub max: u64,
    pub window_secs: u64,
}

pub(crate) fn default_challenge_ttl() -> u64 {
    300
}

pub(crate) fn default_completion_skew() -> u64 {
    5
}

pub(crate) fn default_scope() -> String {
    "openid".into()
}

impl Resolve for ChallengeConfig {
    fn resolve(&mut self, base: &Path) {
        if let Some(oidc) = &mut self.oidc {
            resolve_opt(&mut oidc.client_secret_file, base);
        }
    }
}

impl ChallengeConfig {
    /// The path of the OIDC callback: `redirect_uri`'s path.
    pub fn callback_path(&self) -> Option<&str> {
        callback_path(&self.redirect_uri)
    }

    /// The section's rules: limits, a ladder of unique values, exactly one way to the IdP, safe
    /// URLs, lifetimes.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.validate_limits()?;
        if self.acr_ladder.is_empty() {
            return Err(invalid(
                "challenge.acr_ladder",
                "list at least one acr value",
            ));
        }
        let unique: HashSet<_> = self.acr_ladder.iter().collect();
        if unique.len() != self.acr_ladder.len() {
            return Err(invalid("challenge.acr_ladder", "values must be unique"));
        }
        let issuer = self.oidc.as_ref().map(|o| &o.issuer);
        match (&self.authorization_endpoint, issuer) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "challenge.authorization_endpoint",
                    "not with challenge.oidc: the endpoint is discovered",
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "challenge.oidc",
                    "set challenge.oidc (the IdP, discovered) or challenge.authorization_endpoint",
                ));
            }
            _ => {}
        }
        for (name, url) in [
            (
                "authorization_endpoint",
                self.authorization_endpoint.as_ref(),
            ),
            ("oidc.issuer", issuer),
            ("redirect_uri", Some(&self.redirect_uri)),
        ] {
            if url.is_some_and(|url| !secure_url(url)) {
                return Err(invalid(
                    format!("challenge.{name}"),
                    "must be https:// (plain http only on loopback)",
                ));
            }
        }
        if self.client_id.is_empty() {
            return Err(invalid("challenge.client_id", "must not be empty"));
        }
        if let Some(o) = &self.oidc {
            self.validate_oidc(o)?;
        }
        if !(30..=3_600).contains(&self.ttl_secs) {
            return Err(invalid("challenge.ttl_secs", "must be between 30 and 3600"));
        }
        if self.completion_skew_secs > 30 {
            return Err(invalid(
                "challenge.completion_skew_secs",
                "at most 30 seconds (a sign-in older than the challenge by more never completes it)",
            ));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), Invalid> {
        let l = &self.limits;
        for (name, limit) in [
            ("per_subject", l.per_subject),
            ("per_source_ip", l.per_source_ip),
        ] {
            if limit.max == 0 || !(1..=86_400).contains(&limit.window_secs) {
                return Err(invalid(
                    format!("challenge.limits.{name}"),
                    "max must be at least 1 and window_secs between 1 and 86400",
                ));
            }
        }
        for (name, max) in [
            ("max_open_per_subject", l.max_open_per_subject),
            (
                "max_attempts_per_transaction",
                l.max_attempts_per_transaction,
            ),
        ] {
            if max == 0 {
                return Err(invalid(
                    format!("challenge.limits.{name}"),
                    "must be at least 1",
                ));
            }
        }
        Ok(())
    }

    fn validate_oidc(&self, o: &OidcConfig) -> Result<(), Invalid> {
        if o.client_secret_file.is_some() && o.client_secret_env.is_some() {
            return Err(invalid(
                "challenge.oidc.client_secret_file",
                "set at most one of client_secret_file or client_secret_env",
            ));
        }
        if super::safe_path(&o.default_return).is_none() {
            return Err(invalid(
                "challenge.oidc.default_return",
                "must be a path on this origin",
            ));
        }
        if self.callback_path().is_none() {
            return Err(invalid(
                "challenge.redirect_uri",
                "needs a path for the callback",
            ));
        }
        Ok(())
    }
}

/// The path of a redirect URI (`https://host/p?q` → `/p`); `None` without one.
pub fn callback_path(redirect_uri: &str) -> Option<&str> {
    let rest = redirect_uri.split_once("://")?.1;
    let path = &rest[rest.find('/')?..];
    let path = path.split(['?', '#']).next().unwrap_or(path);
    (path.len() > 1).then_some(path)
}
