//! The `actions` section: each sensitive action, how its requests are matched and what of them is bound.
//! Its types are composed into the whole file by [`crate::config`], which validates them.

use serde::Deserialize;

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
    pub value: Option<String>,
    /// Field holding the currency (a bound field), e.g. `body.currency`.
    #[serde(default)]
    pub currency: Option<String>,
    /// RFC 9396: describe the transaction to the IdP in `authorization_details` of this type
    /// (e.g. `payment_initiation`), so the user sees what they are approving.
    #[serde(default)]
    pub authorization_details_type: Option<String>,
    /// `enforce` (default) or `shadow`: a dry run — the decision is computed and recorded,
    /// the request allowed. Refused for privileged and irreversible actions.
    #[serde(default)]
    pub mode: ActionMode,
}

/// One bound field: `body.amount`, or `{field: body.memo, optional: true}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum BindSpec {
    Required(String),
    Declared {
        field: String,
        #[serde(default)]
        optional: bool,
    },
}

impl BindSpec {
    /// The field as written (`body.amount`).
    pub fn field(&self) -> &str {
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
    pub path: String,
}

pub(crate) fn yes() -> bool {
    true
}
