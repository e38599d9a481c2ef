# Unit tests for stepguard.authz, run with `opa test policies/` (or regorus,
# see docs/policy.md). They use the shipped policies/data.json unless a test
# overrides data.stepguard.requirements.
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
	},
	changes,
)

transfer(value) := action("payments.transfer", {"risk": "high", "value": value, "currency": "EUR"})

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
		"context": {"source_ip": "203.0.113.5", "peer_principal": null, "device_trust": null},
	},
}

# ===========================================================================
# payments.transfer: aal2 / 300 s; >= 1000 -> aal2 / 0; >= 10000 -> aal3 / 0
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
		"tiers": [{"min_value": 10, "acr": "aal1", "max_age": 900}],
	}}
	req := request(action("x.y", {"value": 50}), session("aal2", 30), null)
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
	d := authz.decision with input as req
	d.result == "step_up"
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
	reqs := {"default": {"acr": "aal2", "max_age": 300, "tiers": [{"min_value": 1000, "acr": "aal9"}]}}
	req := request(action("x.y", {"value": 5}), session("aal2", 10), null)
	d := authz.decision with input as req with data.stepguard.requirements as reqs
	d.reason == "policy_misconfigured"
	"tier acr is not on the acr ladder" in authz.misconfiguration with input as req with data.stepguard.requirements as reqs
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
