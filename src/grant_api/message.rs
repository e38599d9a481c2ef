//! The API's messages: a stored challenge as `LookupChallenge` shows it (without its secrets),
//! and a reported assurance shape-checked and read as the completion judges it.

use std::collections::HashMap;

use super::{Approver, GrantApiError, METHOD};
use crate::completion::{Assurance, AuthEvent};
use crate::grant::Challenge;
use crate::proto;

/// Longest challenge id, `acr`, approver or revocation target accepted.
const MAX_FIELD_BYTES: usize = 512;
/// Most `amr` values accepted, and the longest one (and the longest `method`).
const MAX_AMR: usize = 16;
const MAX_AMR_BYTES: usize = 64;

/// A challenge as the API shows it: no nonce, PKCE verifier, return path or browser binding.
/// `bound` stays empty: the store keeps the digest, not the bound values.
pub fn challenge_message(c: &Challenge) -> proto::Challenge {
    proto::Challenge {
        id: c.id.clone(),
        transaction: Some(proto::Transaction {
            digest: c.digest.clone(),
            key_id: key_id(&c.digest).to_string(),
            action: c.action.clone(),
            subject: c.subject.clone(),
            bound: HashMap::new(),
        }),
        requirement: Some(proto::Requirement {
            acr_values: c.requirement.acr_values.clone(),
            max_age: c.requirement.max_age,
        }),
        issued_at: c.issued_at,
        expires_at: c.expires_at,
        attempts: c.attempts,
    }
}

/// The binding key id of a digest (`key_id:mac`).
pub fn key_id(digest: &str) -> &str {
    digest.split_once(':').map_or("", |(id, _)| id)
}

/// What the approval system achieved, as a completion judges it: for the challenge's subject
/// (the approval system vouches for the user it approved for), `method` = [`METHOD`]. Its
/// authentication event is the approval ([`AuthEvent::Approval`]: caller, reported approver,
/// subject, `auth_time`), which completes one challenge at most.
pub fn assurance_for(
    challenge: &Challenge,
    reported: &proto::Assurance,
    approver: &Approver,
) -> Assurance {
    Assurance {
        subject: challenge.subject.clone(),
        acr: reported.acr.clone(),
        amr: amr_of(reported),
        auth_time: reported.auth_time,
        method: METHOD.to_string(),
        approver: Some(approver_of(approver, &reported.approver)),
        event: AuthEvent::Approval {
            caller: approver.identity.clone(),
            approver: reported.approver.clone(),
            subject: challenge.subject.clone(),
            auth_time: reported.auth_time,
        },
    }
}

/// The reported `amr`, with the reported `method` appended when it is not already listed.
pub fn amr_of(reported: &proto::Assurance) -> Vec<String> {
    let mut amr = reported.amr.clone();
    if !reported.method.is_empty() && !amr.contains(&reported.method) {
        amr.push(reported.method.clone());
    }
    amr
}

/// `<reported approver> via <caller iss|sub>`, or the caller alone when nothing was reported.
pub fn approver_of(approver: &Approver, reported: &str) -> String {
    if reported.is_empty() {
        approver.identity.clone()
    } else {
        format!("{reported} via {}", approver.identity)
    }
}

/// Shape checks on a reported assurance (its substance is the completer's to judge).
pub fn validate_assurance(a: &proto::Assurance, now: i64, skew: i64) -> Result<(), GrantApiError> {
    let invalid = |field, message| Err(GrantApiError::InvalidArgument { field, message });
    bounded("assurance.acr", &a.acr)?;
    if a.approver.len() > MAX_FIELD_BYTES {
        return invalid("assurance.approver", "is longer than 512 bytes");
    }
    if a.amr.len() > MAX_AMR
        || a.amr
            .iter()
            .any(|v| v.is_empty() || v.len() > MAX_AMR_BYTES)
    {
        return invalid(
            "assurance.amr",
            "takes at most 16 non-empty values of 64 bytes",
        );
    }
    if a.method.len() > MAX_AMR_BYTES {
        return invalid("assurance.method", "is longer than 64 bytes");
    }
    if a.auth_time <= 0 {
        return invalid("assurance.auth_time", "is required (unix seconds)");
    }
    if a.auth_time > now + skew {
        return invalid("assurance.auth_time", "is in the future");
    }
    Ok(())
}

/// A required string field of bounded length.
pub(super) fn bounded<'a>(field: &'static str, value: &'a str) -> Result<&'a str, GrantApiError> {
    match value.len() {
        0 => Err(GrantApiError::InvalidArgument {
            field,
            message: "is required",
        }),
        n if n > MAX_FIELD_BYTES => Err(GrantApiError::InvalidArgument {
            field,
            message: "is longer than 512 bytes",
        }),
        _ => Ok(value),
    }
}
