//! The test kit: one copy of what unit tests, integration tests (`tests/it`), benches, examples
//! and the load driver (`scripts/load.sh`, through `examples/harness.rs`) build on — dev-key
//! tokens, CheckRequests as Envoy sends them, the quickstart config, Envoy bootstraps from the
//! quickstart's own `deploy/local/envoy.yaml`, free loopback ports.
//!
//! Compiled for the crate's unit tests and, for everything else, behind the `testkit` feature
//! (`cargo test --features testkit`; `scripts/test` passes it). It panics on broken fixtures:
//! a test kit has no better way to say so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

pub mod check;
pub mod config;
pub mod envoy;
pub mod evidence;
pub mod legacy_input;
pub mod ports;
pub mod tokens;

pub use config::{DIR, config, manifest_dir};
pub use tokens::{ISSUER, claims, header, sign, sign_text, token};
