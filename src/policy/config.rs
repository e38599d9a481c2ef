//! The `policy` section: the source (which also picks the engine), entrypoint and time limit,
//! how often a local source is checked for changes (`policy.reload`), the bundle server polled
//! instead (`policy.bundle`); and its rules ([`PolicyConfig::validate`]). See "Loading and
//! reload" in `docs/policy.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::section::{Invalid, Resolve, invalid, resolve_opt, secure_url};

/// Largest bundle: the `.tar.gz` itself, and all of its files uncompressed (also the largest a
/// bundle server may send, and the default cap).
pub const MAX_BUNDLE_BYTES: u64 = 256 << 20;

/// The `policy` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// What the policy is, which also picks the engine (`policy::SourceKind`): a directory of
    /// `.rego` files (and `data.json`) or one `.rego` file (Rego); an OPA-compiled `*.wasm`
    /// module (Wasm); an OPA bundle `*.tar.gz`/`*.tgz` (Wasm when it holds a module, else Rego).
    /// Required unless `bundle` names a bundle server.
    #[serde(default)]
    pub source: Option<PathBuf>,
    /// The data document (JSON) for a `.wasm` source; not allowed with other sources.
    #[serde(default)]
    pub data: Option<PathBuf>,
    #[serde(default = "default_entrypoint")]
    pub entrypoint: String,
    /// Evaluation time limit; a policy past it is a fault (503).
    #[serde(default = "default_policy_timeout")]
    pub timeout_ms: u64,
    /// How often a local `source` is checked for changes.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// A bundle server polled for the policy, instead of a local `source`.
    #[serde(default)]
    pub bundle: Option<BundleServerConfig>,
}

fn default_entrypoint() -> String {
    "stepguard/authz/decision".into()
}
fn default_policy_timeout() -> u64 {
    100
}

/// Which engine a source is evaluated by, from its file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A directory of `.rego` files and `data.json`, or one `.rego` file: `policy::rego::RegoPolicy`.
    Rego,
    /// An OPA-compiled module (`*.wasm`): `policy::wasm::WasmPolicy`.
    Wasm,
    /// An OPA bundle (`*.tar.gz`, `*.tgz`): Wasm when it holds a module, else Rego.
    Bundle,
}

impl SourceKind {
    /// The kind of `path`, by its name alone (nothing is read).
    pub fn of(path: &Path) -> Self {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if name.ends_with(".wasm") {
            Self::Wasm
        } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            Self::Bundle
        } else {
            Self::Rego
        }
    }
}

/// Checking a local source (directory, file, `.wasm`, bundle file) for changes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// How often the files are read and compared (a content hash); 0 disables reloading.
    pub interval_ms: u64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            interval_ms: 10_000,
        }
    }
}

/// An OPA-style bundle server: the bundle is downloaded with `If-None-Match` every
/// `interval_ms` and activated when it changes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleServerConfig {
    /// The bundle's URL (`https://`; plain `http://` only on loopback).
    pub url: String,
    /// Time between downloads.
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// Limit for one download, response body included.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Largest bundle accepted (compressed); a larger one is rejected.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Extra request headers (e.g. an API key header).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A file holding a bearer token, sent as `Authorization: Bearer …` (read at start).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// An environment variable holding the bearer token.
    #[serde(default)]
    pub bearer_token_env: Option<String>,
}

fn default_interval() -> u64 {
    30_000
}
fn default_timeout() -> u64 {
    10_000
}
fn default_max_bytes() -> u64 {
    32 << 20
}

impl Resolve for PolicyConfig {
    fn resolve(&mut self, base: &Path) {
        resolve_opt(&mut self.source, base);
        resolve_opt(&mut self.data, base);
        if let Some(bundle) = &mut self.bundle {
            resolve_opt(&mut bundle.bearer_token_file, base);
        }
    }
}

impl PolicyConfig {
    /// The section's rules: one source, a data document only for Wasm, an entrypoint, sane
    /// reload and bundle settings. (`timeout_ms` against the decision budget is the file's
    /// rule, in `crate::config`.)
    pub fn validate(&self) -> Result<(), Invalid> {
        let kind = self.source.as_deref().map(SourceKind::of);
        if self.data.is_some() && kind != Some(SourceKind::Wasm) {
            return Err(invalid(
                "policy.data",
                "only for a `.wasm` source (Rego directories and bundles carry their data)",
            ));
        }
        if self.entrypoint.trim_matches('/').is_empty() {
            return Err(invalid("policy.entrypoint", "must name a rule"));
        }
        self.validate_reload()
    }

    fn validate_reload(&self) -> Result<(), Invalid> {
        let p = self;
        match (&p.source, &p.bundle) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "policy.bundle",
                    "set policy.source (local) or policy.bundle (a bundle server), not both",
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "policy.source",
                    "set policy.source (local) or policy.bundle (a bundle server)",
                ));
            }
            _ => {}
        }
        if p.reload.interval_ms != 0 && p.reload.interval_ms < 100 {
            return Err(invalid(
                "policy.reload.interval_ms",
                "0 (disabled) or at least 100",
            ));
        }
        match &p.bundle {
            Some(b) => b.validate(),
            None => Ok(()),
        }
    }
}

impl BundleServerConfig {
    fn validate(&self) -> Result<(), Invalid> {
        if !secure_url(&self.url) {
            return Err(invalid(
                "policy.bundle.url",
                "must be https:// (plain http only on loopback)",
            ));
        }
        if self.interval_ms < 100 {
            return Err(invalid("policy.bundle.interval_ms", "at least 100"));
        }
        if !(100..=300_000).contains(&self.timeout_ms) {
            return Err(invalid(
                "policy.bundle.timeout_ms",
                "must be between 100 and 300000",
            ));
        }
        if !(1..=MAX_BUNDLE_BYTES).contains(&self.max_bytes) {
            return Err(invalid(
                "policy.bundle.max_bytes",
                format!("must be between 1 and {MAX_BUNDLE_BYTES}"),
            ));
        }
        if self.bearer_token_file.is_some() && self.bearer_token_env.is_some() {
            return Err(invalid(
                "policy.bundle.bearer_token_file",
                "set bearer_token_file or bearer_token_env, not both",
            ));
        }
        for (name, value) in &self.headers {
            let valid_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid_name || value.bytes().any(|b| b.is_ascii_control()) {
                return Err(invalid(
                    format!("policy.bundle.headers.{name}"),
                    "a header name and a value without control characters",
                ));
            }
            if name.eq_ignore_ascii_case("authorization") && self.has_bearer() {
                return Err(invalid(
                    format!("policy.bundle.headers.{name}"),
                    "not with a bearer token",
                ));
            }
        }
        Ok(())
    }

    fn has_bearer(&self) -> bool {
        self.bearer_token_file.is_some() || self.bearer_token_env.is_some()
    }
}
