use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::routing::get;

use super::*;

struct Served {
    body: Mutex<String>,
    hits: AtomicUsize,
}

/// A JWKS endpoint on loopback whose content the test can change.
async fn serve(body: String) -> (String, Arc<Served>) {
    let served = Arc::new(Served {
        body: Mutex::new(body),
        hits: AtomicUsize::new(0),
    });
    let app = Router::new()
        .route(
            "/jwks",
            get(|State(s): State<Arc<Served>>| async move {
                s.hits.fetch_add(1, Ordering::SeqCst);
                s.body.lock().unwrap().clone()
            }),
        )
        .with_state(served.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, served)
}

fn dev_jwks() -> String {
    std::fs::read_to_string(format!("{}/dev-jwks.json", crate::testkit::DIR)).unwrap()
}

fn source(url: &str, min_refresh_secs: u64) -> JwksSource {
    JwksSource::Url {
        url: url.into(),
        min_refresh_secs,
        ttl_secs: 600,
    }
}

#[tokio::test]
async fn unknown_kid_refreshes_from_the_url() {
    let (url, served) = serve(r#"{"keys": []}"#.into()).await;
    let jwks = Jwks::load(source(&url, 0)).await.unwrap();
    assert!(
        jwks.key(Some("dev-es256-1"), Algorithm::ES256)
            .await
            .is_none()
    );
    *served.body.lock().unwrap() = dev_jwks();
    assert!(
        jwks.key(Some("dev-es256-1"), Algorithm::ES256)
            .await
            .is_some(),
        "rotated key picked up"
    );
    assert!(
        jwks.key(Some("dev-es256-1"), Algorithm::RS256)
            .await
            .is_none(),
        "key type must fit the alg"
    );
    assert_eq!(served.hits.load(Ordering::SeqCst), jwks.fetches() as usize);
}

#[tokio::test]
async fn refreshes_are_rate_limited() {
    let (url, served) = serve(dev_jwks()).await;
    let jwks = Jwks::load(source(&url, 3600)).await.unwrap();
    for i in 0..50 {
        assert!(
            jwks.key(Some(&format!("forged-{i}")), Algorithm::ES256)
                .await
                .is_none()
        );
    }
    assert_eq!(
        served.hits.load(Ordering::SeqCst),
        1,
        "only the initial fetch"
    );
    assert!(
        jwks.key(Some("dev-es256-1"), Algorithm::ES256)
            .await
            .is_some()
    );
}

#[tokio::test]
async fn an_unreachable_url_starts_empty_and_a_bad_file_fails() {
    let jwks = Jwks::load(source("http://127.0.0.1:9/jwks", 0))
        .await
        .unwrap();
    assert!(
        jwks.key(Some("dev-es256-1"), Algorithm::ES256)
            .await
            .is_none()
    );
    assert!(
        Jwks::load(JwksSource::File("/nonexistent/jwks.json".into()))
            .await
            .is_err()
    );
}

#[test]
fn symmetric_and_encryption_keys_are_skipped() {
    let set = r#"{"keys": [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {"kty": "EC", "crv": "P-256", "use": "enc", "kid": "enc",
         "x": "GFACGs058wH-VHXADl5wjg7m2WLkaxlYkIEXp0t3ZMY", "y": "yki7d69B6v7rRpD8v7yscw80NfEaWw69-3CnfFm0b44"},
        {"kty": "EC", "crv": "P-256", "kid": "sig", "alg": "none",
         "x": "GFACGs058wH-VHXADl5wjg7m2WLkaxlYkIEXp0t3ZMY", "y": "yki7d69B6v7rRpD8v7yscw80NfEaWw69-3CnfFm0b44"}
    ]}"#;
    assert!(parse(set).unwrap().is_empty());
    assert!(parse("[]").is_err());
}
