//! The `actions` section: each sensitive action, how its requests are matched and what of them
//! is bound, and its rules ([`validate`]). Templates and bound fields are typed when the file is
//! read ([`PathTemplate`], [`BindField`]), so a bad one names its field at parse time.

use std::collections::HashSet;

use serde::Deserialize;

use super::{BindField, PathTemplate};
use crate::section::{Invalid, invalid};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    Low,
    Medium,
    High,
    Critical,
}

/// One sensitive action.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    pub name: String,
    /// How requests are matched to this action; absent for actions only named by route tags.
    #[serde(default, rename = "match")]
    pub matcher: Option<MatchConfig>,
    pub risk: Risk,
    #[serde(default = "yes")]
    pub reversible: bool,
    #[serde(default)]
    pub privileged: bool,
    /// Request fields that bind the transaction: `path.P`, `query.Q`, `header.H`, `body.a.b`.
    /// Each must be present and single-valued (else 400 `missing_bound_field`), unless written
    /// `{field: body.memo, optional: true}`: only then is absence a value.
    #[serde(default)]
    pub bind: Vec<BindSpec>,
    /// How `body.*` fields are read: `json` (default; `content-type` `application/json` or
    /// `*+json`) or `form` (`application/x-www-form-urlencoded`, flat names only). A body of
    /// another content type is refused (400) when a body field is bound.
    #[serde(default)]
    pub body: BodyFormat,
    /// Field holding the transaction value (a bound field), e.g. `body.amount`.
    #[serde(default)]
    pub value: Option<BindField>,
    /// Field holding the currency (a bound field), e.g. `body.currency`.
    #[serde(default)]
    pub currency: Option<BindField>,
    /// RFC 9396: describe the transaction to the IdP in `authorization_details` of this type
    /// (e.g. `payment_initiation`), so the user sees what they are approving.
    #[serde(default)]
    pub authorization_details_type: Option<String>,
    /// `enforce` (default) or `shadow`: a dry run — the decision is computed and recorded,
    /// the request allowed. Refused for privileged and irreversible actions.
    #[serde(default)]
    pub mode: ActionMode,
    /// What follows an approval of this (privileged or irreversible) action.
    #[serde(default)]
    pub after_approval: AfterApproval,
}

/// What follows an approval: a Shared Signals event about the subject's session to the
/// configured receivers (`shared_signals.send`), so the IdP or PAM system drops the standing
/// elevation the approval relied on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AfterApproval {
    #[serde(default)]
    pub notify: Option<Notify>,
}

/// The CAEP event sent after an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Notify {
    /// `assurance-level-change`: a decrease to the lowest `acr` of the ladder.
    AssuranceLevelChange,
    /// `session-revoked`.
    SessionRevoked,
}

/// One bound field: `body.amount`, or `{field: body.memo, optional: true}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawBind")]
pub enum BindSpec {
    Required(BindField),
    Declared { field: BindField, optional: bool },
}

/// A [`BindSpec`] as written, before its field is parsed (so a bad field names its reason
/// instead of "no variant matched").
#[derive(Deserialize)]
#[serde(untagged)]
enum RawBind {
    Required(String),
    Declared {
        field: String,
        #[serde(default)]
        optional: bool,
    },
}

impl TryFrom<RawBind> for BindSpec {
    type Error = String;
    fn try_from(raw: RawBind) -> Result<Self, String> {
        Ok(match raw {
            RawBind::Required(f) => Self::Required(BindField::parse(&f)?),
            RawBind::Declared { field, optional } => Self::Declared {
                field: BindField::parse(&field)?,
                optional,
            },
        })
    }
}

impl BindSpec {
    /// The bound field.
    pub fn field(&self) -> &BindField {
        match self {
            Self::Required(f) | Self::Declared { field: f, .. } => f,
        }
    }

    /// True when absence is a value.
    pub fn optional(&self) -> bool {
        matches!(self, Self::Declared { optional: true, .. })
    }
}

/// How an action's bound `body.*` fields are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    #[default]
    Json,
    Form,
}

/// Whether an action's decisions are enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionMode {
    #[default]
    Enforce,
    Shadow,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Upper-case HTTP methods; empty means any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Exact host (port ignored) or `*.suffix`.
    #[serde(default)]
    pub host: Option<String>,
    /// Path template: literal segments, `{param}` segments, and an optional trailing `**`.
    pub path: PathTemplate,
}

pub(crate) fn yes() -> bool {
    true
}

/// The section's rules: unique names, known methods, bound fields that the template and the body
/// format can supply, each once; value and currency among them; no dry run of a privileged or
/// irreversible action.
pub fn validate(actions: &[ActionConfig]) -> Result<(), Invalid> {
    let mut names = HashSet::new();
    for (i, action) in actions.iter().enumerate() {
        let field = |f: &str| format!("actions[{i}].{f}");
        if !valid_action_name(&action.name) {
            return Err(invalid(
                field("name"),
                "use lower-case letters, digits, `.`, `_` and `-`",
            ));
        }
        if !names.insert(action.name.as_str()) {
            return Err(invalid(
                field("name"),
                format!("duplicate action `{}`", action.name),
            ));
        }
        if let Some(m) = &action.matcher {
            validate_methods(&m.methods).map_err(|e| invalid(field("match.methods"), e))?;
        }
        let mut seen = HashSet::new();
        for (j, bind) in action.bind.iter().enumerate() {
            action
                .can_bind(bind.field())
                .map_err(|m| invalid(field(&format!("bind[{j}]")), m))?;
            if !seen.insert(bind.field()) {
                return Err(invalid(
                    field(&format!("bind[{j}]")),
                    format!("`{}` is listed twice", bind.field().name()),
                ));
            }
        }
        if action.after_approval.notify.is_some() && action.reversible && !action.privileged {
            return Err(invalid(
                field("after_approval.notify"),
                "only for privileged or irreversible actions",
            ));
        }
        if action.mode == ActionMode::Shadow && (action.privileged || !action.reversible) {
            return Err(invalid(
                field("mode"),
                "a dry run (`shadow`) is refused for privileged and irreversible actions",
            ));
        }
        for (name, f) in [("value", &action.value), ("currency", &action.currency)] {
            if let Some(f) = f.as_ref().filter(|f| !action.binds(f)) {
                return Err(invalid(
                    field(name),
                    format!("`{}` must also be listed in `bind`", f.name()),
                ));
            }
        }
    }
    Ok(())
}

impl ActionConfig {
    /// True when `field` is among the bound fields.
    pub fn binds(&self, field: &BindField) -> bool {
        self.bind.iter().any(|b| b.field() == field)
    }

    /// Whether this action can bind `field`: a `path.P` must be a parameter of its template, a
    /// form body has flat names only.
    fn can_bind(&self, field: &BindField) -> Result<(), String> {
        let spec = field.name();
        match field {
            BindField::Path(name) => {
                let params = self.matcher.as_ref().map(|m| m.path.params());
                if params.is_some_and(|mut p| p.any(|p| p == name)) {
                    Ok(())
                } else {
                    Err(format!(
                        "`{spec}`: `{name}` is not a parameter of the path template"
                    ))
                }
            }
            BindField::Body(parts)
                if self.body == BodyFormat::Form
                    && (parts.len() > 1 || parts[0].contains(['[', ']'])) =>
            {
                Err(format!(
                    "`{spec}`: a form body has flat names only; nested names (`a.b`, `a[b]`) are \
                     read differently by different frameworks and cannot be bound"
                ))
            }
            _ => Ok(()),
        }
    }
}

fn valid_action_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

fn validate_methods(methods: &[String]) -> Result<(), String> {
    const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    match methods.iter().find(|m| !METHODS.contains(&m.as_str())) {
        Some(method) => Err(format!("unknown method `{method}` (use upper case)")),
        None => Ok(()),
    }
}
