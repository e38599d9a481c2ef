# Unit tests for stepguard.authz, run with `stepguard policy test policies`
# (regorus) or `opa test policies/`. They use the shipped policies/data.json
# unless a test overrides a block of it (data.stepguard.requirements,
# .signals, .delegation, .break_glass, ...).
package stepguard.authz_test

import rego.v1

import data.stepguard.authz

# ===========================================================================
# Fixtures
# ===========================================================================

now := 1700000000

ladder := ["aal1", "aal2", "aal3"]

# alice signed in with aal2 (password + OTP) 100 seconds ago.
alice := {
	"kind": "human",
	"id": "alice",
	"issuer": "https://idp.bank.example",
	"acr": "aal2",
	"acr_rank": 1,
	"amr": ["pwd", "otp"],
	"auth_time": now - 100,
	"session_age": 100,
	"roles": ["customer"],
	"scopes": ["payments"],
	"client_id": "web",
	"sid": "s-1",
	"act": [],
	"workload": null,
	"claims": {"sub": "alice", "acr": "aal2"},
}

# human(changes) is alice with some fields changed.
human(changes) := object.union(alice, changes)

# A signed-in human whose session is `age` seconds old at level `acr`.
session(acr, age) := human({
	"acr": acr,
	"acr_rank": rank(acr),
	"auth_time": now - age,
	"session_age": age,
})

rank(acr) := [i | some i, a in ladder; a == acr][0]

payments_workload := {
	"kind": "workload",
	"id": "spiffe://bank.example/ns/batch/sa/payouts",
	"issuer": null,
	"acr": null,
	"acr_rank": -1,
	"amr": [],
	"auth_time": null,
	"session_age": null,
	"roles": [],
	"scopes": [],
	"client_id": null,
	"sid": null,
	"act": [],
	"workload": {"spiffe_id": "spiffe://bank.example/ns/batch/sa/payouts"},
	"claims": {},
}

anonymous := {
	"kind": "anonymous",
	"id": null,
	"issuer": null,
	"acr": null,
	"acr_rank": -1,
	"amr": [],
	"auth_time": null,
	"session_age": null,
	"roles": [],
	"scopes": [],
	"client_id": null,
	"sid": null,
	"act": [],
	"workload": null,
	"claims": {},
}

# action(name, changes): a reversible, unprivileged action without a value.
action(name, changes) := object.union(
	{
		"name": name,
		"risk": "medium",
		"reversible": true,
		"privileged": false,
		"value": null,
		"currency": null,
		"mode": "enforce",
	},
	changes,
)

transfer(value) := transfer_in(value, "EUR")

# A transfer of `value` in `currency` (an ISO 4217 code, or anything else).
transfer_in(value, currency) := action("payments.transfer", {"risk": "high", "value": value, "currency": currency})

approve := action("payments.approve", {"risk": "high"})

keys_export := action("keys.export", {"risk": "critical", "reversible": false, "privileged": true})

iam_escalate := action("iam.escalate", {"risk": "critical", "privileged": true})

email_change := action("profile.email_change", {})

# A transaction-bound grant obtained `age` seconds ago at level `acr`.
grant(acr, age, uses_left) := {
	"acr": acr,
	"acr_rank": rank(acr),
	"amr": ["pwd", "hwk"],
	"auth_time": now - age,
	"method": "oidc",
	"challenge_id": "ch-1",
	"issued_at": now - age,
	"uses_left": uses_left,
}

# request(act, subj, g): the ext_authz input stepguard builds.
request(act, subj, g) := {
	"attributes": {
		"source": {
			"address": {"socketAddress": {"address": "10.0.0.7", "portValue": 51234}},
			"principal": "spiffe://bank.example/ns/edge/sa/gateway",
		},
		"destination": {"address": {"socketAddress": {"address": "10.0.0.9", "portValue": 8080}}},
		"request": {"http": {
			"id": "req-1",
			"method": "POST",
			"headers": {"content-type": "application/json"},
			"path": "/v1/accounts/A1/transfers",
			"host": "api.bank.example",
			"scheme": "https",
			"protocol": "HTTP/1.1",
		}},
		"contextExtensions": {},
	},
	"parsed_path": ["v1", "accounts", "A1", "transfers"],
	"parsed_query": {},
	"parsed_body": {"amount": 100},
	"truncated_body": false,
	"version": {"encoding": "protojson", "ext_authz": "v3"},
	"stepguard": {
		"now": now,
		"acr_ladder": ladder,
		"action": act,
		"subject": subj,
		"transaction": {"digest": "k1:Zm9v", "key_id": "k1", "bound": {"path.account": "A1", "body.amount": "100"}},
		"grant": g,
		"context": known_context,
	},
}

# A request from a network alice used before, at a normal pace, with no
# device posture reported and no break-glass justification.
known_context := {
	"source_ip": "203.0.113.5",
	"peer_principal": null,
	"network": "203.0.113.0/24",
	"new_network": false,
	"velocity": {"window_secs": 3600, "count": 1},
	"device_trust": null,
	"break_glass_justification": null,
}

# with_context(req, changes): req with some context fields changed.
with_context(req, changes) := object.union(req, {"stepguard": {"context": changes}})

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
	d := authz.decision with input as req with data.stepguard.requirements as reqs
	d == {
		"result": "deny",
		"reason": "policy_misconfigured",
		"reasons": ["policy_misconfigured"],
		"status": 503,
	}
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
		d := authz.decision with input as req with data.stepguard.requirements as reqs
		d.reason == "policy_misconfigured"
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
# Deny: subject kinds and shared accounts
# ===========================================================================

test_anonymous_is_denied_401 if {
	req := request(transfer(500), anonymous, null)
	d := authz.decision with input as req
	d == {
		"result": "deny",
		"reason": "authentication_required",
		"reasons": ["authentication_required"],
		"status": 401,
	}
}

test_workload_is_denied_never_stepped_up if {
	# Even with a (misrouted) grant, a workload gets no human prompt.
	req := request(approve, payments_workload, grant("aal3", 1, 1))
	d := authz.decision with input as req
	d == {
		"result": "deny",
		"reason": "workload_requires_transaction_token",
		"reasons": ["workload_requires_transaction_token"],
		"status": 403,
	}
}

test_shared_account_privileged_without_actor_is_denied if {
	shared := human({"claims": {"shared_account": true}, "act": []})
	req := request(keys_export, shared, grant("aal3", 1, 1))
	d := authz.decision with input as req
	d.result == "deny"
	d.reason == "shared_account_without_actor"
	d.status == 403
}

test_shared_account_with_actor_may_step_up if {
	shared := human({
		"claims": {"shared_account": true},
		"act": [{"sub": "bob", "iss": "https://idp.bank.example"}],
	})
	req := request(keys_export, shared, null)

	# The actor must also be allowed for the privileged action (delegation).
	d := authz.decision with input as req with data.stepguard.delegation as bob_may_export
	d.result == "step_up"
	d.reasons == ["acr_too_low", "fresh_step_up_required", "delegated"]
}

test_shared_account_unprivileged_action_is_not_denied if {
	shared := human({"claims": {"shared_account": true}, "act": []})
	req := request(transfer(500), shared, null)
	d := authz.decision with input as req
	d.result == "allow"
}

# ===========================================================================
# Deny: fail closed on misconfiguration and malformed input
# ===========================================================================

test_required_acr_not_on_ladder_is_misconfigured if {
	req := object.union(
		request(keys_export, session("aal2", 10), null),
		{"stepguard": {"acr_ladder": ["aal1", "aal2"]}},
	)
	d := authz.decision with input as req
	d == {
		"result": "deny",
		"reason": "policy_misconfigured",
		"reasons": ["policy_misconfigured"],
		"status": 503,
	}
}

test_bad_tier_acr_is_misconfigured_even_for_small_values if {
	reqs := {"default": {"acr": "aal2", "max_age": 300, "tiers": {"EUR": [{"min_value": 1000, "acr": "aal9"}]}}}
	req := request(action("x.y", {"value": 5, "currency": "EUR"}), session("aal2", 10), null)
	d := authz.decision with input as req with data.stepguard.requirements as reqs
	d.reason == "policy_misconfigured"
	"tier acr is not on the acr ladder" in authz.misconfiguration with input as req with data.stepguard.requirements as reqs

	# Also in another currency's list than the request's.
	other := {"default": {"acr": "aal2", "max_age": 300, "tiers": {
		"EUR": [{"min_value": 1000, "acr": "aal3"}],
		"GBP": [{"min_value": 800, "acr": "aal9"}],
	}}}
	authz.misconfiguration == {"tier acr is not on the acr ladder"} with input as req with data.stepguard.requirements as other
}

test_missing_requirements_data_fails_closed if {
	req := request(action("x.y", {}), session("aal3", 1), null)
	d := authz.decision with input as req with data.stepguard.requirements as {"actions": {}}
	d.result == "deny"
	d.status == 503
}

test_missing_privileged_flag_is_invalid_input if {
	# A missing flag must not silently relax the policy.
	act := object.remove(approve, ["privileged"])
	req := request(act, session("aal2", 10), grant("aal2", 1, 1))
	d := authz.decision with input as req
	d == {
		"result": "deny",
		"reason": "invalid_input",
		"reasons": ["invalid_input"],
		"status": 500,
	}
}

test_missing_fields_are_invalid_input if {
	# Each field the policy relies on, removed: a deny, whatever the engine
	# (OPA treats `not f(x)` with an undefined x differently from regorus).
	req := request(approve, session("aal2", 10), grant("aal2", 1, 1))
	every path in [
		"stepguard/now",
		"stepguard/action/name",
		"stepguard/action/reversible",
		"stepguard/subject/kind",
		"stepguard/subject/acr_rank",
		"stepguard/subject/roles",
		"stepguard/subject/claims",
		"stepguard/subject/act",
		"stepguard/transaction",
		"stepguard/grant/acr_rank",
		"stepguard/grant/auth_time",
	] {
		d := authz.decision with input as json.remove(req, [path])
		d.reason == "invalid_input"
	}

	# Workloads too.
	wl := request(transfer(100), txn_workload(txn_claims), null)
	every path in ["stepguard/subject/claims", "stepguard/subject/act", "stepguard/transaction/bound"] {
		authz.decision.reason == "invalid_input" with input as json.remove(wl, [path])
	}
}

test_missing_requirement_fields_are_misconfigured if {
	req := request(action("x.y", {}), session("aal3", 1), null)
	every reqs in [
		{"default": {"max_age": 300}},
		{"default": {"acr": "aal2"}},
		{"default": {"acr": "aal2", "max_age": 300, "tiers": {"EUR": ["big"]}}},
		{"default": {"acr": "aal2", "max_age": 300, "tiers": {"EUR": [{"acr": "aal3"}]}}},
		{"default": {"acr": "aal2", "max_age": 300, "tiers": {"EUR": [], "GBP": [{"min_value": "800"}]}}},
		{"default": {"acr": "aal2", "max_age": 300, "tiers": {"JPY": [{"min_value": 150000, "max_age": -1}]}}},
	] {
		d := authz.decision with input as req with data.stepguard.requirements as reqs
		d.reason == "policy_misconfigured"
	}
}

test_malformed_subject_or_action_is_invalid_input if {
	robot := request(transfer(500), human({"kind": "robot"}), null)
	authz.decision.reason == "invalid_input" with input as robot

	# stepguard never asks for non-sensitive routes; if it did, refuse.
	no_action := request(null, session("aal3", 1), null)
	authz.decision.reason == "invalid_input" with input as no_action
}

test_all_deny_reasons_are_listed if {
	# A workload calling a misconfigured action: both reasons, the first wins.
	req := request(action("x.y", {}), payments_workload, null)
	d := authz.decision with input as req with data.stepguard.requirements as {"actions": {}}
	d.reason == "workload_requires_transaction_token"
	d.reasons == ["workload_requires_transaction_token", "policy_misconfigured"]
}

# ===========================================================================
# Administrators: stricter thresholds than standard users
# (shipped data: roles.admin = ["admin", "platform-admin"];
#  payments.transfer admin aal3 / 120 s, default admin aal3 / 120 s)
# ===========================================================================

# An administrator whose session is `age` seconds old at level `acr`.
admin_session(acr, age) := object.union(session(acr, age), {"roles": ["customer", "admin"]})

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
	d := authz.decision with input as req with data.stepguard.requirements as reqs
	d.reason == "policy_misconfigured"
	"admin acr is not on the acr ladder" in authz.misconfiguration with input as req with data.stepguard.requirements as reqs

	not_object := {"default": {"acr": "aal2", "max_age": 60, "admin": true}}
	authz.decision.reason == "policy_misconfigured" with input as req with data.stepguard.requirements as not_object
}

# ===========================================================================
# Risk signals: a new network, high velocity or an untrusted device raises
# the requirement one step up the ladder (capped) with max_age 0
# ===========================================================================

test_new_network_raises_requirement if {
	req := with_context(request(transfer(500), session("aal2", 10), null), {"new_network": true})
	d := authz.decision with input as req
	d == {
		"result": "step_up",
		"reason": "acr_too_low",
		"reasons": ["acr_too_low", "fresh_step_up_required", "new_network"],
		"requirement": {"acr_values": ["aal3"], "max_age": 0},
		"grant": {"single_use": true, "ttl": 120},
	}
}

test_known_or_unknown_network_does_not_raise if {
	known := request(transfer(500), session("aal2", 10), null)
	authz.decision.reason == "session_satisfies" with input as known

	# null: no source address, or no baseline yet: not judged by default.
	unknown := with_context(known, {"network": null, "new_network": null})
	d := authz.decision with input as unknown
	d.reasons == ["session_satisfies"]
}

test_unknown_network_can_count_as_new if {
	signals := {"velocity_max": 10, "trusted_devices": ["trusted", "managed"], "unknown_network_is_new": true}
	unknown := with_context(request(transfer(500), session("aal2", 10), null), {"new_network": null})
	d := authz.decision with input as unknown with data.stepguard.signals as signals
	d.reasons == ["acr_too_low", "fresh_step_up_required", "new_network"]

	# A known network stays known.
	known := request(transfer(500), session("aal2", 10), null)
	authz.decision.reason == "session_satisfies" with input as known with data.stepguard.signals as signals

	bad := object.union(signals, {"unknown_network_is_new": "yes"})
	authz.decision.reason == "policy_misconfigured" with input as known with data.stepguard.signals as bad
}

test_login_step_up_never_satisfies_a_riskier_action if {
	# Signed in at aal3 one second ago, but from a new network: the raised
	# requirement has max_age 0, which only a step-up for THIS transaction meets.
	req := with_context(request(transfer(500), session("aal3", 1), null), {"new_network": true})
	d := authz.decision with input as req
	d.result == "step_up"
	d.reason == "fresh_step_up_required"
	d.requirement == {"acr_values": ["aal3"], "max_age": 0}
}

test_transaction_grant_satisfies_raised_requirement if {
	base := request(transfer(500), session("aal2", 10), grant("aal3", 30, 1))
	req := with_context(base, {"new_network": true})
	d := authz.decision with input as req
	d == {
		"result": "allow",
		"reason": "grant_satisfies",
		"reasons": ["grant_satisfies", "new_network"],
		"requirement": {"acr_values": ["aal3"], "max_age": 0},
		"used_grant": true,
	}

	# A grant at the unraised level does not.
	weak := with_context(request(transfer(500), session("aal2", 10), grant("aal2", 30, 1)), {"new_network": true})
	authz.decision.reasons == ["acr_too_low", "fresh_step_up_required", "new_network", "grant_insufficient"] with input as weak
}

test_high_velocity_raises_requirement if {
	# velocity_max is 10: the 11th sensitive request in the window raises.
	fast := with_context(request(transfer(500), session("aal2", 10), null), {"velocity": {"window_secs": 3600, "count": 11}})
	d := authz.decision with input as fast
	d.result == "step_up"
	d.reasons == ["acr_too_low", "fresh_step_up_required", "high_velocity"]
	d.requirement == {"acr_values": ["aal3"], "max_age": 0}

	at_limit := with_context(request(transfer(500), session("aal2", 10), null), {"velocity": {"window_secs": 3600, "count": 10}})
	authz.decision.reason == "session_satisfies" with input as at_limit
}

test_velocity_threshold_comes_from_data if {
	req := with_context(request(transfer(500), session("aal2", 10), null), {"velocity": {"window_secs": 3600, "count": 4}})
	authz.decision.reason == "acr_too_low" with input as req with data.stepguard.signals as {"velocity_max": 3}

	# Without a threshold, velocity is not judged.
	many := with_context(request(transfer(500), session("aal2", 10), null), {"velocity": {"window_secs": 3600, "count": 500}})
	authz.decision.reason == "session_satisfies" with input as many with data.stepguard.signals as {}
}

test_untrusted_device_raises_requirement if {
	base := request(transfer(500), session("aal2", 10), null)

	unmanaged := with_context(base, {"device_trust": "unmanaged"})
	d := authz.decision with input as unmanaged
	d.result == "step_up"
	d.reasons == ["acr_too_low", "fresh_step_up_required", "untrusted_device"]

	# An empty or unknown posture is not trusted either.
	empty := with_context(base, {"device_trust": ""})
	"untrusted_device" in authz.decision.reasons with input as empty

	trusted := with_context(base, {"device_trust": "managed"})
	authz.decision.reasons == ["session_satisfies"] with input as trusted

	# null: no posture component configured (or no header): not judged.
	not_configured := with_context(base, {"device_trust": null})
	authz.decision.reasons == ["session_satisfies"] with input as not_configured
}

test_signals_raise_once_and_cap_at_the_top if {
	all_signals := {"new_network": true, "velocity": {"window_secs": 60, "count": 99}, "device_trust": "unmanaged"}

	# On a four-level ladder, three signals still raise aal2 by one step.
	four := ["aal1", "aal2", "aal3", "aal4"]
	base := object.union(request(transfer(500), session("aal2", 10), null), {"stepguard": {"acr_ladder": four}})
	d := authz.decision with input as with_context(base, all_signals)
	d.requirement == {"acr_values": ["aal3", "aal4"], "max_age": 0}
	d.reasons == ["acr_too_low", "fresh_step_up_required", "new_network", "high_velocity", "untrusted_device"]

	# Already at the top (keys.export needs aal3): capped, still explained.
	top := with_context(request(keys_export, session("aal2", 10), null), all_signals)
	e := authz.decision with input as top
	e.requirement == {"acr_values": ["aal3"], "max_age": 0}
	"new_network" in e.reasons
}

test_raise_steps_come_from_data if {
	four := ["aal1", "aal2", "aal3", "aal4"]
	base := object.union(request(transfer(500), session("aal2", 10), null), {"stepguard": {"acr_ladder": four}})
	req := with_context(base, {"new_network": true})
	signals := {"velocity_max": 10, "trusted_devices": [], "raise_steps": 2}
	d := authz.decision with input as req with data.stepguard.signals as signals
	d.requirement == {"acr_values": ["aal4"], "max_age": 0}
}

test_signals_make_reusable_grants_single_use if {
	# email_change mints reusable grants; a step-up demanded by a signal does not.
	req := with_context(request(email_change, session("aal2", 10), null), {"new_network": true})
	d := authz.decision with input as req
	d.grant == {"single_use": true, "ttl": 300}

	reusable := with_context(request(email_change, session("aal2", 10), grant("aal3", 5, null)), {"new_network": true})
	"grant_insufficient" in authz.decision.reasons with input as reusable
}

test_context_without_signals_is_not_measured if {
	# The input before signals existed: only source_ip, peer_principal, device_trust.
	old := object.union(
		request(transfer(500), session("aal2", 10), null),
		{"stepguard": {"context": {"source_ip": null, "peer_principal": null, "device_trust": null}}},
	)
	old_shape := json.remove(old, ["stepguard/context/network", "stepguard/context/new_network", "stepguard/context/velocity", "stepguard/context/break_glass_justification"])
	authz.decision.reasons == ["session_satisfies"] with input as old_shape

	no_context := object.union(old, {"stepguard": {"context": null}})
	authz.decision.reasons == ["session_satisfies"] with input as no_context
}

test_malformed_signals_are_invalid_input if {
	base := request(transfer(500), session("aal2", 10), null)
	authz.decision.reason == "invalid_input" with input as with_context(base, {"new_network": "yes"})
	authz.decision.reason == "invalid_input" with input as with_context(base, {"velocity": {"count": "many"}})
	authz.decision.reason == "invalid_input" with input as with_context(base, {"velocity": 12})
	authz.decision.reason == "invalid_input" with input as with_context(base, {"device_trust": 5})
	authz.decision.reason == "invalid_input" with input as with_context(base, {"break_glass_justification": ["x"]})
	authz.decision.reason == "invalid_input" with input as object.union(base, {"stepguard": {"context": "x"}})
}

test_misconfigured_signals_fail_closed if {
	req := request(transfer(500), session("aal3", 1), null)
	authz.decision.reason == "policy_misconfigured" with input as req with data.stepguard.signals as {"velocity_max": "ten"}
	authz.decision.reason == "policy_misconfigured" with input as req with data.stepguard.signals as {"trusted_devices": "managed"}
	authz.decision.reason == "policy_misconfigured" with input as req with data.stepguard.signals as {"raise_steps": 0}
	authz.decision.reason == "policy_misconfigured" with input as req with data.stepguard.signals as ["x"]
}

# ===========================================================================
# Workloads: transaction tokens, never a prompt
# ===========================================================================

# Claims of a transaction token for the fixture's transfer (A1, 100), minted
# 10 s ago for 60 s.
txn_claims := {
	"sub": "spiffe://bank.example/ns/batch/sa/payouts",
	"txn": "txn-7c1d",
	"iat": now - 10,
	"exp": now + 50,
	"tctx": {"action": "payments.transfer", "fields": {"path.account": "A1", "body.amount": "100"}},
}

# The payouts workload presenting a token with `claims`.
txn_workload(claims) := object.union(payments_workload, {"claims": claims})

test_workload_with_matching_transaction_token_allows if {
	req := request(transfer(100), txn_workload(txn_claims), null)
	d := authz.decision with input as req
	d == {
		"result": "allow",
		"reason": "transaction_token_satisfies",
		"reasons": ["transaction_token_satisfies"],
		"used_grant": false,
	}
}

test_workload_token_for_another_transaction_is_refused if {
	# Replayed on another payee/amount: the bound values differ.
	other := object.union(txn_claims, {"tctx": {"fields": {"body.amount": "10000"}}})
	req := request(transfer(100), txn_workload(other), null)
	d := authz.decision with input as req
	d == {
		"result": "deny",
		"reason": "transaction_token_mismatch",
		"reasons": ["transaction_token_mismatch"],
		"status": 403,
	}

	# Minted for another action.
	approve_token := object.union(txn_claims, {"tctx": {"action": "payments.approve"}})
	authz.decision.reason == "transaction_token_mismatch" with input as request(transfer(100), txn_workload(approve_token), null)

	# Missing a bound field, or naming a field this transaction does not bind.
	partial := object.union(txn_claims, {"tctx": {"action": "payments.transfer", "fields": {"path.account": "A1"}}})
	missing := json.remove(partial, ["tctx/fields/body.amount"])
	authz.decision.reason == "transaction_token_mismatch" with input as request(transfer(100), txn_workload(missing), null)
	extra := object.union(txn_claims, {"tctx": {"fields": {"body.payee": "mallory"}}})
	authz.decision.reason == "transaction_token_mismatch" with input as request(transfer(100), txn_workload(extra), null)

	# Numbers are compared as the bound text: 100 is not "100".
	number := object.union(txn_claims, {"tctx": {"fields": {"body.amount": 100}}})
	authz.decision.reason == "transaction_token_mismatch" with input as request(transfer(100), txn_workload(number), null)

	# No tctx at all.
	no_tctx := json.remove(txn_claims, ["tctx"])
	authz.decision.reason == "transaction_token_mismatch" with input as request(transfer(100), txn_workload(no_tctx), null)
}

test_workload_token_matches_unsent_fields_as_null if {
	# The request does not carry body.memo (bound to null); the token need not name it.
	base := request(transfer(100), txn_workload(txn_claims), null)
	req := object.union(base, {"stepguard": {"transaction": {"bound": {"body.memo": null}}}})
	authz.decision.reason == "transaction_token_satisfies" with input as req

	# But a token that pins a value for it does not match.
	memo := object.union(txn_claims, {"tctx": {"fields": {"body.memo": "rent"}}})
	pinned := object.union(request(transfer(100), txn_workload(memo), null), {"stepguard": {"transaction": {"bound": {"body.memo": null}}}})
	authz.decision.reason == "transaction_token_mismatch" with input as pinned
}

test_long_lived_transaction_token_is_refused if {
	long := object.union(txn_claims, {"iat": now - 10, "exp": now + 3590})
	d := authz.decision with input as request(transfer(100), txn_workload(long), null)
	d.result == "deny"
	d.reason == "transaction_token_too_long_lived"
	d.status == 403

	# Exactly the maximum (300 s) is accepted.
	limit := object.union(txn_claims, {"iat": now - 100, "exp": now + 200})
	authz.decision.result == "allow" with input as request(transfer(100), txn_workload(limit), null)

	# An unknown lifetime is not short.
	no_iat := json.remove(txn_claims, ["iat"])
	authz.decision.reason == "transaction_token_too_long_lived" with input as request(transfer(100), txn_workload(no_iat), null)
	backwards := object.union(txn_claims, {"iat": now + 50, "exp": now - 10})
	"transaction_token_too_long_lived" in authz.decision.reasons with input as request(transfer(100), txn_workload(backwards), null)

	# The maximum comes from data.
	authz.decision.reason == "transaction_token_too_long_lived" with input as request(transfer(100), txn_workload(txn_claims), null)
		with data.stepguard.workloads as {"max_token_lifetime": 30}
}

test_expired_transaction_token_is_refused if {
	old := object.union(txn_claims, {"iat": now - 400, "exp": now - 200})
	d := authz.decision with input as request(transfer(100), txn_workload(old), null)
	d.reason == "transaction_token_expired"
	d.status == 403
}

test_workloads_are_never_prompted if {
	# A matching token on a privileged action: allowed without a step-up;
	# a misrouted grant is not used.
	export_token := object.union(txn_claims, {"tctx": {"action": "keys.export"}})
	ok := request(keys_export, txn_workload(export_token), grant("aal3", 1, 1))
	d := authz.decision with input as ok
	d.result == "allow"
	d.used_grant == false

	# Risk signals are about humans; they never turn a workload into a prompt.
	signals := with_context(request(transfer(100), txn_workload(txn_claims), null), {"new_network": true, "device_trust": "unmanaged"})
	authz.decision.reasons == ["transaction_token_satisfies"] with input as signals

	# Whatever is wrong, a workload is denied, never stepped up.
	every claims in [{}, object.union(txn_claims, {"txn": ""}), object.union(txn_claims, {"exp": now + 99999})] {
		authz.decision.result == "deny" with input as request(transfer(100), txn_workload(claims), null)
	}
}

test_workload_token_with_misconfigured_lifetime_fails_closed if {
	req := request(transfer(100), txn_workload(txn_claims), null)
	d := authz.decision with input as req with data.stepguard.workloads as {"max_token_lifetime": "5m"}
	d.result == "deny"
	d.reasons == ["transaction_token_too_long_lived", "policy_misconfigured"]
}

# ===========================================================================
# Delegation: the outermost actor of the RFC 8693 chain is accountable
# ===========================================================================

idp := "https://idp.bank.example"

bob_may_export := {"allowed_actors": {"keys.export": [{"sub": "bob", "iss": idp}]}}

# alice's token, used by `chain` (outermost actor first).
delegated(chain) := human({"act": chain})

test_delegated_privileged_action_needs_an_allowed_actor if {
	req := request(keys_export, delegated([{"sub": "bob", "iss": idp}]), grant("aal3", 1, 1))

	# Shipped data allows nobody: privileged actions are not delegated.
	d := authz.decision with input as req
	d == {
		"result": "deny",
		"reason": "delegation_actor_not_allowed",
		"reasons": ["delegation_actor_not_allowed"],
		"status": 403,
	}

	e := authz.decision with input as req with data.stepguard.delegation as bob_may_export
	e.result == "allow"
	e.reasons == ["grant_satisfies", "delegated"]
}

test_outermost_actor_is_accountable if {
	# mallory is acting (outermost); bob acted before her: mallory is checked.
	mallory_now := request(keys_export, delegated([{"sub": "mallory", "iss": idp}, {"sub": "bob", "iss": idp}]), null)
	authz.decision.reason == "delegation_actor_not_allowed" with input as mallory_now with data.stepguard.delegation as bob_may_export

	bob_now := request(keys_export, delegated([{"sub": "bob", "iss": idp}, {"sub": "mallory", "iss": idp}]), null)
	authz.decision.result == "step_up" with input as bob_now with data.stepguard.delegation as bob_may_export
}

test_actor_issuer_defaults_to_the_token_issuer if {
	# No iss on the actor: it is in the namespace of alice's issuer.
	no_iss := request(keys_export, delegated([{"sub": "bob", "iss": null}]), null)
	authz.decision.result == "step_up" with input as no_iss with data.stepguard.delegation as bob_may_export

	# The same sub from another issuer is another actor.
	elsewhere := request(keys_export, delegated([{"sub": "bob", "iss": "https://evil.example"}]), null)
	authz.decision.reason == "delegation_actor_not_allowed" with input as elsewhere with data.stepguard.delegation as bob_may_export

	# An actor without a sub is nobody in particular.
	anonymous_actor := request(keys_export, delegated([{"sub": null, "iss": idp}]), null)
	authz.decision.reason == "delegation_actor_not_allowed" with input as anonymous_actor with data.stepguard.delegation as bob_may_export
}

test_delegation_of_unprivileged_actions_is_restricted_only_when_listed if {
	req := request(transfer(500), delegated([{"sub": "carol", "iss": idp}]), null)
	d := authz.decision with input as req
	d.result == "allow"
	d.reasons == ["session_satisfies", "delegated"]

	listed := {"allowed_actors": {"payments.transfer": [{"sub": "bob", "iss": idp}]}}
	authz.decision.reason == "delegation_actor_not_allowed" with input as req with data.stepguard.delegation as listed

	# Without a chain there is nothing to check.
	direct := request(transfer(500), session("aal2", 10), null)
	authz.decision.result == "allow" with input as direct with data.stepguard.delegation as listed
}

test_delegated_workload_is_checked_too if {
	# An agent (workload) acting for a human through a chain.
	export_token := object.union(txn_claims, {"tctx": {"action": "keys.export"}})
	agent := object.union(txn_workload(export_token), {"act": [{"sub": "agent-7", "iss": idp}]})
	req := request(keys_export, agent, null)
	authz.decision.reason == "delegation_actor_not_allowed" with input as req

	allowed := {"allowed_actors": {"keys.export": [{"sub": "agent-7", "iss": idp}]}}
	d := authz.decision with input as req with data.stepguard.delegation as allowed
	d.reasons == ["transaction_token_satisfies", "delegated"]
}

test_malformed_delegation_settings_fail_closed if {
	req := request(transfer(500), session("aal2", 10), null)
	no_iss := {"allowed_actors": {"keys.export": [{"sub": "bob"}]}}
	authz.decision.reason == "policy_misconfigured" with input as req with data.stepguard.delegation as no_iss
	not_list := {"allowed_actors": {"keys.export": {"sub": "bob", "iss": idp}}}
	authz.decision.reason == "policy_misconfigured" with input as req with data.stepguard.delegation as not_list
}

# ===========================================================================
# Break-glass (shipped data: role "break-glass"; keys.export, iam.escalate;
# justification >= 20 characters; grant ttl 60 s)
# ===========================================================================

# An on-call engineer holding the break-glass role.
oncall(acr, age) := object.union(session(acr, age), {"id": "oncall-1", "roles": ["sre", "break-glass"]})

justification := "INC-4711: HSM key rotation failed, restoring signing"

test_break_glass_without_justification_is_denied if {
	req := request(keys_export, oncall("aal3", 10), grant("aal3", 1, 1))
	d := authz.decision with input as req
	d == {
		"result": "deny",
		"reason": "break_glass_justification_required",
		"reasons": ["break_glass_justification_required", "break_glass"],
		"status": 403,
		"severity": "high",
	}

	# Too short, once surrounding white space is ignored.
	short := with_context(req, {"break_glass_justification": "   fix it please          "})
	authz.decision.reason == "break_glass_justification_required" with input as short
}

test_break_glass_steps_up_to_the_top_with_a_short_single_use_grant if {
	req := with_context(request(iam_escalate, oncall("aal2", 10), null), {"break_glass_justification": justification})
	d := authz.decision with input as req
	d == {
		"result": "step_up",
		"reason": "acr_too_low",
		"reasons": ["acr_too_low", "fresh_step_up_required", "break_glass"],
		"requirement": {"acr_values": ["aal3"], "max_age": 0},
		"grant": {"single_use": true, "ttl": 60},
		"severity": "high",
	}

	# A fresh aal3 login is not enough: every use is a new step-up.
	fresh := with_context(request(iam_escalate, oncall("aal3", 0), null), {"break_glass_justification": justification})
	authz.decision.reason == "fresh_step_up_required" with input as fresh
}

test_break_glass_with_transaction_grant_allows if {
	req := with_context(request(keys_export, oncall("aal2", 10), grant("aal3", 5, 1)), {"break_glass_justification": justification})
	d := authz.decision with input as req
	d == {
		"result": "allow",
		"reason": "grant_satisfies",
		"reasons": ["grant_satisfies", "break_glass"],
		"requirement": {"acr_values": ["aal3"], "max_age": 0},
		"used_grant": true,
		"severity": "high",
	}
}

test_break_glass_always_demands_the_highest_acr if {
	# payments.approve needs aal2 normally; as a break-glass action, aal3.
	settings := {"roles": ["break-glass"], "actions": ["payments.approve"], "min_justification_length": 20, "grant_ttl": 60}
	req := with_context(request(approve, oncall("aal2", 10), grant("aal2", 5, 1)), {"break_glass_justification": justification})
	d := authz.decision with input as req with data.stepguard.break_glass as settings
	d.result == "step_up"
	d.requirement == {"acr_values": ["aal3"], "max_age": 0}
	d.reasons == ["acr_too_low", "fresh_step_up_required", "break_glass", "grant_insufficient"]
	d.grant == {"single_use": true, "ttl": 60}

	# The break-glass ttl never lengthens the action's own (approve: 120 s).
	long := object.union(settings, {"grant_ttl": 600})
	authz.decision.grant.ttl == 120 with input as req with data.stepguard.break_glass as long
}

test_break_glass_changes_nothing_for_unlisted_actions if {
	# The break-glass role on an action that is not listed: the normal
	# decision, no justification needed, no severity.
	req := request(transfer(500), oncall("aal2", 10), null)
	d := authz.decision with input as req
	d == {
		"result": "allow",
		"reason": "session_satisfies",
		"reasons": ["session_satisfies"],
		"requirement": {"acr_values": ["aal2", "aal3"], "max_age": 300},
		"used_grant": false,
	}
}

test_justification_without_the_role_changes_nothing if {
	req := with_context(request(keys_export, session("aal2", 10), null), {"break_glass_justification": justification})
	d := authz.decision with input as req
	d.reasons == ["acr_too_low", "fresh_step_up_required"]
	d.grant.ttl == 60
	not d.severity
}

test_break_glass_keeps_every_other_control if {
	# A shared break-glass account still needs an accountable actor.
	shared := object.union(oncall("aal3", 10), {"claims": {"shared_account": true}})
	req := with_context(request(keys_export, shared, grant("aal3", 1, 1)), {"break_glass_justification": justification})
	d := authz.decision with input as req
	d.reasons == ["shared_account_without_actor", "break_glass"]
	d.severity == "high"
}

test_malformed_break_glass_settings_fail_closed if {
	req := request(transfer(500), session("aal2", 10), null)
	authz.decision.reason == "policy_misconfigured" with input as req with data.stepguard.break_glass as {"roles": "break-glass"}
	authz.decision.reason == "policy_misconfigured" with input as req with data.stepguard.break_glass as {"min_justification_length": 0}
	authz.decision.reason == "policy_misconfigured" with input as req with data.stepguard.break_glass as {"grant_ttl": -1}
}

# ===========================================================================
# Dry run: the policy decides the same in shadow mode
# ===========================================================================

test_shadow_mode_decides_like_enforce if {
	cases := [
		request(transfer(500), session("aal2", 10), null),
		request(transfer(25000), session("aal2", 10), null),
		request(approve, session("aal2", 10), grant("aal2", 1, 1)),
		with_context(request(transfer(500), session("aal2", 10), null), {"new_network": true}),
		request(transfer(100), txn_workload(object.union(txn_claims, {"txn": ""})), null),
	]
	every req in cases {
		shadow := object.union(req, {"stepguard": {"action": {"mode": "shadow"}}})
		enforced := authz.decision with input as req
		shadowed := authz.decision with input as shadow
		shadowed == enforced
	}
}
