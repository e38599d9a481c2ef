//! Policy: the `PolicyEngine` trait, the input document (OPA-Envoy's v3 shape plus a `stepguard`
//! block) and the output contract, parsed into an [`Outcome`]. The contract is documented in
//! `docs/policy.md`; anything that does not fit it is a [`PolicyError`], which the pipeline turns
//! into a 503 on a sensitive route.

mod input;
pub mod rego;

use serde::Serialize;
use serde_json::Value;

use crate::grant::{GrantTerms, Requirement};

pub use input::{InputParts, build_input};

/// A policy fault.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    #[error("loading policy: {0}")]
    Load(String),
    #[error("evaluating policy: {0}")]
    Eval(String),
    #[error("policy result is undefined")]
    Undefined,
    #[error("policy result does not fit the contract: {0}")]
    Contract(String),
}

/// Evaluates a compiled policy. Implementations are synchronous and CPU-bound: the pipeline
/// runs them off the async reactor, under a time limit.
pub trait PolicyEngine: Send + Sync + 'static {
    /// Evaluates the configured entrypoint on `input`.
    fn evaluate(&self, input: Value) -> Result<Value, PolicyError>;
    /// The revision of the loaded policy (bundle revision or content hash).
    fn revision(&self) -> &str;
}

/// The policy's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    Allow {
        reason: String,
        reasons: Vec<String>,
        used_grant: bool,
        requirement: Option<Requirement>,
    },
    Deny {
        status: u16,
        reason: String,
        reasons: Vec<String>,
    },
    StepUp {
        reason: String,
        reasons: Vec<String>,
        requirement: Requirement,
        terms: GrantTerms,
    },
}

impl Outcome {
    /// Reads the output contract; `ladder` is the configured `acr` ladder.
    pub fn from_value(value: &Value, ladder: &[String]) -> Result<Self, PolicyError> {
        let bad = |m: &str| PolicyError::Contract(m.to_string());
        let obj = value
            .as_object()
            .ok_or_else(|| bad("decision is not an object"))?;
        let reason = obj
            .get("reason")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| bad("missing `reason`"))?
            .to_string();
        let mut reasons: Vec<String> = obj
            .get("reasons")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if !reasons.contains(&reason) {
            reasons.insert(0, reason.clone());
        }
        let requirement = obj
            .get("requirement")
            .map(|r| requirement(r, ladder))
            .transpose()?;
        match obj.get("result").and_then(Value::as_str) {
            Some("allow") => Ok(Self::Allow {
                reason,
                reasons,
                used_grant: obj
                    .get("used_grant")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                requirement,
            }),
            Some("deny") => {
                let status = obj.get("status").and_then(Value::as_u64).unwrap_or(403);
                if !(400..=599).contains(&status) {
                    return Err(bad("`status` must be 400-599"));
                }
                Ok(Self::Deny {
                    status: status as u16,
                    reason,
                    reasons,
                })
            }
            Some("step_up") => Ok(Self::StepUp {
                reason,
                reasons,
                requirement: requirement.ok_or_else(|| bad("step_up without `requirement`"))?,
                terms: terms(obj.get("grant"))?,
            }),
            _ => Err(bad("`result` must be allow, deny or step_up")),
        }
    }
}

fn requirement(value: &Value, ladder: &[String]) -> Result<Requirement, PolicyError> {
    let bad = |m: &str| PolicyError::Contract(m.to_string());
    let acr_values: Vec<String> = value
        .get("acr_values")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("requirement without `acr_values`"))?
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("`acr_values` must be strings"))?;
    if acr_values.is_empty() || acr_values.iter().any(|a| !ladder.contains(a)) {
        return Err(bad(
            "`acr_values` must be non-empty values of the acr ladder",
        ));
    }
    let max_age = value
        .get("max_age")
        .and_then(Value::as_i64)
        .filter(|m| *m >= 0)
        .ok_or_else(|| bad("`max_age` must be a non-negative integer"))?;
    Ok(Requirement {
        acr_values,
        max_age,
    })
}

fn terms(value: Option<&Value>) -> Result<GrantTerms, PolicyError> {
    let single_use = value
        .and_then(|g| g.get("single_use"))
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let ttl = value
        .and_then(|g| g.get("ttl"))
        .and_then(Value::as_i64)
        .unwrap_or(120);
    if !(1..=86_400).contains(&ttl) {
        return Err(PolicyError::Contract("`grant.ttl` must be 1-86400".into()));
    }
    Ok(GrantTerms { single_use, ttl })
}

#[cfg(test)]
mod tests;
