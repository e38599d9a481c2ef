//! Issuing step-up challenges: a challenge record bound to the transaction (id = OIDC `state`,
//! nonce, PKCE verifier, return path) is stored, then rendered as an OIDC authorization request
//! for browsers (`acr_values`, `max_age`, PKCE S256, `prompt=login` when `max_age` is 0), bound
//! to the browser by a `__Host-` cookie, or as an RFC 9470 `insufficient_user_authentication`
//! challenge for API clients.

pub mod limits;

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::challenge::config::ChallengeConfig;
use crate::grant::{Challenge, GrantTerms, Requirement};
use crate::identity::Subject;
use crate::random::random_token;
use crate::request::AuthzRequest;
use crate::route::Action;
use crate::txn::Transaction;
pub use issue::{ChallengeRequest, Issuance};

pub mod config;
mod issue;

/// Builds challenges from config.
pub struct Challenger {
    config: ChallengeConfig,
    /// Where browsers are sent: configured, or set once discovery has read the IdP's metadata.
    endpoint: Arc<ArcSwapOption<Endpoint>>,
}

/// Where a browser that must step up is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The IdP's authorization endpoint, with the request in the query.
    Direct(String),
    /// stepguard's own start path on the challenged origin (`?state=<id>`): it pushes the
    /// request to the IdP (RFC 9126) and forwards the browser with the `request_uri`.
    Pushed { start: String },
}

impl Challenger {
    /// With a configured `authorization_endpoint` the endpoint is known now; with `oidc`, it is
    /// set through [`Challenger::endpoint`] by discovery.
    pub fn new(config: ChallengeConfig) -> Self {
        let endpoint = Arc::new(ArcSwapOption::from(
            config
                .authorization_endpoint
                .clone()
                .map(|url| Arc::new(Endpoint::Direct(url))),
        ));
        Self { config, endpoint }
    }

    /// Where discovery stores the endpoint.
    pub fn endpoint(&self) -> Arc<ArcSwapOption<Endpoint>> {
        self.endpoint.clone()
    }

    pub fn config(&self) -> &ChallengeConfig {
        &self.config
    }

    pub fn ladder(&self) -> &[String] {
        &self.config.acr_ladder
    }

    pub fn limits(&self) -> &crate::challenge::config::ChallengeLimits {
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
            authorization_details: authorization_details(action, txn),
            policy_revision: None,
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

    /// Where to send a browser for this challenge: the OIDC authorization request URL, or the
    /// start path that pushes it; `None` until the IdP is known (discovery has not answered).
    pub fn authorization_url(&self, challenge: &Challenge) -> Option<String> {
        let (base, query) = match self.endpoint.load_full()?.as_ref() {
            Endpoint::Direct(endpoint) => (
                endpoint.clone(),
                encode(&authorization_params(&self.config, challenge)),
            ),
            Endpoint::Pushed { start } => {
                (start.clone(), encode(&[("state", challenge.id.clone())]))
            }
        };
        let sep = if base.contains('?') { '&' } else { '?' };
        Some(format!("{base}{sep}{query}"))
    }
}

/// The OIDC authorization request's parameters for a challenge (OIDC Core §3.1.2.1, PKCE
/// S256, `acr_values` and `max_age` from the requirement, `prompt=login` for a fresh one, RFC
/// 9396 `authorization_details` when the action describes its transactions).
pub fn authorization_params(
    config: &ChallengeConfig,
    challenge: &Challenge,
) -> Vec<(&'static str, String)> {
    let r = &challenge.requirement;
    let mut params = vec![
        ("response_type", "code".to_string()),
        ("client_id", config.client_id.clone()),
        ("redirect_uri", config.redirect_uri.clone()),
        ("scope", config.scope.clone()),
        ("acr_values", r.acr_values.join(" ")),
        ("max_age", r.max_age.to_string()),
        ("state", challenge.id.clone()),
        ("nonce", challenge.nonce.clone()),
        ("code_challenge", pkce_challenge(&challenge.pkce_verifier)),
        ("code_challenge_method", "S256".to_string()),
    ];
    if r.max_age == 0 {
        params.push(("prompt", "login".to_string()));
    }
    if let Some(details) = &challenge.authorization_details {
        params.push(("authorization_details", details.to_string()));
    }
    params
}

/// `application/x-www-form-urlencoded` pairs.
pub fn encode(pairs: &[(&str, String)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        query.append_pair(name, value);
    }
    query.finish()
}

/// RFC 9396 `authorization_details` for the action's transaction, when the action names a
/// type: the action, the amount and currency, and every bound field's plain value (so the IdP
/// can show "pay 100 EUR to bob from A1").
fn authorization_details(action: &Action, txn: &Transaction) -> Option<serde_json::Value> {
    let kind = action.authorization_details_type.as_ref()?;
    let fields: serde_json::Map<String, serde_json::Value> = txn
        .bound
        .iter()
        .map(|(name, value)| {
            let plain = value.as_deref().map(crate::txn::untag);
            (name.clone(), serde_json::json!(plain))
        })
        .collect();
    let mut detail = serde_json::json!({
        "type": kind,
        "actions": [action.name],
        "fields": fields,
    });
    if let Some(amount) = txn.value {
        detail["amount"] = serde_json::json!(amount);
    }
    if let Some(currency) = &txn.currency {
        detail["currency"] = serde_json::json!(currency);
    }
    Some(serde_json::json!([detail]))
}

/// The name of the cookie binding challenge `id` to its browser.
pub fn cookie_name(challenge_id: &str) -> String {
    let hash = digest::digest(&digest::SHA256, challenge_id.as_bytes());
    format!(
        "__Host-stepguard-{}",
        &URL_SAFE_NO_PAD.encode(hash.as_ref())[..12]
    )
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
