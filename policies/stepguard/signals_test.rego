# Unit tests for the risk signals (signals.rego).
# Run with `stepguard policy test policies` (regorus) or `opa test policies/`.
# The fixtures (inputs stepguard builds) are in decision_test.rego.
package stepguard.signals_test

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
	count(authz.misconfiguration) > 0 with input as known with data.stepguard.signals as bad
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
	count(authz.input_errors) > 0 with input as with_context(base, {"new_network": "yes"})
	count(authz.input_errors) > 0 with input as with_context(base, {"velocity": {"count": "many"}})
	count(authz.input_errors) > 0 with input as with_context(base, {"velocity": 12})
	count(authz.input_errors) > 0 with input as with_context(base, {"device_trust": 5})
	count(authz.input_errors) > 0 with input as with_context(base, {"break_glass_justification": ["x"]})
	count(authz.input_errors) > 0 with input as object.union(base, {"stepguard": {"context": "x"}})
}

test_misconfigured_signals_fail_closed if {
	req := request(transfer(500), session("aal3", 1), null)
	count(authz.misconfiguration) > 0 with input as req with data.stepguard.signals as {"velocity_max": "ten"}
	count(authz.misconfiguration) > 0 with input as req with data.stepguard.signals as {"trusted_devices": "managed"}
	count(authz.misconfiguration) > 0 with input as req with data.stepguard.signals as {"raise_steps": 0}
	count(authz.misconfiguration) > 0 with input as req with data.stepguard.signals as ["x"]
}
