//! The quickstart configuration (`deploy/local/stepguard.yaml`): parsed with edits for tests, or
//! written out standalone (absolute paths, chosen ports, evidence/tracing/store switched) for a
//! real `stepguard serve` process such as the load driver's.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::config::Config;

/// The quickstart's directory.
pub const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local");

/// The crate's root, for finding repository files.
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The quickstart config's text.
pub fn quickstart_text() -> String {
    std::fs::read_to_string(format!("{DIR}/stepguard.yaml")).unwrap()
}

/// The quickstart config, with `edit` applied to its text, resolved against `deploy/local`.
pub fn config(edit: impl Fn(String) -> String) -> Config {
    Config::parse(&edit(quickstart_text()), Path::new(DIR)).unwrap()
}

/// What a standalone copy of the quickstart config changes.
#[derive(Debug, Clone, Default)]
pub struct Standalone {
    /// `listen.grpc` and `listen.http` ports on 127.0.0.1.
    pub grpc_port: u16,
    pub http_port: u16,
    /// The policy directory (default: the repository's `policies/`).
    pub policies: Option<PathBuf>,
    /// Traces exported over OTLP/gRPC to 127.0.0.1:`port` at this sample ratio.
    pub otlp: Option<(u16, f64)>,
    /// Evidence off (the quickstart has it on, without the extra copy in the log).
    pub no_evidence: bool,
    /// The grant store on this Redis URL instead of in memory.
    pub redis: Option<String>,
}

impl Standalone {
    /// The quickstart's text with these changes and every relative path made absolute; fails
    /// loudly if the quickstart no longer has a line it edits.
    pub fn render(&self) -> String {
        let dir = Path::new(DIR);
        let abs = |name: &str| dir.join(name).display().to_string();
        let policies = self
            .policies
            .clone()
            .unwrap_or_else(|| manifest_dir().join("policies"));
        let mut text = quickstart_text();
        let mut edit = |from: &str, to: &str| {
            assert!(text.contains(from), "the quickstart config lacks {from:?}");
            text = text.replacen(from, to, 1);
        };
        edit(
            "  grpc: 127.0.0.1:9191\n",
            &format!("  grpc: 127.0.0.1:{}\n", self.grpc_port),
        );
        edit(
            "  http: 127.0.0.1:9192\n",
            &format!("  http: 127.0.0.1:{}\n", self.http_port),
        );
        edit(
            "file: dev-jwks.json\n",
            &format!("file: {}\n", abs("dev-jwks.json")),
        );
        edit(
            "secret_file: txn-key.DEV-ONLY\n",
            &format!("secret_file: {}\n", abs("txn-key.DEV-ONLY")),
        );
        edit(
            "source: ../../policies\n",
            &format!("source: {}\n", policies.display()),
        );
        if let Some(url) = &self.redis {
            edit(
                "  store: memory\n",
                &format!("  store: redis\n  url: {url}\n  timeout_ms: 50\n"),
            );
            text = text
                .lines()
                .filter(|l| !l.starts_with("  max_entries: "))
                .fold(String::new(), |mut out, l| {
                    let _ = writeln!(out, "{l}");
                    out
                });
        }
        if let Some((port, ratio)) = self.otlp {
            let mut edit = |from: &str, to: &str| {
                assert!(text.contains(from), "the quickstart config lacks {from:?}");
                text = text.replacen(from, to, 1);
            };
            edit(
                "  log_level: info\n",
                &format!(
                    "  log_level: info\n  otlp:\n    endpoint: http://127.0.0.1:{port}\n    sample_ratio: {ratio}\n"
                ),
            );
        }
        let start = text
            .find("\nevidence:\n")
            .expect("the quickstart config has an evidence section");
        let head = text[..=start].to_string();
        if self.no_evidence {
            return head;
        }
        let evidence = text[start + 1..].to_string();
        let evidence = evidence
            .replacen(
                "signing_key_file: evidence-signing-key.DEV-ONLY.pem\n",
                &format!(
                    "signing_key_file: {}\n",
                    abs("evidence-signing-key.DEV-ONLY.pem")
                ),
                1,
            )
            .lines()
            .map(|l| {
                if l.starts_with("  log: true") {
                    "  log: false"
                } else {
                    l
                }
            })
            .fold(String::new(), |mut out, l| {
                let _ = writeln!(out, "{l}");
                out
            });
        head + &evidence
    }
}
