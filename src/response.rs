//! Decisions to Envoy responses, in one table: allow (OK, upstream headers, client
//! `x-stepguard-*` removed, decision and trace ids, dynamic metadata), challenge (302 to the IdP or RFC 9470 401),
//! invalid token (401), deny (4xx with a reason) and fault (503). Nothing else builds responses.

use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, HttpStatusCode, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc;
use serde_json::json;

use crate::challenge::{insufficient_authentication, invalid_token};
use crate::decision::{Decision, Verdict};
use crate::fault::{Cause, Fault};
use crate::telemetry::traces::Decided;

/// Header carrying the decision id, to the upstream on allow and to the client on deny.
pub const DECISION_ID_HEADER: &str = "x-stepguard-decision-id";
/// Header carrying the W3C trace id of the check (32 hex digits), with the decision id.
pub const TRACE_ID_HEADER: &str = "x-stepguard-trace-id";
/// Header naming the sensitive action, to the upstream.
pub const ACTION_HEADER: &str = "x-stepguard-action";

const OK: i32 = 0;
const PERMISSION_DENIED: i32 = 7;
const UNAVAILABLE: i32 = 14;
const UNAUTHENTICATED: i32 = 16;
/// `Retry-After` of a 503 fault, in seconds.
const FAULT_RETRY_AFTER_SECS: &str = "1";

/// Renders a decision.
pub fn render(decision: &Decision) -> CheckResponse {
    match &decision.verdict {
        Verdict::Allow => allow(decision),
        Verdict::Challenge {
            location: Some(location),
            set_cookie,
            ..
        } => {
            let mut headers = vec![
                header("location", location),
                header("cache-control", "no-store"),
            ];
            if let Some(cookie) = set_cookie {
                headers.push(header("set-cookie", cookie));
            }
            denied(decision, 302, UNAUTHENTICATED, headers, String::new())
        }
        Verdict::Challenge {
            challenge_id,
            requirement,
            location: None,
            ..
        } => {
            let www = insufficient_authentication(
                requirement,
                "A stronger authentication is required for this transaction",
            );
            let body = json!({
                "error": "insufficient_user_authentication",
                "challenge_id": challenge_id,
                "acr_values": requirement.acr_values,
                "max_age": requirement.max_age,
                "reason": decision.reason,
                "decision_id": decision.id,
            });
            denied(
                decision,
                401,
                UNAUTHENTICATED,
                json_headers(Some(&www)),
                body.to_string(),
            )
        }
        Verdict::Unauthenticated { description } => {
            let body = json!({"error": "invalid_token", "error_description": description, "decision_id": decision.id});
            denied(
                decision,
                401,
                UNAUTHENTICATED,
                json_headers(Some(&invalid_token(description))),
                body.to_string(),
            )
        }
        Verdict::Deny { status } => deny(decision, *status),
        Verdict::Refused => refused(decision),
        Verdict::Fault => fault(decision),
    }
}

/// The decision as telemetry records it, with its `outcome` label (a rate limit is
/// `rate_limited`).
pub fn decided(decision: &Decision) -> Decided<'_> {
    let rate_limited = decision
        .fault
        .as_ref()
        .is_some_and(|f| f.retry_after().is_some());
    Decided {
        outcome: match decision.verdict {
            Verdict::Refused if rate_limited => "rate_limited",
            _ => decision.outcome(),
        },
        reason: &decision.reason,
        action: decision.action.as_deref(),
        policy_revision: decision.policy_revision.as_deref(),
        acr_required: match &decision.verdict {
            Verdict::Challenge { requirement, .. } => Some(requirement.acr_values.join(" ")),
            _ => None,
        },
        fault: decision.verdict == Verdict::Fault,
    }
}

/// The HTTP status a decision is answered with: the one table (evidence records it too).
pub fn status(decision: &Decision) -> u16 {
    match &decision.verdict {
        Verdict::Allow => 200,
        Verdict::Challenge { location, .. } => match location {
            Some(_) => 302,
            None => 401,
        },
        Verdict::Unauthenticated { .. } => 401,
        Verdict::Deny { status } => *status,
        Verdict::Refused => decision.fault.as_ref().map_or(403, fault_status),
        Verdict::Fault => 503,
    }
}

/// A fault's status: the client's are 4xx, every other is a 503 the client may retry.
fn fault_status(fault: &Fault) -> u16 {
    match fault {
        Fault::MalformedRequest | Fault::Unbindable(_) => 400,
        Fault::WorkloadRequiresTransactionToken
        | Fault::GrantAlreadyUsed
        | Fault::SessionRevoked
        | Fault::AccountEvent
        | Fault::StepUpNotCompleting => 403,
        Fault::ChallengeRateLimitedSubject { .. }
        | Fault::ChallengeRateLimitedSourceIp { .. }
        | Fault::TooManyOpenChallenges { .. } => 429,
        _ => match fault.cause() {
            Cause::Client => 400,
            Cause::Dependency | Cause::Stepguard => 503,
        },
    }
}

/// A refusal for the client's fault: a deny, or a rate limit with `Retry-After`.
fn refused(decision: &Decision) -> CheckResponse {
    let status = status(decision);
    let Some(retry_after) = decision.fault.as_ref().and_then(Fault::retry_after) else {
        return deny(decision, status);
    };
    let body = json!({"error": "too_many_requests", "reason": decision.reason, "decision_id": decision.id});
    let mut headers = json_headers(None);
    headers.push(header("retry-after", &retry_after.to_string()));
    denied(
        decision,
        status,
        PERMISSION_DENIED,
        headers,
        body.to_string(),
    )
}

/// A dependency or stepguard failing: a 503 the client may retry shortly.
fn fault(decision: &Decision) -> CheckResponse {
    let body = json!({"error": "temporarily_unavailable", "reason": decision.reason, "decision_id": decision.id});
    let mut headers = json_headers(None);
    headers.push(header("retry-after", FAULT_RETRY_AFTER_SECS));
    denied(decision, 503, UNAVAILABLE, headers, body.to_string())
}

fn deny(decision: &Decision, status: u16) -> CheckResponse {
    let mut body =
        json!({"error": "access_denied", "reason": decision.reason, "decision_id": decision.id});
    if let Some(field) = &decision.field {
        body["field"] = json!(field);
    }
    denied(
        decision,
        status,
        PERMISSION_DENIED,
        json_headers(None),
        body.to_string(),
    )
}

fn allow(decision: &Decision) -> CheckResponse {
    let mut headers = vec![header(DECISION_ID_HEADER, &decision.id)];
    if let Some(trace_id) = &decision.trace_id {
        headers.push(header(TRACE_ID_HEADER, trace_id));
    }
    if let Some(action) = &decision.action {
        headers.push(header(ACTION_HEADER, action));
    }
    // Envoy applies removals after additions: never remove what is being set (it is overwritten).
    let headers_to_remove = decision
        .remove_headers
        .iter()
        .filter(|name| {
            !headers.iter().any(|h| {
                h.header
                    .as_ref()
                    .is_some_and(|h| h.key.eq_ignore_ascii_case(name))
            })
        })
        .cloned()
        .collect();
    CheckResponse {
        status: Some(rpc::Status {
            code: OK,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers,
            headers_to_remove,
            ..Default::default()
        })),
        dynamic_metadata: Some(metadata(decision)),
    }
}

fn denied(
    decision: &Decision,
    status: u16,
    code: i32,
    mut headers: Vec<HeaderValueOption>,
    body: String,
) -> CheckResponse {
    headers.push(header(DECISION_ID_HEADER, &decision.id));
    if let Some(trace_id) = &decision.trace_id {
        headers.push(header(TRACE_ID_HEADER, trace_id));
    }
    let status_code =
        HttpStatusCode::try_from(i32::from(status)).unwrap_or(HttpStatusCode::Forbidden);
    CheckResponse {
        status: Some(rpc::Status {
            code,
            message: decision.reason.clone(),
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: status_code as i32,
            }),
            headers,
            body,
        })),
        dynamic_metadata: Some(metadata(decision)),
    }
}

fn json_headers(www_authenticate: Option<&str>) -> Vec<HeaderValueOption> {
    let mut headers = vec![
        header("content-type", "application/json"),
        header("cache-control", "no-store"),
    ];
    if let Some(value) = www_authenticate {
        headers.push(header("www-authenticate", value));
    }
    headers
}

fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// The decision in dynamic metadata, for access logs and later filters.
fn metadata(decision: &Decision) -> Struct {
    let string = |s: &str| Value {
        kind: Some(Kind::StringValue(s.into())),
    };
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("decision_id".to_string(), string(&decision.id));
    fields.insert("decision".to_string(), string(decision.outcome()));
    fields.insert("reason".to_string(), string(&decision.reason));
    if let Some(action) = &decision.action {
        fields.insert("action".to_string(), string(action));
    }
    if let Some(trace_id) = &decision.trace_id {
        fields.insert("trace_id".to_string(), string(trace_id));
    }
    Struct {
        fields: fields.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests;
