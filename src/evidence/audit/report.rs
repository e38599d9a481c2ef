//! What `stepguard audit verify` found: per chain, its records and checkpoints and the first
//! problem, and the whole report as printed.

use std::path::PathBuf;

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
    /// Unsigned records after the last checkpoint (`seq` first..last): covered by no signature.
    pub unsigned_tail: Option<(u64, u64)>,
    /// Whether signatures were checked (public keys given).
    pub signatures_checked: bool,
    pub problem: Option<Problem>,
    /// Observations that are not problems (e.g. a chain that starts after seq 1).
    pub notes: Vec<String>,
}

impl ChainReport {
    /// Records after the last checkpoint. Format 1 records there are signed each; format 2
    /// ones are the [`ChainReport::unsigned_tail`].
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
            if let Some((from, to)) = c.unsigned_tail {
                writeln!(
                    f,
                    "  UNSIGNED TAIL: seq {from}..{to} follow the last checkpoint and no signature \
                     covers them: not evidence. A write a crash cut short leaves them (never \
                     acknowledged; cut when the spool is next opened), and so does removing the \
                     checkpoint after them"
                )?;
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
