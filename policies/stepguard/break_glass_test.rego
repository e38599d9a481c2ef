# Unit tests for break-glass (break_glass.rego).
# Run with `stepguard policy test policies` (regorus) or `opa test policies/`.
# The fixtures (inputs stepguard builds) are in decision_test.rego.
package stepguard.break_glass_test

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
# Break-glass (shipped data: role "break-glass"; keys.export, iam.escalate;
# justification >= 20 characters; grant ttl 60 s)
# ===========================================================================

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
	count(authz.misconfiguration) > 0 with input as req with data.stepguard.break_glass as {"roles": "break-glass"}
	count(authz.misconfiguration) > 0 with input as req with data.stepguard.break_glass as {"min_justification_length": 0}
	count(authz.misconfiguration) > 0 with input as req with data.stepguard.break_glass as {"grant_ttl": -1}
}
