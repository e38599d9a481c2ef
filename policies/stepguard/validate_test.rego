# Unit tests for validate.rego: input_errors and misconfiguration.
# Run with `stepguard policy test policies` (regorus) or `opa test policies/`.
# The fixtures (inputs stepguard builds) are in decision_test.rego.
package stepguard.validate_test

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
	authz.input_errors == {"action.privileged must be a boolean"} with input as req
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
		count(authz.input_errors) > 0 with input as json.remove(req, [path])
	}

	# Workloads too.
	wl := request(transfer(100), txn_workload(txn_claims), null)
	every path in ["stepguard/subject/claims", "stepguard/subject/act", "stepguard/transaction/bound"] {
		count(authz.input_errors) > 0 with input as json.remove(wl, [path])
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
		count(authz.misconfiguration) > 0 with input as req with data.stepguard.requirements as reqs
	}
}

test_malformed_subject_or_action_is_invalid_input if {
	robot := request(transfer(500), human({"kind": "robot"}), null)
	count(authz.input_errors) > 0 with input as robot

	# stepguard never asks for non-sensitive routes; if it did, refuse.
	no_action := request(null, session("aal3", 1), null)
	count(authz.input_errors) > 0 with input as no_action
}

test_all_deny_reasons_are_listed if {
	# A workload calling a misconfigured action: the workload's reason; the
	# misconfiguration is reported by validation (and refused at load).
	req := request(action("x.y", {}), payments_workload, null)
	d := authz.decision with input as req with data.stepguard.requirements as {"actions": {}}
	d.reasons == ["workload_requires_transaction_token"]
	count(authz.misconfiguration) > 0 with input as req with data.stepguard.requirements as {"actions": {}}
}
