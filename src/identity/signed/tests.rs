//! `SignedBy`: a SET-style JWS (no `exp`) verified by the dev key set; every header and issuer
//! trick refused.

use serde_json::json;

use super::*;
use crate::identity::config::{JwksConfig, SigningAlgorithm};
use crate::identity::parse_algorithm;
use crate::testkit::tokens::KID;
use crate::testkit::{DIR, ISSUER, sign, sign_text};

async fn dev_party(algorithms: &[&str]) -> SignedBy {
    let config = IssuerConfig {
        issuer: ISSUER.into(),
        audiences: vec!["unused".into()],
        algorithms: algorithms
            .iter()
            .map(|a| SigningAlgorithm(parse_algorithm(a).unwrap()))
            .collect(),
        jwks: JwksConfig {
            file: Some(format!("{DIR}/dev-jwks.json").into()),
            url: None,
            min_refresh_secs: 30,
            ttl_secs: 600,
            max_stale_secs: 86_400,
            max_bytes: 256 << 10,
            timeout_ms: 5_000,
        },
    };
    let jwks = Jwks::load(config.jwks.source(std::time::Duration::from_secs(1)))
        .await
        .unwrap();
    SignedBy::new(&config, jwks)
}

fn set_header() -> Value {
    json!({"alg": "ES256", "kid": KID, "typ": "secevent+jwt"})
}

fn set_claims() -> Value {
    json!({"iss": ISSUER, "jti": "j1", "iat": 1_800_000_000, "aud": "https://rp.example",
           "events": {"https://schemas.openid.net/secevent/caep/event-type/session-revoked": {}}})
}

#[tokio::test]
async fn a_set_without_exp_verifies_and_keeps_its_typ() {
    let party = dev_party(&["ES256"]).await;
    let verified = party
        .verify(&sign(set_header(), set_claims()))
        .await
        .unwrap();
    assert_eq!(verified.typ.as_deref(), Some("secevent+jwt"));
    assert_eq!(verified.claims["jti"], "j1");
}

#[tokio::test]
async fn wrong_issuer_bad_signature_header_tricks_and_disallowed_algorithms_are_refused() {
    let party = dev_party(&["ES256"]).await;
    let mut other = set_claims();
    other["iss"] = json!("https://evil.example");
    let wrong_issuer = party.verify(&sign(set_header(), other)).await;
    assert!(
        matches!(
            wrong_issuer,
            Err(IdentityError::InvalidToken("wrong issuer"))
        ),
        "{wrong_issuer:?}"
    );

    let good = sign(set_header(), set_claims());
    let (message, _) = good.rsplit_once('.').unwrap();
    let forged = format!("{message}.{}", "A".repeat(86));
    assert!(party.verify(&forged).await.is_err());

    let mut crit = set_header();
    crit["crit"] = json!(["exp"]);
    assert!(party.verify(&sign(crit, set_claims())).await.is_err());

    let mut unknown_kid = set_header();
    unknown_kid["kid"] = json!("not-in-the-set");
    assert!(
        party
            .verify(&sign(unknown_kid, set_claims()))
            .await
            .is_err()
    );

    // A duplicate member name is refused before anything is trusted.
    let duplicate = r#"{"iss":"x","iss":"https://idp.stepguard.local","jti":"j"}"#;
    assert!(
        party
            .verify(&sign_text(&set_header().to_string(), duplicate))
            .await
            .is_err()
    );

    // The dev key is ES256: a party that allows only RS256 refuses it.
    let rs_only = dev_party(&["RS256"]).await;
    assert!(rs_only.verify(&good).await.is_err());

    assert!(
        party
            .verify(&"a".repeat(MAX_SIGNED_BYTES + 1))
            .await
            .is_err()
    );
}
