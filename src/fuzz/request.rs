//! The `pipeline` and `check_request` harnesses: a request through [`Pipeline::decide`] and
//! [`crate::response::render`], with the invariants of a gate checked on every decision.
//!
//! `pipeline` reads a small text encoding, so mutations stay meaningful and the fuzzer reaches
//! the binder, the policy and the grant path rather than a parser's first branch:
//!
//! ```text
//! POST                              method
//! /v1/keys/k1/export?x=1            path (with its query)
//! mint alice aal1 3600              credential: `-` | `mint SUB ACR AGE` (a valid dev token)
//!                                   | `bearer TEXT` | `auth TEXT` (the raw Authorization value)
//! grant aal3 1                      `-` | `grant ACR USES`: complete the challenge (0 = unlimited)
//! content-type: application/json    headers, `name: value`, up to an empty line
//!
//! {"amount": 5}                     the body, bytes as given
//! ```
//!
//! `check_request` decodes an Envoy `CheckRequest` protobuf and converts it as the gRPC edge does.

use envoy_types::ext_authz::v3::pb::CheckRequest;
use prost::Message as _;

use super::world::{NOW, World, token};
use crate::decision::{Decision, Verdict};
use crate::grant::Grant;
use crate::request::RawRequest;

/// How the request presents itself.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Credential {
    None,
    /// One that can be valid: a dev-IdP token the harness signed, or an mTLS peer.
    Valid,
    /// Text the fuzzer wrote: it cannot carry a valid signature.
    Forged,
}

/// A decoded `pipeline` input.
pub(super) struct Input {
    pub raw: RawRequest,
    pub credential: Credential,
    /// Complete the first challenge with a grant at this acr for this many uses.
    pub grant: Option<(String, Option<u32>)>,
}

pub(super) fn decode(data: &[u8]) -> Input {
    let split = data
        .windows(2)
        .position(|w| w == b"\n\n")
        .map_or((data, &[][..]), |at| (&data[..at], &data[at + 2..]));
    let head = String::from_utf8_lossy(split.0);
    let mut lines = head.split('\n');
    let mut raw = RawRequest {
        method: lines.next().unwrap_or_default().to_string(),
        path: lines.next().unwrap_or_default().to_string(),
        host: "api.example.com".into(),
        scheme: "https".into(),
        protocol: "HTTP/1.1".into(),
        body: split.1.to_vec(),
        source_address: Some("10.0.0.7".into()),
        ..Default::default()
    };
    let credential = lines.next().unwrap_or_default();
    let mut words = credential.splitn(4, ' ');
    let credential = match (words.next(), words.next(), words.next(), words.next()) {
        (Some("mint"), Some(sub), Some(acr), age) => {
            let age = age.and_then(|a| a.trim().parse().ok()).unwrap_or(0);
            match token(sub, acr, age) {
                Some(t) => {
                    raw.headers
                        .insert("authorization".into(), format!("Bearer {t}"));
                    Credential::Valid
                }
                None => Credential::None,
            }
        }
        (Some("bearer"), ..) => {
            let text = credential.strip_prefix("bearer ").unwrap_or_default();
            raw.headers
                .insert("authorization".into(), format!("Bearer {text}"));
            Credential::Forged
        }
        (Some("auth"), ..) => {
            let text = credential.strip_prefix("auth ").unwrap_or_default();
            raw.headers.insert("authorization".into(), text.into());
            Credential::Forged
        }
        _ => Credential::None,
    };
    let mut words = lines.next().unwrap_or_default().split(' ');
    let grant = match (words.next(), words.next(), words.next()) {
        (Some("grant"), Some(acr), uses) => {
            let uses = uses.and_then(|u| u.parse::<u32>().ok()).unwrap_or(1);
            Some((acr.to_string(), Some(uses).filter(|u| *u > 0)))
        }
        _ => None,
    };
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim().to_string();
            match name.as_str() {
                ":authority" | "host" => raw.host = value,
                // Only the harness decides which credential the request carries.
                "authorization" => {}
                _ => {
                    raw.headers.insert(name, value);
                }
            }
        }
    }
    Input {
        raw,
        credential,
        grant,
    }
}

/// `pipeline`: the text encoding above through the whole pipeline.
pub fn pipeline(data: &[u8]) {
    super::with_world(|world| async move {
        let input = decode(data);
        let first = world.pipeline.decide(input.raw.clone()).await;
        check(world, &first, &input.credential);
        let Some((acr, uses)) = input.grant else {
            return;
        };
        let Verdict::Challenge { challenge_id, .. } = &first.verdict else {
            return;
        };
        let grant = match mint_grant(world, challenge_id, &acr, uses).await {
            Some(g) => g,
            None => return,
        };
        let mut spent = 0;
        for _ in 0..2 {
            let again = world.pipeline.decide(input.raw.clone()).await;
            check(world, &again, &input.credential);
            if again.verdict == Verdict::Allow && again.grant_id.as_deref() == Some(&grant) {
                spent += 1;
            }
        }
        assert!(
            uses != Some(1) || spent <= 1,
            "a single-use grant approved {spent} requests"
        );
    });
}

/// Mints the grant a completed step-up would leave for the challenge; its id.
pub(super) async fn mint_grant(
    world: &World,
    challenge_id: &str,
    acr: &str,
    uses: Option<u32>,
) -> Option<String> {
    let grants = &world.pipeline.grants;
    let c = grants.challenge(challenge_id, NOW).await.ok()??;
    let id = format!("grant-{challenge_id}");
    let grant = Grant {
        acr: acr.into(),
        expires_at: NOW + 120,
        uses_left: uses,
        ..crate::grant::contract::minted(&c, NOW)
    };
    grants.put_grant(grant).await.ok()?;
    Some(id)
}

/// `check_request`: an Envoy `CheckRequest` (protobuf bytes) as the gRPC edge receives it.
pub fn check_request(data: &[u8]) {
    let Ok(message) = CheckRequest::decode(data) else {
        return;
    };
    let raw = crate::grpc::raw_request(message);
    // Identity can come from a bearer token (forged: the fuzzer cannot sign), a trusted mTLS
    // peer (a workload) or jwt_authn metadata (not trusted by the quickstart config).
    let credential = if raw.headers.contains_key("authorization") {
        Credential::Forged
    } else if raw.source_principal.is_some() {
        Credential::Valid
    } else {
        Credential::None
    };
    super::with_world(|world| async move {
        let decision = world.pipeline.decide(raw).await;
        check(world, &decision, &credential);
    });
}

/// The invariants of one decision.
pub(super) fn check(world: &World, d: &Decision, credential: &Credential) {
    let allowed = d.verdict == Verdict::Allow;
    // A sensitive action is never approved without a valid credential.
    if d.action.is_some() && *credential != Credential::Valid {
        assert!(
            !allowed,
            "sensitive action allowed without a credential: {d:?}"
        );
    }
    // Every approval of a sensitive action has its evidence record.
    if allowed && d.action.is_some() {
        assert!(
            world.evidence.has(&d.id),
            "approval without evidence: {d:?}"
        );
    }
    // An approval passes the request on; anything else answers it with a non-OK status.
    let response = crate::response::render(d);
    let code = response.status.as_ref().map_or(-1, |s| s.code);
    assert_eq!(
        code == 0,
        allowed,
        "verdict {:?} rendered as code {code}",
        d.verdict
    );
    if let Verdict::Deny { status } = d.verdict {
        assert!((400..600).contains(&status), "deny with status {status}");
    }
}
