//! Reading an HTTP response body with a size cap, refused as soon as it passes the cap while it
//! streams in — never read whole first, whatever `content-length` says (or doesn't). One reader
//! for every body stepguard fetches: JWKS, OIDC discovery and token responses, policy bundles.

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub enum CappedError {
    #[error("body over the {0}-byte limit")]
    TooLarge(u64),
    #[error("{0}")]
    Read(#[from] reqwest::Error),
}

/// The body of `response`, at most `max` bytes.
pub async fn read(mut response: reqwest::Response, max: u64) -> Result<Vec<u8>, CappedError> {
    if response.content_length().is_some_and(|n| n > max) {
        return Err(CappedError::TooLarge(max));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if (body.len() + chunk.len()) as u64 > max {
            return Err(CappedError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
