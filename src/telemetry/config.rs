//! The `telemetry` section: logs, metrics and OTLP trace export.
//! Its types are composed into the whole file by [`crate::config`], which validates them.

use serde::Deserialize;

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

pub(crate) fn default_service_name() -> String {
    "stepguard".into()
}

pub(crate) fn default_otlp_timeout_ms() -> u64 {
    3000
}
