//! The `telemetry` section: logs, metrics and OTLP trace export, and its rules
//! ([`TelemetryConfig::validate`]).

use serde::Deserialize;

use crate::section::{Invalid, invalid};

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

impl TelemetryConfig {
    /// The section's rules: a known log format; an OTLP endpoint, name, ratio and deadline that
    /// can work.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !matches!(self.log_format.as_str(), "json" | "text") {
            return Err(invalid("telemetry.log_format", "must be `json` or `text`"));
        }
        let Some(otlp) = &self.otlp else {
            return Ok(());
        };
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
        Ok(())
    }
}
