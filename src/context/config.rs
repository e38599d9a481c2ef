//! The `context` section: how the context signals (velocity, new networks, device trust) are
//! computed, and its rules ([`ContextConfig::validate`]).

use serde::Deserialize;

use crate::section::{Invalid, invalid};

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

impl ContextConfig {
    /// The section's rules: bounded windows, URI prefixes with a posture, lower-case headers.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !(10..=86_400).contains(&self.velocity_window_secs) {
            return Err(invalid(
                "context.velocity_window_secs",
                "must be between 10 and 86400",
            ));
        }
        if !(1..=3_650).contains(&self.remember_networks_days) {
            return Err(invalid(
                "context.remember_networks_days",
                "must be between 1 and 3650",
            ));
        }
        for (i, p) in self.device_trust_peers.iter().enumerate() {
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
            ("device_trust_header", self.device_trust_header.as_deref()),
            (
                "break_glass_justification_header",
                Some(self.break_glass_justification_header.as_str()),
            ),
        ] {
            let lower = |h: &str| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            };
            if header.is_some_and(|h| !lower(h)) {
                return Err(invalid(
                    format!("context.{name}"),
                    "a lower-case header name",
                ));
            }
        }
        Ok(())
    }
}
