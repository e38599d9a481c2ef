# Validation of the input, the requirements data, the ladder and the settings.
#
# Not on the per-request path: the decision (decision.rego) does not read
# these rules. stepguard builds the input from typed structs (the shapes and
# types below are guaranteed by construction; policies/schema/input.json), and
# when a policy loads or reloads it evaluates `misconfiguration` with the trial
# input of every configured action and refuses the policy when it is not
# empty (src/policy/reload/trial.rs). `stepguard check` lists both sets, and the
# tests (validate_test.rego) pin them.
#
# Each entry is a human-readable message; query
# data.stepguard.authz.input_errors or .misconfiguration to see them. Each set
# is first settled by one cheap rule (input_ok, config_ok) that holds only when
# no problem can exist; only when it fails are the detailed rules
# (input_problems, config_problems) evaluated. The fast rules are stricter than
# the detailed ones, never looser.
package stepguard.validate

import rego.v1

import data.stepguard.lib

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

# ===========================================================================
# Requirement and settings shorthands the checks above read
# ===========================================================================

requirements := data.stepguard.requirements

raw_requirement := requirements.actions[action.name] if listed

raw_requirement := requirements.default if {
	action
	not listed
}

listed if {
	is_object(requirements.actions)
	requirements.actions[action.name] = _
}

base := raw_requirement if is_object(raw_requirement)

tiers := object.get(base, "tiers", {})

admin_roles := object.get(roles_settings, "admin", [])

admin_entry := base.admin if base_has_admin

admin_entry := requirements.default.admin if {
	not base_has_admin
	is_object(requirements.default)
	lib.has_key(requirements.default, "admin")
}

base_has_admin if lib.has_key(base, "admin")

unknown_network_is_new := object.get(signals_settings, "unknown_network_is_new", false)

trusted_devices := object.get(signals_settings, "trusted_devices", [])

signal_steps := object.get(signals_settings, "raise_steps", 1)

ladder_ok if {
	is_array(ladder)
	count(ladder) > 0
	every a in ladder {
		is_string(a)
	}
	count({a | some a in ladder}) == count(ladder)
}

base_grant_ttl := object.get(base, "grant_ttl", 120)

max_clock_skew := object.get(requirements, "max_clock_skew", 60) if is_object(requirements)

max_token_lifetime := object.get(workloads_settings, "max_token_lifetime", 300)

allowed_actors := object.get(delegation_settings, "allowed_actors", {})

min_justification_length := object.get(break_glass_settings, "min_justification_length", 20)

break_glass_ttl := object.get(break_glass_settings, "grant_ttl", 60)
