//! Every integration test in one binary (one link of wasmtime, regorus and redis instead of one
//! per file). Each module is one former test file; run one with `cargo test --test it <module>::`.
//! The memory-measuring test (`tests/policy_alloc.rs`) stays a binary of its own: it reads the
//! process RSS, which other tests in the same process would disturb.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod ambiguous_consume;
mod audit_privileges;
mod cli;
mod envoy_deploy_configs;
mod envoy_e2e;
mod envoy_stack;
mod evidence_crash;
mod evidence_lifecycle;
mod evidence_ship_cap;
mod evidence_shutdown_ship;
mod evidence_stream;
mod evidence_syscall_faults;
mod evidence_tamper;
mod evidence_unwritable;
mod fixture_idp;
mod grant_api;
mod grant_limits;
mod grant_model;
mod grant_race;
mod grpc_check;
mod header_keys;
mod jwks_faults;
mod jws_vectors;
mod kubernetes_deploy;
mod oidc_stepup;
mod policy_equivalence;
mod policy_reload;
mod policy_wasm;
mod redis_cluster;
mod redis_faults;
mod redis_sentinel;
mod redis_shared;
mod redis_store;
mod serve_ports;
mod soak;
mod soundness_completion;
mod ssf;
mod telemetry_metrics;
mod telemetry_traces;
