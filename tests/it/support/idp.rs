//! A real OpenID Provider for integration tests: the npm package `oidc-provider`, run by Node
//! from `tests/idp/provider.mjs` on a free loopback port, killed on drop.
//!
//! The provider signs the test user in without any UI: every login interaction completes at
//! once as the default login of [`IdpConfig`], or as what [`Idp::set_next_login`] asked for
//! (one-shot), and consent grants what was requested. A cookie-keeping HTTP client that
//! follows the provider's 303 redirects ends at the client's `redirect_uri` with `code`,
//! `state` and `iss`. A login interaction happens when the provider needs one: no session,
//! `prompt=login`, `max_age` exceeded (`max_age=0` always), or `acr_values` the session's acr
//! is not in.
//!
//! Needs `node` (`STEPGUARD_NODE` overrides the binary) and `tests/idp/node_modules`
//! (`npm ci --prefix tests/idp`, which `scripts/test` runs). Include with `mod support;`
//! (once `pub mod idp;` is in `support/mod.rs`) or standalone with
//! `#[path = "support/idp.rs"] mod idp;`: this file uses nothing else from `support`.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// How long [`Idp::start`] waits for the provider's `READY` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// One registered client (oidc-provider client metadata, RFC 7591 names).
#[derive(Debug, Clone, PartialEq)]
pub struct IdpClient {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
    /// `client_secret_basic` or `client_secret_post`.
    pub token_endpoint_auth_method: String,
    /// Any further metadata, merged into the client (e.g. `"id_token_signed_response_alg":
    /// "ES256"`, `"authorization_details_types": [...]`).
    pub extra: serde_json::Map<String, Value>,
}

impl IdpClient {
    /// A confidential client authenticating with HTTP Basic (`client_secret_basic`).
    pub fn basic(client_id: &str, client_secret: &str, redirect_uri: &str) -> IdpClient {
        IdpClient {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uris: vec![redirect_uri.into()],
            token_endpoint_auth_method: "client_secret_basic".into(),
            extra: serde_json::Map::new(),
        }
    }

    /// A confidential client sending its secret in the form body (`client_secret_post`).
    pub fn post(client_id: &str, client_secret: &str, redirect_uri: &str) -> IdpClient {
        IdpClient {
            token_endpoint_auth_method: "client_secret_post".into(),
            ..IdpClient::basic(client_id, client_secret, redirect_uri)
        }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "redirect_uris": self.redirect_uris,
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
        });
        let map = v.as_object_mut().unwrap();
        for (k, x) in &self.extra {
            map.insert(k.clone(), x.clone());
        }
        v
    }
}

/// Who a login interaction signs in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpLogin {
    pub sub: String,
    pub acr: String,
    pub amr: Vec<String>,
    /// Added to "now" for the session's `auth_time` (negative: a stale login).
    pub auth_time_offset_secs: i64,
}

impl IdpLogin {
    pub fn new(sub: &str, acr: &str, amr: &[&str]) -> IdpLogin {
        IdpLogin {
            sub: sub.into(),
            acr: acr.into(),
            amr: amr.iter().map(|s| s.to_string()).collect(),
            auth_time_offset_secs: 0,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "sub": self.sub,
            "acr": self.acr,
            "amr": self.amr,
            "auth_time_offset_secs": self.auth_time_offset_secs,
        })
    }
}

/// What the provider is started with.
#[derive(Debug, Clone, PartialEq)]
pub struct IdpConfig {
    pub clients: Vec<IdpClient>,
    /// `acr_values_supported`.
    pub acr_values: Vec<String>,
    /// RFC 9396 `authorization_details` types accepted (any content).
    pub rar_types: Vec<String>,
    /// Who a login signs in as unless [`Idp::set_next_login`] said otherwise.
    pub default_login: IdpLogin,
    /// A fixed port; `None` (the default) lets the provider bind a free one itself and report
    /// it, which cannot race with other processes the way "pick a free port, then start" can.
    pub port: Option<u16>,
}

impl Default for IdpConfig {
    /// No clients; acr values `aal1 aal2 aal3`; RAR types `payment_initiation` and
    /// `stepguard_transaction`; default login `alice` at `aal2` with `pwd otp`.
    fn default() -> Self {
        IdpConfig {
            clients: Vec::new(),
            acr_values: ["aal1", "aal2", "aal3"].map(String::from).to_vec(),
            rar_types: ["payment_initiation", "stepguard_transaction"]
                .map(String::from)
                .to_vec(),
            default_login: IdpLogin::new("alice", "aal2", &["pwd", "otp"]),
            port: None,
        }
    }
}

impl IdpConfig {
    /// Adds a client.
    pub fn client(mut self, client: IdpClient) -> Self {
        self.clients.push(client);
        self
    }

    fn to_json(&self) -> Value {
        json!({
            "port": self.port.unwrap_or(0),
            "clients": self.clients.iter().map(IdpClient::to_json).collect::<Vec<_>>(),
            "acr_values": self.acr_values,
            "rar_types": self.rar_types,
            "default_login": self.default_login.to_json(),
            "exit_on_stdin_eof": true,
        })
    }
}

/// `<crate>/tests/idp`: provider.mjs and its node_modules.
pub fn idp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/idp")
}

fn node_bin() -> String {
    std::env::var("STEPGUARD_NODE").unwrap_or_else(|_| "node".into())
}

/// A running provider; killed on drop (and it exits by itself when the test process dies, as
/// its stdin closes). Set `STEPGUARD_KEEP_TEST_DIRS=1` to keep its config and log.
#[derive(Debug)]
pub struct Idp {
    child: Child,
    /// Held open: the provider exits at EOF.
    stdin: Option<ChildStdin>,
    issuer: String,
    port: u16,
    dir: PathBuf,
    http: reqwest::Client,
}

impl Idp {
    /// Writes the config, starts `node tests/idp/provider.mjs <config>` and waits (at most
    /// [`START_TIMEOUT`]) for its `READY <issuer>` line; panics with its stderr otherwise.
    /// Blocking, but safe inside a tokio test (nothing it waits for needs the runtime).
    pub fn start(config: IdpConfig) -> Idp {
        let node = node_bin();
        if Command::new(&node)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            panic!(
                "`{node}` not found: the IdP tests need Node.js (>= 20) for the real oidc-provider, \
                 or set STEPGUARD_NODE to its path"
            );
        }
        let dir = idp_dir();
        if !dir.join("node_modules/oidc-provider").is_dir() {
            panic!(
                "{} is missing: run `npm ci --prefix tests/idp` (scripts/test does it)",
                dir.join("node_modules/oidc-provider").display()
            );
        }

        let tmp = temp_dir();
        let config_path = tmp.join("idp.json");
        std::fs::write(&config_path, config.to_json().to_string())
            .unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));
        let log_path = tmp.join("idp.stderr.log");
        let log = std::fs::File::create(&log_path).expect("create IdP stderr log");

        let mut child = Command::new(&node)
            .arg(dir.join("provider.mjs"))
            .arg(&config_path)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {node}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");

        // Read stdout on a thread: hand over the READY line, then keep draining.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(issuer) = line.strip_prefix("READY ")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(issuer.trim().to_string());
                }
            }
        });

        let deadline = Instant::now() + START_TIMEOUT;
        let issuer = loop {
            let waited = rx.recv_timeout(Duration::from_millis(50));
            if let Ok(issuer) = waited {
                break issuer;
            }
            if let Some(status) = child.try_wait().ok().flatten() {
                let why = describe(&config_path, &log_path);
                let _ = std::fs::remove_dir_all(&tmp);
                panic!("the IdP (oidc-provider) exited during startup ({status})\n{why}");
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let why = describe(&config_path, &log_path);
                let _ = std::fs::remove_dir_all(&tmp);
                panic!(
                    "the IdP (oidc-provider) printed no READY line within {START_TIMEOUT:?}\n{why}"
                );
            }
            if waited == Err(mpsc::RecvTimeoutError::Disconnected) {
                // stdout closed but the process is still going: poll it without spinning.
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        let port = reqwest::Url::parse(&issuer)
            .ok()
            .and_then(|u| u.port())
            .unwrap_or_else(|| panic!("READY line without a port: {issuer:?}"));
        // No pooled connections: the Idp may outlive the runtime of the test that started it.
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Idp {
            child,
            stdin,
            issuer,
            port,
            dir: tmp,
            http,
        }
    }

    /// `http://127.0.0.1:<port>` (no trailing slash), the `iss` of everything it issues.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `issuer()` + `path` (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// `<issuer>/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        self.url("/.well-known/openid-configuration")
    }

    /// The discovery document.
    pub async fn discovery(&self) -> Value {
        self.get_json(&self.discovery_url()).await
    }

    /// The provider's JWKS (public keys; one RS256 key, the ID token default, one ES256).
    pub async fn jwks(&self) -> Value {
        self.get_json(&self.url("/jwks")).await
    }

    /// The next login interaction (only the next) signs in as `sub` at `acr` with `amr`, with
    /// `auth_time` = now + `auth_time_offset_secs` (negative for a stale login).
    pub async fn set_next_login(
        &self,
        sub: &str,
        acr: &str,
        amr: &[&str],
        auth_time_offset_secs: i64,
    ) {
        let mut login = IdpLogin::new(sub, acr, amr);
        login.auth_time_offset_secs = auth_time_offset_secs;
        self.set_next_login_as(&login).await;
    }

    /// [`Idp::set_next_login`] from an [`IdpLogin`].
    pub async fn set_next_login_as(&self, login: &IdpLogin) {
        let r = self
            .http
            .post(self.url("/__test/next-login"))
            .header("content-type", "application/json")
            .body(login.to_json().to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /__test/next-login: {e}\n{}", self.stderr()));
        assert_eq!(r.status().as_u16(), 204, "POST /__test/next-login");
    }

    /// The parameters of the latest request to the authorization endpoint as the client sent
    /// them (strings, e.g. `"max_age": "0"`; absent ones absent), with `authorization_details`
    /// parsed to JSON. For a PAR `request_uri` the pushed parameters are merged in and
    /// `"pushed": true`. Client secrets are left out. `Null` before any request.
    pub async fn last_authorization(&self) -> Value {
        self.get_json(&self.url("/__test/last-authorization")).await
    }

    /// Everything the provider wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("idp.stderr.log")).unwrap_or_default()
    }

    async fn get_json(&self, url: &str) -> Value {
        let r = self
            .http
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}\n{}", self.stderr()));
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(status.is_success(), "GET {url}: {status}\n{body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"))
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- IdP {} stderr ---\n{}",
                self.issuer,
                tail(&self.stderr(), 60)
            );
        }
        if std::env::var_os("STEPGUARD_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn temp_dir() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let path = std::env::temp_dir().join(format!(
        "stepguard-idp-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    path
}

fn describe(config: &Path, log: &Path) -> String {
    format!(
        "node: {}\nconfig: {}\n--- IdP stderr ---\n{}",
        node_bin(),
        std::fs::read_to_string(config).unwrap_or_default(),
        std::fs::read_to_string(log).unwrap_or_default()
    )
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
