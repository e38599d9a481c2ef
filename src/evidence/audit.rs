//! `stepguard audit`: verify spools, export records, report privileges.
//!
//! [`verify`] checks each chain it is given — every line intact (canonical bytes that hash to
//! the record's `hash`), `seq` consecutive and each `prev` the hash of the record before,
//! segments starting where their names say, every signature (with the given public keys: each
//! checkpoint's, and each record's of format 1), and each checkpoint naming the head it follows
//! and covering exactly the unsigned records since the previous one (`covers`; format 1: the
//! decisions it counts) — and names the first record that was altered, removed, reordered or
//! truncated. Records after the last checkpoint are reported as an unsigned tail. [`export`]
//! prints the decision records that match a filter, as they are stored. [`privileges::privileges`] reports,
//! per subject, standing privilege against its use, from records that verify.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::chain::{self, GENESIS, LineError};
use super::key::PublicKey;
use super::spool::files::{chains, segment_seq, segments};
pub use export::{Filter, export};
pub use report::{ChainReport, Problem, ProblemKind, Report};

mod export;
pub mod privileges;
mod report;

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
    checkpoint: Option<Checkpoint>,
    /// A record of format 2 (or later) without a signature of its own: its batch's checkpoint
    /// covers it.
    unsigned: bool,
    signature: Result<(), String>,
}

/// What a checkpoint says.
struct Checkpoint {
    head_seq: u64,
    head_hash: String,
    /// Format 1: the decisions since the previous checkpoint.
    decisions: Option<u64>,
    reason: String,
    /// Format 2: the records it covers, `from..=to` and their count; `Err` when malformed.
    covers: Option<Result<(u64, u64, u64), ()>>,
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
    let checkpoint = (r.kind() == "checkpoint").then(|| {
        let c = r.record.get("checkpoint");
        let get = |p: &str| c.and_then(|c| c.pointer(p));
        let covers = get("/covers").map(|covers| {
            let n = |name: &str| covers.get(name).and_then(Value::as_u64).ok_or(());
            let (from, to, count) = (n("from")?, n("to")?, n("count")?);
            match from >= 1 && from <= to && count == to - from + 1 {
                true => Ok((from, to, count)),
                false => Err(()),
            }
        });
        Checkpoint {
            head_seq: get("/head/seq").and_then(Value::as_u64).unwrap_or(u64::MAX),
            head_hash: get("/head/hash")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            decisions: get("/decisions").and_then(Value::as_u64),
            reason: get("/reason")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            covers,
        }
    });
    // Format 2 signs checkpoints only; a format-1 record, or one with a `key_id`, must be signed.
    let unsigned =
        checkpoint.is_none() && r.sig.is_none() && r.key_id.is_none() && r.version() >= 2;
    let covered = match checkpoint.as_ref().and_then(|c| c.covers.as_ref()) {
        Some(Ok((from, to, _))) => format!(
            ": the checkpoint was altered, or a record it covers (seq {from}..{to}) was, with \
             the hashes after it recomputed"
        ),
        _ => String::new(),
    };
    let signature = match (&r.key_id, &r.sig) {
        _ if keys.is_empty() || unsigned => Ok(()),
        (_, None) => Err(match checkpoint {
            Some(_) => "the checkpoint is not signed".to_string(),
            None => "the record is not signed".to_string(),
        }),
        (Some(id), Some(_)) => match keys.iter().find(|k| k.id() == id) {
            Some(key) if r.signed_by(key) => Ok(()),
            Some(_) => Err(format!(
                "signature does not verify with key {id} (altered, or re-signed){covered}"
            )),
            None => Err(format!("signed by key {id}, which is not a given key")),
        },
        (None, Some(_)) => Err("no key_id".to_string()),
    };
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
        unsigned,
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
        uncovered: None,
    };
    for i in 0..entries.len() {
        if let Err(problem) = w.step(c, i) {
            c.problem = Some(problem);
            return;
        }
    }
    c.unsigned_tail = w.uncovered;
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
    /// The unsigned records since the last checkpoint seen (`seq` first..last).
    uncovered: Option<(u64, u64)>,
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
            // hash recomputed, or it was replaced. Before a checkpoint, with the records of the
            // batch unsigned, it may be an earlier one, with the hashes after it recomputed.
            let batch = match self.uncovered {
                Some((from, to)) if r.checkpoint.is_some() && from < to => format!(
                    " (or an earlier record of its batch, seq {from}..{to}, with the hashes \
                     after it recomputed)"
                ),
                _ => String::new(),
            };
            let detail = format!(
                "seq {} does not link to it: it was altered (its hash recomputed) or \
                 replaced{batch}",
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

    /// Checkpoints: the head they name, the records they cover (the decisions they count).
    fn count(&mut self, c: &mut ChainReport, i: usize, r: &Intact) -> Result<(), Problem> {
        let fail = |kind, detail: String| Err(self.problem(i, kind, Some(r.seq), detail));
        match &r.checkpoint {
            Some(cp) => {
                if cp.head_seq != r.seq - 1 || cp.head_hash != r.prev {
                    let detail = "the checkpoint's head is not the record before it".into();
                    return fail(ProblemKind::Altered, detail);
                }
                if let (Some(n), Some(seen)) = (cp.decisions, self.since_checkpoint)
                    && n != seen
                {
                    let detail = format!(
                        "the checkpoint counts {n} decisions since the previous one; found {seen}"
                    );
                    return fail(ProblemKind::Removed, detail);
                }
                if let Err(detail) = self.covers(c, r.seq, cp) {
                    return fail(ProblemKind::Altered, detail);
                }
                self.since_checkpoint = Some(0);
                self.uncovered = None;
                c.checkpoints += 1;
                c.last_checkpoint = Some((r.seq, cp.reason.clone()));
            }
            None => {
                self.since_checkpoint = self.since_checkpoint.map(|n| n + 1);
                if r.unsigned {
                    let first = self.uncovered.map_or(r.seq, |(from, _)| from);
                    self.uncovered = Some((first, r.seq));
                }
                c.decisions += 1;
            }
        }
        c.records += 1;
        c.first_seq.get_or_insert(r.seq);
        c.last_seq = Some(r.seq);
        Ok(())
    }
}

impl Walk<'_> {
    /// Whether checkpoint `seq` covers exactly the unsigned records since the previous one: a
    /// checkpoint of format 2 names them (`covers`), and a record of format 2 is covered by the
    /// first checkpoint after it. The first records read may follow records not given.
    fn covers(&self, c: &ChainReport, seq: u64, cp: &Checkpoint) -> Result<(), String> {
        let first_read = c.first_seq.unwrap_or(seq);
        match (&cp.covers, self.uncovered) {
            (Some(Err(())), _) => Err("the checkpoint's `covers` is malformed".into()),
            (Some(Ok((_, to, _))), _) if *to != seq - 1 => Err(format!(
                "the checkpoint covers records up to seq {to}, not up to the record before it"
            )),
            (Some(Ok((from, to, _))), Some((first, _))) => {
                match *from == first || (first == first_read && *from < first) {
                    true => Ok(()),
                    false => Err(format!(
                        "the checkpoint covers seq {from}..{to}, but the unsigned records before it \
                     are seq {first}..{to}"
                    )),
                }
            }
            (Some(Ok((from, to, _))), None) => match *from < first_read {
                true => Ok(()),
                false => Err(format!(
                    "the checkpoint covers seq {from}..{to}, which are not unsigned records \
                     since the previous checkpoint"
                )),
            },
            (None, Some((first, last))) => Err(format!(
                "seq {first}..{last} are unsigned and this checkpoint does not cover them"
            )),
            (None, None) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
