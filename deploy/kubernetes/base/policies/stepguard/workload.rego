# Workloads: transaction tokens.
#
# A workload (subject.kind "workload") is never prompted. It performs a
# sensitive action only with a short-lived, transaction-scoped token (in the
# spirit of the IETF OAuth Transaction Tokens draft) whose claims stepguard
# verified and passes as subject.claims:
#   txn   the transaction id (non-empty string)
#   iat, exp
#   tctx  {"action": "<action name>", "fields": {"<bound field>": "<value>", ...}}
# The token must be short-lived (exp - iat <= workloads.max_token_lifetime),
# unexpired, name this action and carry exactly this transaction's bound
# values: a token minted for another transaction is refused (no replay).
package stepguard.policy.workload

import rego.v1


decision := {"result": "deny", "reason": denies[0], "reasons": denies, "status": 403} if {
	denies := array.concat(token_denies, data.stepguard.policy.delegation.denies)
	count(denies) > 0
}

decision := {
	"result": "allow",
	"reason": "transaction_token_satisfies",
	"reasons": array.concat(["transaction_token_satisfies"], delegated),
	"used_grant": false,
} if {
	count(token_denies) == 0
	count(data.stepguard.policy.delegation.denies) == 0
	delegated := [code | count(input.stepguard.subject.act) > 0; code := "delegated"]
}

# Why this workload's transaction token does not approve this transaction, in
# priority order ([] when it does).
token_denies := array.concat(
	array.concat(
		[code | count(txn) == 0; code := "workload_requires_transaction_token"],
		[code | count(txn) > 0; count(short_lived) == 0; code := "transaction_token_too_long_lived"],
	),
	array.concat(
		[code | count(txn) > 0; count(expired) > 0; code := "transaction_token_expired"],
		[code | count(txn) > 0; count(matches) == 0; code := "transaction_token_mismatch"],
	),
) if {
	s := input.stepguard
	tok := s.subject.claims
	cfg := data.stepguard.policy.settings.all
	txn := [1 | is_string(tok.txn); tok.txn != ""]

	# exp - iat is known, not negative, and within the configured maximum.
	short_lived := [1 |
		is_number(tok.iat)
		floor(tok.iat) == tok.iat
		is_number(tok.exp)
		floor(tok.exp) == tok.exp
		tok.exp >= tok.iat
		is_number(cfg.max_token_lifetime)
		tok.exp - tok.iat <= cfg.max_token_lifetime
	]

	# Defence in depth: stepguard verified exp already.
	expired := [1 |
		is_number(tok.exp)
		floor(tok.exp) == tok.exp
		is_number(s.now)
		is_number(cfg.max_clock_skew)
		s.now > tok.exp + cfg.max_clock_skew
	]

	# The token names this action and carries exactly the bound values; a field
	# the request does not carry is bound to null, which an absent token field
	# matches.
	matches := [1 |
		is_object(tok.tctx)
		tok.tctx.action == s.action.name
		fields := tok.tctx.fields
		is_object(fields)
		bound_values := s.transaction.bound
		is_object(bound_values)
		names := {name | some name, _ in bound_values} | {name | some name, _ in fields}
		count([name | some name in names; object.get(fields, name, null) != object.get(bound_values, name, null)]) == 0
	]
}
