//! The subject of a request, read from verified claims: kind (human, workload), `sub`, `acr`,
//! `amr`, `auth_time`, roles, scopes, `client_id`/`azp`, `sid` and the RFC 8693 `act` chain.

use serde::Serialize;
use serde_json::Value;

/// Longest `act` chain read; deeper nesting is cut (and the cut is visible in the chain length).
const MAX_ACT_DEPTH: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectKind {
    Human,
    Workload,
}

/// One actor of a delegation chain (RFC 8693 `act`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    pub sub: Option<String>,
    pub iss: Option<String>,
}

/// A verified subject.
#[derive(Debug, Clone, Serialize)]
pub struct Subject {
    pub kind: SubjectKind,
    pub id: Option<String>,
    pub issuer: Option<String>,
    pub acr: Option<String>,
    pub amr: Vec<String>,
    pub auth_time: Option<i64>,
    pub session_age: Option<i64>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub client_id: Option<String>,
    pub sid: Option<String>,
    /// Outermost (current) actor first.
    pub act: Vec<Actor>,
    pub workload: Option<String>,
    pub claims: Value,
}

fn string(claims: &Value, name: &str) -> Option<String> {
    claims.get(name).and_then(Value::as_str).map(str::to_string)
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

fn act_chain(claims: &Value) -> Vec<Actor> {
    let mut chain = Vec::new();
    let mut cursor = claims.get("act");
    while let Some(act) = cursor.filter(|a| a.is_object()) {
        if chain.len() == MAX_ACT_DEPTH {
            break;
        }
        chain.push(Actor {
            sub: string(act, "sub"),
            iss: string(act, "iss"),
        });
        cursor = act.get("act");
    }
    chain
}

impl Subject {
    /// Reads a subject from verified claims at `now`.
    pub fn from_claims(claims: Value, now: i64, peer: Option<String>) -> Self {
        let id = string(&claims, "sub");
        let client_id = string(&claims, "client_id").or_else(|| string(&claims, "azp"));
        let auth_time = claims.get("auth_time").and_then(Value::as_i64);
        let is_workload = id.as_deref().is_some_and(|s| s.starts_with("spiffe://"))
            || (auth_time.is_none() && id.is_some() && id == client_id);
        let mut roles = strings(claims.get("roles"));
        roles.extend(strings(claims.pointer("/realm_access/roles")));
        let mut scopes = strings(claims.get("scope"));
        scopes.extend(strings(claims.get("scp")));
        Self {
            kind: if is_workload {
                SubjectKind::Workload
            } else {
                SubjectKind::Human
            },
            issuer: string(&claims, "iss"),
            acr: string(&claims, "acr"),
            amr: strings(claims.get("amr")),
            session_age: auth_time.map(|t| now.saturating_sub(t)),
            auth_time,
            roles,
            scopes,
            client_id,
            sid: string(&claims, "sid"),
            act: act_chain(&claims),
            workload: peer.filter(|p| is_workload && p.starts_with("spiffe://")),
            id,
            claims,
        }
    }

    /// A workload known only by its mTLS SPIFFE ID.
    pub fn workload(spiffe_id: String) -> Self {
        Self {
            kind: SubjectKind::Workload,
            id: Some(spiffe_id.clone()),
            issuer: None,
            acr: None,
            amr: Vec::new(),
            auth_time: None,
            session_age: None,
            roles: Vec::new(),
            scopes: Vec::new(),
            client_id: None,
            sid: None,
            act: Vec::new(),
            workload: Some(spiffe_id),
            claims: Value::Object(Default::default()),
        }
    }

    /// A stable key for binding: issuer and subject.
    pub fn binding_key(&self) -> String {
        format!(
            "{}|{}",
            self.issuer.as_deref().unwrap_or("mtls"),
            self.id.as_deref().unwrap_or_default()
        )
    }
}
