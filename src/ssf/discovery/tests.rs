//! Discovery against a transmitter on loopback: the well-known location with the path
//! insertion rule, the key set taken from `jwks_uri`; a wrong issuer, an oversized document, a
//! redirect, an unsupported delivery method and a plain-http endpoint each refused; an explicit
//! key set needing no discovery.

use serde_json::json;

use super::*;
use crate::ssf::stream::tests::token_file;
use crate::ssf::stream::tests::transmitter::{AUD, Transmitter};

/// The section receiving from `issuer` by `delivery`, with `extra` transmitter lines.
fn section(issuer: &str, extra: &str, delivery: &str) -> SharedSignalsConfig {
    let yaml = format!("transmitter:\n  issuer: {issuer}\n{extra}audiences: [{AUD}]\n{delivery}");
    let config: SharedSignalsConfig = yaml_serde::from_str(&yaml).unwrap();
    config.validate().unwrap();
    config
}

fn transmitter(config: &SharedSignalsConfig) -> &TransmitterConfig {
    config.transmitter.as_ref().unwrap()
}

#[test]
fn the_well_known_location_inserts_before_the_issuers_path() {
    assert_eq!(
        well_known("https://tr.example.com").unwrap(),
        "https://tr.example.com/.well-known/ssf-configuration"
    );
    assert_eq!(
        well_known("https://tr.example.com/").unwrap(),
        "https://tr.example.com/.well-known/ssf-configuration"
    );
    assert_eq!(
        well_known("https://tr.example.com/issuer1/").unwrap(),
        "https://tr.example.com/.well-known/ssf-configuration/issuer1"
    );
    assert_eq!(
        well_known("http://127.0.0.1:8080/a/b").unwrap(),
        "http://127.0.0.1:8080/.well-known/ssf-configuration/a/b"
    );
    assert!(well_known("not a url").is_err());
}

#[tokio::test]
async fn the_metadata_is_read_and_its_jwks_uri_becomes_the_key_set() {
    let t = Transmitter::start("unused", &[]).await;
    let config = section(&t.issuer(), "", "push: {}\n");
    let metadata = discover(transmitter(&config), &config)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(metadata.issuer, t.issuer());
    assert_eq!(
        metadata.configuration_endpoint,
        Some(format!("{}/ssf/stream", t.base))
    );
    let keyed = keyed(transmitter(&config), Some(&metadata));
    assert_eq!(keyed.jwks.url, Some(format!("{}/jwks", t.base)));
    // The discovered key set is the one SETs are verified with.
    let jwks = crate::identity::Jwks::load(keyed.jwks.source(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(jwks.fetches(), 1);
    let kid = crate::testkit::tokens::KID;
    let alg = jsonwebtoken::Algorithm::ES256;
    assert!(jwks.key(Some(kid), alg).await.is_ok());
}

#[tokio::test]
async fn an_explicit_key_set_keeps_working_without_discovery() {
    // The issuer answers nothing: no discovery is attempted.
    let config = section(
        "https://unreachable.invalid",
        "  jwks: {url: https://unreachable.invalid/jwks}\n",
        "push: {}\n",
    );
    assert_eq!(discover(transmitter(&config), &config).await.unwrap(), None);
    let keyed = keyed(transmitter(&config), None);
    assert_eq!(
        keyed.jwks.url.as_deref(),
        Some("https://unreachable.invalid/jwks")
    );
}

#[tokio::test]
async fn a_wrong_issuer_is_refused() {
    let t = Transmitter::start("unused", &[]).await;
    t.held().metadata["issuer"] = json!("https://impostor.example");
    let config = section(&t.issuer(), "", "push: {}\n");
    let refused = discover(transmitter(&config), &config).await.unwrap_err();
    assert!(
        matches!(refused, DiscoveryError::Refused { .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains("impostor"), "{refused}");
}

#[tokio::test]
async fn an_oversized_document_and_a_redirect_are_refused() {
    let t = Transmitter::start("unused", &[]).await;
    let big = section(
        &t.issuer(),
        &format!("  metadata_url: {}/big\n", t.base),
        "push: {}\n",
    );
    let refused = discover(transmitter(&big), &big).await.unwrap_err();
    assert!(refused.to_string().contains("body over"), "{refused}");
    let moved = section(
        &t.issuer(),
        &format!("  metadata_url: {}/moved\n", t.base),
        "push: {}\n",
    );
    let refused = discover(transmitter(&moved), &moved).await.unwrap_err();
    assert!(
        refused.to_string().contains("redirects are not followed"),
        "{refused}"
    );
    // The document behind the redirect is fine: it was the redirect that was refused.
    let direct = section(&t.issuer(), "", "push: {}\n");
    assert!(discover(transmitter(&direct), &direct).await.is_ok());
}

#[tokio::test]
async fn a_delivery_method_the_transmitter_does_not_offer_is_refused() {
    let t = Transmitter::start("unused", &[]).await;
    t.held().metadata["delivery_methods_supported"] = json!([POLL]);
    let config = section(&t.issuer(), "", "push: {}\n");
    let refused = discover(transmitter(&config), &config)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("does not deliver by push"), "{refused}");
    let polling = section(
        &t.issuer(),
        "",
        &format!("poll: {{endpoint: {}/poll}}\n", t.base),
    );
    assert!(discover(transmitter(&polling), &polling).await.is_ok());
    // The RISC drafts' name for push is push.
    t.held().metadata["delivery_methods_supported"] = json!([LEGACY_PUSH]);
    assert!(discover(transmitter(&config), &config).await.is_ok());
}

#[tokio::test]
async fn endpoints_over_plain_http_elsewhere_than_loopback_are_refused() {
    let t = Transmitter::start("unused", &[]).await;
    t.held().metadata["configuration_endpoint"] = json!("http://transmitter.example/stream");
    let config = section(&t.issuer(), "", "push: {}\n");
    let refused = discover(transmitter(&config), &config)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("configuration_endpoint"), "{refused}");
}

#[tokio::test]
async fn without_jwks_uri_or_a_configured_key_set_discovery_fails() {
    let t = Transmitter::start("unused", &[]).await;
    t.held()
        .metadata
        .as_object_mut()
        .unwrap()
        .remove("jwks_uri");
    let config = section(&t.issuer(), "", "push: {}\n");
    let refused = discover(transmitter(&config), &config)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("no jwks_uri"), "{refused}");
    // Stream management alone discovers, and keeps the configured key set.
    let managed = section(
        &t.issuer(),
        &format!(
            "  jwks: {{file: /keys.json}}\n  management: {{bearer_token_file: {}}}\n",
            token_file("t").display()
        ),
        "poll: {endpoint: http://127.0.0.1:9/poll}\n",
    );
    let metadata = discover(transmitter(&managed), &managed).await.unwrap();
    assert!(metadata.is_some());
    assert_eq!(
        keyed(transmitter(&managed), metadata.as_ref()).jwks.url,
        None
    );
}
