use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::identity::config::JwksUrl;

const KID: &str = "dev-es256-1";

/// What the loopback JWKS endpoint answers.
#[derive(Clone)]
enum Answer {
    Body(String),
    Status(StatusCode),
    /// The body, only after this long.
    Slow(Duration, String),
    /// A 302 to this URL.
    Redirect(String),
}

struct Served {
    answer: Mutex<Answer>,
    hits: AtomicUsize,
}

impl Served {
    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn answer(State(s): State<Arc<Served>>) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let answer = s.answer.lock().unwrap().clone();
    match answer {
        Answer::Body(body) => body.into_response(),
        Answer::Status(status) => status.into_response(),
        Answer::Slow(delay, body) => {
            tokio::time::sleep(delay).await;
            body.into_response()
        }
        Answer::Redirect(to) => (StatusCode::FOUND, [(header::LOCATION, to)]).into_response(),
    }
}

/// A JWKS endpoint on loopback whose answer the test can change.
async fn serve(body: String) -> (String, Arc<Served>) {
    let served = Arc::new(Served {
        answer: Mutex::new(Answer::Body(body)),
        hits: AtomicUsize::new(0),
    });
    let app = Router::new()
        .route("/jwks", get(answer))
        .with_state(served.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, served)
}

fn dev_jwks() -> String {
    std::fs::read_to_string(format!("{}/dev-jwks.json", crate::testkit::DIR)).unwrap()
}

/// A JWKS with no keys, padded with a member to exactly `len` bytes.
fn empty_jwks_of(len: usize) -> String {
    let bare = r#"{"keys": [], "pad": ""}"#;
    format!(
        r#"{{"keys": [], "pad": "{}"}}"#,
        "x".repeat(len - bare.len())
    )
}

fn url_source(url: &str, edit: impl FnOnce(&mut JwksUrl)) -> JwksSource {
    let mut source = JwksUrl::new(url);
    edit(&mut source);
    JwksSource::Url(source)
}

fn source(url: &str, min_refresh_secs: u64) -> JwksSource {
    url_source(url, |s| {
        s.min_refresh = Duration::from_secs(min_refresh_secs)
    })
}

async fn kid_verifies(jwks: &Jwks, kid: &str) -> bool {
    jwks.key(Some(kid), Algorithm::ES256).await.is_ok()
}

#[tokio::test]
async fn unknown_kid_refreshes_from_the_url() {
    let (url, served) = serve(r#"{"keys": []}"#.into()).await;
    let jwks = Jwks::load(source(&url, 0)).await.unwrap();
    assert!(!kid_verifies(&jwks, KID).await);
    served.set(Answer::Body(dev_jwks()));
    assert!(kid_verifies(&jwks, KID).await, "rotated key picked up");
    assert!(
        jwks.key(Some(KID), Algorithm::RS256).await.is_err(),
        "key type must fit the alg"
    );
    assert_eq!(served.hits(), jwks.fetches() as usize);
}

#[tokio::test]
async fn refreshes_are_rate_limited() {
    let (url, served) = serve(dev_jwks()).await;
    let jwks = Jwks::load(source(&url, 3600)).await.unwrap();
    for i in 0..50 {
        assert!(!kid_verifies(&jwks, &format!("forged-{i}")).await);
    }
    assert_eq!(served.hits(), 1, "only the initial fetch");
    assert!(kid_verifies(&jwks, KID).await);
}

#[tokio::test]
async fn an_unreachable_url_starts_empty_and_a_bad_file_fails() {
    let jwks = Jwks::load(source("http://127.0.0.1:9/jwks", 0))
        .await
        .unwrap();
    assert!(!kid_verifies(&jwks, KID).await);
    assert!(
        Jwks::load(JwksSource::File("/nonexistent/jwks.json".into()))
            .await
            .is_err()
    );
}

/// Loads the dev keys, makes the endpoint answer `fault`, forces a refresh and checks the
/// cached `kid` still verifies after it.
async fn cached_kid_survives(fault: Answer) {
    let (url, served) = serve(dev_jwks()).await;
    let timeout = Duration::from_millis(300);
    let jwks = Jwks::load(url_source(&url, |s| s.timeout = timeout))
        .await
        .unwrap();
    served.set(fault);
    jwks.refresh(true).await;
    assert_eq!(served.hits(), 2, "the refresh reached the endpoint");
    assert!(kid_verifies(&jwks, KID).await, "cached kid verifies");
}

#[tokio::test]
async fn a_cached_kid_keeps_verifying_while_the_url_answers_500() {
    cached_kid_survives(Answer::Status(StatusCode::INTERNAL_SERVER_ERROR)).await;
}

#[tokio::test]
async fn a_cached_kid_keeps_verifying_while_the_url_hangs_past_the_timeout() {
    // Served in full (an empty set) after 30 s: stored only if the 300 ms timeout did not hold.
    let hang = Answer::Slow(Duration::from_secs(30), r#"{"keys": []}"#.into());
    let refreshed = tokio::time::timeout(Duration::from_secs(10), cached_kid_survives(hang));
    refreshed.await.expect("the fetch timed out");
}

#[tokio::test]
async fn a_cached_kid_keeps_verifying_while_the_url_returns_bad_json() {
    cached_kid_survives(Answer::Body(r#"{"keys": [}"#.into())).await;
    cached_kid_survives(Answer::Body(r#"{"keys": "none"}"#.into())).await;
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_the_cached_kid_keeps_verifying() {
    let (elsewhere, target) = serve(r#"{"keys": []}"#.into()).await;
    cached_kid_survives(Answer::Redirect(elsewhere)).await;
    assert_eq!(target.hits(), 0, "the redirect target was fetched");
}

#[tokio::test]
async fn a_body_over_max_bytes_is_refused_and_one_at_max_bytes_is_read() {
    let (url, served) = serve(dev_jwks()).await;
    let jwks = Jwks::load(url_source(&url, |s| s.max_bytes = 4096))
        .await
        .unwrap();
    served.set(Answer::Body(empty_jwks_of(4097)));
    jwks.refresh(true).await;
    assert!(
        kid_verifies(&jwks, KID).await,
        "a 4097-byte set replaced the keys"
    );
    served.set(Answer::Body(empty_jwks_of(4096)));
    jwks.refresh(true).await;
    assert!(
        !kid_verifies(&jwks, KID).await,
        "a 4096-byte set was refused"
    );
}

/// Bytes a streaming endpoint wrote, and whether it got its whole body out.
#[derive(Default)]
struct Stream {
    sent: AtomicUsize,
    completed: AtomicBool,
}

/// An endpoint answering its first request with the dev keys (then closing the connection) and
/// every later one with a chunked, valid, empty JWKS of `len` bytes (unannounced length).
async fn streaming(len: usize) -> (String, Arc<Stream>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    let stream = Arc::new(Stream::default());
    let state = stream.clone();
    tokio::spawn(async move {
        let (mut first, _) = listener.accept().await.unwrap();
        let keys = dev_jwks();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            keys.len()
        );
        let _ = first.read(&mut [0; 4096]).await;
        first.write_all((head + &keys).as_bytes()).await.unwrap();
        drop(first);
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(stream_body(socket, empty_jwks_of(len), state.clone()));
        }
    });
    (url, stream)
}

async fn stream_body(mut socket: tokio::net::TcpStream, body: String, stream: Arc<Stream>) {
    let _ = socket.read(&mut [0; 4096]).await;
    let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
    if socket.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    for piece in body.as_bytes().chunks(16 << 10) {
        let chunk = [
            format!("{:x}\r\n", piece.len()).as_bytes(),
            piece,
            &b"\r\n"[..],
        ]
        .concat();
        if socket.write_all(&chunk).await.is_err() {
            return;
        }
        stream.sent.fetch_add(piece.len(), Ordering::SeqCst);
    }
    if socket.write_all(b"0\r\n\r\n").await.is_ok() {
        stream.completed.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn an_oversized_streamed_body_is_refused_without_reading_it_all() {
    let (url, stream) = streaming(64 << 20).await;
    let jwks = Jwks::load(url_source(&url, |s| {
        s.max_bytes = 64 << 10;
        s.timeout = Duration::from_secs(60);
    }))
    .await
    .unwrap();
    let refreshed = tokio::time::timeout(Duration::from_secs(30), jwks.refresh(true)).await;
    assert!(refreshed.is_ok(), "the refresh read on");
    assert!(
        kid_verifies(&jwks, KID).await,
        "the oversized set replaced the keys"
    );
    assert!(!stream.completed.load(Ordering::SeqCst));
    let sent = stream.sent.load(Ordering::SeqCst);
    assert!(sent < 48 << 20, "{sent} bytes of a 64 MiB body were read");
}

#[tokio::test]
async fn cached_keys_expire_max_stale_after_the_last_successful_fetch() {
    let (url, served) = serve(dev_jwks()).await;
    let jwks = Jwks::load(url_source(&url, |s| {
        s.min_refresh = Duration::ZERO;
        s.max_stale = Duration::from_millis(300);
    }))
    .await
    .unwrap();
    served.set(Answer::Status(StatusCode::INTERNAL_SERVER_ERROR));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        jwks.key(Some(KID), Algorithm::ES256).await.err(),
        Some(KeyMiss::Expired)
    );
    assert!(jwks.expired());
    served.set(Answer::Body(dev_jwks()));
    assert!(
        kid_verifies(&jwks, KID).await,
        "a successful fetch renews them"
    );
    assert!(!jwks.expired());
}

#[tokio::test]
async fn a_flood_of_concurrent_unknown_kids_makes_one_fetch() {
    let (url, served) = serve(dev_jwks()).await;
    let jwks = Jwks::load(source(&url, 0)).await.unwrap();
    served.set(Answer::Slow(Duration::from_secs(2), dev_jwks()));
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..50 {
        let jwks = jwks.clone();
        flood.spawn(async move { kid_verifies(&jwks, &format!("forged-{i}")).await });
    }
    while let Some(verified) = flood.join_next().await {
        assert!(!verified.unwrap());
    }
    assert_eq!(served.hits(), 2, "the load and one shared refresh");
}

#[tokio::test]
async fn an_unknown_kid_waits_at_most_its_wait_while_the_fetch_goes_on() {
    let (url, served) = serve(r#"{"keys": []}"#.into()).await;
    let wait = Duration::from_millis(200);
    let jwks = Jwks::load(url_source(&url, |s| {
        s.min_refresh = Duration::ZERO;
        s.wait = wait;
    }))
    .await
    .unwrap();
    served.set(Answer::Slow(Duration::from_secs(3), dev_jwks()));
    let started = Instant::now();
    assert_eq!(
        jwks.key(Some(KID), Algorithm::ES256).await.err(),
        Some(KeyMiss::Unknown)
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited for the fetch"
    );
    jwks.refresh(false).await;
    assert!(
        kid_verifies(&jwks, KID).await,
        "the fetch went on and stored the key"
    );
    assert_eq!(served.hits(), 2, "the refresh joined the fetch in flight");
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
