//! Context signals stepguard computes for the policy, beyond what the token says: the
//! subject's sensitive-request velocity, whether this source network is new for the subject,
//! device trust from a header an upstream posture component sets, and a break-glass
//! justification. Counters and the known-network marks live in the grant store (Redis when
//! configured, so every replica sees them), each with a TTL.
//!
//! A network becomes *known* only after an approved sensitive decision from it
//! ([`Signals::remember`]): a request that merely arrives from a new network — a stolen token
//! used elsewhere — does not make the network known for the next one. "New" is relative to a
//! baseline: for a subject never approved from any network, `new_network` is null (unknown),
//! and the policy decides what that means.

mod signals;

use std::net::IpAddr;

use serde::Serialize;

use crate::context::config::ContextConfig;
use crate::grant::{GrantError, GrantStore, subject_tag};
use crate::request::AuthzRequest;

pub mod config;

/// The signals of one sensitive request, as the policy sees them
/// (`input.stepguard.context`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signals {
    /// `a.b.c.0/24` or the IPv6 `/64`, when the source address is known.
    pub network: Option<String>,
    /// Never approved from this network before (within the remembered period) although
    /// approved from others; `None` without a source address or without any history.
    pub new_network: Option<bool>,
    pub velocity: Velocity,
    pub device_trust: Option<String>,
    pub break_glass_justification: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Velocity {
    pub window_secs: i64,
    /// Sensitive requests by the subject in the current window, this one included.
    pub count: u64,
}

/// Longest header value taken into the input.
const MAX_HEADER_CHARS: usize = 512;

/// The posture of a downstream mTLS peer, by the first configured principal prefix it has.
fn peer_posture(config: &ContextConfig, principal: Option<&str>) -> Option<String> {
    let principal = principal.filter(|p| !p.is_empty())?;
    config
        .device_trust_peers
        .iter()
        .find(|p| principal.starts_with(&p.principal_prefix))
        .map(|p| p.posture.clone())
}

impl Signals {
    /// Counts this request and reads what is known about the subject's network (one store
    /// round trip).
    pub async fn compute(
        grants: &dyn GrantStore,
        config: &ContextConfig,
        subject: &str,
        req: &AuthzRequest,
        now: i64,
    ) -> Result<Self, GrantError> {
        let tag = subject_tag(subject);
        let network = req.raw.source_address.as_deref().and_then(network_of);
        let window = config.velocity_window_secs as i64;
        let velocity_name = format!("velocity:{}", &tag["subject:".len()..]);
        let seen_name = seen_name(&tag, network.as_deref().unwrap_or("-"));
        let history = seen_name_any(&tag);
        let (count, [seen, known_elsewhere]) =
            signals::read(grants, &velocity_name, window, [&seen_name, &history], now).await?;
        let header = |name: &str| {
            req.header(name)
                .map(|v| v.chars().take(MAX_HEADER_CHARS).collect::<String>())
                .filter(|v| !v.trim().is_empty())
        };
        Ok(Self {
            new_network: network.as_ref().filter(|_| known_elsewhere).map(|_| !seen),
            network,
            velocity: Velocity {
                window_secs: window,
                count,
            },
            device_trust: config
                .device_trust_header
                .as_deref()
                .and_then(header)
                .or_else(|| peer_posture(config, req.raw.source_principal.as_deref())),
            break_glass_justification: header(&config.break_glass_justification_header),
        })
    }

    /// After an approval: the subject's network is known from now on.
    pub async fn remember(
        &self,
        grants: &dyn GrantStore,
        config: &ContextConfig,
        subject: &str,
        now: i64,
    ) -> Result<(), GrantError> {
        let Some(network) = &self.network else {
            return Ok(());
        };
        if self.new_network == Some(false) {
            return Ok(());
        }
        let tag = subject_tag(subject);
        let until = now + config.remember_networks_days as i64 * 86_400;
        grants
            .remember(&seen_name(&tag, network), until, now)
            .await?;
        // The subject now has a baseline (refreshed by every newly known network).
        grants.remember(&seen_name_any(&tag), until, now).await?;
        Ok(())
    }
}

/// The subject's "approved from some network" mark.
fn seen_name_any(tag: &str) -> String {
    format!("seen:{}:any", &tag["subject:".len()..])
}

fn seen_name(tag: &str, network: &str) -> String {
    // Key-safe: the network's `/` and `:` are fine; braces never occur.
    format!("seen:{}:{network}", &tag["subject:".len()..])
}

/// The network a source address belongs to: the IPv4 /24 or the IPv6 /64.
pub fn network_of(address: &str) -> Option<String> {
    match address.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            Some(format!("{a}.{b}.{c}.0/24"))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_the_v4_24_and_the_v6_64() {
        assert_eq!(network_of("10.1.2.3").as_deref(), Some("10.1.2.0/24"));
        assert_eq!(
            network_of("2001:db8:aa:bb:1:2:3:4").as_deref(),
            Some("2001:db8:aa:bb::/64")
        );
        assert_eq!(network_of("not an ip"), None);
    }

    #[test]
    fn an_mtls_peer_gets_the_posture_of_its_principal_prefix() {
        let config = ContextConfig {
            device_trust_peers: vec![
                crate::context::config::PeerPosture {
                    principal_prefix: "spiffe://devices.example.com/managed/".into(),
                    posture: "managed".into(),
                },
                crate::context::config::PeerPosture {
                    principal_prefix: "spiffe://devices.example.com/".into(),
                    posture: "enrolled".into(),
                },
            ],
            ..ContextConfig::default()
        };
        let of = |p| peer_posture(&config, p);
        assert_eq!(
            of(Some("spiffe://devices.example.com/managed/laptop-7")).as_deref(),
            Some("managed")
        );
        assert_eq!(
            of(Some("spiffe://devices.example.com/byod/phone-1")).as_deref(),
            Some("enrolled")
        );
        assert_eq!(of(Some("spiffe://other.example.com/managed/x")), None);
        assert_eq!(of(Some("")), None);
        assert_eq!(of(None), None);
        assert_eq!(
            peer_posture(&ContextConfig::default(), Some("spiffe://a/b")),
            None
        );
    }
}
