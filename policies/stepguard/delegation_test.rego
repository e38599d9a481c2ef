# Unit tests for delegation chains (delegation.rego).
# Run with `stepguard policy test policies` (regorus) or `opa test policies/`.
# The fixtures (inputs stepguard builds) are in decision_test.rego.
package stepguard.delegation_test

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
# Delegation: the outermost actor of the RFC 8693 chain is accountable
# ===========================================================================

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
	count(authz.misconfiguration) > 0 with input as req with data.stepguard.delegation as no_iss
	not_list := {"allowed_actors": {"keys.export": {"sub": "bob", "iss": idp}}}
	count(authz.misconfiguration) > 0 with input as req with data.stepguard.delegation as not_list
}

# ===========================================================================
# Shared accounts: privileged actions need a named actor
# ===========================================================================

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
