//! Through the app: a transmitter discovered at build, its stream created once stepguard
//! serves, the verification SET pushed to stepguard's own HTTP port and matched; stepguard's own
//! metadata and key set served on that port; a transmitter that cannot be discovered refusing
//! the build.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::TcpListener;

use super::transmitter::{AUD, TOKEN, Transmitter};
use super::{PUSH_TOKEN, token_file};
use crate::app::{App, AppError};
use crate::clock::ManualClock;
use crate::config::Config;
use crate::ssf::stream::EVENTS;
use crate::ssf::verification;
use crate::testkit::config::{DIR, Standalone};

const NOW: i64 = 1_800_000_000;

/// The quickstart without evidence, receiving from `issuer` with stream management, pushing to
/// `http`, and sending as `http`'s `/sg` issuer.
fn config(issuer: &str, http: &str) -> Config {
    let text = Standalone {
        no_evidence: true,
        ..Standalone::default()
    }
    .render();
    let section = format!(
        "shared_signals:\n  transmitter:\n    issuer: {issuer}\n    management: \
         {{bearer_token_file: {}, recheck_secs: 0}}\n  audiences: [{AUD}]\n  push: {{path: \
         /ssf/events, endpoint_url: 'http://{http}/ssf/events', bearer_token_file: {}}}\n  \
         send:\n    issuer: 'http://{http}/sg'\n    signing_key_file: \
         {DIR}/dev-signing-key.DEV-ONLY.pem\n    receivers: [{{url: 'http://127.0.0.1:9/events', \
         audience: x}}]\n",
        token_file(TOKEN).display(),
        token_file(PUSH_TOKEN).display(),
    );
    Config::parse(&format!("{text}\n{section}"), Path::new(DIR)).unwrap()
}

async fn get(url: &str) -> Value {
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn the_app_discovers_manages_and_verifies_its_stream_and_publishes_its_own_metadata() {
    let t = Transmitter::start("", &EVENTS).await;
    t.held().iss = t.issuer();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = http.local_addr().unwrap().to_string();
    let config = config(&t.issuer(), &addr);
    let app = App::build_with_clock(&config, Arc::new(ManualClock::new(NOW)))
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(app.serve(grpc, http, async {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.held().pushed.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The stream was created for stepguard's push endpoint, and the verification SET the
    // transmitter pushed there was accepted and matched.
    assert_eq!(t.held().pushed, vec![202]);
    let stream = t.held().streams[0].clone();
    assert_eq!(
        stream["delivery"]["endpoint_url"],
        format!("http://{addr}/ssf/events")
    );
    assert!(verification::verified(
        stream["stream_id"].as_str().unwrap()
    ));

    let metadata = get(&format!("http://{addr}/.well-known/ssf-configuration/sg")).await;
    assert_eq!(metadata["issuer"], format!("http://{addr}/sg"));
    let jwks = get(metadata["jwks_uri"].as_str().unwrap()).await;
    assert_eq!(jwks["keys"][0]["alg"], "ES256");

    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_transmitter_that_cannot_be_discovered_refuses_the_build() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}/t1", closed.local_addr().unwrap());
    drop(closed);
    let config = config(&issuer, "127.0.0.1:9");
    let refused = App::build_with_clock(&config, Arc::new(ManualClock::new(NOW))).await;
    match refused {
        Err(AppError::SharedSignals(message)) => {
            assert!(
                message.contains("/.well-known/ssf-configuration/t1"),
                "{message}"
            )
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("built without its transmitter"),
    }
}
