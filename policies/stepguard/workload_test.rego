# Unit tests for workloads and transaction tokens (workload.rego).
# Run with `stepguard policy test policies` (regorus) or `opa test policies/`.
# The fixtures (inputs stepguard builds) are in decision_test.rego.
package stepguard.workload_test

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
# Workloads: transaction tokens, never a prompt
# ===========================================================================

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
	d.reasons == ["transaction_token_too_long_lived"]
	"workloads.max_token_lifetime must be a whole number of seconds > 0" in authz.misconfiguration with input as req with data.stepguard.workloads as {"max_token_lifetime": "5m"}
}
