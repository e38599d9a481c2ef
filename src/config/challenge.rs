//! The `challenge` section's rules: limits, lifetimes, the IdP and its endpoints.

use super::*;

impl Config {
    pub(super) fn validate_challenge(&self) -> Result<(), ConfigError> {
        let c = &self.challenge;
        for (name, limit) in [
            ("per_subject", c.limits.per_subject),
            ("per_source_ip", c.limits.per_source_ip),
        ] {
            if limit.max == 0 || !(1..=86_400).contains(&limit.window_secs) {
                return Err(invalid(
                    format!("challenge.limits.{name}"),
                    "max must be at least 1 and window_secs between 1 and 86400",
                ));
            }
        }
        for (name, max) in [
            ("max_open_per_subject", c.limits.max_open_per_subject),
            (
                "max_attempts_per_transaction",
                c.limits.max_attempts_per_transaction,
            ),
        ] {
            if max == 0 {
                return Err(invalid(
                    format!("challenge.limits.{name}"),
                    "must be at least 1",
                ));
            }
        }
        if c.acr_ladder.is_empty() {
            return Err(invalid(
                "challenge.acr_ladder",
                "list at least one acr value",
            ));
        }
        let unique: HashSet<_> = c.acr_ladder.iter().collect();
        if unique.len() != c.acr_ladder.len() {
            return Err(invalid("challenge.acr_ladder", "values must be unique"));
        }
        let issuer = c.oidc.as_ref().map(|o| &o.issuer);
        match (&c.authorization_endpoint, issuer) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "challenge.authorization_endpoint",
                    "not with challenge.oidc: the endpoint is discovered",
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "challenge.oidc",
                    "set challenge.oidc (the IdP, discovered) or challenge.authorization_endpoint",
                ));
            }
            _ => {}
        }
        for (name, url) in [
            ("authorization_endpoint", c.authorization_endpoint.as_ref()),
            ("oidc.issuer", issuer),
            ("redirect_uri", Some(&c.redirect_uri)),
        ] {
            let Some(url) = url else { continue };
            if !secure_url(url) {
                return Err(invalid(
                    format!("challenge.{name}"),
                    "must be https:// (plain http only on loopback)",
                ));
            }
        }
        if c.client_id.is_empty() {
            return Err(invalid("challenge.client_id", "must not be empty"));
        }
        if let Some(o) = &c.oidc {
            if o.client_secret_file.is_some() && o.client_secret_env.is_some() {
                return Err(invalid(
                    "challenge.oidc.client_secret_file",
                    "set at most one of client_secret_file or client_secret_env",
                ));
            }
            for alg in &o.id_token_algorithms {
                crate::identity::parse_algorithm(alg)
                    .map_err(|e| invalid("challenge.oidc.id_token_algorithms", e))?;
            }
            if crate::challenge::safe_path(&o.default_return).is_none() {
                return Err(invalid(
                    "challenge.oidc.default_return",
                    "must be a path on this origin",
                ));
            }
            if callback_path(&c.redirect_uri).is_none() {
                return Err(invalid(
                    "challenge.redirect_uri",
                    "needs a path for the callback",
                ));
            }
        }
        if !(30..=3_600).contains(&c.ttl_secs) {
            return Err(invalid("challenge.ttl_secs", "must be between 30 and 3600"));
        }
        if c.completion_skew_secs > 30 {
            return Err(invalid(
                "challenge.completion_skew_secs",
                "at most 30 seconds (a sign-in older than the challenge by more never completes it)",
            ));
        }
        Ok(())
    }
}
