# Unit tests for the requirement (requirement.rego): data, value tiers per currency, administrators.
# Run with `stepguard policy test policies` (regorus) or `opa test policies/`.
# The fixtures (inputs stepguard builds) are in decision_test.rego.
package stepguard.requirement_test

import rego.v1

import data.stepguard.authz
import data.stepguard.authz_test.now
import data.stepguard.authz_test.ladder
import data.stepguard.authz_test.alice
import data.stepguard.authz_test.human
import data.stepguard.authz_test.session
import data.stepguard.authz_test.rank
import data.stepguard.authz_test.payments_workload
import data.stepguard.authz_test.anonymous
import data.stepguard.authz_test.action
import data.stepguard.authz_test.transfer
import data.stepguard.authz_test.transfer_in
import data.stepguard.authz_test.approve
import data.stepguard.authz_test.keys_export
import data.stepguard.authz_test.iam_escalate
import data.stepguard.authz_test.email_change
import data.stepguard.authz_test.grant
import data.stepguard.authz_test.request
import data.stepguard.authz_test.known_context
import data.stepguard.authz_test.with_context
import data.stepguard.authz_test.txn_claims
import data.stepguard.authz_test.txn_workload
import data.stepguard.authz_test.admin_session
import data.stepguard.authz_test.idp
import data.stepguard.authz_test.bob_may_export
import data.stepguard.authz_test.delegated
import data.stepguard.authz_test.oncall
import data.stepguard.authz_test.justification

# ===========================================================================
# payments.transfer: aal2 / 300 s; in EUR >= 1000 -> aal2 / 0; >= 10000 -> aal3 / 0
# (tiers per currency; see "Value tiers per currency" below)
# ===========================================================================

test_transfer_small_recent_aal2_session_allows if {
	req := request(transfer(500), session("aal2", 100), null)
	d := authz.decision with input as req
	d == {
		"result": "allow",
		"reason": "session_satisfies",
		"reasons": ["session_satisfies"],
		"requirement": {"acr_values": ["aal2", "aal3"], "max_age": 300},
		"used_grant": false,
	}

	# max_age is inclusive.
	edge := request(transfer(500), session("aal2", 300), null)
	authz.decision.result == "allow" with input as edge
}

test_transfer_small_old_session_steps_up if {
	req := request(transfer(500), session("aal2", 301), null)
	d := authz.decision with input as req
	d == {
		"result": "step_up",
		"reason": "session_too_old",
		"reasons": ["session_too_old"],
		"requirement": {"acr_values": ["aal2", "aal3"], "max_age": 300},
		"grant": {"single_use": true, "ttl": 120},
	}
}

test_missing_auth_time_is_session_too_old if {
	req := request(transfer(500), human({"auth_time": null, "session_age": null}), null)
	d := authz.decision with input as req
	d.result == "step_up"
	d.reason == "session_too_old"
}

test_auth_time_in_the_future_is_not_fresh if {
	far := request(transfer(500), session("aal2", -3600), null)
	authz.decision.reason == "session_too_old" with input as far

	# Small clock skew (<= max_clock_skew) is tolerated.
	near := request(transfer(500), session("aal2", -30), null)
	authz.decision.reason == "session_satisfies" with input as near
}

test_aal1_session_acr_too_low if {
	req := request(transfer(500), session("aal1", 10), null)
	d := authz.decision with input as req
	d.result == "step_up"
	d.reason == "acr_too_low"
	d.reasons == ["acr_too_low"]
	d.requirement == {"acr_values": ["aal2", "aal3"], "max_age": 300}

	# An acr stepguard does not know has rank -1: always too low.
	weird := request(transfer(500), human({"acr": "urn:acme:weird", "acr_rank": -1}), null)
	authz.decision.reason == "acr_too_low" with input as weird
}

test_transfer_just_below_first_tier_uses_base if {
	req := request(transfer(999.99), session("aal2", 100), null)
	d := authz.decision with input as req
	d.result == "allow"
	d.requirement.max_age == 300
}

test_transfer_tier_1000_requires_fresh_step_up if {
	# The session is aal2 and 10 s old: still not a step-up for THIS transfer.
	req := request(transfer(1000), session("aal2", 10), null)
	d := authz.decision with input as req
	d == {
		"result": "step_up",
		"reason": "fresh_step_up_required",
		"reasons": ["fresh_step_up_required", "value_tier"],
		"requirement": {"acr_values": ["aal2", "aal3"], "max_age": 0},
		"grant": {"single_use": true, "ttl": 120},
	}
}

test_transfer_tier_10000_requires_aal3 if {
	req := request(transfer(25000), session("aal2", 10), null)
	d := authz.decision with input as req
	d.result == "step_up"
	d.reason == "acr_too_low"
	d.reasons == ["acr_too_low", "fresh_step_up_required", "value_tier"]
	d.requirement == {"acr_values": ["aal3"], "max_age": 0}
}

test_aal3_at_login_does_not_approve_large_transfer if {
	req := request(transfer(25000), session("aal3", 1), null)
	d := authz.decision with input as req
	d.result == "step_up"
	d.reason == "fresh_step_up_required"
}

test_large_transfer_with_aal3_grant_allows if {
	req := request(transfer(25000), session("aal2", 1000), grant("aal3", 20, 1))
	d := authz.decision with input as req
	d == {
		"result": "allow",
		"reason": "grant_satisfies",
		"reasons": ["grant_satisfies", "value_tier"],
		"requirement": {"acr_values": ["aal3"], "max_age": 0},
		"used_grant": true,
	}
}

test_large_transfer_aal2_grant_is_insufficient if {
	req := request(transfer(25000), session("aal2", 10), grant("aal2", 5, 1))
	d := authz.decision with input as req
	d.result == "step_up"
	d.reason == "acr_too_low"
	"grant_insufficient" in d.reasons
}

test_unknown_or_negative_value_applies_highest_tier if {
	# stepguard could not read the amount: assume the worst.
	unknown := request(transfer(null), session("aal2", 10), null)
	d := authz.decision with input as unknown
	d.result == "step_up"
	d.requirement == {"acr_values": ["aal3"], "max_age": 0}
	"value_tier" in d.reasons

	negative := request(transfer(-50000), session("aal2", 10), null)
	authz.decision.requirement == {"acr_values": ["aal3"], "max_age": 0} with input as negative

	# The currency is known: not an unknown_currency case.
	not "unknown_currency" in d.reasons
}

# ===========================================================================
# Value tiers per currency (shipped: EUR and USD 1000 / 10000, GBP 800 / 8000,
# CHF 900 / 9000, JPY 150000 / 1500000; each aal2 / 0, then aal3 / 0)
# ===========================================================================

test_gbp_999_is_raised_by_the_gbp_tier if {
	# 999 GBP is worth more than 1000 EUR: the GBP tier (800) raises it.
	req := request(transfer_in(999, "GBP"), session("aal2", 10), null)
	d := authz.decision with input as req
	d == {
		"result": "step_up",
		"reason": "fresh_step_up_required",
		"reasons": ["fresh_step_up_required", "value_tier"],
		"requirement": {"acr_values": ["aal2", "aal3"], "max_age": 0},
		"grant": {"single_use": true, "ttl": 120},
	}

	# Below the GBP tier: the base requirement, met by the session.
	small := request(transfer_in(799, "GBP"), session("aal2", 10), null)
	authz.decision.reasons == ["session_satisfies"] with input as small

	# The GBP upper tier.
	large := request(transfer_in(8000, "GBP"), session("aal2", 10), null)
	authz.decision.requirement == {"acr_values": ["aal3"], "max_age": 0} with input as large

	# The same 999 in EUR stays under the EUR tier (1000).
	eur := request(transfer(999), session("aal2", 10), null)
	authz.decision.reason == "session_satisfies" with input as eur
}

test_jpy_150000_is_placed_among_jpy_tiers if {
	# 150000 JPY (about 1000 EUR): the JPY 150000 tier, aal2 / 0, not the
	# EUR 10000 tier's aal3.
	req := request(transfer_in(150000, "JPY"), session("aal2", 10), null)
	d := authz.decision with input as req
	d.result == "step_up"
	d.reasons == ["fresh_step_up_required", "value_tier"]
	d.requirement == {"acr_values": ["aal2", "aal3"], "max_age": 0}

	# The same number in EUR is the aal3 tier.
	eur := request(transfer(150000), session("aal2", 10), null)
	authz.decision.requirement == {"acr_values": ["aal3"], "max_age": 0} with input as eur

	# Below the JPY tier (about 990 EUR): the session does.
	small := request(transfer_in(149999, "JPY"), session("aal2", 10), null)
	authz.decision.reason == "session_satisfies" with input as small

	large := request(transfer_in(1500000, "JPY"), session("aal2", 10), null)
	authz.decision.requirement == {"acr_values": ["aal3"], "max_age": 0} with input as large
}

test_unknown_currency_takes_strictest_tier if {
	# Not a key of tiers: the strictest tier of all currencies, even for 1.
	req := request(transfer_in(1, "XXX"), session("aal2", 10), null)
	d := authz.decision with input as req
	d == {
		"result": "step_up",
		"reason": "acr_too_low",
		"reasons": ["acr_too_low", "fresh_step_up_required", "value_tier", "unknown_currency"],
		"requirement": {"acr_values": ["aal3"], "max_age": 0},
		"grant": {"single_use": true, "ttl": 120},
	}

	# Codes are matched exactly, upper case; a currency that is not a string
	# (a numeric ISO code, a list) is unknown too.
	every currency in ["eur", "Eur", " EUR", "", 978, ["EUR"], {"EUR": true}, true] {
		odd := request(transfer_in(1, currency), session("aal2", 10), null)
		e := authz.decision with input as odd
		e.requirement == {"acr_values": ["aal3"], "max_age": 0}
		"unknown_currency" in e.reasons
	}

	# An aal3 grant for this transaction satisfies it.
	granted := request(transfer_in(1, "XXX"), session("aal2", 10), grant("aal3", 5, 1))
	g := authz.decision with input as granted
	g.reasons == ["grant_satisfies", "value_tier", "unknown_currency"]
}

test_null_currency_takes_strictest_tier if {
	# No currency field configured for the route, or the body has none.
	req := request(transfer_in(1, null), session("aal3", 10), null)
	d := authz.decision with input as req
	d.result == "step_up"
	d.reason == "fresh_step_up_required"
	d.reasons == ["fresh_step_up_required", "value_tier", "unknown_currency"]
	d.requirement == {"acr_values": ["aal3"], "max_age": 0}

	# And with no value either.
	none := request(transfer_in(null, null), session("aal2", 10), null)
	authz.decision.requirement == {"acr_values": ["aal3"], "max_age": 0} with input as none

	# A missing currency field is the same.
	act := object.remove(transfer_in(1, null), ["currency"])
	missing := request(act, session("aal2", 10), null)
	authz.decision.requirement == {"acr_values": ["aal3"], "max_age": 0} with input as missing
}

test_strictest_tier_is_by_requirement_not_min_value if {
	# The highest min_value is not the strictest tier: min_values are not
	# comparable across currencies, nor ordered by strictness. The strictest
	# requirement is the highest acr and the smallest max_age among the tiers.
	reqs := {"default": {"acr": "aal1", "max_age": 900, "tiers": {
		"EUR": [{"min_value": 10, "acr": "aal3", "max_age": 600}, {"min_value": 1000, "acr": "aal2", "max_age": 0}],
		"JPY": [{"min_value": 1000000, "acr": "aal2", "max_age": 300}],
		"XTS": [],
	}}}

	# Unknown currency: every tier of every currency, combined.
	unknown := request(action("x.y", {"value": 5, "currency": "XXX"}), session("aal1", 10), null)
	d := authz.decision with input as unknown with data.stepguard.requirements as reqs
	d.requirement == {"acr_values": ["aal3"], "max_age": 0}
	d.reasons == ["acr_too_low", "fresh_step_up_required", "value_tier", "unknown_currency"]

	# Known currency, unknown value: every tier of that currency, combined.
	jpy := request(action("x.y", {"value": null, "currency": "JPY"}), session("aal1", 10), null)
	authz.decision.requirement == {"acr_values": ["aal2", "aal3"], "max_age": 300} with input as jpy with data.stepguard.requirements as reqs
	eur := request(action("x.y", {"value": -1, "currency": "EUR"}), session("aal1", 10), null)
	e := authz.decision with input as eur with data.stepguard.requirements as reqs
	e.requirement == {"acr_values": ["aal3"], "max_age": 0}
	not "unknown_currency" in e.reasons

	# Known currency and value: the highest tier reached, as always.
	placed := request(action("x.y", {"value": 5000, "currency": "EUR"}), session("aal1", 10), null)
	authz.decision.requirement == {"acr_values": ["aal2", "aal3"], "max_age": 0} with input as placed with data.stepguard.requirements as reqs

	# A currency with an empty list has no tiers: the base requirement.
	xts := request(action("x.y", {"value": 1000000, "currency": "XTS"}), session("aal1", 10), null)
	authz.decision.reasons == ["session_satisfies"] with input as xts with data.stepguard.requirements as reqs
}

test_unknown_currency_is_explained_only_when_tiers_raise if {
	# An action without tiers does not care about the currency.
	plain := request(action("profile.email_change", {"value": 5, "currency": "XXX"}), session("aal2", 10), null)
	authz.decision.reasons == ["session_satisfies"] with input as plain

	# Tiers no stricter than the base: nothing raised, nothing to explain.
	reqs := {"default": {"acr": "aal2", "max_age": 300, "tiers": {"EUR": [{"min_value": 1000, "acr": "aal1", "max_age": 600}]}}}
	weak := request(action("x.y", {"value": 5, "currency": "XXX"}), session("aal2", 10), null)
	authz.decision.reasons == ["session_satisfies"] with input as weak with data.stepguard.requirements as reqs
}

test_array_tiers_are_misconfigured if {
	# The old shape: one list compared with values in any currency.
	reqs := {"default": {"acr": "aal2", "max_age": 300, "tiers": [{"min_value": 1000, "acr": "aal3", "max_age": 0}]}}
	req := request(action("x.y", {"value": 5, "currency": "EUR"}), session("aal2", 10), null)
	msg := `requirement tiers must be an object keyed by currency (ISO 4217 code), e.g. {"EUR": [{"min_value": 1000, ...}]}`
	authz.misconfiguration == {msg} with input as req with data.stepguard.requirements as reqs

	# Any other non-object too.
	every bad in ["EUR", 1000, null, true] {
		r := {"default": {"acr": "aal2", "max_age": 300, "tiers": bad}}
		msg in authz.misconfiguration with input as req with data.stepguard.requirements as r
	}
}

test_bad_currency_key_is_misconfigured if {
	tier := [{"min_value": 1000, "acr": "aal3", "max_age": 0}]
	req := request(action("x.y", {"value": 5, "currency": "EUR"}), session("aal2", 10), null)
	every key in ["eur", "Eur", "EURO", "EU", "E1R", "E R", ""] {
		reqs := {"default": {"acr": "aal2", "max_age": 300, "tiers": {"EUR": tier, key: tier}}}
		msg := concat("", ["tiers key ", key, " must be an upper-case 3-letter ISO 4217 currency code"])
		authz.misconfiguration == {msg} with input as req with data.stepguard.requirements as reqs
	}

	# A currency's tiers must be a list.
	listless := {"default": {"acr": "aal2", "max_age": 300, "tiers": {"EUR": {"min_value": 1000}}}}
	"tiers.EUR must be a list of tiers" in authz.misconfiguration with input as req with data.stepguard.requirements as listless

	# Well-formed: the small EUR value is allowed on the session.
	good := {"default": {"acr": "aal2", "max_age": 300, "tiers": {"EUR": tier, "GBP": tier}}}
	authz.decision.reason == "session_satisfies" with input as req with data.stepguard.requirements as good
}

# ===========================================================================
# payments.approve, keys.export, iam.escalate: fresh, single-use step-ups
# ===========================================================================

test_approve_fresh_aal3_session_still_steps_up if {
	# Signed in with aal3 this very second: still not a step-up for THIS approval.
	req := request(approve, session("aal3", 0), null)
	d := authz.decision with input as req
	d == {
		"result": "step_up",
		"reason": "fresh_step_up_required",
		"reasons": ["fresh_step_up_required"],
		"requirement": {"acr_values": ["aal2", "aal3"], "max_age": 0},
		"grant": {"single_use": true, "ttl": 120},
	}
}

test_approve_with_single_use_grant_allows if {
	# The grant's age does not matter for max_age 0: it is bound to this
	# transaction, and its TTL is enforced by stepguard.
	req := request(approve, session("aal2", 5000), grant("aal2", 100, 1))
	d := authz.decision with input as req
	d.result == "allow"
	d.reason == "grant_satisfies"
	d.used_grant == true
	d.requirement == {"acr_values": ["aal2", "aal3"], "max_age": 0}
}

test_single_use_action_rejects_reusable_grant if {
	req := request(approve, session("aal2", 10), grant("aal2", 5, null))
	d := authz.decision with input as req
	d.result == "step_up"
	d.reasons == ["fresh_step_up_required", "grant_insufficient"]
}

test_spent_grant_is_not_accepted if {
	req := request(approve, session("aal2", 10), grant("aal2", 5, 0))
	d := authz.decision with input as req
	d.result == "step_up"
	"grant_insufficient" in d.reasons
}

test_keys_export_requires_fresh_aal3 if {
	req := request(keys_export, session("aal2", 10), null)
	d := authz.decision with input as req
	d == {
		"result": "step_up",
		"reason": "acr_too_low",
		"reasons": ["acr_too_low", "fresh_step_up_required"],
		"requirement": {"acr_values": ["aal3"], "max_age": 0},
		"grant": {"single_use": true, "ttl": 60},
	}
}

test_keys_export_with_aal3_grant_allows if {
	req := request(keys_export, session("aal2", 10), grant("aal3", 10, 1))
	d := authz.decision with input as req
	d.result == "allow"
	d.used_grant == true
}

test_iam_escalate_aal2_grant_is_insufficient if {
	req := request(iam_escalate, session("aal3", 10), grant("aal2", 10, 1))
	d := authz.decision with input as req
	d.result == "step_up"
	d.reason == "fresh_step_up_required"
	d.reasons == ["fresh_step_up_required", "grant_insufficient"]
	d.requirement == {"acr_values": ["aal3"], "max_age": 0}
}

# ===========================================================================
# profile.email_change: aal2 / 600 s, reusable grant (ttl 300)
# ===========================================================================

test_email_change_session_within_600_s_allows if {
	req := request(email_change, session("aal2", 550), null)
	d := authz.decision with input as req
	d.result == "allow"
	d.reason == "session_satisfies"
	d.requirement == {"acr_values": ["aal2", "aal3"], "max_age": 600}
}

test_email_change_step_up_mints_reusable_grant if {
	req := request(email_change, session("aal2", 700), null)
	d := authz.decision with input as req
	d.result == "step_up"
	d.reason == "session_too_old"
	d.grant == {"single_use": false, "ttl": 300}
}

test_email_change_reusable_grant_allows if {
	req := request(email_change, session("aal2", 5000), grant("aal2", 100, null))
	d := authz.decision with input as req
	d.result == "allow"
	d.reason == "grant_satisfies"
	d.used_grant == true
}

test_grant_older_than_max_age_is_insufficient if {
	req := request(email_change, session("aal2", 5000), grant("aal2", 601, null))
	d := authz.decision with input as req
	d.result == "step_up"
	d.reasons == ["session_too_old", "grant_insufficient"]
}

test_grant_is_preferred_over_session if {
	req := request(email_change, session("aal2", 10), grant("aal2", 10, 2))
	d := authz.decision with input as req
	d.reason == "grant_satisfies"
	d.used_grant == true
}

# ===========================================================================
# Defaults and overrides
# ===========================================================================

test_unlisted_action_uses_default_requirement if {
	ok := request(action("statements.export", {}), session("aal2", 299), null)
	authz.decision.result == "allow" with input as ok

	old := request(action("statements.export", {}), session("aal2", 301), null)
	d := authz.decision with input as old
	d.result == "step_up"
	d.requirement == {"acr_values": ["aal2", "aal3"], "max_age": 300}
	d.grant == {"single_use": true, "ttl": 120}
}

test_irreversible_action_forces_fresh_single_use if {
	# email_change is reusable / 600 s in data; irreversible overrides both.
	req := request(action("profile.email_change", {"reversible": false}), session("aal2", 10), null)
	d := authz.decision with input as req
	d.result == "step_up"
	d.reason == "fresh_step_up_required"
	d.requirement.max_age == 0
	d.grant == {"single_use": true, "ttl": 300}
}

test_privileged_action_forces_fresh_step_up if {
	req := request(action("statements.export", {"privileged": true}), session("aal3", 1), null)
	d := authz.decision with input as req
	d.result == "step_up"
	d.reason == "fresh_step_up_required"
	d.grant.single_use == true
}

test_data_can_mark_action_privileged if {
	# The route did not flag the action; the data does, and wins.
	reqs := {"default": {"acr": "aal2", "max_age": 300, "single_use": false, "privileged": true}}
	req := request(action("x.y", {}), session("aal2", 1), null)
	d := authz.decision with input as req with data.stepguard.requirements as reqs
	d.result == "step_up"
	d.reason == "fresh_step_up_required"
	d.requirement.max_age == 0
	d.grant == {"single_use": true, "ttl": 120}
}

test_tier_never_relaxes_base_requirement if {
	reqs := {"default": {
		"acr": "aal2",
		"max_age": 60,
		"tiers": {"EUR": [{"min_value": 10, "acr": "aal1", "max_age": 900}]},
	}}
	req := request(action("x.y", {"value": 50, "currency": "EUR"}), session("aal2", 30), null)
	d := authz.decision with input as req with data.stepguard.requirements as reqs
	d.result == "allow"
	d.reasons == ["session_satisfies"]
	d.requirement == {"acr_values": ["aal2", "aal3"], "max_age": 60}
}

# ===========================================================================
# Administrators: stricter thresholds than standard users
# (shipped data: roles.admin = ["admin", "platform-admin"];
#  payments.transfer admin aal3 / 120 s, default admin aal3 / 120 s)
# ===========================================================================

test_admin_needs_aal3_where_a_standard_user_needs_aal2 if {
	req := request(transfer(500), admin_session("aal2", 10), null)
	d := authz.decision with input as req
	d == {
		"result": "step_up",
		"reason": "acr_too_low",
		"reasons": ["acr_too_low", "admin_threshold"],
		"requirement": {"acr_values": ["aal3"], "max_age": 120},
		"grant": {"single_use": true, "ttl": 120},
	}

	# The same session without the admin role is enough.
	std := request(transfer(500), session("aal2", 10), null)
	authz.decision.reason == "session_satisfies" with input as std
}

test_admin_recent_aal3_session_allows if {
	req := request(transfer(500), admin_session("aal3", 120), null)
	d := authz.decision with input as req
	d == {
		"result": "allow",
		"reason": "session_satisfies",
		"reasons": ["session_satisfies", "admin_threshold"],
		"requirement": {"acr_values": ["aal3"], "max_age": 120},
		"used_grant": false,
	}
}

test_admin_session_age_is_shorter if {
	# 200 s is fine for a standard user (300 s), not for an admin (120 s).
	req := request(transfer(500), admin_session("aal3", 200), null)
	d := authz.decision with input as req
	d.result == "step_up"
	d.reason == "session_too_old"
	d.requirement.max_age == 120

	std := request(transfer(500), session("aal3", 200), null)
	authz.decision.result == "allow" with input as std
}

test_admin_thresholds_combine_with_value_tiers if {
	# tier >= 1000: aal2 / 0; admin: aal3 / 120 -> aal3 / 0.
	req := request(transfer(5000), admin_session("aal3", 1), null)
	d := authz.decision with input as req
	d.result == "step_up"
	d.reasons == ["fresh_step_up_required", "admin_threshold", "value_tier"]
	d.requirement == {"acr_values": ["aal3"], "max_age": 0}
}

test_default_admin_thresholds_cover_unlisted_actions if {
	req := request(action("statements.export", {}), admin_session("aal2", 10), null)
	d := authz.decision with input as req
	d.result == "step_up"
	d.requirement == {"acr_values": ["aal3"], "max_age": 120}

	# An action's own admin entry wins over the default's.
	email := request(email_change, admin_session("aal3", 250), null)
	authz.decision.requirement == {"acr_values": ["aal3"], "max_age": 300} with input as email

	# A listed action without an admin entry gets the default's.
	reqs := {
		"default": {"acr": "aal2", "max_age": 300, "admin": {"acr": "aal3", "max_age": 60}},
		"actions": {"x.y": {"acr": "aal1", "max_age": 600}},
	}
	listed := request(action("x.y", {}), admin_session("aal3", 100), null)
	d2 := authz.decision with input as listed with data.stepguard.requirements as reqs
	d2.reason == "session_too_old"
	d2.requirement == {"acr_values": ["aal3"], "max_age": 60}
}

test_admin_role_comes_from_data if {
	req := request(transfer(500), admin_session("aal2", 10), null)
	d := authz.decision with input as req with data.stepguard.roles as {"admin": ["superuser"]}
	d.reason == "session_satisfies"
	not "admin_threshold" in d.reasons
}

test_admin_thresholds_never_relax if {
	reqs := {"default": {"acr": "aal2", "max_age": 60, "admin": {"acr": "aal1", "max_age": 900}}}
	old := request(action("x.y", {}), admin_session("aal2", 100), null)
	d := authz.decision with input as old with data.stepguard.requirements as reqs
	d.result == "step_up"
	d.requirement == {"acr_values": ["aal2", "aal3"], "max_age": 60}
	d.reasons == ["session_too_old"]
}

test_bad_admin_entry_is_misconfigured if {
	reqs := {"default": {"acr": "aal2", "max_age": 60, "admin": {"acr": "aal9"}}}

	# Misconfigured for everyone, not only for administrators.
	req := request(action("x.y", {}), session("aal3", 1), null)
	"admin acr is not on the acr ladder" in authz.misconfiguration with input as req with data.stepguard.requirements as reqs

	not_object := {"default": {"acr": "aal2", "max_age": 60, "admin": true}}
	count(authz.misconfiguration) > 0 with input as req with data.stepguard.requirements as not_object
}
