//! The real `stepguard serve` binary as a child process (the one Cargo built for the tests:
//! debug under `cargo test`, release under `cargo test --release`), on its own loopback ports,
//! from the quickstart config with absolute paths. Killed on drop. For tests that act on the
//! process itself: its RSS and open files, signals, `strace` attached to it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stepguard::testkit::config::Standalone;

use super::envoy::{http_get, manifest_dir};
use super::ports::free_port;

/// The quickstart config text with its own ports and absolute paths (the test kit's standalone
/// copy), and `evidence` (a whole `evidence:` section, or "" for none) in place of the
/// quickstart's evidence section.
pub fn config_text(grpc: u16, http: u16, evidence: &str) -> String {
    let text = Standalone {
        grpc_port: grpc,
        http_port: http,
        no_evidence: true,
        ..Standalone::default()
    }
    .render();
    text + evidence
}

/// The dev evidence signing key (absolute path).
pub fn evidence_key() -> PathBuf {
    manifest_dir().join("deploy/local/evidence-signing-key.DEV-ONLY.pem")
}

/// Its public half.
pub fn evidence_public_key() -> PathBuf {
    manifest_dir().join("deploy/local/evidence-signing-key.DEV-ONLY.pub")
}

/// Every record of every chain in `spool`, in file order (a torn last line is skipped).
pub fn spool_records(spool: &Path) -> Vec<serde_json::Value> {
    stepguard::evidence::audit::expand(&[spool.to_path_buf()])
        .unwrap()
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A running `stepguard serve`; killed on drop.
pub struct Served {
    pub child: Child,
    pub grpc: u16,
    pub http: u16,
}

impl Served {
    /// Free ports for a config made with [`config_text`].
    pub fn ports() -> (u16, u16) {
        (free_port(), free_port())
    }

    /// Starts the binary on `config` (stderr appended to `log`) and waits for `/readyz`.
    pub fn start(config: &Path, log: &Path, grpc: u16, http: u16) -> Served {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_stepguard"))
            .args(["serve", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let served = Served { child, grpc, http };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(http, "/readyz", Duration::from_millis(200)).map(|r| r.0) != Ok(200) {
            assert!(Instant::now() < deadline, "stepguard never became ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        served
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    /// Resident memory in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Open file descriptors.
    pub fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Threads of the process.
    pub fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// SIGTERM, and waits for a clean exit (the spool closed with its shutdown checkpoint).
    pub fn stop(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        assert!(
            self.child.wait().unwrap().success(),
            "stepguard exit status"
        );
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
