//! The hash chain. A record is sealed as number `seq` of its chain: `chain`, `seq` and `prev`
//! (the previous record's `hash`; 64 zeros for the first) are added, and `hash` is the SHA-256
//! (hex) of the record's canonical bytes without `hash` and `sig`. Records are not signed one
//! by one ([`Sealer::seal`]): each batch ends with a checkpoint sealed with [`Sealer::seal_signed`],
//! which also carries `key_id` and `sig`, the Ed25519 signature (base64url) of the same bytes —
//! so one signature covers, through `prev`, every record before it. The line written is the
//! canonical form of the whole record, `hash` (and `sig`) included, and a newline. Records of
//! format 1 (before checkpoints per batch) carry `key_id` and `sig` each.

use serde_json::{Map, Value};

use super::canonical::{canonical_object, sha256_hex};
use super::key::{PublicKey, SigningKey};

/// `prev` of a chain's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The last record of a chain: what the next one links to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

impl Head {
    pub fn genesis() -> Self {
        Self {
            seq: 0,
            hash: GENESIS.into(),
        }
    }
}

/// Seals records into one chain with one key.
#[derive(Debug)]
pub struct Sealer {
    chain: String,
    key: SigningKey,
}

impl Sealer {
    pub fn new(chain: String, key: SigningKey) -> Self {
        Self { chain, key }
    }

    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// Starts sealing into another chain (the spool took over or started one).
    pub fn set_chain(&mut self, chain: String) {
        self.chain = chain;
    }

    /// Seals `body` after `head`, unsigned (a record; its batch's checkpoint signs it): the
    /// line to write and the new head.
    pub fn seal(&self, body: Map<String, Value>, head: &Head) -> (Vec<u8>, Head) {
        self.seal_with(body, head, false)
    }

    /// Seals `body` after `head` with `key_id` and `sig` (a checkpoint).
    pub fn seal_signed(&self, body: Map<String, Value>, head: &Head) -> (Vec<u8>, Head) {
        self.seal_with(body, head, true)
    }

    fn seal_with(&self, mut body: Map<String, Value>, head: &Head, sign: bool) -> (Vec<u8>, Head) {
        let seq = head.seq + 1;
        body.remove("hash");
        body.remove("sig");
        body.remove("key_id");
        body.insert("chain".into(), self.chain.clone().into());
        body.insert("seq".into(), seq.into());
        body.insert("prev".into(), head.hash.clone().into());
        if sign {
            body.insert("key_id".into(), self.key.id().into());
        }
        let unsigned = canonical_object(&body);
        let hash = sha256_hex(&unsigned);
        if sign {
            body.insert("sig".into(), self.key.sign(&unsigned).into());
        }
        body.insert("hash".into(), hash.clone().into());
        let mut line = canonical_object(&body);
        line.push(b'\n');
        (line, Head { seq, hash })
    }
}

/// Why a line is not an intact record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// Not a JSON object.
    NotJson,
    /// Valid JSON, but not the canonical bytes of its content.
    NotCanonical,
    /// A chain field is missing or has the wrong type.
    Missing(&'static str),
    /// The content does not hash to its `hash`.
    HashMismatch,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::NotJson => f.write_str("not a JSON object"),
            LineError::NotCanonical => f.write_str("not in canonical form (bytes were changed)"),
            LineError::Missing(field) => write!(f, "`{field}` missing or malformed"),
            LineError::HashMismatch => f.write_str("content does not match its hash"),
        }
    }
}

/// A line that is an intact record (its hash matches; signature not yet checked).
#[derive(Debug, Clone)]
pub struct Checked {
    pub record: Map<String, Value>,
    pub chain: String,
    pub seq: u64,
    pub prev: String,
    pub hash: String,
    pub key_id: Option<String>,
    pub sig: Option<String>,
    /// The signed bytes: the canonical record without `hash` and `sig`.
    unsigned: Vec<u8>,
}

impl Checked {
    /// `kind` of the record (`decision`, `checkpoint`).
    pub fn kind(&self) -> &str {
        self.record
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The record format (`v`): 1 signed every record, 2 signs each batch's checkpoint.
    pub fn version(&self) -> u64 {
        self.record.get("v").and_then(Value::as_u64).unwrap_or(0)
    }

    /// Whether `key` signed this record.
    pub fn signed_by(&self, key: &PublicKey) -> bool {
        self.sig
            .as_deref()
            .is_some_and(|sig| key.verify(&self.unsigned, sig))
    }
}

/// Checks one line (without its newline): canonical form, chain fields, hash.
pub fn check(line: &[u8]) -> Result<Checked, LineError> {
    let Ok(Value::Object(mut record)) = serde_json::from_slice::<Value>(line) else {
        return Err(LineError::NotJson);
    };
    if canonical_object(&record) != line {
        return Err(LineError::NotCanonical);
    }
    let hash = take_string(&mut record, "hash")?;
    let sig = match record.remove("sig") {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(LineError::Missing("sig")),
    };
    let unsigned = canonical_object(&record);
    if sha256_hex(&unsigned) != hash {
        return Err(LineError::HashMismatch);
    }
    let field = |name: &'static str| {
        record
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or(LineError::Missing(name))
    };
    let seq = record
        .get("seq")
        .and_then(Value::as_u64)
        .filter(|s| *s > 0)
        .ok_or(LineError::Missing("seq"))?;
    Ok(Checked {
        chain: field("chain")?,
        prev: field("prev")?,
        key_id: field("key_id").ok(),
        seq,
        hash,
        sig,
        unsigned,
        record,
    })
}

fn take_string(record: &mut Map<String, Value>, name: &'static str) -> Result<String, LineError> {
    match record.remove(name) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(LineError::Missing(name)),
    }
}
