//! The `context` section: how the context signals (velocity, new networks, device trust) are computed.
//! Its types are composed into the whole file by [`crate::config`], which validates them.

use serde::Deserialize;

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
