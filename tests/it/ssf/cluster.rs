//! Two `stepguard serve` processes (the real binary) on one real Redis grant store, each behind
//! its own real Envoy (so a test chooses the replica that decides), in front of one echo
//! upstream, receiving from the test transmitter ([`Transmitter`]) as configured from its
//! `/.well-known/ssf-configuration`: push on both replicas, poll on replica A when asked, and
//! stepguard's own SETs sent from replica A to a test receiver when asked ([`Sending`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stepguard::testkit::config::Standalone;

use crate::support::binary::Served;
use crate::support::envoy::{Envoy, EnvoyConfig, TempDir, http_get, manifest_dir};
use crate::support::redis::RedisServer;
use crate::support::tokens::{claims, sign};
use crate::support::transmitter::{AUDIENCE, POLL, PUSH, SigningKey, Transmitter};
use crate::support::upstream::EchoUpstream;

use super::receiver::SetReceiver;

/// The token the transmitter presents to the push endpoints.
pub const PUSH_TOKEN: &str = "push-token-TEST-ONLY";
/// The token stepguard presents to the transmitter's poll endpoint.
pub const POLL_TOKEN: &str = "poll-token-TEST-ONLY";
/// The token stepguard presents to the receiver of its own SETs.
pub const RECEIVER_TOKEN: &str = "receiver-token-TEST-ONLY";
/// The issuer of the users' tokens (the quickstart's), whose subjects are the transmitter's.
pub const IDP: &str = stepguard::testkit::ISSUER;
/// The push path on each replica's HTTP port.
pub const PUSH_PATH: &str = "/ssf/events";
/// `shared_signals.send`: stepguard's issuer, key id, key set path, and the receiver's `aud`.
pub const SEND_ISSUER: &str = "https://stepguard.test";
pub const SEND_KID: &str = "stepguard-ssf-it";
pub const SEND_JWKS_PATH: &str = "/ssf/jwks.json";
pub const RECEIVER_AUDIENCE: &str = "https://pam.test/";
/// The approval service's issuer and audience (the grant API's callers).
pub const APPROVALS: &str = "https://approvals.test";
pub const APPROVALS_AUDIENCE: &str = "stepguard-grant-api";

/// What replica A does besides receiving pushes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// A polls the transmitter (RFC 8936).
    pub poll: bool,
    /// A sends SETs after approvals of `keys.export` (`after_approval: {notify:
    /// session-revoked}`) to a [`SetReceiver`], and serves the grant API.
    pub send: bool,
}

/// stepguard's sending side as the test set it up: its key (the test generated it) and the
/// receiver it pushes to.
pub struct Sending {
    pub key: SigningKey,
    pub receiver: SetReceiver,
}

/// One replica: the binary and its Envoy.
pub struct Replica {
    // Field order is drop order: Envoy first.
    pub envoy: Envoy,
    pub served: Served,
    config: PathBuf,
    log: PathBuf,
}

impl Replica {
    fn start(dir: &Path, name: &str, text: &str, ports: (u16, u16), upstream: u16) -> Replica {
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(&config, text).unwrap();
        let log = dir.join(format!("{name}.log"));
        let served = Served::start(&config, &log, ports.0, ports.1);
        let mut cfg = EnvoyConfig::new(ports.0, ports.1, upstream);
        cfg.timeout_ms = 5000;
        let envoy = Envoy::start(&cfg);
        Replica {
            envoy,
            served,
            config,
            log,
        }
    }

    /// SIGTERM (a clean exit is asserted), then the same binary on the same config and ports;
    /// its Envoy stays up.
    pub fn restart(&mut self) {
        self.served.stop();
        let (grpc, http) = (self.served.grpc, self.served.http);
        self.served = Served::start(&self.config, &self.log, grpc, http);
    }

    /// The push endpoint on the replica's HTTP port.
    pub fn push_url(&self) -> String {
        format!("http://127.0.0.1:{}{PUSH_PATH}", self.served.http)
    }

    /// A path on the replica's HTTP port.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.served.http)
    }

    /// The replica's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let r = reqwest::get(self.http_url("/metrics")).await.unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    /// A small transfer (quickstart policy: allowed on a recent aal2 session alone) through
    /// this replica's Envoy: the status and the JSON body (the app's echo, or stepguard's
    /// refusal).
    pub async fn transfer(&self, bearer: &str) -> (u16, Value) {
        let r = client()
            .post(self.envoy.url("/v1/accounts/A1/transfers"))
            .header("content-type", "application/json")
            .bearer_auth(bearer)
            .body(r#"{"amount": 100, "currency": "EUR", "payee": "bob"}"#)
            .send()
            .await
            .unwrap();
        answer(r).await
    }

    /// `GET /public/hello` through this replica's Envoy with `bearer`.
    pub async fn public(&self, bearer: &str) -> u16 {
        client()
            .get(self.envoy.url("/public/hello"))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// `POST /v1/keys/{key}/export` (privileged) through this replica's Envoy, as an API client.
    pub async fn export(&self, key: &str, bearer: &str) -> (u16, Value) {
        let r = client()
            .post(self.envoy.url(&format!("/v1/keys/{key}/export")))
            .header("content-type", "application/json")
            .bearer_auth(bearer)
            .body("{}")
            .send()
            .await
            .unwrap();
        answer(r).await
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Redis, the transmitter, the upstream and replicas A and B.
pub struct Cluster {
    // Field order is drop order: the replicas (Envoy, then stepguard) before what they use.
    pub a: Replica,
    pub b: Replica,
    pub sending: Option<Sending>,
    pub upstream: EchoUpstream,
    pub transmitter: Transmitter,
    _redis: RedisServer,
    _dir: TempDir,
}

impl Cluster {
    pub fn start(options: Options) -> Cluster {
        let redis = RedisServer::start();
        let transmitter = Transmitter::start(POLL_TOKEN);
        let upstream = EchoUpstream::start();
        let dir = TempDir::new("ssf");
        for (name, token) in [
            ("push-token", PUSH_TOKEN),
            ("poll-token", POLL_TOKEN),
            ("receiver-token", RECEIVER_TOKEN),
        ] {
            std::fs::write(dir.path().join(name), format!("{token}\n")).unwrap();
        }
        let sending = options.send.then(|| {
            let key = SigningKey::generate(SEND_KID);
            std::fs::write(dir.path().join("send-key.pem"), key.pkcs8_pem()).unwrap();
            Sending {
                key,
                receiver: SetReceiver::start(),
            }
        });
        let trusted = Trusted::discover(&transmitter);
        let config = |ports: (u16, u16), poll: bool, send: Option<&Sending>| {
            config(&redis.url(), &trusted, dir.path(), ports, poll, send)
        };
        let (pa, pb) = (Served::ports(), Served::ports());
        let a = Replica::start(
            dir.path(),
            "a",
            &config(pa, options.poll, sending.as_ref()),
            pa,
            upstream.port(),
        );
        let b = Replica::start(
            dir.path(),
            "b",
            &config(pb, false, None),
            pb,
            upstream.port(),
        );
        Cluster {
            a,
            b,
            sending,
            upstream,
            transmitter,
            _redis: redis,
            _dir: dir,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (name, replica) in [("A", &self.a), ("B", &self.b)] {
                eprintln!("--- stepguard {name} log tail ---\n{}", replica.log_tail());
            }
        }
    }
}

/// What a replica is configured to trust, as an administrator reads it from the transmitter's
/// `/.well-known/ssf-configuration` (`issuer`, `jwks_uri`) and its stream (the poll endpoint).
struct Trusted {
    issuer: String,
    jwks_uri: String,
    poll_endpoint: String,
}

impl Trusted {
    fn discover(transmitter: &Transmitter) -> Trusted {
        let (status, body) = http_get(
            transmitter.port(),
            "/.well-known/ssf-configuration",
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let metadata: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            metadata["delivery_methods_supported"],
            json!([PUSH, POLL]),
            "{metadata}"
        );
        Trusted {
            issuer: metadata["issuer"].as_str().unwrap().to_string(),
            jwks_uri: metadata["jwks_uri"].as_str().unwrap().to_string(),
            poll_endpoint: transmitter.poll_url(),
        }
    }
}

/// A replica's config: the quickstart (standalone, no evidence) on the Redis store, generous
/// budgets (a loaded machine), and `shared_signals` receiving from the transmitter.
fn config(
    redis: &str,
    transmitter: &Trusted,
    dir: &Path,
    (grpc, http): (u16, u16),
    poll: bool,
    send: Option<&Sending>,
) -> String {
    let mut text = Standalone {
        grpc_port: grpc,
        http_port: http,
        no_evidence: true,
        redis: Some(redis.to_string()),
        ..Standalone::default()
    }
    .render();
    let mut edit = |from: &str, to: &str| {
        assert!(text.contains(from), "the config lacks {from:?}");
        text = text.replacen(from, to, 1);
    };
    edit("  budget_ms: 250\n", "  budget_ms: 2000\n");
    edit(
        &format!("  url: {redis}\n  timeout_ms: 50\n"),
        &format!("  url: {redis}\n  timeout_ms: 500\n"),
    );
    edit(
        "  entrypoint: stepguard/authz/decision\n  timeout_ms: 100\n",
        "  entrypoint: stepguard/authz/decision\n  timeout_ms: 800\n",
    );
    if send.is_some() {
        edit(
            "    privileged: true\n    bind: [path.key]\n",
            "    privileged: true\n    after_approval: {notify: session-revoked}\n    bind: [path.key]\n",
        );
    }
    let file = |name: &str| dir.join(name).display().to_string();
    text += &format!(
        "\nshared_signals:\n  transmitter:\n    issuer: {}\n    jwks:\n      url: {}\n    \
         same_subjects_as: [{IDP}]\n  audiences: [{AUDIENCE}]\n  push:\n    path: {PUSH_PATH}\n    \
         bearer_token_file: {}\n",
        transmitter.issuer,
        transmitter.jwks_uri,
        file("push-token"),
    );
    if poll {
        text += &format!(
            "  poll:\n    endpoint: {}\n    interval_ms: 200\n    bearer_token_file: {}\n",
            transmitter.poll_endpoint,
            file("poll-token"),
        );
    }
    if let Some(send) = send {
        text += &format!(
            "  send:\n    issuer: {SEND_ISSUER}\n    signing_key_file: {}\n    key_id: {SEND_KID}\n    \
             jwks_path: {SEND_JWKS_PATH}\n    max_attempts: 3\n    receivers:\n      - url: {}\n        \
             audience: {RECEIVER_AUDIENCE}\n        bearer_token_file: {}\n",
            file("send-key.pem"),
            send.receiver.url(),
            file("receiver-token"),
        );
        text += &format!(
            "\ngrant_api:\n  token:\n    issuer: {APPROVALS}\n    audiences: [{APPROVALS_AUDIENCE}]\n    \
             algorithms: [RS256]\n    jwks: {{file: {}}}\n  allowed_subjects: [approval-service]\n",
            manifest_dir()
                .join("tests/fixtures/rsa-test-jwks.json")
                .display()
        );
    }
    text
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn answer(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `sub`'s access token for session `sid`: aal2, signed in 5 s ago (the quickstart's issuer).
pub fn session_token(sub: &str, sid: &str) -> String {
    let mut c = claims(sub, "aal2", 5);
    c["sid"] = json!(sid);
    sign(&c)
}

/// `sub`'s token (no session id) signed in at `auth_time`, at `acr`.
pub fn signed_in_at(sub: &str, acr: &str, auth_time: i64) -> String {
    let mut c = claims(sub, acr, 0);
    c["auth_time"] = json!(auth_time);
    sign(&c)
}

/// The sum of `name`'s samples carrying every one of `labels` (0 when there is none).
pub fn counter(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits (at most `within`) until `done` holds; panics with `what` otherwise.
pub async fn eventually(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
