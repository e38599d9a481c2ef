//! The `challenge` section: the `acr` ladder, challenge lifetime and limits, and the IdP (OIDC) the challenges send browsers to.
//! Its types are composed into the whole file by [`crate::config`], which validates them.

use std::path::PathBuf;

use serde::Deserialize;

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
    pub id_token_algorithms: Vec<String>,
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

pub(crate) fn default_id_token_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
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
