//! The input document's types: the contract between stepguard and a policy. Serialized, they are
//! the JSON of docs/policy.md ("Input document"), field for field; deserialized, they refuse a
//! document that breaks the contract, naming the field; their JSON Schema is
//! `policies/schema/input.json`.
//!
//! Strings, lists and maps borrow from what the pipeline already holds (`Cow`), so building a
//! document copies nothing; a parsed one owns its data.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ssf::event::Recorded;

/// The whole input: OPA-Envoy's v3 shape and the `stepguard` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "stepguard policy input")]
pub struct PolicyInput<'a> {
    pub attributes: Attributes<'a>,
    /// Percent-decoded, non-empty path segments.
    pub parsed_path: Cow<'a, [String]>,
    /// Query parameters: name → every value, in order.
    pub parsed_query: BTreeMap<Cow<'a, str>, Vec<Cow<'a, str>>>,
    /// A JSON body as parsed (any JSON value); a form body as an object of strings; null for
    /// other, empty, invalid or truncated bodies.
    pub parsed_body: Cow<'a, Value>,
    pub truncated_body: bool,
    pub version: Version,
    pub stepguard: Stepguard<'a>,
}

/// `input.attributes`, as OPA-Envoy sends them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Attributes<'a> {
    pub source: Peer<'a>,
    pub destination: Peer<'a>,
    pub request: Request<'a>,
    /// Per-route tags from Envoy.
    pub context_extensions: Cow<'a, HashMap<String, String>>,
}

/// The source or destination of the connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Peer<'a> {
    pub address: Address<'a>,
    /// The mTLS peer's URI SAN (`spiffe://…`); absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<Cow<'a, str>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Address<'a> {
    pub socket_address: SocketAddress<'a>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SocketAddress<'a> {
    pub address: Option<Cow<'a, str>>,
    pub port_value: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Request<'a> {
    pub http: Http<'a>,
}

/// `input.attributes.request.http`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Http<'a> {
    pub id: Cow<'a, str>,
    /// Upper-case.
    pub method: Cow<'a, str>,
    /// Lower-case names.
    pub headers: Cow<'a, HashMap<String, String>>,
    /// With the query string, as Envoy reports it.
    pub path: Cow<'a, str>,
    /// Lower-case, port kept.
    pub host: Cow<'a, str>,
    pub scheme: Cow<'a, str>,
    pub protocol: Cow<'a, str>,
}

/// `input.version`: always `{"encoding": "protojson", "ext_authz": "v3"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Version {
    pub encoding: Cow<'static, str>,
    pub ext_authz: Cow<'static, str>,
}

impl Default for Version {
    fn default() -> Self {
        Self {
            encoding: Cow::Borrowed("protojson"),
            ext_authz: Cow::Borrowed("v3"),
        }
    }
}

/// `input.stepguard`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stepguard<'a> {
    /// Unix seconds.
    pub now: i64,
    /// The configured `acr` values, weakest first.
    pub acr_ladder: Cow<'a, [String]>,
    pub action: Action<'a>,
    pub subject: Subject<'a>,
    pub transaction: Transaction<'a>,
    /// The transaction-bound grant found for this transaction, if any.
    pub grant: Option<Grant<'a>>,
    pub context: Context<'a>,
}

/// `input.stepguard.action`: the sensitive action the request was classified as.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Action<'a> {
    #[schemars(length(min = 1))]
    pub name: Cow<'a, str>,
    pub risk: Risk,
    pub reversible: bool,
    pub privileged: bool,
    /// The transaction's value (sent as a float: `25000.0`).
    pub value: Option<f64>,
    pub currency: Option<Cow<'a, str>>,
    pub mode: Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    Low,
    Medium,
    High,
    Critical,
}

/// `shadow`: a dry run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Shadow,
}

/// `input.stepguard.subject`: who is asking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Subject<'a> {
    pub kind: Kind,
    pub id: Option<Cow<'a, str>>,
    pub issuer: Option<Cow<'a, str>>,
    pub acr: Option<Cow<'a, str>>,
    /// The index of `acr` in `acr_ladder`; -1 when unknown or absent.
    pub acr_rank: i64,
    pub amr: Cow<'a, [String]>,
    pub auth_time: Option<i64>,
    /// `now - auth_time`.
    pub session_age: Option<i64>,
    pub roles: Cow<'a, [String]>,
    pub scopes: Cow<'a, [String]>,
    pub client_id: Option<Cow<'a, str>>,
    pub sid: Option<Cow<'a, str>>,
    /// The RFC 8693 delegation chain, outermost (current) actor first; `[]` if none.
    pub act: Vec<Actor<'a>>,
    pub workload: Option<Workload<'a>>,
    /// Every verified claim.
    pub claims: Cow<'a, Map<String, Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Human,
    Workload,
    Anonymous,
}

/// One actor of a delegation chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Actor<'a> {
    pub sub: Option<Cow<'a, str>>,
    pub iss: Option<Cow<'a, str>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workload<'a> {
    pub spiffe_id: Cow<'a, str>,
}

/// `input.stepguard.transaction`: the transaction's binding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Transaction<'a> {
    /// `key_id:base64url(hmac)`.
    pub digest: Cow<'a, str>,
    pub key_id: Cow<'a, str>,
    /// Bound field name → its plain value (numbers as canonical text); null when the request
    /// does not carry the field.
    pub bound: BTreeMap<Cow<'a, str>, Option<Cow<'a, str>>>,
}

/// `input.stepguard.grant`: a step-up grant for this very transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Grant<'a> {
    pub acr: Cow<'a, str>,
    pub acr_rank: i64,
    pub amr: Cow<'a, [String]>,
    pub auth_time: i64,
    /// `oidc`, `rfc9470` or `grant_api`.
    pub method: Cow<'a, str>,
    pub challenge_id: Option<Cow<'a, str>>,
    pub issued_at: i64,
    /// null: reusable until it expires.
    pub uses_left: Option<u32>,
    /// The policy revision that required the step-up.
    pub policy_revision: Option<Cow<'a, str>>,
}

/// `input.stepguard.context`: the context signals; null when not computed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Context<'a> {
    pub source_ip: Option<Cow<'a, str>>,
    pub peer_principal: Option<Cow<'a, str>>,
    /// The source network: `a.b.c.0/24`, or the IPv6 `/64`.
    pub network: Option<Cow<'a, str>>,
    /// Approved from other networks, never from this one.
    pub new_network: Option<bool>,
    pub velocity: Option<Velocity>,
    /// From a configured device-posture header or peer.
    pub device_trust: Option<Cow<'a, str>>,
    pub break_glass_justification: Option<Cow<'a, str>>,
    /// The subject's Shared Signals events (CAEP, RISC) still counting, oldest first
    /// (docs/continuous-assurance.md); absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Cow<'a, Recorded>>,
}

/// Sensitive requests by this subject in the current window, this one included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Velocity {
    pub window_secs: i64,
    pub count: u64,
}
