//! Transaction binding: the canonical values of the fields an action declares (path params,
//! query params, headers, JSON or form body fields) and a keyed digest over them,
//! HMAC-SHA-256(key, subject ‖ action ‖ method ‖ fields), tagged with the key id so keys can
//! rotate. Changing the amount, the payee, the account, the subject or the method changes the
//! digest, so a grant for one transaction never approves another.
//!
//! A bound field has one value the application will also read, or the request is refused:
//! absent (unless declared `optional`), repeated, read from a body of another content type, a
//! JSON body with repeated member names or a number no double holds exactly, or text that is
//! not UTF-8 — each is a [`TxnError`] the pipeline answers with 400.

use std::collections::{BTreeMap, HashMap};

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::Value;

use crate::identity::Subject;
use crate::request::{AuthzRequest, Body};
use crate::route::config::BodyFormat;
use crate::route::{Action, BindField, Bound};
use crate::txn::config::{TransactionConfig, TxnKeyConfig};

pub mod config;

/// Domain separation for digests of this format.
const DOMAIN: &[u8] = b"stepguard/txn/v1";
/// Shortest secret accepted.
const MIN_SECRET: usize = 32;

/// Why a transaction could not be bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    #[error("the request body is needed to bind `{0}` but was truncated or too large")]
    BodyUnavailable(String),
    #[error("`{0}` is bound but absent from the request")]
    Missing(String),
    #[error("`{0}` has more than one value")]
    Ambiguous(String),
    #[error("`{0}` is bound from a {1} body but the request's content type is not {1}")]
    ContentType(String, &'static str),
    #[error("`{0}` cannot be read one way only: {1}")]
    Unreadable(String, String),
    #[error("`{0}` is a number no IEEE 754 double holds exactly")]
    InexactNumber(String),
    #[error("key `{0}`: {1}")]
    Key(String, String),
}

impl TxnError {
    /// The reason code of the refusal (the 400's `reason`, or the fault's).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BodyUnavailable(_) => "body_unavailable",
            Self::Missing(_) => "missing_bound_field",
            Self::Ambiguous(_) => "ambiguous_transaction_field",
            Self::ContentType(..) => "unexpected_content_type",
            Self::Unreadable(..) => "unreadable_bound_field",
            Self::InexactNumber(_) => "inexact_bound_number",
            Self::Key(..) => "binding_key_unavailable",
        }
    }

    /// The bound field concerned (not for key faults).
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::BodyUnavailable(f)
            | Self::Missing(f)
            | Self::Ambiguous(f)
            | Self::ContentType(f, _)
            | Self::Unreadable(f, _)
            | Self::InexactNumber(f) => Some(f),
            Self::Key(..) => None,
        }
    }
}

/// A bound transaction.
#[derive(Debug, Clone, Serialize)]
pub struct Transaction {
    /// `key_id:base64url(hmac)` under the active key.
    pub digest: String,
    pub key_id: String,
    /// The same transaction's digests under previous keys still inside their overlap: grants
    /// minted before a rotation are found under these.
    #[serde(skip)]
    pub previous_digests: Vec<String>,
    /// Field name → canonical value (`None` when absent).
    pub bound: BTreeMap<String, Option<String>>,
    pub value: Option<f64>,
    pub currency: Option<String>,
}

/// The binding keys: one active, previous ones honoured until the end of their overlap.
pub struct Binder {
    active: String,
    keys: HashMap<String, hmac::Key>,
    /// Previous key ids and the end of their overlap (unix seconds).
    previous: Vec<(String, i64)>,
}

impl Binder {
    /// Loads every configured key (secret file paths were resolved when the file was loaded).
    pub fn new(config: &TransactionConfig) -> Result<Self, TxnError> {
        let mut keys = HashMap::new();
        let mut previous = Vec::new();
        for key in &config.keys {
            let secret = read_secret(key)?;
            keys.insert(key.id.clone(), hmac::Key::new(hmac::HMAC_SHA256, &secret));
            if let Some(until) = key.accept_until {
                previous.push((key.id.clone(), until));
            }
        }
        Ok(Self {
            active: config.active_key.clone(),
            keys,
            previous,
        })
    }

    /// A binder with one in-memory key (tests and benches).
    pub fn with_key(id: &str, secret: &[u8]) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        Self {
            active: id.into(),
            keys: HashMap::from([(id.to_string(), key)]),
            previous: Vec::new(),
        }
    }

    /// Binds the request's transaction under the active key, and under every previous key
    /// whose overlap has not ended at `now`.
    pub fn bind(
        &self,
        action: &Action,
        subject: &Subject,
        req: &AuthzRequest,
        params: &HashMap<String, String>,
        now: i64,
    ) -> Result<Transaction, TxnError> {
        let mut fields = Vec::with_capacity(action.bind.len());
        for bound in &action.bind {
            fields.push((
                bound.field.name(),
                extract(bound, action.body, req, params)?,
            ));
        }
        let method = req.bound_method();
        let digest = self.digest(&self.active, action, subject, &method, &fields)?;
        let mut previous_digests = Vec::new();
        for (id, until) in &self.previous {
            if now <= *until {
                previous_digests.push(self.digest(id, action, subject, &method, &fields)?);
            }
        }
        let lookup = |f: &Option<BindField>| {
            let name = f.as_ref()?.name();
            fields.iter().find(|(n, _)| *n == name)?.1.clone()
        };
        Ok(Transaction {
            digest,
            key_id: self.active.clone(),
            previous_digests,
            value: lookup(&action.value).and_then(|v| number(&v)),
            currency: lookup(&action.currency).map(|v| untag(&v).to_string()),
            bound: fields.into_iter().collect(),
        })
    }

    fn digest(
        &self,
        key_id: &str,
        action: &Action,
        subject: &Subject,
        method: &str,
        fields: &[(String, Option<String>)],
    ) -> Result<String, TxnError> {
        let key = self
            .keys
            .get(key_id)
            .ok_or_else(|| TxnError::Key(key_id.into(), "unknown".into()))?;
        let mut ctx = hmac::Context::with_key(key);
        let mut put = |bytes: Option<&[u8]>| match bytes {
            Some(b) => {
                ctx.update(&(b.len() as u32).to_be_bytes());
                ctx.update(b);
            }
            None => ctx.update(&u32::MAX.to_be_bytes()),
        };
        put(Some(DOMAIN));
        put(Some(subject.binding_key().as_bytes()));
        put(Some(action.name.as_bytes()));
        put(Some(method.as_bytes()));
        for (name, value) in fields {
            put(Some(name.as_bytes()));
            put(value.as_deref().map(str::as_bytes));
        }
        let tag = ctx.sign();
        Ok(format!("{key_id}:{}", URL_SAFE_NO_PAD.encode(tag.as_ref())))
    }
}

fn read_secret(key: &TxnKeyConfig) -> Result<Vec<u8>, TxnError> {
    let err = |m: String| TxnError::Key(key.id.clone(), m);
    let secret = match (&key.secret_file, &key.secret_env) {
        (Some(path), _) => std::fs::read(path).map_err(|e| err(e.to_string()))?,
        (None, Some(var)) => std::env::var(var)
            .map_err(|_| err(format!("environment variable {var} is not set")))?
            .into_bytes(),
        (None, None) => return Err(err("no secret".into())),
    };
    let secret = secret.trim_ascii().to_vec();
    if secret.len() < MIN_SECRET {
        return Err(err(format!("secret shorter than {MIN_SECRET} bytes")));
    }
    Ok(secret)
}

/// The canonical, type-tagged value of one bound field: present and single-valued, or absent
/// only where declared optional.
fn extract(
    bound: &Bound,
    format: BodyFormat,
    req: &AuthzRequest,
    params: &HashMap<String, String>,
) -> Result<Option<String>, TxnError> {
    let name = || bound.field.name();
    let value = read(&bound.field, format, req, params)?;
    match value {
        None if bound.optional => Ok(None),
        None => Err(TxnError::Missing(name())),
        // Lossy decoding (`%FF` read as U+FFFD) would make different requests read alike.
        Some(v) if v.contains('\u{FFFD}') => Err(TxnError::Unreadable(name(), "not UTF-8".into())),
        Some(v) => Ok(Some(v)),
    }
}

fn read(
    field: &BindField,
    format: BodyFormat,
    req: &AuthzRequest,
    params: &HashMap<String, String>,
) -> Result<Option<String>, TxnError> {
    let single = |mut values: Vec<&str>| -> Result<Option<String>, TxnError> {
        match values.len() {
            0 => Ok(None),
            1 => Ok(values.pop().map(|v| format!("s:{v}"))),
            _ => Err(TxnError::Ambiguous(field.name())),
        }
    };
    let body = |kind| TxnError::ContentType(field.name(), kind);
    match (field, req.body(), format) {
        (BindField::Path(p), ..) => Ok(params.get(p).map(|v| format!("s:{v}"))),
        (BindField::Query(q), ..) => single(
            req.query
                .iter()
                .filter(|(k, _)| k == q)
                .map(|(_, v)| v.as_str())
                .collect(),
        ),
        (BindField::Header(h), ..) => Ok(req.header(h).map(|v| format!("s:{v}"))),
        (BindField::Body(_), Body::Empty, _) => Ok(None),
        (BindField::Body(_), Body::Truncated | Body::TooLarge, _) => {
            Err(TxnError::BodyUnavailable(field.name()))
        }
        (BindField::Body(path), Body::Json(json), BodyFormat::Json) => {
            if req.inexact_numbers().iter().any(|p| p == path) {
                return Err(TxnError::InexactNumber(field.name()));
            }
            // `null` is absence to most applications: bound as absent, never as a value.
            Ok(pointer(json, path).filter(|v| !v.is_null()).map(canonical))
        }
        (BindField::Body(_), Body::Invalid(problem), BodyFormat::Json) => {
            Err(TxnError::Unreadable(field.name(), problem.to_string()))
        }
        (BindField::Body(path), Body::Form(pairs), BodyFormat::Form) => single(
            pairs
                .iter()
                .filter(|(k, _)| path.len() == 1 && *k == path[0])
                .map(|(_, v)| v.as_str())
                .collect(),
        ),
        (BindField::Body(_), _, BodyFormat::Json) => Err(body("JSON")),
        (BindField::Body(_), _, BodyFormat::Form) => Err(body("form")),
    }
}

fn pointer<'a>(json: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(json, |v, part| match v {
        Value::Object(map) => map.get(part),
        Value::Array(list) => list.get(part.parse::<usize>().ok()?),
        _ => None,
    })
}

/// Canonical text of a JSON value: numbers by value (100 = 100.0 = 1e2), objects with sorted keys.
fn canonical(value: &Value) -> String {
    match value {
        Value::String(s) => format!("s:{s}"),
        Value::Number(n) => format!("n:{}", canonical_number(n)),
        Value::Bool(b) => format!("b:{b}"),
        Value::Null => "null".into(),
        other => format!("j:{other}"),
    }
}

fn canonical_number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// The plain value of a canonical, type-tagged bound value (`s:bob` → `bob`).
pub fn untag(value: &str) -> &str {
    value.split_once(':').map_or(value, |(_, v)| v)
}

fn number(value: &str) -> Option<f64> {
    untag(value)
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
