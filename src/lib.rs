//! stepguard: step-up authentication as a transaction-level control, for Envoy ext_authz.
//!
//! # Layout
//! One decision flows through these modules, top to bottom (see `Pipeline::decide`):
//!
//! | module | owns |
//! |---|---|
//! | [`grpc`], [`response`] | the Envoy edge: CheckRequest in, CheckResponse out |
//! | [`request`] | the normalized request every stage reads |
//! | [`route`] | the sensitive-action table, best match, route tags |
//! | [`identity`] | JWT/JWKS verification, jwt_authn metadata, SPIFFE workloads, `act` chains |
//! | [`intake`] | refusals before identification: counted and sampled in the log, not recorded |
//! | [`ijson`] | one reading of JSON (I-JSON): unique member names, UTF-8, bounded depth, inexact numbers located |
//! | [`jose`] | a JWS header or JWT payload read through [`ijson`] |
//! | [`txn`] | transaction binding: canonical fields → keyed digest with key id |
//! | [`context`] | context signals: velocity, new network, device trust, break-glass |
//! | [`grant`] | `GrantStore`: grants and challenges, atomic consume, TTLs |
//! | [`policy`] | `PolicyEngine`, the input document and output contract; engines [`policy::rego`] and [`policy::wasm`], [`policy::bundle`], live reload in [`policy::reload`] |
//! | [`challenge`] | issuing challenges: OIDC redirect, RFC 9470 401 |
//! | [`completion`] | completing them: what was achieved vs. what was asked, one grant |
//! | [`oidc`] | the IdP's relying party: discovery, code exchange, ID token, the callback |
//! | [`grant_api`] | `stepguard.v1.GrantService`: approval systems look up, complete, revoke |
//! | [`pipeline`], [`decision`] | `decide()` and what it returns |
//! | [`fault`] | every way stepguard refuses by itself: reason code and who caused it (statuses in [`response`]) |
//! | [`random`] | random tokens (ids, nonces, PKCE verifiers) |
//! | [`evidence`] | tamper-evident audit records: decisions and grant lifecycle events, the spool, shipping |
//! | [`ssf`] | Shared Signals (SSF, CAEP, RISC): what a Security Event Token is and what its event means |
//! | [`config`] | the whole file: each module's section (`<module>/config.rs`) composed, paths resolved once, cross-section rules |
//! | [`section`] | what every section shares: `Invalid`, `secure_url`, `Resolve` |
//! | [`app`], [`http`], [`telemetry`], [`clock`], [`cli`], [`capped`] | wiring; size-capped reading of fetched bodies |
#![forbid(unsafe_code)]

pub mod app;
#[cfg(test)]
mod architecture_tests;
pub mod capped;
pub mod challenge;
pub mod cli;
pub mod clock;
pub mod completion;
pub mod config;
pub mod context;
pub mod decision;
pub mod evidence;
pub mod fault;
#[cfg(any(test, feature = "testkit"))]
#[doc(hidden)]
pub mod fuzz;
pub mod grant;
pub mod grant_api;
pub mod grpc;
pub mod http;
pub mod identity;
pub mod ijson;
pub mod intake;
pub mod jose;
pub mod oidc;
pub mod pipeline;
pub mod policy;
pub mod random;
pub mod request;
pub mod response;
pub mod route;
pub mod section;
pub mod ssf;
pub mod telemetry;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod txn;

/// stepguard's own protobuf API (`proto/stepguard/v1`).
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("stepguard.v1");
}
