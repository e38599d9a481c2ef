//! RFC 8785's published examples replayed against [`canonical_object`] and [`sanitize`], and
//! property tests over generated JSON: canonicalisation is idempotent, parsing the canonical bytes
//! gives the (sanitized) value back, and member order never changes the bytes.
//!
//! Records hold integers within ±(2^53 - 1) only: [`sanitize`] turns every other number into its
//! decimal string before a record is sealed. So the RFC's number samples (Appendix B) are checked
//! in two halves: the ones that stay numbers must print exactly as the RFC says, and the rest must
//! become strings that parse back to the very same IEEE-754 double (nothing is lost).

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::{canonical_object, sanitize};

fn canonical(value: &Value) -> String {
    let Value::Object(map) = value else {
        panic!("not an object: {value}");
    };
    String::from_utf8(canonical_object(map)).unwrap()
}

/// RFC 8785 §3.2.3: members sorted by the UTF-16 code units of their names (U+1F600, a
/// surrogate pair starting 0xD83D, sorts before U+FB33, though its UTF-8 sorts after).
#[test]
fn rfc8785_sorting_example() {
    let input: Value = serde_json::from_str(
        r#"{
          "\u20ac": "Euro Sign",
          "\r": "Carriage Return",
          "\ufb33": "Hebrew Letter Dalet With Dagesh",
          "1": "One",
          "\ud83d\ude00": "Emoji: Grinning Face",
          "\u0080": "Control",
          "\u00f6": "Latin Small Letter O With Diaeresis"
        }"#,
    )
    .unwrap();
    let expected = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\
        \"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\
        \"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
    assert_eq!(canonical(&input), expected);
}

/// RFC 8785 §3.2.2 / §3.2.4: the example's literals and string serialize exactly as the RFC's
/// output; its non-integer numbers are made strings (records hold no floats) that keep their value.
#[test]
fn rfc8785_main_example() {
    let mut input: Value = serde_json::from_str(
        r#"{
          "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
          "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
          "literals": [null, true, false]
        }"#,
    )
    .unwrap();
    let numbers = input["numbers"].take();
    input.as_object_mut().unwrap().remove("numbers");
    assert_eq!(
        canonical(&input),
        "{\"literals\":[null,true,false],\"string\":\"\u{20ac}$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}"
    );
    // The RFC prints these as 333333333.3333333, 1e+30, 4.5, 0.002, 1e-27.
    let rfc: [f64; 5] = [333333333.3333333, 1e30, 4.5, 0.002, 1e-27];
    let mut sanitized = numbers.clone();
    sanitize(&mut sanitized);
    for (i, expected) in rfc.iter().enumerate() {
        let s = sanitized[i].as_str().unwrap();
        assert_eq!(
            s.parse::<f64>().unwrap().to_bits(),
            expected.to_bits(),
            "{s}"
        );
    }
}

/// RFC 8785 Appendix B: IEEE-754 bit patterns and their canonical (ECMAScript) forms.
const APPENDIX_B: [(u64, &str); 25] = [
    (0x0000000000000000, "0"),
    (0x8000000000000000, "0"),
    (0x0000000000000001, "5e-324"),
    (0x8000000000000001, "-5e-324"),
    (0x7fefffffffffffff, "1.7976931348623157e+308"),
    (0xffefffffffffffff, "-1.7976931348623157e+308"),
    (0x4340000000000000, "9007199254740992"),
    (0xc340000000000000, "-9007199254740992"),
    (0x4430000000000000, "295147905179352830000"),
    (0x44b52d02c7e14af5, "9.999999999999997e+22"),
    (0x44b52d02c7e14af6, "1e+23"),
    (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
    (0x444b1ae4d6e2ef4e, "999999999999999700000"),
    (0x444b1ae4d6e2ef4f, "999999999999999900000"),
    (0x444b1ae4d6e2ef50, "1e+21"),
    (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
    (0x3eb0c6f7a0b5ed8d, "0.000001"),
    (0x41b3de4355555553, "333333333.3333332"),
    (0x41b3de4355555554, "333333333.33333325"),
    (0x41b3de4355555555, "333333333.3333333"),
    (0x41b3de4355555556, "333333333.3333334"),
    (0x41b3de4355555557, "333333333.33333343"),
    (0xbecbf647612f3696, "-0.0000033333333333333333"),
    (0x43143ff3c1cb0959, "1424953923781206.2"),
    // NaN and Infinity: the RFC requires an error; JSON cannot carry them.
    (0x7fffffffffffffff, ""),
];

#[test]
fn rfc8785_appendix_b_numbers() {
    let mut as_numbers = 0;
    for (bits, rfc) in APPENDIX_B {
        let double = f64::from_bits(bits);
        if rfc.is_empty() {
            assert!(serde_json::Number::from_f64(double).is_none(), "{bits:#x}");
            assert!(serde_json::Number::from_f64(f64::INFINITY).is_none());
            continue;
        }
        // The RFC's own text for the number, read as JSON, then sealed as a record would be.
        let mut value = json!({ "n": serde_json::from_str::<Value>(rfc).unwrap() });
        sanitize(&mut value);
        match &value["n"] {
            Value::Number(_) => {
                assert_eq!(canonical(&value), format!("{{\"n\":{rfc}}}"), "{bits:#x}");
                as_numbers += 1;
            }
            Value::String(s) => {
                let back = s.parse::<f64>().unwrap();
                // -0 is written "0" by the RFC: equal as numbers, not as bits.
                assert!(back == double, "{bits:#x}: {s}");
                assert_eq!(canonical(&value), format!("{{\"n\":\"{s}\"}}"));
            }
            other => panic!("{bits:#x}: {other}"),
        }
    }
    assert_eq!(as_numbers, 2, "only 0 and -0 are safe integers");
    // The boundary: 2^53 - 1 stays a number, 2^53 (above) became a string.
    let mut edge = json!({"a": 9_007_199_254_740_991_u64, "b": -9_007_199_254_740_991_i64});
    sanitize(&mut edge);
    assert_eq!(
        canonical(&edge),
        "{\"a\":9007199254740991,\"b\":-9007199254740991}"
    );
}

/// Generated JSON: every kind of value, any Unicode (controls, surrogate-pair characters) in
/// strings and names, numbers of every shape (`sanitize` then applies as for records).
fn json_value() -> impl Strategy<Value = Value> {
    let text = prop::collection::vec(any::<char>(), 0..6).prop_map(String::from_iter);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-9_007_199_254_740_991_i64..=9_007_199_254_740_991).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text.clone().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((text.clone(), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// A generated object, sanitized as records are.
fn record() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec(
        (
            prop::collection::vec(any::<char>(), 0..6).prop_map(String::from_iter),
            json_value(),
        ),
        0..8,
    )
    .prop_map(|members| {
        let mut value = Value::Object(members.into_iter().collect());
        sanitize(&mut value);
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn canonicalisation_is_idempotent(map in record()) {
        let once = canonical_object(&map);
        let reparsed: Map<String, Value> = serde_json::from_slice(&once).unwrap();
        prop_assert_eq!(canonical_object(&reparsed), once);
    }

    #[test]
    fn parsing_the_canonical_bytes_gives_the_value_back(map in record()) {
        let back: Map<String, Value> = serde_json::from_slice(&canonical_object(&map)).unwrap();
        prop_assert_eq!(back, map);
    }

    #[test]
    fn member_order_does_not_change_the_bytes(map in record(), seed in any::<u64>()) {
        let mut members: Vec<(String, Value)> = map.clone().into_iter().collect();
        members.reverse();
        let shift = members.len().max(1);
        members.rotate_left(seed as usize % shift);
        let shuffled: Map<String, Value> = members.into_iter().collect();
        prop_assert_eq!(canonical_object(&shuffled), canonical_object(&map));
    }
}
