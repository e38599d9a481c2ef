//! The `identity` section's rules: issuers, key sets and their fetch limits.

use super::*;

impl Config {
    pub(super) fn validate_identity(&self) -> Result<(), ConfigError> {
        if self.identity.leeway_secs > 300 {
            return Err(invalid("identity.leeway_secs", "at most 300 seconds"));
        }
        for (i, issuer) in self.identity.issuers.iter().enumerate() {
            validate_issuer(issuer, &format!("identity.issuers[{i}]"))?;
        }
        if let Some(jwt_authn) = &self.identity.jwt_authn {
            for iss in &jwt_authn.issuers {
                if !self.identity.issuers.iter().any(|i| &i.issuer == iss) {
                    return Err(invalid(
                        "identity.jwt_authn.issuers",
                        format!("`{iss}` is not in identity.issuers"),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl JwksConfig {
    /// The source, with a file path resolved against the config directory. An unknown `kid`
    /// waits for a URL fetch at most half the decision budget.
    pub fn source(&self, config: &Config) -> JwksSource {
        self.source_in(&config.base_dir, config.jwks_wait())
    }

    /// The limits of a URL fetch, under `field` (`….jwks`).
    fn validate(&self, field: impl Fn(&str) -> String) -> Result<(), ConfigError> {
        if self.ttl_secs == 0 {
            return Err(invalid(field("ttl_secs"), "must be at least 1"));
        }
        if self.max_stale_secs < self.ttl_secs {
            return Err(invalid(
                field("max_stale_secs"),
                "must be at least ttl_secs",
            ));
        }
        if !(1_024..=16 << 20).contains(&self.max_bytes) {
            return Err(invalid(
                field("max_bytes"),
                "must be between 1024 and 16777216",
            ));
        }
        if !(100..=60_000).contains(&self.timeout_ms) {
            return Err(invalid(
                field("timeout_ms"),
                "must be between 100 and 60000",
            ));
        }
        Ok(())
    }
}

/// One trusted token issuer (an `identity.issuers` entry or `grant_api.token`) under `field`.
pub(super) fn validate_issuer(issuer: &IssuerConfig, field: &str) -> Result<(), ConfigError> {
    let field = |f: &str| format!("{field}.{f}");
    if issuer.issuer.is_empty() {
        return Err(invalid(field("issuer"), "must not be empty"));
    }
    if issuer.audiences.is_empty() {
        return Err(invalid(field("audiences"), "list at least one audience"));
    }
    if issuer.algorithms.is_empty() {
        return Err(invalid(field("algorithms"), "list at least one algorithm"));
    }
    for alg in &issuer.algorithms {
        crate::identity::parse_algorithm(alg).map_err(|m| invalid(field("algorithms"), m))?;
    }
    if issuer.jwks.file.is_some() == issuer.jwks.url.is_some() {
        return Err(invalid(field("jwks"), "set exactly one of file or url"));
    }
    if let Some(url) = &issuer.jwks.url
        && !secure_url(url)
    {
        return Err(invalid(
            field("jwks.url"),
            "must be https:// (plain http only on loopback)",
        ));
    }
    issuer.jwks.validate(|f| field(&format!("jwks.{f}")))
}
