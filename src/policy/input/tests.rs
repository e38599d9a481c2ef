//! The typed input document: the JSON it always was, the same value in regorus made directly,
//! the contract's refusals naming the field, and the committed schema.

use serde_json::{Value, json};

use super::*;
use crate::config::{ActionConfig, ActionMode, Risk};
use crate::context::{Signals, Velocity};
use crate::identity::Subject;
use crate::request::RawRequest;
use crate::route::RouteTable;
use crate::testkit::legacy_input as legacy;

mod examples;

const NOW: i64 = 1_700_000_000;

/// What one input is built from, owned.
struct Fixture {
    req: AuthzRequest,
    action: std::sync::Arc<crate::route::Action>,
    subject: Subject,
    txn: Transaction,
    grant: Option<Grant>,
    signals: Option<Signals>,
    ladder: Vec<String>,
}

impl Fixture {
    fn parts(&self) -> InputParts<'_> {
        InputParts {
            req: &self.req,
            action: &self.action,
            subject: &self.subject,
            txn: &self.txn,
            grant: self.grant.as_ref(),
            now: NOW,
            ladder: &self.ladder,
            signals: self.signals.as_ref(),
            events: &[],
        }
    }
}

/// A variety of requests: JSON, form and no body; with and without a peer principal, grant,
/// signals, delegation and query; a human and a workload.
fn fixtures() -> Vec<Fixture> {
    let mut out = Vec::new();
    for variant in 0..4 {
        let (content_type, body) = match variant {
            0 => (
                "application/json",
                br#"{"amount": 100, "to": "bob", "n": [1.5, -2]}"#.to_vec(),
            ),
            1 => (
                "application/x-www-form-urlencoded",
                b"amount=100&to=bob&to=eve".to_vec(),
            ),
            2 => ("text/plain", b"hello".to_vec()),
            _ => ("application/json", Vec::new()),
        };
        let raw = RawRequest {
            id: format!("req-{variant}"),
            method: "post".into(),
            scheme: "https".into(),
            host: "API.bank.example:8443".into(),
            path: "/v1/accounts/A1/transfers?x=1&x=2&y=%20z".into(),
            protocol: "HTTP/1.1".into(),
            headers: [
                ("content-type".to_string(), content_type.to_string()),
                ("x-device".to_string(), "managed".to_string()),
            ]
            .into(),
            body,
            source_address: (variant != 3).then(|| "203.0.113.5".into()),
            source_port: (variant != 3).then_some(51_234),
            source_principal: (variant % 2 == 0)
                .then(|| "spiffe://bank.example/ns/edge/sa/gw".into()),
            destination_address: Some("10.0.0.9".into()),
            destination_port: Some(8080),
            context_extensions: [("action".to_string(), "payments.transfer".to_string())].into(),
            ..Default::default()
        };
        let config = ActionConfig {
            name: "payments.transfer".into(),
            matcher: None,
            risk: [Risk::Low, Risk::Medium, Risk::High, Risk::Critical][variant],
            reversible: variant != 1,
            privileged: variant == 2,
            bind: Vec::new(),
            body: Default::default(),
            value: None,
            currency: None,
            authorization_details_type: None,
            after_approval: Default::default(),
            mode: if variant == 3 {
                ActionMode::Shadow
            } else {
                ActionMode::Enforce
            },
        };
        let action = RouteTable::new(std::slice::from_ref(&config))
            .action(&config.name)
            .cloned()
            .unwrap();
        let claims = if variant == 2 {
            json!({"sub": "spiffe://bank.example/ns/batch/sa/payouts", "iss": "https://idp.example",
                   "txn": "txn-1", "iat": NOW - 5, "exp": NOW + 55})
        } else {
            let acr = ["aal1", "aal2", "x"][variant.min(2)];
            json!({"iss": "https://idp.example", "sub": "alice", "acr": acr,
                   "amr": ["pwd", "otp"], "auth_time": NOW - 100, "roles": ["customer"],
                   "scope": "payments read", "client_id": "web", "sid": "s-1",
                   "act": {"sub": "bob", "iss": "https://idp.example", "act": {"sub": "carol"}}})
        };
        let peer = (variant == 2).then(|| "spiffe://bank.example/ns/batch/sa/payouts".to_string());
        let subject = Subject::from_claims(claims, NOW, peer);
        let txn = Transaction {
            digest: "k1:Zm9v".into(),
            key_id: "k1".into(),
            previous_digests: Vec::new(),
            bound: [
                ("path.account".to_string(), Some("s:A1".to_string())),
                ("body.amount".to_string(), Some("n:100".to_string())),
                ("body.memo".to_string(), None),
            ]
            .into(),
            value: (variant != 1).then_some(25_000.0 + variant as f64 / 4.0),
            currency: (variant != 1).then(|| "EUR".into()),
        };
        let grant = (variant % 2 == 1).then(|| Grant {
            id: "g-1".into(),
            digest: "k1:Zm9v".into(),
            subject: "https://idp.example|alice".into(),
            action: "payments.transfer".into(),
            acr: "aal3".into(),
            amr: vec!["hwk".into()],
            auth_time: NOW - 20,
            method: "oidc".into(),
            challenge_id: (variant == 1).then(|| "ch-1".into()),
            issued_at: NOW - 15,
            expires_at: NOW + 100,
            uses_left: (variant == 1).then_some(1),
            policy_revision: (variant == 3).then(|| "sha256:0011".into()),
        });
        let signals = (variant != 0).then(|| Signals {
            network: Some("203.0.113.0/24".into()),
            new_network: [None, Some(true), Some(false), None][variant],
            velocity: Velocity {
                window_secs: 600,
                count: variant as u64,
            },
            device_trust: (variant == 2).then(|| "managed".into()),
            break_glass_justification: (variant == 3).then(|| "INC-1".into()),
        });
        out.push(Fixture {
            req: AuthzRequest::new(raw, 16).unwrap(),
            action,
            subject,
            txn,
            grant,
            signals,
            ladder: vec!["aal1".into(), "aal2".into(), "aal3".into()],
        });
    }
    out
}

#[test]
fn the_typed_document_serializes_to_the_json_built_before_it_was_typed() {
    for (i, f) in fixtures().iter().enumerate() {
        let typed = build_input(&f.parts());
        assert_eq!(typed, legacy::legacy_input(&f.parts()), "fixture {i}");
        // And the same text, field for field (numbers of the same kind, nulls kept).
        assert_eq!(
            typed.to_string(),
            legacy::legacy_input(&f.parts()).to_string(),
            "fixture {i}"
        );
    }
}

#[test]
fn the_regorus_value_made_directly_is_the_one_converted_from_json() {
    for (i, f) in fixtures().iter().enumerate() {
        let direct = PolicyInput::build(&f.parts()).to_rego().unwrap();
        let from_json = crate::policy::rego::to_rego(legacy::legacy_input(&f.parts()));
        assert_eq!(direct, from_json, "fixture {i}");
        assert_eq!(
            format!("{direct:?}"),
            format!("{from_json:?}"),
            "fixture {i}"
        );
    }
}

#[test]
fn a_built_document_reads_back_as_itself() {
    for f in fixtures() {
        let built = PolicyInput::build(&f.parts());
        let read = PolicyInput::from_json(&built.to_json()).unwrap();
        assert_eq!(read.to_json(), built.to_json());
    }
}

/// The first fixture's document as JSON, edited.
fn edited(edit: impl FnOnce(&mut Value)) -> Result<PolicyInput<'static>, InputError> {
    let mut doc = build_input(&fixtures()[1].parts());
    edit(&mut doc);
    PolicyInput::from_json(&doc)
}

#[test]
fn a_document_breaking_the_contract_is_refused_naming_the_field() {
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "stepguard.action: missing field `privileged`",
            Box::new(|d| {
                d["stepguard"]["action"]
                    .as_object_mut()
                    .unwrap()
                    .remove("privileged");
            }),
        ),
        (
            "stepguard.action.reversible: invalid type: string \"yes\"",
            Box::new(|d| d["stepguard"]["action"]["reversible"] = json!("yes")),
        ),
        (
            "stepguard.now: invalid type: floating point `1.5`",
            Box::new(|d| d["stepguard"]["now"] = json!(1.5)),
        ),
        (
            "stepguard.subject.acr_rank: invalid type: floating point `1.5`",
            Box::new(|d| d["stepguard"]["subject"]["acr_rank"] = json!(1.5)),
        ),
        (
            "stepguard.subject.kind: unknown variant `robot`",
            Box::new(|d| d["stepguard"]["subject"]["kind"] = json!("robot")),
        ),
        (
            "stepguard.subject.roles[1]: invalid type: integer `7`",
            Box::new(|d| d["stepguard"]["subject"]["roles"] = json!(["customer", 7])),
        ),
        (
            "stepguard.subject.claims: invalid type: sequence",
            Box::new(|d| d["stepguard"]["subject"]["claims"] = json!([])),
        ),
        (
            "stepguard.grant.uses_left: invalid value: integer `-1`",
            Box::new(|d| d["stepguard"]["grant"]["uses_left"] = json!(-1)),
        ),
        (
            "stepguard.context.velocity.count: invalid value: integer `-3`",
            Box::new(|d| d["stepguard"]["context"]["velocity"]["count"] = json!(-3)),
        ),
        (
            "stepguard.context.new_network: invalid type: string \"no\"",
            Box::new(|d| d["stepguard"]["context"]["new_network"] = json!("no")),
        ),
        (
            "stepguard.action.privileges: unknown field `privileges`",
            Box::new(|d| d["stepguard"]["action"]["privileges"] = json!(true)),
        ),
        (
            "stepguard: missing field `subject`",
            Box::new(|d| {
                d["stepguard"].as_object_mut().unwrap().remove("subject");
            }),
        ),
    ];
    for (expected, edit) in cases {
        let err = edited(edit).unwrap_err().to_string();
        assert!(err.contains(expected), "{err}\n  should say: {expected}");
    }
    // What the contract leaves open stays open: signals not measured, claims of any shape.
    edited(|d| {
        d["stepguard"]["context"] = json!({});
        d["stepguard"]["subject"]["claims"] = json!({"tctx": {"fields": {"a": [1, {"b": null}]}}});
        d["stepguard"]["action"]["value"] = Value::Null;
    })
    .unwrap();
}

#[test]
fn the_committed_schema_is_the_one_the_types_generate() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(schema::SCHEMA_PATH);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == schema::schema_text(),
        "{} differs from the input types (src/policy/input/document.rs); regenerate it with \
         `cargo run -- policy schema > {}` and commit it",
        path.display(),
        schema::SCHEMA_PATH
    );
}

#[test]
fn the_schema_requires_what_the_policy_relies_on() {
    let schema: Value = serde_json::from_str(&schema::schema_text()).unwrap();
    let defs = &schema["$defs"];
    let required = |def: &str| -> Vec<String> {
        defs[def]["required"]
            .as_array()
            .unwrap_or_else(|| panic!("{def} has required fields"))
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    for field in ["name", "reversible", "privileged", "risk", "mode"] {
        assert!(required("Action").contains(&field.to_string()), "{field}");
    }
    for field in ["kind", "acr_rank", "roles", "act", "claims"] {
        assert!(required("Subject").contains(&field.to_string()), "{field}");
    }
    assert_eq!(defs["Action"]["additionalProperties"], json!(false));
}
