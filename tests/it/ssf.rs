//! Shared Signals end to end (issue #14): a transmitter written in the tests (its own ES256 key,
//! real SETs, `ssf-configuration`, JWKS and poll endpoint on loopback) and two real
//! `stepguard serve` replicas sharing one real Redis, each behind its own real Envoy.
//!
//! - [`receiving`]: a `session-revoked` pushed to replica A refuses that session's next
//!   sensitive request on replica B, and nothing else; replayed, forged, misaddressed and
//!   unknown SETs are refused or ignored as RFC 8935 and the docs say;
//! - [`polling`]: RFC 8936 poll on one replica: applied, acknowledged, refusals reported, the
//!   subject refused on both replicas;
//! - [`restart`]: applied events and the replay memory outlive a replica's restart;
//! - [`sending`]: after a privileged approval, a receiver written in the tests gets one SET
//!   from stepguard and verifies it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;
mod polling;
mod receiver;
mod receiving;
mod restart;
mod sending;
