//! Property tests for the binder over generated transfer requests: two requests bind to the
//! same digest exactly when every bound field has the same presence and value; a request with a
//! missing required field or a repeated bound member never gets a digest.

use std::collections::HashMap;

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::request::RawRequest;
use crate::route::config::ActionConfig;
use crate::route::{Classification, RouteTable};

const ACTION: &str = r#"
- name: payments.transfer
  match: {methods: [POST], path: "/v1/accounts/{account}/transfers"}
  risk: high
  bind: [path.account, header.x-idem, body.amount, body.payee.iban, {field: body.memo, optional: true}]
  value: body.amount
"#;

/// How a generated member is written.
#[derive(Debug, Clone)]
enum Member {
    Absent,
    Null,
    Value(String),
}

/// A generated transfer: what each bound field is, and how it is written.
#[derive(Debug, Clone)]
struct Transfer {
    account: String,
    idem: Option<String>,
    /// The amount's value and one of its spellings (`100`, `100.0`, `1e2`, `"100"`).
    amount: Option<(i64, u8)>,
    iban: Member,
    memo: Member,
    /// Repeat this member name in its object (when it is written at all).
    repeat: Option<&'static str>,
}

fn member() -> impl Strategy<Value = Member> {
    prop_oneof![
        Just(Member::Absent),
        Just(Member::Null),
        "[A-Z]{0,2}[0-9]{0,2}".prop_map(Member::Value),
    ]
}

fn transfer() -> impl Strategy<Value = Transfer> {
    (
        "A[0-9]",
        proptest::option::of("k[0-2]"),
        proptest::option::of((-3i64..4, 0u8..4)),
        member(),
        member(),
        proptest::option::of(prop_oneof![Just("amount"), Just("iban"), Just("memo")]),
    )
        .prop_map(|(account, idem, amount, iban, memo, repeat)| Transfer {
            account,
            idem,
            amount,
            iban,
            memo,
            repeat,
        })
}

impl Transfer {
    fn body(&self) -> String {
        let mut top = Vec::new();
        let spell = |v: i64, how: u8| match how {
            0 => v.to_string(),
            1 => format!("{v}.0"),
            2 => format!("{v}e0"),
            _ => format!("\"{v}\""),
        };
        if let Some((v, how)) = self.amount {
            top.push(format!("\"amount\": {}", spell(v, how)));
            if self.repeat == Some("amount") {
                top.push(format!("\"amount\": {}", spell(v + 1, how)));
            }
        }
        let write = |name: &str, m: &Member, out: &mut Vec<String>| match m {
            Member::Absent => {}
            Member::Null => out.push(format!("\"{name}\": null")),
            Member::Value(s) => out.push(format!("\"{name}\": {}", json!(s))),
        };
        let mut payee = Vec::new();
        write("iban", &self.iban, &mut payee);
        if self.repeat == Some("iban") && !matches!(self.iban, Member::Absent) {
            payee.push("\"iban\": \"X\"".into());
        }
        top.push(format!("\"payee\": {{{}}}", payee.join(", ")));
        write("memo", &self.memo, &mut top);
        if self.repeat == Some("memo") && !matches!(self.memo, Member::Absent) {
            top.push("\"memo\": \"Y\"".into());
        }
        format!("{{{}}}", top.join(", "))
    }

    fn request(&self) -> AuthzRequest {
        let mut headers = HashMap::from([("content-type".into(), "application/json".into())]);
        if let Some(idem) = &self.idem {
            headers.insert("x-idem".into(), idem.clone());
        }
        let raw = RawRequest {
            method: "POST".into(),
            host: "api".into(),
            path: format!("/v1/accounts/{}/transfers", self.account),
            headers,
            body: self.body().into_bytes(),
            ..Default::default()
        };
        AuthzRequest::new(raw, 32).unwrap()
    }

    /// Whether the binder must refuse it: a required field absent (or null), a repeated member.
    fn refused(&self) -> bool {
        self.idem.is_none()
            || self.amount.is_none()
            || !matches!(self.iban, Member::Value(_))
            || (self.repeat == Some("amount") && self.amount.is_some())
            || (self.repeat == Some("iban") && !matches!(self.iban, Member::Absent))
            || (self.repeat == Some("memo") && !matches!(self.memo, Member::Absent))
    }

    /// What the application acts on: equal exactly when the transactions are the same.
    fn meaning(&self) -> impl PartialEq + std::fmt::Debug {
        let memo = match &self.memo {
            Member::Value(s) => Some(s.clone()),
            Member::Absent | Member::Null => None,
        };
        // A quoted amount is a string, another value than the number.
        let amount = self.amount.map(|(v, how)| (v, how == 3));
        (
            self.account.clone(),
            self.idem.clone(),
            amount,
            format!("{:?}", self.iban),
            memo,
        )
    }
}

fn bind(t: &Transfer) -> Result<String, TxnError> {
    let configs: Vec<ActionConfig> = yaml_serde::from_str(ACTION).unwrap();
    let table = RouteTable::new(&configs);
    let req = t.request();
    let Classification::Sensitive { action, params } = table.classify(&req).unwrap() else {
        panic!("not sensitive")
    };
    let subject = Subject::from_claims(json!({"iss": "https://idp", "sub": "alice"}), 10, None);
    Binder::with_key("k1", &[7; 32])
        .bind(&action, &subject, &req, &params, 0)
        .map(|t| t.digest)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn refused_exactly_when_a_bound_field_is_missing_or_repeated(t in transfer()) {
        prop_assert_eq!(bind(&t).is_err(), t.refused(), "{}", t.body());
    }

    #[test]
    fn same_digest_exactly_when_every_bound_field_means_the_same(a in transfer(), b in transfer()) {
        if let (Ok(da), Ok(db)) = (bind(&a), bind(&b)) {
            prop_assert_eq!(da == db, a.meaning() == b.meaning(), "{} / {}", a.body(), b.body());
        }
    }
}
