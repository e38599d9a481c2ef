# The requirement a human must meet for this action.
#
# Each layer can only make it stricter: the stronger acr and the smaller
# max_age win.
#   1. data: actions[name] (or default), then value tiers (per currency);
#   2. administrators: the action's `admin` thresholds (or the default's);
#   3. risk signals (signals.rego): raise_steps up the ladder (capped at the
#      top) and max_age 0;
#   4. break-glass (break_glass.rego): the top of the ladder and max_age 0;
#   5. irreversible and privileged actions: max_age 0 (and single use).
#
# One rule computes it all (regorus's VM pays per rule reference, not per
# operation). Value tiers: an object keyed by upper-case ISO 4217 code, each a
# list of {min_value, acr?, max_age?} in that currency; a value is only ever
# placed among the tiers of its own currency. A value that cannot be placed (a
# missing or negative value, or a currency that is null, not a string or not a
# key of tiers) takes the strictest of the tiers that could apply (the highest
# acr and the smallest max_age among them): those of its currency, or those of
# every currency.
package stepguard.policy.requirement

import rego.v1


# {rank, acr_values, max_age, single_use, ttl, skew, fired}; `fired` holds the
# explanation codes the layers added (value_tier, unknown_currency,
# admin_threshold, the risk signals, break_glass) and marks for the decision
# ("justified": a break-glass justification long enough). null when the data
# has no usable requirement for this action on this ladder.
# (null, not undefined, when unusable: regorus's VM caches a rule's value
# between references only when it is defined.)
default human := null

human := {
	"rank": rank,
	"acr_values": array.slice(base.ladder, rank, count(base.ladder)),
	"max_age": max_age,
	"single_use": single_use,
	"ttl": ttl,
	"skew": cfg.max_clock_skew,
	"fired": fired,
} if {
	# (Checked first: regorus's VM loops when a body fails after a
	# comprehension that iterates.)
	base := data_layer
	is_object(base)
	base.unknown_acrs == 0
	admin := admin_layer
	is_object(admin)
	admin.unknown_acrs == 0
	b := base.entry
	cfg := data.stepguard.policy.settings.all
	rank_of := base.rank_of
	data_rank := base.rank
	data_age := base.max_age

	admin_ranks := admin.ranks
	admin_ages := admin.ages
	policy_rank := max(array.concat([data_rank], admin_ranks))

	# Risk signals and break-glass.
	fired_signals := data.stepguard.policy.signals.fired
	marks := data.stepguard.policy.break_glass.marks
	top := count(base.ladder) - 1
	steps := cfg.raise_steps
	raised_rank := {min({policy_rank + steps, top}) | count(fired_signals) > 0; is_number(steps)}
	rank := max(({policy_rank} | raised_rank) | {top | "break_glass" in marks})

	# Irreversible and privileged actions (input and data can each mark one;
	# neither can unmark it), risk signals and break-glass: a fresh, single-use
	# step-up for this one transaction.
	act := input.stepguard.action
	fresh_only := ((({1 | act.reversible == false} | {2 | b.reversible == false}) | ({3 | act.privileged == true} | {4 | b.privileged == true})) | {5 | count(fired_signals) > 0}) | {6 | "break_glass" in marks}
	max_age := min(({data_age} | {a | some a in admin_ages}) | {0 | count(fresh_only) > 0})
	single_use := array.concat([true | count(fresh_only) > 0], [object.get(b, "single_use", true)])[0]
	ttl := min({object.get(b, "grant_ttl", 120)} | {cfg.break_glass_ttl | "break_glass" in marks})

	# The admin thresholds raised it.
	admin_raised := {1 | some r in admin_ranks; r > data_rank} | {2 | some a in admin_ages; a < data_age}
	fired := ((base.fired | {code | count(admin_raised) > 0; code := "admin_threshold"}) | fired_signals) | marks
}

# Layer 2: administrators get the action's admin entry, or the default's:
# {ranks, ages, unknown_acrs} ([] each for everyone else; unknown_acrs counts
# the acrs that are not on the ladder).
default admin_layer := null

admin_layer := {
	"ranks": [r | some r in admin_ranks; is_number(r)],
	"ages": admin_ages,
	"unknown_acrs": count([r | some r in admin_ranks; not is_number(r)]),
} if {
	base := data_layer
	is_object(base)
	b := base.entry
	cfg := data.stepguard.policy.settings.all
	default_entry := [e | d := object.get(cfg.requirements, "default", null); is_object(d); e := object.get(d, "admin", null)]
	entry := object.get(b, "admin", array.concat(default_entry, [null])[0])
	admin := [entry | is_object(entry); some role in input.stepguard.subject.roles; role in cfg.admin_roles]
	admin_ranks := [object.get(base.rank_of, object.get(e, "acr", b.acr), null) | some e in admin]
	admin_ages := [object.get(e, "max_age", b.max_age) | some e in admin]
}

# Layer 1: the data entry for this action and its value tiers, on this ladder:
# {entry, ladder, rank_of, rank, max_age, fired} (fired: value_tier, and
# unknown_currency when the currency's own tiers were not known; unknown_acrs
# counts the applicable tiers whose acr is not on the ladder). null when the
# entry is unusable.
default data_layer := null

data_layer := {
	"entry": b,
	"ladder": acrs,
	"rank_of": rank_of,
	"rank": data_rank,
	"max_age": data_age,
	"unknown_acrs": count([r | some r in tier_ranks; not is_number(r)]),
	"fired": {code | count(tier_raised) > 0; code := "value_tier"} | {code |
		count(tier_raised) > 0
		count(own) == 0
		code := "unknown_currency"
	},
} if {
	s := input.stepguard
	act := s.action
	reqs := data.stepguard.policy.settings.all.requirements
	b := object.get(object.get(reqs, "actions", {}), act.name, object.get(reqs, "default", null))
	is_object(b)
	acrs := s.acr_ladder
	rank_of := {acr: i | some i, acr in acrs}
	base_rank := object.get(rank_of, b.acr, null)
	is_number(base_rank)
	base_age := b.max_age
	is_number(base_age)

	# The tiers of the request's currency ([list], or [] when unknown), and
	# those that apply.
	tier_map := object.get(b, "tiers", {})
	currency := object.get(act, "currency", null)
	# (Well-formed tiers only: a malformed one is a misconfiguration.)
	is_object(tier_map)
	own := [list | is_string(currency); list := object.get(tier_map, currency, null); is_array(list)]
	value := object.get(act, "value", null)
	placed := [1 | count(own) > 0; is_number(value); value >= 0]
	floors := [t.min_value | count(placed) > 0; some t in own[0]; is_object(t); is_number(t.min_value); t.min_value <= value]
	applied := array.concat(
		array.concat(
			[t | count(floors) > 0; top := max(floors); some t in own[0]; is_object(t); t.min_value == top],
			[t | count(own) > 0; count(placed) == 0; some t in own[0]; is_object(t); is_number(t.min_value)],
		),
		[t | count(own) == 0; some list in tier_map; is_array(list); some t in list; is_object(t); is_number(t.min_value)],
	)
	tier_ranks := [object.get(rank_of, object.get(t, "acr", b.acr), null) | some t in applied]
	data_rank := max(array.concat([base_rank], [r | some r in tier_ranks; is_number(r)]))
	data_age := min(array.concat([base_age], [object.get(t, "max_age", base_age) | some t in applied]))
	tier_raised := {1 | data_rank > base_rank} | {2 | data_age < base_age}
}

# Marked privileged by the route or by the data (for explaining a decision).
privileged if input.stepguard.action.privileged == true

privileged if {
	reqs := data.stepguard.policy.settings.all.requirements
	base := object.get(object.get(reqs, "actions", {}), input.stepguard.action.name, object.get(reqs, "default", null))
	base.privileged == true
}
