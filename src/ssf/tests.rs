//! SET claims, subject identifiers and event meanings, on the specs' own examples.

use serde_json::{Value, json};

use super::event::{Assessment, EventKind, Presented, Recorded, assess};
use super::set::{Expect, SetError, read};
use super::subject::{Identifier, SubjectId, keys_for};

const NOW: i64 = 1_800_000_000;
const IDP: &str = "https://idp.example.com/";
const REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";

fn audiences() -> Vec<String> {
    vec!["https://rp.example/ssf".into()]
}

fn expect(audiences: &[String]) -> Expect<'_> {
    Expect {
        audiences,
        max_age: 3_600,
        leeway: 30,
    }
}

/// The CAEP 1.0 session-revoked example, simple opaque subject.
fn session_revoked() -> Value {
    json!({
        "iss": IDP, "jti": "24c63fb56e5a2d77a6b512616ca9fa24", "iat": NOW - 10,
        "aud": "https://rp.example/ssf", "txn": "8675309",
        "sub_id": {"format": "opaque", "id": "dMTlD|1600802906337.16|16008.16"},
        "events": {REVOKED: {"event_timestamp": NOW - 20}}
    })
}

fn read_set(claims: &Value) -> Result<super::set::SecurityEvent, SetError> {
    let ours = audiences();
    read(Some("secevent+jwt"), claims, &expect(&ours), NOW)
}

#[test]
fn the_caep_session_revoked_example_is_read() {
    let set = read_set(&session_revoked()).unwrap();
    assert_eq!(set.kind, EventKind::SessionRevoked);
    assert_eq!(set.time, NOW - 20);
    assert_eq!(set.txn.as_deref(), Some("8675309"));
    assert_eq!(
        set.subject.user,
        Some(Identifier::Opaque("dMTlD|1600802906337.16|16008.16".into()))
    );
}

#[test]
fn every_claim_rule_refuses_with_its_rfc_8935_code() {
    let ours = audiences();
    let base = session_revoked();
    let code = |claims: &Value, typ: Option<&str>| {
        read(typ, claims, &expect(&ours), NOW)
            .err()
            .map(|e| e.code())
    };
    assert_eq!(code(&base, Some("JWT")), Some("invalid_request"));
    assert_eq!(code(&base, None), Some("invalid_request"));
    assert_eq!(code(&base, Some("application/secevent+jwt")), None);
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c[k] = v;
        c
    };
    assert_eq!(
        code(&with("aud", json!("https://other")), Some("secevent+jwt")),
        Some("invalid_audience")
    );
    assert_eq!(
        code(
            &with("aud", json!(["x", "https://rp.example/ssf"])),
            Some("secevent+jwt")
        ),
        None
    );
    assert_eq!(
        code(&with("iat", json!(NOW + 120)), Some("secevent+jwt")),
        Some("invalid_request")
    );
    assert_eq!(
        code(&with("iat", json!(NOW - 7_200)), Some("secevent+jwt")),
        Some("invalid_request")
    );
    assert_eq!(
        code(&with("iat", json!("soon")), Some("secevent+jwt")),
        Some("invalid_request")
    );
    assert_eq!(
        code(&with("jti", json!("")), Some("secevent+jwt")),
        Some("invalid_request")
    );
    assert_eq!(
        code(&with("sub", json!("alice")), Some("secevent+jwt")),
        Some("invalid_request")
    );
    assert_eq!(
        code(&with("exp", json!(NOW - 3_600)), Some("secevent+jwt")),
        Some("invalid_request")
    );
    let two = with(
        "events",
        json!({REVOKED: {}, "https://schemas.openid.net/secevent/risc/event-type/account-disabled": {}}),
    );
    assert_eq!(code(&two, Some("secevent+jwt")), Some("invalid_request"));
    let mut no_subject = base.clone();
    no_subject.as_object_mut().unwrap().remove("sub_id");
    assert_eq!(
        code(&no_subject, Some("secevent+jwt")),
        Some("invalid_request")
    );
    // The older drafts' event-level subject is read instead of sub_id…
    let mut legacy = no_subject.clone();
    legacy["events"][REVOKED]["subject"] = json!({"format": "iss_sub", "iss": IDP, "sub": "alice"});
    assert_eq!(code(&legacy, Some("secevent+jwt")), None);
    // …but never both.
    let mut both = base.clone();
    both["events"][REVOKED]["subject"] = json!({"format": "email", "email": "a@example.com"});
    assert_eq!(code(&both, Some("secevent+jwt")), Some("invalid_request"));
}

#[test]
fn event_definitions_are_checked() {
    let alc = "https://schemas.openid.net/secevent/caep/event-type/assurance-level-change";
    let mut set = session_revoked();
    set["events"] = json!({alc: {"namespace": "RFC8176", "current_level": "aal1", "previous_level": "aal2", "change_direction": "decrease"}});
    let read_ok = read_set(&set).unwrap();
    assert!(read_ok.event.is_decrease(&["aal1".into(), "aal2".into()]));
    set["events"] = json!({alc: {"current_level": "aal1"}});
    assert!(read_set(&set).is_err(), "namespace is required");
    set["events"] =
        json!({alc: {"namespace": "x", "current_level": "aal1", "change_direction": "sideways"}});
    assert!(read_set(&set).is_err());
    let tcc = "https://schemas.openid.net/secevent/caep/event-type/token-claims-change";
    set["events"] = json!({tcc: {"claims": {"role": "ro-admin"}}});
    assert!(read_set(&set).is_ok());
    set["events"] = json!({tcc: {"claims": {"sub": "mallory"}}});
    assert!(read_set(&set).is_err(), "the subject is never overridden");
    let unknown = "https://schemas.openid.net/secevent/caep/event-type/device-compliance-change";
    set["events"] =
        json!({unknown: {"previous_status": "compliant", "current_status": "not-compliant"}});
    assert_eq!(read_set(&set).unwrap().kind, EventKind::Unknown);
}

#[test]
fn subjects_simple_and_complex_map_to_grant_keys() {
    let group = vec![IDP.to_string(), "https://api.example.com/".to_string()];
    let complex = SubjectId::read(&json!({
        "user": {"format": "iss_sub", "iss": IDP, "sub": "alice"},
        "session": {"format": "opaque", "id": "s-1"}
    }))
    .unwrap();
    assert_eq!(complex.sid(), Some("s-1"));
    assert_eq!(
        keys_for(complex.user.as_ref().unwrap(), &group),
        [
            format!("{IDP}|alice"),
            "https://api.example.com/|alice".to_string()
        ]
    );
    let foreign = Identifier::IssSub {
        iss: "https://other/".into(),
        sub: "bob".into(),
    };
    assert_eq!(keys_for(&foreign, &group), ["https://other/|bob"]);
    let email = SubjectId::read(&json!({"format": "email", "email": "Alice@Example.COM"})).unwrap();
    assert_eq!(
        keys_for(email.user.as_ref().unwrap(), &group),
        ["email:alice@example.com"]
    );
    let phone = SubjectId::read(&json!({"format": "phone_number", "phone_number": "+1"})).unwrap();
    assert!(keys_for(phone.user.as_ref().unwrap(), &group).is_empty());
    assert!(SubjectId::read(&json!({})).is_err());
    assert!(SubjectId::read(&json!({"user": {"format": "opaque"}})).is_err());
    assert!(SubjectId::read(&json!({"printer": {"format": "opaque", "id": "p"}})).is_err());
}

fn recorded(kind: &str, time: i64, sid: Option<&str>, facts: Value) -> Recorded {
    Recorded {
        kind: kind.into(),
        time,
        jti: format!("j-{time}"),
        sid: sid.map(str::to_string),
        facts: facts.as_object().unwrap().clone(),
    }
}

#[test]
fn a_revoked_session_refuses_its_tokens_and_only_them() {
    let events = [recorded(
        "session-revoked",
        NOW - 100,
        Some("s-1"),
        json!({}),
    )];
    let token = |sid, iat| Presented {
        sid,
        iat: Some(iat),
        auth_time: Some(iat),
    };
    assert_eq!(
        assess(&events, token(Some("s-1"), NOW - 50)).refused,
        Some("session_revoked")
    );
    assert_eq!(assess(&events, token(Some("s-2"), NOW - 500)).refused, None);
    // A token without a sid is judged by when it was issued.
    assert_eq!(
        assess(&events, token(None, NOW - 500)).refused,
        Some("session_revoked")
    );
    assert_eq!(assess(&events, token(None, NOW - 50)).refused, None);
    // An event naming no session revokes every token issued before it.
    let all = [recorded("session-revoked", NOW - 100, None, json!({}))];
    assert_eq!(
        assess(&all, token(Some("s-9"), NOW - 101)).refused,
        Some("session_revoked")
    );
    assert_eq!(assess(&all, token(Some("s-9"), NOW - 99)).refused, None);
}

#[test]
fn account_events_hold_until_a_newer_sign_in() {
    for kind in [
        "account-disabled",
        "account-purged",
        "credential-compromise",
        "sessions-revoked",
    ] {
        let events = [recorded(kind, NOW - 100, None, json!({}))];
        let signed_in = |auth_time| Presented {
            sid: None,
            iat: Some(NOW - 10),
            auth_time,
        };
        assert_eq!(
            assess(&events, signed_in(Some(NOW - 100))).refused,
            Some("account_event"),
            "{kind}"
        );
        assert_eq!(
            assess(&events, signed_in(None)).refused,
            Some("account_event"),
            "{kind}"
        );
        assert_eq!(
            assess(&events, signed_in(Some(NOW - 99))).refused,
            None,
            "{kind}"
        );
    }
}

#[test]
fn changed_claims_override_older_tokens_only() {
    let events = [
        recorded(
            "token-claims-change",
            NOW - 100,
            None,
            json!({"claims": {"role": "ro-admin", "x": 1}}),
        ),
        recorded(
            "token-claims-change",
            NOW - 50,
            None,
            json!({"claims": {"role": "none"}}),
        ),
        recorded(
            "credential-change",
            NOW - 40,
            None,
            json!({"credential_type": "password", "change_type": "update"}),
        ),
    ];
    let old = Presented {
        sid: None,
        iat: Some(NOW - 200),
        auth_time: None,
    };
    let Assessment { refused, claims } = assess(&events, old);
    assert_eq!(refused, None);
    assert_eq!(Value::Object(claims), json!({"role": "none", "x": 1}));
    let new = Presented {
        iat: Some(NOW - 10),
        ..old
    };
    assert!(assess(&events, new).claims.is_empty());
}

/// The quickstart with a `shared_signals` section appended.
fn with_section(section: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
    let text = std::fs::read_to_string(format!("{}/stepguard.yaml", crate::testkit::DIR)).unwrap();
    crate::config::Config::parse(
        &format!("{text}\nshared_signals:\n{section}"),
        std::path::Path::new(crate::testkit::DIR),
    )
}

fn field_of(section: &str) -> String {
    match with_section(section) {
        Err(crate::config::ConfigError::Invalid { field, .. }) => field,
        Err(e) => e.to_string(),
        Ok(_) => "accepted".into(),
    }
}

const TRANSMITTER: &str =
    "  transmitter:\n    issuer: https://idp.stepguard.local\n    jwks: {file: dev-jwks.json}\n";

#[test]
fn the_section_is_typed_and_checked() {
    let ok = format!("{TRANSMITTER}  audiences: [https://stepguard.example/ssf]\n  push: {{}}\n");
    let config = with_section(&ok).unwrap();
    let ssf = config.shared_signals.unwrap();
    assert_eq!(ssf.push.unwrap().path, "/ssf/events");
    assert!(
        ssf.transmitter
            .as_ref()
            .unwrap()
            .jwks
            .file
            .as_ref()
            .unwrap()
            .is_absolute(),
        "resolved once"
    );
    assert_eq!(
        ssf.transmitter.as_ref().unwrap().subject_group(),
        ["https://idp.stepguard.local"]
    );

    let cases = [
        (format!("{TRANSMITTER}  audiences: []\n  push: {{}}\n"), "shared_signals.audiences"),
        (format!("{TRANSMITTER}  audiences: [a]\n"), "shared_signals"),
        (format!("{TRANSMITTER}  audiences: [a]\n  push: {{path: ssf}}\n"), "shared_signals.push.path"),
        (format!("{TRANSMITTER}  audiences: [a]\n  push: {{path: /.stepguard/callback}}\n"), "shared_signals.push.path"),
        (format!("{TRANSMITTER}  audiences: [a]\n  poll: {{endpoint: 'http://idp.example/poll'}}\n"), "shared_signals.poll.endpoint"),
        (format!("{TRANSMITTER}  audiences: [a]\n  push: {{}}\n  max_age_secs: 1\n"), "shared_signals.max_age_secs"),
        (
            format!("{TRANSMITTER}    same_subjects_as: [https://unknown]\n  audiences: [a]\n  push: {{}}\n"),
            "shared_signals.transmitter.same_subjects_as",
        ),
        (
            "  transmitter:\n    issuer: https://idp.stepguard.local\n    jwks: {url: 'http://idp.example/jwks'}\n  audiences: [a]\n  push: {}\n".to_string(),
            "shared_signals.transmitter.jwks.url",
        ),
    ];
    for (section, field) in cases {
        assert_eq!(field_of(&section), field, "{section}");
    }
    let hs = format!("{TRANSMITTER}    algorithms: [HS256]\n  audiences: [a]\n  push: {{}}\n");
    assert!(field_of(&hs).contains("symmetric"), "{}", field_of(&hs));
}

#[test]
fn sending_is_configured_on_its_own_and_actions_opt_in() {
    let send = "  send:\n    issuer: https://stepguard.example\n    signing_key_file: dev-signing-key.DEV-ONLY.pem\n    receivers: [{url: 'https://idp.example/ssf', audience: idp}]\n";
    let config = with_section(send).unwrap();
    let ssf = config.shared_signals.unwrap();
    assert!(ssf.transmitter.is_none());
    assert!(ssf.send.unwrap().signing_key_file.is_absolute());
    assert_eq!(field_of("  max_age_secs: 600\n"), "shared_signals");
    assert_eq!(
        field_of(&format!("{send}  push: {{}}\n")),
        "shared_signals.transmitter"
    );
    let plain = send.replace("https://idp.example/ssf", "http://idp.example/ssf");
    assert_eq!(field_of(&plain), "shared_signals.send.receivers[0].url");
    // `after_approval.notify` is for privileged or irreversible actions, and needs `send`.
    let text = std::fs::read_to_string(format!("{}/stepguard.yaml", crate::testkit::DIR)).unwrap();
    let parse = |text: String| match crate::config::Config::parse(
        &text,
        std::path::Path::new(crate::testkit::DIR),
    ) {
        Err(crate::config::ConfigError::Invalid { field, .. }) => field,
        Err(e) => e.to_string(),
        Ok(_) => "accepted".into(),
    };
    let export = "    privileged: true\n    bind: [path.key]\n";
    let notify = format!("{export}    after_approval: {{notify: assurance-level-change}}\n");
    assert_eq!(
        parse(text.replace(export, &notify)),
        "actions[2].after_approval.notify"
    );
    assert_eq!(
        parse(format!(
            "{}\nshared_signals:\n{send}",
            text.replace(export, &notify)
        )),
        "accepted"
    );
    let transfer =
        "    reversible: true\n    bind: [path.account, body.amount, body.currency, body.payee]\n";
    let reversible = format!("{transfer}    after_approval: {{notify: session-revoked}}\n");
    assert_eq!(
        parse(format!(
            "{}\nshared_signals:\n{send}",
            text.replace(transfer, &reversible)
        )),
        "actions[0].after_approval.notify"
    );
}
