//! Policy: the `PolicyEngine` trait, the input document (OPA-Envoy's v3 shape plus a `stepguard`
//! block) and the output contract, parsed into an [`Outcome`]. The contract is documented in
//! `docs/policy.md`; anything that does not fit it is a [`PolicyError`], which the pipeline turns
//! into a 503 on a sensitive route.
//!
//! Three kinds of source, told apart by what `policy.source` names ([`SourceKind`]): a directory
//! of Rego ([`rego`]), an OPA-compiled `.wasm` module ([`wasm`]) or an OPA bundle `.tar.gz`
//! ([`bundle`]). [`load`] builds the engine for any of them; [`reload`] keeps the live one
//! current (local changes, or a bundle server) without a restart.

pub mod bundle;
pub mod config;
pub mod explain;
pub mod input;
pub mod rego;
pub mod reload;
pub mod wasm;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use serde::Serialize;
use serde_json::Value;

use crate::grant::{GrantTerms, Requirement};

pub use input::{InputError, InputParts, PolicyInput, build_input};
pub use reload::{PolicyHandle, Reloader, Trial};

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

/// Evaluates a compiled policy. Implementations are synchronous and CPU-bound; the pipeline runs
/// an engine that bounds its own evaluations ([`PolicyEngine::inline`]) on the calling task, and
/// hands any other off the async reactor, under a time limit.
pub trait PolicyEngine: Send + Sync + 'static {
    /// Evaluates the configured entrypoint on any JSON input (tools, tests, the trial).
    fn evaluate(&self, input: Value) -> Result<Value, PolicyError>;
    /// Evaluates the configured entrypoint on the typed input document: what decisions call.
    /// The default serializes the document to JSON for [`PolicyEngine::evaluate`]; the Rego
    /// engine makes its own value type from it directly, the Wasm engine serializes it into
    /// the module's memory.
    fn evaluate_input(&self, input: &PolicyInput<'_>) -> Result<Value, PolicyError> {
        self.evaluate(input.to_json())
    }
    /// Whether an evaluation may run on the calling async task: it is short, and the engine
    /// itself stops a runaway one (instruction and time limits) within the policy timeout.
    /// `false` (the default, for engines stepguard does not know): the pipeline hands each
    /// evaluation off the reactor and abandons it at the timeout.
    fn inline(&self) -> bool {
        false
    }
    /// The revision of the loaded policy (bundle revision or content hash).
    fn revision(&self) -> &str;
    /// Which engine evaluates it (`rego`, `wasm`), for logs and `stepguard_policy_info`.
    fn engine(&self) -> &'static str {
        "custom"
    }
    /// What the policy's own validation reports for `input` (`misconfiguration`: the
    /// requirements data, ladder and settings it would run with), checked when it loads. `None`
    /// when the policy has no such rule, or the engine evaluates nothing but its entrypoint (a
    /// Wasm module).
    fn misconfiguration(&self, _input: Value) -> Result<Option<Vec<String>>, PolicyError> {
        Ok(None)
    }
}

/// Where a policy comes from: what [`load`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    /// A directory of `.rego` files (or one `.rego` file), a `.wasm` module, or an OPA bundle.
    pub path: PathBuf,
    /// The data document (JSON) for a `.wasm` module; `{}` when absent.
    pub data: Option<PathBuf>,
    /// The rule evaluated: `a/b/c` or `data.a.b.c`.
    pub entrypoint: String,
    /// The evaluation time limit.
    pub timeout: Duration,
}

pub use config::SourceKind;

impl config::PolicyConfig {
    /// The local policy source (paths were resolved when the file was loaded): what
    /// [`load`] reads (`None` with a bundle server).
    pub fn local_source(&self) -> Option<PolicySource> {
        Some(PolicySource {
            path: self.source.clone()?,
            data: self.data.clone(),
            entrypoint: self.entrypoint.clone(),
            timeout: std::time::Duration::from_millis(self.timeout_ms),
        })
    }
}

/// Builds the engine for `source`: reads it, compiles the entrypoint and checks it exists. Pure
/// with respect to running engines, so a reloader can call it and swap the result in.
pub fn load(source: &PolicySource) -> Result<Arc<dyn PolicyEngine>, PolicyError> {
    let kind = SourceKind::of(&source.path);
    if source.data.is_some() && kind != SourceKind::Wasm {
        return Err(PolicyError::Load(
            "a separate data document is only read for a .wasm source".into(),
        ));
    }
    Ok(match kind {
        SourceKind::Rego => Arc::new(rego::RegoPolicy::load(
            &source.path,
            &source.entrypoint,
            source.timeout,
        )?),
        SourceKind::Wasm => Arc::new(wasm::WasmPolicy::load(
            &source.path,
            source.data.as_deref(),
            &source.entrypoint,
            wasm::Limits::new(source.timeout),
        )?),
        SourceKind::Bundle => bundle::load(&source.path, &source.entrypoint, source.timeout)?,
    })
}

/// `data.a.b.c` or `/a/b/c` → `a/b/c`, the form OPA names Wasm entrypoints in.
fn entrypoint_path(entrypoint: &str) -> String {
    match entrypoint.strip_prefix("data.") {
        Some(dotted) => dotted.replace('.', "/"),
        None => entrypoint.trim_matches('/').to_string(),
    }
}

/// `sha256:` and the first 8 bytes (hex) of a SHA-256 over named parts: a revision that is
/// stable across machines, in the form the Rego engine uses.
fn content_revision(parts: &[(&str, &[u8])]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for (name, bytes) in parts {
        ctx.update(name.as_bytes());
        ctx.update(&[0]);
        ctx.update(bytes);
        ctx.update(&[0]);
    }
    let hash = ctx.finish();
    let hex: String = hash.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// The policy's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    Allow {
        reason: String,
        reasons: Vec<String>,
        /// `used_grant` as the policy declared it: `Some(true)`, the approval relies on the
        /// transaction's grant; `Some(false)`, it does not (the session or a transaction token
        /// alone); `None`, not declared — a grant found for the transaction is then spent all the
        /// same (docs/policy.md, "Spending grants").
        used_grant: Option<bool>,
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
                used_grant: match obj.get("used_grant") {
                    None | Some(Value::Null) => None,
                    Some(Value::Bool(used)) => Some(*used),
                    Some(_) => return Err(bad("`used_grant` must be true or false")),
                },
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

/// The decision's `severity` (optional: `low`, `medium`, `high` or `critical`; break-glass is
/// `high`), recorded in the evidence; anything else is ignored.
pub fn severity(value: &Value) -> Option<String> {
    value
        .get("severity")
        .and_then(Value::as_str)
        .filter(|s| matches!(*s, "low" | "medium" | "high" | "critical"))
        .map(str::to_string)
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
