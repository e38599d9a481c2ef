# METADATA
# title: stepguard step-up decision
# description: |
#   Decides, per sensitive transaction, whether the caller may proceed
#   ("allow"), must complete a transaction-bound step-up first ("step_up"), or
#   is refused ("deny").
#
#   Entry point: data.stepguard.authz.decision (always exactly one object).
#   Requirements per action: data.stepguard.requirements (policies/data.json).
#   The input and output contracts are documented in docs/policy.md.
#
#   Principles:
#   - Policy is tied to the action, not the account: a step-up at login, or a
#     minute ago for another transaction, never approves a max_age 0 action.
#   - Machine identities are never shown human prompts.
#   - Fail closed: anything odd is a deny.
package stepguard.authz

import rego.v1

import data.stepguard.lib

# ===========================================================================
# Decision
# ===========================================================================

# Backstop: should the rules below ever fail to produce a decision, refuse.
# Reaching it would be a bug in this policy.
default decision := {
	"result": "deny",
	"reason": "policy_error",
	"reasons": ["policy_error"],
	"status": 500,
}

# The clauses are tried in order; the first whose body holds wins.
decision := {
	"result": "deny",
	"reason": primary,
	"reasons": reasons,
	"status": status,
} if {
	count(deny_reasons) > 0
	reasons := ordered(deny_reasons)
	primary := reasons[0]

	# Bound here rather than in the head: regorus 0.14 mis-evaluates a
	# variable-indexed reference in the head of a rule with else branches.
	status := deny_status[primary]
} else := {
	"result": "allow",
	"reason": "grant_satisfies",
	"reasons": ordered({"grant_satisfies"} | explanations),
	"requirement": requirement,
	"used_grant": true,
} if {
	count(deny_reasons) == 0
	grant_satisfies
} else := {
	"result": "allow",
	"reason": "session_satisfies",
	"reasons": ordered({"session_satisfies"} | explanations),
	"requirement": requirement,
	"used_grant": false,
} if {
	count(deny_reasons) == 0
	session_satisfies
} else := {
	"result": "step_up",
	"reason": reasons[0],
	"reasons": reasons,
	"requirement": requirement,
	"grant": {"single_use": single_use, "ttl": grant_ttl},
} if {
	count(deny_reasons) == 0
	subject.kind == "human"
	reasons := ordered(step_up_reasons)
	count(reasons) > 0
}

# HTTP status for each deny reason.
deny_status := {
	"invalid_input": 500,
	"authentication_required": 401,
	"workload_requires_transaction_token": 403,
	"policy_misconfigured": 503,
	"shared_account_without_actor": 403,
}

# Every reason code, in priority order. The primary reason of a decision is
# the first of its reasons in this order.
reason_order := [
	# deny
	"invalid_input",
	"authentication_required",
	"workload_requires_transaction_token",
	"policy_misconfigured",
	"shared_account_without_actor",
	# allow
	"grant_satisfies",
	"session_satisfies",
	# step_up
	"acr_too_low",
	"session_too_old",
	"fresh_step_up_required",
	# explanations only (never primary)
	"value_tier",
	"grant_insufficient",
]

# ordered(codes) lists a set of reason codes in priority order.
ordered(codes) := [r | some r in reason_order; r in codes]

# The requirement that must be met, as reported in the decision.
requirement := {
	"acr_values": lib.acr_values(ladder, required_acr),
	"max_age": required_max_age,
}

# ===========================================================================
# Deny reasons
# ===========================================================================

# The input does not follow the contract (a stepguard bug): refuse.
deny_reasons contains "invalid_input" if count(input_errors) > 0

# Defence in depth: stepguard normally answers invalid_token before asking.
deny_reasons contains "authentication_required" if subject.kind == "anonymous"

# Machine identities are never shown human prompts. Transaction tokens
# (the way workloads will prove per-transaction approval) land later.
deny_reasons contains "workload_requires_transaction_token" if subject.kind == "workload"

# Requirements data or acr ladder unusable for this action: fail closed.
deny_reasons contains "policy_misconfigured" if count(misconfiguration) > 0

# A shared account may only perform privileged actions through a delegation
# chain (RFC 8693 "act") that names the individual actor.
deny_reasons contains "shared_account_without_actor" if {
	claims.shared_account == true
	not has_actor
	privileged
}

# ===========================================================================
# Allow and step-up (human subjects)
# ===========================================================================

# The transaction-bound step-up grant approves this transaction.
grant_satisfies if {
	subject.kind == "human"
	grant.acr_rank >= required_rank
	grant_fresh
	grant_uses_ok
}

# For max_age 0 the grant is the fresh step-up, by construction (stepguard
# found it bound to THIS transaction's digest).
grant_fresh if required_max_age == 0

grant_fresh if {
	required_max_age > 0
	lib.within(grant_age, required_max_age, max_clock_skew)
}

grant_age := now - grant.auth_time if {
	is_number(now)
	is_number(grant.auth_time)
}

# A single-use requirement is only met by a grant with a use left; a reusable
# grant (uses_left null) is only accepted where the requirement is reusable.
grant_uses_ok if {
	is_number(grant.uses_left)
	grant.uses_left >= 1
}

grant_uses_ok if {
	is_null(object.get(grant, "uses_left", null))
	not single_use
}

# The session token itself is strong and recent enough. Never for max_age 0.
session_satisfies if {
	subject.kind == "human"
	required_max_age > 0
	subject.acr_rank >= required_rank
	session_fresh
}

session_fresh if lib.within(subject.session_age, required_max_age, max_clock_skew)

step_up_reasons contains "acr_too_low" if subject.acr_rank < required_rank

# The acr suffices but the session is too old, or its age is unknown.
step_up_reasons contains "session_too_old" if {
	required_max_age > 0
	subject.acr_rank >= required_rank
	not session_fresh
}

step_up_reasons contains "fresh_step_up_required" if required_max_age == 0

step_up_reasons contains reason if some reason in explanations

# Explanations added to the reasons of allow and step_up decisions.
explanations contains "value_tier" if tier_raised

explanations contains "grant_insufficient" if {
	grant
	not grant_satisfies
}

# ===========================================================================
# The requirement for this action
# ===========================================================================

requirements := data.stepguard.requirements

# The data entry for this action. Actions not listed fall back to the default.
raw_requirement := requirements.actions[action.name] if listed

raw_requirement := requirements.default if {
	action
	not listed
}

listed if {
	is_object(requirements.actions)
	some name, _ in requirements.actions
	name == action.name
}

# The requirement, when it is usable at all (an object).
base := raw_requirement if is_object(raw_requirement)

tiers := object.get(base, "tiers", [])

# Well-formed tiers only; a malformed one is reported as a misconfiguration.
tier_list := [t | some t in tiers; is_object(t); is_number(t.min_value)] if is_array(tiers)

# Tiers: the highest tier whose min_value <= action.value raises the
# requirement. A missing or negative value cannot be placed, so the highest
# tier of all applies (fail closed, but the user can still step up).
value_known if {
	is_number(action.value)
	action.value >= 0
}

tier_floors contains t.min_value if {
	value_known
	some t in tier_list
	t.min_value <= action.value
}

tier_floors contains t.min_value if {
	not value_known
	some t in tier_list
}

tier_floor := max(tier_floors) if count(tier_floors) > 0

# Usually one tier; several when tiers share a min_value (the strictest wins).
applied_tiers contains t if {
	some t in tier_list
	t.min_value == tier_floor
}

base_rank := lib.rank(ladder, base.acr)

# A tier never lowers the acr nor raises max_age relative to the base.
data_rank := max({base_rank} | {lib.rank(ladder, object.get(t, "acr", base.acr)) | some t in applied_tiers})

data_max_age := min({base.max_age} | {object.get(t, "max_age", base.max_age) | some t in applied_tiers})

tier_raised if data_rank > base_rank

tier_raised if data_max_age < base.max_age

# Irreversible and privileged actions always need a fresh, single-use step-up,
# whatever the data says. Input and data can each mark an action; neither can
# unmark it.
irreversible if action.reversible == false

irreversible if base.reversible == false

privileged if action.privileged == true

privileged if base.privileged == true

always_fresh if irreversible

always_fresh if privileged

required_rank := data_rank

required_acr := ladder[required_rank]

required_max_age := 0 if always_fresh

required_max_age := data_max_age if not always_fresh

single_use := true if always_fresh

single_use := object.get(base, "single_use", true) if not always_fresh

grant_ttl := object.get(base, "grant_ttl", 120)

# Tolerated clock skew, in seconds, for auth_time values in the future.
max_clock_skew := object.get(requirements, "max_clock_skew", 60) if is_object(requirements)

# ===========================================================================
# Validation
#
# Each entry is a human-readable message; query
# data.stepguard.authz.input_errors or .misconfiguration to see them.
# ===========================================================================

# --- input -----------------------------------------------------------------

input_errors contains "input.stepguard must be an object" if not stepguard

input_errors contains "input.stepguard.now must be an integer" if not lib.is_integer(now)

input_errors contains "input.stepguard.action must be an object" if not action

input_errors contains "action.name must be a non-empty string" if {
	action
	not non_empty_string(action.name)
}

# These two flags can force a fresh step-up: a missing flag must not
# silently relax the policy.
input_errors contains "action.reversible must be a boolean" if {
	action
	not is_boolean(action.reversible)
}

input_errors contains "action.privileged must be a boolean" if {
	action
	not is_boolean(action.privileged)
}

input_errors contains "action.value must be a number or null" if {
	action
	value := object.get(action, "value", null)
	not is_number(value)
	not is_null(value)
}

input_errors contains "input.stepguard.subject must be an object" if not subject

input_errors contains "subject.kind must be human, workload or anonymous" if {
	subject
	not subject.kind in {"human", "workload", "anonymous"}
}

input_errors contains "subject.acr_rank must be an integer" if {
	subject.kind == "human"
	not lib.is_integer(subject.acr_rank)
}

input_errors contains "subject.session_age must be a number or null" if {
	subject.kind == "human"
	age := object.get(subject, "session_age", null)
	not is_number(age)
	not is_null(age)
}

# Needed to tell shared accounts and delegation chains apart.
input_errors contains "subject.claims must be an object" if {
	subject.kind == "human"
	not is_object(subject.claims)
}

input_errors contains "subject.act must be a list" if {
	subject.kind == "human"
	not is_array(subject.act)
}

input_errors contains "input.stepguard.grant must be an object or null" if {
	stepguard
	g := object.get(stepguard, "grant", null)
	not is_object(g)
	not is_null(g)
}

input_errors contains "grant.acr_rank must be an integer" if {
	grant
	not lib.is_integer(grant.acr_rank)
}

input_errors contains "grant.auth_time must be an integer" if {
	grant
	not lib.is_integer(grant.auth_time)
}

input_errors contains "grant.uses_left must be an integer or null" if {
	grant
	uses := object.get(grant, "uses_left", null)
	not lib.is_integer(uses)
	not is_null(uses)
}

non_empty_string(s) if {
	is_string(s)
	s != ""
}

# --- requirements data and ladder -------------------------------------------

misconfiguration contains "input.stepguard.acr_ladder must be a non-empty list of distinct strings" if {
	stepguard
	not lib.valid_ladder(ladder)
}

misconfiguration contains "data.stepguard.requirements.actions must be an object" if {
	lib.has_key(requirements, "actions")
	not is_object(requirements.actions)
}

misconfiguration contains "no usable requirement: data.stepguard.requirements.actions[name] (or .default) must be an object" if {
	action
	not base
}

misconfiguration contains "requirement acr is not on the acr ladder" if {
	base
	lib.valid_ladder(ladder)
	not lib.on_ladder(ladder, base.acr)
}

misconfiguration contains "requirement max_age must be a whole number of seconds >= 0" if {
	base
	not lib.is_duration(base.max_age)
}

misconfiguration contains "requirement grant_ttl must be a whole number of seconds > 0" if {
	base
	not lib.is_positive_duration(grant_ttl)
}

misconfiguration contains concat("", ["requirement ", key, " must be a boolean"]) if {
	base
	some key in ["single_use", "privileged", "reversible"]
	not lib.is_boolean_or_absent(base, key)
}

misconfiguration contains "requirement tiers must be a list" if {
	base
	not is_array(tiers)
}

misconfiguration contains "tier must be an object with a numeric min_value" if {
	is_array(tiers)
	some t in tiers
	not is_number(t.min_value)
}

misconfiguration contains "tier acr is not on the acr ladder" if {
	lib.valid_ladder(ladder)
	some t in tier_list
	lib.has_key(t, "acr")
	not lib.on_ladder(ladder, t.acr)
}

misconfiguration contains "tier max_age must be a whole number of seconds >= 0" if {
	some t in tier_list
	lib.has_key(t, "max_age")
	not lib.is_duration(t.max_age)
}

misconfiguration contains "requirements max_clock_skew must be a whole number of seconds >= 0" if {
	is_object(requirements)
	not lib.is_duration(max_clock_skew)
}

# ===========================================================================
# Input shorthands (defined only when well-formed, so that no rule trips over
# a value of the wrong type)
# ===========================================================================

stepguard := input.stepguard if is_object(input.stepguard)

now := stepguard.now

ladder := stepguard.acr_ladder

action := stepguard.action if is_object(stepguard.action)

subject := stepguard.subject if is_object(stepguard.subject)

# The transaction-bound grant; undefined when there is none (null).
grant := stepguard.grant if is_object(stepguard.grant)

claims := subject.claims if is_object(subject.claims)

# The subject acts through a named delegation chain (RFC 8693 "act").
has_actor if {
	is_array(subject.act)
	count(subject.act) > 0
}
