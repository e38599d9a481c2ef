//! The policy input: OPA-Envoy's v3 shape (`attributes`, `parsed_path`, `parsed_query`,
//! `parsed_body`, `truncated_body`, `version`) so OPA-Envoy users feel at home, plus one
//! `stepguard` block filled in here: `now`, `acr_ladder`, `action`, `subject`, `transaction`,
//! `grant` and `context`.
//!
//! The document is typed ([`PolicyInput`], in [`document`]): built from the pipeline's own
//! values by borrowing them, handed to the Rego engine as a `regorus::Value` made straight from
//! the types ([`rego_value`]), to the Wasm engine serialized, and read back from JSON
//! ([`PolicyInput::from_json`]) only where a document comes from outside (tests, tools): that
//! parse is where a document that breaks the contract is refused. Its JSON Schema
//! ([`schema`]) is committed as `policies/schema/input.json`.

pub mod document;
pub mod rego_value;
pub mod schema;

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::context::Signals;
use crate::grant::Grant;
use crate::identity::{Subject, SubjectKind};
use crate::request::{AuthzRequest, Body};
use crate::route::Action;
use crate::ssf::event::Recorded;
use crate::txn::{Transaction, untag};

pub use document::PolicyInput;

/// Everything the input is built from.
pub struct InputParts<'a> {
    pub req: &'a AuthzRequest,
    pub action: &'a Action,
    pub subject: &'a Subject,
    pub txn: &'a Transaction,
    pub grant: Option<&'a Grant>,
    pub now: i64,
    pub ladder: &'a [String],
    /// The context signals, when computed (`None`: every signal is null).
    pub signals: Option<&'a Signals>,
    /// The subject's Shared Signals events (`context.events`; empty: absent from the input).
    pub events: &'a [Recorded],
}

/// A document that breaks the input contract, naming where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the policy input breaks its contract (policies/schema/input.json): {0}")]
pub struct InputError(pub String);

fn rank(ladder: &[String], acr: Option<&str>) -> i64 {
    acr.and_then(|a| ladder.iter().position(|l| l == a))
        .map_or(-1, |i| i as i64)
}

fn borrowed(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(Cow::Borrowed)
}

/// Builds the input document as JSON: for tools, the trial evaluation and the Wasm engine's
/// callers. Decisions use [`PolicyInput::build`].
pub fn build_input(p: &InputParts<'_>) -> Value {
    // A document of strings, numbers, booleans and maps with string keys always serializes.
    serde_json::to_value(PolicyInput::build(p)).unwrap_or(Value::Null)
}

impl<'a> PolicyInput<'a> {
    /// Builds the document for a decision, borrowing from `p`.
    pub fn build(p: &InputParts<'a>) -> Self {
        use document::*;
        let raw = &p.req.raw;
        let mut parsed_query: BTreeMap<Cow<'a, str>, Vec<Cow<'a, str>>> = BTreeMap::new();
        for (k, v) in &p.req.query {
            parsed_query
                .entry(Cow::Borrowed(k.as_str()))
                .or_default()
                .push(Cow::Borrowed(v.as_str()));
        }
        let body = p.req.body();
        let parsed_body = match body {
            Body::Json(v) => Cow::Borrowed(v),
            Body::Form(pairs) => Cow::Owned(Value::Object(
                pairs
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect::<Map<_, _>>(),
            )),
            _ => Cow::Owned(Value::Null),
        };
        let peer = |address: &'a Option<String>, port: Option<u32>, principal| Peer {
            address: Address {
                socket_address: SocketAddress {
                    address: borrowed(address),
                    port_value: port,
                },
            },
            principal,
        };
        PolicyInput {
            attributes: Attributes {
                source: peer(
                    &raw.source_address,
                    raw.source_port,
                    borrowed(&raw.source_principal),
                ),
                destination: peer(&raw.destination_address, raw.destination_port, None),
                request: Request {
                    http: Http {
                        id: Cow::Borrowed(&raw.id),
                        method: Cow::Borrowed(&p.req.method),
                        headers: Cow::Borrowed(&raw.headers),
                        path: Cow::Borrowed(&raw.path),
                        host: Cow::Borrowed(&p.req.host),
                        scheme: Cow::Borrowed(&raw.scheme),
                        protocol: Cow::Borrowed(&raw.protocol),
                    },
                },
                context_extensions: Cow::Borrowed(&raw.context_extensions),
            },
            parsed_path: Cow::Borrowed(&p.req.segments),
            parsed_query,
            parsed_body,
            truncated_body: *body == crate::request::Body::Truncated,
            version: Version::default(),
            stepguard: stepguard_block(p),
        }
    }

    /// Reads a document from JSON, refusing one that breaks the contract: a missing field, a
    /// field of the wrong type, an unknown field. The error names the field (`stepguard.action.
    /// privileged`, say).
    pub fn from_json(value: &Value) -> Result<PolicyInput<'static>, InputError> {
        let text = value.to_string();
        Self::from_json_str(&text)
    }

    /// [`PolicyInput::from_json`] on JSON text.
    pub fn from_json_str(text: &str) -> Result<PolicyInput<'static>, InputError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            InputError(format!("{path}: {}", e.into_inner()))
        })
    }

    /// The document as JSON (what a Wasm policy and `stepguard check` see).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The document as regorus's value (what a Rego policy sees), made directly.
    pub fn to_rego(&self) -> Result<regorus::Value, rego_value::Error> {
        rego_value::to_rego_value(self)
    }
}

fn stepguard_block<'a>(p: &InputParts<'a>) -> document::Stepguard<'a> {
    use document::*;
    let s = p.subject;
    let action = p.action;
    Stepguard {
        now: p.now,
        acr_ladder: Cow::Borrowed(p.ladder),
        action: document::Action {
            name: Cow::Borrowed(&action.name),
            risk: action.risk.into(),
            reversible: action.reversible,
            privileged: action.privileged,
            value: p.txn.value,
            currency: borrowed(&p.txn.currency),
            mode: action.mode.into(),
        },
        subject: document::Subject {
            kind: match s.kind {
                SubjectKind::Human => Kind::Human,
                SubjectKind::Workload => Kind::Workload,
            },
            id: borrowed(&s.id),
            issuer: borrowed(&s.issuer),
            acr: borrowed(&s.acr),
            acr_rank: rank(p.ladder, s.acr.as_deref()),
            amr: Cow::Borrowed(&s.amr),
            auth_time: s.auth_time,
            session_age: s.session_age,
            roles: Cow::Borrowed(&s.roles),
            scopes: Cow::Borrowed(&s.scopes),
            client_id: borrowed(&s.client_id),
            sid: borrowed(&s.sid),
            act: s
                .act
                .iter()
                .map(|a| document::Actor {
                    sub: borrowed(&a.sub),
                    iss: borrowed(&a.iss),
                })
                .collect(),
            workload: s.workload.as_deref().map(|w| Workload {
                spiffe_id: Cow::Borrowed(w),
            }),
            claims: match &s.claims {
                Value::Object(claims) => Cow::Borrowed(claims),
                _ => Cow::Owned(Map::new()),
            },
        },
        transaction: document::Transaction {
            digest: Cow::Borrowed(&p.txn.digest),
            key_id: Cow::Borrowed(&p.txn.key_id),
            bound: p
                .txn
                .bound
                .iter()
                .map(|(k, v)| {
                    (
                        Cow::Borrowed(k.as_str()),
                        v.as_deref().map(|v| Cow::Borrowed(untag(v))),
                    )
                })
                .collect(),
        },
        grant: p.grant.map(|g| document::Grant {
            acr: Cow::Borrowed(&g.acr),
            acr_rank: rank(p.ladder, Some(&g.acr)),
            amr: Cow::Borrowed(&g.amr),
            auth_time: g.auth_time,
            method: Cow::Borrowed(&g.method),
            challenge_id: borrowed(&g.challenge_id),
            issued_at: g.issued_at,
            uses_left: g.uses_left,
            policy_revision: borrowed(&g.policy_revision),
        }),
        context: Context {
            source_ip: borrowed(&p.req.raw.source_address),
            peer_principal: borrowed(&p.req.raw.source_principal),
            network: p
                .signals
                .and_then(|c| c.network.as_deref())
                .map(Cow::Borrowed),
            new_network: p.signals.and_then(|c| c.new_network),
            velocity: p.signals.map(|c| Velocity {
                window_secs: c.velocity.window_secs,
                count: c.velocity.count,
            }),
            device_trust: p
                .signals
                .and_then(|c| c.device_trust.as_deref())
                .map(Cow::Borrowed),
            events: p.events.iter().map(Cow::Borrowed).collect(),
            break_glass_justification: p
                .signals
                .and_then(|c| c.break_glass_justification.as_deref())
                .map(Cow::Borrowed),
        },
    }
}

impl From<crate::route::config::Risk> for document::Risk {
    fn from(risk: crate::route::config::Risk) -> Self {
        use crate::route::config::Risk as R;
        match risk {
            R::Low => Self::Low,
            R::Medium => Self::Medium,
            R::High => Self::High,
            R::Critical => Self::Critical,
        }
    }
}

impl From<crate::route::config::ActionMode> for document::Mode {
    fn from(mode: crate::route::config::ActionMode) -> Self {
        use crate::route::config::ActionMode as M;
        match mode {
            M::Enforce => Self::Enforce,
            M::Shadow => Self::Shadow,
        }
    }
}

#[cfg(test)]
mod tests;
