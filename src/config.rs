//! The typed configuration file: one YAML document, unknown keys rejected, validated as a whole
//! before any port is bound. Every field is documented in `docs/configuration.md`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::grant::GrantsConfig;
use crate::route::PathTemplate;

mod evidence;
mod policy;
pub use evidence::{
    CheckpointConfig, EvidenceConfig, EvidenceSink, RedactConfig, SpoolConfig, StreamConfig,
    WhenFull,
};
pub use policy::{BundleServerConfig, ReloadConfig};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    Low,
    Medium,
    High,
    Critical,
}

/// One sensitive action.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    pub name: String,
    /// How requests are matched to this action; absent for actions only named by route tags.
    #[serde(default, rename = "match")]
    pub matcher: Option<MatchConfig>,
    pub risk: Risk,
    #[serde(default = "yes")]
    pub reversible: bool,
    #[serde(default)]
    pub privileged: bool,
    /// Request fields that bind the transaction: `path.P`, `query.Q`, `header.H`, `body.a.b`.
    /// Each must be present and single-valued (else 400 `missing_bound_field`), unless written
    /// `{field: body.memo, optional: true}`: only then is absence a value.
    #[serde(default)]
    pub bind: Vec<BindSpec>,
    /// How `body.*` fields are read: `json` (default; `content-type` `application/json` or
    /// `*+json`) or `form` (`application/x-www-form-urlencoded`, flat names only). A body of
    /// another content type is refused (400) when a body field is bound.
    #[serde(default)]
    pub body: BodyFormat,
    /// Field holding the transaction value (a bound field), e.g. `body.amount`.
    #[serde(default)]
    pub value: Option<String>,
    /// Field holding the currency (a bound field), e.g. `body.currency`.
    #[serde(default)]
    pub currency: Option<String>,
    /// RFC 9396: describe the transaction to the IdP in `authorization_details` of this type
    /// (e.g. `payment_initiation`), so the user sees what they are approving.
    #[serde(default)]
    pub authorization_details_type: Option<String>,
    /// `enforce` (default) or `shadow`: a dry run — the decision is computed and recorded,
    /// the request allowed. Refused for privileged and irreversible actions.
    #[serde(default)]
    pub mode: ActionMode,
}

/// One bound field: `body.amount`, or `{field: body.memo, optional: true}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum BindSpec {
    Required(String),
    Declared {
        field: String,
        #[serde(default)]
        optional: bool,
    },
}

impl BindSpec {
    /// The field as written (`body.amount`).
    pub fn field(&self) -> &str {
        match self {
            Self::Required(f) | Self::Declared { field: f, .. } => f,
        }
    }

    /// True when absence is a value.
    pub fn optional(&self) -> bool {
        matches!(self, Self::Declared { optional: true, .. })
    }
}

/// How an action's bound `body.*` fields are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    #[default]
    Json,
    Form,
}

/// Whether an action's decisions are enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionMode {
    #[default]
    Enforce,
    Shadow,
}

/// A device posture granted to mTLS peers whose principal starts with a prefix.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerPosture {
    /// e.g. `spiffe://devices.example.com/managed/`.
    pub principal_prefix: String,
    /// The value `input.stepguard.context.device_trust` gets, e.g. `managed`.
    pub posture: String,
}

/// Context signals: what stepguard computes about a sensitive request beyond the token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContextConfig {
    /// Fixed window for the subject's sensitive-request velocity, in seconds.
    pub velocity_window_secs: u64,
    /// How long a network a subject was approved from counts as known, in days.
    pub remember_networks_days: u64,
    /// A header an upstream device-posture component sets (Envoy must drop client copies).
    pub device_trust_header: Option<String>,
    /// Device trust from the mTLS peer: when the header gives nothing, the first entry whose
    /// `principal_prefix` starts the downstream peer's principal (the URI SAN Envoy verified,
    /// `attributes.source.principal`) gives the posture.
    pub device_trust_peers: Vec<PeerPosture>,
    /// The header carrying a break-glass justification.
    pub break_glass_justification_header: String,
}

impl Default for ContextConfig {
    fn default() -> Self {
        Self {
            velocity_window_secs: 600,
            remember_networks_days: 90,
            device_trust_header: None,
            device_trust_peers: Vec::new(),
            break_glass_justification_header: "x-break-glass-justification".into(),
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Upper-case HTTP methods; empty means any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Exact host (port ignored) or `*.suffix`.
    #[serde(default)]
    pub host: Option<String>,
    /// Path template: literal segments, `{param}` segments, and an optional trailing `**`.
    pub path: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// Trust claims that Envoy's jwt_authn filter verified and put in dynamic metadata.
    #[serde(default)]
    pub jwt_authn: Option<JwtAuthnConfig>,
    #[serde(default)]
    pub workloads: WorkloadConfig,
}

fn default_leeway() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    pub jwks: JwksConfig,
}

/// Where an issuer's keys come from: exactly one of `file` or `url`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    #[serde(default)]
    pub file: Option<PathBuf>,
    #[serde(default)]
    pub url: Option<String>,
    /// Least time between two fetches triggered by unknown `kid`s.
    #[serde(default = "default_refresh_secs")]
    pub min_refresh_secs: u64,
    /// URL keys are refetched in the background after this long.
    #[serde(default = "default_jwks_ttl")]
    pub ttl_secs: u64,
    /// URL keys are used at most this long after the last successful fetch (stale-if-error).
    #[serde(default = "default_jwks_max_stale")]
    pub max_stale_secs: u64,
    /// Largest JWKS body read from the URL; a larger one is refused as it streams in.
    #[serde(default = "default_jwks_max_bytes")]
    pub max_bytes: usize,
    /// Time allowed for one fetch of the URL (connection, answer and body).
    #[serde(default = "default_jwks_timeout")]
    pub timeout_ms: u64,
}

/// A resolved key source.
#[derive(Debug, Clone)]
pub enum JwksSource {
    File(PathBuf),
    Url(JwksUrl),
}

/// A key set fetched over HTTP(S), and the limits of its fetches.
#[derive(Debug, Clone)]
pub struct JwksUrl {
    pub url: String,
    /// Least time between two fetches triggered by unknown `kid`s.
    pub min_refresh: Duration,
    /// Period of the background refresh.
    pub ttl: Duration,
    /// Keys expire this long after the last successful fetch.
    pub max_stale: Duration,
    pub max_bytes: usize,
    pub timeout: Duration,
    /// How long a verification with an unknown `kid` waits for the fetch it started or joined
    /// (the fetch itself goes on).
    pub wait: Duration,
}

impl JwksUrl {
    /// `url` with the defaults of a `jwks` section; a verification waits for the whole fetch.
    pub fn new(url: impl Into<String>) -> Self {
        let timeout = Duration::from_millis(default_jwks_timeout());
        Self {
            url: url.into(),
            min_refresh: Duration::from_secs(default_refresh_secs()),
            ttl: Duration::from_secs(default_jwks_ttl()),
            max_stale: Duration::from_secs(default_jwks_max_stale()),
            max_bytes: default_jwks_max_bytes(),
            timeout,
            wait: timeout,
        }
    }
}

impl JwksConfig {
    /// The source, with a file path resolved against the config directory. An unknown `kid`
    /// waits for a URL fetch at most half the decision budget.
    pub fn source(&self, config: &Config) -> JwksSource {
        match (&self.file, &self.url) {
            (Some(file), _) => JwksSource::File(config.resolve(file)),
            (None, url) => JwksSource::Url(JwksUrl {
                url: url.clone().unwrap_or_default(),
                min_refresh: Duration::from_secs(self.min_refresh_secs),
                ttl: Duration::from_secs(self.ttl_secs),
                max_stale: Duration::from_secs(self.max_stale_secs),
                max_bytes: self.max_bytes,
                timeout: Duration::from_millis(self.timeout_ms),
                wait: Duration::from_millis(config.decision.budget_ms / 2),
            }),
        }
    }

    /// The limits of a URL fetch, under `field` (`….jwks`).
    fn validate(&self, field: impl Fn(&str) -> String) -> Result<(), ConfigError> {
        if self.ttl_secs == 0 {
            return Err(invalid(field("ttl_secs"), "must be at least 1"));
        }
        if self.max_stale_secs < self.ttl_secs {
            return Err(invalid(
                field("max_stale_secs"),
                "must be at least ttl_secs",
            ));
        }
        if !(1_024..=16 << 20).contains(&self.max_bytes) {
            return Err(invalid(
                field("max_bytes"),
                "must be between 1024 and 16777216",
            ));
        }
        if !(100..=60_000).contains(&self.timeout_ms) {
            return Err(invalid(
                field("timeout_ms"),
                "must be between 100 and 60000",
            ));
        }
        Ok(())
    }
}

fn default_refresh_secs() -> u64 {
    30
}
fn default_jwks_ttl() -> u64 {
    600
}
fn default_jwks_max_stale() -> u64 {
    86_400
}
fn default_jwks_max_bytes() -> usize {
    256 << 10
}
fn default_jwks_timeout() -> u64 {
    5_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtAuthnConfig {
    /// The `payload_in_metadata` name used in Envoy's jwt_authn provider.
    pub payload_key: String,
    /// Issuers (from `identity.issuers`) whose jwt_authn-verified payloads are trusted.
    pub issuers: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadConfig {
    /// SPIFFE trust domains whose mTLS peers are workloads.
    #[serde(default)]
    pub trust_domains: Vec<String>,
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
pub struct ChallengeConfig {
    /// The IdP's authorization endpoint, when it is not discovered (`oidc` absent): browsers are
    /// sent there, and nothing completes their step-up but the grant API.
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    /// The OIDC client that completes browser step-ups: discovery, the callback at
    /// `redirect_uri`'s path, the code exchange and the ID token checks.
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
    pub client_id: String,
    pub redirect_uri: String,
    /// Ordered `acr` values, weakest first.
    pub acr_ladder: Vec<String>,
    #[serde(default = "default_challenge_ttl")]
    pub ttl_secs: u64,
    /// Clock skew allowed between the IdP (or approval system) and stepguard when judging
    /// whether a completion's `auth_time` is after the challenge was issued, and within
    /// `max_age`. Separate from `identity.leeway_secs` (token expiry): a sign-in more than this
    /// before the challenge never completes it. At most 30.
    #[serde(default = "default_completion_skew")]
    pub completion_skew_secs: u64,
    #[serde(default = "default_scope")]
    pub scope: String,
    /// Abuse limits on issuing challenges.
    #[serde(default)]
    pub limits: ChallengeLimits,
}

/// stepguard as the OIDC client (relying party) of the step-up IdP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The IdP's issuer identifier; its configuration is read from
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// A file holding the client secret (relative to this file).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// An environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// How the client authenticates at the token endpoint.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Issuers of the access tokens the sidecar verifies whose `sub` values are this IdP's
    /// (the same user directory). A step-up completes only for the same `sub` of one of these
    /// issuers, or of the IdP itself.
    #[serde(default)]
    pub same_subjects_as: Vec<String>,
    /// Algorithms accepted for ID tokens (never `none` or HMAC).
    #[serde(default = "default_id_token_algorithms")]
    pub id_token_algorithms: Vec<String>,
    /// Push authorization requests (RFC 9126) when the IdP advertises a PAR endpoint.
    #[serde(default)]
    pub pushed_authorization_requests: bool,
    /// Where the callback sends the browser when the challenged page cannot be returned to.
    #[serde(default = "default_return_path")]
    pub default_return: String,
}

/// Client authentication at the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
}

fn default_id_token_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}
fn default_return_path() -> String {
    "/".into()
}

/// How many challenges may be issued per subject and per source IP in a window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChallengeLimits {
    pub per_subject: RateLimit,
    pub per_source_ip: RateLimit,
    /// Open (unexpired, not completed) challenges one subject may have at once.
    pub max_open_per_subject: u32,
    /// Challenges issued for one transaction without a grant being minted in between; past it
    /// the client is looping and gets a 403 until it stops for a challenge lifetime.
    pub max_attempts_per_transaction: u32,
}

impl Default for ChallengeLimits {
    fn default() -> Self {
        Self {
            per_subject: RateLimit {
                max: 10,
                window_secs: 60,
            },
            per_source_ip: RateLimit {
                max: 60,
                window_secs: 60,
            },
            max_open_per_subject: 5,
            max_attempts_per_transaction: 5,
        }
    }
}

/// At most `max` events per fixed window of `window_secs`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub max: u64,
    pub window_secs: u64,
}

fn default_challenge_ttl() -> u64 {
    300
}
fn default_completion_skew() -> u64 {
    5
}
fn default_scope() -> String {
    "openid".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionConfig {
    /// The key id used for new digests.
    pub active_key: String,
    pub keys: Vec<TxnKeyConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnKeyConfig {
    pub id: String,
    /// A file holding the secret (at least 32 bytes).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// An environment variable holding the secret (at least 32 bytes).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// For a previous (not active) key: the end of its overlap, in unix seconds. Until then,
    /// grants bound under it still approve their transaction; after it, they never do.
    #[serde(default)]
    pub accept_until: Option<i64>,
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
    /// The local policy source, paths resolved: what `policy::load` reads (`None` with a
    /// bundle server).
    pub fn policy_source(&self) -> Option<crate::policy::PolicySource> {
        Some(crate::policy::PolicySource {
            path: self.resolve(self.policy.source.as_ref()?),
            data: self.policy.data.as_ref().map(|d| self.resolve(d)),
            entrypoint: self.policy.entrypoint.clone(),
            timeout: std::time::Duration::from_millis(self.policy.timeout_ms),
        })
    }

    fn validate_policy(&self) -> Result<(), ConfigError> {
        if self.policy.timeout_ms == 0 || self.policy.timeout_ms > self.decision.budget_ms {
            return Err(invalid(
                "policy.timeout_ms",
                "must be between 1 and decision.budget_ms",
            ));
        }
        self.validate_policy_reload()?;
        let kind = self
            .policy
            .source
            .as_deref()
            .map(crate::policy::SourceKind::of);
        if self.policy.data.is_some() && kind != Some(crate::policy::SourceKind::Wasm) {
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `json` (default) or `text`.
    pub log_format: String,
    /// A tracing filter, e.g. `info` or `stepguard=debug`.
    pub log_level: String,
    /// OpenTelemetry traces over OTLP/gRPC; absent: no spans are exported.
    pub otlp: Option<OtlpConfig>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: "json".into(),
            log_level: "info".into(),
            otlp: None,
        }
    }
}

/// Where and how traces are exported (OTLP over gRPC, batched off the decision path).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's OTLP/gRPC endpoint, e.g. `http://127.0.0.1:4317` (plain HTTP/2: run a
    /// collector next to stepguard for TLS to a remote one).
    pub endpoint: String,
    /// The `service.name` resource attribute.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// The share of new traces sampled (0.0 to 1.0) when the caller did not decide: a sampled
    /// or unsampled `traceparent` from Envoy is always followed. Default 1.0.
    #[serde(default)]
    pub sample_ratio: Option<f64>,
    /// The deadline of one export call.
    #[serde(default = "default_otlp_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_service_name() -> String {
    "stepguard".into()
}

fn default_otlp_timeout_ms() -> u64 {
    3000
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

    fn validate_actions(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (i, action) in self.actions.iter().enumerate() {
            let field = |f: &str| format!("actions[{i}].{f}");
            if !valid_action_name(&action.name) {
                return Err(invalid(
                    field("name"),
                    "use lower-case letters, digits, `.`, `_` and `-`",
                ));
            }
            if !names.insert(action.name.as_str()) {
                return Err(invalid(
                    field("name"),
                    format!("duplicate action `{}`", action.name),
                ));
            }
            let params = match &action.matcher {
                Some(m) => validate_match(m, &field("match"))?,
                None => Vec::new(),
            };
            let mut seen = HashSet::new();
            for (j, bind) in action.bind.iter().enumerate() {
                validate_bind(bind.field(), &params, action.body)
                    .map_err(|m| invalid(field(&format!("bind[{j}]")), m))?;
                if !seen.insert(bind.field()) {
                    return Err(invalid(
                        field(&format!("bind[{j}]")),
                        format!("`{}` is listed twice", bind.field()),
                    ));
                }
            }
            if action.mode == ActionMode::Shadow && (action.privileged || !action.reversible) {
                return Err(invalid(
                    field("mode"),
                    "a dry run (`shadow`) is refused for privileged and irreversible actions",
                ));
            }
            for (name, f) in [("value", &action.value), ("currency", &action.currency)] {
                if let Some(f) = f
                    .as_ref()
                    .filter(|f| !action.bind.iter().any(|b| b.field() == f.as_str()))
                {
                    return Err(invalid(
                        field(name),
                        format!("`{f}` must also be listed in `bind`"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_identity(&self) -> Result<(), ConfigError> {
        if self.identity.leeway_secs > 300 {
            return Err(invalid("identity.leeway_secs", "at most 300 seconds"));
        }
        for (i, issuer) in self.identity.issuers.iter().enumerate() {
            validate_issuer(issuer, &format!("identity.issuers[{i}]"))?;
        }
        if let Some(jwt_authn) = &self.identity.jwt_authn {
            for iss in &jwt_authn.issuers {
                if !self.identity.issuers.iter().any(|i| &i.issuer == iss) {
                    return Err(invalid(
                        "identity.jwt_authn.issuers",
                        format!("`{iss}` is not in identity.issuers"),
                    ));
                }
            }
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

    fn validate_challenge(&self) -> Result<(), ConfigError> {
        let c = &self.challenge;
        for (name, limit) in [
            ("per_subject", c.limits.per_subject),
            ("per_source_ip", c.limits.per_source_ip),
        ] {
            if limit.max == 0 || !(1..=86_400).contains(&limit.window_secs) {
                return Err(invalid(
                    format!("challenge.limits.{name}"),
                    "max must be at least 1 and window_secs between 1 and 86400",
                ));
            }
        }
        for (name, max) in [
            ("max_open_per_subject", c.limits.max_open_per_subject),
            (
                "max_attempts_per_transaction",
                c.limits.max_attempts_per_transaction,
            ),
        ] {
            if max == 0 {
                return Err(invalid(
                    format!("challenge.limits.{name}"),
                    "must be at least 1",
                ));
            }
        }
        if c.acr_ladder.is_empty() {
            return Err(invalid(
                "challenge.acr_ladder",
                "list at least one acr value",
            ));
        }
        let unique: HashSet<_> = c.acr_ladder.iter().collect();
        if unique.len() != c.acr_ladder.len() {
            return Err(invalid("challenge.acr_ladder", "values must be unique"));
        }
        let issuer = c.oidc.as_ref().map(|o| &o.issuer);
        match (&c.authorization_endpoint, issuer) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "challenge.authorization_endpoint",
                    "not with challenge.oidc: the endpoint is discovered",
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "challenge.oidc",
                    "set challenge.oidc (the IdP, discovered) or challenge.authorization_endpoint",
                ));
            }
            _ => {}
        }
        for (name, url) in [
            ("authorization_endpoint", c.authorization_endpoint.as_ref()),
            ("oidc.issuer", issuer),
            ("redirect_uri", Some(&c.redirect_uri)),
        ] {
            let Some(url) = url else { continue };
            if !secure_url(url) {
                return Err(invalid(
                    format!("challenge.{name}"),
                    "must be https:// (plain http only on loopback)",
                ));
            }
        }
        if c.client_id.is_empty() {
            return Err(invalid("challenge.client_id", "must not be empty"));
        }
        if let Some(o) = &c.oidc {
            if o.client_secret_file.is_some() && o.client_secret_env.is_some() {
                return Err(invalid(
                    "challenge.oidc.client_secret_file",
                    "set at most one of client_secret_file or client_secret_env",
                ));
            }
            for alg in &o.id_token_algorithms {
                crate::identity::parse_algorithm(alg)
                    .map_err(|e| invalid("challenge.oidc.id_token_algorithms", e))?;
            }
            if crate::challenge::safe_path(&o.default_return).is_none() {
                return Err(invalid(
                    "challenge.oidc.default_return",
                    "must be a path on this origin",
                ));
            }
            if callback_path(&c.redirect_uri).is_none() {
                return Err(invalid(
                    "challenge.redirect_uri",
                    "needs a path for the callback",
                ));
            }
        }
        if !(30..=3_600).contains(&c.ttl_secs) {
            return Err(invalid("challenge.ttl_secs", "must be between 30 and 3600"));
        }
        if c.completion_skew_secs > 30 {
            return Err(invalid(
                "challenge.completion_skew_secs",
                "at most 30 seconds (a sign-in older than the challenge by more never completes it)",
            ));
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

/// One trusted token issuer (an `identity.issuers` entry or `grant_api.token`) under `field`.
fn validate_issuer(issuer: &IssuerConfig, field: &str) -> Result<(), ConfigError> {
    let field = |f: &str| format!("{field}.{f}");
    if issuer.issuer.is_empty() {
        return Err(invalid(field("issuer"), "must not be empty"));
    }
    if issuer.audiences.is_empty() {
        return Err(invalid(field("audiences"), "list at least one audience"));
    }
    if issuer.algorithms.is_empty() {
        return Err(invalid(field("algorithms"), "list at least one algorithm"));
    }
    for alg in &issuer.algorithms {
        crate::identity::parse_algorithm(alg).map_err(|m| invalid(field("algorithms"), m))?;
    }
    if issuer.jwks.file.is_some() == issuer.jwks.url.is_some() {
        return Err(invalid(field("jwks"), "set exactly one of file or url"));
    }
    if let Some(url) = &issuer.jwks.url
        && !secure_url(url)
    {
        return Err(invalid(
            field("jwks.url"),
            "must be https:// (plain http only on loopback)",
        ));
    }
    issuer.jwks.validate(|f| field(&format!("jwks.{f}")))
}

fn valid_action_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

fn validate_match(m: &MatchConfig, field: &str) -> Result<Vec<String>, ConfigError> {
    const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    for method in &m.methods {
        if !METHODS.contains(&method.as_str()) {
            return Err(invalid(
                format!("{field}.methods"),
                format!("unknown method `{method}` (use upper case)"),
            ));
        }
    }
    let template = PathTemplate::parse(&m.path).map_err(|e| invalid(format!("{field}.path"), e))?;
    Ok(template.params().map(str::to_string).collect())
}

fn validate_bind(bind: &str, params: &[String], body: BodyFormat) -> Result<(), String> {
    let (kind, name) = bind
        .split_once('.')
        .ok_or_else(|| format!("`{bind}`: use path.P, query.Q, header.H or body.a.b"))?;
    if name.is_empty() {
        return Err(format!("`{bind}`: field name is empty"));
    }
    match kind {
        "path" if params.iter().any(|p| p == name) => Ok(()),
        "path" => Err(format!(
            "`{bind}`: `{name}` is not a parameter of the path template"
        )),
        "body" if body == BodyFormat::Form && name.contains(['.', '[', ']']) => Err(format!(
            "`{bind}`: a form body has flat names only; nested names (`a.b`, `a[b]`) are read \
             differently by different frameworks and cannot be bound"
        )),
        "query" | "body" => Ok(()),
        "header" if name == name.to_ascii_lowercase() => Ok(()),
        "header" => Err(format!("`{bind}`: header names are lower case")),
        _ => Err(format!(
            "`{bind}`: use path.P, query.Q, header.H or body.a.b"
        )),
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
