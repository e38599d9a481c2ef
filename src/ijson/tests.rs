use super::*;

/// Reads with serde_json's own depth limit.
fn read(bytes: &[u8]) -> Result<StrictJson, JsonProblem> {
    super::read(bytes, MAX_DEPTH)
}

#[test]
fn repeated_member_names_are_refused_at_any_depth() {
    assert_eq!(
        read(br#"{"a": 1, "a": 2}"#).unwrap_err(),
        JsonProblem::DuplicateMember("a".into())
    );
    assert_eq!(
        read(br#"{"a": {"b": [{"c": 1, "c": 1}]}}"#).unwrap_err(),
        JsonProblem::DuplicateMember("c".into())
    );
    assert!(read(br#"{"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]}"#).is_ok());
}

#[test]
fn text_that_is_not_utf8_or_json_is_refused() {
    assert_eq!(
        read(b"{\"a\": \"\xff\"}").unwrap_err(),
        JsonProblem::NotUtf8
    );
    assert!(matches!(read(b"{\"a\": 1} x"), Err(JsonProblem::Syntax(_))));
    assert!(matches!(
        read(b"{\"a\": 1e400}"),
        Err(JsonProblem::Syntax(_))
    ));
}

#[test]
fn inexact_numbers_are_located() {
    let json = read(
        br#"{"a": [1, 12345678901234567890], "b": {"c": 0.1, "d": 0.10000000000000000001}, "e": "9007199254740993"}"#,
    )
    .unwrap();
    assert_eq!(
        json.inexact,
        vec![
            vec!["a".to_string(), "1".to_string()],
            vec!["b".to_string(), "d".to_string()]
        ]
    );
}

#[test]
fn exactness_is_the_shortest_reading_of_the_double() {
    for literal in [
        "0",
        "-0",
        "0.1",
        "100.10",
        "1e2",
        "1.5E3",
        "-2.5e-3",
        "9007199254740992",
        "5e-324",
    ] {
        assert!(exact(literal), "{literal}");
    }
    for literal in [
        "9007199254740993",
        "12345678901234567890",
        "1e400",
        "0.1000000000000000000001",
    ] {
        assert!(!exact(literal), "{literal}");
    }
}

#[test]
fn fractions_are_read_correctly_rounded() {
    let json = read(br#"{"x": 0.30000000000000004}"#).unwrap();
    assert_eq!(json.value["x"].as_f64(), Some(0.30000000000000004));
    assert!(json.inexact.is_empty());
}

#[test]
fn nesting_is_bounded_by_the_caller() {
    assert!(super::read(br#"{"a": {"b": [1]}}"#, 3).is_ok());
    assert_eq!(
        super::read(br#"{"a": {"b": [1]}}"#, 2).unwrap_err(),
        JsonProblem::TooDeep(2)
    );
    assert!(super::read(b"[[[[1]]]]", 4).is_ok());
    assert_eq!(
        super::read(b"[[[[1]]]]", 3).unwrap_err(),
        JsonProblem::TooDeep(3)
    );
}

#[test]
fn member_names_are_compared_after_unescaping() {
    assert_eq!(
        read(br#"{"sub": "alice", "s\u0075b": "admin"}"#).unwrap_err(),
        JsonProblem::DuplicateMember("sub".into())
    );
}
