//! `stepguard audit privileges`: standing privilege against actual use, per subject, from
//! verified evidence — the privileged roles and scopes seen in its tokens, the privileged actions
//! it performed and when, its step-ups (method, `amr`, `acr`), its break-glass uses with their
//! justifications, and, with `--unused-days`, whether its privileges went unused.
//!
//! The spool is verified first ([`super::verify`], with the given keys) and refused, with the
//! verification's error, when it does not verify; only records a signature covers are read (an
//! unsigned tail is left out, as are records appended after verification). `--unverified` skips
//! verification and says so in the report.
//!
//! Definitions (docs/evidence.md#audit-privileges):
//! - a **privileged action** is an approved decision (`result.outcome` `allow`) of an action whose
//!   record says `input.action_class.privileged` or not `reversible`, or of an action named with
//!   `--action`;
//! - a **privileged role or scope** is one given with `--role`/`--scope`, or (unless
//!   `--no-infer`) one seen in the token of an approved action marked privileged (or given with
//!   `--action`) — irreversible ones say nothing of standing privilege; OIDC scopes excepted;
//! - a **step-up** is a `challenge_completed` record; a **break-glass use** a privileged action
//!   whose reasons list `break_glass`;
//! - with `--unused-days N`, a subject holding a privileged role or scope is **unused** when it
//!   performed no privileged action in the N days before the reference time: `--now`, or else
//!   the latest record read (so a report on an archived spool does not age with the calendar).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use serde_json::Value;

use super::super::key::PublicKey;
use super::super::time;
use super::{expand, verify};

mod render;
mod report;

pub use report::{
    BreakGlass, PrivilegeReport, Privileged, Reference, StepUp, SubjectPrivileges, Use, When,
};

/// Scopes every OIDC token may carry: never inferred privileged.
const OIDC_SCOPES: [&str; 6] = [
    "openid",
    "profile",
    "email",
    "address",
    "phone",
    "offline_access",
];

/// What to report on, and how the spool is trusted.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Public keys to verify checkpoint signatures with (required unless `unverified`).
    pub keys: Vec<PublicKey>,
    /// Read the records without verifying them.
    pub unverified: bool,
    /// Roles, scopes and actions privileged whatever the records say.
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub actions: Vec<String>,
    /// Infer privileged roles and scopes from the tokens of privileged actions.
    pub infer: bool,
    pub unused_days: Option<u64>,
    /// The reference time for `unused_days` (unix seconds); the latest record's when `None`.
    pub now: Option<i64>,
}

/// Reads and verifies `paths` (see [`expand`]) and reports per subject.
pub fn privileges(paths: &[PathBuf], query: &Query) -> Result<PrivilegeReport, String> {
    let bounds = match query.unverified {
        true => None,
        false => Some(verified_bounds(paths, &query.keys)?),
    };
    let mut fold = Fold::new(query);
    for file in expand(paths)? {
        let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(record) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            if covered(&record, bounds.as_ref()) {
                fold.record(&record);
            }
        }
    }
    fold.finish(query, bounds.is_some())
}

/// Per chain, the last `seq` a signature covers, once the chains verify.
fn verified_bounds(paths: &[PathBuf], keys: &[PublicKey]) -> Result<HashMap<String, u64>, String> {
    if keys.is_empty() {
        return Err(
            "no --key given: the evidence cannot be verified without its public key \
                    (or pass --unverified to report on records nobody verified)"
                .into(),
        );
    }
    let report = verify(paths, keys)?;
    if let Some(p) = report.first_problem() {
        return Err(format!("the evidence does not verify: {p}"));
    }
    if !report.ok() {
        return Err("no evidence records found".into());
    }
    let bounds = report.chains.iter().filter_map(|c| {
        let last = match c.unsigned_tail {
            Some((from, _)) => from.checked_sub(1)?,
            None => c.last_seq?,
        };
        Some((c.chain.clone(), last))
    });
    Ok(bounds.collect())
}

/// A decision or lifecycle record that verification covered (any, unverified).
fn covered(record: &Value, bounds: Option<&HashMap<String, u64>>) -> bool {
    if text(record, "/kind") == Some("checkpoint") {
        return false;
    }
    let Some(bounds) = bounds else {
        return true;
    };
    let chain = text(record, "/chain").unwrap_or_default();
    let seq = record.get("seq").and_then(Value::as_u64);
    matches!((bounds.get(chain), seq), (Some(last), Some(seq)) if seq <= *last)
}

fn text<'a>(record: &'a Value, pointer: &str) -> Option<&'a str> {
    record.pointer(pointer).and_then(Value::as_str)
}

fn strings(record: &Value, pointer: &str) -> Vec<String> {
    record
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Records folded into subjects, in the order read.
struct Fold {
    subjects: BTreeMap<String, SubjectPrivileges>,
    actions: BTreeSet<String>,
    inferred_roles: BTreeSet<String>,
    inferred_scopes: BTreeSet<String>,
    chains: Vec<String>,
    records: u64,
    latest: Option<When>,
}

impl Fold {
    fn new(query: &Query) -> Self {
        Self {
            subjects: BTreeMap::new(),
            actions: query.actions.iter().cloned().collect(),
            inferred_roles: BTreeSet::new(),
            inferred_scopes: BTreeSet::new(),
            chains: Vec::new(),
            records: 0,
            latest: None,
        }
    }

    fn record(&mut self, r: &Value) {
        self.records += 1;
        if let Some(chain) = text(r, "/chain")
            && !self.chains.iter().any(|c| c == chain)
        {
            self.chains.push(chain.to_string());
        }
        let when = When {
            at: text(r, "/timestamp").unwrap_or_default().to_string(),
            unix: r.get("unix").and_then(Value::as_i64).unwrap_or(0),
        };
        if self.latest.as_ref().is_none_or(|l| when.unix > l.unix) {
            self.latest = Some(when.clone());
        }
        let Some(id) = text(r, "/input/subject/id") else {
            return;
        };
        match text(r, "/kind") {
            Some("decision") => self.decision(id, r, when),
            Some("completed") => self.step_up(id, r, when),
            _ => {}
        }
    }

    fn subject(&mut self, id: &str, when: &When) -> &mut SubjectPrivileges {
        let s = self
            .subjects
            .entry(id.to_string())
            .or_insert_with(|| new_subject(id));
        if s.first_seen.as_ref().is_none_or(|f| when.unix < f.unix) {
            s.first_seen = Some(when.clone());
        }
        if s.last_seen.as_ref().is_none_or(|l| when.unix >= l.unix) {
            s.last_seen = Some(when.clone());
        }
        s
    }

    fn decision(&mut self, id: &str, r: &Value, when: When) {
        let action = text(r, "/input/action").unwrap_or_default().to_string();
        let flag = |name: &str, value: bool| {
            r.pointer(&format!("/input/action_class/{name}")) == Some(&Value::Bool(value))
        };
        // Irreversible actions are privileged uses; only privileged ones say which roles are.
        let marked = flag("privileged", true) || self.actions.contains(&action);
        let privileged = marked || flag("reversible", false);
        let approved = text(r, "/result/outcome") == Some("allow");
        let (roles, scopes) = (
            strings(r, "/input/subject/roles"),
            strings(r, "/input/subject/scopes"),
        );
        if marked && approved {
            self.inferred_roles.extend(roles.iter().cloned());
            let ordinary = |s: &&String| OIDC_SCOPES.contains(&s.as_str());
            let scopes = scopes.iter().filter(|s| !ordinary(s)).cloned();
            self.inferred_scopes.extend(scopes);
        }
        let s = self.subject(id, &when);
        if let Some(kind) = text(r, "/input/subject/kind") {
            s.kind = Some(kind.to_string());
        }
        s.roles.extend(roles);
        s.scopes.extend(scopes);
        if !(privileged && approved) {
            return;
        }
        let decision_id = text(r, "/decision_id").unwrap_or_default().to_string();
        let break_glass = strings(r, "/result/reasons")
            .iter()
            .any(|c| c == "break_glass");
        if break_glass {
            s.break_glass.push(BreakGlass {
                action: action.clone(),
                when: when.clone(),
                decision_id: decision_id.clone(),
                justification: text(r, "/input/context/break_glass_justification")
                    .map(str::to_string),
            });
        }
        if s.last_privileged_use
            .as_ref()
            .is_none_or(|l| when.unix >= l.unix)
        {
            s.last_privileged_use = Some(when.clone());
        }
        s.privileged_actions.push(Use {
            action,
            when,
            decision_id,
            grant_id: text(r, "/result/grant_id").map(str::to_string),
            break_glass,
        });
    }

    fn step_up(&mut self, id: &str, r: &Value, when: When) {
        let by = |name: &str| text(r, &format!("/result/satisfied_by/{name}")).map(str::to_string);
        let step_up = StepUp {
            action: text(r, "/input/action").unwrap_or_default().to_string(),
            when: when.clone(),
            method: by("method").unwrap_or_default(),
            acr: by("acr").unwrap_or_default(),
            amr: strings(r, "/result/satisfied_by/amr"),
            auth_time: r
                .pointer("/result/satisfied_by/auth_time")
                .and_then(Value::as_i64),
            challenge_id: by("challenge_id"),
            grant_id: by("grant_id"),
            approver: by("approver"),
        };
        self.subject(id, &when).step_ups.push(step_up);
    }

    fn finish(self, query: &Query, verified: bool) -> Result<PrivilegeReport, String> {
        if self.records == 0 {
            return Err("no evidence records found".into());
        }
        let mut privileged = Privileged {
            roles: query.roles.iter().cloned().collect(),
            scopes: query.scopes.iter().cloned().collect(),
            actions: self.actions,
            ..Privileged::default()
        };
        if query.infer {
            privileged.roles.extend(self.inferred_roles.iter().cloned());
            privileged
                .scopes
                .extend(self.inferred_scopes.iter().cloned());
            privileged.inferred_roles = self.inferred_roles;
            privileged.inferred_scopes = self.inferred_scopes;
        }
        let reference = query.unused_days.map(|_| match query.now {
            Some(unix) => Reference {
                when: When {
                    at: stamp(unix),
                    unix,
                },
                source: "now",
            },
            None => Reference {
                when: self.latest.clone().unwrap_or(When {
                    at: stamp(0),
                    unix: 0,
                }),
                source: "latest_record",
            },
        });
        let cutoff = match (&reference, query.unused_days) {
            (Some(r), Some(days)) => Some(r.when.unix.saturating_sub(days as i64 * 86_400)),
            _ => None,
        };
        let mut subjects: Vec<SubjectPrivileges> = self.subjects.into_values().collect();
        for s in &mut subjects {
            s.privileged_roles = s.roles.intersection(&privileged.roles).cloned().collect();
            s.privileged_scopes = s.scopes.intersection(&privileged.scopes).cloned().collect();
            s.unused = cutoff.map(|cutoff| {
                s.privileged()
                    && s.last_privileged_use
                        .as_ref()
                        .is_none_or(|u| u.unix < cutoff)
            });
        }
        let unused = subjects
            .iter()
            .filter(|s| s.unused == Some(true))
            .map(|s| s.id.clone())
            .collect();
        Ok(PrivilegeReport {
            report: "privileges",
            verified,
            chains: self.chains,
            records: self.records,
            reference_time: reference,
            unused_days: query.unused_days,
            privileged,
            subjects,
            unused,
        })
    }
}

fn new_subject(id: &str) -> SubjectPrivileges {
    // `iss|sub`: issuers are URLs (no `|`); a `sub` may hold one (`auth0|…`).
    let (issuer, sub) = match id.split_once('|') {
        Some((iss, sub)) => (Some(iss.to_string()), sub.to_string()),
        None => (None, id.to_string()),
    };
    SubjectPrivileges {
        id: id.to_string(),
        issuer,
        sub,
        ..SubjectPrivileges::default()
    }
}

/// `unix` as RFC 3339 UTC, to the second.
fn stamp(unix: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    let (text, _) = time::stamp(at);
    format!("{}Z", text.get(..19).unwrap_or(&text))
}

#[cfg(test)]
mod tests;
