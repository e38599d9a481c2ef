//! What every configuration section shares, and nothing else: [`Invalid`] (a rule a field
//! breaks, naming the field), [`secure_url`] and [`Resolve`] (relative paths made absolute once,
//! at load). Each module's `config.rs` validates its own section with these; `crate::config`
//! composes the sections. A leaf: it uses no other module of the crate.

use std::path::{Path, PathBuf};

/// A field of a section that is not valid, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config field `{field}`: {message}")]
pub struct Invalid {
    /// The field's path in the file (`identity.issuers[0].jwks.url`).
    pub field: String,
    pub message: String,
}

/// `Err(invalid(field, message))` is how a section's `validate()` refuses.
pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A section whose relative paths are resolved against the config file's directory, once, when
/// the file is loaded; everything after that sees absolute paths (or paths relative to the
/// working directory when the file was given as text without a directory).
pub trait Resolve {
    fn resolve(&mut self, base: &Path);
}

/// Makes one path absolute against `base` (an absolute path is kept).
pub fn resolve_path(path: &mut PathBuf, base: &Path) {
    if path.is_relative() {
        *path = base.join(&*path);
    }
}

/// [`resolve_path`] for an optional path.
pub fn resolve_opt(path: &mut Option<PathBuf>, base: &Path) {
    if let Some(p) = path {
        resolve_path(p, base);
    }
}

/// True for an `https://` URL with a host, or plain `http://` to a loopback host (`localhost`,
/// `127.0.0.0/8`, `[::1]`) — decided on the parsed URL, so `http://localhost.evil.com` and
/// `http://127.0.0.1@evil.com` are not loopback. URLs carrying credentials are refused.
pub fn secure_url(raw: &str) -> bool {
    let Ok(url) = url::Url::parse(raw) else {
        return false;
    };
    if !url.username().is_empty() || url.password().is_some() {
        return false;
    }
    match (url.scheme(), url.host()) {
        ("https", Some(_)) => true,
        ("http", Some(url::Host::Domain(d))) => d.eq_ignore_ascii_case("localhost"),
        ("http", Some(url::Host::Ipv4(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Ipv6(ip))) => ip.is_loopback(),
        _ => false,
    }
}
