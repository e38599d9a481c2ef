//! The policy input builder as it was before the document was typed (a `serde_json::Value`
//! built with `json!`), kept verbatim: the reference the typed document must serialize to (the
//! input tests), and the "before" of `stage/6*` in `benches/decision.rs`.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::policy::InputParts;
use crate::request::Body;
use crate::txn::untag;

fn rank(ladder: &[String], acr: Option<&str>) -> i64 {
    acr.and_then(|a| ladder.iter().position(|l| l == a))
        .map_or(-1, |i| i as i64)
}

/// Builds the input document.
pub fn legacy_input(p: &InputParts<'_>) -> Value {
    let raw = &p.req.raw;
    let mut parsed_query: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, v) in &p.req.query {
        parsed_query.entry(k).or_default().push(v);
    }
    let parsed_body = match &p.req.body() {
        Body::Json(v) => v.clone(),
        Body::Form(pairs) => Value::Object(
            pairs
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect::<Map<_, _>>(),
        ),
        _ => Value::Null,
    };
    json!({
        "attributes": {
            "source": peer(raw.source_address.as_deref(), raw.source_port, raw.source_principal.as_deref()),
            "destination": peer(raw.destination_address.as_deref(), raw.destination_port, None),
            "request": {"http": {
                "id": raw.id, "method": p.req.method, "headers": raw.headers,
                "path": raw.path, "host": p.req.host, "scheme": raw.scheme, "protocol": raw.protocol,
            }},
            "contextExtensions": raw.context_extensions,
        },
        "parsed_path": p.req.segments,
        "parsed_query": parsed_query,
        "parsed_body": parsed_body,
        "truncated_body": *p.req.body() == Body::Truncated,
        "version": {"encoding": "protojson", "ext_authz": "v3"},
        "stepguard": stepguard_block(p),
    })
}

fn peer(address: Option<&str>, port: Option<u32>, principal: Option<&str>) -> Value {
    let mut peer = json!({"address": {"socketAddress": {"address": address, "portValue": port}}});
    if let Some(principal) = principal {
        peer["principal"] = Value::String(principal.into());
    }
    peer
}

fn stepguard_block(p: &InputParts<'_>) -> Value {
    let s = p.subject;
    json!({
        "now": p.now,
        "acr_ladder": p.ladder,
        "action": {
            "name": p.action.name, "risk": p.action.risk, "reversible": p.action.reversible,
            "privileged": p.action.privileged, "value": p.txn.value, "currency": p.txn.currency,
            "mode": p.action.mode,
        },
        "subject": {
            "kind": s.kind, "id": s.id, "issuer": s.issuer, "acr": s.acr,
            "acr_rank": rank(p.ladder, s.acr.as_deref()), "amr": s.amr,
            "auth_time": s.auth_time, "session_age": s.session_age, "roles": s.roles,
            "scopes": s.scopes, "client_id": s.client_id, "sid": s.sid, "act": s.act,
            "workload": s.workload.as_ref().map(|w| json!({"spiffe_id": w})), "claims": s.claims,
        },
        "transaction": {
            "digest": p.txn.digest, "key_id": p.txn.key_id,
            "bound": p.txn.bound.iter().map(|(k, v)| (k.clone(), json!(v.as_deref().map(untag)))).collect::<Map<_, _>>(),
        },
        "grant": p.grant.map(|g| json!({
            "acr": g.acr, "acr_rank": rank(p.ladder, Some(&g.acr)), "amr": g.amr,
            "auth_time": g.auth_time, "method": g.method, "challenge_id": g.challenge_id,
            "issued_at": g.issued_at, "uses_left": g.uses_left,
            "policy_revision": g.policy_revision,
        })),
        "context": {
            "source_ip": p.req.raw.source_address,
            "peer_principal": p.req.raw.source_principal,
            "network": p.signals.and_then(|c| c.network.as_ref()),
            "new_network": p.signals.and_then(|c| c.new_network),
            "velocity": p.signals.map(|c| c.velocity),
            "device_trust": p.signals.and_then(|c| c.device_trust.as_ref()),
            "break_glass_justification": p.signals.and_then(|c| c.break_glass_justification.as_ref()),
        },
    })
}
