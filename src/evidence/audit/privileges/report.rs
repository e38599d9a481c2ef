//! What `stepguard audit privileges` reports: per subject, its privileged roles and scopes,
//! privileged actions, step-ups and break-glass uses; and the whole report (JSON as serialized).

use std::collections::BTreeSet;

use serde::Serialize;

/// A point in time as records carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct When {
    /// The record's `timestamp` (RFC 3339).
    pub at: String,
    pub unix: i64,
}

/// One approved privileged action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Use {
    pub action: String,
    #[serde(flatten)]
    pub when: When,
    pub decision_id: String,
    /// The grant the approval spent, when a step-up satisfied it.
    pub grant_id: Option<String>,
    pub break_glass: bool,
}

/// One completed step-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepUp {
    pub action: String,
    #[serde(flatten)]
    pub when: When,
    pub method: String,
    pub acr: String,
    pub amr: Vec<String>,
    pub auth_time: Option<i64>,
    pub challenge_id: Option<String>,
    pub grant_id: Option<String>,
    pub approver: Option<String>,
}

/// One break-glass use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreakGlass {
    pub action: String,
    #[serde(flatten)]
    pub when: When,
    pub decision_id: String,
    /// As recorded (a keyed hash when redacted); `None` in records older than the field.
    pub justification: Option<String>,
}

/// One subject's standing privilege and its use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SubjectPrivileges {
    /// `iss|sub`, as records name it.
    pub id: String,
    pub issuer: Option<String>,
    pub sub: String,
    pub kind: Option<String>,
    pub first_seen: Option<When>,
    pub last_seen: Option<When>,
    /// Every role and scope seen in its tokens.
    pub roles: BTreeSet<String>,
    pub scopes: BTreeSet<String>,
    pub privileged_roles: BTreeSet<String>,
    pub privileged_scopes: BTreeSet<String>,
    pub privileged_actions: Vec<Use>,
    pub last_privileged_use: Option<When>,
    pub step_ups: Vec<StepUp>,
    pub break_glass: Vec<BreakGlass>,
    /// With `--unused-days`: holds a privileged role or scope and did not use it in that time.
    pub unused: Option<bool>,
}

impl SubjectPrivileges {
    /// Holds a privileged role or scope.
    pub fn privileged(&self) -> bool {
        !self.privileged_roles.is_empty() || !self.privileged_scopes.is_empty()
    }
}

/// The reference time of `unused`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reference {
    #[serde(flatten)]
    pub when: When,
    /// `now` (given) or `latest_record`.
    pub source: &'static str,
}

/// What made roles, scopes and actions privileged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Privileged {
    pub roles: BTreeSet<String>,
    pub scopes: BTreeSet<String>,
    /// Given with `--action` (besides those the records mark privileged or irreversible).
    pub actions: BTreeSet<String>,
    /// Of `roles` and `scopes`, those seen in the tokens of privileged actions.
    pub inferred_roles: BTreeSet<String>,
    pub inferred_scopes: BTreeSet<String>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrivilegeReport {
    pub report: &'static str,
    pub verified: bool,
    pub chains: Vec<String>,
    /// Decision and lifecycle records read.
    pub records: u64,
    pub reference_time: Option<Reference>,
    pub unused_days: Option<u64>,
    pub privileged: Privileged,
    /// Every subject seen, by id.
    pub subjects: Vec<SubjectPrivileges>,
    /// With `--unused-days`: the ids of the unused subjects.
    pub unused: Vec<String>,
}
