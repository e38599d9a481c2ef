//! The privilege report as printed: an aligned table for people, one JSON document, or CSV with
//! one row per subject (columns in [`CSV_COLUMNS`], documented in docs/evidence.md).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::{PrivilegeReport, SubjectPrivileges, When};

/// The CSV header, in column order.
pub const CSV_COLUMNS: [&str; 19] = [
    "subject",
    "issuer",
    "sub",
    "kind",
    "first_seen",
    "last_seen",
    "roles",
    "scopes",
    "privileged_roles",
    "privileged_scopes",
    "privileged_actions",
    "privileged_action_names",
    "last_privileged_use",
    "step_ups",
    "step_up_methods",
    "step_up_amr",
    "break_glass",
    "break_glass_justifications",
    "unused",
];

const TABLE_COLUMNS: [&str; 8] = [
    "SUBJECT",
    "PRIVILEGED ROLES",
    "PRIVILEGED SCOPES",
    "ACTIONS",
    "LAST PRIVILEGED USE",
    "STEP-UPS",
    "BREAK-GLASS",
    "UNUSED",
];

impl PrivilegeReport {
    /// One JSON document (stable: subjects by id, sets sorted, events in record order).
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// The CSV: a header, then one row per subject.
    pub fn csv(&self) -> String {
        let mut out = CSV_COLUMNS.join(",") + "\n";
        for s in &self.subjects {
            let cells = csv_row(s);
            let cells: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
            out.push_str(&cells.join(","));
            out.push('\n');
        }
        out
    }

    /// The table for people, the details of each subject with privileged activity, and the
    /// unused subjects.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.header());
        let _ = writeln!(out, "{}", self.definitions());
        if let (Some(r), Some(days)) = (&self.reference_time, self.unused_days) {
            let _ = writeln!(
                out,
                "unused: no privileged action in the {days} day(s) before {} ({})",
                short(&r.when),
                r.source.replace('_', " ")
            );
        }
        out.push('\n');
        let rows: Vec<[String; 8]> = self.subjects.iter().map(table_row).collect();
        out.push_str(&aligned(&rows));
        for s in &self.subjects {
            out.push_str(&details(s));
        }
        if self.unused_days.is_some() {
            let _ = writeln!(out, "\nunused ({}):", self.unused.len());
            for id in &self.unused {
                let _ = writeln!(out, "  {}", clean(id));
            }
        }
        out
    }

    fn header(&self) -> String {
        let chains = self.chains.len();
        match self.verified {
            true => format!(
                "evidence: verified, {chains} chain(s), {} record(s) covered by signatures",
                self.records
            ),
            false => format!(
                "evidence: UNVERIFIED (--unverified), {chains} chain(s), {} record(s)",
                self.records
            ),
        }
    }

    fn definitions(&self) -> String {
        let p = &self.privileged;
        let actions = match p.actions.is_empty() {
            true => String::new(),
            false => format!(" and {}", list(&p.actions)),
        };
        format!(
            "privileged: roles {}, scopes {} (inferred from privileged actions: roles {}, \
             scopes {}); actions marked privileged or irreversible{actions}",
            list(&p.roles),
            list(&p.scopes),
            list(&p.inferred_roles),
            list(&p.inferred_scopes),
        )
    }
}

fn table_row(s: &SubjectPrivileges) -> [String; 8] {
    [
        clean(&s.id),
        list(&s.privileged_roles),
        list(&s.privileged_scopes),
        s.privileged_actions.len().to_string(),
        s.last_privileged_use.as_ref().map_or("-".into(), short),
        s.step_ups.len().to_string(),
        s.break_glass.len().to_string(),
        match s.unused {
            Some(true) => "yes".into(),
            Some(false) => "no".into(),
            None => "-".into(),
        },
    ]
}

fn aligned(rows: &[[String; 8]]) -> String {
    let mut widths = TABLE_COLUMNS.map(|c| c.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = TABLE_COLUMNS.map(str::to_string);
    for row in std::iter::once(&header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// A subject's privileged actions, step-ups and break-glass uses, one line each.
fn details(s: &SubjectPrivileges) -> String {
    let mut out = String::new();
    if s.privileged_actions.is_empty() && s.step_ups.is_empty() && s.break_glass.is_empty() {
        return out;
    }
    let _ = writeln!(out, "\n{}", clean(&s.id));
    for u in &s.privileged_actions {
        let grant = u
            .grant_id
            .as_deref()
            .map(|g| format!(" grant {}", clean(g)));
        let _ = writeln!(
            out,
            "  privileged action  {}  {}  decision {}{}",
            short(&u.when),
            clean(&u.action),
            clean(&u.decision_id),
            grant.unwrap_or_default()
        );
    }
    for st in &s.step_ups {
        let _ = writeln!(
            out,
            "  step-up            {}  {}  method {}  acr {}  amr {}",
            short(&st.when),
            clean(&st.action),
            clean(&st.method),
            clean(&st.acr),
            clean(&st.amr.join(","))
        );
    }
    for b in &s.break_glass {
        let why = b
            .justification
            .as_deref()
            .map_or("(none recorded)".into(), |j| format!("{j:?}"));
        let _ = writeln!(
            out,
            "  break-glass        {}  {}  justification {why}",
            short(&b.when),
            clean(&b.action)
        );
    }
    out
}

fn csv_row(s: &SubjectPrivileges) -> Vec<String> {
    let at = |w: &Option<When>| w.as_ref().map(|w| w.at.clone()).unwrap_or_default();
    let names: BTreeSet<&str> = s
        .privileged_actions
        .iter()
        .map(|u| u.action.as_str())
        .collect();
    let methods: BTreeSet<&str> = s.step_ups.iter().map(|u| u.method.as_str()).collect();
    let amr: BTreeSet<&str> = s
        .step_ups
        .iter()
        .flat_map(|u| &u.amr)
        .map(String::as_str)
        .collect();
    let justifications: Vec<&str> = s
        .break_glass
        .iter()
        .filter_map(|b| b.justification.as_deref())
        .collect();
    vec![
        s.id.clone(),
        s.issuer.clone().unwrap_or_default(),
        s.sub.clone(),
        s.kind.clone().unwrap_or_default(),
        at(&s.first_seen),
        at(&s.last_seen),
        join(&s.roles),
        join(&s.scopes),
        join(&s.privileged_roles),
        join(&s.privileged_scopes),
        s.privileged_actions.len().to_string(),
        join(names),
        at(&s.last_privileged_use),
        s.step_ups.len().to_string(),
        join(methods),
        join(amr),
        s.break_glass.len().to_string(),
        justifications.join(";"),
        s.unused.map(|u| u.to_string()).unwrap_or_default(),
    ]
}

/// RFC 4180 quoting; a cell a spreadsheet would run as a formula gets a leading `'`.
pub(super) fn csv_cell(cell: &str) -> String {
    let cell = match cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        true => format!("'{cell}"),
        false => cell.to_string(),
    };
    match cell.contains([',', '"', '\n', '\r']) {
        true => format!("\"{}\"", cell.replace('"', "\"\"")),
        false => cell,
    }
}

fn join<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    let items: Vec<S> = items.into_iter().collect();
    items
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(";")
}

fn list(set: &BTreeSet<String>) -> String {
    match set.is_empty() {
        true => "-".into(),
        false => clean(&set.iter().cloned().collect::<Vec<_>>().join(",")),
    }
}

/// To the second: `2026-12-05T22:01:02Z`.
fn short(w: &When) -> String {
    match w.at.get(..19) {
        Some(head) => format!("{}Z", clean(head)),
        _ => clean(&w.at),
    }
}

/// Control characters escaped: records hold text from tokens and headers, printed to a terminal.
fn clean(s: &str) -> String {
    match s.chars().any(char::is_control) {
        true => s
            .chars()
            .map(|c| match c.is_control() {
                true => c.escape_default().to_string(),
                false => c.to_string(),
            })
            .collect(),
        false => s.to_string(),
    }
}
