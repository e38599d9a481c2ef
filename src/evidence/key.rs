//! Ed25519 keys for evidence: the signing key (an unencrypted PKCS#8 file, PEM `PRIVATE KEY` or
//! DER, as `openssl genpkey -algorithm ed25519` writes it) and public keys for verification
//! (PEM `PUBLIC KEY`/DER SubjectPublicKeyInfo, as `openssl pkey -pubout` writes it, or the raw
//! 32 bytes, binary or base64). A key's id is the first 16 hex digits of the SHA-256 of its raw
//! public key, so a verifier given several keys finds each record's key by its `key_id`.

use std::path::Path;

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use super::canonical::{hex, sha256_hex};

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), before the 32 key bytes.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The key that signs records.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    id: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("id", &self.id).finish()
    }
}

impl SigningKey {
    /// Reads a PKCS#8 file (PEM or DER).
    pub fn load(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        let der = pem_body(&bytes, "PRIVATE KEY").unwrap_or(bytes);
        Self::from_pkcs8(&der)
    }

    pub fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let pair = Ed25519KeyPair::from_pkcs8(der)
            .map_err(|e| format!("not an Ed25519 PKCS#8 key: {e}"))?;
        let id = key_id(pair.public_key().as_ref());
        Ok(Self { pair, id })
    }

    /// A new random key, as PKCS#8 DER (tests and `stepguard audit keygen`).
    pub fn generate_pkcs8() -> Result<Vec<u8>, String> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        Ed25519KeyPair::generate_pkcs8v1(&rng)
            .map(|doc| doc.as_ref().to_vec())
            .map_err(|_| "key generation failed".to_string())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The signature of `message`, base64url without padding.
    pub fn sign(&self, message: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(self.pair.sign(message).as_ref())
    }

    pub fn public_key(&self) -> PublicKey {
        let mut raw = [0u8; 32];
        raw.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey::from_raw(raw)
    }
}

/// A key that verifies records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    raw: [u8; 32],
    id: String,
}

impl PublicKey {
    pub fn from_raw(raw: [u8; 32]) -> Self {
        Self {
            id: key_id(&raw),
            raw,
        }
    }

    /// Reads a public key file: PEM or DER SubjectPublicKeyInfo, or the raw key (32 bytes, or
    /// their base64/base64url text).
    pub fn load(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let der = match pem_body(bytes, "PUBLIC KEY") {
            Some(der) => der,
            None => {
                let text = String::from_utf8_lossy(bytes);
                let text = text.trim();
                STANDARD
                    .decode(text)
                    .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
                    .unwrap_or_else(|_| bytes.to_vec())
            }
        };
        let raw = match der.len() {
            32 => &der[..],
            44 if der[..12] == SPKI_PREFIX => &der[12..],
            _ => return Err("not an Ed25519 public key (PEM, DER or 32 raw bytes)".into()),
        };
        let mut key = [0u8; 32];
        key.copy_from_slice(raw);
        Ok(Self::from_raw(key))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// PEM SubjectPublicKeyInfo.
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.raw);
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(der)
        )
    }

    /// Whether `sig` (base64url) is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], sig: &str) -> bool {
        let Ok(sig) = URL_SAFE_NO_PAD.decode(sig) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, &self.raw)
            .verify(message, &sig)
            .is_ok()
    }

    /// The raw key, hex (for display).
    pub fn hex(&self) -> String {
        hex(&self.raw)
    }
}

/// First 16 hex digits of SHA-256 of the raw public key.
fn key_id(raw: &[u8]) -> String {
    sha256_hex(raw)[..16].to_string()
}

/// The DER inside a PEM block with `label`, if `bytes` is one.
fn pem_body(bytes: &[u8], label: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let body: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(body).ok()
}
