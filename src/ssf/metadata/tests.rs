//! stepguard's own metadata: the document for an https issuer (with and without a path), none
//! for an issuer that is not one, and both documents served over HTTP on loopback, the
//! metadata read back by stepguard's own discovery.

use serde_json::json;

use super::*;

fn send(issuer: &str) -> SendConfig {
    let yaml = format!(
        "issuer: {issuer}\nsigning_key_file: key.pem\nreceivers:\n  - {{url: https://idp.example/ssf, audience: idp}}\n"
    );
    let send: SendConfig = yaml_serde::from_str(&yaml).unwrap();
    send.validate().unwrap();
    send
}

#[test]
fn the_metadata_names_the_issuer_its_key_set_and_push() {
    let (path, metadata) = document(&send("https://stepguard.example")).unwrap();
    assert_eq!(path, "/.well-known/ssf-configuration");
    assert_eq!(
        metadata,
        json!({
            "spec_version": "1_0",
            "issuer": "https://stepguard.example",
            "jwks_uri": "https://stepguard.example/ssf/jwks.json",
            "delivery_methods_supported": ["urn:ietf:rfc:8935"],
        })
    );
    let (path, metadata) = document(&send("https://gw.example:8443/tenant-a/")).unwrap();
    assert_eq!(path, "/.well-known/ssf-configuration/tenant-a");
    assert_eq!(
        metadata["jwks_uri"],
        json!("https://gw.example:8443/ssf/jwks.json")
    );
    assert_eq!(document(&send("stepguard")), None);
    assert_eq!(document(&send("http://stepguard.example")), None);
}

#[tokio::test]
async fn the_key_set_and_the_metadata_are_served_and_discoverable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let issuer = format!("{base}/sg");
    let jwks = json!({"keys": []});
    let published = Published::new(&send(&issuer), jwks.clone());
    tokio::spawn(async move {
        axum::serve(listener, router::<()>(published))
            .await
            .unwrap()
    });
    let metadata = crate::ssf::discovery::fetch(
        &crate::ssf::discovery::well_known(&issuer).unwrap(),
        &issuer,
    )
    .await
    .unwrap();
    assert_eq!(metadata.jwks_uri, Some(format!("{base}/ssf/jwks.json")));
    assert_eq!(metadata.delivery_methods_supported, [PUSH]);
    let served = reqwest::get(metadata.jwks_uri.unwrap())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let served: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert_eq!(served, jwks);
}
