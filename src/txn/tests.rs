use super::*;
use crate::request::RawRequest;
use crate::route::config::ActionConfig;
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
    assert!(
        matches!(err, TxnError::Unreadable(ref f, _) if f == "body.amount"),
        "{err:?}"
    );
    let mut req = request("POST", "A1", BODY);
    req.query.push(("ref".into(), "r2".into()));
    assert_eq!(
        bind_with(&binder, "alice", &req).unwrap_err(),
        TxnError::Ambiguous("query.ref".into())
    );
}

fn bind_err(req: &AuthzRequest) -> TxnError {
    bind_with(&Binder::with_key("k1", &[7; 32]), "alice", req).unwrap_err()
}

#[test]
fn an_absent_bound_field_is_refused_not_hashed_as_absent() {
    let missing = |body: &str| bind_err(&request("POST", "A1", body));
    assert_eq!(
        missing(r#"{"amount": 100, "currency": "EUR"}"#),
        TxnError::Missing("body.payee.iban".into())
    );
    assert_eq!(
        missing(r#"{"amount": 100, "currency": "EUR", "payee": {"iban": null}}"#),
        TxnError::Missing("body.payee.iban".into())
    );
    assert_eq!(missing(""), TxnError::Missing("body.amount".into()));
    let mut req = request("POST", "A1", BODY);
    req.raw.headers.remove("x-idem");
    assert_eq!(bind_err(&req), TxnError::Missing("header.x-idem".into()));
    let mut req = request("POST", "A1", BODY);
    req.query.clear();
    assert_eq!(bind_err(&req), TxnError::Missing("query.ref".into()));
    assert_eq!(
        TxnError::Missing("x".into()).reason(),
        "missing_bound_field"
    );
}

#[test]
fn a_declared_optional_field_binds_its_absence() {
    let configs: Vec<ActionConfig> = yaml_serde::from_str(
        r#"
- name: payments.transfer
  match: {methods: [POST], path: "/v1/accounts/{account}/transfers"}
  risk: high
  bind: [body.amount, {field: body.memo, optional: true}]
"#,
    )
    .unwrap();
    let table = RouteTable::new(&configs);
    let binder = Binder::with_key("k1", &[7; 32]);
    let digest = |body: &str| {
        let req = request("POST", "A1", body);
        let Classification::Sensitive { action, params } = table.classify(&req).unwrap() else {
            panic!("not sensitive")
        };
        binder.bind(&action, &subject("alice"), &req, &params, 0)
    };
    let absent = digest(r#"{"amount": 1}"#).unwrap();
    assert_eq!(absent.bound["body.memo"], None);
    assert_eq!(
        absent.digest,
        digest(r#"{"amount": 1, "memo": null}"#).unwrap().digest
    );
    assert_ne!(
        absent.digest,
        digest(r#"{"amount": 1, "memo": "x"}"#).unwrap().digest
    );
    assert_ne!(
        absent.digest,
        digest(r#"{"amount": 1, "memo": ""}"#).unwrap().digest
    );
    assert_eq!(
        digest(r#"{"memo": "x"}"#).unwrap_err(),
        TxnError::Missing("body.amount".into())
    );
}

#[test]
fn a_body_with_two_readings_is_refused() {
    let unreadable = |body: &[u8]| {
        let mut req = request("POST", "A1", "");
        req.raw.body = body.to_vec();
        let req = AuthzRequest::new(req.raw, 32).unwrap();
        bind_err(&req)
    };
    for body in [
        br#"{"amount": 100, "amount": 10000, "currency": "EUR", "payee": {"iban": "DE01"}}"#.as_slice(),
        br#"{"amount": 100, "currency": "EUR", "payee": {"iban": "DE01", "iban": "DE99"}}"#,
        br#"{"amount": 100, "currency": "EUR", "payee": {"iban": "DE01"}, "x": [{"a": 1, "a": 2}]}"#,
        b"{\"amount\": 100, \"currency\": \"EUR\", \"payee\": {\"iban\": \"DE\xff\"}}",
        br#"{"amount": 1e400, "currency": "EUR", "payee": {"iban": "DE01"}}"#,
    ] {
        let err = unreadable(body);
        assert_eq!(err.reason(), "unreadable_bound_field", "{err:?}");
    }
}

#[test]
fn a_bound_number_no_double_holds_exactly_is_refused() {
    for amount in [
        "12345678901234567890",
        "9007199254740993",
        "0.1000000000000000000001",
        "100.00000000000000001",
        "123456789012345678901234567890",
    ] {
        let err = bind_err(&request("POST", "A1", &BODY.replace("100", amount)));
        assert_eq!(
            err,
            TxnError::InexactNumber("body.amount".into()),
            "{amount}"
        );
    }
    for amount in ["9007199254740992", "0.1", "100.10", "-5", "1.5e3", "0"] {
        let txn = bind_with(
            &Binder::with_key("k1", &[7; 32]),
            "alice",
            &request("POST", "A1", &BODY.replace("100", amount)),
        );
        assert!(txn.is_ok(), "{amount}: {txn:?}");
    }
    // An unbound number is the application's business, not the binding's.
    let body = BODY.replace("\"EUR\"", "\"EUR\", \"id\": 12345678901234567890");
    assert!(
        bind_with(
            &Binder::with_key("k1", &[7; 32]),
            "alice",
            &request("POST", "A1", &body)
        )
        .is_ok()
    );
}

#[test]
fn a_body_of_another_content_type_is_refused() {
    let mut req = request("POST", "A1", "amount=100&currency=EUR&payee.iban=DE01");
    req.raw.headers.insert(
        "content-type".into(),
        "application/x-www-form-urlencoded".into(),
    );
    let req = AuthzRequest::new(req.raw, 32).unwrap();
    assert_eq!(
        bind_err(&req),
        TxnError::ContentType("body.amount".into(), "JSON")
    );
    let mut req = request("POST", "A1", BODY);
    req.raw
        .headers
        .insert("content-type".into(), "text/plain".into());
    let req = AuthzRequest::new(req.raw, 32).unwrap();
    assert_eq!(bind_err(&req).reason(), "unexpected_content_type");
}

#[test]
fn form_bodies_bind_flat_names_and_refuse_json() {
    let configs: Vec<ActionConfig> = yaml_serde::from_str(
        r#"
- name: payments.transfer
  match: {methods: [POST], path: "/v1/accounts/{account}/transfers"}
  risk: high
  body: form
  bind: [body.amount, body.payee]
"#,
    )
    .unwrap();
    let table = RouteTable::new(&configs);
    let binder = Binder::with_key("k1", &[7; 32]);
    let bind = |content_type: &str, body: &str| {
        let mut req = request("POST", "A1", body);
        req.raw
            .headers
            .insert("content-type".into(), content_type.into());
        let req = AuthzRequest::new(req.raw, 32).unwrap();
        let Classification::Sensitive { action, params } = table.classify(&req).unwrap() else {
            panic!("not sensitive")
        };
        binder.bind(&action, &subject("alice"), &req, &params, 0)
    };
    let form = "application/x-www-form-urlencoded";
    let txn = bind(form, "amount=100&payee=bob").unwrap();
    assert_eq!(txn.bound["body.payee"].as_deref(), Some("s:bob"));
    assert_eq!(
        bind(form, "amount=100&payee=bob&payee=mallory").unwrap_err(),
        TxnError::Ambiguous("body.payee".into())
    );
    assert_eq!(
        bind(form, "amount=100").unwrap_err(),
        TxnError::Missing("body.payee".into())
    );
    assert_eq!(
        bind(form, "amount=100&payee=%FF").unwrap_err().reason(),
        "unreadable_bound_field"
    );
    assert_eq!(
        bind("application/json", r#"{"amount": 100, "payee": "bob"}"#).unwrap_err(),
        TxnError::ContentType("body.amount".into(), "form")
    );
}

#[test]
fn a_query_value_that_is_not_utf8_is_refused() {
    let mut req = request("POST", "A1", BODY);
    req.raw.path = "/v1/accounts/A1/transfers?ref=%FF".into();
    let req = AuthzRequest::new(req.raw, 32).unwrap();
    assert_eq!(bind_err(&req).reason(), "unreadable_bound_field");
}

#[test]
fn a_method_override_is_bound() {
    let plain = digest("alice", &request("POST", "A1", BODY));
    let mut req = request("POST", "A1", BODY);
    req.raw
        .headers
        .insert("x-http-method-override".into(), "PUT".into());
    let req = AuthzRequest::new(req.raw, 32).unwrap();
    assert_ne!(plain, digest("alice", &req));
}
