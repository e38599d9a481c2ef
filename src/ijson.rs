//! One reading of JSON: the reading every conforming parser gives, or none — for request bodies
//! (see `request`) and for the JSON inside tokens (see `jose`). A document whose objects repeat a
//! member name at any depth (compared after unescaping: `"s\u0075b"` is `"sub"`; RFC 8259 leaves
//! the meaning to each parser: first wins, last wins, error), that is not UTF-8, or that nests
//! deeper than the caller allows is refused outright; numbers that an IEEE 754 double cannot
//! hold exactly (`12345678901234567890`, `0.1000000000000000000001`) are noted by their
//! location, so a transaction that binds one is refused — other parsers (JavaScript's, a
//! double-based one) would act on a different amount. These are I-JSON's rules (RFC 7493
//! §2.1–2.3); `1e400` is not JSON to serde_json at all.
//!
//! serde_json reads the document; a visitor over it refuses repeated names and deep nesting,
//! and a pre-scan of the text gives each number's literal, in document order, to decide its
//! exactness.

use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a JSON body has no single reading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonProblem {
    #[error("the body is not UTF-8")]
    NotUtf8,
    #[error("member `{0}` appears twice in one object")]
    DuplicateMember(String),
    #[error("nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("the body is not JSON: {0}")]
    Syntax(String),
}

/// Nesting serde_json itself allows; the most a caller may ask for.
pub const MAX_DEPTH: usize = 128;

/// A JSON document read once, and the members whose numbers a double cannot hold exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct StrictJson {
    pub value: Value,
    /// Paths (member names and array indexes) of numbers no double holds exactly.
    pub inexact: Vec<Vec<String>>,
}

/// Reads `bytes` as I-JSON: UTF-8, unique member names, objects and arrays nested at most
/// `max_depth` deep (the top level is depth 1); inexact numbers located.
pub fn read(bytes: &[u8], max_depth: usize) -> Result<StrictJson, JsonProblem> {
    let text = std::str::from_utf8(bytes).map_err(|_| JsonProblem::NotUtf8)?;
    let state = RefCell::new(State {
        text,
        literals: number_literals(text).into_iter(),
        path: Vec::new(),
        inexact: Vec::new(),
        max_depth,
        refused: None,
    });
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Node(&state).deserialize(&mut de).and_then(|v| {
        de.end()?;
        Ok(v)
    });
    let state = state.into_inner();
    if let Some(problem) = state.refused {
        return Err(problem);
    }
    let value = value.map_err(|e| JsonProblem::Syntax(e.to_string()))?;
    Ok(StrictJson {
        value,
        inexact: state.inexact,
    })
}

struct State<'t> {
    text: &'t str,
    /// Byte ranges of the number literals, in document order.
    literals: std::vec::IntoIter<(usize, usize)>,
    path: Vec<String>,
    inexact: Vec<Vec<String>>,
    max_depth: usize,
    refused: Option<JsonProblem>,
}

/// The byte ranges of a (syntactically valid) JSON text's number literals, in document order.
fn number_literals(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut in_string) = (0, false);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while i < bytes.len()
                && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
            {
                i += 1;
            }
            out.push((start, i));
            continue;
        }
        i += 1;
    }
    out
}

/// True when the literal's value is exactly the double every reader gets: the literal and the
/// shortest representation of its nearest double denote the same decimal.
pub fn exact(literal: &str) -> bool {
    let Ok(f) = literal.parse::<f64>() else {
        return false;
    };
    f.is_finite() && decimal(literal) == decimal(&format!("{f:e}"))
}

/// A number literal as (negative, significant digits, exponent of the first digit); zero is
/// `(false, "", 0)`.
fn decimal(literal: &str) -> Option<(bool, String, i64)> {
    let (negative, rest) = match literal.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, literal),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], rest[at + 1..].parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = int.chars().chain(frac.chars()).collect();
    let leading = digits.len() - digits.trim_start_matches('0').len();
    let significant = digits.trim_start_matches('0').trim_end_matches('0');
    if significant.is_empty() {
        return Some((false, String::new(), 0));
    }
    let position = exponent + int.len() as i64 - leading as i64;
    Some((negative, significant.to_string(), position))
}

/// A value at the current path.
struct Node<'s, 't>(&'s RefCell<State<'t>>);

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl Node<'_, '_> {
    /// A number: an integer as read; a fraction by its literal, correctly rounded (the double
    /// every conforming reader gets), or, when no double holds it exactly, located as inexact.
    fn number(&self, read: Option<Number>, integer: bool) -> Value {
        let mut state = self.0.borrow_mut();
        let text = state.text;
        let literal = state.literals.next().map(|(start, end)| &text[start..end]);
        let number = match literal.filter(|l| exact(l)) {
            Some(_) if integer => read,
            Some(l) => l.parse::<f64>().ok().and_then(Number::from_f64),
            None => {
                let path = state.path.clone();
                state.inexact.push(path);
                read
            }
        };
        number.map_or(Value::Null, Value::Number)
    }

    /// Refuses an object or array nested past the limit (its path has `max_depth` parts).
    fn deeper<E: serde::de::Error>(&self) -> Result<(), E> {
        let (depth, max) = {
            let state = self.0.borrow();
            (state.path.len() + 1, state.max_depth)
        };
        if depth > max {
            return Err(self.refuse(JsonProblem::TooDeep(max)));
        }
        Ok(())
    }

    fn refuse<E: serde::de::Error>(&self, problem: JsonProblem) -> E {
        let error = E::custom(&problem);
        self.0.borrow_mut().refused = Some(problem);
        error
    }

    fn child<E>(
        &self,
        segment: String,
        read: impl FnOnce(Node<'_, '_>) -> Result<Option<Value>, E>,
    ) -> Result<Option<Value>, E> {
        self.0.borrow_mut().path.push(segment);
        let value = read(Node(self.0));
        self.0.borrow_mut().path.pop();
        value
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(self.number(Some(v.into()), true))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(self.number(Some(v.into()), true))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(self.number(Number::from_f64(v), false))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.deeper()?;
        let mut list = Vec::new();
        loop {
            let index = list.len().to_string();
            match self.child(index, |n| seq.next_element_seed(n))? {
                Some(v) => list.push(v),
                None => return Ok(Value::Array(list)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.deeper()?;
        let mut object = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            let value = self.child(name.clone(), |n| map.next_value_seed(n).map(Some))?;
            if object.contains_key(&name) {
                return Err(self.refuse(JsonProblem::DuplicateMember(name)));
            }
            object.insert(name, value.unwrap_or(Value::Null));
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests;
