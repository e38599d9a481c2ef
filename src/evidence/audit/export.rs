//! `stepguard audit export`: the decision and lifecycle records that match a filter, printed as
//! they are stored.

use std::io::Write;
use std::path::PathBuf;

use serde_json::Value;

use super::expand;

/// Which records `export` prints: decisions and lifecycle events (never checkpoints).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Unix seconds, inclusive.
    pub from: Option<i64>,
    /// Unix seconds, exclusive.
    pub to: Option<i64>,
    /// `iss|sub`, or `sub` alone.
    pub subject: Option<String>,
    /// A transaction digest.
    pub transaction: Option<String>,
}

impl Filter {
    fn matches(&self, record: &Value) -> bool {
        if record.get("kind").and_then(Value::as_str) == Some("checkpoint") {
            return false;
        }
        let unix = record.get("unix").and_then(Value::as_i64).unwrap_or(0);
        let subject = record
            .pointer("/input/subject/id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let digest = record
            .pointer("/input/transaction/digest")
            .and_then(Value::as_str);
        self.from.is_none_or(|from| unix >= from)
            && self.to.is_none_or(|to| unix < to)
            && self.subject.as_deref().is_none_or(|s| {
                subject == s || subject.rsplit_once('|').is_some_and(|(_, sub)| sub == s)
            })
            && self
                .transaction
                .as_deref()
                .is_none_or(|t| digest == Some(t))
    }
}

/// Writes the decision and lifecycle records of `paths` matching `filter` to `out`, one JSON line each, as
/// stored; the number written and the number of lines skipped as unreadable. It does not verify:
/// run [`verify`] first.
pub fn export(
    paths: &[PathBuf],
    filter: &Filter,
    out: &mut impl Write,
) -> Result<(u64, u64), String> {
    let (mut written, mut skipped) = (0, 0);
    for file in expand(paths)? {
        let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<Value>(line) {
                Ok(record) if filter.matches(&record) => {
                    out.write_all(line)
                        .and_then(|()| out.write_all(b"\n"))
                        .map_err(|e| e.to_string())?;
                    written += 1;
                }
                Ok(_) => {}
                Err(_) => skipped += 1,
            }
        }
    }
    Ok((written, skipped))
}
