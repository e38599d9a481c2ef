//! The typed configuration file: one YAML document, unknown keys rejected. Each section is its
//! module's (`route`, `identity`, `challenge`, `txn`, `grant`, `grant_api`, `policy`,
//! `evidence`, `context`, `telemetry` — each `config.rs` with its types, typed values and
//! `validate()`); this file composes them, resolves relative paths once at load, and holds the
//! rules that span sections. Every field is documented in `docs/configuration.md`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::challenge::config::{
    ChallengeConfig, ChallengeLimits, ClientAuth, OidcConfig, RateLimit, callback_path,
};
pub use crate::context::config::{ContextConfig, PeerPosture};
pub use crate::evidence::config::{
    CheckpointConfig, EvidenceConfig, EvidenceSink, RedactConfig, SpoolConfig, StreamConfig,
    WhenFull,
};
pub use crate::grant::GrantsConfig;
pub use crate::grant_api::config::GrantApiConfig;
pub use crate::http::config::Listen;
pub use crate::identity::config::{
    IdentityConfig, IssuerConfig, JwksConfig, JwksSource, JwksUrl, JwtAuthnConfig,
    SigningAlgorithm, WorkloadConfig,
};
pub use crate::pipeline::config::DecisionConfig;
pub use crate::policy::config::{
    BundleServerConfig, MAX_BUNDLE_BYTES, PolicyConfig, ReloadConfig, SourceKind,
};
pub use crate::route::config::{ActionConfig, ActionMode, BindSpec, BodyFormat, MatchConfig, Risk};
pub use crate::section::{Invalid, secure_url};
use crate::section::{Resolve, invalid};
pub use crate::ssf::config::SharedSignalsConfig;
pub use crate::telemetry::config::{OtlpConfig, TelemetryConfig};
pub use crate::txn::config::{TransactionConfig, TxnKeyConfig};

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

impl From<Invalid> for ConfigError {
    fn from(Invalid { field, message }: Invalid) -> Self {
        Self::Invalid { field, message }
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
    /// Shared Signals (SSF/CAEP/RISC) received from a transmitter; absent: none.
    #[serde(default)]
    pub shared_signals: Option<SharedSignalsConfig>,
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

    /// Parses and validates YAML text; relative paths resolve against `base_dir`, once, here.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let mut config: Config =
            yaml_serde::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.resolve(base_dir);
        config.validate()?;
        Ok(config)
    }

    /// The local policy source: what `policy::load` reads (`None` with a bundle server).
    pub fn policy_source(&self) -> Option<crate::policy::PolicySource> {
        self.policy.local_source()
    }

    /// How long a verification with an unknown `kid` waits for a key set fetch: half the
    /// decision budget.
    pub fn jwks_wait(&self) -> Duration {
        Duration::from_millis(self.decision.budget_ms / 2)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.listen.validate()?;
        self.decision.validate()?;
        crate::route::config::validate(&self.actions)?;
        self.identity.validate()?;
        self.challenge.validate()?;
        self.transaction.validate()?;
        self.grants.validate()?;
        if let Some(api) = &self.grant_api {
            api.validate()?;
        }
        if let Some(evidence) = &self.evidence {
            evidence.validate()?;
        }
        self.policy.validate()?;
        self.context.validate()?;
        self.telemetry.validate()?;
        if let Some(ssf) = &self.shared_signals {
            ssf.validate()?;
        }
        self.across_sections()?;
        Ok(())
    }

    /// The rules that span sections.
    fn across_sections(&self) -> Result<(), Invalid> {
        if self.policy.timeout_ms == 0 || self.policy.timeout_ms > self.decision.budget_ms {
            return Err(invalid(
                "policy.timeout_ms",
                "must be between 1 and decision.budget_ms",
            ));
        }
        if let Some(api) = &self.grant_api {
            self.grant_api_is_not_a_user_audience(api)?;
        }
        if let Some(e) = &self.evidence {
            self.evidence_names_what_exists(e)?;
        }
        if let Some(ssf) = &self.shared_signals {
            self.shared_signals_fit(ssf)?;
        }
        let sends = self
            .shared_signals
            .as_ref()
            .is_some_and(|s| s.send.is_some());
        let notifies = self
            .actions
            .iter()
            .position(|a| a.after_approval.notify.is_some());
        if let (Some(i), false) = (notifies, sends) {
            return Err(invalid(
                format!("actions[{i}].after_approval.notify"),
                "needs shared_signals.send (where to send the event)",
            ));
        }
        Ok(())
    }

    /// Subjects shared with token issuers stepguard trusts; a push path of its own.
    fn shared_signals_fit(&self, ssf: &SharedSignalsConfig) -> Result<(), Invalid> {
        let known = |iss: &String| self.identity.issuers.iter().any(|i| &i.issuer == iss);
        let mut shared = ssf.transmitter.iter().flat_map(|t| &t.same_subjects_as);
        if let Some(iss) = shared.find(|i| !known(i)) {
            return Err(invalid(
                "shared_signals.transmitter.same_subjects_as",
                format!("`{iss}` is not in identity.issuers"),
            ));
        }
        let push = ssf.push.as_ref().map(|p| p.path.as_str());
        if push.is_some() && push == self.challenge.callback_path() {
            return Err(invalid(
                "shared_signals.push.path",
                "is the OIDC callback's path (challenge.redirect_uri)",
            ));
        }
        let jwks = ssf.send.as_ref().map(|s| s.jwks_path.as_str());
        if jwks.is_some() && jwks == self.challenge.callback_path() {
            return Err(invalid(
                "shared_signals.send.jwks_path",
                "is the OIDC callback's path (challenge.redirect_uri)",
            ));
        }
        Ok(())
    }

    /// A user's access token must never double as an approval system's credential.
    fn grant_api_is_not_a_user_audience(&self, api: &GrantApiConfig) -> Result<(), Invalid> {
        let users = self.identity.issuers.iter();
        for user_issuer in users.filter(|i| i.issuer == api.token.issuer) {
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
        Ok(())
    }

    /// Redacted fields and actions exist; a stream ships to a Redis grant store.
    fn evidence_names_what_exists(&self, e: &EvidenceConfig) -> Result<(), Invalid> {
        for (i, field) in e.redact.fields.iter().enumerate() {
            let bound = |a: &ActionConfig| a.bind.iter().any(|b| b.field().name() == *field);
            if !self.actions.iter().any(bound) {
                return Err(invalid(
                    format!("evidence.redact.fields[{i}]"),
                    format!("`{field}` is not bound by any action"),
                ));
            }
        }
        for (i, action) in e.redact.actions.iter().enumerate() {
            if !self.actions.iter().any(|a| a.name == *action) {
                return Err(invalid(
                    format!("evidence.redact.actions[{i}]"),
                    format!("`{action}` is not an action"),
                ));
            }
        }
        if e.stream.is_some() && matches!(self.grants, GrantsConfig::Memory { .. }) {
            return Err(invalid(
                "evidence.stream",
                "ships to the grant store's Redis: needs a redis, redis_cluster or \
                 redis_sentinel grant store",
            ));
        }
        Ok(())
    }

    /// Makes every relative path absolute against `base` (the file's directory).
    fn resolve(&mut self, base: &Path) {
        self.identity.resolve(base);
        self.challenge.resolve(base);
        self.transaction.resolve(base);
        self.policy.resolve(base);
        if let Some(api) = &mut self.grant_api {
            api.resolve(base);
        }
        if let Some(evidence) = &mut self.evidence {
            evidence.resolve(base);
        }
        if let Some(ssf) = &mut self.shared_signals {
            ssf.resolve(base);
        }
    }
}

#[cfg(test)]
mod tests;
