//! One stream management request: the bearer token presented, a redirect never followed, one
//! time limit (the client's), the body capped at [`MAX_BYTES`] as it streams in, and read as
//! JSON only from a successful answer.

use reqwest::Method;
use serde_json::Value;

use super::{StreamError, http};
use crate::capped::CappedError;

/// Largest management response read.
const MAX_BYTES: u64 = 256 << 10;

/// The request's status and JSON body (`null` when empty or not a success).
pub(super) async fn call(
    client: &reqwest::Client,
    token: &str,
    what: &'static str,
    (method, url): (Method, &str),
    body: Option<&Value>,
) -> Result<(u16, Value), StreamError> {
    let mut request = client
        .request(method, url)
        .bearer_auth(token)
        .header("accept", "application/json");
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request
        .send()
        .await
        .map_err(|e| http(what, e.to_string()))?;
    let status = response.status();
    if status.is_redirection() {
        return Err(http(
            what,
            format!("status {status}: redirects are not followed"),
        ));
    }
    let bytes = crate::capped::read(response, MAX_BYTES)
        .await
        .map_err(|e| match e {
            CappedError::TooLarge(max) => http(what, format!("body over {max} bytes")),
            CappedError::Read(e) => http(what, e.to_string()),
        })?;
    if !status.is_success() || bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok((status.as_u16(), Value::Null));
    }
    let value = serde_json::from_slice(&bytes).map_err(|e| http(what, e.to_string()))?;
    Ok((status.as_u16(), value))
}
