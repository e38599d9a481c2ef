# METADATA
# title: stepguard step-up decision
# description: |
#   Decides, per sensitive transaction, whether the caller may proceed
#   ("allow"), must complete a transaction-bound step-up first ("step_up"), or
#   is refused ("deny").
#
#   Entry point: data.stepguard.authz.decision (always exactly one object).
#   The package is split into files with one job each:
#     decision.rego     the verdict per subject kind, reason codes and their order
#     requirement.rego  what a human must present for this action (data, tiers,
#                       administrators, risk signals, break-glass, irreversible/privileged)
#     signals.rego      the context signals that raise the requirement
#     break_glass.rego  emergency access: who, for what, with which justification
#     workload.rego     transaction tokens for machine identities
#     delegation.rego   RFC 8693 actors and shared accounts
#     settings.rego     the settings blocks of data.stepguard, with their defaults
#     validate.rego     input_errors and misconfiguration (tests, `stepguard check`, and
#                       the trial stepguard runs when a policy loads); never on the
#                       per-request path
#   Each file but decision.rego is a package of its own under stepguard.policy
#   (validate.rego: stepguard.validate), because regorus's interpreter (what
#   `stepguard policy test` runs) does not evaluate every module of a package
#   split across files under `with` (it marks the package done after the
#   first); the outputs stay under data.stepguard.authz.
#   Settings (policies/data.json): data.stepguard.requirements, .roles, .signals,
#   .workloads, .delegation, .break_glass. Contracts: docs/policy.md.
#
#   Written for regorus's VM, whose cost is per rule reference and per function
#   call rather than per operation: the per-request path is a handful of rules
#   with large bodies, lookups by key, and no helper calls in loops. The input's
#   shape and types are guaranteed by stepguard (it is built from typed structs;
#   policies/schema/input.json), and the data, ladder and settings are checked
#   when the policy loads, so the decision does not re-validate them.
#
#   Principles:
#   - Policy is tied to the action, not the account: a step-up at login, or a
#     minute ago for another transaction, never approves a max_age 0 action.
#   - Machine identities are never shown human prompts: a workload presents a
#     transaction token for THIS transaction, or is refused.
#   - Risk raises the bar, never lowers it: administrators, a new network,
#     high velocity, an untrusted device and break-glass only make a
#     requirement stricter.
#   - Fail closed: anything odd is a deny.
package stepguard.authz

import rego.v1


# Backstop: should the rules below ever fail to produce a decision, refuse.
# Reaching it would be a bug in this policy.
default decision := {
	"result": "deny",
	"reason": "policy_error",
	"reasons": ["policy_error"],
	"status": 500,
}

decision := human_decision if input.stepguard.subject.kind == "human"

decision := data.stepguard.policy.workload.decision if input.stepguard.subject.kind == "workload"

# Defence in depth: stepguard normally answers invalid_token before asking.
decision := {
	"result": "deny",
	"reason": "authentication_required",
	"reasons": array.concat(["authentication_required"], data.stepguard.policy.delegation.denies),
	"status": 401,
} if {
	input.stepguard.subject.kind == "anonymous"
}

# A human: deny, allow on the transaction-bound grant, allow on the session,
# or step up, in that order. `severity: "high"` on every break-glass decision.
human_decision := object.union(human_verdict, severity) if {
	f := human_facts
	is_object(f)
	severity := object.union({}, {k: v | count(f.break_glass) > 0; k := "severity"; v := "high"})
}

human_verdict := {
	"result": "deny",
	"reason": f.denies[0],
	"reasons": array.concat(f.denies, [code | count(f.break_glass) > 0; code := "break_glass"]),
	"status": 403,
} if {
	f := human_facts
	count(f.denies) > 0
} else := {
	"result": "allow",
	"reason": "grant_satisfies",
	"reasons": array.concat(["grant_satisfies"], f.explanations),
	"requirement": f.requirement,
	"used_grant": true,
} if {
	f := human_facts
	count(f.grant_ok) > 0
} else := {
	"result": "allow",
	"reason": "session_satisfies",
	"reasons": array.concat(["session_satisfies"], f.explanations),
	"requirement": f.requirement,
	"used_grant": false,
} if {
	f := human_facts
	count(f.session_ok) > 0
} else := {
	"result": "step_up",
	"reason": reasons[0],
	"reasons": reasons,
	"requirement": f.requirement,
	"grant": f.grant,
} if {
	f := human_facts
	reasons := array.concat(f.step_up, f.explanations)
}

# What the verdict needs, worked out once: the deny reasons, whether the grant
# or the session satisfies the requirement, the step-up reasons and the
# explanations (each a list; empty when it does not apply). null when the
# requirement is.
default human_facts := null

human_facts := {
	"denies": denies,
	"grant_ok": fresh_grant,
	"session_ok": fresh_session,
	"step_up": step_up,
	"explanations": explanations,
	"break_glass": bg,
	"requirement": {"acr_values": r.acr_values, "max_age": max_age},
	"grant": {"single_use": r.single_use, "ttl": r.ttl},
} if {
	r := data.stepguard.policy.requirement.human
	is_object(r)
	s := input.stepguard
	subj := s.subject
	bg := [1 | "break_glass" in r.fired]

	# Deny reasons, in priority order (none of these is a step-up).
	denies := array.concat(
		data.stepguard.policy.delegation.denies,
		[code |
			count(bg) > 0
			not "justified" in r.fired
			code := "break_glass_justification_required"
		],
	)

	# The transaction-bound grant (null when there is none): strong enough,
	# fresh enough (for max_age 0 the grant is the fresh step-up, by
	# construction: stepguard found it bound to THIS transaction's digest), and
	# with a use left (a reusable grant only where the requirement is reusable).
	g := object.get(s, "grant", null)
	max_age := r.max_age
	grant_fresh := {0 | is_object(g); max_age == 0} | {1 |
		is_object(g)
		grant_age := s.now - g.auth_time
		grant_age <= max_age
		grant_age >= 0 - r.skew
	}
	grant_usable := {0 | is_object(g); uses := object.get(g, "uses_left", null); is_number(uses); uses >= 1} | {1 |
		is_object(g)
		is_null(object.get(g, "uses_left", null))
		r.single_use == false
	}
	fresh_grant := [1 |
		is_object(g)
		g.acr_rank >= r.rank
		count(grant_fresh) > 0
		count(grant_usable) > 0
	]

	# The session token itself is strong and recent enough (never for max_age
	# 0; an auth_time more than max_clock_skew in the future is not fresh).
	session_age := object.get(subj, "session_age", null)
	fresh_session := [1 |
		max_age > 0
		subj.acr_rank >= r.rank
		is_number(session_age)
		session_age <= max_age
		session_age >= 0 - r.skew
	]
	step_up := array.concat(
		array.concat(
			[code | subj.acr_rank < r.rank; code := "acr_too_low"],
			[code | max_age > 0; subj.acr_rank >= r.rank; count(fresh_session) == 0; code := "session_too_old"],
		),
		[code | max_age == 0; code := "fresh_step_up_required"],
	)

	# Explanations, in order, after the primary reason of allow and step-up.
	fired := (r.fired | {code | count(subj.act) > 0; code := "delegated"}) | {code |
		is_object(g)
		count(fresh_grant) == 0
		code := "grant_insufficient"
	}
	explanations := [code | some code in explanation_order; code in fired]
}

# No usable requirement for this action on this ladder (no entry and no
# default, or an acr that is not on the ladder). stepguard refuses to load
# such a policy (validate.rego, checked for every configured action); should
# one serve anyway, it fails closed.
human_decision := {
	"result": "deny",
	"reason": "policy_misconfigured",
	"reasons": array.concat(["policy_misconfigured"], data.stepguard.policy.delegation.denies),
	"status": 503,
} if {
	data.stepguard.policy.requirement.human == null
}

# Reason codes that explain a decision, in the order they are listed after
# its primary reason.
explanation_order := [
	"break_glass",
	"new_network",
	"high_velocity",
	"untrusted_device",
	"admin_threshold",
	"value_tier",
	"unknown_currency",
	"delegated",
	"grant_insufficient",
]

# HTTP status for each deny reason (documentation; the decision sets them).
deny_status := {
	"invalid_input": 500,
	"authentication_required": 401,
	"workload_requires_transaction_token": 403,
	"transaction_token_too_long_lived": 403,
	"transaction_token_expired": 403,
	"transaction_token_mismatch": 403,
	"policy_misconfigured": 503,
	"shared_account_without_actor": 403,
	"delegation_actor_not_allowed": 403,
	"break_glass_justification_required": 403,
}

# What is wrong with the input or with the data, ladder and settings (see
# validate.rego); kept here under their former names. Not on the decision's path.
input_errors := data.stepguard.validate.input_errors

misconfiguration := data.stepguard.validate.misconfiguration

# For explaining a decision (`stepguard check` lists every defined rule); not
# on the decision's path.
required_rank := data.stepguard.policy.requirement.human.rank

required_max_age := data.stepguard.policy.requirement.human.max_age

privileged if data.stepguard.policy.requirement.privileged

break_glass if data.stepguard.policy.break_glass.active
