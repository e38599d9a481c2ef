//! Shared integration-test harness: real Envoy, an echo upstream, free ports.
//!
//! Include from a test file with `mod support;`. Each test binary uses only
//! part of it, hence the `dead_code` allowance.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod approvals;
pub mod binary;
pub mod blackhole;
pub mod check;
pub mod envoy;
pub mod evidence_tail;
pub mod idp;
pub mod isolated;
pub mod load;
pub mod otlp;
pub mod ports;
pub mod records;
pub mod redis;
pub mod sentinel;
pub mod sidecar;
pub mod stack;
pub mod stepup;
pub mod tokens;
pub mod transmitter;
pub mod upstream;
