//! Issuing step-up challenges: a challenge record bound to the transaction (id = OIDC `state`,
//! nonce, PKCE verifier, return path) is stored, then rendered as an OIDC authorization request
//! for browsers (`acr_values`, `max_age`, PKCE S256, `prompt=login` when `max_age` is 0), bound
//! to the browser by a `__Host-` cookie, or as an RFC 9470 `insufficient_user_authentication`
//! challenge for API clients.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
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
    /// The IdP's authorization endpoint: configured, or set once discovery has read it.
    endpoint: Arc<ArcSwapOption<String>>,
}

impl Challenger {
    /// With a configured `authorization_endpoint` the endpoint is known now; with `oidc`, it is
    /// set through [`Challenger::endpoint`] by discovery.
    pub fn new(config: ChallengeConfig) -> Self {
        let endpoint = Arc::new(ArcSwapOption::from(
            config.authorization_endpoint.clone().map(Arc::new),
        ));
        Self { config, endpoint }
    }

    /// Where discovery stores the authorization endpoint.
    pub fn endpoint(&self) -> Arc<ArcSwapOption<String>> {
        self.endpoint.clone()
    }

    pub fn config(&self) -> &ChallengeConfig {
        &self.config
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
            browser_binding: None,
        })
    }

    /// Binds a challenge to the browser that will be sent to the IdP: returns the `Set-Cookie`
    /// value carrying a fresh random value whose hash the challenge records (`None` if the RNG
    /// fails). The cookie is `__Host-` prefixed (Secure, Path=/, no Domain), HttpOnly and
    /// SameSite=Lax (sent on the IdP's top-level redirect back), and lives as long as the
    /// challenge. Its name is per challenge, so step-ups in two tabs do not collide.
    pub fn bind_browser(&self, challenge: &mut Challenge) -> Option<String> {
        let value = random_token(32)?;
        challenge.browser_binding = Some(browser_binding(&value));
        Some(format!(
            "{}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
            cookie_name(&challenge.id),
            self.config.ttl_secs
        ))
    }

    /// The OIDC authorization request URL for a browser; `None` until the IdP's authorization
    /// endpoint is known (discovery has not answered yet).
    pub fn authorization_url(&self, challenge: &Challenge) -> Option<String> {
        let endpoint = self.endpoint.load_full()?;
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
        let sep = if endpoint.contains('?') { '&' } else { '?' };
        Some(format!("{endpoint}{sep}{}", query.finish()))
    }
}

/// The name of the cookie binding challenge `id` to its browser.
pub fn cookie_name(challenge_id: &str) -> String {
    let hash = digest::digest(&digest::SHA256, challenge_id.as_bytes());
    format!("__Host-stepguard-{}", &URL_SAFE_NO_PAD.encode(hash.as_ref())[..12])
}

/// What a challenge records of its browser cookie's value: base64url(SHA-256(value)).
pub fn browser_binding(value: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, value.as_bytes()).as_ref())
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
