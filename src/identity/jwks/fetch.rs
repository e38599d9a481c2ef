//! One read of a JWKS URL: redirects are never followed (a 3xx is a failed fetch), one time
//! limit covers the connection, the answer and the body, and the body is refused once it passes
//! `max_bytes` while it streams in, never read whole first.

use super::JwksError;
use crate::capped::CappedError;
use crate::identity::config::JwksUrl;

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
    let response = client.get(&source.url).send().await.map_err(error)?;
    if !response.status().is_success() {
        return Err(failed(source, format!("status {}", response.status())));
    }
    let body = crate::capped::read(response, source.max_bytes as u64)
        .await
        .map_err(|e| match e {
            CappedError::TooLarge(_) => failed(
                source,
                format!("body over max_bytes ({})", source.max_bytes),
            ),
            CappedError::Read(e) => error(e),
        })?;
    String::from_utf8(body).map_err(|_| failed(source, "body is not UTF-8".into()))
}

fn failed(source: &JwksUrl, message: String) -> JwksError {
    JwksError::Fetch {
        url: source.url.clone(),
        message,
    }
}
