//! `stepguard audit`: verify spools and export records.
//!
//! [`verify`] checks each chain it is given — every line intact (canonical bytes that hash to
//! the record's `hash`), every signature (with the given public keys), `seq` consecutive and
//! each `prev` the hash of the record before, segments starting where their names say, and each
//! checkpoint naming the head it follows and the decisions since the previous one — and names
//! the first record that was altered, removed, reordered or truncated. [`export`] prints the
//! decision records that match a filter, as they are stored.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::chain::{self, GENESIS, LineError};
use super::key::PublicKey;
use super::spool::files::{chains, segment_seq, segments};

/// What went wrong first in a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// A record's bytes changed (or its hash was recomputed over changed content).
    Altered,
    /// Records are missing.
    Removed,
    /// Records are out of order.
    Reordered,
    /// The file ends inside a record.
    Truncated,
    /// A signature does not verify with the given keys.
    Signature,
}

/// The first problem found in a chain, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub file: PathBuf,
    /// 1-based line number in `file`.
    pub line: usize,
    /// The record's `seq`, when it can be read (for `Removed`: the first missing one).
    pub seq: Option<u64>,
    pub decision_id: Option<String>,
    pub detail: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            ProblemKind::Altered => "ALTERED",
            ProblemKind::Removed => "REMOVED",
            ProblemKind::Reordered => "REORDERED",
            ProblemKind::Truncated => "TRUNCATED",
            ProblemKind::Signature => "BAD SIGNATURE",
        };
        write!(f, "{kind}: {}:{}", self.file.display(), self.line)?;
        if let Some(seq) = self.seq {
            write!(f, " seq {seq}")?;
        }
        if let Some(id) = &self.decision_id {
            write!(f, " decision {id}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// One chain's verification.
#[derive(Debug, Clone, Default)]
pub struct ChainReport {
    pub chain: String,
    pub files: Vec<PathBuf>,
    /// Intact records read before the first problem.
    pub records: u64,
    pub decisions: u64,
    pub checkpoints: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The last checkpoint's `seq` and reason.
    pub last_checkpoint: Option<(u64, String)>,
    /// Whether signatures were checked (public keys given).
    pub signatures_checked: bool,
    pub problem: Option<Problem>,
    /// Observations that are not problems (e.g. a chain that starts after seq 1).
    pub notes: Vec<String>,
}

impl ChainReport {
    /// Records after the last checkpoint: not yet covered by one (normal after a crash).
    pub fn after_checkpoint(&self) -> u64 {
        match (self.last_seq, &self.last_checkpoint) {
            (Some(last), Some((cp, _))) => last - cp,
            (Some(_), None) => self.records,
            _ => 0,
        }
    }
}

/// Every chain's verification.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub chains: Vec<ChainReport>,
}

impl Report {
    pub fn ok(&self) -> bool {
        !self.chains.is_empty() && self.chains.iter().all(|c| c.problem.is_none())
    }

    /// The first problem of any chain.
    pub fn first_problem(&self) -> Option<&Problem> {
        self.chains.iter().find_map(|c| c.problem.as_ref())
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.chains.is_empty() {
            return writeln!(f, "no evidence records found");
        }
        for c in &self.chains {
            let range = match (c.first_seq, c.last_seq) {
                (Some(a), Some(b)) => format!("seq {a}..{b}"),
                _ => "no records".into(),
            };
            writeln!(
                f,
                "chain {}: {} records ({} decisions, {} checkpoints), {range}, {} file(s)",
                c.chain,
                c.records,
                c.decisions,
                c.checkpoints,
                c.files.len()
            )?;
            match c.signatures_checked {
                true => writeln!(f, "  signatures: verified")?,
                false => writeln!(f, "  signatures: NOT checked (no --key given)")?,
            }
            match &c.last_checkpoint {
                Some((seq, reason)) => writeln!(
                    f,
                    "  last checkpoint: seq {seq} ({reason}); {} record(s) after it",
                    c.after_checkpoint()
                )?,
                None => writeln!(f, "  no checkpoint")?,
            }
            for note in &c.notes {
                writeln!(f, "  note: {note}")?;
            }
            match &c.problem {
                Some(p) => writeln!(f, "  FAIL {p}")?,
                None => writeln!(f, "  OK")?,
            }
        }
        Ok(())
    }
}

/// Segment files for `paths`: a segment file as is; a chain directory's segments in order; a
/// spool directory's chains, oldest first.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_file() {
            files.push(path.clone());
        } else if path.is_dir() {
            let own = segments(path);
            if own.is_empty() {
                files.extend(chains(path).iter().flat_map(|c| segments(c)));
            } else {
                files.extend(own);
            }
        } else {
            return Err(format!("{}: no such file or directory", path.display()));
        }
    }
    Ok(files)
}

/// One line as read.
struct Entry {
    file: usize,
    line: usize,
    /// The first line of its file.
    first_in_file: bool,
    read: Result<Intact, LineError>,
    /// The file ends inside this line.
    incomplete: bool,
}

/// What verification needs of an intact record.
struct Intact {
    chain: String,
    seq: u64,
    prev: String,
    hash: String,
    decision_id: Option<String>,
    checkpoint: Option<(u64, String, Option<u64>, String)>,
    signature: Result<(), String>,
}

/// Verifies the spool files in `paths` (see [`expand`]) with `keys` (none: signatures are not
/// checked).
pub fn verify(paths: &[PathBuf], keys: &[PublicKey]) -> Result<Report, String> {
    let files = expand(paths)?;
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    let mut entries_of: Vec<Vec<Entry>> = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let entries = read_file(i, file, keys)?;
        let chain = entries
            .iter()
            .find_map(|e| e.read.as_ref().ok().map(|r| r.chain.clone()))
            .unwrap_or_else(|| format!("(unreadable: {})", file.display()));
        match groups.iter_mut().find(|(c, _)| *c == chain) {
            Some((_, members)) => members.push(i),
            None => groups.push((chain, vec![i])),
        }
        entries_of.push(entries);
    }
    let mut report = Report::default();
    for (chain, members) in groups {
        let entries: Vec<Entry> = members
            .iter()
            .flat_map(|&i| std::mem::take(&mut entries_of[i]))
            .collect();
        let mut c = ChainReport {
            chain,
            files: members.iter().map(|&i| files[i].clone()).collect(),
            signatures_checked: !keys.is_empty(),
            ..ChainReport::default()
        };
        walk(&mut c, &entries, &files);
        report.chains.push(c);
    }
    Ok(report)
}

fn read_file(index: usize, path: &Path, keys: &[PublicKey]) -> Result<Vec<Entry>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut entries = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let (line, incomplete) = match rest.iter().position(|&b| b == b'\n') {
            Some(end) => {
                let line = &rest[..end];
                rest = &rest[end + 1..];
                (line, false)
            }
            None => (std::mem::take(&mut rest), true),
        };
        entries.push(Entry {
            file: index,
            line: entries.len() + 1,
            first_in_file: entries.is_empty(),
            read: chain::check(line).map(|r| intact(r, keys)),
            incomplete,
        });
    }
    Ok(entries)
}

fn intact(r: chain::Checked, keys: &[PublicKey]) -> Intact {
    let signature = if keys.is_empty() {
        Ok(())
    } else {
        match (&r.key_id, &r.sig) {
            (_, None) => Err("the record is not signed".to_string()),
            (Some(id), Some(_)) => match keys.iter().find(|k| k.id() == id) {
                Some(key) if r.signed_by(key) => Ok(()),
                Some(_) => Err(format!(
                    "signature does not verify with key {id} (altered, or re-signed)"
                )),
                None => Err(format!("signed by key {id}, which is not a given key")),
            },
            (None, Some(_)) => Err("no key_id".to_string()),
        }
    };
    let checkpoint = (r.kind() == "checkpoint").then(|| {
        let c = r.record.get("checkpoint");
        let get = |p: &str| c.and_then(|c| c.pointer(p));
        (
            get("/head/seq").and_then(Value::as_u64).unwrap_or(u64::MAX),
            get("/head/hash")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            get("/decisions").and_then(Value::as_u64),
            get("/reason")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        )
    });
    Intact {
        decision_id: r
            .record
            .get("decision_id")
            .and_then(Value::as_str)
            .map(str::to_string),
        chain: r.chain,
        seq: r.seq,
        prev: r.prev,
        hash: r.hash,
        checkpoint,
        signature,
    }
}

/// Walks one chain's lines in order, stopping at the first problem.
fn walk(c: &mut ChainReport, entries: &[Entry], files: &[PathBuf]) {
    let mut w = Walk {
        entries,
        files,
        positions: entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| Some((e.read.as_ref().ok()?.seq, i)))
            .collect(),
        last: None,
        since_checkpoint: None,
    };
    for i in 0..entries.len() {
        if let Err(problem) = w.step(c, i) {
            c.problem = Some(problem);
            return;
        }
    }
}

struct Walk<'a> {
    entries: &'a [Entry],
    files: &'a [PathBuf],
    /// Where each intact `seq` is.
    positions: HashMap<u64, usize>,
    /// (seq, hash, index) of the last intact record.
    last: Option<(u64, String, usize)>,
    /// Decisions since the last checkpoint seen.
    since_checkpoint: Option<u64>,
}

impl Walk<'_> {
    fn problem(&self, i: usize, kind: ProblemKind, seq: Option<u64>, detail: String) -> Problem {
        let e = &self.entries[i];
        Problem {
            kind,
            file: self.files[e.file].clone(),
            line: e.line,
            seq,
            // A removed record's id is not known; the line holds another record.
            decision_id: match kind {
                ProblemKind::Removed => None,
                _ => e.read.as_ref().ok().and_then(|r| r.decision_id.clone()),
            },
            detail,
        }
    }

    fn step(&mut self, c: &mut ChainReport, i: usize) -> Result<(), Problem> {
        let e = &self.entries[i];
        let after = self.last.as_ref().map(|l| l.0);
        let r = match (&e.read, e.incomplete) {
            (Err(_), true) => {
                let detail = format!(
                    "the file ends inside this line: the record after seq {} was truncated",
                    after.unwrap_or(0)
                );
                return Err(self.problem(i, ProblemKind::Truncated, after.map(|s| s + 1), detail));
            }
            (Err(why), _) => {
                let detail = format!("not an intact record: {why}");
                return Err(self.problem(i, ProblemKind::Altered, after.map(|s| s + 1), detail));
            }
            (Ok(r), _) => r,
        };
        let fail = |kind, seq, detail: String| Err(self.problem(i, kind, Some(seq), detail));
        if r.chain != c.chain {
            return fail(
                ProblemKind::Altered,
                r.seq,
                format!("belongs to chain {}", r.chain),
            );
        }
        if let Err(why) = &r.signature {
            return fail(ProblemKind::Signature, r.seq, why.clone());
        }
        if e.first_in_file
            && let Some(named) = segment_seq(&self.files[e.file])
            && named != r.seq
        {
            return match named < r.seq {
                true => fail(
                    ProblemKind::Removed,
                    named,
                    format!(
                        "the segment starts at seq {named}: seq {named}..{} are missing",
                        r.seq - 1
                    ),
                ),
                false => fail(
                    ProblemKind::Altered,
                    r.seq,
                    format!("the segment's name says it starts at seq {named}"),
                ),
            };
        }
        self.link(c, i, r)?;
        self.count(c, i, r)?;
        self.last = Some((r.seq, r.hash.clone(), i));
        Ok(())
    }

    /// `seq` and `prev` against the record before.
    fn link(&self, c: &mut ChainReport, i: usize, r: &Intact) -> Result<(), Problem> {
        let fail = |kind, seq, detail: String| Err(self.problem(i, kind, Some(seq), detail));
        let Some((seq, hash, at)) = &self.last else {
            if r.seq == 1 && r.prev != GENESIS {
                let detail = "the first record must follow the genesis hash".into();
                return fail(ProblemKind::Altered, r.seq, detail);
            }
            if r.seq != 1 {
                c.notes.push(format!(
                    "the chain starts at seq {} here: earlier segments were not given (or were deleted)",
                    r.seq
                ));
            }
            return Ok(());
        };
        let (seq, at) = (*seq, *at);
        if r.seq == seq + 1 && r.prev != *hash {
            // This record links to another predecessor: the one before it was changed and its
            // hash recomputed, or it was replaced.
            let detail = format!(
                "seq {} does not link to it: it was altered (its hash recomputed) or replaced",
                r.seq
            );
            return Err(self.problem(at, ProblemKind::Altered, Some(seq), detail));
        }
        if r.seq == seq + 1 {
            return Ok(());
        }
        if r.seq <= seq {
            let detail = format!("out of order: seq {} comes after seq {seq}", r.seq);
            return fail(ProblemKind::Reordered, r.seq, detail);
        }
        let missing = seq + 1;
        match self.positions.get(&missing).filter(|&&later| later > i) {
            Some(&later) => {
                let l = &self.entries[later];
                let detail = format!(
                    "out of order: seq {missing} comes after it ({}:{})",
                    self.files[l.file].display(),
                    l.line
                );
                fail(ProblemKind::Reordered, r.seq, detail)
            }
            None => {
                let detail = format!(
                    "seq {missing}..{} are missing before this line (found seq {})",
                    r.seq - 1,
                    r.seq
                );
                fail(ProblemKind::Removed, missing, detail)
            }
        }
    }

    /// Checkpoints: the head they name, the decisions they count.
    fn count(&mut self, c: &mut ChainReport, i: usize, r: &Intact) -> Result<(), Problem> {
        let fail = |kind, detail: String| Err(self.problem(i, kind, Some(r.seq), detail));
        match &r.checkpoint {
            Some((head_seq, head_hash, decisions, reason)) => {
                if *head_seq != r.seq - 1 || *head_hash != r.prev {
                    let detail = "the checkpoint's head is not the record before it".into();
                    return fail(ProblemKind::Altered, detail);
                }
                if let (Some(n), Some(seen)) = (decisions, self.since_checkpoint)
                    && *n != seen
                {
                    let detail = format!(
                        "the checkpoint counts {n} decisions since the previous one; found {seen}"
                    );
                    return fail(ProblemKind::Removed, detail);
                }
                self.since_checkpoint = Some(0);
                c.checkpoints += 1;
                c.last_checkpoint = Some((r.seq, reason.clone()));
            }
            None => {
                self.since_checkpoint = self.since_checkpoint.map(|n| n + 1);
                c.decisions += 1;
            }
        }
        c.records += 1;
        c.first_seq.get_or_insert(r.seq);
        c.last_seq = Some(r.seq);
        Ok(())
    }
}

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

#[cfg(test)]
mod tests;
