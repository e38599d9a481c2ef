//! Subject identifiers (RFC 9493) and the Shared Signals complex subject (`user`, `session`, …),
//! and the store keys an event about them is filed under: the same `iss|sub` keys stepguard
//! binds grants to, so a token's subject finds its events in one read.

use serde_json::Value;

/// One identifier of RFC 9493's formats that stepguard can match to a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identifier {
    /// `iss_sub`: a subject of an issuer.
    IssSub { iss: String, sub: String },
    /// `email` (compared case-insensitively).
    Email(String),
    /// `opaque`: the transmitter's own identifier — a `sub` of the transmitter (or of an issuer
    /// sharing its subjects), or, for a session, its `sid`.
    Opaque(String),
    /// A format stepguard has no way to match (`phone_number`, `account`, `did`, `uri`, …).
    Other(String),
}

/// The subject of an event: a simple identifier (the user), or a complex one of which
/// stepguard reads `user` and `session`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectId {
    pub user: Option<Identifier>,
    pub session: Option<Identifier>,
}

impl SubjectId {
    /// Reads `sub_id` (or an event's `subject`).
    pub fn read(value: &Value) -> Result<Self, String> {
        let object = value
            .as_object()
            .ok_or("a subject identifier is a JSON object")?;
        if object.contains_key("format") {
            return Ok(Self {
                user: Some(Identifier::read(value)?),
                session: None,
            });
        }
        const MEMBERS: [&str; 7] = [
            "user",
            "session",
            "device",
            "application",
            "tenant",
            "org_unit",
            "group",
        ];
        if object.is_empty() || object.keys().any(|k| !MEMBERS.contains(&k.as_str())) {
            return Err(
                "a complex subject has only user, session, device, application, \
                        tenant, org_unit or group members"
                    .into(),
            );
        }
        let member = |name: &str| object.get(name).map(Identifier::read).transpose();
        Ok(Self {
            user: member("user")?,
            session: member("session")?,
        })
    }

    /// The session id a session subject names (`opaque` id, or an `iss_sub`'s `sub`).
    pub fn sid(&self) -> Option<&str> {
        match self.session.as_ref()? {
            Identifier::Opaque(id) | Identifier::IssSub { sub: id, .. } => Some(id),
            _ => None,
        }
    }
}

impl Identifier {
    fn read(value: &Value) -> Result<Self, String> {
        let field = |name: &str| {
            value
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty() && s.len() <= 512)
                .map(str::to_string)
                .ok_or(format!("subject identifier without a usable `{name}`"))
        };
        let format = value
            .get("format")
            .and_then(Value::as_str)
            .ok_or("subject identifier without a format")?;
        Ok(match format {
            "iss_sub" => Self::IssSub {
                iss: field("iss")?,
                sub: field("sub")?,
            },
            "email" => Self::Email(field("email")?.to_lowercase()),
            "opaque" => Self::Opaque(field("id")?),
            other => Self::Other(other.to_string()),
        })
    }
}

/// The key of a subject's events for a token subject of `iss` and `sub` (what a request reads).
pub fn subject_key(iss: &str, sub: &str) -> String {
    format!("{iss}|{sub}")
}

/// The key of a subject's events by verified e-mail address.
pub fn email_key(email: &str) -> String {
    format!("email:{}", email.to_lowercase())
}

/// The keys an event about `user` is filed under. `group` is the transmitter's issuer and the
/// issuers whose `sub` values are the transmitter's (`same_subjects_as`): an `opaque` user, or
/// an `iss_sub` of one of them, is that `sub` under each. Empty: nothing stepguard can match.
pub fn keys_for(user: &Identifier, group: &[String]) -> Vec<String> {
    match user {
        Identifier::IssSub { iss, sub } if group.contains(iss) => {
            group.iter().map(|g| subject_key(g, sub)).collect()
        }
        Identifier::IssSub { iss, sub } => vec![subject_key(iss, sub)],
        Identifier::Opaque(id) => group.iter().map(|g| subject_key(g, id)).collect(),
        Identifier::Email(email) => vec![email_key(email)],
        Identifier::Other(_) => Vec::new(),
    }
}
