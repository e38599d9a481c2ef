//! The `listen` section: the gRPC, HTTP and optional admin listeners, and its rule (no two on
//! one address).

use std::net::SocketAddr;

use serde::Deserialize;

use crate::section::{Invalid, invalid};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// gRPC: envoy.service.auth.v3.Authorization and grpc.health.v1.Health.
    pub grpc: SocketAddr,
    /// HTTP: the OIDC callback; also /healthz, /readyz and /metrics unless `admin` is set.
    pub http: SocketAddr,
    /// Admin HTTP: /healthz, /readyz and /metrics on a port of their own, so the
    /// internet-facing callback port serves nothing else. Absent: they stay on `http`.
    #[serde(default)]
    pub admin: Option<SocketAddr>,
}

impl Listen {
    /// No two listeners on one address (port 0 asks for any free port, so it never clashes).
    pub fn validate(&self) -> Result<(), Invalid> {
        let mut named = vec![("listen.grpc", self.grpc), ("listen.http", self.http)];
        if let Some(admin) = self.admin {
            named.push(("listen.admin", admin));
        }
        for (i, (field, addr)) in named.iter().enumerate() {
            let clash = named[..i]
                .iter()
                .find(|(_, other)| addr.port() != 0 && other == addr);
            if let Some((other_field, _)) = clash {
                return Err(invalid(
                    *field,
                    format!("{addr} is already `{other_field}`: each listener needs its own port"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
