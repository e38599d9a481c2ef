//! The typed configuration file: one YAML document, unknown keys rejected, validated as a whole
//! before any port is bound. Every field is documented in `docs/configuration.md`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::grant::GrantsConfig;
use crate::route::PathTemplate;

mod actions;
mod challenge;
mod evidence;
mod identity;
mod policy;
pub use crate::challenge::config::{
    ChallengeConfig, ChallengeLimits, ClientAuth, OidcConfig, RateLimit,
};
pub use crate::context::config::{ContextConfig, PeerPosture};
pub use crate::identity::config::{
    IdentityConfig, IssuerConfig, JwksConfig, JwksSource, JwksUrl, JwtAuthnConfig, WorkloadConfig,
};
pub use crate::route::config::{ActionConfig, ActionMode, BindSpec, BodyFormat, MatchConfig, Risk};
pub use crate::telemetry::config::{OtlpConfig, TelemetryConfig};
pub use crate::txn::config::{TransactionConfig, TxnKeyConfig};
pub use evidence::{
    CheckpointConfig, EvidenceConfig, EvidenceSink, RedactConfig, SpoolConfig, StreamConfig,
    WhenFull,
};
use identity::validate_issuer;
pub use policy::{BundleServerConfig, MAX_BUNDLE_BYTES, ReloadConfig, SourceKind};

/// A configuration problem, naming the field it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
    #[error("config field `{field}`: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: Listen,
    #[serde(default)]
    pub decision: DecisionConfig,
    #[serde(default)]
    pub actions: Vec<ActionConfig>,
    pub identity: IdentityConfig,
    pub challenge: ChallengeConfig,
    pub transaction: TransactionConfig,
    pub policy: PolicyConfig,
    #[serde(default)]
    pub grants: GrantsConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The gRPC grant API (`stepguard.v1.GrantService`) for external approval systems; not
    /// served when absent.
    #[serde(default)]
    pub grant_api: Option<GrantApiConfig>,
    /// Where decision records go and how they are protected; absent: the log only.
    #[serde(default)]
    pub evidence: Option<EvidenceConfig>,
    /// Context signals computed for the policy (velocity, new networks, device trust).
    #[serde(default)]
    pub context: ContextConfig,
    /// Directory relative paths are resolved against (the config file's directory).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// gRPC: envoy.service.auth.v3.Authorization and grpc.health.v1.Health.
    pub grpc: SocketAddr,
    /// HTTP: the OIDC callback; also /healthz, /readyz and /metrics unless `admin` is set.
    pub http: SocketAddr,
    /// Admin HTTP: /healthz, /readyz and /metrics on a port of their own, so the
    /// internet-facing callback port serves nothing else. Absent: they stay on `http`.
    #[serde(default)]
    pub admin: Option<SocketAddr>,
}

#[cfg(test)]
mod listen_tests;

impl Listen {
    /// No two listeners on one address (port 0 asks for any free port, so it never clashes).
    fn validate(&self) -> Result<(), ConfigError> {
        let mut named = vec![("listen.grpc", self.grpc), ("listen.http", self.http)];
        if let Some(admin) = self.admin {
            named.push(("listen.admin", admin));
        }
        for (i, (field, addr)) in named.iter().enumerate() {
            let clash = named[..i]
                .iter()
                .find(|(_, other)| addr.port() != 0 && other == addr);
            if let Some((other_field, _)) = clash {
                return Err(invalid(
                    *field,
                    format!("{addr} is already `{other_field}`: each listener needs its own port"),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionConfig {
    /// Budget for one decision, well below Envoy's ext_authz timeout; past it the answer is 503.
    pub budget_ms: u64,
    /// How long in-flight checks may drain after SIGTERM/SIGINT.
    pub drain_ms: u64,
    /// Largest number of path segments classified; longer paths are denied (400).
    pub max_path_segments: usize,
}

impl Default for DecisionConfig {
    fn default() -> Self {
        Self {
            budget_ms: 250,
            drain_ms: 5_000,
            max_path_segments: 128,
        }
    }
}

/// Who may call the grant API: bearer JWTs of one issuer, for one of its audiences, optionally
/// only for listed subjects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantApiConfig {
    /// The issuer of the callers' tokens (the shape of an `identity.issuers` entry).
    pub token: IssuerConfig,
    /// The `sub` values allowed to call; empty: any subject of that issuer and audience.
    #[serde(default)]
    pub allowed_subjects: Vec<String>,
}

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

impl Config {
    fn validate_policy(&self) -> Result<(), ConfigError> {
        if self.policy.timeout_ms == 0 || self.policy.timeout_ms > self.decision.budget_ms {
            return Err(invalid(
                "policy.timeout_ms",
                "must be between 1 and decision.budget_ms",
            ));
        }
        self.validate_policy_reload()?;
        let kind = self.policy.source.as_deref().map(SourceKind::of);
        if self.policy.data.is_some() && kind != Some(SourceKind::Wasm) {
            return Err(invalid(
                "policy.data",
                "only for a `.wasm` source (Rego directories and bundles carry their data)",
            ));
        }
        if self.policy.entrypoint.trim_matches('/').is_empty() {
            return Err(invalid("policy.entrypoint", "must name a rule"));
        }
        Ok(())
    }
}

fn default_entrypoint() -> String {
    "stepguard/authz/decision".into()
}
fn default_policy_timeout() -> u64 {
    100
}

/// The path of the OIDC callback: `redirect_uri`'s path.
pub fn callback_path(redirect_uri: &str) -> Option<&str> {
    let rest = redirect_uri.split_once("://")?.1;
    let path = &rest[rest.find('/')?..];
    let path = path.split(['?', '#']).next().unwrap_or(path);
    (path.len() > 1).then_some(path)
}

impl Config {
    /// Reads, parses and validates a file; relative paths resolve against its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Self::parse(&text, &base)
    }

    /// Parses and validates YAML text.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let mut config: Config =
            yaml_serde::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.base_dir = base_dir.to_path_buf();
        config.validate()?;
        Ok(config)
    }

    /// How long a verification with an unknown `kid` waits for a key set fetch: half the
    /// decision budget.
    pub fn jwks_wait(&self) -> Duration {
        Duration::from_millis(self.decision.budget_ms / 2)
    }

    /// A path from the file, resolved against the config's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.listen.validate()?;
        self.validate_decision()?;
        self.validate_actions()?;
        self.validate_identity()?;
        self.validate_challenge()?;
        self.validate_transaction()?;
        self.grants
            .validate()
            .map_err(|e| invalid(e.field, e.message))?;
        self.validate_grant_api()?;
        self.validate_evidence()?;
        self.validate_policy()?;
        let c = &self.context;
        if !(10..=86_400).contains(&c.velocity_window_secs) {
            return Err(invalid(
                "context.velocity_window_secs",
                "must be between 10 and 86400",
            ));
        }
        if !(1..=3_650).contains(&c.remember_networks_days) {
            return Err(invalid(
                "context.remember_networks_days",
                "must be between 1 and 3650",
            ));
        }
        for (i, p) in c.device_trust_peers.iter().enumerate() {
            if p.principal_prefix.len() < 8 || !p.principal_prefix.contains("://") {
                return Err(invalid(
                    format!("context.device_trust_peers[{i}].principal_prefix"),
                    "a URI prefix such as spiffe://devices.example.com/",
                ));
            }
            if p.posture.trim().is_empty() {
                return Err(invalid(
                    format!("context.device_trust_peers[{i}].posture"),
                    "must not be empty",
                ));
            }
        }
        for (name, header) in [
            ("device_trust_header", c.device_trust_header.as_deref()),
            (
                "break_glass_justification_header",
                Some(c.break_glass_justification_header.as_str()),
            ),
        ] {
            if let Some(h) = header
                && (h.is_empty()
                    || !h
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
            {
                return Err(invalid(
                    format!("context.{name}"),
                    "a lower-case header name",
                ));
            }
        }
        if !matches!(self.telemetry.log_format.as_str(), "json" | "text") {
            return Err(invalid("telemetry.log_format", "must be `json` or `text`"));
        }
        if let Some(otlp) = &self.telemetry.otlp {
            if !otlp.endpoint.starts_with("http://") || otlp.endpoint.len() <= "http://".len() {
                return Err(invalid(
                    "telemetry.otlp.endpoint",
                    "an `http://host:port` OTLP/gRPC endpoint",
                ));
            }
            if otlp.service_name.is_empty() {
                return Err(invalid("telemetry.otlp.service_name", "must not be empty"));
            }
            if otlp.sample_ratio.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
                return Err(invalid(
                    "telemetry.otlp.sample_ratio",
                    "between 0.0 and 1.0",
                ));
            }
            if otlp.timeout_ms == 0 {
                return Err(invalid("telemetry.otlp.timeout_ms", "must be positive"));
            }
        }
        Ok(())
    }

    fn validate_decision(&self) -> Result<(), ConfigError> {
        if !(10..=5_000).contains(&self.decision.budget_ms) {
            return Err(invalid("decision.budget_ms", "must be between 10 and 5000"));
        }
        if self.decision.max_path_segments == 0 {
            return Err(invalid("decision.max_path_segments", "must be at least 1"));
        }
        Ok(())
    }

    fn validate_grant_api(&self) -> Result<(), ConfigError> {
        let Some(api) = &self.grant_api else {
            return Ok(());
        };
        validate_issuer(&api.token, "grant_api.token")?;
        // A user's access token must never double as an approval system's credential.
        for user_issuer in self.identity.issuers.iter() {
            if user_issuer.issuer != api.token.issuer {
                continue;
            }
            if let Some(aud) = api
                .token
                .audiences
                .iter()
                .find(|a| user_issuer.audiences.contains(a))
            {
                return Err(invalid(
                    "grant_api.token.audiences",
                    format!(
                        "`{aud}` is also accepted for this issuer's user tokens (identity.issuers): \
                         use an audience only approval systems are issued"
                    ),
                ));
            }
        }
        for (i, sub) in api.allowed_subjects.iter().enumerate() {
            if sub.trim().is_empty() {
                return Err(invalid(
                    format!("grant_api.allowed_subjects[{i}]"),
                    "must not be empty",
                ));
            }
        }
        Ok(())
    }

    fn validate_transaction(&self) -> Result<(), ConfigError> {
        let t = &self.transaction;
        if !t.keys.iter().any(|k| k.id == t.active_key) {
            return Err(invalid(
                "transaction.active_key",
                format!("no key with id `{}` in transaction.keys", t.active_key),
            ));
        }
        for (i, key) in t.keys.iter().enumerate() {
            if key.id.is_empty() || key.id.contains(':') {
                return Err(invalid(
                    format!("transaction.keys[{i}].id"),
                    "must be non-empty and contain no `:`",
                ));
            }
            if key.secret_file.is_some() == key.secret_env.is_some() {
                return Err(invalid(
                    format!("transaction.keys[{i}]"),
                    "set exactly one of secret_file or secret_env",
                ));
            }
            match (key.id == t.active_key, key.accept_until) {
                (true, Some(_)) => {
                    return Err(invalid(
                        format!("transaction.keys[{i}].accept_until"),
                        "the active key has no end of overlap",
                    ));
                }
                (false, None) => {
                    return Err(invalid(
                        format!("transaction.keys[{i}].accept_until"),
                        "a previous key needs the end of its overlap (unix seconds)",
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// True for an `https://` URL with a host, or plain `http://` to a loopback host (`localhost`,
/// `127.0.0.0/8`, `[::1]`) — decided on the parsed URL, so `http://localhost.evil.com` and
/// `http://127.0.0.1@evil.com` are not loopback. URLs carrying credentials are refused.
pub fn secure_url(raw: &str) -> bool {
    let Ok(url) = url::Url::parse(raw) else {
        return false;
    };
    if !url.username().is_empty() || url.password().is_some() {
        return false;
    }
    match (url.scheme(), url.host()) {
        ("https", Some(_)) => true,
        ("http", Some(url::Host::Domain(d))) => d.eq_ignore_ascii_case("localhost"),
        ("http", Some(url::Host::Ipv4(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Ipv6(ip))) => ip.is_loopback(),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
