//! One reading of a JWT: the JSON of a JWS header or a JWT payload, parsed so that stepguard can
//! never read a token differently from Envoy's `jwt_authn`, the IdP or the application.
//!
//! RFC 7519 §4 lets a parser take the last of duplicate member names; others take the first or
//! refuse. A gate that reads `{"sub":"alice","sub":"admin"}` as one user while the application
//! reads another is a bypass, so a duplicate member name — at any depth, compared after JSON
//! unescaping (`"s\u0075b"` is `"sub"`) — makes the token invalid here, as does nesting deeper
//! than [`MAX_DEPTH`]. Every place a JWS is read (access tokens in [`crate::identity`], the
//! grant API's caller tokens through it, ID tokens in [`crate::oidc`]) parses through
//! [`decode_part`] or [`compact`].

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::ijson::{self, JsonProblem};

/// Deepest nesting of objects and arrays accepted (the top-level object is depth 1).
pub const MAX_DEPTH: usize = 32;

/// Why a JWS part could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoseError {
    #[error("not a compact JWS")]
    NotCompact,
    #[error("bad base64url")]
    Base64,
    #[error("bad JSON")]
    Json,
    #[error("not a JSON object")]
    NotObject,
    #[error("duplicate JSON member name")]
    DuplicateMember,
    #[error("JSON nested too deeply")]
    TooDeep,
}

impl JoseError {
    /// A short reason for logs and `invalid_token` answers.
    pub fn reason(self) -> &'static str {
        match self {
            JoseError::NotCompact => "not a compact JWS",
            JoseError::Base64 => "bad base64url",
            JoseError::Json => "bad JSON",
            JoseError::NotObject => "not a JSON object",
            JoseError::DuplicateMember => "duplicate JSON member name",
            JoseError::TooDeep => "JSON nested too deeply",
        }
    }
}

/// The header and payload of a compact JWS (`header.payload.signature`), each read strictly;
/// the signature is not checked here.
pub fn compact(token: &str) -> Result<(Value, Value), JoseError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JoseError::NotCompact);
    };
    Ok((decode_part(header)?, decode_part(payload)?))
}

/// One base64url (unpadded) part of a compact JWS, read as a strict JSON object.
pub fn decode_part(part: &str) -> Result<Value, JoseError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JoseError::Base64)?;
    object(&bytes)
}

/// A JSON object with no duplicate member name at any depth and no nesting past [`MAX_DEPTH`],
/// read by [`crate::ijson`] (the same reading as request bodies).
pub fn object(bytes: &[u8]) -> Result<Value, JoseError> {
    let json = ijson::read(bytes, MAX_DEPTH).map_err(|problem| match problem {
        JsonProblem::DuplicateMember(_) => JoseError::DuplicateMember,
        JsonProblem::TooDeep(_) => JoseError::TooDeep,
        JsonProblem::NotUtf8 | JsonProblem::Syntax(_) => JoseError::Json,
    })?;
    if json.value.is_object() {
        Ok(json.value)
    } else {
        Err(JoseError::NotObject)
    }
}

#[cfg(test)]
mod tests;
