//! stepguard as a transmitter: after a privileged or irreversible approval, a CAEP event about
//! the subject's session — `assurance-level-change` (a decrease to the lowest `acr` of the
//! ladder) or `session-revoked` — signed with stepguard's own ES256 key and pushed (RFC 8935) to
//! each configured receiver, so the IdP or PAM system can drop the standing elevation. The key's
//! public half is published as a JWKS ([`Signer::jwks`], served on the HTTP port).
//!
//! Delivery never delays or changes the approval: the claims go to a bounded queue per receiver and
//! its worker signs and posts them, retrying with backoff; a full queue drops the SET (counted), a refusal
//! (4xx) is final (counted), and every outcome is logged and counted.

use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

pub use crate::route::config::Notify;

/// stepguard's SET signing key (ES256).
pub struct Signer {
    pair: EcdsaKeyPair,
    kid: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish()
    }
}

impl Signer {
    /// Reads an unencrypted PKCS#8 P-256 key (PEM `PRIVATE KEY`, as `openssl genpkey -algorithm
    /// EC -pkeyopt ec_paramgen_curve:P-256` writes it, or DER); `kid` names it in the JWKS.
    pub fn load(path: &Path, kid: &str) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let der = match pem::parse(&bytes) {
            Ok(block) if block.tag() == "PRIVATE KEY" => block.into_contents(),
            Ok(block) => {
                return Err(format!(
                    "{}: a PEM {} is not a PKCS#8 key",
                    path.display(),
                    block.tag()
                ));
            }
            Err(_) => bytes,
        };
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
            .map_err(|e| format!("{}: not a P-256 PKCS#8 key: {e}", path.display()))?;
        Ok(Self {
            pair,
            kid: kid.to_string(),
            rng: SystemRandom::new(),
        })
    }

    /// The public key set receivers verify stepguard's SETs with.
    pub fn jwks(&self) -> Value {
        // An uncompressed point: 0x04 || X (32 bytes) || Y (32 bytes).
        let point = self.pair.public_key().as_ref();
        let (x, y) = point[1..].split_at(32);
        json!({"keys": [{
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }]})
    }

    /// A compact JWS of `claims` under `typ` `secevent+jwt`.
    pub fn sign(&self, claims: &Value) -> Result<String, String> {
        let header = json!({"alg": "ES256", "kid": self.kid, "typ": "secevent+jwt"});
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .pair
            .sign(&self.rng, message.as_bytes())
            .map_err(|_| "signing failed".to_string())?;
        Ok(format!(
            "{message}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

/// Who a notification is about: the subject and, when its token carried one, its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct About<'a> {
    pub iss: &'a str,
    pub sub: &'a str,
    pub sid: Option<&'a str>,
    /// The `acr` the approval relied on.
    pub acr: Option<&'a str>,
}

/// One notification: what, about whom, after which approved action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice<'a> {
    pub notify: Notify,
    pub about: About<'a>,
    pub action: &'a str,
    /// The lowest `acr` of the ladder (what an assurance decrease goes down to).
    pub lowest: &'a str,
    pub now: i64,
}

/// The claims of the SET carrying `notice` from `issuer` to `audience`.
pub fn claims(notice: &Notice<'_>, issuer: &str, audience: &str, jti: &str) -> Value {
    let Notice {
        notify,
        about,
        action,
        lowest,
        now,
    } = notice;
    let user = json!({"format": "iss_sub", "iss": about.iss, "sub": about.sub});
    let sub_id = match about.sid {
        Some(sid) => json!({"user": user, "session": {"format": "opaque", "id": sid}}),
        None => user,
    };
    let reason =
        json!({"en": format!("privileged action {action} approved; standing elevation ends")});
    let (uri, event) = match *notify {
        Notify::AssuranceLevelChange => {
            let mut event = json!({
                "namespace": "Custom", "current_level": lowest, "change_direction": "decrease",
                "event_timestamp": now, "initiating_entity": "policy", "reason_admin": reason,
            });
            if let Some(acr) = about.acr {
                event["previous_level"] = json!(acr);
            }
            ("assurance-level-change", event)
        }
        Notify::SessionRevoked => (
            "session-revoked",
            json!({"event_timestamp": now, "initiating_entity": "policy", "reason_admin": reason}),
        ),
    };
    json!({
        "iss": issuer, "aud": audience, "iat": now, "jti": jti, "sub_id": sub_id,
        "events": {format!("https://schemas.openid.net/secevent/caep/event-type/{uri}"): event},
    })
}
