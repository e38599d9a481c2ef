use super::*;
use crate::config::ActionConfig;
use crate::request::RawRequest;
use crate::route::{Classification, RouteTable};
use serde_json::json;

const ACTION: &str = r#"
- name: payments.transfer
  match: {methods: [POST, PUT], path: "/v1/accounts/{account}/transfers"}
  risk: high
  bind: [path.account, query.ref, header.x-idem, body.amount, body.payee.iban, body.currency]
  value: body.amount
  currency: body.currency
"#;

fn subject(sub: &str) -> Subject {
    Subject::from_claims(
        json!({"iss": "https://idp", "sub": sub, "auth_time": 1}),
        10,
        None,
    )
}

fn request(method: &str, account: &str, body: &str) -> AuthzRequest {
    let mut raw = RawRequest {
        method: method.into(),
        host: "api".into(),
        path: format!("/v1/accounts/{account}/transfers?ref=r1"),
        body: body.as_bytes().to_vec(),
        ..Default::default()
    };
    raw.headers
        .insert("content-type".into(), "application/json".into());
    raw.headers.insert("x-idem".into(), "k-1".into());
    AuthzRequest::new(raw, 32).unwrap()
}

fn bind_with(binder: &Binder, sub: &str, req: &AuthzRequest) -> Result<Transaction, TxnError> {
    let configs: Vec<ActionConfig> = yaml_serde::from_str(ACTION).unwrap();
    let table = RouteTable::new(&configs);
    let Classification::Sensitive { action, params } = table.classify(req).unwrap() else {
        panic!("not sensitive")
    };
    binder.bind(&action, &subject(sub), req, &params, 0)
}

fn digest(sub: &str, req: &AuthzRequest) -> String {
    bind_with(&Binder::with_key("k1", &[7; 32]), sub, req)
        .unwrap()
        .digest
}

const BODY: &str = r#"{"amount": 100, "currency": "EUR", "payee": {"iban": "DE01"}}"#;

#[test]
fn same_transaction_same_digest() {
    let a = digest("alice", &request("POST", "A1", BODY));
    assert_eq!(a, digest("alice", &request("POST", "A1", BODY)));
    assert!(a.starts_with("k1:"));
}

#[test]
fn any_bound_change_is_another_transaction() {
    let base = digest("alice", &request("POST", "A1", BODY));
    let variants = [
        digest(
            "alice",
            &request("POST", "A1", &BODY.replace("100", "10000")),
        ),
        digest(
            "alice",
            &request("POST", "A1", &BODY.replace("DE01", "DE99")),
        ),
        digest("alice", &request("POST", "A2", BODY)),
        digest("mallory", &request("POST", "A1", BODY)),
        digest("alice", &request("PUT", "A1", BODY)),
        digest(
            "alice",
            &request("POST", "A1", r#"{"amount": 100, "currency": "EUR"}"#),
        ),
        digest(
            "alice",
            &request("POST", "A1", &BODY.replace("100", "\"100\"")),
        ),
    ];
    for (i, v) in variants.iter().enumerate() {
        assert_ne!(&base, v, "variant {i}");
    }
}

#[test]
fn numbers_are_canonical() {
    let a = digest("alice", &request("POST", "A1", BODY));
    assert_eq!(
        a,
        digest(
            "alice",
            &request("POST", "A1", &BODY.replace("100", "100.0"))
        )
    );
    assert_eq!(
        a,
        digest("alice", &request("POST", "A1", &BODY.replace("100", "1e2")))
    );
    assert_eq!(
        a,
        digest(
            "alice",
            &request(
                "POST",
                "A1",
                &BODY.replace(
                    r#""amount": 100, "currency": "EUR""#,
                    r#""currency": "EUR", "amount": 100"#
                )
            )
        )
    );
}

#[test]
fn value_currency_and_bound_fields_are_reported() {
    let txn = bind_with(
        &Binder::with_key("k1", &[7; 32]),
        "alice",
        &request("POST", "A1", BODY),
    )
    .unwrap();
    assert_eq!(txn.value, Some(100.0));
    assert_eq!(txn.currency.as_deref(), Some("EUR"));
    assert_eq!(txn.bound["path.account"].as_deref(), Some("s:A1"));
    assert_eq!(txn.bound["body.payee.iban"].as_deref(), Some("s:DE01"));
}

#[test]
fn keys_change_digests() {
    let req = request("POST", "A1", BODY);
    let k1 = bind_with(&Binder::with_key("k1", &[7; 32]), "alice", &req)
        .unwrap()
        .digest;
    let k2 = bind_with(&Binder::with_key("k2", &[8; 32]), "alice", &req)
        .unwrap()
        .digest;
    assert_ne!(k1.split_once(':').unwrap().1, k2.split_once(':').unwrap().1);
}

#[test]
fn unreadable_body_and_repeated_fields_refuse_binding() {
    let binder = Binder::with_key("k1", &[7; 32]);
    let err = bind_with(&binder, "alice", &request("POST", "A1", "{broken")).unwrap_err();
    assert_eq!(err, TxnError::BodyUnavailable("body.amount".into()));
    let mut req = request("POST", "A1", BODY);
    req.query.push(("ref".into(), "r2".into()));
    assert_eq!(
        bind_with(&binder, "alice", &req).unwrap_err(),
        TxnError::Ambiguous("query.ref".into())
    );
}
