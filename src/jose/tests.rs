use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use super::*;

fn part(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(text)
}

#[test]
fn a_plain_object_reads_as_serde_json_reads_it() {
    let text = r#"{"sub":"alice","aud":["a","b"],"exp":1800000300,"n":-1,"f":1.5,"x":null,"t":true,"o":{"k":"v"}}"#;
    assert_eq!(
        object(text.as_bytes()).unwrap(),
        serde_json::from_str::<Value>(text).unwrap()
    );
}

#[test]
fn a_duplicate_member_is_refused_at_any_depth() {
    for text in [
        r#"{"sub":"alice","sub":"admin"}"#,
        r#"{"sub":"alice","s\u0075b":"admin"}"#,
        r#"{"act":{"sub":"agent","sub":"admin"}}"#,
        r#"{"realm_access":{"roles":["a"]},"list":[{"k":1,"k":2}]}"#,
    ] {
        assert_eq!(
            object(text.as_bytes()),
            Err(JoseError::DuplicateMember),
            "{text}"
        );
    }
    assert!(
        object(br#"{"a":{"k":1},"b":{"k":1}}"#).is_ok(),
        "the same name in two objects is no duplicate"
    );
}

#[test]
fn deep_nesting_is_refused() {
    let nest = |depth: usize| format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
    assert!(object(nest(MAX_DEPTH).as_bytes()).is_ok());
    assert_eq!(
        object(nest(MAX_DEPTH + 1).as_bytes()),
        Err(JoseError::TooDeep)
    );
    let arrays = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
    assert_eq!(object(arrays.as_bytes()), Err(JoseError::TooDeep));
}

#[test]
fn anything_but_one_json_object_is_refused() {
    assert_eq!(object(b"[1]"), Err(JoseError::NotObject));
    assert_eq!(object(b"\"sub\""), Err(JoseError::NotObject));
    assert_eq!(object(br#"{"a":1} {"a":2}"#), Err(JoseError::Json));
    assert_eq!(object(br#"{"a":1"#), Err(JoseError::Json));
    assert_eq!(decode_part("***"), Err(JoseError::Base64));
    assert_eq!(compact("a.b"), Err(JoseError::NotCompact));
    assert_eq!(compact("a.b.c.d"), Err(JoseError::NotCompact));
}

#[test]
fn compact_reads_header_and_payload() {
    let token = format!(
        "{}.{}.sig",
        part(r#"{"alg":"ES256"}"#),
        part(r#"{"sub":"alice"}"#)
    );
    assert_eq!(
        compact(&token).unwrap(),
        (json!({"alg": "ES256"}), json!({"sub": "alice"}))
    );
    let duplicate_header = format!(
        "{}.{}.sig",
        part(r#"{"alg":"ES256","alg":"none"}"#),
        part(r#"{"sub":"alice"}"#)
    );
    assert_eq!(compact(&duplicate_header), Err(JoseError::DuplicateMember));
}
