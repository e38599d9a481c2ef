use super::*;

#[test]
fn fingerprints_do_not_carry_the_value() {
    assert_ne!(fingerprint("secret"), "secret");
    assert_eq!(fingerprint("secret"), fingerprint("secret"));
    assert_eq!(fingerprint("secret").len(), 12);
}

const NOW: i64 = 1_800_000_000;
const IDP: &str = crate::testkit::ISSUER;

/// A relying party for the dev IdP whose keys (the dev JWKS) are already known.
async fn relying_party() -> Oidc {
    let config = crate::testkit::config(|t| {
        t.replace(
            "  authorization_endpoint: http://127.0.0.1:9000/auth\n",
            &format!("  oidc:\n    issuer: {IDP}\n    id_token_algorithms: [ES256]\n"),
        )
    });
    let oidc = Oidc::new(
        &config.challenge,
        config.challenge.oidc.as_ref().unwrap(),
        config.identity.leeway_secs,
        Arc::default(),
    )
    .unwrap();
    let jwks = Jwks::load(config.identity.issuers[0].jwks.source(config.jwks_wait()))
        .await
        .unwrap();
    oidc.jwks.store(Some(Arc::new(jwks)));
    oidc
}

fn id_token_claims(extra: &str) -> String {
    format!(
        r#"{{"iss":"{IDP}","aud":"stepguard-demo","sub":"alice","exp":{},"iat":{},"nonce":"n-1","auth_time":{},"acr":"aal3","sid":"s-1"{extra}}}"#,
        NOW + 300,
        NOW - 5,
        NOW - 5
    )
}

#[tokio::test]
async fn an_id_token_with_a_duplicate_member_is_rejected() {
    let oidc = relying_party().await;
    let header = crate::testkit::header().to_string();
    let good = crate::testkit::sign_text(&header, &id_token_claims(""));
    let verified = oidc.verify_id_token(&good, "n-1", NOW).await.unwrap();
    assert_eq!(
        (verified.subject.as_str(), verified.sid.as_deref()),
        ("alice", Some("s-1"))
    );
    for (header, claims) in [
        (header.clone(), id_token_claims(r#","sub":"admin""#)),
        (header.clone(), id_token_claims(r#","acr":"aal1""#)),
        (
            header.clone(),
            id_token_claims(r#","address":{"country":"FR","country":"US"}"#),
        ),
        (
            r#"{"alg":"ES256","kid":"dev-es256-1","kid":"other"}"#.to_string(),
            id_token_claims(""),
        ),
    ] {
        let token = crate::testkit::sign_text(&header, &claims);
        assert_eq!(
            oidc.verify_id_token(&token, "n-1", NOW).await,
            Err(OidcError::IdToken("duplicate JSON member name".into())),
            "{header} {claims}"
        );
    }
}

/// Found with the `jwt` fuzz harness's bug (the same expiry arithmetic as the access token's,
/// tests/fuzz-corpus/jwt/crash-*): an ID token `exp` of i64::MAX overflowed the expiry
/// check (a panic in debug builds).
#[tokio::test]
async fn an_id_token_expiring_at_the_largest_integer_does_not_overflow() {
    let oidc = relying_party().await;
    let header = crate::testkit::header().to_string();
    let claims = format!(
        r#"{{"iss":"{IDP}","aud":"stepguard-demo","sub":"alice","exp":{},"iat":{},"nonce":"n-1"}}"#,
        i64::MAX,
        NOW - 5
    );
    let token = crate::testkit::sign_text(&header, &claims);
    let verified = oidc.verify_id_token(&token, "n-1", NOW).await;
    assert_eq!(verified.map(|v| v.subject), Ok("alice".to_string()));
}
