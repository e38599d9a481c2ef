//! One read of a JWKS URL: redirects are never followed (a 3xx is a failed fetch), one time
//! limit covers the connection, the answer and the body, and the body is refused once it passes
//! `max_bytes` while it streams in, never read whole first.

use super::JwksError;
use crate::config::JwksUrl;

/// The HTTP client of one key set.
pub(super) fn client(source: &JwksUrl) -> Result<reqwest::Client, JwksError> {
    reqwest::Client::builder()
        .timeout(source.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| failed(source, e.to_string()))
}

/// The body of a successful (2xx) answer, at most `max_bytes` long.
pub(super) async fn body(client: &reqwest::Client, source: &JwksUrl) -> Result<String, JwksError> {
    let error = |e: reqwest::Error| failed(source, e.to_string());
    let mut response = client.get(&source.url).send().await.map_err(error)?;
    if !response.status().is_success() {
        return Err(failed(source, format!("status {}", response.status())));
    }
    let too_large = || {
        failed(
            source,
            format!("body over max_bytes ({})", source.max_bytes),
        )
    };
    if response
        .content_length()
        .is_some_and(|n| n > source.max_bytes as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(error)? {
        if body.len() + chunk.len() > source.max_bytes {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| failed(source, "body is not UTF-8".into()))
}

fn failed(source: &JwksUrl, message: String) -> JwksError {
    JwksError::Fetch {
        url: source.url.clone(),
        message,
    }
}
