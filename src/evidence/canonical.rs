//! Canonical bytes of a record: RFC 8785 (JSON Canonicalization Scheme) for the JSON records
//! hold — objects with members sorted by the UTF-16 code units of their names, no whitespace,
//! strings escaped as RFC 8785 §3.2.2.2 says (serde_json writes exactly that), and integers
//! only. [`sanitize`] makes any other number a string before a record is sealed, so every
//! record is canonicalized the same way by this code and by any RFC 8785 implementation.

use aws_lc_rs::digest;
use serde_json::{Map, Value};

/// Largest integer every JSON implementation reads exactly (2^53 - 1).
const MAX_SAFE: u64 = 9_007_199_254_740_991;

/// The canonical bytes of an object.
pub fn canonical_object(map: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    write_object(map, &mut out);
    out
}

fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // Integers print the same everywhere; `sanitize` leaves no other number.
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(map, out),
    }
}

fn write_object(map: &Map<String, Value>, out: &mut Vec<u8>) {
    let mut members: Vec<(&String, &Value)> = map.iter().collect();
    members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
    out.push(b'{');
    for (i, (name, value)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(name, out);
        out.push(b':');
        write(value, out);
    }
    out.push(b'}');
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json escapes `"`, `\` and U+0000..U+001F (as \b \t \n \f \r or \u00xx, lower-case
    // hex) and nothing else: RFC 8785's rule. Writing a string cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Replaces every number that is not an integer within ±(2^53 - 1) by its decimal string.
pub fn sanitize(value: &mut Value) {
    match value {
        Value::Number(n) => {
            let safe = n.as_u64().is_some_and(|u| u <= MAX_SAFE)
                || n.as_i64().is_some_and(|i| i.unsigned_abs() <= MAX_SAFE);
            if !safe {
                *value = Value::String(n.to_string());
            }
        }
        Value::Array(items) => items.iter_mut().for_each(sanitize),
        Value::Object(map) => map.values_mut().for_each(sanitize),
        _ => {}
    }
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod rfc8785;
