//! One reading of a JWT: the JSON of a JWS header or a JWT payload, parsed so that stepguard can
//! never read a token differently from Envoy's `jwt_authn`, the IdP or the application.
//!
//! RFC 7519 §4 lets a parser take the last of duplicate member names; others take the first or
//! refuse. A gate that reads `{"sub":"alice","sub":"admin"}` as one user while the application
//! reads another is a bypass, so a duplicate member name — at any depth, compared after JSON
//! unescaping (`"s\u0075b"` is `"sub"`) — makes the token invalid here, as does nesting deeper
//! than [`MAX_DEPTH`]. Every place a JWS is read (access tokens in [`crate::identity`], the
//! grant API's caller tokens through it, ID tokens in [`crate::oidc`]) parses through
//! [`decode_part`] or [`compact`].

use std::cell::Cell;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Deepest nesting of objects and arrays accepted (the top-level object is depth 1).
pub const MAX_DEPTH: usize = 32;

/// Why a JWS part could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoseError {
    #[error("not a compact JWS")]
    NotCompact,
    #[error("bad base64url")]
    Base64,
    #[error("bad JSON")]
    Json,
    #[error("not a JSON object")]
    NotObject,
    #[error("duplicate JSON member name")]
    DuplicateMember,
    #[error("JSON nested too deeply")]
    TooDeep,
}

impl JoseError {
    /// A short reason for logs and `invalid_token` answers.
    pub fn reason(self) -> &'static str {
        match self {
            JoseError::NotCompact => "not a compact JWS",
            JoseError::Base64 => "bad base64url",
            JoseError::Json => "bad JSON",
            JoseError::NotObject => "not a JSON object",
            JoseError::DuplicateMember => "duplicate JSON member name",
            JoseError::TooDeep => "JSON nested too deeply",
        }
    }
}

/// The header and payload of a compact JWS (`header.payload.signature`), each read strictly;
/// the signature is not checked here.
pub fn compact(token: &str) -> Result<(Value, Value), JoseError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JoseError::NotCompact);
    };
    Ok((decode_part(header)?, decode_part(payload)?))
}

/// One base64url (unpadded) part of a compact JWS, read as a strict JSON object.
pub fn decode_part(part: &str) -> Result<Value, JoseError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JoseError::Base64)?;
    object(&bytes)
}

/// A JSON object with no duplicate member name at any depth and no nesting past [`MAX_DEPTH`].
pub fn object(bytes: &[u8]) -> Result<Value, JoseError> {
    let fault = Cell::new(None);
    let mut reader = serde_json::Deserializer::from_slice(bytes);
    let value = Strict {
        depth: 0,
        fault: &fault,
    }
    .deserialize(&mut reader)
    .and_then(|v| reader.end().map(|()| v))
    .map_err(|_| fault.get().unwrap_or(JoseError::Json))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(JoseError::NotObject)
    }
}

/// Reads one JSON value at `depth`, recording why it refused in `fault`.
#[derive(Clone, Copy)]
struct Strict<'a> {
    depth: usize,
    fault: &'a Cell<Option<JoseError>>,
}

impl Strict<'_> {
    /// The reader for a member or element one level down; refused past [`MAX_DEPTH`].
    fn nested<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= MAX_DEPTH {
            return Err(self.refuse(JoseError::TooDeep));
        }
        Ok(Self {
            depth: self.depth + 1,
            ..self
        })
    }

    fn refuse<E: de::Error>(self, why: JoseError) -> E {
        self.fault.set(Some(why));
        E::custom(why)
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, reader: D) -> Result<Value, D::Error> {
        reader.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
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
        let inner = self.nested()?;
        let mut list = Vec::new();
        while let Some(element) = seq.next_element_seed(inner)? {
            list.push(element);
        }
        Ok(Value::Array(list))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                return Err(self.refuse(JoseError::DuplicateMember));
            }
            let value = map.next_value_seed(inner)?;
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests;
