//! What the pipeline decided, independent of Envoy: the verdict, its reasons, and what the
//! evidence and the response need. `response` renders it for Envoy; `stepguard check` prints it.

use serde::Serialize;

use crate::fault::{Cause, Fault};
use crate::grant::{Grant, Requirement};

/// The verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Let the request through.
    Allow,
    /// Step-up required: a redirect for browsers, an RFC 9470 401 for API clients.
    Challenge {
        challenge_id: String,
        requirement: Requirement,
        /// The IdP authorization URL, for browsers (not serialized: it carries `state` and
        /// `nonce`, which evidence and logs must not).
        #[serde(skip)]
        location: Option<String>,
        /// The `Set-Cookie` value binding the challenge to the browser (with `location`).
        #[serde(skip)]
        set_cookie: Option<String>,
    },
    /// Missing or invalid token on a sensitive route: 401 `invalid_token`.
    Unauthenticated { description: String },
    /// Refused by the policy, with the policy's status (4xx/5xx).
    Deny { status: u16 },
    /// Refused by stepguard because of the request (a [`Cause::Client`] fault, 4xx):
    /// [`Decision::fault`] says why.
    Refused,
    /// A dependency or stepguard failed on a sensitive route (503): [`Decision::fault`] says why.
    Fault,
}

/// What the route table says of an action, for evidence: whether it is privileged, and whether
/// it can be undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionClass {
    pub privileged: bool,
    pub reversible: bool,
}

/// One decision.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub id: String,
    pub verdict: Verdict,
    /// Primary reason code.
    pub reason: String,
    /// Every reason code that applied.
    pub reasons: Vec<String>,
    /// The sensitive action, if any.
    pub action: Option<String>,
    pub subject: Option<String>,
    pub transaction: Option<String>,
    pub grant_id: Option<String>,
    /// The policy revision the spent grant's step-up was required under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_policy_revision: Option<String>,
    /// The policy's severity for this decision (`high` for break-glass), when it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    pub policy_revision: Option<String>,
    /// The W3C trace this check belongs to (the caller's `traceparent`), as 32 hex digits.
    pub trace_id: Option<String>,
    /// stepguard's own `stepguard.check` span, as 16 hex digits, while spans are exported.
    pub span_id: Option<String>,
    /// The request field a refusal is about (`body.amount` for `missing_bound_field`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Why stepguard refused by itself ([`Verdict::Refused`] and [`Verdict::Fault`]).
    #[serde(skip)]
    pub fault: Option<Fault>,
    /// The grant this approval spent: what satisfied the step-up (evidence).
    #[serde(skip)]
    pub satisfied_by: Option<Grant>,
    /// The action's class as the route table has it (evidence), once the request is identified.
    #[serde(skip)]
    pub action_class: Option<ActionClass>,
    /// The break-glass justification the request carried, as the policy saw it (evidence).
    #[serde(skip)]
    pub justification: Option<String>,
    /// Client-sent `x-stepguard-*` headers to strip before the upstream.
    #[serde(skip)]
    pub remove_headers: Vec<String>,
}

impl Decision {
    pub fn new(id: String, verdict: Verdict, reason: &str) -> Self {
        Self {
            id,
            verdict,
            reason: reason.to_string(),
            reasons: vec![reason.to_string()],
            action: None,
            subject: None,
            transaction: None,
            grant_id: None,
            grant_policy_revision: None,
            field: None,
            severity: None,
            policy_revision: None,
            trace_id: None,
            span_id: None,
            fault: None,
            satisfied_by: None,
            action_class: None,
            justification: None,
            remove_headers: Vec::new(),
        }
    }

    /// stepguard refuses by itself: [`Verdict::Refused`] for the client's fault,
    /// [`Verdict::Fault`] for a dependency's or stepguard's.
    pub fn refuse(id: String, fault: Fault) -> Self {
        let verdict = match fault.cause() {
            Cause::Client => Verdict::Refused,
            Cause::Dependency | Cause::Stepguard => Verdict::Fault,
        };
        let mut decision = Self::new(id, verdict, fault.reason());
        decision.field = fault.field().map(str::to_string);
        decision.fault = Some(fault);
        decision
    }

    pub fn is_allow(&self) -> bool {
        self.verdict == Verdict::Allow
    }

    /// The verdict's short name: allow, challenge, unauthenticated, deny, fault.
    pub fn outcome(&self) -> &'static str {
        match self.verdict {
            Verdict::Allow => "allow",
            Verdict::Challenge { .. } => "challenge",
            Verdict::Unauthenticated { .. } => "unauthenticated",
            Verdict::Deny { .. } | Verdict::Refused => "deny",
            Verdict::Fault => "fault",
        }
    }
}
