//! Reads a spool while it is being written, the way an auditor tailing it would, and checks
//! every approval in it against what could have justified it:
//!
//! - an approval with a `grant_id` needs a `completed` record before it that minted that grant
//!   for the same transaction digest, and a single-use grant approves at most once;
//! - an approval without a grant (a session approval) needs a `payments.transfer` below the
//!   first value tier (1000), an `aal2`/`aal3` session, and an `auth_time` within the shipped
//!   policy's `max_age` (300 s, plus its 60 s clock skew) of the record's time.
//!
//! Anything else allowed is "unjustified". Records are also checked to follow each other
//! (`seq` + 1 within a chain): a gap means the tail missed records (a segment deleted before
//! it was read), and then the check is not complete.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// What the records seen so far show.
#[derive(Debug, Default)]
pub struct Audit {
    pub records: u64,
    pub decisions: u64,
    /// Decision ids of every approval recorded.
    pub allows: HashSet<String>,
    pub session_allows: u64,
    pub grant_allows: u64,
    /// Approvals nothing justifies (decision id: why).
    pub unjustified: Vec<String>,
    /// `seq` gaps: records the tail never saw.
    pub gaps: Vec<String>,
    /// Policy revisions decisions were made under.
    pub revisions: HashSet<String>,
    /// Grants minted by completions: id → (transaction digest, single use).
    minted: HashMap<String, (String, bool)>,
    spent: HashSet<String>,
    last_seq: HashMap<String, u64>,
}

impl Audit {
    /// Takes one record (in chain order).
    pub fn take(&mut self, r: &Value) {
        self.records += 1;
        let chain = r["chain"].as_str().unwrap_or_default().to_string();
        let seq = r["seq"].as_u64().unwrap_or(0);
        if let Some(last) = self.last_seq.insert(chain.clone(), seq)
            && seq != last + 1
        {
            self.gaps.push(format!("{chain}: {last} then {seq}"));
        }
        match r["kind"].as_str() {
            Some("completed") => {
                let grant = r["result"]["grant_id"].as_str().unwrap_or_default();
                let digest = r["input"]["transaction"]["digest"].as_str();
                let single = r["result"]["grant"]["single_use"].as_bool() != Some(false);
                self.minted.insert(
                    grant.to_string(),
                    (digest.unwrap_or_default().to_string(), single),
                );
            }
            Some("decision") => {
                self.decisions += 1;
                if let Some(rev) = r["bundles"]["stepguard"]["revision"].as_str() {
                    self.revisions.insert(rev.to_string());
                }
                if r["result"]["outcome"] == "allow" {
                    let id = r["decision_id"].as_str().unwrap_or_default().to_string();
                    if let Err(why) = self.justify(r) {
                        self.unjustified.push(format!("{id}: {why}"));
                    }
                    self.allows.insert(id);
                }
            }
            _ => {}
        }
    }

    fn justify(&mut self, r: &Value) -> Result<(), String> {
        let input = &r["input"];
        let digest = input["transaction"]["digest"].as_str().unwrap_or_default();
        if let Some(grant) = r["result"]["grant_id"].as_str() {
            let (minted_for, single) = self
                .minted
                .get(grant)
                .ok_or_else(|| format!("grant {grant} was never minted"))?;
            if minted_for != digest {
                return Err(format!("grant {grant} is for another transaction"));
            }
            if *single && !self.spent.insert(grant.to_string()) {
                return Err(format!("single-use grant {grant} approved twice"));
            }
            self.grant_allows += 1;
            return Ok(());
        }
        if input["action"] != "payments.transfer" {
            return Err(format!("{} approved without a grant", input["action"]));
        }
        let acr = input["subject"]["acr"].as_str().unwrap_or_default();
        if !matches!(acr, "aal2" | "aal3") {
            return Err(format!("session at {acr}"));
        }
        let age =
            r["unix"].as_i64().unwrap_or(0) - input["subject"]["auth_time"].as_i64().unwrap_or(0);
        if age > 360 {
            return Err(format!("session {age} s old"));
        }
        let amount = input["transaction"]["bound"]["body.amount"]
            .as_str()
            .and_then(|a| a.strip_prefix("n:"))
            .and_then(|a| a.parse::<f64>().ok())
            .ok_or("no amount")?;
        if amount >= 1000.0 {
            return Err(format!("{amount} needs a fresh step-up"));
        }
        self.session_allows += 1;
        Ok(())
    }
}

/// A spool directory being tailed.
pub struct Tail {
    dir: PathBuf,
    offsets: HashMap<PathBuf, u64>,
    pub audit: Audit,
}

impl Tail {
    pub fn new(dir: &Path) -> Tail {
        Tail {
            dir: dir.to_path_buf(),
            offsets: HashMap::new(),
            audit: Audit::default(),
        }
    }

    /// Reads every complete line written since the last poll.
    pub fn poll(&mut self) {
        let mut chains: Vec<PathBuf> = dir_entries(&self.dir)
            .into_iter()
            .filter(|p| p.is_dir())
            .collect();
        chains.sort();
        for chain in chains {
            let mut segments: Vec<PathBuf> = dir_entries(&chain)
                .into_iter()
                .filter(|p| p.to_string_lossy().ends_with(".jsonl"))
                .collect();
            segments.sort();
            for segment in segments {
                self.read(&segment);
            }
        }
    }

    fn read(&mut self, segment: &Path) {
        let offset = self.offsets.get(segment).copied().unwrap_or(0);
        let Ok(mut file) = std::fs::File::open(segment) else {
            return; // deleted meanwhile: a gap shows if it was not read to its end
        };
        let mut bytes = Vec::new();
        if file.seek(SeekFrom::Start(offset)).is_err() || file.read_to_end(&mut bytes).is_err() {
            return;
        }
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for line in bytes[..complete].split(|&b| b == b'\n') {
            if let Ok(record) = serde_json::from_slice::<Value>(line) {
                self.audit.take(&record);
            }
        }
        self.offsets
            .insert(segment.to_path_buf(), offset + complete as u64);
    }
}

fn dir_entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}
