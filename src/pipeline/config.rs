//! The `decision` section: the budget of one decision, the drain time, the longest path
//! classified; and its rules.

use serde::Deserialize;

use crate::section::{Invalid, invalid};

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

impl DecisionConfig {
    /// The section's rules: a budget Envoy's deadline can hold, at least one path segment.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !(10..=5_000).contains(&self.budget_ms) {
            return Err(invalid("decision.budget_ms", "must be between 10 and 5000"));
        }
        if self.max_path_segments == 0 {
            return Err(invalid("decision.max_path_segments", "must be at least 1"));
        }
        Ok(())
    }
}
