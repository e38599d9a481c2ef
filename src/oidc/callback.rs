//! The OIDC callback (`redirect_uri`'s path on the HTTP port; the shipped Envoy configs route it
//! here). In order, each step refusing with an HTML page and the right status, and nothing
//! spent before the last one:
//!
//! 1. an IdP `error` → 400 (the challenge stays open: the user may try again);
//! 2. `state` names an open challenge → else 400 (unknown, expired or already used);
//! 3. the browser presents the challenge's `__Host-` cookie → else 403 (another browser);
//! 4. RFC 9207 `iss` equals the IdP when sent (and is required when the IdP advertises it);
//! 5. the code is exchanged with the PKCE verifier → a refused (e.g. replayed) code is a 400;
//! 6. the ID token is verified (signature, `iss`, `aud`, `azp`, `exp`, `nonce`);
//! 7. [`Completer::complete`]: the challenged subject, `acr` on the ladder, `auth_time` after
//!    the challenge and within `max_age` → else 403; the sign-in (`iss`, `sub`, `auth_time`,
//!    `sid`) not already used for another challenge → else 403; then the challenge is closed
//!    once and the grant minted for the challenged transaction;
//! 8. 303 to the challenge's `return_to` — a same-origin path, else the configured default —
//!    clearing the cookie.
//!
//! Every outcome is logged on the evidence target; a completion is recorded in the evidence
//! (durably, before its grant is stored: [`Completer::complete`]) and one that cannot be recorded
//! is a 503 with no grant.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Oidc;
use crate::challenge::config::ChallengeConfig;
use crate::challenge::{authorization_params, browser_binding, cookie_name, safe_path};
use crate::clock::Clock;
use crate::completion::{Assurance, AuthEvent, Completer};
use crate::grant::Challenge;

/// What the callback needs.
#[derive(Clone)]
pub struct CallbackState {
    pub oidc: Arc<Oidc>,
    pub completer: Completer,
    pub clock: Arc<dyn Clock>,
    /// For rebuilding a challenge's authorization request (pushed requests).
    pub challenge: ChallengeConfig,
}

/// A refusal: status, a reason for logs and evidence, and what the user is told.
struct Refusal {
    status: StatusCode,
    reason: &'static str,
    message: &'static str,
}

fn refuse(status: StatusCode, reason: &'static str, message: &'static str) -> Refusal {
    Refusal {
        status,
        reason,
        message,
    }
}

/// `GET <callback path>?code=…&state=…[&iss=…]` or `?error=…&state=…`.
pub async fn callback(
    State(state): State<CallbackState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let challenge_id = params.get("state").cloned();
    match complete(&state, &params, &headers).await {
        Ok((challenge, return_to)) => {
            tracing::info!(
                target: "stepguard::evidence",
                event = "step_up_completed",
                method = "oidc",
                challenge_id = %challenge.id,
                transaction = %challenge.digest,
                action = %challenge.action,
                subject = %challenge.subject,
                "step-up completed"
            );
            redirect(&challenge.id, &return_to)
        }
        Err(refusal) => {
            tracing::warn!(
                target: "stepguard::evidence",
                event = "step_up_refused",
                method = "oidc",
                challenge_id = challenge_id.as_deref().unwrap_or(""),
                reason = refusal.reason,
                "step-up completion refused"
            );
            page(refusal.status, refusal.reason, refusal.message)
        }
    }
}

/// `GET <start path>?state=…` (RFC 9126, when `pushed_authorization_requests` is on and the
/// IdP advertises a PAR endpoint): the browser that was challenged (its cookie is checked) is
/// forwarded to the IdP with a `request_uri` for the challenge's request, pushed now with the
/// client's credentials, so the request itself (acr, transaction details) never travels
/// through the browser.
pub async fn start(
    State(state): State<CallbackState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    match pushed(&state, &params, &headers).await {
        Ok(location) => {
            let mut response = StatusCode::SEE_OTHER.into_response();
            if let Ok(location) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            secure_headers(response.headers_mut());
            response
        }
        Err(refusal) => {
            tracing::warn!(reason = refusal.reason, "pushed authorization refused");
            page(refusal.status, refusal.reason, refusal.message)
        }
    }
}

async fn pushed(
    state: &CallbackState,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<String, Refusal> {
    let now = state.clock.now();
    let challenge = open_challenge(state, params, headers, now).await?;
    state
        .oidc
        .push(&authorization_params(&state.challenge, &challenge))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "pushing the authorization request failed");
            idp_down()
        })
}

/// The open challenge named by `state`, presented by the browser it was bound to.
async fn open_challenge(
    state: &CallbackState,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    now: i64,
) -> Result<Challenge, Refusal> {
    let unknown = || {
        refuse(
            StatusCode::BAD_REQUEST,
            "unknown_state",
            "This sign-in link is unknown, expired or was already used. Go back and try again.",
        )
    };
    let id = params.get("state").ok_or_else(unknown)?;
    let challenge = state
        .completer
        .grants()
        .challenge(id, now)
        .await
        .map_err(|_| store_down())?
        .ok_or_else(unknown)?;
    let presented = cookie(headers, &cookie_name(&challenge.id)).map(browser_binding);
    if challenge.browser_binding.is_none() || presented != challenge.browser_binding {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "browser_mismatch",
            "This sign-in was started in another browser. Start again from this one.",
        ));
    }
    Ok(challenge)
}

async fn complete(
    state: &CallbackState,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<(Challenge, String), Refusal> {
    let oidc = &state.oidc;
    let now = state.clock.now();
    if params.contains_key("error") {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "idp_error",
            "The sign-in was not completed at your identity provider. Go back and try again.",
        ));
    }
    let challenge = open_challenge(state, params, headers, now).await?;
    let metadata = oidc.metadata().ok_or_else(idp_down)?;
    match params.get("iss") {
        Some(iss) if *iss != metadata.issuer => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "issuer_mismatch",
                "The answer came from another identity provider.",
            ));
        }
        None if metadata.authorization_response_iss_parameter_supported => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "issuer_missing",
                "The identity provider's answer is incomplete.",
            ));
        }
        _ => {}
    }
    let code = params.get("code").ok_or_else(|| {
        refuse(
            StatusCode::BAD_REQUEST,
            "code_missing",
            "The identity provider's answer is incomplete.",
        )
    })?;
    let id_token = oidc
        .exchange(code, &challenge.pkce_verifier)
        .await
        .map_err(|e| match e {
            super::OidcError::CodeRefused(_) => refuse(
                StatusCode::BAD_REQUEST,
                "code_refused",
                "This sign-in was already used or has expired. Go back and try again.",
            ),
            _ => {
                tracing::error!(error = %e, "token exchange failed");
                idp_down()
            }
        })?;
    let verified = oidc
        .verify_id_token(&id_token, &challenge.nonce, now)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "ID token rejected");
            refuse(
                StatusCode::FORBIDDEN,
                "id_token_rejected",
                "The identity provider's answer could not be verified.",
            )
        })?;
    let keys = oidc.subject_keys(&verified);
    let subject = if keys.contains(&challenge.subject) {
        challenge.subject.clone()
    } else {
        keys[0].clone()
    };
    // Without auth_time nothing shows the sign-in happened after the challenge.
    let auth_time = verified.auth_time.unwrap_or(i64::MIN);
    let assurance = Assurance {
        subject,
        acr: verified.acr.unwrap_or_default(),
        amr: verified.amr,
        auth_time,
        method: "oidc".into(),
        approver: None,
        // The IdP's own `iss|sub`: one sign-in, whichever access-token issuer it stands for.
        event: AuthEvent::sign_in(
            format!("{}|{}", verified.issuer, verified.subject),
            auth_time,
            verified.sid,
        ),
    };
    state
        .completer
        .complete(&challenge, &assurance, now)
        .await
        .map_err(|e| {
            let message = match e {
                crate::completion::CompletionError::OtherSubject => {
                    "Another user signed in. The transaction can only be approved by the user who started it."
                }
                crate::completion::CompletionError::Store(_) => return store_down(),
                crate::completion::CompletionError::Evidence(_) => {
                    return refuse(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "evidence_unavailable",
                        "The service is temporarily unavailable. Try again in a moment.",
                    );
                }
                crate::completion::CompletionError::NotOpen => {
                    "This sign-in link was already used or has expired. Go back and try again."
                }
                crate::completion::CompletionError::AlreadyUsed => {
                    "This sign-in already approved another transaction. Go back and sign in again for this one."
                }
                crate::completion::CompletionError::Revoked => {
                    "Your session or account changed after this step-up began. Go back and try again."
                }
                _ => "The sign-in was not strong or recent enough for this transaction. Go back and try again.",
            };
            refuse(StatusCode::FORBIDDEN, e.reason(), message)
        })?;
    let return_to = safe_path(&challenge.return_to)
        .unwrap_or(&oidc.config().default_return)
        .to_string();
    Ok((challenge, return_to))
}

fn store_down() -> Refusal {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "grant_store_unavailable",
        "The service is temporarily unavailable. Try again in a moment.",
    )
}

fn idp_down() -> Refusal {
    refuse(
        StatusCode::BAD_GATEWAY,
        "idp_unavailable",
        "Your identity provider could not be reached. Try again in a moment.",
    )
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// 303 back to the transaction's page, clearing the binding cookie.
fn redirect(challenge_id: &str, to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let h = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(to) {
        h.insert(header::LOCATION, location);
    }
    if let Ok(clear) = HeaderValue::from_str(&format!(
        "{}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0",
        cookie_name(challenge_id)
    )) {
        h.insert(header::SET_COOKIE, clear);
    }
    secure_headers(h);
    response
}

/// A small HTML page; nothing from the request is echoed.
fn page(status: StatusCode, reason: &str, message: &str) -> Response {
    let title = if status.is_server_error() {
        "Temporarily unavailable"
    } else {
        "Step-up not completed"
    };
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
         <body><h1>{title}</h1><p>{}</p><p><small>Reason: <code>{}</code></small></p></body></html>\n",
        escape(message),
        escape(reason)
    );
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(h);
    response
}

fn secure_headers(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The callback URL carries the code: never leak it onwards.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests;
