//! The stages of a check, each timed (`stepguard_stage_duration_seconds{stage}`) and, while
//! spans are exported, traced. A leaf: both [`super::metrics`] and [`super::traces`] use it.

/// A stage of a check, timed and (while exporting) traced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Classify,
    Identify,
    Bind,
    GrantLookup,
    Policy,
    Challenge,
    Consume,
    Evidence,
    /// The whole check.
    Total,
}

impl Stage {
    /// The `stage` label.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Classify => "classify",
            Stage::Identify => "identify",
            Stage::Bind => "bind",
            Stage::GrantLookup => "grant_lookup",
            Stage::Policy => "policy",
            Stage::Challenge => "challenge",
            Stage::Consume => "consume",
            Stage::Evidence => "evidence",
            Stage::Total => "total",
        }
    }

    /// The span's name.
    pub fn span_name(self) -> &'static str {
        match self {
            Stage::Classify => "stepguard.classify",
            Stage::Identify => "stepguard.identify",
            Stage::Bind => "stepguard.bind",
            Stage::GrantLookup => "stepguard.grant_lookup",
            Stage::Policy => "stepguard.policy",
            Stage::Challenge => "stepguard.challenge",
            Stage::Consume => "stepguard.consume",
            Stage::Evidence => "stepguard.evidence",
            Stage::Total => "stepguard.check",
        }
    }
}
