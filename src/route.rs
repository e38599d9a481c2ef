//! Sensitive-action classification: a table of actions built and validated at start-up, a pure
//! best-match over it, and Envoy's per-route `context_extensions` tags.
//!
//! Precedence: the table matches method, host and path template; a route tag
//! (`stepguard.action`) names a configured action. When only one applies it is used; when both
//! apply and differ, the one with the higher risk wins (ties go to the table), so a tag can make a
//! route sensitive but never make a sensitive route less so. A tag naming an unknown action is a
//! configuration fault (the pipeline answers 503). A tagged action's own path template is matched
//! against the request so its `path.*` fields are bound whichever way the action was chosen.
//!
//! Edges an attacker could use to dodge the table are closed here: the host is compared without
//! its port or a trailing dot and case-insensitively; `HEAD` matches actions declared for `GET`;
//! a request carrying a method-override header (`X-HTTP-Method-Override`, `X-HTTP-Method`,
//! `X-Method-Override`) is classified under each overriding method too, and the riskier result
//! wins.

use std::collections::HashMap;
use std::sync::Arc;

use crate::request::AuthzRequest;
use crate::route::config::{ActionConfig, BodyFormat, Risk};

pub mod config;

/// The context-extension key service owners use to tag routes.
pub const ACTION_TAG: &str = "stepguard.action";

/// A sensitive action, as configured.
#[derive(Debug)]
pub struct Action {
    pub name: String,
    pub risk: Risk,
    pub reversible: bool,
    pub privileged: bool,
    pub bind: Vec<Bound>,
    /// How bound `body.*` fields are read.
    pub body: BodyFormat,
    pub value: Option<BindField>,
    pub currency: Option<BindField>,
    /// RFC 9396 `authorization_details` type describing this action's transactions.
    pub authorization_details_type: Option<String>,
    /// Enforced, or a dry run.
    pub mode: crate::route::config::ActionMode,
    /// What follows an approval.
    pub after_approval: crate::route::config::AfterApproval,
    matcher: Option<Matcher>,
}

/// A bound field and whether its absence is a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub field: BindField,
    /// Declared `optional: true`: absence binds as "absent" instead of refusing the request.
    pub optional: bool,
}

/// A request field that binds the transaction; typed when the config is read.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum BindField {
    Path(String),
    Query(String),
    Header(String),
    Body(Vec<String>),
}

impl BindField {
    /// Parses `path.P`, `query.Q`, `header.H` (lower case) or `body.a.b`. Whether a `path.P` is
    /// a parameter of the action's template is the action's rule ([`config::ActionConfig`]).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let usage = || format!("`{spec}`: use path.P, query.Q, header.H or body.a.b");
        let (kind, name) = spec.split_once('.').ok_or_else(usage)?;
        if name.is_empty() {
            return Err(format!("`{spec}`: field name is empty"));
        }
        Ok(match kind {
            "path" => Self::Path(name.into()),
            "query" => Self::Query(name.into()),
            "header" if name == name.to_ascii_lowercase() => Self::Header(name.into()),
            "header" => return Err(format!("`{spec}`: header names are lower case")),
            "body" => Self::Body(name.split('.').map(str::to_string).collect()),
            _ => return Err(usage()),
        })
    }

    /// The field's name as written in the config (`body.payee.iban`).
    pub fn name(&self) -> String {
        match self {
            Self::Path(p) => format!("path.{p}"),
            Self::Query(q) => format!("query.{q}"),
            Self::Header(h) => format!("header.{h}"),
            Self::Body(parts) => format!("body.{}", parts.join(".")),
        }
    }
}

#[derive(Debug)]
struct Matcher {
    methods: Vec<String>,
    host: Option<String>,
    template: PathTemplate,
}

impl TryFrom<String> for BindField {
    type Error = String;
    fn try_from(spec: String) -> Result<Self, String> {
        Self::parse(&spec)
    }
}

/// A path template: `/v1/accounts/{account}/transfers`, `/admin/**`; typed when the config is
/// read.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct PathTemplate {
    segments: Vec<Segment>,
    rest: bool,
}

impl TryFrom<String> for PathTemplate {
    type Error = String;
    fn try_from(template: String) -> Result<Self, String> {
        Self::parse(&template)
    }
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Param(String),
}

impl PathTemplate {
    pub fn parse(template: &str) -> Result<Self, String> {
        let body = template
            .strip_prefix('/')
            .ok_or("path template must start with `/`")?;
        let mut segments = Vec::new();
        let mut rest = false;
        let parts: Vec<&str> = body.split('/').filter(|s| !s.is_empty()).collect();
        for (i, part) in parts.iter().enumerate() {
            if *part == "**" {
                if i + 1 != parts.len() {
                    return Err("`**` is only allowed as the last segment".into());
                }
                rest = true;
            } else if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if name.is_empty() || name.contains(['{', '}', '*']) {
                    return Err(format!("bad parameter segment `{part}`"));
                }
                if segments
                    .iter()
                    .any(|s| matches!(s, Segment::Param(n) if n == name))
                {
                    return Err(format!("parameter `{name}` appears twice"));
                }
                segments.push(Segment::Param(name.into()));
            } else if part.contains(['{', '}', '*']) {
                return Err(format!(
                    "segment `{part}` mixes literal text with `{{`, `}}` or `*`"
                ));
            } else {
                segments.push(Segment::Literal((*part).into()));
            }
        }
        Ok(Self { segments, rest })
    }

    /// The names of the `{params}`.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(p) => Some(p.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Matches decoded path segments; returns the params and a specificity score.
    fn matches(&self, path: &[String]) -> Option<(HashMap<String, String>, Score)> {
        let fits = if self.rest {
            path.len() >= self.segments.len()
        } else {
            path.len() == self.segments.len()
        };
        if !fits {
            return None;
        }
        let mut params = HashMap::new();
        let mut literals = 0;
        for (segment, value) in self.segments.iter().zip(path) {
            match segment {
                Segment::Literal(l) if l == value => literals += 1,
                Segment::Literal(_) => return None,
                Segment::Param(name) => {
                    params.insert(name.clone(), value.clone());
                }
            }
        }
        Some((params, Score(!self.rest, literals, self.segments.len())))
    }
}

/// Exact (no `**`) beats prefix; then more literal segments; then longer templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Score(bool, usize, usize);

/// The outcome of classification.
#[derive(Debug, Clone)]
pub enum Classification {
    /// No action applies: the route is not sensitive.
    Public,
    Sensitive {
        action: Arc<Action>,
        /// Path parameters from the matched template (empty when matched by tag only).
        params: HashMap<String, String>,
    },
}

/// Why a request could not be classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("route tag names unknown action `{0}`")]
    UnknownTag(String),
}

/// The table of sensitive actions.
#[derive(Debug, Default)]
pub struct RouteTable {
    actions: Vec<Arc<Action>>,
    by_name: HashMap<String, Arc<Action>>,
}

impl RouteTable {
    /// Builds the table from validated config.
    pub fn new(configs: &[ActionConfig]) -> Self {
        let actions: Vec<Arc<Action>> = configs.iter().map(|c| Arc::new(build(c))).collect();
        let by_name = actions
            .iter()
            .map(|a| (a.name.clone(), a.clone()))
            .collect();
        Self { actions, by_name }
    }

    pub fn action(&self, name: &str) -> Option<&Arc<Action>> {
        self.by_name.get(name)
    }

    /// Classifies a request by the table and the route tag.
    pub fn classify(&self, req: &AuthzRequest) -> Result<Classification, RouteError> {
        let tagged = match req.context_extensions.get(ACTION_TAG) {
            Some(name) => Some(
                self.by_name
                    .get(name)
                    .ok_or_else(|| RouteError::UnknownTag(name.clone()))?,
            ),
            None => None,
        };
        let table = self.riskiest_match(req);
        let chosen = match (table, tagged) {
            (None, None) => return Ok(Classification::Public),
            (Some((action, params)), None) => {
                return Ok(Classification::Sensitive { action, params });
            }
            (Some((action, params)), Some(tag)) if action.risk >= tag.risk => {
                return Ok(Classification::Sensitive { action, params });
            }
            (_, Some(tag)) => tag.clone(),
        };
        // The tag decided: its own template gives the path parameters it binds (none when the
        // request does not fit it; binding then refuses a required `path.*` field).
        let params = chosen
            .matcher
            .as_ref()
            .and_then(|m| m.template.matches(&req.segments))
            .map(|(params, _)| params)
            .unwrap_or_default();
        Ok(Classification::Sensitive {
            action: chosen,
            params,
        })
    }

    /// The best table match under the request's method and under each method an override
    /// header names; the riskiest of them wins (ties: the request's own method).
    fn riskiest_match(&self, req: &AuthzRequest) -> Option<(Arc<Action>, HashMap<String, String>)> {
        let mut best = self.best_match(req, &req.method);
        for method in req.method_overrides() {
            if let Some(candidate) = self.best_match(req, &method)
                && best.as_ref().is_none_or(|(b, _)| candidate.0.risk > b.risk)
            {
                best = Some(candidate);
            }
        }
        best
    }

    fn best_match(
        &self,
        req: &AuthzRequest,
        method: &str,
    ) -> Option<(Arc<Action>, HashMap<String, String>)> {
        let mut best: Option<(Score, &Arc<Action>, HashMap<String, String>)> = None;
        for action in &self.actions {
            let Some(m) = &action.matcher else { continue };
            if !m.allows(method) || !host_matches(m.host.as_deref(), &req.host) {
                continue;
            }
            if let Some((params, score)) = m.template.matches(&req.segments)
                && best.as_ref().is_none_or(|(s, ..)| score > *s)
            {
                best = Some((score, action, params));
            }
        }
        best.map(|(_, action, params)| (action.clone(), params))
    }
}

impl Matcher {
    /// Any method when none is listed; `HEAD` wherever `GET` is listed (servers answer `HEAD`
    /// with `GET`'s handler).
    fn allows(&self, method: &str) -> bool {
        self.methods.is_empty()
            || self.methods.iter().any(|m| m == method)
            || (method == "HEAD" && self.methods.iter().any(|m| m == "GET"))
    }
}

fn build(c: &ActionConfig) -> Action {
    Action {
        name: c.name.clone(),
        risk: c.risk,
        reversible: c.reversible,
        privileged: c.privileged,
        bind: c
            .bind
            .iter()
            .map(|b| Bound {
                field: b.field().clone(),
                optional: b.optional(),
            })
            .collect(),
        body: c.body,
        value: c.value.clone(),
        currency: c.currency.clone(),
        authorization_details_type: c.authorization_details_type.clone(),
        mode: c.mode,
        after_approval: c.after_approval,
        matcher: c.matcher.as_ref().map(|m| Matcher {
            methods: m.methods.clone(),
            host: m.host.as_deref().map(normal_host),
            template: m.path.clone(),
        }),
    }
}

/// A host as compared: lower case, without a trailing dot (`Example.COM.` = `example.com`).
fn normal_host(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    match host.strip_suffix('.') {
        Some(h) => h.to_string(),
        None => host,
    }
}

fn host_matches(pattern: Option<&str>, host: &str) -> bool {
    let Some(pattern) = pattern else { return true };
    // Compared without the port and a trailing dot, case-insensitively (`pattern` is normal).
    let host = strip_port(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host.is_char_boundary(host.len() - suffix.len())
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                && host[..host.len() - suffix.len()].ends_with('.')
        }
        None => host.eq_ignore_ascii_case(pattern),
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(end) = host.find(']') {
        return &host[..=end];
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
