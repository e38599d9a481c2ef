//! Random tokens: decision ids, challenge ids, nonces, PKCE verifiers, browser bindings, grant
//! ids. A leaf: it imports nothing from the crate.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A random, URL-safe token with `bytes` bytes of entropy (`None` if the system RNG fails).
pub fn random_token(bytes: usize) -> Option<String> {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new().fill(&mut buf).ok()?;
    Some(URL_SAFE_NO_PAD.encode(buf))
}
