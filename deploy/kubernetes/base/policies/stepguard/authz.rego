# METADATA
# title: stepguard step-up decision
# description: |
#   Decides, per sensitive transaction, whether the caller may proceed
#   ("allow"), must complete a transaction-bound step-up first ("step_up"), or
#   is refused ("deny").
#
#   Entry point: data.stepguard.authz.decision (always exactly one object).
#   Settings (policies/data.json):
#     data.stepguard.requirements   per-action acr / max_age, value tiers per currency, admin thresholds
#     data.stepguard.roles          which roles are administrators
#     data.stepguard.signals        risk signals: velocity threshold, trusted device postures
#     data.stepguard.workloads      transaction-token lifetime for workloads
#     data.stepguard.delegation     accountable actors allowed per action (RFC 8693 act)
#     data.stepguard.break_glass    emergency roles, actions, justification, grant ttl
#   The input and output contracts are documented in docs/policy.md.
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

# The verdict, plus `severity: "high"` on break-glass decisions (so evidence
# can flag them; stepguard ignores output fields it does not read).
decision := object.union(verdict, severity) if is_object(verdict)

default severity := {}

severity := {"severity": "high"} if break_glass

# The clauses are tried in order; the first whose body holds wins.
verdict := {
	"result": "deny",
	"reason": primary,
	"reasons": reasons,
	"status": status,
} if {
	count(deny_reasons) > 0
	primary := ordered(deny_reasons)[0]
	reasons := ordered(deny_reasons | deny_explanations)

	# Bound here rather than in the head: regorus 0.14 mis-evaluates a
	# variable-indexed reference in the head of a rule with else branches.
	status := deny_status[primary]
} else := {
	"result": "allow",
	"reason": "transaction_token_satisfies",
	"reasons": ordered({"transaction_token_satisfies"} | workload_explanations),
	"used_grant": false,
} if {
	count(deny_reasons) == 0
	workload_token_satisfies
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
	"transaction_token_too_long_lived": 403,
	"transaction_token_expired": 403,
	"transaction_token_mismatch": 403,
	"policy_misconfigured": 503,
	"shared_account_without_actor": 403,
	"delegation_actor_not_allowed": 403,
	"break_glass_justification_required": 403,
}

# Every reason code, in priority order. The primary reason of a decision is
# the first of its reasons in this order.
reason_order := [
	# deny
	"invalid_input",
	"authentication_required",
	"workload_requires_transaction_token",
	"transaction_token_too_long_lived",
	"transaction_token_expired",
	"transaction_token_mismatch",
	"policy_misconfigured",
	"shared_account_without_actor",
	"delegation_actor_not_allowed",
	"break_glass_justification_required",
	# allow
	"grant_satisfies",
	"session_satisfies",
	"transaction_token_satisfies",
	# step_up
	"acr_too_low",
	"session_too_old",
	"fresh_step_up_required",
	# explanations only (never primary)
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

# ordered(codes) lists a set of reason codes in priority order.
ordered(codes) := [r | some r in reason_order; r in codes]

# The requirement that must be met, as reported in the decision.
requirement := {
	# lib.acr_values(ladder, required_acr), from the rank already known.
	"acr_values": array.slice(ladder, required_rank, count(ladder)),
	"max_age": required_max_age,
}

# ===========================================================================
# Deny reasons
# ===========================================================================

# The input does not follow the contract (a stepguard bug): refuse.
deny_reasons contains "invalid_input" if count(input_errors) > 0

# Defence in depth: stepguard normally answers invalid_token before asking.
deny_reasons contains "authentication_required" if subject.kind == "anonymous"

# Machine identities are never shown human prompts: a workload proves that
# THIS transaction was approved upstream with a transaction token, or is
# refused (see "Workloads" below).
deny_reasons contains "workload_requires_transaction_token" if {
	subject.kind == "workload"
	not txn_token
}

deny_reasons contains "transaction_token_too_long_lived" if {
	txn_token
	not txn_token_short_lived
}

deny_reasons contains "transaction_token_expired" if {
	txn_token
	txn_token_expired
}

deny_reasons contains "transaction_token_mismatch" if {
	txn_token
	not txn_token_matches
}

# Requirements data, settings or acr ladder unusable for this action: fail closed.
deny_reasons contains "policy_misconfigured" if count(misconfiguration) > 0

# A shared account may only perform privileged actions through a delegation
# chain (RFC 8693 "act") that names the individual actor.
deny_reasons contains "shared_account_without_actor" if {
	claims.shared_account == true
	not has_actor
	privileged
}

# The accountable actor of a delegation chain must be allowed for the action
# (see "Delegation" below).
deny_reasons contains "delegation_actor_not_allowed" if {
	delegation_enforced
	not actor_allowed
}

# Break-glass needs a written justification (see "Break-glass" below).
deny_reasons contains "break_glass_justification_required" if {
	break_glass
	not break_glass_justified
}

# Explanations added to the reasons of deny decisions.
deny_explanations contains "break_glass" if break_glass

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
	fresh(grant_age)
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

session_fresh if fresh(subject.session_age)

# lib.within(age, required_max_age, max_clock_skew), inlined: decisions call it
# on every request and a function call costs more than its body.
fresh(age) if {
	is_number(age)
	is_number(required_max_age)
	is_number(max_clock_skew)
	age <= required_max_age
	age >= 0 - max_clock_skew
}

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

# The tiers raised it without knowing the currency's tiers (the currency is
# null, not a string or not a key of tiers): the strictest tier applied.
explanations contains "unknown_currency" if {
	tier_raised
	not currency_tiers
}

explanations contains "admin_threshold" if admin_raised

explanations contains signal if some signal in risk_signals

explanations contains "break_glass" if break_glass

explanations contains "delegated" if has_actor

explanations contains "grant_insufficient" if {
	grant
	not grant_satisfies
}

# ===========================================================================
# The requirement for this action (human subjects)
#
# Each layer can only make the requirement stricter: the stronger acr and the
# smaller max_age win.
#   1. data: actions[name] (or default), then value tiers (per currency);
#   2. administrators: the action's `admin` thresholds;
#   3. risk signals (new network, high velocity, untrusted device): one step
#      up the ladder (capped at the top) and max_age 0;
#   4. break-glass: the top of the ladder and max_age 0;
#   5. irreversible and privileged actions: max_age 0 (and single use).
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
	requirements.actions[action.name] = _
}

# The requirement, when it is usable at all (an object).
base := raw_requirement if is_object(raw_requirement)

# Value tiers, per currency: an object keyed by upper-case ISO 4217 code, each
# a list of {min_value, acr?, max_age?} in that currency ({} = no tiers).
# Min_values are not comparable across currencies: a value is only ever placed
# among the tiers of its own currency.
tiers := object.get(base, "tiers", {})

# The tiers priced in the request's currency; undefined when the currency is
# null, not a string or not a key of tiers. (object.get, not tiers[c]: an
# absent key must leave the rule undefined in both engines, and a non-string
# currency must never be taken for a path.)
currency_tiers := list if {
	is_object(tiers)
	c := object.get(action, "currency", null)
	is_string(c)
	list := object.get(tiers, c, null)
	is_array(list)
}

# The tiers that can apply, well-formed ones only (a malformed one is reported
# as a misconfiguration; valid_tier(t), inlined): those of the request's
# currency, or, when the currency is unknown, every tier of every currency.
tier_list := [t | some t in currency_tiers; is_object(t); is_number(t.min_value)] if currency_tiers

tier_list := [t | some list in tiers; is_array(list); some t in list; is_object(t); is_number(t.min_value)] if {
	is_object(tiers)
	not currency_tiers
}

# Tiers: the highest tier of the request's currency whose min_value <=
# action.value raises the requirement. A value that cannot be placed (a
# missing or negative value, or a currency that is null, not a string or not
# a key of tiers) takes the strictest of the tiers that could apply, combined
# (the highest acr and the smallest max_age among them): those of its currency,
# or those of every currency (fail closed, but the user can still step up).
value_placed if {
	currency_tiers
	is_number(action.value)
	action.value >= 0
}

tier_floors contains t.min_value if {
	value_placed
	some t in tier_list
	t.min_value <= action.value
}

tier_floor := max(tier_floors) if count(tier_floors) > 0

# Usually one tier; several when tiers share a min_value (the strictest wins).
applied_tiers contains t if {
	value_placed
	some t in tier_list
	t.min_value == tier_floor
}

applied_tiers contains t if {
	not value_placed
	some t in tier_list
}

# Ranks by key: the index of each acr on the (valid) ladder, built once per
# decision; rank_of[acr] is lib.rank(ladder, acr).
rank_of := {acr: i | some i, acr in ladder} if ladder_ok

base_rank := rank_of[base.acr]

# A tier never lowers the acr nor raises max_age relative to the base.
data_rank := max({base_rank} | {rank_of[object.get(t, "acr", base.acr)] | some t in applied_tiers})

data_max_age := min({base.max_age} | {object.get(t, "max_age", base.max_age) | some t in applied_tiers})

tier_raised if data_rank > base_rank

tier_raised if data_max_age < base.max_age

# --- administrators ----------------------------------------------------------

# Administrators get stricter thresholds than standard users: the action's
# `admin` entry, or the default's `admin` entry when the action has none.
# One challenge policy for everyone is the known mistake.
admin_roles := object.get(roles_settings, "admin", [])

is_admin if {
	subject.kind == "human"
	is_array(subject.roles)
	is_array(admin_roles)
	some role in subject.roles
	role in admin_roles
}

admin_entry := base.admin if base_has_admin

admin_entry := requirements.default.admin if {
	not base_has_admin
	is_object(requirements.default)
	lib.has_key(requirements.default, "admin")
}

# The admin thresholds that apply to this subject (undefined for others).
admin_requirement := admin_entry if {
	is_admin
	is_object(admin_entry)
}

base_has_admin if lib.has_key(base, "admin")

admin_rank := rank_of[object.get(admin_requirement, "acr", base.acr)]

admin_max_age := object.get(admin_requirement, "max_age", base.max_age)

admin_raised if admin_rank > data_rank

admin_raised if admin_max_age < data_max_age

# --- risk signals --------------------------------------------------------------

# Context signals that raise the requirement for humans. Each adds its own
# reason code; together they raise it once (one step, not one per signal).
risk_signals contains "new_network" if {
	subject.kind == "human"
	context.new_network == true
}

# null: no source address, or no baseline yet (the subject was never approved
# from any network). Not judged, unless signals.unknown_network_is_new.
risk_signals contains "new_network" if {
	subject.kind == "human"
	is_null(object.get(context, "new_network", null))
	unknown_network_is_new == true
}

unknown_network_is_new := object.get(signals_settings, "unknown_network_is_new", false)

risk_signals contains "high_velocity" if {
	subject.kind == "human"
	is_number(signals_settings.velocity_max)
	is_object(context.velocity)
	is_number(context.velocity.count)
	context.velocity.count > signals_settings.velocity_max
}

# Reported by an upstream device-posture component (null when not configured
# or absent). A posture that is not listed as trusted is untrusted, including
# an empty or unknown value.
risk_signals contains "untrusted_device" if {
	subject.kind == "human"
	is_string(context.device_trust)
	not lib.any_in([context.device_trust], trusted_devices)
}

trusted_devices := object.get(signals_settings, "trusted_devices", [])

# How many acr steps risk signals add (default 1), capped at the top.
signal_steps := object.get(signals_settings, "raise_steps", 1)

top_rank := count(ladder) - 1 if ladder_ok

# Evaluated once per decision (function results are not cached).
# lib.valid_ladder(ladder), inlined.
ladder_ok if {
	is_array(ladder)
	count(ladder) > 0
	every a in ladder {
		is_string(a)
	}
	count({a | some a in ladder}) == count(ladder)
}

# --- the resulting requirement -------------------------------------------------

# Candidate ranks and max_ages from every layer that applies; the strictest wins.
rank_floors contains data_rank

rank_floors contains admin_rank

rank_floors contains lib.raise_rank(policy_rank, signal_steps, top_rank) if {
	count(risk_signals) > 0
	is_number(signal_steps)
}

rank_floors contains top_rank if break_glass

# data + admin: the rank the risk signals raise from. (`{admin_rank | admin_rank}`
# is empty for non-administrators; not `{r | r := admin_rank}`, which
# regorus 0.14's VM fills with an undefined value.)
policy_rank := max({data_rank} | {admin_rank | admin_rank})

age_ceilings contains data_max_age

age_ceilings contains admin_max_age

age_ceilings contains 0 if count(risk_signals) > 0

age_ceilings contains 0 if break_glass

age_ceilings contains 0 if always_fresh

# Irreversible and privileged actions always need a fresh, single-use step-up,
# whatever the data says. Input and data can each mark an action; neither can
# unmark it.
irreversible if action.reversible == false

irreversible if base.reversible == false

privileged if action.privileged == true

privileged if base.privileged == true

always_fresh if irreversible

always_fresh if privileged

# Defined only when the data layer is (a usable requirement on a valid ladder).
required_rank := max(rank_floors) if data_rank

required_acr := ladder[required_rank]

required_max_age := min(age_ceilings) if data_max_age

# A step-up demanded by a risk signal or break-glass approves this one
# transaction, like one for an irreversible or privileged action.
one_use_only if always_fresh

one_use_only if count(risk_signals) > 0

one_use_only if break_glass

single_use := true if one_use_only

single_use := object.get(base, "single_use", true) if not one_use_only

base_grant_ttl := object.get(base, "grant_ttl", 120)

# Break-glass grants are short: the break-glass ttl, or the action's when shorter.
grant_ttl := base_grant_ttl if not break_glass

grant_ttl := min({base_grant_ttl, break_glass_ttl}) if {
	break_glass
	is_number(base_grant_ttl)
	is_number(break_glass_ttl)
}

# Tolerated clock skew, in seconds, for auth_time values in the future.
max_clock_skew := object.get(requirements, "max_clock_skew", 60) if is_object(requirements)

# ===========================================================================
# Workloads: transaction tokens
#
# A workload (subject.kind "workload") is never prompted. It performs a
# sensitive action only with a short-lived, transaction-scoped token (in the
# spirit of the IETF OAuth Transaction Tokens draft) whose claims stepguard
# verified and passes as subject.claims:
#   txn   the transaction id (non-empty string)
#   iat, exp
#   tctx  {"action": "<action name>", "fields": {"<bound field>": "<value>", ...}}
# The token must be short-lived (exp - iat <= workloads.max_token_lifetime),
# unexpired, name this action and carry exactly this transaction's bound
# values: a token minted for another transaction is refused (no replay).
# ===========================================================================

txn_token if {
	subject.kind == "workload"
	non_empty_string(claims.txn)
}

# exp - iat is known, not negative, and within the configured maximum.
txn_token_short_lived if {
	lib.is_integer(claims.iat)
	lib.is_integer(claims.exp)
	claims.exp >= claims.iat
	is_number(max_token_lifetime)
	claims.exp - claims.iat <= max_token_lifetime
}

# Defence in depth: stepguard verified exp already.
txn_token_expired if {
	lib.is_integer(claims.exp)
	is_number(now)
	is_number(max_clock_skew)
	now > claims.exp + max_clock_skew
}

txn_token_matches if {
	is_object(claims.tctx)
	claims.tctx.action == action.name
	is_object(txn_fields)
	is_object(bound)
	every name in bound_names {
		object.get(txn_fields, name, null) == object.get(bound, name, null)
	}
}

txn_fields := claims.tctx.fields if is_object(claims.tctx.fields)

# Every field named by the transaction or by the token. A field the request
# does not carry is bound to null, which an absent token field matches.
bound_names := {name | some name, _ in bound} | {name | some name, _ in txn_fields}

workload_token_satisfies if {
	txn_token
	txn_token_short_lived
	not txn_token_expired
	txn_token_matches
}

workload_explanations contains "delegated" if has_actor

max_token_lifetime := object.get(workloads_settings, "max_token_lifetime", 300)

# ===========================================================================
# Delegation (RFC 8693 "act")
#
# subject.act is the delegation chain, outermost (current) actor first. The
# outermost actor is accountable. When a chain is present and the action is
# privileged, or listed in delegation.allowed_actors, that actor must be
# listed in delegation.allowed_actors[action] as {"sub", "iss"}. An actor
# without its own iss is in the namespace of the token's issuer.
# The whole chain stays in the input, so evidence records it.
# ===========================================================================

allowed_actors := object.get(delegation_settings, "allowed_actors", {})

delegation_enforced if {
	has_actor
	privileged
}

delegation_enforced if {
	has_actor
	lib.has_key(allowed_actors, action.name)
}

accountable_actor := subject.act[0] if has_actor

accountable_issuer := accountable_actor.iss if is_string(accountable_actor.iss)

accountable_issuer := subject.issuer if {
	is_object(accountable_actor)
	not is_string(object.get(accountable_actor, "iss", null))
}

actor_allowed if {
	is_object(allowed_actors)
	is_array(object.get(allowed_actors, action.name, null))
	some entry in allowed_actors[action.name]
	is_object(entry)
	non_empty_string(accountable_actor.sub)
	entry.sub == accountable_actor.sub
	is_string(accountable_issuer)
	entry.iss == accountable_issuer
}

# The subject acts through a named delegation chain (RFC 8693 "act").
has_actor if {
	is_array(subject.act)
	count(subject.act) > 0
}

# ===========================================================================
# Break-glass
#
# A subject with a break-glass role performing one of the break-glass actions
# gets emergency access only as a high-assurance, audited event: a written
# justification (at least min_justification_length characters), the top of
# the acr ladder, max_age 0, and a short single-use grant. Every decision
# lists "break_glass" and carries severity "high". Break-glass never changes
# anything for an action that is not listed.
# ===========================================================================

break_glass if {
	subject.kind == "human"
	is_array(subject.roles)
	break_glass_roles := object.get(break_glass_settings, "roles", [])
	is_array(break_glass_roles)
	some role in subject.roles
	role in break_glass_roles
	is_array(break_glass_actions)
	action.name in break_glass_actions
}

break_glass_actions := object.get(break_glass_settings, "actions", [])

break_glass_justified if {
	is_number(min_justification_length)
	lib.text_length(context.break_glass_justification) >= min_justification_length
}

min_justification_length := object.get(break_glass_settings, "min_justification_length", 20)

break_glass_ttl := object.get(break_glass_settings, "grant_ttl", 60)

# ===========================================================================
# Validation
#
# Each entry is a human-readable message; query
# data.stepguard.authz.input_errors or .misconfiguration to see them.
#
# Every decision needs both sets, and both are almost always empty. Each is
# therefore first checked by one fast rule (input_ok, config_ok) that holds
# only when no problem can exist; the detailed checks (input_problems,
# config_problems) run only when it fails. The fast rules are stricter than
# the detailed ones, never looser: when in doubt they fail, and the detailed
# checks decide. (regorus evaluates each rule once per decision but pays for
# every rule reference and function call; one body with builtins is cheaper
# than twenty rules.)
# ===========================================================================

input_errors contains problem if {
	not input_ok
	some problem in input_problems
}

misconfiguration contains problem if {
	not config_ok
	some problem in config_problems
}

# --- fast paths ------------------------------------------------------------

# What stepguard sends: every field present with its documented type.
input_ok if {
	is_object(stepguard)
	s := stepguard
	is_number(s.now)
	floor(s.now) == s.now
	a := object.get(s, "action", null)
	is_object(a)
	is_string(object.get(a, "name", null))
	a.name != ""
	is_boolean(object.get(a, "reversible", null))
	is_boolean(object.get(a, "privileged", null))
	type_name(object.get(a, "value", null)) in {"number", "null"}
	u := object.get(s, "subject", null)
	is_object(u)
	u.kind in {"human", "workload", "anonymous"}
	is_number(object.get(u, "acr_rank", null))
	floor(u.acr_rank) == u.acr_rank
	type_name(object.get(u, "session_age", null)) in {"number", "null"}
	roles := object.get(u, "roles", null)
	is_array(roles)
	every r in roles {
		is_string(r)
	}
	is_object(object.get(u, "claims", null))
	is_array(object.get(u, "act", null))
	is_object(bound_data)
	grant_input_ok
	context_input_ok
}

grant_input_ok if is_null(object.get(stepguard, "grant", null))

grant_input_ok if {
	g := object.get(stepguard, "grant", null)
	is_object(g)
	is_number(object.get(g, "acr_rank", null))
	floor(g.acr_rank) == g.acr_rank
	is_number(object.get(g, "auth_time", null))
	floor(g.auth_time) == g.auth_time
	uses := object.get(g, "uses_left", null)
	is_null(uses)
}

grant_input_ok if {
	g := object.get(stepguard, "grant", null)
	is_object(g)
	is_number(object.get(g, "acr_rank", null))
	floor(g.acr_rank) == g.acr_rank
	is_number(object.get(g, "auth_time", null))
	floor(g.auth_time) == g.auth_time
	uses := object.get(g, "uses_left", null)
	is_number(uses)
	floor(uses) == uses
}

context_input_ok if is_null(object.get(stepguard, "context", null))

context_input_ok if {
	c := object.get(stepguard, "context", null)
	is_object(c)
	context_fields_ok(c)
	is_null(object.get(c, "velocity", null))
}

context_input_ok if {
	c := object.get(stepguard, "context", null)
	is_object(c)
	context_fields_ok(c)
	v := object.get(c, "velocity", null)
	is_object(v)
	n := object.get(v, "count", null)
	is_number(n)
	floor(n) == n
	n >= 0
}

context_fields_ok(c) if {
	type_name(object.get(c, "network", null)) in {"string", "null"}
	type_name(object.get(c, "device_trust", null)) in {"string", "null"}
	type_name(object.get(c, "break_glass_justification", null)) in {"string", "null"}
	type_name(object.get(c, "new_network", null)) in {"boolean", "null"}
}

# A usable requirement for this action, on a valid ladder, and valid settings.
config_ok if {
	ladder_ok
	is_object(requirements)
	is_object(object.get(requirements, "actions", {}))
	is_object(base)
	b := base
	object.get(b, "acr", null) in ladder
	m := object.get(b, "max_age", null)
	is_number(m)
	floor(m) == m
	m >= 0
	is_number(base_grant_ttl)
	t := base_grant_ttl
	floor(t) == t
	t > 0
	is_boolean(object.get(b, "single_use", false))
	is_boolean(object.get(b, "privileged", false))
	is_boolean(object.get(b, "reversible", false))
	is_object(tiers)
	every code, list in tiers {
		is_string(code)
		count(code) == 3
		trim(code, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") == ""
		is_array(list)
		every tier in list {
			is_object(tier)
			is_number(object.get(tier, "min_value", null))
			object.get(tier, "acr", b.acr) in ladder
			tier_age := object.get(tier, "max_age", 0)
			is_number(tier_age)
			floor(tier_age) == tier_age
			tier_age >= 0
		}
	}
	is_number(max_clock_skew)
	skew := max_clock_skew
	floor(skew) == skew
	skew >= 0
	admin_ok
	settings_ok
}

admin_ok if not admin_entry_present

admin_ok if {
	is_object(admin_entry)
	e := admin_entry
	object.get(e, "acr", ladder[0]) in ladder
	age := object.get(e, "max_age", 0)
	is_number(age)
	floor(age) == age
	age >= 0
}

# --- input -----------------------------------------------------------------
#
# Fields are read with object.get (or through rules with a default), never as
# `not f(obj.field)`: OPA (and so an OPA-compiled Wasm module) treats
# `not f(x)` as undefined, not true, when x is undefined, so a check written
# that way would miss a MISSING field. regorus differs; this form is the same
# in both.

input_problems contains "input.stepguard must be an object" if not stepguard

input_problems contains "input.stepguard.now must be an integer" if {
	stepguard
	not lib.is_integer(object.get(stepguard, "now", null))
}

input_problems contains "input.stepguard.action must be an object" if not action

input_problems contains "action.name must be a non-empty string" if {
	action
	not non_empty_string(object.get(action, "name", null))
}

# These two flags can force a fresh step-up: a missing flag must not
# silently relax the policy.
input_problems contains "action.reversible must be a boolean" if {
	action
	not is_boolean(object.get(action, "reversible", null))
}

input_problems contains "action.privileged must be a boolean" if {
	action
	not is_boolean(object.get(action, "privileged", null))
}

input_problems contains "action.value must be a number or null" if {
	action
	value := object.get(action, "value", null)
	not is_number(value)
	not is_null(value)
}

input_problems contains "input.stepguard.subject must be an object" if not subject

input_problems contains "subject.kind must be human, workload or anonymous" if {
	subject
	not object.get(subject, "kind", null) in {"human", "workload", "anonymous"}
}

input_problems contains "subject.acr_rank must be an integer" if {
	subject.kind == "human"
	not lib.is_integer(object.get(subject, "acr_rank", null))
}

input_problems contains "subject.session_age must be a number or null" if {
	subject.kind == "human"
	age := object.get(subject, "session_age", null)
	not is_number(age)
	not is_null(age)
}

# Administrators and break-glass are recognised by role.
input_problems contains "subject.roles must be a list of strings" if {
	subject.kind == "human"
	not lib.is_string_list(object.get(subject, "roles", null))
}

# Needed to tell shared accounts, delegation chains and transaction tokens apart.
input_problems contains "subject.claims must be an object" if {
	subject.kind in {"human", "workload"}
	not is_object(object.get(subject, "claims", null))
}

input_problems contains "subject.act must be a list" if {
	subject.kind in {"human", "workload"}
	not is_array(object.get(subject, "act", null))
}

# Workload transaction tokens are matched against the bound values.
input_problems contains "transaction.bound must be an object" if {
	stepguard
	not is_object(bound_data)
}

default bound_data := null

bound_data := stepguard.transaction.bound

input_problems contains "input.stepguard.grant must be an object or null" if {
	stepguard
	g := object.get(stepguard, "grant", null)
	not is_object(g)
	not is_null(g)
}

input_problems contains "grant.acr_rank must be an integer" if {
	grant
	not lib.is_integer(object.get(grant, "acr_rank", null))
}

input_problems contains "grant.auth_time must be an integer" if {
	grant
	not lib.is_integer(object.get(grant, "auth_time", null))
}

input_problems contains "grant.uses_left must be an integer or null" if {
	grant
	uses := object.get(grant, "uses_left", null)
	not lib.is_integer(uses)
	not is_null(uses)
}

# The context signals may be absent or null ("not measured"); when present
# they must have their documented type, so a malformed signal never silently
# relaxes the policy.
input_problems contains "input.stepguard.context must be an object or null" if {
	stepguard
	c := object.get(stepguard, "context", null)
	not is_object(c)
	not is_null(c)
}

input_problems contains concat("", ["context.", key, " must be a string or null"]) if {
	some key in ["network", "device_trust", "break_glass_justification"]
	value := object.get(context, key, null)
	not is_string(value)
	not is_null(value)
}

input_problems contains "context.new_network must be a boolean or null" if {
	value := object.get(context, "new_network", null)
	not is_boolean(value)
	not is_null(value)
}

input_problems contains "context.velocity must be {window_secs, count} with integer count >= 0, or null" if {
	value := object.get(context, "velocity", null)
	not is_null(value)
	not valid_velocity(value)
}

valid_velocity(v) if {
	is_object(v)
	lib.is_duration(object.get(v, "count", null))
}

non_empty_string(s) if {
	is_string(s)
	s != ""
}

# --- requirements data and ladder -------------------------------------------

config_problems contains "input.stepguard.acr_ladder must be a non-empty list of distinct strings" if {
	stepguard
	not ladder_ok
}

config_problems contains "data.stepguard.requirements.actions must be an object" if {
	lib.has_key(requirements, "actions")
	not is_object(requirements.actions)
}

config_problems contains "no usable requirement: data.stepguard.requirements.actions[name] (or .default) must be an object" if {
	action
	not base
}

config_problems contains "requirement acr is not on the acr ladder" if {
	base
	ladder_ok
	not lib.on_ladder(ladder, object.get(base, "acr", null))
}

config_problems contains "requirement max_age must be a whole number of seconds >= 0" if {
	base
	not lib.is_duration(object.get(base, "max_age", null))
}

config_problems contains "requirement grant_ttl must be a whole number of seconds > 0" if {
	base
	not lib.is_positive_duration(base_grant_ttl)
}

config_problems contains concat("", ["requirement ", key, " must be a boolean"]) if {
	base
	some key in ["single_use", "privileged", "reversible"]
	not lib.is_boolean_or_absent(base, key)
}

# The array form of tiers (one list whatever the currency) is a misconfiguration:
# its min_values would be compared with values in any currency.
config_problems contains `requirement tiers must be an object keyed by currency (ISO 4217 code), e.g. {"EUR": [{"min_value": 1000, ...}]}` if {
	base
	not is_object(tiers)
}

config_problems contains concat("", ["tiers key ", code, " must be an upper-case 3-letter ISO 4217 currency code"]) if {
	is_object(tiers)
	some code, _ in tiers
	is_string(code)
	not lib.is_currency_code(code)
}

config_problems contains "tiers keys must be upper-case 3-letter ISO 4217 currency codes" if {
	is_object(tiers)
	some code, _ in tiers
	not is_string(code)
}

config_problems contains concat("", ["tiers.", code, " must be a list of tiers"]) if {
	is_object(tiers)
	some code, list in tiers
	is_string(code)
	not is_array(list)
}

# Every tier of every currency, whatever its shape (validation only).
all_tiers contains t if {
	is_object(tiers)
	some list in tiers
	is_array(list)
	some t in list
}

config_problems contains "tier must be an object with a numeric min_value" if {
	some t in all_tiers
	not valid_tier(t)
}

valid_tier(t) if {
	is_object(t)
	is_number(t.min_value)
}

config_problems contains "tier acr is not on the acr ladder" if {
	ladder_ok
	some t in all_tiers
	lib.has_key(t, "acr")
	not lib.on_ladder(ladder, t.acr)
}

config_problems contains "tier max_age must be a whole number of seconds >= 0" if {
	some t in all_tiers
	lib.has_key(t, "max_age")
	not lib.is_duration(t.max_age)
}

config_problems contains "requirements max_clock_skew must be a whole number of seconds >= 0" if {
	is_object(requirements)
	not lib.is_duration(max_clock_skew)
}

# The admin entry that applies to this action, checked for every subject (a
# broken entry is a broken policy, whoever trips over it).
config_problems contains "requirement admin must be an object" if {
	admin_entry_present
	not is_object(admin_entry)
}

admin_entry_present if base_has_admin

admin_entry_present if lib.has_key(requirements.default, "admin")

config_problems contains "admin acr is not on the acr ladder" if {
	ladder_ok
	lib.has_key(admin_entry, "acr")
	not lib.on_ladder(ladder, admin_entry.acr)
}

config_problems contains "admin max_age must be a whole number of seconds >= 0" if {
	lib.has_key(admin_entry, "max_age")
	not lib.is_duration(admin_entry.max_age)
}

# --- settings ------------------------------------------------------------------
#
# The settings are the same for every request: one rule checks them all with
# builtins only (the common case, cheap), and only when it fails are the
# detailed messages worked out.

settings_ok if {
	is_object(roles_data)
	is_object(signals_data)
	is_object(workloads_data)
	is_object(delegation_data)
	is_object(break_glass_data)
	roles := object.get(roles_data, "admin", [])
	is_array(roles)
	every r in roles {
		is_string(r)
	}
	velocity_max := object.get(signals_data, "velocity_max", 0)
	is_number(velocity_max)
	floor(velocity_max) == velocity_max
	velocity_max >= 0
	is_boolean(object.get(signals_data, "unknown_network_is_new", false))
	devices := object.get(signals_data, "trusted_devices", [])
	is_array(devices)
	every d in devices {
		is_string(d)
	}
	steps := object.get(signals_data, "raise_steps", 1)
	is_number(steps)
	floor(steps) == steps
	steps > 0
	lifetime := object.get(workloads_data, "max_token_lifetime", 300)
	is_number(lifetime)
	floor(lifetime) == lifetime
	lifetime > 0
	valid_allowed_actors
	bg_roles := object.get(break_glass_data, "roles", [])
	is_array(bg_roles)
	every r in bg_roles {
		is_string(r)
	}
	bg_actions := object.get(break_glass_data, "actions", [])
	is_array(bg_actions)
	every a in bg_actions {
		is_string(a)
	}
	justification := object.get(break_glass_data, "min_justification_length", 20)
	is_number(justification)
	floor(justification) == justification
	justification > 0
	ttl := object.get(break_glass_data, "grant_ttl", 60)
	is_number(ttl)
	floor(ttl) == ttl
	ttl > 0
}

config_problems contains problem if {
	not settings_ok
	some problem in settings_problems
}

settings_problems contains concat("", ["data.stepguard.", name, " must be an object"]) if {
	some name, block in {
		"roles": roles_data,
		"signals": signals_data,
		"workloads": workloads_data,
		"delegation": delegation_data,
		"break_glass": break_glass_data,
	}
	not is_object(block)
}

settings_problems contains "roles.admin must be a list of strings" if not lib.is_string_list(admin_roles)

settings_problems contains "signals.velocity_max must be a whole number >= 0" if {
	not lib.is_duration(object.get(signals_settings, "velocity_max", 0))
}

settings_problems contains "signals.unknown_network_is_new must be a boolean" if not is_boolean(unknown_network_is_new)

settings_problems contains "signals.trusted_devices must be a list of strings" if not lib.is_string_list(trusted_devices)

settings_problems contains "signals.raise_steps must be a whole number >= 1" if not lib.is_positive_duration(signal_steps)

settings_problems contains "workloads.max_token_lifetime must be a whole number of seconds > 0" if {
	not lib.is_positive_duration(max_token_lifetime)
}

settings_problems contains "delegation.allowed_actors must map action names to lists of {sub, iss}" if {
	not valid_allowed_actors
}

valid_allowed_actors if {
	is_object(allowed_actors)
	every _, entries in allowed_actors {
		is_array(entries)
		every entry in entries {
			is_object(entry)
			non_empty_string(entry.sub)
			non_empty_string(entry.iss)
		}
	}
}

settings_problems contains concat("", ["break_glass.", key, " must be a list of strings"]) if {
	some key in ["roles", "actions"]
	not lib.is_string_list(object.get(break_glass_settings, key, []))
}

settings_problems contains "break_glass.min_justification_length must be a whole number >= 1" if {
	not lib.is_positive_duration(min_justification_length)
}

settings_problems contains "break_glass.grant_ttl must be a whole number of seconds > 0" if {
	not lib.is_positive_duration(break_glass_ttl)
}

# ===========================================================================
# Input and settings shorthands (defined only when well-formed, so that no
# rule trips over a value of the wrong type)
# ===========================================================================

stepguard := input.stepguard if is_object(input.stepguard)

now := stepguard.now

ladder := stepguard.acr_ladder

action := stepguard.action if is_object(stepguard.action)

subject := stepguard.subject if is_object(stepguard.subject)

# The transaction-bound grant; undefined when there is none (null).
grant := stepguard.grant if is_object(stepguard.grant)

claims := subject.claims if is_object(subject.claims)

bound := bound_data if is_object(bound_data)

# Context signals; {} when absent, so that every signal reads as "not measured".
default context := {}

context := stepguard.context if is_object(stepguard.context)

# Settings blocks of data.stepguard as found ({} when absent), and as used:
# {} when not an object (reported as a misconfiguration), so that every field
# falls back to its default without a type error.
#
# regorus 0.14's VM (what stepguard runs) does not fail a rule body on
# `x := <undefined reference>`: read possibly-absent data through rules with
# a default, as here, never by assigning it to a local variable.
default roles_data := {}

roles_data := data.stepguard.roles

default signals_data := {}

signals_data := data.stepguard.signals

default workloads_data := {}

workloads_data := data.stepguard.workloads

default delegation_data := {}

delegation_data := data.stepguard.delegation

default break_glass_data := {}

break_glass_data := data.stepguard.break_glass

default roles_settings := {}

roles_settings := roles_data if is_object(roles_data)

default signals_settings := {}

signals_settings := signals_data if is_object(signals_data)

default workloads_settings := {}

workloads_settings := workloads_data if is_object(workloads_data)

default delegation_settings := {}

delegation_settings := delegation_data if is_object(delegation_data)

default break_glass_settings := {}

break_glass_settings := break_glass_data if is_object(break_glass_data)
