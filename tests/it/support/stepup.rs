//! The step-up stack: real Envoy in front of the echo upstream and of stepguard's HTTP port
//! (the `/.stepguard/` callback route), stepguard on a real Redis with `challenge.oidc` pointing
//! at a real OpenID Provider (`oidc-provider`, see [`super::idp`]), and a browser-like client
//! that keeps cookies and does not follow redirects (each hop is the test's to see).

use std::time::{Duration, Instant};

use reqwest::redirect::Policy;

use super::envoy::{Envoy, EnvoyConfig, TempDir};
use super::idp::{Idp, IdpClient, IdpConfig};
use super::ports::free_port;
use super::redis::RedisServer;
use super::sidecar::{Sidecar, with_redis};
use super::upstream::EchoUpstream;

pub const CLIENT_ID: &str = "stepguard-e2e";
pub const CLIENT_SECRET: &str = "e2e-client-secret-TEST-ONLY";

pub struct StepUpStack {
    // Field order is drop order: Envoy first, then its backends.
    pub envoy: Envoy,
    pub upstream: EchoUpstream,
    pub sidecar: Sidecar,
    pub idp: Idp,
    pub redis: RedisServer,
    dir: TempDir,
}

impl StepUpStack {
    /// Starts everything; `post` registers the client with `client_secret_post` instead of
    /// `client_secret_basic`. Waits (bounded) until stepguard has discovered the IdP.
    pub async fn start(post: bool) -> StepUpStack {
        Self::start_with(post, false).await
    }

    /// Like [`StepUpStack::start`]; with `par`, stepguard pushes its authorization requests
    /// (RFC 9126) and browsers go through its start path.
    pub async fn start_with(post: bool, par: bool) -> StepUpStack {
        Self::start_budgeted(post, par, 250).await
    }

    /// Like [`StepUpStack::start_with`], with a decision budget of `budget_ms` (the quickstart's
    /// is 250): for tests about what is decided, not how fast, on a machine other tests load.
    /// Redis's timeout stays below the budget and Envoy's above it, as in the deploy configs.
    pub async fn start_budgeted(post: bool, par: bool, budget_ms: u64) -> StepUpStack {
        let redis = RedisServer::start();
        let envoy_port = free_port();
        let redirect_uri = format!("http://127.0.0.1:{envoy_port}/.stepguard/callback");
        let client = if post {
            IdpClient::post(CLIENT_ID, CLIENT_SECRET, &redirect_uri)
        } else {
            IdpClient::basic(CLIENT_ID, CLIENT_SECRET, &redirect_uri)
        };
        let idp = Idp::start(IdpConfig::default().client(client));
        let dir = TempDir::new("stepup");
        let secret = dir.path().join("client-secret");
        std::fs::write(&secret, CLIENT_SECRET).unwrap();
        let oidc = format!(
            "  oidc:\n    issuer: {}\n    client_secret_file: {}\n    client_auth: {}\n    same_subjects_as: [https://idp.stepguard.local]\n    pushed_authorization_requests: {par}\n",
            idp.issuer(),
            secret.display(),
            if post {
                "client_secret_post"
            } else {
                "client_secret_basic"
            },
        );
        let redis_url = redis.url();
        let spool = dir.path().join("spool");
        let sidecar = Sidecar::start(move |t| {
            let t = with_redis(&redis_url, (budget_ms * 4 / 5).min(1000))(t)
                .replace("  budget_ms: 250\n", &format!("  budget_ms: {budget_ms}\n"))
                .replace(
                    "  entrypoint: stepguard/authz/decision\n  timeout_ms: 100\n",
                    &format!(
                        "  entrypoint: stepguard/authz/decision\n  timeout_ms: {}\n",
                        budget_ms * 2 / 5
                    ),
                );
            // The evidence spool in this stack's directory.
            let start = t.find("\nevidence:\n").unwrap();
            let t = format!(
                "{}evidence:\n  spool:\n    dir: {}\n  signing_key_file: evidence-signing-key.DEV-ONLY.pem\n",
                &t[..start + 1],
                spool.display()
            );
            t.replace(
                "  authorization_endpoint: http://127.0.0.1:9000/auth\n",
                &oidc,
            )
            .replace(
                "    bind: [path.key]\n",
                "    bind: [path.key]\n    authorization_details_type: stepguard_transaction\n",
            )
            .replace(
                "  client_id: stepguard-demo\n",
                &format!("  client_id: {CLIENT_ID}\n"),
            )
            .replace(
                "  redirect_uri: http://127.0.0.1:10000/.stepguard/callback\n",
                &format!("  redirect_uri: {redirect_uri}\n"),
            )
        });
        let upstream = EchoUpstream::start();
        let mut cfg = EnvoyConfig::new(sidecar.grpc.port(), sidecar.http.port(), upstream.port());
        cfg.listener_port = envoy_port;
        cfg.timeout_ms = (budget_ms * 2).max(1000);
        let envoy = Envoy::start(&cfg);
        let stack = StepUpStack {
            envoy,
            upstream,
            sidecar,
            idp,
            redis,
            dir,
        };
        stack.wait_for_discovery().await;
        stack
    }

    /// The evidence records written so far (every chain of the spool, in file order).
    pub fn evidence(&self) -> Vec<serde_json::Value> {
        let spool = self.dir.path().join("spool");
        super::binary::spool_records(&spool)
    }

    /// A new browser: its own cookie jar, no redirects followed.
    pub fn browser(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(Policy::none())
            .build()
            .unwrap()
    }

    /// `POST /v1/keys/{key}/export` as a browser navigation (so a step-up is a 302).
    pub fn export(
        &self,
        browser: &reqwest::Client,
        key: &str,
        bearer: &str,
    ) -> reqwest::RequestBuilder {
        browser
            .post(self.envoy.url(&format!("/v1/keys/{key}/export")))
            .header("accept", "text/html")
            .header("content-type", "application/json")
            .bearer_auth(bearer)
            .body("{}")
    }

    /// Browser step-ups answer 503 until the IdP is discovered; waits for a 302.
    async fn wait_for_discovery(&self) {
        let browser = self.browser();
        let token = super::tokens::token("probe", "aal1", 10);
        let started = Instant::now();
        loop {
            let r = self.export(&browser, "probe", &token).send().await.unwrap();
            if r.status() == 302 {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "stepguard did not discover the IdP: last answer {}",
                r.status()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Follows the IdP's redirects from `location` (the 302 stepguard issued) through the
    /// non-interactive sign-in, and returns the URL the IdP sends the browser back to (the
    /// callback, through Envoy), without requesting it.
    pub async fn sign_in(&self, browser: &reqwest::Client, location: &str) -> String {
        let callback = format!("{}/.stepguard/callback", self.envoy.base_url());
        let mut url = location.to_string();
        for _ in 0..10 {
            if url.starts_with(&callback) {
                return url;
            }
            let r = browser.get(&url).send().await.unwrap();
            assert!(
                r.status().is_redirection(),
                "IdP answered {} at {url}: {}\n{}",
                r.status(),
                r.text().await.unwrap_or_default(),
                self.idp.stderr()
            );
            let next = r.headers()["location"].to_str().unwrap().to_string();
            url = if next.starts_with('/') {
                self.idp.url(&next)
            } else {
                next
            };
        }
        panic!("no way back from the IdP after 10 redirects (last {url})");
    }
}

impl StepUpStack {
    /// `sub` signs in at `acr` (with a hardware key) at the IdP the 302 `location` leads to, and
    /// the browser follows the IdP back to the callback: the callback URL and its answer.
    pub async fn complete_in_browser(
        &self,
        browser: &reqwest::Client,
        location: &str,
        sub: &str,
        acr: &str,
    ) -> (String, reqwest::Response) {
        self.idp.set_next_login(sub, acr, &["pwd", "hwk"], 0).await;
        let callback = self.sign_in(browser, location).await;
        let answer = browser.get(&callback).send().await.unwrap();
        (callback, answer)
    }
}

/// A query parameter of a URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let (_, query) = url.split_once('?')?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
