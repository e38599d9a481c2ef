//! Issuing step-up challenges: a challenge record bound to the transaction (id = OIDC `state`,
//! nonce, PKCE verifier, return path) is stored, then rendered as an OIDC authorization request
//! for browsers (`acr_values`, `max_age`, PKCE S256, `prompt=login` when `max_age` is 0) or as an
//! RFC 9470 `insufficient_user_authentication` challenge for API clients.

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::config::ChallengeConfig;
use crate::grant::{Challenge, GrantTerms, Requirement};
use crate::identity::Subject;
use crate::request::AuthzRequest;
use crate::route::Action;
use crate::txn::Transaction;

/// A random, URL-safe token with `bytes` bytes of entropy (`None` if the system RNG fails).
pub fn random_token(bytes: usize) -> Option<String> {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new().fill(&mut buf).ok()?;
    Some(URL_SAFE_NO_PAD.encode(buf))
}

/// Builds challenges from config.
pub struct Challenger {
    config: ChallengeConfig,
}

impl Challenger {
    pub fn new(config: ChallengeConfig) -> Self {
        Self { config }
    }

    pub fn ladder(&self) -> &[String] {
        &self.config.acr_ladder
    }

    pub fn limits(&self) -> &crate::config::ChallengeLimits {
        &self.config.limits
    }

    /// A new challenge record for this transaction (`None` if the system RNG fails).
    #[allow(clippy::too_many_arguments)]
    pub fn challenge(
        &self,
        action: &Action,
        subject: &Subject,
        txn: &Transaction,
        req: &AuthzRequest,
        requirement: Requirement,
        terms: GrantTerms,
        now: i64,
    ) -> Option<Challenge> {
        Some(Challenge {
            id: random_token(16)?,
            digest: txn.digest.clone(),
            subject: subject.binding_key(),
            action: action.name.clone(),
            requirement,
            terms,
            issued_at: now,
            expires_at: now + self.config.ttl_secs as i64,
            return_to: return_to(req),
            nonce: random_token(16)?,
            pkce_verifier: random_token(32)?,
            attempts: 0,
        })
    }

    /// The OIDC authorization request URL for a browser.
    pub fn authorization_url(&self, challenge: &Challenge) -> String {
        let r = &challenge.requirement;
        let mut query = form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", &self.config.redirect_uri)
            .append_pair("scope", &self.config.scope)
            .append_pair("acr_values", &r.acr_values.join(" "))
            .append_pair("max_age", &r.max_age.to_string())
            .append_pair("state", &challenge.id)
            .append_pair("nonce", &challenge.nonce)
            .append_pair("code_challenge", &pkce_challenge(&challenge.pkce_verifier))
            .append_pair("code_challenge_method", "S256");
        if r.max_age == 0 {
            query.append_pair("prompt", "login");
        }
        let sep = if self.config.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{sep}{}",
            self.config.authorization_endpoint,
            query.finish()
        )
    }
}

/// RFC 7636 S256: base64url(SHA-256(verifier)).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()).as_ref())
}

/// The RFC 9470 `WWW-Authenticate` value for an API client.
pub fn insufficient_authentication(requirement: &Requirement, description: &str) -> String {
    format!(
        "Bearer error=\"insufficient_user_authentication\", error_description=\"{}\", acr_values=\"{}\", max_age=\"{}\"",
        quote_safe(description),
        quote_safe(&requirement.acr_values.join(" ")),
        requirement.max_age
    )
}

/// The RFC 6750 `WWW-Authenticate` value for a missing or invalid token.
pub fn invalid_token(description: &str) -> String {
    format!(
        "Bearer error=\"invalid_token\", error_description=\"{}\"",
        quote_safe(description)
    )
}

/// Keeps a header quoted-string safe: printable ASCII without `"` and `\`.
fn quote_safe(text: &str) -> String {
    text.chars()
        .filter(|c| (' '..='~').contains(c) && *c != '"' && *c != '\\')
        .collect()
}

/// Where the user returns after step-up: the same path for a navigation, else the page that
/// sent the request when it is on the same host, else `/`. Always a path on this origin.
fn return_to(req: &AuthzRequest) -> String {
    if req.method == "GET" {
        return safe_path(&req.raw.path).unwrap_or("/").to_string();
    }
    let host = &req.host;
    req.header("referer")
        .and_then(|r| r.split_once("://").map(|(_, rest)| rest))
        .and_then(|rest| rest.strip_prefix(host.as_str()))
        .and_then(safe_path)
        .unwrap_or("/")
        .to_string()
}

/// A same-origin absolute path, or nothing.
pub fn safe_path(path: &str) -> Option<&str> {
    let ok = path.starts_with('/')
        && !path.starts_with("//")
        && !path.starts_with("/\\")
        && path
            .bytes()
            .all(|b| (0x21..0x7f).contains(&b) && b != b'\\')
        && !path.to_ascii_lowercase().contains("%2f")
        && !path.to_ascii_lowercase().contains("%5c");
    ok.then_some(path)
}

#[cfg(test)]
mod tests;
