//! The `grant_api` section: who may call the grant API, and its rules
//! ([`GrantApiConfig::validate`]; that its token audience is not a user token's is checked by
//! `crate::config`).

use std::path::Path;

use serde::Deserialize;

use crate::identity::config::IssuerConfig;
use crate::section::{Invalid, Resolve, invalid};

/// Who may call the grant API: bearer JWTs of one issuer, for one of its audiences, optionally
/// only for listed subjects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantApiConfig {
    /// The issuer of the callers' tokens (the shape of an `identity.issuers` entry).
    pub token: IssuerConfig,
    /// The `sub` values allowed to call; empty: any subject of that issuer and audience.
    #[serde(default)]
    pub allowed_subjects: Vec<String>,
}

impl Resolve for GrantApiConfig {
    fn resolve(&mut self, base: &Path) {
        self.token.resolve(base);
    }
}

impl GrantApiConfig {
    /// The section's rules: a valid issuer, no empty subject.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.token.validate("grant_api.token")?;
        for (i, sub) in self.allowed_subjects.iter().enumerate() {
            if sub.trim().is_empty() {
                return Err(invalid(
                    format!("grant_api.allowed_subjects[{i}]"),
                    "must not be empty",
                ));
            }
        }
        Ok(())
    }
}
