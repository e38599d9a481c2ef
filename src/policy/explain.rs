//! Explaining a decision (`stepguard check`): the input document the pipeline handed the policy,
//! the policy's raw result, and, for Rego sources, every rule of every policy package evaluated
//! on that same input (regorus's interpreter), so one can see which rules fired. A Wasm module
//! only exposes its entrypoint: its result is all there is to show.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;

use super::rego::RegoPolicy;
use super::{PolicyEngine, PolicyError, PolicySource, SourceKind, bundle};

/// A policy engine that remembers the last input it evaluated and its result; everything else
/// is the wrapped engine's. `stepguard check` puts one in the pipeline to see what it asked.
pub struct Recorder {
    inner: Arc<dyn PolicyEngine>,
    last: Mutex<Option<(Value, Result<Value, String>)>>,
}

impl Recorder {
    pub fn new(inner: Arc<dyn PolicyEngine>) -> Self {
        Self {
            inner,
            last: Mutex::new(None),
        }
    }

    /// The last input evaluated and its result (an error as text), if the policy was asked.
    pub fn last(&self) -> Option<(Value, Result<Value, String>)> {
        self.last.lock().ok()?.clone()
    }
}

impl PolicyEngine for Recorder {
    fn evaluate(&self, input: Value) -> Result<Value, PolicyError> {
        let result = self.inner.evaluate(input.clone());
        if let Ok(mut last) = self.last.lock() {
            *last = Some((input, result.clone().map_err(|e| e.to_string())));
        }
        result
    }

    fn evaluate_input(&self, input: &super::PolicyInput<'_>) -> Result<Value, PolicyError> {
        let result = self.inner.evaluate_input(input);
        if let Ok(mut last) = self.last.lock() {
            *last = Some((input.to_json(), result.clone().map_err(|e| e.to_string())));
        }
        result
    }

    fn inline(&self) -> bool {
        self.inner.inline()
    }

    fn revision(&self) -> &str {
        self.inner.revision()
    }

    fn engine(&self) -> &'static str {
        self.inner.engine()
    }
}

/// The rules of one policy package that are defined for an input.
#[derive(Debug, Clone, Serialize)]
pub struct PackageRules {
    /// `data.stepguard.authz`.
    pub package: String,
    /// Rule name → value, for the rules that are defined (functions and rules undefined for
    /// this input are absent; a rule that is `false` is defined and listed).
    pub rules: serde_json::Map<String, Value>,
}

/// How a policy source's rules can be listed.
pub enum Rules {
    /// A Rego source (a directory, a file, or a bundle without a Wasm module).
    Rego(Box<RegoPolicy>),
    /// An OPA-compiled Wasm module: only the entrypoint's result is visible.
    Wasm,
}

impl Rules {
    /// Loads `source` for explaining (Rego sources are compiled again, with the interpreter).
    pub fn load(source: &PolicySource) -> Result<Self, PolicyError> {
        match SourceKind::of(&source.path) {
            SourceKind::Rego => Ok(Self::Rego(Box::new(RegoPolicy::load(
                &source.path,
                &source.entrypoint,
                source.timeout,
            )?))),
            SourceKind::Wasm => Ok(Self::Wasm),
            SourceKind::Bundle => {
                let bytes = std::fs::read(&source.path)
                    .map_err(|e| PolicyError::Load(format!("{}: {e}", source.path.display())))?;
                let bundle = bundle::Bundle::read(&bytes)?;
                if bundle.has_wasm() {
                    return Ok(Self::Wasm);
                }
                Ok(Self::Rego(Box::new(
                    bundle.into_rego(&source.entrypoint, source.timeout)?,
                )))
            }
        }
    }

    /// The engine kind: `rego` or `wasm`.
    pub fn engine(&self) -> &'static str {
        match self {
            Self::Rego(_) => "rego",
            Self::Wasm => "wasm",
        }
    }

    /// Every defined rule of every policy package on `input`; `None` for Wasm.
    pub fn evaluate(&self, input: &Value) -> Result<Option<Vec<PackageRules>>, PolicyError> {
        let Self::Rego(policy) = self else {
            return Ok(None);
        };
        let packages = policy
            .explain(input.clone())?
            .into_iter()
            .filter_map(|(package, value)| match value {
                Value::Object(rules) if !rules.is_empty() => Some(PackageRules { package, rules }),
                _ => None,
            })
            .collect();
        Ok(Some(packages))
    }
}

#[cfg(test)]
mod tests;
