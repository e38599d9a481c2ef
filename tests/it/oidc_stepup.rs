//! Completing a browser step-up end to end, with a real OpenID Provider (`oidc-provider`), real
//! Envoy (fronting the upstream and stepguard's callback) and real Redis: the sensitive POST is
//! redirected to the IdP with the right parameters, the user signs in at the requested level,
//! the callback verifies what the IdP returned and mints a grant for exactly that transaction,
//! the browser goes back, and the retried transaction reaches the upstream once. Then each way
//! a completion must fail, failing with no grant.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::stack::header;
use crate::support::stepup::{CLIENT_ID, StepUpStack, query_param};
use crate::support::tokens::{now, token};

/// A step-up started by `browser` for `key`: the 302's Location.
async fn start_step_up(stack: &StepUpStack, browser: &reqwest::Client, key: &str) -> String {
    let r = stack
        .export(browser, key, &token("alice", "aal1", 30))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    assert!(
        header(&r, "set-cookie").starts_with("__Host-stepguard-"),
        "the browser is bound by a cookie: {:?}",
        header(&r, "set-cookie")
    );
    header(&r, "location")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_step_up_round_trip_approves_the_transaction_once() {
    let stack = StepUpStack::start(false).await;
    let browser = stack.browser();
    let location = start_step_up(&stack, &browser, "K1").await;

    // The authorization request carries what the transaction needs.
    assert!(location.starts_with(&stack.idp.url("/")), "{location}");
    for (name, want) in [
        ("client_id", Some(CLIENT_ID)),
        ("response_type", Some("code")),
        ("acr_values", Some("aal3")),
        ("max_age", Some("0")),
        ("prompt", Some("login")),
        ("code_challenge_method", Some("S256")),
    ] {
        assert_eq!(query_param(&location, name).as_deref(), want, "{name}");
    }
    for name in ["state", "nonce", "code_challenge", "redirect_uri"] {
        assert!(query_param(&location, name).is_some(), "{name}");
    }

    stack
        .idp
        .set_next_login("alice", "aal3", &["pwd", "hwk"], 0)
        .await;
    let callback = stack.sign_in(&browser, &location).await;
    assert_eq!(
        query_param(&callback, "state"),
        query_param(&location, "state")
    );
    assert_eq!(
        query_param(&callback, "iss").as_deref(),
        Some(stack.idp.issuer())
    );
    let asked = stack.idp.last_authorization().await;
    assert_eq!(asked["acr_values"], "aal3");
    // RFC 9396: the IdP is told what is being approved.
    let details = &asked["authorization_details"];
    assert_eq!(details[0]["type"], "stepguard_transaction");
    assert_eq!(details[0]["actions"][0], "keys.export");
    assert_eq!(details[0]["fields"]["path.key"], "K1");

    let r = browser.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    assert_eq!(header(&r, "location"), "/");
    assert!(
        header(&r, "set-cookie").contains("Max-Age=0"),
        "cookie cleared"
    );
    assert_eq!(header(&r, "referrer-policy"), "no-referrer");

    // Recorded before the 303: the completion, with what the ID token showed.
    let state = query_param(&location, "state").unwrap();
    let records = stack.evidence();
    let completed: Vec<_> = records
        .iter()
        .filter(|r| r["kind"] == "completed" && r["result"]["challenge_id"] == state.as_str())
        .collect();
    assert_eq!(completed.len(), 1, "{records:#?}");
    let by = &completed[0]["result"]["satisfied_by"];
    assert_eq!(
        (by["method"].as_str(), by["acr"].as_str()),
        (Some("oidc"), Some("aal3"))
    );
    assert_eq!(by["amr"], serde_json::json!(["pwd", "hwk"]));
    assert!(by["auth_time"].as_i64().unwrap() > 0);
    let grant_id = completed[0]["result"]["grant_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(by["grant_id"], grant_id.as_str());

    // The same callback again: the challenge is spent.
    let again = browser.get(&callback).send().await.unwrap();
    assert_eq!(again.status(), 400);
    assert!(again.text().await.unwrap().contains("unknown_state"));

    // The retried transaction reaches the upstream exactly once.
    let before = stack.upstream.hits();
    let token = token("alice", "aal1", 30);
    let r = stack.export(&browser, "K1", &token).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    assert_eq!(stack.upstream.hits(), before + 1);
    let consumed: Vec<_> = stack
        .evidence()
        .into_iter()
        .filter(|r| r["event"] == "grant_consumed")
        .collect();
    assert_eq!(consumed.len(), 1);
    assert_eq!(consumed[0]["result"]["grant_id"], grant_id.as_str());
    assert_eq!(consumed[0]["result"]["satisfied_by"]["method"], "oidc");
    let r = stack.export(&browser, "K1", &token).send().await.unwrap();
    assert_eq!(r.status(), 302, "single-use: a new step-up is needed");
    // And a grant for K1 never approved K2.
    let r = stack.export(&browser, "K2", &token).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(stack.upstream.hits(), before + 1);
}

/// Runs a step-up for `key` whose sign-in is `login`, then the callback; returns its status
/// and body, and checks no grant was minted (the transaction is still challenged).
async fn refused_completion(
    stack: &StepUpStack,
    key: &str,
    login: (&str, &str, i64),
) -> (u16, String) {
    let browser = stack.browser();
    let location = start_step_up(stack, &browser, key).await;
    let (sub, acr, offset) = login;
    stack.idp.set_next_login(sub, acr, &["pwd"], offset).await;
    let callback = stack.sign_in(&browser, &location).await;
    let r = browser.get(&callback).send().await.unwrap();
    let status = r.status().as_u16();
    assert_eq!(header(&r, "cache-control"), "no-store");
    assert!(header(&r, "content-type").starts_with("text/html"));
    let body = r.text().await.unwrap();
    let retry = stack
        .export(&browser, key, &token("alice", "aal1", 30))
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 302, "no grant after a refused completion");
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_idp_returns_is_verified_not_what_was_asked() {
    let stack = StepUpStack::start(true).await;
    let hits = stack.upstream.hits();

    let (status, body) = refused_completion(&stack, "K-weak", ("alice", "aal2", 0)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("acr_insufficient"), "{body}");

    let (status, body) = refused_completion(&stack, "K-bob", ("bob", "aal3", 0)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("other_subject"), "{body}");

    let (status, body) = refused_completion(&stack, "K-stale", ("alice", "aal3", -3600)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("auth_time_before_challenge"), "{body}");

    assert_eq!(stack.upstream.hits(), hits, "nothing reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_refuses_other_browsers_forged_states_other_issuers_and_idp_errors() {
    let stack = StepUpStack::start(false).await;
    let browser = stack.browser();
    let location = start_step_up(&stack, &browser, "K-bind").await;
    stack.idp.set_next_login("alice", "aal3", &["hwk"], 0).await;
    let callback = stack.sign_in(&browser, &location).await;

    // Another browser (no cookie) presenting the stolen callback URL.
    let thief = stack.browser();
    let r = thief.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("browser_mismatch"));

    // A forged or unknown state.
    let forged = callback.replace(
        &query_param(&callback, "state").unwrap(),
        "forged-state-value",
    );
    let r = browser.get(&forged).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("unknown_state"));

    // Another issuer in the RFC 9207 `iss` parameter.
    let wrong_iss = callback.replace(
        &form_urlencoded::byte_serialize(stack.idp.issuer().as_bytes()).collect::<String>(),
        "https%3A%2F%2Fevil.example",
    );
    assert_ne!(wrong_iss, callback);
    let r = browser.get(&wrong_iss).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("issuer_mismatch"));

    // The IdP reporting an error.
    let state = query_param(&callback, "state").unwrap();
    let r = browser
        .get(format!(
            "{}/.stepguard/callback?error=access_denied&state={state}",
            stack.envoy.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("idp_error"));

    // None of that spent the challenge or minted a grant: the rightful browser completes it.
    let r = browser.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_code_is_refused_and_mints_nothing() {
    let stack = StepUpStack::start(false).await;
    let browser = stack.browser();
    let location = start_step_up(&stack, &browser, "K-replay").await;
    // A sign-in too weak for the transaction: the code is redeemed, the completion refused,
    // the challenge stays open.
    stack.idp.set_next_login("alice", "aal2", &["pwd"], 0).await;
    let callback = stack.sign_in(&browser, &location).await;
    let r = browser.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 403);
    // The same callback again: the state is still open, but the IdP refuses the used code.
    let r = browser.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("code_refused"));
    let r = stack
        .export(&browser, "K-replay", &token("alice", "aal1", 30))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "no grant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_replayed_after_a_successful_completion_mints_nothing() {
    let stack = StepUpStack::start(false).await;
    let browser = stack.browser();
    let location = start_step_up(&stack, &browser, "K-replay-ok").await;
    let (callback, r) = stack
        .complete_in_browser(&browser, &location, "alice", "aal3")
        .await;
    assert_eq!(r.status(), 303, "the first completion mints the grant");
    // The same callback (same state, same code) again, from the same browser: refused.
    let r = browser.get(&callback).send().await.unwrap();
    assert!(
        r.status().is_client_error(),
        "a replayed callback: {}",
        r.status()
    );
    // Exactly one grant exists: one export passes, the next is challenged again.
    let weak = token("alice", "aal1", 30);
    let hits = stack.upstream.hits();
    let r = stack
        .export(&browser, "K-replay-ok", &weak)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = stack
        .export(&browser, "K-replay-ok", &weak)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "the replay minted a second grant");
    assert_eq!(stack.upstream.hits(), hits + 1);
}

/// An API client's `POST /v1/keys/{key}/export` (no HTML: a step-up is an RFC 9470 401).
async fn api_export(stack: &StepUpStack, key: &str, bearer: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(stack.envoy.url(&format!("/v1/keys/{key}/export")))
        .header("content-type", "application/json")
        .bearer_auth(bearer)
        .body("{}")
        .send()
        .await
        .unwrap()
}

/// alice's token at `acr`, authenticated at `auth_time`.
fn token_at(acr: &str, auth_time: i64) -> String {
    crate::support::tokens::signed_in_at("alice", acr, auth_time)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rfc9470_retry_approves_its_own_transaction_once_and_no_other() {
    let stack = StepUpStack::start(false).await;
    let hits = stack.upstream.hits();
    let r = api_export(&stack, "K1", &token("alice", "aal1", 30)).await;
    assert_eq!(r.status(), 401);
    let www = header(&r, "www-authenticate");
    assert!(
        www.contains(r#"error="insufficient_user_authentication""#)
            && www.contains(r#"acr_values="aal3""#)
            && www.contains(r#"max_age="0""#),
        "{www}"
    );

    // A stronger token from a sign-in before the challenge does not answer it.
    let r = api_export(&stack, "K1", &token_at("aal3", now() - 120)).await;
    assert_eq!(
        r.status(),
        401,
        "an earlier authentication never satisfies the challenge"
    );

    // The stepped-up token: approved once.
    let first = now();
    let stepped_up = token_at("aal3", first);
    let r = api_export(&stack, "K1", &stepped_up).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    assert_eq!(stack.upstream.hits(), hits + 1);
    let r = api_export(&stack, "K1", &stepped_up).await;
    assert_eq!(r.status(), 401, "the grant was single-use");

    // The same token on another transaction, however soon after: challenged, and its retry too.
    let r = api_export(&stack, "K2", &stepped_up).await;
    assert_eq!(r.status(), 401);
    let r = api_export(&stack, "K2", &stepped_up).await;
    assert_eq!(
        r.status(),
        401,
        "one authentication completes one challenge"
    );
    // A new sign-in for K2 answers K2's challenge.
    let second = if now() - 1 != first {
        now() - 1
    } else {
        now() - 2
    };
    let r = api_export(&stack, "K2", &token_at("aal3", second)).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    assert_eq!(stack.upstream.hits(), hits + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_only_ever_returns_to_a_path_on_the_challenged_origin() {
    let stack = StepUpStack::start(false).await;
    let base = stack.envoy.base_url();
    let corpus = [
        (format!("{base}//evil.example/x"), "/"),
        (format!("{base}/\\evil.example"), "/"),
        (format!("{base}@evil.example/x"), "/"),
        (format!("{base}/%2F%2Fevil.example"), "/"),
        ("https://evil.example/x".to_string(), "/"),
        ("javascript:alert(1)".to_string(), "/"),
        (format!("{base}/keys/K?tab=1"), "/keys/K?tab=1"),
    ];
    let mut signed_in_at = 0;
    for (i, (referer, want)) in corpus.iter().enumerate() {
        // One sign-in completes one challenge: each of these is its own (IdP `auth_time` is in
        // seconds, and these ID tokens carry no `sid`).
        while now() <= signed_in_at {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let browser = stack.browser();
        let r = stack
            .export(
                &browser,
                &format!("K-redirect-{i}"),
                &token("alice", "aal1", 30),
            )
            .header("referer", referer.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "{referer}");
        let location = header(&r, "location");
        stack.idp.set_next_login("alice", "aal3", &["hwk"], 0).await;
        let callback = stack.sign_in(&browser, &location).await;
        signed_in_at = now();
        let r = browser.get(&callback).send().await.unwrap();
        assert_eq!(r.status(), 303, "{referer}");
        assert_eq!(header(&r, "location"), *want, "{referer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_authorization_requests_keep_the_request_off_the_browser() {
    let stack = StepUpStack::start_with(false, true).await;
    let browser = stack.browser();
    let location = start_step_up(&stack, &browser, "K-par").await;
    assert!(
        location.starts_with("/.stepguard/authorize?state="),
        "the browser goes to stepguard's start path: {location}"
    );
    assert!(query_param(&location, "acr_values").is_none());
    // Another browser cannot use the start link.
    let r = stack
        .browser()
        .get(stack.envoy.url(&location))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = browser
        .get(stack.envoy.url(&location))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    let to_idp = header(&r, "location");
    assert!(query_param(&to_idp, "request_uri").is_some(), "{to_idp}");
    assert_eq!(
        query_param(&to_idp, "client_id").as_deref(),
        Some(CLIENT_ID)
    );
    assert!(query_param(&to_idp, "acr_values").is_none(), "{to_idp}");

    stack.idp.set_next_login("alice", "aal3", &["hwk"], 0).await;
    let callback = stack.sign_in(&browser, &to_idp).await;
    let asked = stack.idp.last_authorization().await;
    assert_eq!(asked["pushed"], true, "{asked}");
    assert_eq!(asked["acr_values"], "aal3");
    assert_eq!(
        asked["authorization_details"][0]["fields"]["path.key"],
        "K-par"
    );
    let r = browser.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    let r = stack
        .export(&browser, "K-par", &token("alice", "aal1", 30))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
