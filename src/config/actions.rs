//! The `actions` section's rules: unique names, matches, bound fields and their parameters.

use super::*;

impl Config {
    pub(super) fn validate_actions(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (i, action) in self.actions.iter().enumerate() {
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
            let params = match &action.matcher {
                Some(m) => validate_match(m, &field("match"))?,
                None => Vec::new(),
            };
            let mut seen = HashSet::new();
            for (j, bind) in action.bind.iter().enumerate() {
                validate_bind(bind.field(), &params, action.body)
                    .map_err(|m| invalid(field(&format!("bind[{j}]")), m))?;
                if !seen.insert(bind.field()) {
                    return Err(invalid(
                        field(&format!("bind[{j}]")),
                        format!("`{}` is listed twice", bind.field()),
                    ));
                }
            }
            if action.mode == ActionMode::Shadow && (action.privileged || !action.reversible) {
                return Err(invalid(
                    field("mode"),
                    "a dry run (`shadow`) is refused for privileged and irreversible actions",
                ));
            }
            for (name, f) in [("value", &action.value), ("currency", &action.currency)] {
                if let Some(f) = f
                    .as_ref()
                    .filter(|f| !action.bind.iter().any(|b| b.field() == f.as_str()))
                {
                    return Err(invalid(
                        field(name),
                        format!("`{f}` must also be listed in `bind`"),
                    ));
                }
            }
        }
        Ok(())
    }
}

pub(super) fn valid_action_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

pub(super) fn validate_match(m: &MatchConfig, field: &str) -> Result<Vec<String>, ConfigError> {
    const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    for method in &m.methods {
        if !METHODS.contains(&method.as_str()) {
            return Err(invalid(
                format!("{field}.methods"),
                format!("unknown method `{method}` (use upper case)"),
            ));
        }
    }
    let template = PathTemplate::parse(&m.path).map_err(|e| invalid(format!("{field}.path"), e))?;
    Ok(template.params().map(str::to_string).collect())
}

pub(super) fn validate_bind(bind: &str, params: &[String], body: BodyFormat) -> Result<(), String> {
    let (kind, name) = bind
        .split_once('.')
        .ok_or_else(|| format!("`{bind}`: use path.P, query.Q, header.H or body.a.b"))?;
    if name.is_empty() {
        return Err(format!("`{bind}`: field name is empty"));
    }
    match kind {
        "path" if params.iter().any(|p| p == name) => Ok(()),
        "path" => Err(format!(
            "`{bind}`: `{name}` is not a parameter of the path template"
        )),
        "body" if body == BodyFormat::Form && name.contains(['.', '[', ']']) => Err(format!(
            "`{bind}`: a form body has flat names only; nested names (`a.b`, `a[b]`) are read \
             differently by different frameworks and cannot be bound"
        )),
        "query" | "body" => Ok(()),
        "header" if name == name.to_ascii_lowercase() => Ok(()),
        "header" => Err(format!("`{bind}`: header names are lower case")),
        _ => Err(format!(
            "`{bind}`: use path.P, query.Q, header.H or body.a.b"
        )),
    }
}
