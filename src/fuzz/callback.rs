//! The `callback` harness: the OIDC callback ([`crate::oidc::callback::callback`]) with the
//! query parsed as axum parses it, against the quickstart pipeline with an `oidc` step-up IdP
//! (the loopback provider of [`super::idp`], discovered at start).
//!
//! Before each input, alice (aal1, an hour-old session) asks a browser to export key `k1`: the
//! pipeline opens a challenge and sets its `__Host-` cookie. The input is two lines, the query
//! string and the `Cookie` header, in which these placeholders are replaced first (so a corpus
//! file reaches past the state and cookie checks in every run): `$STATE` the challenge id,
//! `$COOKIE` the challenge's `name=value` cookie pair, `$NONCE` its nonce, `$ISS` the IdP's
//! issuer URL. The `code` is the ID token's claims as JSON (see [`super::idp`]); the harness
//! runs at [`NOW`] (1800000000).
//!
//! Invariants: a completion (303) happens only for the challenge's own state and cookie, mints
//! a grant for the challenged transaction and subject, and redirects to a same-origin path; a
//! refusal mints nothing; the same callback replayed never completes again.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};

use super::world::{self, NOW, World};
use crate::decision::Verdict;
use crate::grant::GrantStore as _;
use crate::oidc::Oidc;
use crate::oidc::callback::CallbackState;
use crate::request::RawRequest;

struct Relying {
    world: World,
    state: CallbackState,
    issuer: String,
    alice: String,
}

/// The challenge opened before each input.
struct Opened {
    id: String,
    cookie: String,
    nonce: String,
    digest: String,
    subject: String,
}

pub fn callback(data: &[u8]) {
    let _ = outcome(data);
}

/// The callback's status for `data` (`None`: not a request URI), invariants checked.
pub(super) fn outcome(data: &[u8]) -> Option<StatusCode> {
    let text = String::from_utf8_lossy(data);
    super::run(|| async move {
        let rp = relying().await;
        rp.world.reset();
        // The set-up decision runs against the real-time budget (250 ms): on a loaded machine it
        // can overrun and answer 503 instead of the challenge; that input then tests nothing.
        // (`tests.rs` checks that the seeds do reach a completion.)
        let opened = open(rp).await?;
        let text = text
            .replace("$STATE", &opened.id)
            .replace("$COOKIE", &opened.cookie)
            .replace("$NONCE", &opened.nonce)
            .replace("$ISS", &rp.issuer);
        let (query, cookie) = text.split_once('\n').unwrap_or((&text, ""));
        let uri = format!("/.stepguard/callback?{query}")
            .parse::<Uri>()
            .ok()?;
        let Query(params) = Query::<HashMap<String, String>>::try_from_uri(&uri).ok()?;
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(cookie) {
            headers.insert(header::COOKIE, value);
        }
        let call = || {
            crate::oidc::callback::callback(
                State(rp.state.clone()),
                Query(params.clone()),
                headers.clone(),
            )
        };
        let response = call().await;
        let status = response.status();
        let grant = rp.world.store.inner().find_grant(&opened.digest, NOW).await;
        let grant = grant.unwrap_or_else(|e| panic!("memory store failed: {e}"));
        if status != StatusCode::SEE_OTHER {
            assert!(
                grant.is_none(),
                "a refused callback ({status}) minted a grant"
            );
            assert!(
                status.is_client_error() || status.is_server_error(),
                "callback answered {status}"
            );
            return Some(status);
        }
        assert_eq!(
            params.get("state"),
            Some(&opened.id),
            "completed another state"
        );
        assert!(
            cookie.contains(&opened.cookie),
            "completed without the cookie"
        );
        let grant = grant.unwrap_or_else(|| panic!("completed without a grant"));
        assert_eq!(grant.subject, opened.subject);
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .unwrap_or_default();
        assert!(
            crate::challenge::safe_path(location).is_some(),
            "redirected to {location:?}"
        );
        let replayed = call().await.status();
        assert_ne!(
            replayed,
            StatusCode::SEE_OTHER,
            "a replayed callback completed"
        );
        Some(status)
    })
}

/// The relying party, built on first use.
async fn relying() -> &'static Relying {
    static RP: OnceLock<Relying> = OnceLock::new();
    if let Some(rp) = RP.get() {
        return rp;
    }
    let issuer = super::idp::start().await;
    let text = world::quickstart_text(|t| {
        t.replace(
            "  authorization_endpoint: http://127.0.0.1:9000/auth\n",
            &format!(
                "  oidc:\n    issuer: {issuer}\n    id_token_algorithms: [ES256]\n    \
                 same_subjects_as: [{}]\n",
                world::ISSUER
            ),
        )
    });
    let config = world::parse(&text);
    let world = World::build(config).await;
    let Some(oidc_config) = world.config.challenge.oidc.clone() else {
        panic!("fuzz setup: the callback config has no oidc section");
    };
    let oidc = Oidc::new(
        &world.config.challenge,
        &oidc_config,
        world.config.identity.leeway_secs,
        world.pipeline.challenger.endpoint(),
    )
    .unwrap_or_else(|e| panic!("fuzz setup: relying party: {e}"));
    oidc.discover()
        .await
        .unwrap_or_else(|e| panic!("fuzz setup: discovering the test IdP: {e}"));
    let state = CallbackState {
        oidc: Arc::new(oidc),
        completer: world.pipeline.completer.clone(),
        clock: world.pipeline.clock.clone(),
        challenge: world.config.challenge.clone(),
    };
    let alice = world::token("alice", "aal1", 3600)
        .unwrap_or_else(|| panic!("fuzz setup: minting alice's token"));
    RP.get_or_init(|| Relying {
        world,
        state,
        issuer,
        alice,
    })
}

/// alice's browser asks to export key `k1` and is challenged.
async fn open(rp: &Relying) -> Option<Opened> {
    let raw = RawRequest {
        method: "POST".into(),
        host: "api.example.com".into(),
        path: "/v1/keys/k1/export".into(),
        headers: [
            ("authorization".to_string(), format!("Bearer {}", rp.alice)),
            ("accept".to_string(), "text/html".to_string()),
        ]
        .into(),
        source_address: Some("10.0.0.7".into()),
        ..Default::default()
    };
    let decision = rp.world.pipeline.decide(raw).await;
    let Verdict::Challenge {
        challenge_id,
        set_cookie: Some(set_cookie),
        ..
    } = decision.verdict
    else {
        return None;
    };
    let cookie = set_cookie.split(';').next()?.to_string();
    let challenge = rp
        .world
        .pipeline
        .grants
        .challenge(&challenge_id, NOW)
        .await
        .ok()??;
    Some(Opened {
        id: challenge_id,
        cookie,
        nonce: challenge.nonce,
        digest: challenge.digest,
        subject: challenge.subject,
    })
}
