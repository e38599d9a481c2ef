//! A policy's own validation rules (`misconfiguration`, `input_errors`), evaluated with the
//! interpreter: what the trial checks when a policy loads ([`crate::policy::reload::Trial`]),
//! never on the per-request path.

use serde_json::Value;

use super::{PolicyError, RegoPolicy, to_json, to_rego};

impl RegoPolicy {
    /// A validation rule (`misconfiguration`, `input_errors`) evaluated with the interpreter on
    /// `input`: from `data.stepguard.validate` (the shipped policy), else from
    /// `data.stepguard.authz` (policies written before validation moved); `None` when neither
    /// package has it.
    pub fn validation(&self, input: Value, rule: &str) -> Result<Option<Vec<String>>, PolicyError> {
        let mut engine = self.engine.clone();
        let packages = engine
            .get_packages()
            .map_err(|e| PolicyError::Eval(e.to_string()))?;
        engine.set_input(to_rego(input));
        for package in ["data.stepguard.validate", "data.stepguard.authz"] {
            if !packages.iter().any(|p| p == package) {
                continue;
            }
            let query = format!("{package}.{rule}");
            let results = engine
                .eval_query(query.clone(), false)
                .map_err(|e| PolicyError::Eval(format!("{query}: {e}")))?;
            let Some(value) = results
                .result
                .first()
                .and_then(|r| r.expressions.first())
                .map(|e| to_json(&e.value))
            else {
                continue;
            };
            let Value::Array(items) = value else {
                return Err(PolicyError::Contract(format!(
                    "{query} is not a set: {value}"
                )));
            };
            return Ok(Some(
                items
                    .into_iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                    .collect(),
            ));
        }
        Ok(None)
    }
}
